"""Around the training loop: console progress, JSONL metrics, wandb, throughput/MFU. (Exit signals, stop and save
decisions: octomega/train/run.py.)"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from octomega.config import RunConfig, to_dict


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Throughput:
    """Tokens/s, TFLOP/s per GPU and MFU over the steps since the last report."""

    def __init__(self, flops_per_step: float, tokens_per_step: int, world_size: int, peak_flops: float | None):
        self.flops_per_step, self.tokens_per_step = flops_per_step, tokens_per_step
        self.world_size, self.peak = world_size, peak_flops
        self.t0, self.steps = time.perf_counter(), 0

    def step(self) -> None:
        self.steps += 1

    def report(self) -> dict:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        out = {"tokens_per_s": self.steps * self.tokens_per_step / dt, "step_time_s": dt / max(self.steps, 1)}
        tflops = self.steps * self.flops_per_step / dt / self.world_size / 1e12  # per GPU (per process)
        out["tflops_per_gpu"] = tflops
        if self.peak:
            out["mfu"] = tflops * 1e12 / self.peak
        self.t0, self.steps = time.perf_counter(), 0
        return out


class MetricsLogger:
    """Rank 0 writes the console line, run_dir/metrics.jsonl (full precision) and wandb."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, total_steps: int, is_writer: bool, wandb_id: str | None):
        self.cfg, self.total, self.is_writer = cfg, total_steps, is_writer
        self.start = time.perf_counter()
        self.start_step: int | None = None
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = None
        self.wandb_id = wandb_id
        if is_writer and cfg.logging.wandb:
            self.wandb_run = _start_wandb(cfg, run_dir, wandb_id)
            if self.wandb_run is not None:
                self.wandb_id = self.wandb_run.id

    def log(self, step: int, metrics: dict, *, kind: str = "train") -> None:
        if not self.is_writer:
            return
        record = {"kind": kind, "step": step, **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({f"{kind}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                               step=step)
        if kind == "train":
            self._console(step, metrics)
        else:
            vals = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"[{kind}] step {step}/{self.total} {vals}", flush=True)

    def _console(self, step: int, m: dict) -> None:
        if self.start_step is None:
            self.start_step = step - 1
        done = step - self.start_step
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = [f"step {step}/{self.total}", f"tokens {m['tokens']:.3g}", f"loss {m['loss']:.4f}",
                 f"lr {m['lr']:.3e}", f"grad_norm {m['grad_norm']:.3f}", f"tok/s {m['tokens_per_s']:,.0f}",
                 f"TFLOP/s/gpu {m['tflops_per_gpu']:.2f}"]
        if "mfu" in m:
            parts.append(f"MFU {100 * m['mfu']:.1f}%")
        parts.append(f"ETA {_fmt_duration(eta)}")
        print(" | ".join(parts), flush=True)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _start_wandb(cfg: RunConfig, run_dir: Path, run_id: str | None):
    """wandb offline unless the user's environment asks for online (WANDB_MODE=online or an API key)."""
    mode = cfg.logging.wandb_mode
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.logging.wandb_project, name=cfg.name, id=run_id, resume="allow" if run_id else None,
                      dir=str(run_dir), mode=mode, config=to_dict(cfg))
