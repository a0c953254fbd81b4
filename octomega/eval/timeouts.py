"""A per-call timeout that works in any thread of any process (no signals, no child processes).

math-verify and sympy can run for minutes on adversarial answers. math-verify's own timeout uses
``signal.alarm``, which only works in the main thread of the main interpreter: in a grading thread pool it
raises, and in some worker set-ups it silently never fires. We disable it (``parsing_timeout=None``,
``timeout_seconds=None``) and enforce our own:

the work runs in a daemon helper thread; the caller waits at most ``timeout_s``. On expiry the caller gets the
default value at once, and the helper thread is asked to stop by an asynchronous exception
(``PyThreadState_SetAsyncExc``), which Python raises at the thread's next bytecode, so pure-Python sympy loops
stop promptly. A call stuck inside one long C routine (a giant integer power) stops when that routine returns;
the caller never waits for it. Works from the main thread, from worker threads, from multiprocessing workers
(daemonic or not, since no child process is created) and from Ray/verl workers alike.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable, TypeVar

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
