"""The RL stage on a non-finite loss or gradient (issue 17, item 1), as pre-training (tests/train/test_nonfinite.py):
an update whose loss or gradients are not finite is not applied; the run stops "diverged" without saving (the last
finite checkpoint kept) or, with train.on_nonfinite=skip, skips that step. Tiny random Llama, hf rollouts on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octomega.testing import run_distributed
from rl_helpers import loop_config, metrics, run_loop, write_bench, write_prompts

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def _nan_actor_loss_in_step(step: int):
    """Patch the RL trainer so that the actor's policy loss is NaN in every update of RL step `step` (1-based)."""
    from octomega.rl import algos
    from octomega.rl.loop import RLTrainer

    real_update, real_loss = RLTrainer.update, algos.policy_loss
    calls = {"n": 0}

    def nan_loss(*args, **kwargs):
        pg, stats = real_loss(*args, **kwargs)
        return pg * float("nan"), stats

    def update(self, batch):
        calls["n"] += 1
        if calls["n"] == step:
            algos.policy_loss = nan_loss
        try:
            return real_update(self, batch)
        finally:
            algos.policy_loss = real_loss

    RLTrainer.update = update
    return lambda: setattr(RLTrainer, "update", real_update)


def _worker(rank, cfgs):
    out = {"critic": run_loop(cfgs["critic"])}
    restore = _nan_actor_loss_in_step(2)
    try:
        out["actor_skip"] = run_loop(cfgs["actor_skip"])
    finally:
        restore()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from octomega.generate.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("rl_nonfinite")
    hf = build_tiny_llama(root / "hf_in")
    prompts, bench = write_prompts(root / "prompts.jsonl", 40), write_bench(root)

    def cfg(name, *o):
        return loop_config(root, name, hf, prompts, bench, "valid.benchmarks=", "train.steps=3",
                           "checkpoint.export_hf=false", *o)

    cfgs = {"critic": cfg("critic", "algo.name=ppo", "critic.lr=1e4", "optim.lr=1e3", "checkpoint.keep_last=1"),
            "actor_skip": cfg("actor_skip", "train.on_nonfinite=skip", "train.max_skipped_steps=1")}
    return root, run_distributed(_worker, 1, args=(cfgs,), timeout=900)[0]


def _tensors(iter_dir: Path) -> dict:
    from octomega.testing import checkpoint_tensors

    return {k: v for k, v in checkpoint_tensors(iter_dir).items() if v.is_floating_point()}


def test_a_critic_with_an_absurd_lr_diverges_and_keeps_the_last_finite_checkpoint(runs):
    """PPO with critic.lr=1e4: the value loss's gradients are NaN at step 2. The run stops there: status
    "diverged", nothing saved for step 2, and keep_last=1 left step 1's checkpoint (actor and critic)."""
    import torch

    from octomega import checkpoint as ckpt

    root, out = runs
    run, result = root / "critic", out["critic"]
    assert result["status"] == "diverged" and result["step"] == 2
    assert json.loads((run / "rl_status.json").read_text())["status"] == "diverged"
    last = ckpt.iter_dir(run / "checkpoints", 1)
    d = result["diverged"]
    assert (d["step"], d["model"], d["grad_norm"], d["last_checkpoint"]) == (2, "critic", "nan", str(last))
    assert result["error"].startswith("training diverged at step 2: critic loss ")
    assert "Lower optim.lr (critic.lr for the critic)" in result["error"]
    assert ckpt.complete_iterations(run / "checkpoints") == [1]
    assert ckpt.complete_iterations(run / "critic" / "checkpoints") == [1]
    for path in (last, ckpt.iter_dir(run / "critic" / "checkpoints", 1)):
        assert all(torch.isfinite(t).all() for t in _tensors(path).values())
    assert not (run / "hf").exists()  # no export of a diverged run


def test_a_non_finite_actor_update_is_skipped(runs):
    """GRPO whose policy loss is NaN in every update of step 2, train.on_nonfinite=skip: step 2 changes no weight,
    the run completes, and the checkpoints count the skipped step."""
    from octomega import checkpoint as ckpt

    root, out = runs
    run, result = root / "actor_skip", out["actor_skip"]
    assert result["status"] == "complete" and result["step"] == 3 and result["skipped_steps"] == 1
    rows = metrics(run)
    assert [r["skipped"] for r in rows] == [0.0, 1.0, 0.0]
    assert rows[1]["pg_loss"] != rows[1]["pg_loss"]  # NaN
    after1, after2 = (_tensors(ckpt.iter_dir(run / "checkpoints", i)) for i in (1, 2))
    weights = [k for k in after1 if "rng" not in k]
    assert weights and all(after1[k].equal(after2[k]) for k in weights)
    meta = json.loads((ckpt.iter_dir(run / "checkpoints", 3) / ckpt.META).read_text())
    assert meta["skipped_steps"] == 1 and meta["finite"] is True
