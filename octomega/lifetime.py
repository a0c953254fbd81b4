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

A command that is not Python (or not ours) is started through `python -m octomega.lifetime --parent PID
--signal TERM -- COMMAND...`, which asks for the signal and then becomes COMMAND (exec keeps the request):
`octomega pipeline` starts its stages so, and a killed pipeline takes its running stage along (SIGTERM: a
training stage saves a checkpoint and stops, as when the pipeline itself gets SIGTERM).

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


def die_with_parent(owner_pid: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """In a child process: have it killed (SIGKILL) when its parent ends, and when `owner_pid` ends if that is
    another process (an ancestor the child serves). If the owner has already ended, exit at once. Returns whether
    the kernel took the parent-death request (False off Linux, where only the owner watch works). `sig`: the signal
    the kernel sends instead (SIGTERM lets a training stage save first)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig)) == 0
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


def exec_argv(cmd: list[str], *, sig: int = signal.SIGTERM) -> list[str]:
    """The argv that runs `cmd` (a list, argv[0] on PATH or a path) as a child of this process that gets `sig`
    when this process ends."""
    import sys

    return [sys.executable, "-m", "octomega.lifetime", "--parent", str(os.getpid()), "--signal",
            signal.Signals(sig).name.removeprefix("SIG"), "--", *cmd]


def main(argv: list[str] | None = None) -> None:
    """python -m octomega.lifetime --parent PID --signal NAME -- COMMAND...: become COMMAND, signalled when PID (our
    parent) ends; exit 0 at once if it already has."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m octomega.lifetime", description=main.__doc__)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--signal", default="TERM", help="signal name without SIG (default TERM)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command after --")
    die_with_parent(args.parent, getattr(signal, "SIG" + args.signal.upper()))
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
