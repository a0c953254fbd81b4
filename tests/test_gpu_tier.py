"""The GPU tier on a machine without one: every test under tests/gpu carries the `gpu` marker (so `pytest -m gpu`
selects them all and a plain run skips them all), its modules import and collect without a GPU and without the
packages the GPU machine's image lacks, and each is skipped with a reason that says why and where it runs. Runs
pytest in a subprocess on tests/gpu; no GPU is faked: these are the skips a CPU machine really gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_every_gpu_tier_test_is_marked_gpu():
    everything = _pytest("--collect-only", "-q", "tests/gpu")
    unmarked = _pytest("--collect-only", "-q", "-m", "not gpu", "tests/gpu")
    ids = [line for line in everything.stdout.splitlines() if line.startswith("tests/gpu/")]
    assert everything.returncode == 0 and len(ids) >= 10, everything.stdout[-2000:] + everything.stderr[-2000:]
    assert {i.split("::")[0] for i in ids} >= {f"tests/gpu/test_gpu_{m}.py" for m in
                                               ("train", "loss_options", "te_fp8", "generate", "rl")}
    assert not any(line.startswith("tests/gpu/") for line in unmarked.stdout.splitlines()), unmarked.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here: the tier runs instead")
def test_without_a_gpu_the_tier_is_skipped_with_the_reason():
    run = _pytest("-m", "gpu", "-rs", "-q", "tests/gpu")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"\b(\d+) skipped\b", run.stdout) and " passed" not in run.stdout and "error" not in run.stdout
    assert "needs a CUDA GPU: torch.cuda.is_available() is False here" in run.stdout
    assert "bench/device_check.sh" in run.stdout


def test_octomega_device_cpu_skips_the_tier_too():
    """On a GPU machine OCTOMEGA_DEVICE=cpu keeps octomega on the CPU: the GPU tier must not run there then."""
    run = _pytest("-m", "gpu", "-rs", "-q", "tests/gpu/test_gpu_rl.py", env={"OCTOMEGA_DEVICE": "cpu"})
    assert run.returncode == 0 and "needs a CUDA GPU: OCTOMEGA_DEVICE=cpu" in run.stdout, run.stdout[-2000:]
