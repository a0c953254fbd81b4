"""The run skeleton both loops share (octomega/train/run.py): when a run stops, when it saves, the status it ends
with and the status file. No process group: every rank's answer is this process's."""

from __future__ import annotations

import json
import os
import signal

import pytest

from octomega.train.run import RunControl


def _control(tmp_path, **kw) -> RunControl:
    args = dict(is_writer=True, status_file="status.json", start_step=0, total_steps=10, exit_after_steps=None,
                save_interval=4)
    return RunControl(tmp_path, **{**args, **kw})


def _run(control: RunControl, *, signal_at: int | None = None) -> tuple[list[int], dict]:
    """Drive `control` the way the loops do; (the steps saved, the result)."""
    saved = []
    step = control.start_step
    while control.running(step):
        step += 1
        if step == signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        control.check_stop()
        if control.should_save(step):
            saved.append(step)
    if control.final_save_due(step):
        saved.append(step)
    control.close()
    return saved, control.write_status(step)


def test_a_whole_run_saves_every_interval_and_at_the_end(tmp_path):
    saved, result = _run(_control(tmp_path))
    assert saved == [4, 8, 10]
    assert result == {"status": "complete", "step": 10, "steps": 10, "run_dir": str(tmp_path)}
    assert json.loads((tmp_path / "status.json").read_text()) == result


def test_the_last_step_is_saved_once(tmp_path):
    saved, _ = _run(_control(tmp_path, save_interval=5))
    assert saved == [5, 10]
    assert _run(_control(tmp_path, save_interval=0))[0] == [10]


def test_exit_after_steps_stops_with_a_checkpoint(tmp_path):
    saved, result = _run(_control(tmp_path, exit_after_steps=5))
    assert saved == [4, 5] and (result["status"], result["step"]) == ("stopped", 5)
    saved, result = _run(_control(tmp_path, start_step=5, exit_after_steps=5))  # the resumed rest of the run
    assert saved == [8, 10] and (result["status"], result["step"]) == ("complete", 10)


def test_a_restarted_finished_run_runs_no_step(tmp_path):
    saved, result = _run(_control(tmp_path, start_step=10))
    assert saved == [10] and result["status"] == "complete"


def test_a_signal_saves_after_the_step_and_stops(tmp_path):
    before = signal.getsignal(signal.SIGUSR1)
    saved, result = _run(_control(tmp_path), signal_at=3)
    assert saved == [3] and (result["status"], result["step"]) == ("interrupted", 3)
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers restored by close()


@pytest.mark.parametrize("work_after_last_step, status", [(False, "complete"), (True, "interrupted")])
def test_a_signal_in_the_last_step(tmp_path, work_after_last_step, status):
    """Pre-training is complete; RL (work_after_last_step: the final validation and export) is interrupted, so
    that a restart does what the signal skipped."""
    saved, result = _run(_control(tmp_path, work_after_last_step=work_after_last_step), signal_at=10)
    assert saved == [4, 8, 10] and result["status"] == status  # the signal's save is the last step's


def test_time_budget_stops_and_saves_at_the_end(tmp_path):
    control = _control(tmp_path, time_budget_s=0.0, save_interval=0)
    saved, result = _run(control)
    assert saved == [1] and (result["status"], result["step"]) == ("time_budget", 1)
    assert not control.interrupted


def test_validation_cadence(tmp_path):
    control = _control(tmp_path)
    assert [s for s in range(1, 11) if control.due(s, 3)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if control.due(s, 0)] == [10]
    control.close()


def test_only_the_writer_writes_the_status(tmp_path):
    control = _control(tmp_path, is_writer=False)
    control.close()
    assert control.write_status(0, extra=1)["extra"] == 1
    assert not (tmp_path / "status.json").exists()


def test_records_after_the_resumed_step_are_superseded_not_lost(tmp_path):
    """kill -9 after step 20 with the last checkpoint at step 10: the resumed run logs steps 11-20 again, so the
    old records of those steps (and the torn last line) move to metrics.superseded.jsonl, marked."""
    import json

    from octomega.train.run import supersede_records_after

    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 21)] + [{"kind": "valid", "step": 10}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "train", "st')
    assert supersede_records_after(path, 10) == 11
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["step"] for r in kept] == list(range(1, 11)) + [10]
    moved = [json.loads(x) for x in (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in moved] == list(range(11, 21)) + [None]
    assert all(r["superseded_at_resume"] == 10 for r in moved) and moved[-1]["unparsed"].startswith('{"kind"')
    assert supersede_records_after(path, 10) == 0  # idempotent
    assert supersede_records_after(tmp_path / "absent.jsonl", 0) == 0
