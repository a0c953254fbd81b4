"""Functions run inside spawned gloo ranks (octomega.testing.run_distributed) by the training tests.

Every run uses data.mock=true: seeded random tokens, so no corpus is needed and every launch sees the same
global batches. Models are tiny (2 layers, hidden 64) to keep each step a few milliseconds.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from octomega.config import RunConfig, apply_overrides, from_dict, to_dict


def tiny_cfg(run_dir, *overrides: str) -> dict:
    cfg = RunConfig(name="t", run_dir=str(run_dir))
    m = cfg.model
    m.num_layers, m.hidden_size, m.ffn_hidden_size = 2, 64, 128
    m.num_attention_heads, m.num_query_groups, m.vocab_size = 4, 2, 256
    m.make_vocab_size_divisible_by, m.max_position_embeddings, m.rope_theta = 64, 256, 10000.0
    cfg.train.seq_length, cfg.train.global_batch_size, cfg.train.micro_batch_size = 32, 8, 2
    cfg.train.train_tokens = 5 * 8 * 32  # 5 steps
    cfg.train.valid_interval, cfg.train.valid_batches = 0, 1
    cfg.optim.lr, cfg.optim.warmup_tokens = 3e-3, 0
    cfg.data.mock = True
    cfg.logging.log_interval, cfg.logging.wandb = 1, False
    cfg.checkpoint.save_interval, cfg.checkpoint.keep_last = 1, 10
    apply_overrides(cfg, list(overrides))
    return to_dict(cfg)


def metrics(run_dir, kind: str = "train") -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind] if path.exists() else []


def train(cfg_dict: dict) -> dict:
    from octomega.train.loop import run_training

    return run_training(from_dict(RunConfig, copy.deepcopy(cfg_dict)))


def train_many(rank: int, cfgs: list[dict]) -> list[dict]:
    """Train several configs one after the other in this process (same world size)."""
    return [train(c) for c in cfgs]


def copy_run_upto(src, dst, iteration: int) -> None:
    """A copy of a run directory whose newest checkpoint is `iteration` (as if killed right after it)."""
    from octomega import checkpoint as ckpt

    shutil.copytree(src, dst)
    for it in ckpt.complete_iterations(Path(dst) / "checkpoints"):
        if it > iteration:
            shutil.rmtree(ckpt.iter_dir(Path(dst) / "checkpoints", it))
    (Path(dst) / "checkpoints" / ckpt.TRACKER).write_text(str(iteration))
    lines = [l for l in (Path(dst) / "metrics.jsonl").read_text().splitlines() if json.loads(l)["step"] <= iteration]
    (Path(dst) / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def branch_state(rank: int, cfg_dict: dict) -> dict:
    """Build a Trainer for a branch without training: report what it loaded."""
    import torch

    from octomega.train.loop import Trainer

    t = Trainer(from_dict(RunConfig, copy.deepcopy(cfg_dict)))
    moments = 0.0
    for group in t.optimizer.optimizer.param_groups if hasattr(t.optimizer, "optimizer") else []:
        for p in group["params"]:
            st = t.optimizer.optimizer.state.get(p, {})
            if "exp_avg" in st:
                moments += float(st["exp_avg"].abs().sum())
    return {"start_step": t.start_step, "moments": moments, "lr": t.optimizer.param_groups[0]["lr"],
            "peak": t.peak_lr}
