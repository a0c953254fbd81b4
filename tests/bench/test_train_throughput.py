"""bench/train_throughput.py on the CPU. The CPU run only checks the plumbing (each implementation runs in its own
process on the same shape and random corpus, the JSON holds every record, the ratio and the command), not the
speed: CPU numbers say nothing about GPU throughput, and MFU is null there."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "train_throughput.py"
SMOKE = ["--device", "cpu", "--shape", "tiny", "--seq", "128", "--global-batch", "4", "--steps", "2", "--warmup", "1"]


@pytest.mark.slow
def test_cpu_smoke_run_records_every_implementation(tmp_path):
    out = tmp_path / "train_throughput.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *SMOKE, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["octomega", "hf_sdpa", "hf_sdpa_compile"]
    for name, r in report["results"].items():
        assert r["status"] == "ok", (name, r.get("error"))
        assert r["tokens_per_s"] > 0 and r["tflops_per_gpu"] > 0 and r["mfu"] is None
        assert len(r["step_times_s"]) == 2 and len(r["losses"]) == 3  # 1 warm-up + 2 timed
        assert all(math.isfinite(x) and 5.0 < x < 10.0 for x in r["losses"])  # ~ln(2048) = 7.6 on random tokens
    assert report["complete"] and report["same_param_count"]
    hf = {k: r["tokens_per_s"] for k, r in report["results"].items() if k != "octomega"}
    assert report["best_hf"] == max(hf, key=hf.get)
    assert report["octomega_over_best_hf_tokens_per_s"] == pytest.approx(
        report["results"]["octomega"]["tokens_per_s"] / hf[report["best_hf"]])
    assert "train_throughput.py" in report["command"] and " ".join(SMOKE) in report["command"]
    assert report["plan"]["tokens_per_step"] == 4 * 128 and report["plan"]["flops_per_step"] > 0
    assert report["versions"]["torch"] and report["versions"]["megatron-core"]


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None,
                    reason="Transformer Engine is installed here: --fp8 would be accepted")
def test_fp8_without_transformer_engine_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "1b", "--fp8", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--fp8 needs Transformer Engine" in proc.stderr and "transformer_engine is not importable" in proc.stderr
    assert "drop --fp8" in proc.stderr
