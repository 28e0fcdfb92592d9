"""The container image's own pieces: which process the image runs and how its health is checked
(``probe``, pure) and the ``HEALTHCHECK`` command that probes it (``healthcheck``)."""
