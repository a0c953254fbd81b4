"""slurm/stable.sh on a real one-node Slurm (tests/slurm/conftest.py starts it): the tiny recipe on mock data runs
to completion under plain `sbatch`, and the same run with a 1-minute time limit is warned (USR1 to the batch
shell), checkpoints, requeues itself and resumes, as often as it takes, to exactly the losses of the
uninterrupted run: every step once, none repeated or skipped.

Slurm warns at its periodic time-limit check (every 60 s in 22.05): somewhere between the start and the limit of
a 1-minute job, so each allocation trains a random share of a minute. The run starts with STEPS steps; when it
finishes inside one allocation (a fast machine), it is repeated with as many steps as ~1.2 minutes of training
at the speed it measured, which no 1-minute allocation can hold. The uninterrupted reference then trains the
same number of steps.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STABLE = ROOT / "slurm" / "stable.sh"
STEPS = int(os.environ.get("OCTOMEGA_SLURM_TEST_STEPS", "15"))
JOB_TIMEOUT = float(os.environ.get("OCTOMEGA_SLURM_TEST_TIMEOUT", "900"))  # seconds per job

pytestmark = [pytest.mark.slow]


def _cpu_job() -> list[str]:
    """The #SBATCH defaults ask for 8 GPUs: a CPU node takes one task with all its CPUs instead."""
    return ["--gpus-per-node=0", "--ntasks-per-node=1", f"--cpus-per-task={len(os.sched_getaffinity(0))}"]


def _overrides(run_dir: Path, steps: int) -> list[str]:
    return ["tiny_stable", "data.mock=true", "data.tokenizer=none", "data.valid_blend=none", f"run_dir={run_dir}",
            f"train.train_tokens={steps * 4096}", "optim.warmup_tokens=0", "checkpoint.save_interval=0",
            "logging.log_interval=1", "logging.wandb=false"]


def _train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def workdir():
    """Run directories of the jobs. Not pytest's tmp_path: pytest keeps only the newest 3 base directories per
    user, so another pytest session on the machine could delete them under jobs that run for minutes."""
    path = Path(tempfile.mkdtemp(prefix="octomega-slurm-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def requeued(slurm, workdir):
    """slurm/stable.sh run outside a job (it submits itself) with --time=1 --signal=B:USR1@5."""
    base = workdir / "requeue"
    base.mkdir()
    steps = STEPS
    for attempt in range(3):
        run_dir = base / f"run{attempt}"
        sbatch_args = " ".join(_cpu_job() + ["--time=1", "--signal=B:USR1@5"])
        p = slurm.run(["bash", str(STABLE), *_overrides(run_dir, steps)], cwd=base,
                      env={"OCTOMEGA_SBATCH_ARGS": sbatch_args})
        job = re.search(r"submitted job (\d+)", p.stdout).group(1)
        info = slurm.wait(job, JOB_TIMEOUT)
        if info.get("JobState") != "COMPLETED" or int(info.get("Restarts", 0)) > 0:
            break
        timed = _train_records(run_dir)[1:]  # the first step includes warm-up work
        steps_per_s = len(timed) / sum(r["step_time_s"] for r in timed)
        steps = max(2 * steps, math.ceil(1.2 * 60 * steps_per_s))
    return {"steps": steps, "run_dir": run_dir, "job": job, "info": info}


@pytest.fixture(scope="module")
def reference(slurm, requeued, workdir):
    """The same run under a plain `sbatch slurm/stable.sh`, with the default time limit."""
    base = workdir / "reference"
    base.mkdir()
    run_dir = base / "run"
    p = slurm.run(["sbatch", "--parsable", *_cpu_job(), str(STABLE), *_overrides(run_dir, requeued["steps"])],
                  cwd=base)
    job = p.stdout.strip().split(";")[0]
    return {"steps": requeued["steps"], "run_dir": run_dir, "job": job, "info": slurm.wait(job, JOB_TIMEOUT),
            "log": base / f"slurm-octomega-stable-{job}.out"}


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else f"({path} missing)"


def test_sbatch_stable_runs_to_completion(reference):
    run_dir, job, log = reference["run_dir"], reference["job"], reference["log"]
    info = reference["info"]
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{_tail(log)}"
    assert json.loads((run_dir / "train_status.json").read_text())["status"] == "complete"
    assert [r["step"] for r in _train_records(run_dir)] == list(range(1, reference["steps"] + 1))
    # the job's log (sbatch's default file in the submit directory) is linked from the run directory
    link = run_dir / "logs" / f"slurm-{job}.out"
    assert link.is_symlink() and link.resolve() == log.resolve()
    assert "finished: complete" in (run_dir / "logs" / "jobs.log").read_text().splitlines()[-1]


def test_time_limit_requeue_resumes_to_the_same_losses(requeued, reference):
    run_dir, job, info = requeued["run_dir"], requeued["job"], requeued["info"]
    log = run_dir / "logs" / f"slurm-{job}.out"  # submit mode: the log lives in the run directory
    assert info["JobState"] == "COMPLETED", f"{info}\n{_tail(log)}"
    restarts = int(info["Restarts"])
    assert restarts >= 1, f"finished within one 1-minute allocation even at {requeued['steps']} steps"
    events = (run_dir / "logs" / "jobs.log").read_text()
    assert events.count("requeue: checkpoint") == restarts, events
    text = log.read_text()
    assert text.count("received USR1") >= restarts and "resumed from" in text
    # every step trained once: each allocation resumed exactly where the last one saved
    got, want = _train_records(run_dir), _train_records(reference["run_dir"])
    assert [r["step"] for r in got] == list(range(1, requeued["steps"] + 1)), events
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    assert got[-1]["loss"] == want[-1]["loss"]
