"""Messages of ``opsctl up`` that never stop it: the terminal may be gone.

``make up 2>&1 | tee log`` and Ctrl-C: the SIGINT reaches ``tee`` too, so stderr becomes a pipe
without a reader and every write raises ``BrokenPipeError`` (a closed terminal gives ``EIO``).
Shutdown must go on: ``say`` writes best-effort, and the first failed write points stdout and
stderr at /dev/null, so that nothing later (a log line, the interpreter's final flush) fails
again. Log records also go to ``<data dir>/logs/up.log``, which does not depend on the terminal.

Libraries' warnings (psycopg_pool's "error connecting" while PostgreSQL restarts, …) go to
``up.log`` only, one line each: without a handler of their own they would reach the terminal
through Python's last-resort handler, several lines at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

LOGGERS = ("opsctl.up", "core.workerpool")


_json = False  # log_format json: what say() writes is a JSON line too (setup_logging sets it)


def say(text: str) -> None:
    """Write a line on stderr if it can be written (with ``log_format: json``, as one JSON object); never raise."""
    if _json:
        from core.logs import json_line

        text = json_line("api", "opsctl.up", text)
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        silence()


def silence() -> None:
    """Point file descriptors 1 and 2 at /dev/null: every later write to them succeeds, unseen."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
        os.close(devnull)


class _QuietStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def handleError(self, record: logging.LogRecord) -> None:
        silence()


class OneLineFormatter(logging.Formatter):
    """A record on one line: its lines joined by `` | ``, an exception by its type and message only."""

    def format(self, record: logging.LogRecord) -> str:
        from core.supervision import one_line

        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})"
        record.message = one_line(text)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        return self.formatMessage(record)


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Path, log_format: str = "text") -> None:
    """Warnings of ``opsctl up`` (a child died, was restarted) on stderr, and everything in ``log_file``;
    other libraries' warnings in ``log_file`` only, one line each. With ``log_format`` json, every
    line on stderr and in ``log_file`` is a JSON object (:mod:`core.logs`), and stderr also gets the
    API's access log and errors; ``opsctl up``'s own progress still goes to the file only."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if log_format == "json":
        _setup_json(log_file)
        return
    libraries = logging.FileHandler(log_file)
    libraries.setFormatter(OneLineFormatter(FORMAT))
    libraries.setLevel(logging.WARNING)
    logging.getLogger().addHandler(libraries)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter(FORMAT))
    to_file.setLevel(logging.INFO)
    to_terminal = _QuietStreamHandler(sys.stderr)
    to_terminal.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    to_terminal.setLevel(logging.WARNING)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(to_file)
        logger.addHandler(to_terminal)
        logger.propagate = False


def _setup_json(log_file: Path) -> None:
    global _json
    from core.logs import JsonFormatter, configure_json

    to_terminal = configure_json("api", _QuietStreamHandler(sys.stderr))
    # as in text: the progress of the start and the stop is said (say()), its records stay in the file
    to_terminal.addFilter(lambda r: r.levelno >= logging.WARNING or not r.name.startswith(LOGGERS))
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(JsonFormatter("api"))
    logging.getLogger().addHandler(to_file)
    _json = True
