"""What `opsctl up` writes where: libraries' warnings (psycopg_pool while PostgreSQL restarts) go to
logs/up.log, one line each, never to the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import project_root

LIBRARY_WARNINGS = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from opsctl.up.terminal import setup_logging

    setup_logging(Path(sys.argv[1]))
    pool = logging.getLogger("psycopg.pool")
    pool.warning("error connecting in 'pool-1': connection failed: connection to server on socket "
                 "\\"/run/.s.PGSQL.5432\\" failed: No such file or directory\\n\\tIs the server running locally?")
    try:
        raise ConnectionError("refused\\nand more")
    except ConnectionError:
        pool.exception("a library logs a traceback")
    pool.info("below warning: nowhere")
    logging.getLogger("opsctl.up").warning("redis: pid 1 was killed by SIGKILL after 3.0 s; restart in 1.0 s")
""")


def test_library_warnings_go_to_up_log_one_line_each_and_not_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "up.log"
    run = subprocess.run([sys.executable, "-c", LIBRARY_WARNINGS, str(log)], capture_output=True, text=True,
                         cwd=project_root(), env={**os.environ, "PYTHONPATH": str(project_root())}, timeout=60)
    assert run.returncode == 0, run.stderr
    # the terminal: opsctl up's own warnings only
    assert [line.split(" ", 1)[1] for line in run.stderr.splitlines()] == [
        "redis: pid 1 was killed by SIGKILL after 3.0 s; restart in 1.0 s"]
    lines = log.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING psycopg.pool: error connecting in 'pool-1': connection failed: connection to server on socket "
        '"/run/.s.PGSQL.5432" failed: No such file or directory | Is the server running locally?',
        "ERROR psycopg.pool: a library logs a traceback (ConnectionError: refused | and more)",
        "WARNING opsctl.up: redis: pid 1 was killed by SIGKILL after 3.0 s; restart in 1.0 s",
    ]
