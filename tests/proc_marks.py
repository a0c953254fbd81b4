"""The processes a test started, found by a mark in their environment (tests of what outlives a killed command).

Children inherit the environment through fork, spawn and exec alike, so a helper orphaned by its parent's SIGKILL
and re-parented to init is still found by its mark, wherever it now hangs in the process tree. Linux /proc only.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

MARK = "OCTOMEGA_TEST_PROCESS_MARK"


def marked_env(env: dict | None = None) -> tuple[str, dict]:
    """(a new mark, a copy of `env` (default os.environ) carrying it)."""
    mark = uuid.uuid4().hex
    return mark, {**(os.environ if env is None else env), MARK: mark}


def marked(mark: str) -> dict[int, str]:
    """{pid: command line} of the live processes carrying `mark` (zombies, whose environment is gone, are not)."""
    needle = f"{MARK}={mark}".encode()
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:  # ended meanwhile, or not ours
            continue
    return out


def wait_for(mark: str, predicate, timeout: float) -> dict[int, str]:
    """Poll marked(mark) until predicate(it) holds or `timeout` seconds passed; returns the last answer."""
    end = time.monotonic() + timeout
    while True:
        now = marked(mark)
        if predicate(now) or time.monotonic() > end:
            return now
        time.sleep(0.1)


def kill_marked(mark: str) -> None:
    """SIGKILL whatever still carries `mark` (a failed test's leftovers), by pid."""
    for pid in marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
