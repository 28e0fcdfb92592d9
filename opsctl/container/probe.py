"""What the image's ``HEALTHCHECK`` probes, from the command line of the process it finds (pure).

The image runs one of three roles (``image/entrypoint.sh``), or any of their command lines given
directly (the Kubernetes manifests set ``command:``):

=========  ==========================================  ====================================
role       command line                                probe
=========  ==========================================  ====================================
api        ``opsctl up … [--port N]``                  ``GET /healthz`` on N (else
                                                       ``OPSCTL_PORT``, else 8080)
worker     ``python -m core.ingest.worker …``          ``GET /metrics`` on ``--metrics-port``;
                                                       without one, the process being there
daemon     ``opsctl daemon … [--metrics-port N]``      ``GET /metrics`` on N (else 9464);
                                                       0: the process being there
=========  ==========================================  ====================================

The daemon is probed on ``/metrics``, not ``/readyz``: a daemon without a valid policy set is alive
and says so on ``/readyz`` (503); restarting it would not help.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["api", "worker", "daemon"]
API_PORT = 8080  # `opsctl up --port`'s default
DAEMON_METRICS_PORT = 9464  # `opsctl daemon --metrics-port`'s default
GLOBAL_OPTIONS_WITH_VALUE = ("--data-dir", "--config")  # opsctl's options before the subcommand


@dataclass(frozen=True)
class Probe:
    role: Role
    pid: int
    url: str | None  # None: the role serves no HTTP, its process being there is the check


def _option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` (the last one given wins, as in Click)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1:]
    return value


def _port(text: str | None, default: int) -> int | None:
    try:
        port = default if text is None else int(text)
    except ValueError:
        return None
    return port if 0 <= port <= 65535 else None


def _url(port: int | None, path: str) -> str | None:
    return f"http://127.0.0.1:{port}{path}" if port else None


def role_of(argv: Sequence[str]) -> tuple[Role, list[str]] | None:
    """The role of a command line and the arguments after its subcommand, or None."""
    for i, arg in enumerate(argv):
        if arg == "-m" and argv[i + 1:i + 2] == ["core.ingest.worker"]:
            return "worker", list(argv[i + 2:])
        if arg.rsplit("/", 1)[-1] == "opsctl":
            return _subcommand(argv[i + 1:])
    return None


def _subcommand(args: Sequence[str]) -> tuple[Role, list[str]] | None:
    """``opsctl [global options] up|daemon …``: the role and the subcommand's arguments."""
    skip = False
    for j, arg in enumerate(args):
        if skip or arg.startswith("-"):
            skip = arg in GLOBAL_OPTIONS_WITH_VALUE
            continue
        roles: dict[str, Role] = {"up": "api", "daemon": "daemon"}
        return (roles[arg], list(args[j + 1:])) if arg in roles else None
    return None


def probe_for(pid: int, argv: Sequence[str], env: Mapping[str, str]) -> Probe | None:
    """The probe of one process, or None when it is none of the image's roles."""
    found = role_of(argv)
    if found is None:
        return None
    role, args = found
    if role == "api":
        port = _port(_option(args, "--port") or env.get("OPSCTL_PORT"), API_PORT)
        return Probe(role, pid, _url(port, "/healthz")) if port else None
    if role == "worker":
        port = _port(_option(args, "--metrics-port"), 0)
    else:
        port = _port(_option(args, "--metrics-port"), DAEMON_METRICS_PORT)
    return Probe(role, pid, _url(port, "/metrics"))


def choose(processes: Iterable[tuple[int, Sequence[str]]], env: Mapping[str, str]) -> Probe | None:
    """The probe of the container's main process: the lowest pid with a role (``opsctl up``
    starts workers and a daemon as its children; an init such as tini may be pid 1)."""
    for pid, argv in sorted(processes, key=lambda p: p[0]):
        probe = probe_for(pid, argv, env)
        if probe is not None:
            return probe
    return None
