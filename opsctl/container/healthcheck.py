"""The image's ``HEALTHCHECK``: ``python -m opsctl.container.healthcheck``.

Finds the container's opsctl process in ``/proc``, probes it over HTTP as ``opsctl.container.probe``
says (no curl in the image), and exits 0 when it answers 200, 1 otherwise, with one line on stdout
(``docker inspect`` / ``podman healthcheck run`` show it).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from opsctl.container.probe import choose

TIMEOUT_SECONDS = 4.0


def processes(proc: Path = Path("/proc")) -> Iterator[tuple[int, list[str]]]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if raw:
            yield int(entry.name), [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def check() -> tuple[bool, str]:
    probe = choose(processes(), os.environ)
    if probe is None:
        return False, "no opsctl process (api, worker or daemon) runs in this container"
    if probe.url is None:
        return True, f"{probe.role} (pid {probe.pid}) runs; it serves no HTTP to probe"
    try:
        with urllib.request.urlopen(probe.url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return False, f"{probe.role} (pid {probe.pid}): {probe.url}: {getattr(exc, 'reason', exc)}"
    return status == 200, f"{probe.role} (pid {probe.pid}): {probe.url}: {status}"


def main() -> int:
    ok, line = check()
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
