"""Token budgets and the stable-then-decay learning-rate schedule on Megatron-Core's OptimizerParamScheduler.

Unit: the scheduler counts OPTIMIZER STEPS here (the loop calls `scheduler.step(1)` once per global batch).
Megatron-LM's own loop passes samples instead; every budget below is converted from tokens to steps first.

- stable: linear warm-up from 0 over `warmup_tokens`, then the peak LR held constant ("constant" style).
- decay:  from the peak (the stable stage's LR unless set) to `min_lr` over the branch's own steps, with
          Megatron's WSD style where the whole run is the decay phase (wsd_decay_steps = total steps), so the
          shape is `optim.decay_style` (cosine | linear | exponential | minus_sqrt).
Megatron's scheduler state_dict omits wsd_decay_steps and the WSD style, and by default a loaded state
overrides the constructor's values. A branch therefore never loads the stable stage's scheduler: it builds
its own; a resumed run loads its own scheduler state and `check_resumed_scheduler` verifies that it matches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from octomega.config import ConfigError, RunConfig


@dataclass(frozen=True)
class Budget:
    tokens_per_step: int  # global_batch_size x seq_length
    steps: int  # optimizer steps, the token budget rounded UP to whole steps
    tokens: int  # tokens actually trained: steps x tokens_per_step
    requested_tokens: int
    warmup_steps: int

    def describe(self) -> str:
        extra = self.tokens - self.requested_tokens
        note = f" (+{extra:,} over the requested {self.requested_tokens:,}: rounded up to whole steps)" if extra else ""
        return (f"{self.steps:,} steps x {self.tokens_per_step:,} tokens/step = {self.tokens:,} tokens{note}; "
                f"warm-up {self.warmup_steps:,} steps")


def budget(cfg: RunConfig) -> Budget:
    t = cfg.train
    per_step = t.global_batch_size * t.seq_length
    steps = math.ceil(t.train_tokens / per_step)
    warmup = math.ceil(cfg.optim.warmup_tokens / per_step) if cfg.optim.warmup_tokens else 0
    return Budget(tokens_per_step=per_step, steps=steps, tokens=steps * per_step,
                  requested_tokens=t.train_tokens, warmup_steps=warmup)


def lr_bounds(cfg: RunConfig, stable_lr: float | None = None) -> tuple[float, float]:
    """(peak, min) LR. A decay branch with optim.lr=None starts at `stable_lr` (read from its checkpoint)."""
    peak = cfg.optim.lr if cfg.optim.lr is not None else stable_lr
    if peak is None:
        raise ConfigError("optim.lr is None: a decay branch reads it from init.from_checkpoint; none was given")
    low = cfg.optim.min_lr if cfg.optim.min_lr is not None else peak * cfg.optim.min_lr_ratio
    return peak, low


def scheduler_kwargs(cfg: RunConfig, peak: float, low: float) -> dict:
    b = budget(cfg)
    common = dict(init_lr=0.0 if b.warmup_steps else peak, max_lr=peak, lr_warmup_steps=b.warmup_steps,
                  start_wd=cfg.optim.weight_decay, end_wd=cfg.optim.weight_decay, wd_incr_steps=b.steps,
                  wd_incr_style="constant", use_checkpoint_opt_param_scheduler=True,
                  override_opt_param_scheduler=False)
    if cfg.train.stage == "stable":
        return dict(common, min_lr=low, lr_decay_steps=b.steps, lr_decay_style="constant")
    # decay: the whole branch (after any warm-up) is WSD's decay phase.
    return dict(common, min_lr=low, lr_decay_steps=b.steps, lr_decay_style="WSD",
                wsd_decay_steps=b.steps - b.warmup_steps, lr_wsd_decay_style=cfg.optim.decay_style)


def build_scheduler(optimizer, cfg: RunConfig, peak: float, low: float):
    """The run's scheduler. Megatron's param groups carry their own max_lr/min_lr, which win over the
    scheduler's (and come back from a loaded optimizer state): set them to this run's values."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    for group in optimizer.param_groups:
        group["max_lr"], group["min_lr"] = peak, low
    return OptimizerParamScheduler(optimizer, **scheduler_kwargs(cfg, peak, low))


class _NoOptimizer:
    param_groups: list = []


def lr_at(cfg: RunConfig, steps: list[int], peak: float, low: float) -> list[float]:
    """The LR the run will use at each of `steps` (computed by the real scheduler, for dry runs and tests)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    sched = OptimizerParamScheduler(_NoOptimizer(), **scheduler_kwargs(cfg, peak, low))
    out = []
    for s in steps:
        sched.num_steps = s
        out.append(sched.get_lr({}))
    return out


def check_resumed_scheduler(sched, cfg: RunConfig, peak: float, low: float) -> None:
    """A resumed run must continue the schedule it was started with (the state_dict drops the WSD fields)."""
    want = scheduler_kwargs(cfg, peak, low)
    for key in ("max_lr", "min_lr", "lr_warmup_steps", "lr_decay_steps", "lr_decay_style"):
        have = getattr(sched, key)
        if (isinstance(have, float) and not math.isclose(have, want[key], rel_tol=1e-9)) or (
                not isinstance(have, float) and have != want[key]):
            raise ConfigError(f"resumed scheduler has {key}={have!r}, the config asks {want[key]!r}; "
                             "start a new run directory to change the schedule")
    sched.wsd_decay_steps = want.get("wsd_decay_steps")
    sched.lr_wsd_decay_style = want.get("lr_wsd_decay_style")
