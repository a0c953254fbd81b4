"""Golden losses of the tiny recipes, to the last bit, on every machine (pinned CPU numerics, octomega/numerics.py).

- tests/golden/tiny_stable_losses.json: the first 20 steps of tiny_stable (one process, in-process trainer). A
  change to the model, data order, optimizer or schedule shows up here, quickly.
- tests/golden/tiny_pinned_800.json: tiny_stable's losses every 50 steps to step 800 and its validation losses,
  then tiny_decay_long's every 50 steps to step 350: the whole run that the RL learning tests start from
  (the session fixture tiny_long_cot_root). A CPU, MKL or thread difference that the pins failed to remove
  would show here on whichever machine CI runs, so that CI itself checks that the numerics are portable.

Both are compared with tolerance 0. Regenerate deliberately with OCTOMEGA_UPDATE_GOLDEN=1 and say why in the
commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from octomega import numerics
from octomega.config import to_dict
from octomega.testing import run_distributed
from workers import metrics, train

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN = GOLDEN_DIR / "tiny_stable_losses.json"
GOLDEN_800 = GOLDEN_DIR / "tiny_pinned_800.json"
STEPS = 20

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not numerics.supported(), reason="golden numbers are for x86-64 (pinned numerics)")]


def _check_or_update(path: Path, got: dict) -> dict:
    if os.environ.get("OCTOMEGA_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
        if os.environ.get("OCTOMEGA_UPDATE_GOLDEN") != "1":
            pytest.fail(f"no golden file: wrote {path}; review and commit it")
    return json.loads(path.read_text())


def _run(rank, cfg_dict):
    return train(cfg_dict)


def test_tiny_stable_matches_golden_losses(tiny_data_root, tmp_path, monkeypatch):
    for key, value in numerics.pinned_env({}, threads=1).items():  # the spawned rank inherits them
        monkeypatch.setenv(key, value)
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
    want = _check_or_update(GOLDEN, got)
    assert got == want


def _every(run_dir: Path, interval: int) -> dict:
    """A run's training losses at every `interval` steps and its validation losses, keyed by step."""
    train_rows = metrics(run_dir)
    return {"train": {str(r["step"]): r["loss"] for r in train_rows if r["step"] % interval == 0},
            "valid": {str(r["step"]): {k: v for k, v in r.items() if k.startswith("valid_loss")}
                      for r in metrics(run_dir, "valid")}}


def golden_800(root: Path) -> dict:
    """What tests/golden/tiny_pinned_800.json holds, from a tiny root where tiny_stable and tiny_decay_long ran
    (losses logged every 10 steps), with what made it."""
    import datetime

    import torch

    return {"made_with": {"torch": torch.__version__, "date": datetime.date.today().isoformat(),
                          "cpu_numerics": numerics.describe(numerics.pinned_env({}, threads=2))},
            "tiny_stable": _every(root / "tiny_stable", 50), "tiny_decay_long": _every(root / "tiny_decay_long", 50)}


def test_tiny_pipeline_start_matches_golden_losses(tiny_long_cot_root):
    import torch

    got = golden_800(tiny_long_cot_root)
    assert len(got["tiny_stable"]["train"]) == 16 and len(got["tiny_decay_long"]["train"]) == 7
    want = _check_or_update(GOLDEN_800, got)
    for run in ("tiny_stable", "tiny_decay_long"):
        for kind in ("train", "valid"):
            diff = {s: (got[run][kind].get(s), w) for s, w in want[run][kind].items() if got[run][kind].get(s) != w}
            assert not diff, (f"{run} {kind}: differs from {GOLDEN_800.name} at steps {sorted(diff, key=int)} "
                              f"(got, want): {list(diff.values())[:3]}. Golden made with {want['made_with']}; "
                              f"here torch {torch.__version__}, {got['made_with']['cpu_numerics']}")
