"""Per-call timeouts for the graders: in worker processes (``WorkerPool``) and, for plain callables, in threads.

The graders run in ``WorkerPool`` processes, killed at the budget: sympy evaluates an integer power or a
factorial eagerly, in one long C routine that holds the GIL (``9^{9^{9^{9}}}`` runs for hours), and neither a
thread nor a signal can stop that. ``run_with_timeout`` (below) is the thread-based timeout, kept for callables
that cannot travel to another process and for environments where no process can be started.

Thread-based timeout (``run_with_timeout``), no signals, no child processes:

math-verify and sympy can run for minutes on adversarial answers. math-verify's own timeout uses
``signal.alarm``, which only works in the main thread of the main interpreter: in a grading thread pool it
raises, and in some worker set-ups it silently never fires. We disable it (``parsing_timeout=None``,
``timeout_seconds=None``) and enforce our own:

the work runs in a daemon helper thread; the caller waits at most ``timeout_s``. On expiry the caller gets the
default value at once, and the helper thread is asked to stop by an asynchronous exception
(``PyThreadState_SetAsyncExc``), which Python raises at the thread's next bytecode, so pure-Python sympy loops
stop promptly. A call stuck inside one long C routine (a giant integer power) stops when that routine returns;
the caller never waits for it (but it keeps the GIL, so the caller cannot run either: hence the processes).

Worker processes (``WorkerPool.run``): each call is sent to an idle worker process; past the budget that worker
is killed (SIGKILL) and the call returns "timeout". Workers are forked, a few milliseconds each, from a "zygote":
one interpreter per pool that imported and warmed up the graders once and forks on request (so a killed worker is
replaced at once, and our possibly threaded process never forks without exec). The zygote is started with
``subprocess``, so all this works in daemonic multiprocessing workers, thread pools, torchrun/gloo ranks and Ray
alike. Nothing outlives its parent: the zygote and each worker exit at end-of-file on their pipes and ask the
kernel for SIGKILL when their parent ends (PR_SET_PDEATHSIG; the zygote is started by one long-lived thread,
since the signal follows the starting thread), so a parent killed by SIGKILL takes along a worker stuck in a C
routine. Each worker's address space is capped (the zygote's size + ``memory_limit_bytes``): an answer that
tries to build a huge number fails fast with MemoryError instead of pushing the machine into swap.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable, TypeVar

log = logging.getLogger("octomega.eval")

T = TypeVar("T")


class GradingTimeout(Exception):
    """Raised inside a helper thread whose caller stopped waiting."""


def _interrupt(thread: threading.Thread) -> None:
    tid = thread.ident
    if tid is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(GradingTimeout))


def run_with_timeout(fn: Callable[..., T], *args: Any, timeout_s: float | None = 5.0, default: T = None,
                     **kwargs: Any) -> tuple[T, str]:
    """Call ``fn(*args, **kwargs)``; give up after ``timeout_s`` seconds.

    Returns (value, status) with status "ok", "timeout" (value = default) or "error" (fn raised; value =
    default). ``timeout_s=None`` calls fn directly in this thread.
    """
    if timeout_s is None:
        try:
            return fn(*args, **kwargs), "ok"
        except Exception:
            return default, "error"
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except GradingTimeout:
            pass
        except BaseException as e:  # noqa: BLE001 - any failure of the grader is a failed verdict
            box["error"] = e
        finally:
            done.set()

    thread = threading.Thread(target=work, name="octomega-grade", daemon=True)
    thread.start()
    if not done.wait(timeout_s):
        if not done.is_set():
            _interrupt(thread)
        return default, "timeout"
    if "error" in box:
        return default, "error"
    return box["value"], "ok"


# ---------------------------------------------------------------- worker processes
STARTUP_TIMEOUT_S = 120.0  # a zygote that is not ready by then is given up (a broken install, a starved machine)
_RETRY_AFTER_S = 60.0  # after a failed start, calls use threads for this long before a new start is tried
_PATH_ENV = "OCTOMEGA_GRADER_SYS_PATH"
_ZYGOTE_CODE = ("import json, os, sys; sys.path[:0] = [p for p in json.loads(os.environ.pop('" + _PATH_ENV + "')) "
                "if p not in sys.path]; from octomega.eval.timeouts import _zygote_main; _zygote_main()")


class WorkerStartError(RuntimeError):
    """No grading worker process could be started."""


def _resolve(spec: str) -> Callable[[], Any]:
    module, _, name = spec.partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it ends (Linux: octomega.lifetime); exit now if that already
    happened. Elsewhere end-of-file on the pipes still ends an idle process."""
    from octomega.lifetime import die_with_parent

    die_with_parent(parent_pid)


