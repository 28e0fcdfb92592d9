"""What the image's HEALTHCHECK probes, by the command line it finds (opsctl.container.probe)."""

from __future__ import annotations

import pytest

from opsctl.container.probe import Probe, choose, probe_for, role_of

VENV = "/opt/opsctl/bin"
UP = ["/opt/opsctl/bin/python", f"{VENV}/opsctl", "up", "--workers", "0", "--no-prometheus", "--no-daemon"]


@pytest.mark.parametrize(("argv", "env", "url"), [
    # the api: `opsctl up`, its port from --port, else OPSCTL_PORT, else 8080
    (UP, {}, "http://127.0.0.1:8080/healthz"),
    ([*UP, "--port", "8081"], {}, "http://127.0.0.1:8081/healthz"),
    ([*UP, "--port=8082"], {"OPSCTL_PORT": "9000"}, "http://127.0.0.1:8082/healthz"),
    ([*UP, "--port", "8080", "--port", "8083"], {}, "http://127.0.0.1:8083/healthz"),  # the last one wins
    (UP, {"OPSCTL_PORT": "9000"}, "http://127.0.0.1:9000/healthz"),
    (["opsctl", "--debug", "--data-dir", "/d", "up"], {}, "http://127.0.0.1:8080/healthz"),
    (["opsctl", "--config", "up", "up"], {}, "http://127.0.0.1:8080/healthz"),  # a file named "up"
    # the worker: /metrics on --metrics-port, else nothing to probe
    (["python", "-m", "core.ingest.worker", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"], {},
     "http://127.0.0.1:9100/metrics"),
    (["/opt/opsctl/bin/python", "-m", "core.ingest.worker"], {}, None),
    # the daemon: /metrics (alive), not /readyz (a daemon without policies is alive and says so there)
    (["opsctl", "daemon", "--metrics-port", "9101"], {}, "http://127.0.0.1:9101/metrics"),
    ([f"{VENV}/python", f"{VENV}/opsctl", "daemon"], {}, "http://127.0.0.1:9464/metrics"),
    (["opsctl", "daemon", "--metrics-port", "0"], {}, None),
])
def test_probe_of_each_role(argv: list[str], env: dict[str, str], url: str | None) -> None:
    probe = probe_for(7, argv, env)
    assert probe is not None and probe.url == url and probe.pid == 7


@pytest.mark.parametrize("argv", [
    ["sleep", "60"],
    ["/opt/opsctl/bin/opsctl", "backup", "list"],         # a one-off command is not a service
    ["opsctl", "--data-dir", "up"],                      # "up" is the data dir's value here
    ["python", "-m", "opsctl.container.healthcheck"],     # the health check itself
    ["python", "-m", "core.ingest"],
    [],
])
def test_no_probe_for_other_processes(argv: list[str]) -> None:
    assert probe_for(1, argv, {}) is None


@pytest.mark.parametrize(("argv", "env"), [
    ([*UP, "--port", "http"], {}),
    ([*UP, "--port", "70000"], {}),
    (UP, {"OPSCTL_PORT": "x"}),
])
def test_a_port_that_is_no_port_gives_no_probe(argv: list[str], env: dict[str, str]) -> None:
    assert probe_for(1, argv, env) is None


def test_roles_parse_their_arguments() -> None:
    assert role_of(["opsctl", "up", "--port", "1"]) == ("api", ["--port", "1"])
    assert role_of(["x", "-m", "core.ingest.worker", "-v"]) == ("worker", ["-v"])
    assert role_of(["opsctl", "status"]) is None


def test_the_main_process_is_the_lowest_pid_with_a_role() -> None:
    processes = [
        (40, ["python", "-m", "core.ingest.worker"]),        # a child of `opsctl up`
        (1, ["/sbin/docker-init", "--", "opsctl-entrypoint", "api"]),  # an init as pid 1
        (7, [*UP, "--port", "8090"]),
        (55, ["python", "-m", "opsctl.container.healthcheck"]),
    ]
    assert choose(processes, {}) == Probe("api", 7, "http://127.0.0.1:8090/healthz")
    assert choose([(1, ["sleep", "60"])], {}) is None
