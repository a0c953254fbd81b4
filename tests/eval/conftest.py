"""Fixtures for evaluation tests: the benchmark test sets that ship with octomega and a synthetic tiny_arith set (the
tiny random Llama, tiny_model_dir, is tests/conftest.py's)."""
from __future__ import annotations

import json
import random

import pytest

from octomega.eval.data import SHIPPED_DIR


@pytest.fixture(scope="session")
def testsets_dir():
    """The shipped test sets (octomega/eval/testsets): part of the package, so a missing one is a failure."""
    assert (SHIPPED_DIR / "gsm8k" / "test.jsonl").is_file(), f"shipped test sets missing under {SHIPPED_DIR}"
    return SHIPPED_DIR


def write_tiny_arith(path, n=24, seed=0):
    """A data_prep.synth-shaped tiny_arith file: {"id","question","answer","level"}, integer answers."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(1, 9)
            level = 1 + i % 3
            q = f"Ann has {a} pens and gets {b} more." + (f" She gives away {c}." if level > 1 else "") + \
                " How many pens does Ann have?"
            ans = a + b - (c if level > 1 else 0)
            f.write(json.dumps({"id": f"ta-{i}", "question": q, "answer": str(ans), "level": level}) + "\n")
    return path


@pytest.fixture
def bench_dir(tmp_path, testsets_dir):
    """A data dir with the shipped benchmarks (symlinked) plus tiny_arith."""
    d = tmp_path / "benchmarks"
    d.mkdir()
    for sub in testsets_dir.iterdir():
        if sub.is_dir():
            (d / sub.name).symlink_to(sub)
    write_tiny_arith(d / "tiny_arith" / "test.jsonl")
    return d


@pytest.fixture
def tiny_arith_dir(tmp_path):
    d = tmp_path / "tiny_benchmarks"
    write_tiny_arith(d / "tiny_arith" / "test.jsonl")
    return d


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py)."""