def _cap_memory(extra_bytes: int) -> None:
    """Cap the address space at its current size + extra_bytes: a huge number fails with MemoryError."""
    if extra_bytes <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + extra_bytes if hard == resource.RLIM_INFINITY else min(size + extra_bytes, hard)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError, ImportError):
        pass


def _serve(rfd: int, wfd: int) -> None:
    """A worker's loop: (fn, args, kwargs) in, ("ok", value) or ("error", message) out, until end-of-file."""
    inbox, outbox = Connection(rfd, writable=False), Connection(wfd, readable=False)
    while True:
        try:
            fn, args, kwargs = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        try:
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - any failure of the grader is a failed verdict
            reply = ("error", f"{type(e).__name__}: {str(e)[:300]}")
        try:
            outbox.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            outbox.send(("error", f"unpicklable result: {e}"))
        except OSError:
            return


def _zygote_main() -> None:
    """The zygote: imports and warms the graders once, then forks a worker per request (a few ms each).

    argv: socket fd, parent pid, warm-up "module:function" (or "-"), memory cap of each worker in bytes.
    Requests on the socket (SOCK_SEQPACKET): b"F" with two fds (the worker's request-read and result-write ends)
    -> reply b"P" + pid; b"K" + pid: kill that worker (SIGKILL) and reap it. Only workers we were asked to kill
    are reaped, so a pid cannot be reused before its kill is sent. End-of-file: exit (the workers then get SIGKILL
    through PR_SET_PDEATHSIG).
    """
    import gc
    import select
    import socket

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then ends us
    sock_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    warmup, cap = sys.argv[3], int(sys.argv[4])
    _die_with_parent(parent_pid)
    sock = socket.socket(fileno=sock_fd)
    try:
        if warmup != "-":
            _resolve(warmup)()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which falls back to threads
        sock.send(b"E" + f"{type(e).__name__}: {e}".encode()[:4000])
        return
    gc.freeze()  # keep the warmed-up objects out of the collector: forked workers then share their pages
    me = os.getpid()
    sock.send(b"R" + me.to_bytes(8, "little"))
    dying: set[int] = set()
    while True:
        for pid in list(dying):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    dying.discard(pid)
            except ChildProcessError:
                dying.discard(pid)
        if not select.select([sock], [], [], 0.2 if dying else None)[0]:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 64, 2)
        except OSError:
            return
        if not msg:
            return
        if msg[:1] == b"F" and len(fds) == 2:
            pid = os.fork()
            if pid == 0:
                try:
                    sock.close()
                    _die_with_parent(me)
                    _cap_memory(cap)
                    _serve(*fds)
                finally:
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            sock.send(b"P" + pid.to_bytes(8, "little"))
        elif msg[:1] == b"K":
            for fd in fds:
                os.close(fd)
            pid = int.from_bytes(msg[1:9], "little")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            dying.add(pid)


