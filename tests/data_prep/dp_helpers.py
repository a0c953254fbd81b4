"""Helpers shared by the data_prep tests (a uniquely named module: tests/ folders have no __init__.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ("the sum of and is plus minus equals apples pencils has buys gives more how many does have now "
         "question answer example so then first next check which right").split()


def sample_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(3, 25))]
        words.insert(int(rng.integers(0, len(words))), str(int(rng.integers(0, 10_000))))
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", " = 4.", " \\boxed{7}."]))
    return out


def write_jsonl(path: Path, lines: list) -> Path:
    """Write records (dicts are JSON-encoded, str and bytes lines are written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def read_prefix(prefix) -> list[list[int]]:
    """Every document of a prefix, read with megatron-core's own IndexedDataset."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def quiet(*_args, **_kwargs) -> None:
    return None
