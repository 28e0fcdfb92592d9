"""Children that die with their parent, and one `opsctl up` per data dir, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from core import procs
from core.errors import ServiceUnavailable
from opsctl.up.lock import InstanceLock
from tests.conftest import project_root
from tests.waiting import wait_for

PARENT = textwrap.dedent("""
    import os, sys, threading, time
    from core.procs import spawn

    children = []
    def fork():  # from a thread that ends at once: the child must not die with the thread
        children.append(spawn(["sleep", "600"], start_new_session=True))
        tids.append(threading.get_native_id())
    tids = []
    thread = threading.Thread(target=fork)
    thread.start()
    thread.join()
    while os.path.exists(f"/proc/self/task/{tids[0]}"):  # the thread is gone from the kernel too
        time.sleep(0.01)
    print(children[0].pid, flush=True)
    time.sleep(600)
""")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_child_outlives_the_thread_that_forked_it_and_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=project_root(), env={**os.environ, "PYTHONPATH": str(project_root())})
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child), "the child died with the thread that forked it"
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()  # kill -9: the parent has no say
        parent.wait()
        wait_for(lambda: gone(child), 30, "the child to die with its parent")
    finally:
        parent.kill()
        parent.wait()


def test_one_lock_holder_per_data_dir_and_a_dead_holder_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from opsctl.up.lock import InstanceLock;"
         "InstanceLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=project_root(), env={**os.environ, "PYTHONPATH": str(project_root())})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        lock = InstanceLock(tmp_path)
        with pytest.raises(ServiceUnavailable, match=rf"already running on {tmp_path} \(pid {holder.pid}\)"):
            lock.acquire()
        assert not lock.held
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lock.acquire()  # the kernel released it with its dead holder
        assert lock.held and (tmp_path / "up.lock").read_text() == f"{os.getpid()}\n"
        lock.release()
        assert not lock.held
    finally:
        holder.kill()
        holder.wait()


NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def take_pid(pid: int) -> subprocess.Popen[bytes]:
    """A new process with ``pid`` (the kernel hands out ns_last_pid + 1; others may fork meanwhile: retry)."""
    for _ in range(200):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "600"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.fail(f"could not get pid {pid} for a new process")


def created(pid: int) -> float:
    return psutil.Process(pid).create_time()


@pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="choosing a PID takes root (ns_last_pid)")
def test_send_never_signals_a_process_that_took_the_pid_right_after_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    target = subprocess.Popen(["sleep", "600"])
    impostors: list[subprocess.Popen[bytes]] = []
    check = procs.same_process

    def checked_then_replaced(pid: int, when: float) -> bool:
        same = check(pid, when)
        target.kill()  # the process checked dies right after the check …
        target.wait()
        impostors.append(take_pid(pid))  # … and a new one takes its PID
        return same

    monkeypatch.setattr(procs, "same_process", checked_then_replaced)
    try:
        assert procs.send(target.pid, created(target.pid), signal.SIGTERM) is False
        assert impostors and impostors[0].poll() is None, "the process that took the PID was signalled"
    finally:
        for proc in [target, *impostors]:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("pidfd", [True, False])
def test_send_signals_only_the_process_created_at_that_time(pidfd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")  # a system without pidfds: the check, then os.kill
    proc = subprocess.Popen(["sleep", "600"])
    try:
        when = created(proc.pid)
        assert procs.send(proc.pid, when + 100, signal.SIGTERM) is False
        assert proc.poll() is None
        assert procs.send(proc.pid, when, signal.SIGTERM) is True
        assert proc.wait(60) == -signal.SIGTERM
        assert procs.send(proc.pid, when, signal.SIGTERM) is False  # gone (and reaped)
    finally:
        proc.kill()
        proc.wait()
