"""The run skeleton that pre-training (octomega/train/loop.py) and RL (octomega/rl/loop.py) share: the run
directory, the start of the console log, when to stop (the steps, train.exit_after_steps, a time budget,
SIGTERM/SIGUSR1), when to save, and the status JSON the run leaves behind (slurm/common.sh reads it).

A loop owns its steps; `RunControl` answers the questions around them:

    control = RunControl(run_dir, is_writer=..., status_file="train_status.json", start_step=..., total_steps=...,
                         exit_after_steps=..., save_interval=...)
    step = control.start_step
    while control.running(step):
        ...one step...; step += 1; ...log, validate...
        if <loss or grad norm not finite>:  # that step's update was not applied (octomega/train/setup.py)
            control.nonfinite(step, loss=..., grad_norm=...)  # counted (on_nonfinite=skip), or the run diverged
            if control.diverged:
                break                     # no save after it
        control.check_stop()              # a signal or the time budget, on any rank
        if control.should_save(step):     # every save_interval steps, and on a signal
            save(step)
    if control.final_save_due(step):      # the last step, unless a signal saved it already
        save(step)
    control.close(logger)
    return control.write_status(step)     # {"status", "step", "steps", "run_dir"} -> run_dir/status_file

Statuses: "complete" (every step done), "stopped" (exit_after_steps), "time_budget", "interrupted" (a signal),
"diverged" (a step's loss or grad norm was not finite: train.on_nonfinite=stop, or more than train.max_skipped_steps
of them with skip; the status then says where, and the last finite checkpoint, and "error" says what to do; the
commands exit with status 3, and slurm/common.sh does not requeue it).
"""

from __future__ import annotations

import json
import math
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
                  headline: str, start_step: int = 0):
    """The run's metrics logger (octomega.train.callbacks.MetricsLogger or a subclass), then the run's first
    console lines (rank 0): `headline` and, on a CPU, the numerics in effect (octomega/numerics.py).

    A run that starts at `start_step` (resumed from that checkpoint) logs the steps after it again, so records of
    later steps already in metrics.jsonl (written by a killed process after its last checkpoint) move to
    metrics.superseded.jsonl: metrics.jsonl then has each step once, and nothing is lost."""
    from octomega import numerics
    from octomega.runtime import use_gpu

    logger = logger_cls(cfg, run_dir, total_steps=total_steps, is_writer=is_writer, wandb_id=wandb_id)
    if is_writer:
        supersede_records_after(run_dir / "metrics.jsonl", start_step)
        print(headline, flush=True)
        if not use_gpu():
            print(numerics.summary(cfg.train.cpu_numerics), flush=True)
    return logger


def supersede_records_after(path: Path, step: int) -> int:
    """Move the records of metrics file `path` whose step is after `step` (and a torn last line) to
    <name>.superseded.jsonl beside it, each marked {"superseded_at_resume": step}; returns how many moved."""
    if not path.is_file():
        return 0
    keep, moved = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # the line a kill -9 cut short
            moved.append({"superseded_at_resume": step, "unparsed": line})
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            moved.append({**rec, "superseded_at_resume": step})
        else:
            keep.append(line)
    if moved:
        with open(path.with_name(path.stem + ".superseded.jsonl"), "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in moved)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
        print(f"{path}: {len(moved)} record(s) after step {step} (logged after the last checkpoint) moved to "
              f"{path.stem}.superseded.jsonl; this run logs those steps again", flush=True)
    return len(moved)


def any_rank(*flags: bool) -> list[bool]:
    """Each flag, True if it is True on any rank (one all-reduce; every rank must call it)."""
    import torch

    from octomega.runtime import collective_device

    # On the collective's device (the rank's GPU under nccl, which cannot reduce CPU tensors; the CPU under gloo).
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=collective_device())
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(x > 0) for x in t.tolist()]


def finite(*values: float | None) -> bool:
    """Whether every value is a finite number (None: not measured, e.g. no gradient clipping, counts as finite)."""
    return all(v is None or math.isfinite(v) for v in values)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _number(value: float | None) -> float | str | None:
    """A value for the status JSON: NaN and inf as the strings "nan", "inf" (JSON has no such numbers)."""
    return value if value is None or math.isfinite(value) else str(float(value))


_EARLY_SIGNAL: dict[str, int | None] = {"signum": None}


def catch_early_signals() -> None:
    """Called by `octomega train` / `octomega rl` as soon as the config is known: a SIGTERM or SIGUSR1 that comes
    while torch, the data and the model load (seconds to minutes) is remembered instead of killing the process
    (exit 143, no checkpoint, no status file); the run's ExitSignal takes it over, so the run stops after its first
    step with a checkpoint and the status "interrupted", as for a signal at any later time."""
    def remember(signum, frame):
        _EARLY_SIGNAL["signum"] = signum
        print(f"received {signal.Signals(signum).name} while starting: the run will save and exit after its first "
              "step", file=sys.stderr, flush=True)

    for sig in ExitSignal.SIGNALS:
        try:
            signal.signal(sig, remember)
        except ValueError:  # not the main thread
            pass


