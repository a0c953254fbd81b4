"""The per-sample JSONL file of a run: append-only, fsync'ed per chunk, and readable after a crash.

A crash can leave the last line half written; reading drops it (and cuts it off the file) so the run resumes
from the last complete record. A damaged line elsewhere is an error: it was not written by us.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class RecordFileError(ValueError):
    pass


def read_records(path: Path) -> list[dict]:
    """Complete records of a samples file; a truncated last line is removed from the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end, pos = [], 0, 0
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        end = pos + len(line) + 1
        if line.strip():
            try:
                records.append(json.loads(line))
                good_end = min(end, len(data))
            except json.JSONDecodeError as e:
                if any(rest.strip() for rest in lines[lineno:]):
                    raise RecordFileError(
                        f"{path}, line {lineno}: damaged record ({e.msg}); delete the line or rerun with "
                        "--overwrite") from e
                break  # a half-written last line: the run crashed while writing it
        else:
            good_end = min(end, len(data))
        pos = end
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    if good_end > 0 and not data[:good_end].endswith(b"\n"):
        with open(path, "ab") as f:  # complete record without its newline: finish the line
            f.write(b"\n")
    return records


def append_records(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, obj) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a results.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
