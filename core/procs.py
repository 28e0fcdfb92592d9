"""Child processes that die with their parent, and how to recognise a process again later.

``spawn`` is ``subprocess.Popen`` plus, on Linux, ``prctl(PR_SET_PDEATHSIG)`` in the child: when
the parent dies, even by ``kill -9``, the kernel sends the child ``death_signal``. That signal is
tied to the *thread* that forked, not to the process, so every child is forked by one thread
that lives as long as the process (a child forked by a request thread would be signalled when
the thread pool retires that thread). The setting is cleared when a process changes user, so
it is set after ``Popen(user=…)`` switched; and a child whose parent died before ``prctl`` ran
exits at once.

A PID alone names nothing once its process is gone: a process is named by (pid, creation time),
which no other process can have. ``snapshot`` reads the process table so that a clean-up can
check every process it is about to signal (``core.supervision.plan_cleanup``), and ``send``
signals through a pidfd opened *before* the check, so the process checked is the one signalled.

``wait_exit`` waits for a child with an ``Abort`` (``core.threads``) to give up on: the stop of
``opsctl up`` escalates when a second Ctrl-C sets its flag.
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil

from core.supervision import DATA_DIR_ENV, ProcessRow, same_start
from core.threads import Abort

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.05


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


@contextlib.contextmanager
def output_file(log_dir: Path | None, name: str) -> Iterator[Any]:
    """``log_dir / name`` opened to append a child's output (``DEVNULL`` without a ``log_dir``); closed on
    leaving, whether the child started or not (the child has its own copy of the descriptor)."""
    if log_dir is None:
        yield subprocess.DEVNULL
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / name, "ab") as out:
        yield out


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


def snapshot(cwd_of: Iterable[int] = (), sessions: Iterable[int] = ()) -> list[ProcessRow]:
    """Every live process (zombies excluded), with the working directory of the PIDs in ``cwd_of``
    and, for the members of the ``sessions`` (session ids), the data dir named in their environment."""
    want_cwd, want_env = set(cwd_of), set(sessions)
    rows = []
    for proc in psutil.process_iter(["pid", "create_time", "name", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or info["create_time"] is None:
            continue
        try:
            sid = os.getsid(info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
        cwd = data_dir = None
        if info["pid"] in want_cwd:
            with contextlib.suppress(psutil.Error):
                cwd = proc.cwd()
        if sid in want_env:
            with contextlib.suppress(psutil.Error, OSError):
                data_dir = proc.environ().get(DATA_DIR_ENV)
        rows.append(ProcessRow(info["pid"], sid, float(info["create_time"]), info["name"] or "", cwd, data_dir))
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
        time.sleep(POLL_SECONDS)
    return left


def send(pid: int, created: float, sig: int) -> bool:
    """Signal ``pid`` if it is still the process created at ``created``; whether it was signalled.

    The pidfd is opened first and the creation time checked while it is open: the pidfd names one
    process, so the signal reaches the process that passed the check or nobody (``os.kill`` after
    the check could reach a process that took the PID in between). Without pidfds (Linux < 5.3,
    other systems): the check, then ``os.kill``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd here
        fd = None
    try:
        if not same_process(pid, created):
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd is not None:
            os.close(fd)
    return True


def wait_exit(proc: subprocess.Popen[bytes], timeout: float | None, abort: Abort | None = None) -> bool:
    """Wait for ``proc`` to exit (and reap it), up to ``timeout`` seconds (None: no limit) or until
    ``abort`` is set; whether it exited. Polls, so that a flag set by a signal handler is seen."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while proc.poll() is None:
        if (abort is not None and abort.is_set()) or (deadline is not None and time.monotonic() >= deadline):
            return False
        time.sleep(POLL_SECONDS)
    return True
