"""A non-finite loss or gradient (issue 17, item 1): the step's update is never applied, the run stops ("diverged",
exit status 3, one error line naming the last finite checkpoint) or skips the step (train.on_nonfinite=skip, at
most train.max_skipped_steps), no checkpoint with non-finite weights is ever written, and the keep_last rotation
keeps the last finite one. NaN, inf in a config are errors naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from octomega.config import ConfigError, RunConfig, apply_overrides, validate
from octomega.testing import run_distributed
from workers import metrics, tiny_cfg, train


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("override, field", [
    ("optim.lr=inf", "optim.lr"), ("optim.weight_decay=nan", "optim.weight_decay"),
    ("optim.adam_beta2=-inf", "optim.adam_beta2"), ("optim.clip_grad=NaN", "optim.clip_grad"),
    ("model.rope_theta=1e999", "model.rope_theta"),
])
def test_non_finite_overrides_are_config_errors(override, field):
    with pytest.raises(ConfigError, match=rf"^{field}=.*finite number"):
        apply_overrides(RunConfig(), [override])


def test_an_integer_that_overflows_is_a_config_error():
    with pytest.raises(ConfigError, match="train.exit_after_steps='1e999': expected an integer"):
        apply_overrides(RunConfig(), ["train.exit_after_steps=1e999"])


def test_validate_refuses_non_finite_numbers_from_a_recipe_or_saved_config():
    cfg = RunConfig()
    cfg.optim.weight_decay = float("nan")
    with pytest.raises(ConfigError, match=r"^optim.weight_decay=nan: must be a finite number"):
        validate(cfg, 1)
    cfg = RunConfig()
    cfg.optim.lr = float("inf")
    with pytest.raises(ConfigError, match=r"^optim.lr=inf: must be a finite number"):
        validate(cfg, 1)
    with pytest.raises(ConfigError, match="train.max_skipped_steps=-1"):
        validate(apply_overrides(RunConfig(), ["train.max_skipped_steps=-1"]), 1)
    with pytest.raises(ConfigError, match="expected one of stop, skip"):
        apply_overrides(RunConfig(), ["train.on_nonfinite=ignore"])


def test_rl_config_refuses_non_finite_numbers():
    from octomega.rl.config import RLConfig, validate_rl

    cfg = apply_overrides(RLConfig(), ["init.hf_path=/x", "data.prompts=/x.jsonl"])
    cfg.critic.lr = float("nan")
    with pytest.raises(ConfigError, match=r"^critic.lr=nan: must be a finite number"):
        validate_rl(cfg, 1)
    with pytest.raises(ConfigError, match=r"^optim.lr='inf': expected a finite number"):
        apply_overrides(RLConfig(), ["optim.lr=inf"])


def test_the_train_command_names_the_field(capsys, tmp_path):
    from octomega.cli import main

    assert main(["train", "tiny_stable", "optim.lr=inf", f"run_dir={tmp_path}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "octomega train: error: optim.lr='inf': expected a finite number" in err


# ------------------------------------------------------------------------------------------ run control


def _control(tmp_path, **kw):
    from octomega.train.run import RunControl

    return RunControl(tmp_path, **{**dict(is_writer=True, status_file="status.json", start_step=0, total_steps=10,
                                          exit_after_steps=None, save_interval=1, advice="Lower the LR"), **kw})


def test_run_control_stops_at_the_first_non_finite_step(tmp_path, capsys):
    control = _control(tmp_path)  # on_nonfinite="stop", the default
    assert control.should_save(1)
    control.nonfinite(2, loss=float("nan"), grad_norm=float("inf"))
    assert control.diverged and not control.running(2)
    assert not control.should_save(2) and not control.final_save_due(2)
    result = control.write_status(2)
    assert result["status"] == "diverged" and json.loads((tmp_path / "status.json").read_text()) == result
    assert result["diverged"] == {"step": 2, "loss": "nan", "grad_norm": "inf", "skipped_steps": 0,
                                  "last_checkpoint": None}
    assert result["error"] == ("training diverged at step 2: loss nan, grad norm inf (not finite); its update was not "
                               "applied, and nothing was saved after it; no checkpoint was saved before it. Lower the "
                               "LR; or set train.on_nonfinite=skip to skip such steps (at most "
                               "train.max_skipped_steps)")


def test_run_control_skips_up_to_max_skipped_steps(tmp_path, capsys):
    control = _control(tmp_path, on_nonfinite="skip", max_skipped_steps=2, skipped_steps=1)  # one before a resume
    control.nonfinite(3, loss=float("nan"), grad_norm=None)
    assert not control.diverged and control.running(3) and control.should_save(3)
    assert "step 3: loss nan, grad norm n/a (not finite): its update was not applied (skipped 2 of at most 2" \
        in capsys.readouterr().err
    control.nonfinite(4, loss=1.5, grad_norm=float("nan"))
    assert control.diverged
    result = control.write_status(4)
    assert result["skipped_steps"] == 2 and result["diverged"]["loss"] == 1.5
    assert "(not finite) after 2 skipped (train.max_skipped_steps=2)" in result["error"]


def test_a_diverged_result_is_exit_status_3_with_its_error_line(capsys):
    from octomega.launch import stage_exit_status

    assert stage_exit_status("octomega rl", {"status": "complete"}) == 0
    assert stage_exit_status("octomega rl", {"status": "diverged", "error": "training diverged at step 2: ..."}) == 3
    assert capsys.readouterr().err == "octomega rl: error: training diverged at step 2: ...\n"


# ------------------------------------------------------------------------------------- the training loop


def _nan_from(first_call: int, last_call: int | None, nan_loss: bool):
    """Make the pre-training loss function return NaN on its micro-batch calls first_call..last_call (1-based; every
    later call when last_call is None): NaN gradients through its backward, and, if `nan_loss`, a NaN loss (else the
    reported loss stays finite, as in the issue's step 3)."""
    import octomega.train.loop as loop

    real, calls = loop._loss_func, {"n": 0}

    def loss_func(loss_mask, output):
        calls["n"] += 1
        loss, tokens, logged = real(loss_mask, output)
        if calls["n"] >= first_call and (last_call is None or calls["n"] <= last_call):
            loss = loss * float("nan")
            if nan_loss:
                logged = {k: v * float("nan") for k, v in logged.items()}
        return loss, tokens, logged

    loop._loss_func = loss_func
    return real


def _runs(rank, root):
    """Tiny mock-data runs of 5 steps (4 micro-batches each), one checkpoint per step, NaN injected into the loss."""
    import octomega.train.loop as loop

    out = {}
    for name, overrides, nan_calls in [
        ("stop", ["checkpoint.keep_last=2"], (9, 9, False)),  # the default: stop; NaN in step 3's first micro-batch
        ("skip", ["train.on_nonfinite=skip", "train.max_skipped_steps=2"], (9, 12, True)),  # step 3 only
        ("bounded", ["train.on_nonfinite=skip", "train.max_skipped_steps=2"], (5, None, True)),  # step 2 on
    ]:
        real = _nan_from(*nan_calls)
        try:
            out[name] = train(tiny_cfg(root / name, *overrides))
        finally:
            loop._loss_func = real
    out["refused"] = _save_nan_weights(root / "weights")
    return out


def _save_nan_weights(run_dir: Path) -> list[str]:
    """save_checkpoint of a model with one inf weight: NonFiniteWeights, and what the checkpoints dir then holds."""
    import torch

    from octomega import checkpoint as ckpt
    from octomega.config import from_dict
    from octomega.train.loop import Trainer

    t = Trainer(from_dict(RunConfig, tiny_cfg(run_dir)))
    with torch.no_grad():
        next(t.model.module.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(ckpt.NonFiniteWeights, match="weights are not finite"):
        ckpt.save_checkpoint(run_dir / "checkpoints", 1, t.model, optimizer=t.optimizer)
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    return root, run_distributed(_runs, 1, args=(root,), timeout=600)[0]


def _tensors(iter_dir: Path) -> dict:
    """Every tensor of a checkpoint (model and optimizer state), read from its files alone."""
    from octomega.testing import checkpoint_tensors

    return checkpoint_tensors(iter_dir)


def _all_finite(iter_dir: Path) -> bool:
    import torch

    return all(torch.isfinite(t).all() for t in _tensors(iter_dir).values() if t.is_floating_point())


def _checkpoints(run_dir: Path) -> list[int]:
    from octomega.checkpoint import complete_iterations

    return complete_iterations(run_dir / "checkpoints")


@pytest.mark.dist
@pytest.mark.slow
def test_stop_ends_the_run_at_the_step_without_saving_it(runs):
    root, out = runs
    run = root / "stop"
    result = out["stop"]
    assert result["status"] == "diverged" and result["step"] == 3
    assert json.loads((run / "train_status.json").read_text()) == result
    last = run / "checkpoints" / "iter_0000002"
    loss = metrics(run)[-1]["loss"]
    assert loss == loss  # the loss is finite, its gradients are not: both are checked
    assert result["diverged"] == {"step": 3, "loss": loss, "grad_norm": "nan", "skipped_steps": 0,
                                  "last_checkpoint": str(last)}
    assert result["error"].startswith(f"training diverged at step 3: loss {loss:.6g}, grad norm nan (not finite); "
                                      "its update was not applied, and nothing was saved after it")
    assert f"the last finite checkpoint is {last}" in result["error"] and "Lower optim.lr" in result["error"]
    assert _checkpoints(run) == [1, 2]  # keep_last=2: nothing after the NaN step, the last finite one kept
    assert all(_all_finite(run / "checkpoints" / f"iter_{i:07d}") for i in (1, 2))
    assert json.loads((last / "octomega.json").read_text())["finite"] is True
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["skipped"] is True


@pytest.mark.dist
@pytest.mark.slow
def test_skip_does_not_apply_the_step_and_the_run_goes_on(runs):
    root, out = runs
    run = root / "skip"
    result = out["skip"]
    assert result["status"] == "complete" and result["step"] == 5 and result["skipped_steps"] == 1
    rows = metrics(run)
    assert [r["skipped"] for r in rows] == [False, False, True, False, False]
    assert all(r["loss"] == r["loss"] for r in rows[3:])  # finite (not NaN) after the skipped step
    assert _checkpoints(run) == [1, 2, 3, 4, 5] and all(_all_finite(run / "checkpoints" / f"iter_{i:07d}")
                                                          for i in (1, 2, 3, 4, 5))
    # step 3 changed nothing: weights and Adam state as after step 2 (the scheduler moved on: step 4 at its LR)
    after2, after3 = _tensors(run / "checkpoints" / "iter_0000002"), _tensors(run / "checkpoints" / "iter_0000003")
    params = [k for k in after2 if "rng" not in k and after2[k].is_floating_point()]
    assert params and all(after2[k].equal(after3[k]) for k in params)
    meta = json.loads((run / "checkpoints" / "iter_0000005" / "octomega.json").read_text())
    assert meta["skipped_steps"] == 1 and meta["scheduler"]["num_steps"] == 5


@pytest.mark.dist
@pytest.mark.slow
def test_skip_is_bounded(runs):
    root, out = runs
    run = root / "bounded"
    result = out["bounded"]
    assert result["status"] == "diverged" and result["step"] == 4 and result["skipped_steps"] == 2
    assert "after 2 skipped (train.max_skipped_steps=2)" in result["error"]
    assert "on_nonfinite=skip to skip" not in result["error"]
    assert [r["skipped"] for r in metrics(run)] == [False, True, True, True]
    assert _checkpoints(run) == [1, 2, 3]  # steps 2 and 3 were skipped: their checkpoints hold step 1's weights
    assert result["diverged"]["last_checkpoint"] == str(run / "checkpoints" / "iter_0000003")


@pytest.mark.dist
@pytest.mark.slow
def test_a_checkpoint_with_non_finite_weights_is_never_written(runs):
    _, out = runs
    assert out["refused"] == []  # not even an empty iter_0000001


# ----------------------------------------------------------------------------- the issue's own command line


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_issue_reproduction_diverges_with_a_clear_error(tiny_data_root, tmp_path):
    """`octomega train tiny_stable optim.lr=1e3 train.exit_after_steps=5 checkpoint.save_interval=1
    checkpoint.keep_last=2` went NaN, kept training, saved NaN checkpoints, rotated away every finite one, and
    exited 0. Step 3's gradients are NaN (the loss of step 3 is still finite)."""
    run = tmp_path / "run"
    env = dict(os.environ, OCTOMEGA_TINY_ROOT=str(tiny_data_root), OCTOMEGA_DEVICE="cpu", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, "-m", "octomega", "train", "tiny_stable", "optim.lr=1e3",
                           "train.exit_after_steps=5", "checkpoint.save_interval=1", "checkpoint.keep_last=2",
                           f"run_dir={run}"], env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("octomega train: error:")]
    assert len(errors) == 1, proc.stderr
    last = run / "checkpoints" / "iter_0000002"
    assert errors[0].startswith("octomega train: error: training diverged at step 3: loss ")
    assert f"the last finite checkpoint is {last}. Lower optim.lr" in errors[0]
    status = json.loads((run / "train_status.json").read_text())
    assert status["status"] == "diverged" and status["diverged"]["last_checkpoint"] == str(last)
    assert _checkpoints(run) == [1, 2]
    assert all(_all_finite(run / "checkpoints" / f"iter_{i:07d}") for i in (1, 2))