class ExitSignal:
    """SIGTERM / SIGUSR1 (Slurm's pre-emption and time-limit warnings; torchrun forwards TERM) set a flag; the
    loop saves a checkpoint at the end of the current step and exits cleanly. A signal caught while the process
    was starting (catch_early_signals) counts as received."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received: int | None = _EARLY_SIGNAL["signum"]
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
    restart does that work.

    Non-finite steps (the loop calls nonfinite() after one): `on_nonfinite` "stop" ends the run there, "diverged";
    "skip" goes on, up to `max_skipped_steps` of them in the run (`skipped_steps`: those skipped before a resume).
    `checkpoints`: where the loop saves (the status names the newest finite checkpoint there); `advice`: what the
    error line tells the user to do."""

    def __init__(self, run_dir: str | Path, *, is_writer: bool, status_file: str, start_step: int, total_steps: int,
                 exit_after_steps: int | None, save_interval: int, time_budget_s: float | None = None,
                 signals: ExitSignal | None = None, work_after_last_step: bool = False, on_nonfinite: str = "stop",
                 max_skipped_steps: int = 0, skipped_steps: int = 0, checkpoints: str | Path | None = None,
                 advice: str = ""):
        self.signals = ExitSignal() if signals is None else signals
        self.started = time.perf_counter()
        self.run_dir, self.is_writer, self.status_file = Path(run_dir), is_writer, status_file
        self.start_step, self.total_steps = start_step, total_steps
        self.stop_at = total_steps if exit_after_steps is None else min(total_steps, start_step + exit_after_steps)
        self.save_interval, self.time_budget_s = save_interval, time_budget_s
        self.work_after_last_step = work_after_last_step
        self.stop_reason: str | None = None  # "signal", "time_budget" (check_stop()) or "diverged" (nonfinite())
        self.last_saved: int | None = None
        self.on_nonfinite, self.max_skipped_steps = on_nonfinite, max_skipped_steps
        self.skipped_steps = skipped_steps  # non-finite steps skipped in this run (resumes included)
        self.checkpoints, self.advice = checkpoints, advice
        self.divergence: dict | None = None  # where and how the run diverged

    def elapsed(self) -> float:
        """Seconds since this control was made."""
        return time.perf_counter() - self.started

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "signal"

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "diverged"

    def nonfinite(self, step: int, *, loss: float | None, grad_norm: float | None, what: str = "") -> None:
        """After step `step`, whose loss or grad norm was not finite and whose update was therefore not applied. Every
        rank calls it alike (the loops' values are the same on every rank). on_nonfinite=skip with fewer than
        max_skipped_steps skipped: count it, say so, go on. Otherwise the run has diverged: it stops, saves
        nothing more, and its status says so. `what`: which model, when there are several (RL: "critic")."""
        values = f"{what + ' ' if what else ''}loss {_fmt(loss)}, grad norm {_fmt(grad_norm)} (not finite)"
        if self.on_nonfinite == "skip" and self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            if self.is_writer:
                print(f"step {step}: {values}: its update was not applied (skipped {self.skipped_steps} of at most "
                      f"{self.max_skipped_steps}, train.on_nonfinite=skip)", file=sys.stderr, flush=True)
            return
        if self.on_nonfinite == "skip":
            values += f" after {self.skipped_steps} skipped (train.max_skipped_steps={self.max_skipped_steps})"
        self._diverge({"step": step, "loss": _number(loss), "grad_norm": _number(grad_norm), "model": what or None},
                      f"{values}; its update was not applied")

    def weights_not_finite(self, step: int, what: str = "") -> None:
        """The weights after step `step` are not finite (found when saving it: nothing was saved). The run has
        diverged."""
        self._diverge({"step": step, "weights": "not finite", "model": what or None},
                      f"the {what + ' ' if what else ''}weights after it are not finite")

    def _diverge(self, details: dict, found: str) -> None:
        from octomega.checkpoint import latest_finite

        self.stop_reason = "diverged"
        last = latest_finite(self.checkpoints) if self.checkpoints is not None else None
        where = f"the last finite checkpoint is {last}" if last is not None else "no checkpoint was saved before it"
        instead = ("; or set train.on_nonfinite=skip to skip such steps (at most train.max_skipped_steps)"
                   if self.on_nonfinite == "stop" else "")
        self.divergence = {**{k: v for k, v in details.items() if v is not None}, "skipped_steps": self.skipped_steps,
                           "last_checkpoint": str(last) if last is not None else None,
                           "error": f"training diverged at step {details['step']}: {found}, and nothing was saved "
                                    f"after it; {where}. {self.advice}{instead}"}

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
        check_stop() first); never once the run has diverged. A True answer counts as saved."""
        if self.diverged:
            return False
        if (self.save_interval and step % self.save_interval == 0) or self.interrupted:
            self.last_saved = step
            return True
        return False

    def final_save_due(self, step: int) -> bool:
        """After the loop: whether `step` still needs its checkpoint (not after a signal: that saved already; never
        after a divergence)."""
        return not self.interrupted and not self.diverged and self.last_saved != step

    def status(self, step: int) -> str:
        """How the run ended at `step`: "complete", "stopped", "time_budget", "interrupted" or "diverged"."""
        if self.diverged:
            return "diverged"
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
        run_dir/status_file. With skipped non-finite steps also "skipped_steps"; diverged, also "diverged" (step,
        loss, grad norm, last_checkpoint) and "error" (the line the commands print)."""
        result = {"status": self.status(step), "step": step, "steps": self.total_steps, "run_dir": str(self.run_dir),
                  **extra}
        if self.skipped_steps:
            result["skipped_steps"] = self.skipped_steps
        if self.divergence is not None:
            result["diverged"] = {k: v for k, v in self.divergence.items() if k != "error"}
            result["error"] = self.divergence["error"]
        if self.is_writer:
            (self.run_dir / self.status_file).write_text(json.dumps(result, indent=2))
        return result