class _Zygote:
    """Our end of a zygote process (started by WorkerPool on its long-lived starter thread)."""

    def __init__(self, warmup: str | None, memory_limit_bytes: int):
        import socket

        if not sys.executable:
            raise WorkerStartError("no Python executable to start (sys.executable is empty)")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env[_PATH_ENV] = json.dumps([p or os.getcwd() for p in sys.path])
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        argv = [sys.executable, "-c", _ZYGOTE_CODE, str(theirs.fileno()), str(os.getpid()), warmup or "-",
                str(memory_limit_bytes)]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                         pass_fds=(theirs.fileno(),), close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock, self.lock = ours, threading.Lock()
        try:
            ours.settimeout(STARTUP_TIMEOUT_S)
            msg = ours.recv(4096)
        except OSError as e:
            self.close()
            raise WorkerStartError(f"the grading zygote did not start ({e or 'timed out'})") from None
        if msg[:1] != b"R":
            self.close()
            detail = msg[1:].decode(errors="replace") if msg else f"exit code {self.proc.poll()}"
            raise WorkerStartError(f"the grading zygote failed to start: {detail}")
        ours.settimeout(30.0)  # a fork takes milliseconds; a zygote that does not answer is dead to us

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self) -> "_Worker":
        import socket

        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.sock, [b"F"], [req_r, res_w])
                msg = self.sock.recv(64)
        except OSError:
            for fd in (req_w, res_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(res_w)
        if msg[:1] != b"P":
            os.close(req_w)
            os.close(res_r)
            raise OSError("the grading zygote closed its socket")
        pid = int.from_bytes(msg[1:9], "little")
        return _Worker(pid, Connection(req_w, readable=False), Connection(res_r, writable=False), self)

    def kill(self, pid: int) -> None:
        try:
            with self.lock:
                self.sock.send(b"K" + pid.to_bytes(8, "little"))
        except OSError:  # the zygote is gone, and its workers with it
            pass

    def close(self) -> None:
        try:
            self.sock.close()  # end-of-file: the zygote exits, its workers die with it
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class _Worker:
    def __init__(self, pid: int, requests: Connection, results: Connection, zygote: _Zygote):
        self.pid, self.requests, self.results, self.zygote = pid, requests, results, zygote

    def kill(self) -> None:
        for c in (self.requests, self.results):
            try:
                c.close()
            except OSError:
                pass
        self.zygote.kill(self.pid)


_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


class WorkerPool:
    """Grading worker processes, forked on demand from a preloaded zygote; one per concurrently grading thread.

    ``run(fn, *args, timeout_s=..., default=...)`` calls ``fn`` (a module-level function: it travels by name)
    in a worker and returns (value, status) like ``run_with_timeout``: "ok", "timeout" (the worker was killed
    at the budget; value = default) or "error" (fn raised or the worker died; value = default).

    ``timeout_s`` bounds the call once it has a worker; getting one takes milliseconds (an idle worker, or a fork
    of the zygote), except on the first call, which starts the zygote (an interpreter importing the graders: a
    second or two, capped at STARTUP_TIMEOUT_S, like ``ensure_loaded``), and after the zygote died (killed from
    outside), when a new one starts. Where no zygote can be started (no
    ``sys.executable``, process limits), calls run in threads (``run_with_timeout``) and one warning says so.
    """

    def __init__(self, warmup: str | None = None, memory_limit_bytes: int = 4 << 30):
        self.warmup, self.memory_limit_bytes = warmup, memory_limit_bytes
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:  # also in a forked child: the parent's processes and threads are not ours
        self._pid = os.getpid()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._zygote: _Zygote | None = None
        self._starter: queue.SimpleQueue | None = None
        self._failed_at: float | None = None
        self._failure = ""
        self._warned = False
        self._closed = False

    # ---- the zygote is started on one long-lived thread: PR_SET_PDEATHSIG follows the thread that started it
    def _starter_loop(self, jobs: queue.SimpleQueue) -> None:
        while True:
            reply = jobs.get()
            try:
                reply.put(_Zygote(self.warmup, self.memory_limit_bytes))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                reply.put(e)

    def _zygote_or_none(self) -> _Zygote | None:
        with self._start_lock:
            z = self._zygote
            if z is not None and z.alive():
                return z
            if z is not None:
                z.close()
                self._zygote = None
            if self._closed:
                return None
            if self._failed_at is not None and time.monotonic() - self._failed_at < _RETRY_AFTER_S:
                return None
            if self._starter is None:
                self._starter = queue.SimpleQueue()
                threading.Thread(target=self._starter_loop, args=(self._starter,), name="octomega-grade-starter",
                                 daemon=True).start()
            reply: queue.SimpleQueue = queue.SimpleQueue()
            self._starter.put(reply)
            z = reply.get()
            if isinstance(z, BaseException):
                self._failed_at, self._failure = time.monotonic(), str(z) or type(z).__name__
                return None
            self._zygote, self._failed_at = z, None
            return z

    def _acquire(self) -> _Worker | None:
        """An idle worker or a new one; None when no worker can be had (use threads)."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.zygote is self._zygote and not w.results.poll(0):  # readable when idle: it died (EOF)
                    self._busy.add(w)
                    return w
                w.kill()  # dead, or from a zygote that has been replaced
        for _ in range(2):
            z = self._zygote_or_none()
            if z is None:
                return None
            try:
                w = z.fork()
            except OSError:
                z.close()  # dead or hung: the next round starts a new one
                continue
            with self._lock:
                self._busy.add(w)
            return w
        return None

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            if self._closed or self._pid != os.getpid():
                worker.kill()
            else:
                self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.kill()

    def _fallback(self, fn, args, kwargs, timeout_s, default):
        if not self._warned and not self._closed:
            self._warned = True
            msg = (f"grading runs in threads, not worker processes ({self._failure}): an answer that makes sympy "
                   "compute a huge number can stall grading")
            log.warning(msg)
            print(f"warning: {msg}", file=sys.stderr)
        if self.warmup:
            _resolve(self.warmup)()
        return run_with_timeout(fn, *args, timeout_s=timeout_s, default=default, **kwargs)

    def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = 5.0, default: T = None,
            **kwargs: Any) -> tuple[T, str]:
        if timeout_s is None:
            if self.warmup:
                _resolve(self.warmup)()
            return run_with_timeout(fn, *args, timeout_s=None, default=default, **kwargs)
        try:
            payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise TypeError(f"WorkerPool.run: {fn!r} and its arguments must be picklable (a module-level "
                            f"function): {e}") from None
        deadline = None
        for attempt in range(3):  # an idle worker may have died meanwhile (OOM killer): take another
            worker = self._acquire()
            if worker is None:
                return self._fallback(fn, args, kwargs, timeout_s, default)
            if deadline is None:
                deadline = time.monotonic() + timeout_s
            try:
                worker.requests.send_bytes(payload)
            except OSError:
                self._discard(worker)
                continue
            try:
                ready = worker.results.poll(max(deadline - time.monotonic(), 0.0))
                reply = worker.results.recv() if ready else None
            except (EOFError, OSError):  # it died: killed from outside just now, or this input crashes it
                self._discard(worker)
                if attempt == 0 and time.monotonic() < deadline:
                    continue  # once more, in what is left of the budget
                log.warning("a grading worker died during a call; counted as an error")
                return default, "error"
            if reply is None:
                self._discard(worker)
                return default, "timeout"
            self._release(worker)
            status, value = reply
            return (value, "ok") if status == "ok" else (default, "error")
        return default, "error"

    def pids(self) -> list[int]:
        """Process ids: the zygote's (first) and its workers', idle or busy (tests, diagnostics)."""
        if self._pid != os.getpid():
            return []
        with self._lock:
            z = self._zygote
            return ([z.proc.pid] if z is not None and z.alive() else []) + sorted(
                w.pid for w in self._idle + list(self._busy))

    def close(self, final: bool = False) -> None:
        """Kill the zygote and every worker (busy ones too: their calls return "error"); later calls start anew,
        unless ``final`` (at exit), when they run in threads."""
        if self._pid != os.getpid():
            return
        starting = not self._start_lock.acquire(timeout=5)  # a zygote being started: close what there is
        try:
            with self._lock:
                if final:
                    self._closed, self._failure = True, "the interpreter is exiting"
                workers, self._idle, self._busy = self._idle + list(self._busy), [], set()
                z, self._zygote = self._zygote, None
        finally:
            if not starting:
                self._start_lock.release()
        for w in workers:
            w.kill()
        if z is not None:
            z.close()


def _kill_all_workers() -> None:
    for pool in list(_POOLS):
        pool.close(final=True)


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._lock, pool._start_lock = threading.Lock(), threading.Lock()  # another thread may have held them
        pool._reset()


atexit.register(_kill_all_workers)
os.register_at_fork(after_in_child=_after_fork_in_child)
