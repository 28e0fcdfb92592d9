"""Log lines: ``text`` (the default, as before) or ``json`` (setting ``log_format``), one JSON object per
line for the log pipelines operators run (Loki, Elasticsearch, Cloud Logging …)::

    {"time": "2026-11-26T23:04:05.123Z", "level": "info", "component": "api", "logger": "core.api.access",
     "request_id": "9f1c…", "company_id": 42, "route": "/v1/search", "method": "POST", "status": 200,
     "latency_ms": 12.5, "message": "POST /v1/search 200"}

Every object has every key of :data:`FIELDS` (``null`` when a line has no value for it), plus
``exception`` (the traceback's text) when the record carries one. ``component`` is the process:
``api``, ``worker``, ``daemon`` or ``cli``. ``request_id`` and ``company_id`` come from the request
being served (:data:`CURRENT`, set by the API's outermost middleware, the company filled in once
a key or a webhook signature proved it), so any line logged while serving a request carries them,
not only the access line.

Request ids: an incoming ``X-Request-ID`` is kept when it has something usable (characters outside
``[A-Za-z0-9._:/+=@-]`` dropped, at most :data:`REQUEST_ID_MAX` kept), else a new one is made;
the answer carries it back in ``X-Request-ID``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Component = Literal["api", "worker", "daemon", "cli"]
LogFormat = Literal["text", "json"]
FIELDS = ("time", "level", "component", "logger", "request_id", "company_id", "route", "method", "status",
          "latency_ms", "message")
REQUEST_ID_MAX = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@-]")
# our loggers at INFO; every other library's at WARNING (their INFO is one line per HTTP call)
OWN_LOGGERS = ("core", "opsctl")
ACCESS_LOGGER = "core.api.access"


@dataclass
class RequestInfo:
    """The request being served; mutable so that a worker thread's dependency can name the company."""

    request_id: str
    company_id: int | None = None


CURRENT: ContextVar[RequestInfo | None] = ContextVar("opsctl_request", default=None)


class _Ids:
    """New request ids: 32 hex digits, a random per-process prefix and a counter (a fresh prefix in
    a forked child): unique without a system call per request (uuid4 reads the kernel's random
    source every time, ~5x the cost)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_ids = _Ids()


def request_id(header: bytes | None) -> str:
    """The id of a request: the client's ``X-Request-ID``, sanitised and bounded, or a new one."""
    if header:
        kept = _UNSAFE.sub("", header.decode("latin-1"))[:REQUEST_ID_MAX]
        if kept:
            return kept
    return _ids.new()


def note_company(company_id: int) -> None:
    """The request being served acts for ``company_id`` (its key or its webhook signature said so)."""
    info = CURRENT.get()
    if info is not None:
        info.company_id = company_id


def json_line(component: Component, logger: str, text: str, level: int = logging.INFO) -> str:
    """``text`` as the JSON line a record of ``logger`` would be (for what is written, not logged)."""
    record = logging.makeLogRecord({"name": logger, "levelno": level, "levelname": logging.getLevelName(level),
                                    "msg": text})
    return JsonFormatter(component).format(record)


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 in UTC with milliseconds: ``2026-11-26T23:04:05.123Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are escaped)."""

    def __init__(self, component: Component) -> None:
        super().__init__()
        self.component = component

    def document(self, record: logging.LogRecord) -> dict[str, Any]:
        info = CURRENT.get()
        doc: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or (info.request_id if info else None),
            "company_id": getattr(record, "company_id", None) or (info.company_id if info else None),
            "route": getattr(record, "route", None),
            "method": getattr(record, "method", None),
            "status": getattr(record, "status", None),
            "latency_ms": getattr(record, "latency_ms", None),
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return doc

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(self.document(record), default=str).decode()


def configure_json(component: Component, handler: logging.Handler | None = None) -> logging.Handler:
    """JSON lines on ``handler`` (default: stderr) for every record: our loggers at INFO, libraries at
    WARNING. Replaces the root logger's handlers; returns the new one."""
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    return handler


def configure(component: Component, log_format: LogFormat, text_format: str, debug: bool = False) -> None:
    """A process's logging: JSON lines on stderr, or the text ``text_format`` as before (root at INFO)."""
    if log_format == "json":
        configure_json(component)
        if debug:
            logging.getLogger().setLevel(logging.DEBUG)
        return
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr, format=text_format)


ACCESS = logging.getLogger(ACCESS_LOGGER)


def access(info: RequestInfo, route: str, method: str, status: int, seconds: float) -> None:
    """The access line of one answered request (logged at INFO: seen only with ``log_format: json``,
    where our loggers are at INFO; the text setups leave it below their level)."""
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info("%s %s %d", method, route, status, extra={
            "request_id": info.request_id, "company_id": info.company_id, "route": route, "method": method,
            "status": status, "latency_ms": round(seconds * 1000, 3)})
