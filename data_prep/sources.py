"""Which input files exist, and which contiguous piece of them each datatrove task reads.

Tasks read contiguous pieces in input order (files sorted by path), so concatenating the task shards in rank
order gives the documents in input order. Uncompressed JSON Lines files are cut at byte offsets (a task owns
the lines that *start* in its byte range), parquet files at row groups, Hugging Face datasets at row ranges;
compressed files are never cut. So one big file still keeps every worker busy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

JSONL_EXT = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.bz2", ".jsonl.xz", ".ndjson")  # *.json: pass --glob
PARQUET_EXT = (".parquet",)
COMPRESSED_EXT = (".gz", ".zst", ".bz2", ".xz")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class InputError(ValueError):
    """An input that cannot be read as asked; the message names the path and what to do."""


@dataclass(frozen=True)
class Unit:
    """A contiguous piece of one input: bytes [start, end) of a jsonl file, row groups [start, end) of a parquet
    file, or rows [start, end) of a Hugging Face dataset (path is "" then). end None = to the end."""

    path: str  # relative to the plan's root
    start: int = 0
    end: int | None = None


@dataclass(frozen=True)
class Plan:
    fmt: str  # "jsonl" | "parquet" | "hf"
    root: str  # folder (or hub id / dataset directory for hf) the unit paths are relative to
    files: tuple[str, ...]
    total_bytes: int  # input size (rows for hf)
    tasks: tuple[tuple[Unit, ...], ...]  # tasks[rank] = the units that task reads, in order


def _is_hf_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def detect_format(inputs: list[str]) -> str:
    """jsonl / parquet from file extensions, hf for a saved dataset directory or a hub id."""
    first = inputs[0]
    p = Path(first)
    looks_like_file = first.endswith(JSONL_EXT + PARQUET_EXT + (".json",))
    if _is_hf_dir(p) or (not p.exists() and _HUB_ID.fullmatch(first) and not looks_like_file):
        return "hf"
    names = [str(f) for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else [p])]
    if any(n.endswith(PARQUET_EXT) for n in names):
        return "parquet"
    return "jsonl"


def list_files(inputs: list[str], fmt: str, glob: str | None = None) -> tuple[str, list[str], list[int]]:
    """(root, files relative to root, sizes in bytes) for local inputs: files or directories (searched
    recursively for the format's extensions, or for `glob`)."""
    exts = JSONL_EXT if fmt == "jsonl" else PARQUET_EXT
    found: list[Path] = []
    for inp in inputs:
        p = Path(inp).expanduser()
        if not p.exists():
            raise InputError(f"{inp}: no such file or directory (check --input)")
        if p.is_file():
            found.append(p.resolve())
            continue
        matches = sorted(p.rglob(glob)) if glob else sorted(f for f in p.rglob("*") if f.name.endswith(exts))
        matches = [f.resolve() for f in matches if f.is_file()]
        if not matches:
            raise InputError(f"{inp}: no {glob or ' / '.join(exts)} files in this directory "
                             f"(use --glob PATTERN or --input-format to say what to read)")
        found.extend(matches)
    found = sorted(dict.fromkeys(found))
    root = Path(os.path.commonpath([str(f.parent) for f in found]))
    return str(root), [str(f.relative_to(root)) for f in found], [f.stat().st_size for f in found]


def _boundaries(total: int, tasks: int) -> list[int]:
    return [total * r // tasks for r in range(tasks + 1)]


def _owner(bounds: list[int], offset: int) -> int:
    """The task whose byte range [bounds[r], bounds[r+1]) holds `offset`."""
    for r in range(len(bounds) - 1):
        if offset < bounds[r + 1]:
            return r
    return len(bounds) - 2


def plan_jsonl(root: str, files: list[str], sizes: list[int], tasks: int) -> list[list[Unit]]:
    total = sum(sizes)
    bounds = _boundaries(total, tasks)
    out: list[list[Unit]] = [[] for _ in range(tasks)]
    off = 0
    for f, size in zip(files, sizes):
        if size == 0:
            continue
        if f.endswith(COMPRESSED_EXT):  # not seekable by line: the whole file goes to one task
            out[_owner(bounds, off + size // 2)].append(Unit(f, 0, None))
        else:
            for r in range(tasks):
                lo, hi = max(bounds[r], off), min(bounds[r + 1], off + size)
                if lo < hi:
                    out[r].append(Unit(f, lo - off, None if hi == off + size else hi - off))
        off += size
    return out


def plan_parquet(root: str, files: list[str], tasks: int) -> tuple[list[list[Unit]], int]:
    import pyarrow.parquet as pq

    groups = []  # (file, row group index, bytes)
    for f in files:
        try:
            meta = pq.ParquetFile(os.path.join(root, f)).metadata
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise InputError(f"{os.path.join(root, f)}: not a readable parquet file ({e})") from e
        groups += [(f, i, max(1, meta.row_group(i).total_byte_size)) for i in range(meta.num_row_groups)]
    total = sum(g[2] for g in groups)
    bounds = _boundaries(total, tasks)
    out: list[list[Unit]] = [[] for _ in range(tasks)]
    off = 0
    for f, i, size in groups:
        r = _owner(bounds, off + size // 2)
        last = out[r][-1] if out[r] else None
        if last and last.path == f and last.end == i:
            out[r][-1] = Unit(f, last.start, i + 1)  # extend the run of row groups
        else:
            out[r].append(Unit(f, i, i + 1))
        off += size
    return out, total


def plan_rows(num_rows: int, tasks: int) -> list[list[Unit]]:
    bounds = _boundaries(num_rows, tasks)
    return [[Unit("", bounds[r], bounds[r + 1])] if bounds[r] < bounds[r + 1] else [] for r in range(tasks)]


def make_plan(inputs: list[str], fmt: str = "auto", tasks: int = 1, glob: str | None = None,
              hf_rows: int | None = None) -> Plan:
    """Find the inputs and cut them into `tasks` contiguous pieces. For hf, pass the dataset's row count."""
    if not inputs:
        raise InputError("no --input given")
    fmt = detect_format(inputs) if fmt == "auto" else fmt
    if fmt == "hf":
        if len(inputs) != 1:
            raise InputError("--input-format hf takes exactly one --input (a saved dataset directory or a hub id)")
        return Plan("hf", inputs[0], (), hf_rows or 0, tuple(tuple(t) for t in plan_rows(hf_rows or 0, tasks)))
    root, files, sizes = list_files(inputs, fmt, glob)
    if fmt == "jsonl":
        units, total = plan_jsonl(root, files, sizes, tasks), sum(sizes)
    elif fmt == "parquet":
        units, total = plan_parquet(root, files, tasks)
    else:
        raise InputError(f"--input-format {fmt!r}: choose jsonl, parquet, hf or auto")
    return Plan(fmt, root, tuple(files), total, tuple(tuple(t) for t in units))
