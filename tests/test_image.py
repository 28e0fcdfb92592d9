"""The container image: `make image` builds it, and it runs. Each role (api, worker, daemon) runs
against the tests' real PostgreSQL and Redis (their Unix sockets mounted in, host network): the API
answers /healthz and /readyz, the worker and the daemon serve /metrics, and the HEALTHCHECK passes
for each (and fails where no role runs). It runs as a fixed non-root user, and the final stage holds
no compiler.

Needs podman, runc and mmdebstrap (make system-deps installs them). It never skips: without them it
fails and says why. The first build here takes minutes (the base image, then the dependencies);
later ones reuse both.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.conftest import free_port, outside_pytest_tmp, project_root

ROOT = project_root()
pytestmark = pytest.mark.timeout(1800)  # the first build: base image, dependencies, project
STARTUP_SECONDS = 180  # a bound on a container that never answers, not a timing claim


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} must be installed (make system-deps installs podman, runc, mmdebstrap): this test never skips"
    return path


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([need("podman"), *args], capture_output=True, text=True, timeout=timeout)
    assert not check or proc.returncode == 0, f"podman {' '.join(args)}: {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def run_options() -> list[str]:
    """`podman run` options this machine needs (runc; ulimits within the host's hard limits);
    none of them is a property of the image."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    # runc is refused an nproc limit above the kernel's pid_max here, and podman's default is higher
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = [pid_max if n == resource.RLIM_INFINITY else min(n, pid_max)
             for n in resource.getrlimit(resource.RLIMIT_NPROC)]
    return ["--runtime", need("runc"), "--ulimit", f"nofile={nofile[0]}:{nofile[1]}",
            "--ulimit", f"nproc={nproc[0]}:{nproc[1]}"]


@pytest.fixture(scope="module")
def image() -> str:
    """`make image` tags opsctl:<version of pyproject.toml>; the tests use the image id it built
    (another checkout's `make image` may move the tag meanwhile)."""
    need("podman")
    proc = subprocess.run(["make", "--no-print-directory", "image"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1700)
    assert proc.returncode == 0, f"make image failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    built = re.findall(rf"^opsctl:{re.escape(version())}: \d+ bytes, id ([0-9a-f]{{64}})$", proc.stdout, re.MULTILINE)
    assert len(built) == 1, proc.stdout[-2000:]
    return built[0]


def version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", *run_options(), "--entrypoint", "sh", image, "-c", script, check=False)


def test_runs_as_a_fixed_non_root_user(image: str) -> None:
    proc = in_image(image, "id -u; id -g; id -un")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10001", "10001", "opsctl"]  # the manifests' runAsUser
    config = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert config == "10001:10001"


def test_the_final_stage_has_no_compiler(image: str) -> None:
    proc = in_image(image, "for c in cc gcc c++ g++ clang cpp ld as make; do command -v $c; done; "
                           "find / -xdev -type f -perm -u+x "
                           "\\( -name 'cc1*' -o -name 'gcc*' -o -name '*-linux-gnu-*' \\) -print")
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout.strip() == "", f"found in the image: {proc.stdout}"


def test_the_image_holds_the_project_and_the_policies(image: str) -> None:
    proc = in_image(image, "opsctl --help >/dev/null && ls /etc/opsctl/policies && "
                           "opsctl runbook show DaemonPoliciesNotLoaded | head -n 1 && "
                           "python -c 'import sys; print(sys.version_info[:2])'")
    assert proc.returncode == 0, proc.stderr
    assert "backup.yaml" in proc.stdout.split() and "(3, 11)" in proc.stdout
    assert "DaemonPoliciesNotLoaded" in proc.stdout  # the runbooks, from the venv's share/
    assert in_image(image, "python -m pip --version").returncode != 0  # the installers stayed in the builder
    labels = podman("image", "inspect", "--format", "{{index .Config.Labels \"io.opsctl.model\"}}", image).stdout
    assert labels.strip() == "none"  # the default build: no torch
    assert in_image(image, "python -c 'import torch'").returncode != 0


@pytest.fixture
def redis_socket_dir() -> Iterator[tuple[Path, str]]:
    """A Redis of its own whose socket the container's user may open (the shared one is 0700)."""
    root = outside_pytest_tmp("opsctl-test-image-redis-")
    server = EmbeddedRedis(root)
    url = server.start()
    root.chmod(0o755)
    server.socket.chmod(0o777)
    yield server.socket.parent, url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def container(image: str, options: list[str], command: list[str]) -> Iterator[str]:
    name = f"opsctl-test-{os.getpid()}-{time.monotonic_ns()}"
    podman("run", "--detach", "--name", name, *run_options(), *options, image, *command)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def wait_200(name: str, url: str) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"container {state}:\n{podman('logs', name, check=False).stderr[-3000:]}"
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
        assert time.monotonic() < deadline, f"no 200 from {url}:\n{podman('logs', name, check=False).stderr[-3000:]}"
        time.sleep(0.5)


@pytest.fixture
def data_volume() -> Iterator[Path]:
    """The data dir's volume, owned by the image's user (an emptyDir with the manifests' fsGroup)."""
    root = outside_pytest_tmp("opsctl-test-image-data-")
    os.chown(root, 10001, 10001)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_test_servers(pg_server: EmbeddedPostgres, db_url: str, redis_socket_dir: tuple[Path, str],
                    data_volume: Path) -> list[str]:
    """`podman run` options: the host network, the tests' PostgreSQL and Redis sockets and URLs, and
    the manifests' securityContext: a read-only root filesystem (podman gives it a writable /tmp)
    with the data dir on a volume, no capabilities, no privilege escalation."""
    redis_dir, redis_url = redis_socket_dir
    return ["--read-only", "-v", f"{data_volume}:/var/lib/opsctl",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host",
            "-v", f"{pg_server.socket_dir}:{pg_server.socket_dir}", "-v", f"{redis_dir}:{redis_dir}",
            "-e", f"OPSCTL_DATABASE_URL={db_url}", "-e", f"OPSCTL_REDIS_URL={redis_url}",
            "-e", "OPSCTL_ADMIN_TOKEN=admin-secret"]


def assert_healthy(name: str, command_line: str) -> None:
    check = podman("healthcheck", "run", name, check=False)
    assert check.returncode == 0, f"HEALTHCHECK failed: {check.stdout} {check.stderr}"
    top = podman("top", name, "user", "args").stdout
    assert command_line in top and "root" not in top, top


def test_the_api_container_answers_and_is_healthy(image: str, on_test_servers: list[str]) -> None:
    port = free_port()
    with container(image, [*on_test_servers, "-e", f"OPSCTL_PORT={port}"], ["api"]) as name:
        assert wait_200(name, f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text  # PostgreSQL and Redis answer the container
        assert_healthy(name, "opsctl up --workers 0 --no-prometheus --no-daemon")


@pytest.mark.parametrize(("role", "runs", "metric"), [
    ("worker", "-m core.ingest.worker --metrics-port 9100 --metrics-host 0.0.0.0", "core_ingest_jobs_in_flight"),
    ("daemon", "opsctl daemon --metrics-port 9101", "opsctl_daemon_leader"),
])
def test_the_worker_and_daemon_containers_serve_metrics_and_are_healthy(
        image: str, on_test_servers: list[str], role: str, runs: str, metric: str) -> None:
    port = free_port()  # on the host network: a free port after the role's own (the last one wins)
    with container(image, on_test_servers, [role, "--metrics-port", str(port)]) as name:
        assert metric in wait_200(name, f"http://127.0.0.1:{port}/metrics").text
        assert_healthy(name, runs)


def test_the_healthcheck_fails_where_no_service_runs(image: str) -> None:
    config = podman("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", image).stdout
    assert "opsctl.container.healthcheck" in config  # kept by the docker format
    with container(image, [], ["sleep", "300"]) as name:
        check = podman("healthcheck", "run", name, check=False)
        assert check.returncode != 0


def test_the_build_context_leaves_out_what_is_no_part_of_the_image(image: str, tmp_path: Path) -> None:
    """.dockerignore: a checkout's venv, state, git, caches, tests and bench data never reach the build."""
    context = tmp_path / "context"
    shutil.copytree(ROOT, context, ignore=shutil.ignore_patterns(".git", ".venv", ".opsctl", "*cache*"))
    for junk in (".venv/bin/python", ".opsctl/pg/base", ".git/HEAD", "core/__pycache__/x.pyc", ".mypy_cache/x",
                 "bench/results/run.json", "opsctl.egg-info/PKG-INFO", "build/lib/x.py"):
        (context / junk).parent.mkdir(parents=True, exist_ok=True)
        (context / junk).write_text("not for the image")
    (context / "Listing.Dockerfile").write_text(f"FROM {image}\nCOPY . /context\n")
    tag = f"localhost/opsctl-test-context:{os.getpid()}"
    podman("build", "--isolation", "chroot", "-f", str(context / "Listing.Dockerfile"), "-t", tag, str(context))
    try:
        listing = in_image(tag, "cd /context && find . -mindepth 1 | sort")
    finally:
        podman("rmi", tag, check=False)
    assert listing.returncode == 0, listing.stderr
    sent = set(listing.stdout.split())
    assert {"./pyproject.toml", "./README.md", "./core/api", "./opsctl/cli.py", "./policies", "./runbooks",
            "./image/entrypoint.sh"} <= sent
    leaked = {p for p in sent if any(part in p.split("/") for part in (
        ".venv", ".opsctl", ".git", "__pycache__", ".mypy_cache", "bench", "tests", "build", "opsctl.egg-info"))}
    assert not leaked, sorted(leaked)[:20]
