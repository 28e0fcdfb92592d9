"""Child processes that die with their parent, and how to recognise a process again later.

``spawn`` is ``subprocess.Popen`` plus, on Linux, ``prctl(PR_SET_PDEATHSIG)`` in the child: when
the parent dies, even by ``kill -9``, the kernel sends the child ``death_signal``. That signal is
tied to the *thread* that forked, not to the process, so every child is forked by one thread
that lives as long as the process (a child forked by a request thread would be signalled when
the thread pool retires that thread). The setting is cleared when a process changes user, so
it is set after ``Popen(user=…)`` switched; and a child whose parent died before ``prctl`` ran
exits at once.

A PID alone names nothing once its process is gone: ``identity`` is (pid, creation time), which
no other process can have, and ``snapshot`` reads the process table so that a clean-up can
check every process it is about to signal (``core.supervision.plan_cleanup``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import psutil

from core.supervision import ProcessRow, same_start

PR_SET_PDEATHSIG = 1


def main_thread() -> bool:
    """Whether this is the main thread: the only one that may install signal handlers."""
    return threading.current_thread() is threading.main_thread()


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
    return libc.prctl


_PRCTL = _prctl()  # resolved here, so the child between fork and exec only makes the call


def _die_with(parent: int, death_signal: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child, after the user switch of Popen(user=…)
        if _PRCTL(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os._exit(1)

    return preexec


class _Forker:
    """The one thread that forks every child, so that their parent-death signal never fires early."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="child-forker", daemon=True)
                self._thread.start()
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                done.set_exception(exc)


_FORKER = _Forker()


def spawn(argv: list[str], *, death_signal: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **popen)`` whose child gets ``death_signal`` when this process dies."""
    if _PRCTL is None:  # no parent-death signal here: `opsctl up` cleans up leftovers at its next start
        return subprocess.Popen(argv, **popen)
    preexec = _die_with(os.getpid(), int(death_signal))
    return _FORKER.call(lambda: subprocess.Popen(argv, preexec_fn=preexec, **popen))  # type: ignore[no-any-return]


# -- recognising processes -------------------------------------------------------------------------
def created_at(pid: int) -> float | None:
    """The creation time of ``pid``, or None when there is no such (live) process."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def snapshot(cwd_of: Iterable[int] = ()) -> list[ProcessRow]:
    """Every live process (zombies excluded), with the working directory of the PIDs in ``cwd_of``."""
    want_cwd = set(cwd_of)
    rows = []
    for proc in psutil.process_iter(["pid", "create_time", "name", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or info["create_time"] is None:
            continue
        try:
            sid = os.getsid(info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
        cwd = None
        if info["pid"] in want_cwd:
            with contextlib.suppress(psutil.Error):
                cwd = proc.cwd()
        rows.append(ProcessRow(info["pid"], sid, float(info["create_time"]), info["name"] or "", cwd))
    return rows


def same_process(pid: int, created: float) -> bool:
    """Whether ``pid`` is still the process created at ``created`` (not one that reused its PID)."""
    now = created_at(pid)
    return now is not None and same_start(now, created)


def wait_gone(pids: Iterable[tuple[int, float]], timeout: float) -> list[tuple[int, float]]:
    """Wait until none of (pid, created) is alive; return those still alive at ``timeout``."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left:
        left = [p for p in left if same_process(*p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def send(pid: int, created: float, sig: int) -> bool:
    """Signal ``pid`` if it is still the process created at ``created``; whether it was signalled."""
    if not same_process(pid, created):
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
