"""Helper processes end with the process that started them, also when that one is killed by SIGKILL.

A process killed by SIGKILL (the OOM killer, `scancel`, `kill -9`) runs no cleanup, and a child of it that waits on
a queue (a multiprocessing pool worker, a manager's server, a DataLoader worker between batches) waits for ever:
an orphan holding memory and, for a data pipeline, possibly writing into the run's directory after a re-run has
started. Every helper process octomega starts, or has a library start, calls `die_with_parent` first thing
(octomega/train/data.py's DataLoader workers, data_prep/executor.py's datatrove manager and workers,
octomega/eval/timeouts.py's grading zygote and workers):

- Linux ends a child when its parent ends, on request (prctl PR_SET_PDEATHSIG). The kernel sends the signal when
  the *thread* that started the child ends, so helpers are started from a thread that lives as long as the
  process (the main thread, or a dedicated one).
- A helper whose parent is not the process it serves (datatrove's workers are forked by multiprocessing's fork
  server, which waits for its children before it exits, so it cannot be the one to end them) also watches that
  process itself: a thread waiting on a pidfd of it (readable when it ends) kills the helper.

Standard library only: data_prep and the grading zygote use it too.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCHED: set[tuple[int, int]] = set()  # (this process, owner) pairs a watchdog thread serves


def die_with_parent(owner_pid: int | None = None) -> bool:
    """In a child process: have it killed (SIGKILL) when its parent ends, and when `owner_pid` ends if that is
    another process (an ancestor the child serves). If the owner has already ended, exit at once. Returns whether
    the kernel took the parent-death request (False off Linux, where only the owner watch works)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):  # not Linux
        ok = False
    if owner_pid is None:
        return ok
    if not _alive(owner_pid):  # it ended before this call: no signal will come
        os._exit(0)
    if os.getppid() != owner_pid and (os.getpid(), owner_pid) not in _WATCHED:
        _WATCHED.add((os.getpid(), owner_pid))
        threading.Thread(target=_watch, args=(owner_pid,), name="octomega-owner-watch", daemon=True).start()
    return ok


def helper_initializer(initializer, owner_pid: int, *initargs) -> None:
    """An initializer for the processes of a multiprocessing pool or manager: die_with_parent(owner_pid), then the
    pool's own `initializer` (None: nothing). Light to import, so it runs early in a new worker."""
    die_with_parent(owner_pid)
    if initializer is not None:
        initializer(*initargs)


def _watch(owner_pid: int) -> None:
    """Kill this process when `owner_pid` ends: a pidfd becomes readable then (Linux >= 5.3), else poll."""
    try:
        fd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while _alive(owner_pid):
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped by its own parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
