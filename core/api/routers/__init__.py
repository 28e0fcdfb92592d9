"""One router per resource; ``core.api.app.create_app`` includes them all (``ROUTERS``)."""
