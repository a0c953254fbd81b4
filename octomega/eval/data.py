"""Loading benchmark items: test files in DATA_DIR/<name>/test.jsonl, or the Hugging Face hub on request.

Data directory, first found: an explicit ``data_dir``; the OCTOMEGA_BENCHMARKS environment variable; the test sets
that ship with octomega (``octomega/eval/testsets``, sources and licences in its README.md). The hub is only
contacted when the caller asks (``hub=True``, ``--hub`` on the command line), through the optional ``datasets``
package.
"""
from __future__ import annotations

import os
from pathlib import Path

from octomega.eval.benchmarks import Benchmark, Item
from octomega.jsonl import read_jsonl

SHIPPED_DIR = Path(__file__).resolve().parent / "testsets"
ENV_VAR = "OCTOMEGA_BENCHMARKS"


class BenchmarkDataError(ValueError):
    """A benchmark's data is missing or malformed; the message says where and what to do."""


def default_data_dir() -> Path | None:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return SHIPPED_DIR if SHIPPED_DIR.is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    d = Path(data_dir) if data_dir else default_data_dir()
    if d is None:
        raise BenchmarkDataError(
            f"no benchmark data directory: pass --data-dir DIR (DIR/<benchmark>/test.jsonl), set {ENV_VAR}, "
            "or use --hub to download from the Hugging Face hub")
    if not d.is_dir():
        raise BenchmarkDataError(f"benchmark data directory {str(d)!r} does not exist")
    return d


def test_file(bench: Benchmark, data_dir: Path) -> Path:
    for candidate in (data_dir / bench.name / "test.jsonl", data_dir / f"{bench.name}.jsonl"):
        if candidate.is_file():
            return candidate
    return data_dir / bench.name / "test.jsonl"


def to_items(bench: Benchmark, rows: list[dict], where: str) -> list[Item]:
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(bench.to_item(row, i))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            detail = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise BenchmarkDataError(
                f"{where}, record {i + 1}: {detail}; fields present: {sorted(row)}. Is this the {bench.title} "
                f"test set in the layout of octomega/eval/testsets/README.md?") from e
    if not items:
        raise BenchmarkDataError(f"{where}: no records")
    seen: set[str] = set()
    for i, it in enumerate(items):  # ids key the resume file: make repeated ones unique by their position
        if it.id in seen:
            it.id = f"{it.id}@{i}"
        seen.add(it.id)
    return items


def load_hub_rows(bench: Benchmark) -> list[dict]:
    if bench.hub is None:
        raise BenchmarkDataError(f"no hub source is known for {bench.name!r}; put its test file at "
                                 f"DATA_DIR/{bench.name}/test.jsonl")
    try:
        import datasets
    except ImportError as e:
        raise BenchmarkDataError("--hub needs the `datasets` package: pip install datasets") from e
    rows: list[dict] = []
    for config in bench.hub.configs:
        ds = datasets.load_dataset(bench.hub.path, config, split=bench.hub.split)
        rows.extend(dict(r) for r in ds)
    return rows


def load_items(bench: Benchmark, data_dir: str | os.PathLike | None = None, *, hub: bool = False,
               limit: int | None = None) -> list[Item]:
    """Items of one benchmark in file order (the first ``limit`` when given)."""
    if hub:
        items = to_items(bench, load_hub_rows(bench), f"hub dataset {bench.hub.path if bench.hub else '?'}")
    else:
        path = test_file(bench, resolve_data_dir(data_dir))
        if not path.is_file():
            hint = f" or download it with --hub ({bench.hub.path})" if bench.hub else ""
            raise BenchmarkDataError(f"benchmark {bench.name!r}: test file not found at {path}; pass --data-dir "
                                     f"DIR with DIR/{bench.name}/test.jsonl{hint}")
        rows = read_jsonl(path, error=BenchmarkDataError,
                          hint="a test set is one JSON object per line (octomega/eval/testsets/README.md)")
        items = to_items(bench, rows, str(path))
    return items[:limit] if limit is not None else items
