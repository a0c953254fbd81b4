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
SMOKE = ["--device", "cpu", "--shape", "tiny", "--seq", "128", "--global-batch", "4", "--micro-batch", "2", "--steps", "2",
         "--warmup", "1", "--profile"]


@pytest.mark.slow
def test_cpu_smoke_run_records_every_implementation(tmp_path):
    out = tmp_path / "train_throughput.json"
    variant = "octomega[model.cross_entropy=chunked,model.ce_chunk_tokens=100]"
    proc = subprocess.run([sys.executable, str(SCRIPT), *SMOKE, "--octomega-set", variant[9:-1], "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["octomega", variant, "hf_sdpa", "hf_sdpa_compile"]
    base, chunked = report["results"]["octomega"], report["results"][variant]
    assert base["cross_entropy"] == "megatron" and chunked["cross_entropy"] == "chunked"
    # The variant runs the same trainer on the same data: same losses (fp32 on CPU), so it measures only speed.
    assert chunked["losses"] == pytest.approx(base["losses"], abs=2e-4)
    assert "cross_entropy" in base["profile"]["ms_by_kind"]  # Megatron's loss shows as its own kernels
    assert set(report["octomega_runs_over_best_hf_tokens_per_s"]) == {"octomega", variant}
    assert report["best_octomega"] in ("octomega", variant)
    for name, r in report["results"].items():
        assert r["status"] == "ok", (name, r.get("error"))
        assert r["tokens_per_s"] > 0 and r["tflops_per_gpu"] > 0 and r["mfu"] is None
        assert len(r["step_times_s"]) == 2 and len(r["losses"]) == 3  # 1 warm-up + 2 timed (the profiled step not kept)
        prof = r["profile"]
        assert prof["share"]["matmul"] > 0.05 and sum(prof["share"].values()) == pytest.approx(1.0)
        assert prof["top"] and prof["total_ms"] > 0
        assert all(math.isfinite(x) and 5.0 < x < 10.0 for x in r["losses"])  # ~ln(2048) = 7.6 on random tokens
    assert report["complete"] and report["same_param_count"]
    hf = {k: r["tokens_per_s"] for k, r in report["results"].items() if not k.startswith("octomega")}
    assert report["best_hf"] == max(hf, key=hf.get)
    assert report["octomega_over_best_hf_tokens_per_s"] == pytest.approx(
        report["results"]["octomega"]["tokens_per_s"] / hf[report["best_hf"]])
    assert "train_throughput.py" in report["command"] and " ".join(SMOKE) in report["command"]
    assert report["plan"]["tokens_per_step"] == 4 * 128 and report["plan"]["flops_per_step"] > 0
    assert report["plan"]["micro_batches_per_step"] == 2  # micro-batches of 2 sequences: every implementation
    assert report["versions"]["torch"] and report["versions"]["megatron-core"]


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None,
                    reason="Transformer Engine is installed here: --fp8 would be accepted")
def test_fp8_without_transformer_engine_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "1b", "--fp8", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--fp8 needs Transformer Engine" in proc.stderr and "transformer_engine is not importable" in proc.stderr
    assert "drop --fp8" in proc.stderr


def test_bad_octomega_override_is_refused_before_any_run():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--device", "cpu", "--dry-run",
                           "--octomega-set", "model.cross_entropy=fast"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--octomega-set model.cross_entropy=fast" in proc.stderr
