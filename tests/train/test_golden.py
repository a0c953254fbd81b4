"""Golden losses of the tiny recipe: the first 20 steps of tiny_stable on the synthetic corpora must match the
stored per-step losses (tests/golden/tiny_stable_losses.json). A change to the model, data order, optimizer or
schedule shows up here. Regenerate deliberately with OCTOMEGA_UPDATE_GOLDEN=1 and say why in the commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from octomega.config import to_dict
from octomega.testing import run_distributed
from workers import metrics, train

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "tiny_stable_losses.json"
STEPS = 20

pytestmark = [pytest.mark.slow]


def _run(rank, cfg_dict):
    return train(cfg_dict)


def test_tiny_stable_matches_golden_losses(tiny_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OCTOMEGA_TINY_ROOT", str(tiny_data_root))
    from octomega.cli import resolve_config

    cfg = resolve_config("tiny_stable", [f"run_dir={tmp_path / 'run'}", f"train.train_tokens={STEPS * 4096}",
                                         "optim.warmup_tokens=20480", "logging.log_interval=1",
                                         "logging.wandb=false", "checkpoint.save_interval=0",
                                         "train.valid_interval=10"])
    run_distributed(_run, 1, args=(to_dict(cfg),), timeout=600)
    got = {"train": [r["loss"] for r in metrics(tmp_path / "run")],
           "valid": [{k: v for k, v in r.items() if k.startswith("valid_loss")} for r in metrics(tmp_path / "run", "valid")]}
    assert len(got["train"]) == STEPS
    assert got["train"][-1] < got["train"][0] - 0.5, "the tiny model should learn within 20 steps"
    if os.environ.get("OCTOMEGA_UPDATE_GOLDEN") == "1" or not GOLDEN.exists():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
        if os.environ.get("OCTOMEGA_UPDATE_GOLDEN") != "1":
            pytest.fail(f"no golden file: wrote {GOLDEN}; review and commit it")
    want = json.loads(GOLDEN.read_text())
    # CPU matmuls may reduce in another order on another machine or thread count: 1e-4 relative.
    assert got["train"] == pytest.approx(want["train"], rel=1e-4)
    for g, w in zip(got["valid"], want["valid"]):
        assert g == pytest.approx(w, rel=1e-4)
