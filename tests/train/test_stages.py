"""Stable-then-decay: the branch's LR curve as logged by the real run, what a branch keeps and resets; and
SIGTERM makes a run save a complete checkpoint and exit cleanly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from octomega.testing import run_distributed
from workers import branch_state, metrics, tiny_cfg, train

pytestmark = [pytest.mark.dist, pytest.mark.slow]

PEAK = 1e-3


def _stages(rank, d):
    out = {"stable": train(tiny_cfg(d / "stable", "optim.lr=1e-3", "optim.warmup_tokens=512",
                                    "train.train_tokens=1024"))}  # 4 steps, 2 of warm-up
    branch = ["train.stage=decay", "optim.lr=none", f"init.from_checkpoint={d / 'stable'}",
              "train.train_tokens=2048", "optim.min_lr_ratio=0.1"]  # 8 steps
    out["cosine"] = train(tiny_cfg(d / "cosine", *branch))
    out["linear"] = train(tiny_cfg(d / "linear", *branch, "optim.decay_style=linear"))
    out["kept"] = branch_state(0, tiny_cfg(d / "probe_keep", *branch))
    out["reset"] = branch_state(0, tiny_cfg(d / "probe_reset", *branch, "init.reset_optimizer=true"))
    return out


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    d = tmp_path_factory.mktemp("stages")
    return d, run_distributed(_stages, 1, args=(d,), timeout=600)[0]


def _lrs(d, name):
    return [r["lr"] for r in metrics(d / name)]


def test_stable_warms_up_then_holds(stages):
    d, _ = stages
    assert _lrs(d, "stable") == pytest.approx([0.0, PEAK / 2, PEAK, PEAK], rel=1e-12)


@pytest.mark.parametrize("style, shape", [
    ("cosine", lambda r: 0.5 * (1 + math.cos(math.pi * r))),
    ("linear", lambda r: 1 - r),
])
def test_decay_branch_lr_curve_is_exactly_the_intended_one(stages, style, shape):
    """LR used at branch step k (1-based) = min + (peak - min) * shape((k - 1) / 8), peak read from the stable
    checkpoint, min = 10% of it."""
    d, out = stages
    low = 0.1 * PEAK
    want = [low + (PEAK - low) * shape(k / 8) for k in range(8)]
    assert _lrs(d, style) == pytest.approx(want, rel=1e-12)
    assert [r["step"] for r in metrics(d / style)] == list(range(1, 9))  # its own iteration counter
    assert out[style]["status"] == "complete"


def test_branch_keeps_adam_moments_unless_reset(stages):
    _, out = stages
    assert out["kept"]["start_step"] == 0 and out["kept"]["peak"] == PEAK
    assert out["kept"]["moments"] > 0
    assert out["reset"]["moments"] == 0


@pytest.mark.timeout(300)
def test_sigterm_saves_a_complete_checkpoint_and_exits_cleanly(tmp_path):
    from octomega.config import RunConfig, from_dict, to_json

    run = tmp_path / "sig"
    cfg = from_dict(RunConfig, tiny_cfg(run, "train.train_tokens=2560000", "checkpoint.save_interval=0",
                                        "logging.log_interval=5"))  # 10,000 steps: far more than we wait for
    path = tmp_path / "cfg.json"
    path.write_text(to_json(cfg))
    env = dict(os.environ, OCTOMEGA_DEVICE="cpu", WANDB_MODE="disabled")
    proc = subprocess.Popen([sys.executable, "-m", "octomega", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not metrics(run):
        time.sleep(0.5)
    assert metrics(run), "training never logged a step"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    status = json.loads((run / "train_status.json").read_text())
    assert status["status"] == "interrupted" and 0 < status["step"] < 10_000
    from octomega import checkpoint as ckpt

    latest = ckpt.latest_complete(run)
    assert latest is not None and latest.name == f"iter_{status['step']:07d}"
    assert "saving a checkpoint after this step" in output


@pytest.mark.slow
def test_sigterm_while_starting_still_saves_and_reports(tmp_path):
    """A SIGTERM that comes while torch and the model load (it used to kill the process: exit 143, no status
    file) is remembered: the run stops after its first step with a complete checkpoint, status "interrupted"."""
    from octomega.config import RunConfig, from_dict, to_json

    run = tmp_path / "early"
    cfg = from_dict(RunConfig, tiny_cfg(run, "train.train_tokens=2560000", "checkpoint.save_interval=0"))
    path = tmp_path / "cfg.json"
    path.write_text(to_json(cfg))
    env = dict(os.environ, OCTOMEGA_DEVICE="cpu", WANDB_MODE="disabled")
    proc = subprocess.Popen([sys.executable, "-m", "octomega", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def catches_sigterm() -> bool:  # the handler is installed (Linux: the caught-signals mask of the process)
        try:
            status = open(f"/proc/{proc.pid}/status").read()
        except FileNotFoundError:
            return False
        mask = int(next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1], 16)
        return bool(mask & (1 << (signal.SIGTERM - 1)))

    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not catches_sigterm():
        time.sleep(0.01)
    assert catches_sigterm(), "octomega train never installed its signal handler"
    assert not metrics(run), "the run had already logged a step: the signal would not test the start"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "while starting" in output
    status = json.loads((run / "train_status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] == 1
    from octomega import checkpoint as ckpt

    assert ckpt.latest_complete(run).name == "iter_0000001"


def _wandb_resume(rank, d):
    import os

    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    train(tiny_cfg(d, "logging.wandb=true", "train.exit_after_steps=2"))
    train(tiny_cfg(d, "logging.wandb=true"))
    from octomega import checkpoint as ckpt

    return [json.loads((ckpt.iter_dir(d / "checkpoints", it) / ckpt.META).read_text())["wandb_id"]
            for it in ckpt.complete_iterations(d / "checkpoints")]


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    """wandb offline: the run id is saved in every checkpoint and reused by the resumed process."""
    ids = run_distributed(_wandb_resume, 1, args=(tmp_path / "wb",), timeout=300)[0]
    assert len(ids) == 5 and ids[0] and len(set(ids)) == 1
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(ids[0]) for r in runs)
