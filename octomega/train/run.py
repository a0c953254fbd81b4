"""The run skeleton that pre-training (octomega/train/loop.py) and RL (octomega/rl/loop.py) share: the run
directory, the start of the console log, when to stop (the steps, train.exit_after_steps, a time budget,
SIGTERM/SIGUSR1), when to save, and the status JSON the run leaves behind (slurm/common.sh reads it).

A loop owns its steps; `RunControl` answers the questions around them:

    control = RunControl(run_dir, is_writer=..., status_file="train_status.json", start_step=..., total_steps=...,
                         exit_after_steps=..., save_interval=...)
    step = control.start_step
    while control.running(step):
        ...one step...; step += 1; ...log, validate...
        control.check_stop()              # a signal or the time budget, on any rank
        if control.should_save(step):     # every save_interval steps, and on a signal
            save(step)
    if control.final_save_due(step):      # the last step, unless a signal saved it already
        save(step)
    control.close(logger)
    return control.write_status(step)     # {"status", "step", "steps", "run_dir"} -> run_dir/status_file

Statuses: "complete" (every step done), "stopped" (exit_after_steps), "time_budget", "interrupted" (a signal).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from octomega.config import to_json


def open_run_dir(cfg, *, is_writer: bool) -> Path:
    """The run's directory (cfg.resolved_run_dir); rank 0 creates it and writes the run's config.json there."""
    run_dir = Path(cfg.resolved_run_dir)
    if is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(to_json(cfg))
    return run_dir


def start_logging(logger_cls, cfg, run_dir: Path, *, total_steps: int, is_writer: bool, wandb_id: str | None,
                  headline: str):
    """The run's metrics logger (octomega.train.callbacks.MetricsLogger or a subclass), then the run's first
    console lines (rank 0): `headline` and, on a CPU, the numerics in effect (octomega/numerics.py)."""
    from octomega import numerics
    from octomega.runtime import use_gpu

    logger = logger_cls(cfg, run_dir, total_steps=total_steps, is_writer=is_writer, wandb_id=wandb_id)
    if is_writer:
        print(headline, flush=True)
        if not use_gpu():
            print(numerics.summary(cfg.train.cpu_numerics), flush=True)
    return logger


def any_rank(*flags: bool) -> list[bool]:
    """Each flag, True if it is True on any rank (one all-reduce; every rank must call it)."""
    import torch

    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    if torch.distributed.is_initialized():
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(x > 0) for x in t.tolist()]


class ExitSignal:
    """SIGTERM / SIGUSR1 (Slurm's pre-emption and time-limit warnings; torchrun forwards TERM) set a flag; the
    loop saves a checkpoint at the end of the current step and exits cleanly."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        self.received = signum
        print(f"received {signal.Signals(signum).name}: saving a checkpoint after this step, then exiting",
              file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class RunControl:
    """When a run stops and saves, and the status it ends with. Every rank makes the same decisions.

    `exit_after_steps`: stop after this many steps of this process (None: no limit); `save_interval`: steps between
    checkpoints (0: none before the end); `time_budget_s`: stop after this many seconds from now (None: no limit).
    `signals`: an ExitSignal installed earlier (pre-training installs it before building the model), else one is
    installed now. `work_after_last_step`: the loop has work after its last step (RL: the final validation and the
    HF export) that a signal skips; a signal then leaves the run "interrupted" even at its last step, so that a
    restart does that work."""

    def __init__(self, run_dir: str | Path, *, is_writer: bool, status_file: str, start_step: int, total_steps: int,
                 exit_after_steps: int | None, save_interval: int, time_budget_s: float | None = None,
                 signals: ExitSignal | None = None, work_after_last_step: bool = False):
        self.signals = ExitSignal() if signals is None else signals
        self.started = time.perf_counter()
        self.run_dir, self.is_writer, self.status_file = Path(run_dir), is_writer, status_file
        self.start_step, self.total_steps = start_step, total_steps
        self.stop_at = total_steps if exit_after_steps is None else min(total_steps, start_step + exit_after_steps)
        self.save_interval, self.time_budget_s = save_interval, time_budget_s
        self.work_after_last_step = work_after_last_step
        self.stop_reason: str | None = None  # "signal" or "time_budget" once check_stop() has seen one
        self.last_saved: int | None = None

    def elapsed(self) -> float:
        """Seconds since this control was made."""
        return time.perf_counter() - self.started

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "signal"

    def running(self, step: int) -> bool:
        """Whether to run another step after `step` steps."""
        return step < self.stop_at and self.stop_reason is None

    def due(self, step: int, interval: int) -> bool:
        """Every `interval` steps (0: never) and at the run's last step: the cadence of validations."""
        return bool(interval and step % interval == 0) or step == self.total_steps

    def check_stop(self) -> None:
        """After each step: has a signal come, or the time budget run out, on any rank? A signal wins."""
        over_budget = self.time_budget_s is not None and self.elapsed() > self.time_budget_s
        signalled, over_budget = any_rank(self.signals.received is not None, over_budget)
        if signalled:
            self.stop_reason = "signal"
        elif over_budget:
            self.stop_reason = "time_budget"

    def should_save(self, step: int) -> bool:
        """Whether to checkpoint `step` now: every save_interval steps, and when a signal stops the run (call
        check_stop() first). A True answer counts as saved."""
        if (self.save_interval and step % self.save_interval == 0) or self.interrupted:
            self.last_saved = step
            return True
        return False

    def final_save_due(self, step: int) -> bool:
        """After the loop: whether `step` still needs its checkpoint (not after a signal: that saved already)."""
        return not self.interrupted and self.last_saved != step

    def status(self, step: int) -> str:
        """How the run ended at `step`: "complete", "stopped", "time_budget" or "interrupted"."""
        if self.interrupted and (step < self.total_steps or self.work_after_last_step):
            return "interrupted"
        if self.stop_reason == "time_budget":
            return "time_budget"
        return "stopped" if step < self.total_steps else "complete"

    def close(self, logger=None) -> None:
        """The signal handlers as they were before, the logger finished."""
        self.signals.restore()
        if logger is not None:
            logger.finish()

    def write_status(self, step: int, **extra) -> dict:
        """The run's result, {"status", "step", "steps", "run_dir", **extra}, which rank 0 writes to
        run_dir/status_file."""
        result = {"status": self.status(step), "step": step, "steps": self.total_steps, "run_dir": str(self.run_dir),
                  **extra}
        if self.is_writer:
            (self.run_dir / self.status_file).write_text(json.dumps(result, indent=2))
        return result
