"""A full disk while writing a large output (a checkpoint, a converted model, an RL run's HF export): one line that
names the path, what the output needs and what is free, and what was kept, instead of a traceback.

Every such output is written whole or not at all (a checkpoint counts only with its COMPLETE marker, an HF
directory appears only by a rename once complete), and its writer removes what it wrote before it reports the
error, so a failed write frees its space and is never taken for complete. Standard library only.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFull(RuntimeError):
    """An output did not fit on its disk (ENOSPC or EDQUOT); the message says where, how much, and what was kept.
    One of octomega's own errors: the commands print it as one line (exit status 2)."""


def disk_full_cause(error: BaseException, also: tuple[BaseException, ...] = ()) -> OSError | None:
    """The "no space left" / "quota exceeded" OSError behind `error`, or None when the disk is not the cause.

    Looks through the chain of causes and contexts and through the per-rank failures a
    torch.distributed.checkpoint CheckpointException carries; `also`: errors recorded where they happened (Megatron's
    checkpoint writer threads report only the type of theirs: octomega/runtime/megatron_compat.py keeps them)."""
    seen: set[int] = set()
    todo: list = [error, *also]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        todo += [e.__cause__, e.__context__]
        for failure in (getattr(e, "failures", None) or {}).values():  # CheckpointException: {rank: (exc, tb)}
            todo.append(failure[0] if isinstance(failure, tuple) else failure)
    return None


def size_text(n: int | None) -> str:
    """Bytes for people: '512 B', '3.4 MB', '1.25 GB' (decimal units, as df -H)."""
    if n is None:
        return "an unknown amount"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def free_bytes(path: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (or of its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full_error(path: str | Path, *, what: str, needed: int | None, kept: str,
                    cause: OSError | None = None) -> DiskFull:
    """The one-line error for `what` (e.g. "checkpoint") at `path` that did not fit: needed bytes, free bytes now
    (after the partial output was removed), `kept` (what is intact), and what to do. cause None: it was refused
    before writing (too little free space)."""
    free = free_bytes(path)
    reason = NO_SPACE.get(cause.errno, "no space left on device") if cause is not None else "not enough free space"
    done = "nothing of it was kept" if cause is not None else "nothing was written"
    return DiskFull(f"{reason} for {what} {path}: it needs about {size_text(needed)}, free there now: "
                    f"{size_text(free)}; {done}, and {kept}. Free space there (or write to a larger disk), then run "
                    "again")


def remove_partial(path: str | Path) -> None:
    """Remove a half-written output (a file or a directory) so that it frees its space; errors are ignored (the
    disk-full error is what the user must see)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except OSError:
            pass
