"""The slurm/ scripts without a cluster: valid bash, usage with --help, the commands they submit and launch
(--dry-run, outside a job and inside a pretend 2-node job), and slurm/task.sh's signal hand-off."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "slurm"
STAGES = ["data_prep", "stable", "decay", "convert", "rl", "eval"]
ALL_SCRIPTS = sorted(SLURM.glob("*.sh")) + [ROOT / "scripts" / "slurm_local.sh"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "OCTOMEGA_"))}
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    return {**env, **extra}


def _run(script: str, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM / f"{script}.sh"), *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(**env), timeout=120)


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(path):
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
def test_scripts_pass_shellcheck():
    p = subprocess.run(["shellcheck", "-x", *map(str, ALL_SCRIPTS)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_stage_script_prints_usage(stage):
    p = _run(stage, "--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith(f"slurm/{stage}.sh"), out[:200]
    assert "Environment" in out
    # requeue + a warning to the batch shell (B:) some seconds before the time limit, and one log across restarts
    for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@", "#SBATCH --open-mode=append", "#SBATCH --time="):
        assert line in out, f"{stage}.sh: no '{line}' default"
    src = (SLURM / f"{stage}.sh").read_text()
    assert "\nset -euo pipefail\n" in src


def test_stage_scripts_share_one_bootstrap():
    """Each stage script starts with the same lines that find slurm/common.sh (sbatch runs a copy of the script from
    its spool directory): they cannot live in the file they find, so they are repeated, and must stay the same."""
    blocks = {}
    for stage in STAGES:
        src = (SLURM / f"{stage}.sh").read_text()
        start = src.index("\nset -euo pipefail\n")
        end = src.index('\nset -- "${OM_ARGS[@]+"${OM_ARGS[@]}"}"\n', start)
        blocks[stage] = "\n".join(line for line in src[start:end].splitlines() if line.strip())
    assert len(set(blocks.values())) == 1, {k: v.splitlines() for k, v in blocks.items()}
    assert 'source "$OM_SLURM_DIR/common.sh"\nom_parse "$@"' in blocks["stable"]


@pytest.mark.parametrize("stage", ["stable", "decay", "rl"])
def test_training_defaults_fit_8_gpu_nodes(stage):
    src = (SLURM / f"{stage}.sh").read_text()
    for line in ("#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8", "#SBATCH --exclusive"):
        assert line in src


def test_helpers_print_usage():
    for path in (SLURM / "task.sh", ROOT / "scripts" / "slurm_local.sh"):
        p = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "Environment" in p.stdout, p.stdout + p.stderr


def test_submit_mode_dry_runs(tmp_path):
    """Outside a job every script says what it would submit and what the job would run."""
    runs = tmp_path / "runs"
    p = _run("stable", "--dry-run", "tiny_stable", "data.mock=true", f"run_dir={runs}/s")
    assert p.returncode == 0, p.stderr
    assert f"--output={runs}/s/logs/slurm-%j.out" in p.stdout
    assert "-m octomega train tiny_stable data.mock=true" in p.stdout
    assert not runs.exists(), "a dry run must not create the run directory"

    p = _run("stable", "--dry-run", "tiny_stable", OCTOMEGA_GRACE="900", OCTOMEGA_SBATCH_ARGS="--nodes=4 --time=1:00:00")
    assert "--signal=B:USR1@900 --nodes=4 --time=1:00:00" in p.stdout, p.stdout + p.stderr

    p = _run("decay", "--dry-run", "hybrid", MODEL="llama32_3b")
    assert "-m octomega train llama32_3b_decay_hybrid" in p.stdout, p.stdout + p.stderr
    assert _run("decay", "--dry-run", "medium").returncode != 0

    p = _run("rl", "--dry-run", "tiny_rl_grpo_short", "train.steps=3")
    assert "-m octomega rl tiny_rl_grpo_short train.steps=3" in p.stdout, p.stdout + p.stderr

    p = _run("convert", "--dry-run", "runs/llama32_1b_decay_long", "--dtype", "bf16")
    assert ("-m octomega convert mcore-to-hf runs/llama32_1b_decay_long runs/llama32_1b_decay_long/hf --dtype bf16"
            in p.stdout), p.stdout + p.stderr

    p = _run("eval", "--dry-run", "runs/llama32_1b_decay_long/hf", "--limit", "5", SUITE="rl-zeroshot")
    assert ("-m octomega eval runs/llama32_1b_decay_long/hf --suite rl-zeroshot --backend vllm "
            "--out runs/eval/llama32_1b_decay_long-rl-zeroshot --name llama32_1b_decay_long --limit 5") in p.stdout, \
        p.stdout + p.stderr

    p = _run("data_prep", "--dry-run", CORPORA="openr1-math dclm-baseline", MIXTURES="decay_long valid",
             PARTITION="cpu")
    assert p.returncode == 0, p.stderr
    assert "-m data_prep.tokenize --corpus openr1-math --tokenizer data/tokenizer --output-dir data/tokens " \
           "--executor slurm --partition cpu" in p.stdout
    assert "afterok" in p.stdout
    p = _run("data_prep", "--dry-run", "mix", CORPORA="openr1-math dclm-baseline", MIXTURES="decay_long valid")
    assert "-m data_prep.mix --stats data/tokens --mixture decay_long --train-tokens 20B --out data/blends/decay_long.json" \
        in p.stdout
    assert "--mixture custom --weights openr1-math=1,dclm-baseline=1" in p.stdout


def test_eval_runs_an_evaluation_recipe(tmp_path):
    """`slurm/eval.sh RECIPE`: the recipe sets suite, backend, output directory and name (the script adds none of
    its MODEL defaults); the log goes to the output directory octomega eval resolves; SUITE, BACKEND, OUT set
    explicitly and options given override the recipe."""
    runs = tmp_path / "runs"
    p = _run("eval", "--dry-run", "llama32_1b_eval_long", "--limit", "5", OCTOMEGA_RUNS=str(runs))
    assert p.returncode == 0, p.stderr
    assert f"--job-name=om-llama32_1b_eval_long --output={runs}/eval/llama32_1b_eval_long/logs/slurm-%j.out" \
        in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("-m octomega eval llama32_1b_eval_long --limit 5"), p.stdout

    out = tmp_path / "mine"
    p = _run("eval", "--dry-run", "llama32_1b_eval_rl_long", "--limit", "5", SUITE="base-fewshot", BACKEND="hf",
             OUT=str(out), OCTOMEGA_RUNS=str(runs))
    assert p.returncode == 0, p.stderr
    assert f"--output={out}/logs/slurm-%j.out" in p.stdout, p.stdout
    assert (f"-m octomega eval llama32_1b_eval_rl_long --suite base-fewshot --backend hf --out {out} --limit 5"
            in p.stdout), p.stdout

    p = _run("eval", "--dry-run", "llama32_1b_eval_base", "--out", str(out / "base"), OCTOMEGA_RUNS=str(runs))
    assert f"--output={out}/base/logs/slurm-%j.out" in p.stdout, p.stdout + p.stderr

    p = _run("eval", "--dry-run", "llama32_1b_eval_long", **JOB_ENV)  # inside a job: one process
    assert p.returncode == 0, p.stderr
    assert "srun --nodes=1 --ntasks=1 --cpus-per-task=96" in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("-m octomega eval llama32_1b_eval_long"), p.stdout
    assert not runs.exists() and not out.exists(), "a dry run must not create the output directory"


def test_eval_recipe_submits_itself_with_its_log_in_the_output_directory(tmp_path):
    """Without --dry-run, outside a job, against a fake sbatch that records its arguments."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_args"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "123;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)
    runs = tmp_path / "runs"
    p = _run("eval", "llama32_1b_eval_short", "--limit", "5", OCTOMEGA_RUNS=str(runs),
             PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert p.returncode == 0, p.stderr
    logs = runs / "eval" / "llama32_1b_eval_short" / "logs"
    assert f"submitted job 123 (om-llama32_1b_eval_short); log: {logs}/slurm-123.out" in p.stdout, p.stdout
    assert logs.is_dir()
    args = record.read_text().splitlines()
    assert f"--output={logs}/slurm-%j.out" in args and args[-4:] == [str(SLURM / "eval.sh"), "llama32_1b_eval_short",
                                                                     "--limit", "5"], args


def test_eval_names_an_argument_that_is_neither_a_directory_nor_a_recipe():
    p = _run("eval", "--dry-run", "llama32_1b_eval_lonng")
    assert p.returncode == 2 and "would submit" not in p.stdout
    assert "llama32_1b_eval_lonng is neither a directory nor an evaluation recipe" in p.stderr, p.stderr
    assert "did you mean llama32_1b_eval_long" in p.stderr and "`python -m octomega recipes` lists them" in p.stderr
    p = _run("eval", "--dry-run", "tiny_stable")  # a recipe, of another kind
    assert p.returncode == 2 and "'tiny_stable' is not an evaluation recipe" in p.stderr, p.stderr
    p = _run("eval", "--dry-run", "llama32_1b_eval_long", "--no-such-option")  # checked before submitting
    assert p.returncode == 2 and "unrecognized arguments: --no-such-option" in p.stderr, p.stderr


def test_unknown_recipe_fails_before_submitting():
    p = _run("stable", "--dry-run", "llama32_1b_stabel")
    assert p.returncode == 2
    assert "llama32_1b_stable" in p.stderr  # the suggestion


JOB_ENV = dict(SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="gpu[01-02]", SLURM_GPUS_ON_NODE="8",
               SLURM_CPUS_ON_NODE="96", SLURM_CPUS_PER_TASK="12", MASTER_ADDR="gpu01")


def test_launch_commands_in_a_two_node_job():
    """Inside a (pretend) job of 2 nodes x 8 GPUs: srun starts 16 training processes, torchrun 2 agents."""
    p = _run("stable", "--dry-run", **JOB_ENV)
    assert p.returncode == 0, p.stderr
    assert f"srun --nodes=2 --ntasks-per-node=8 --cpus-per-task=12 --kill-on-bad-exit=1 bash {SLURM}/task.sh" \
        in p.stdout, p.stdout
    assert "-m octomega train llama32_1b_stable" in p.stdout

    p = _run("stable", "--dry-run", OCTOMEGA_LAUNCHER="torchrun", **JOB_ENV)
    assert p.returncode == 0, p.stderr
    for part in ("srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=96", "-m torch.distributed.run --nnodes=2",
                 "--nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=gpu01:24242 --rdzv-id=4242",
                 "-m octomega train llama32_1b_stable"):
        assert part in p.stdout, p.stdout

    p = _run("eval", "--dry-run", "m/hf", **JOB_ENV)
    assert "srun --nodes=1 --ntasks=1 --cpus-per-task=96" in p.stdout, p.stdout + p.stderr


CHILD = r"""
import os, signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
time.sleep(2)                                  # start-up: no handler yet, SIGTERM would kill us
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
log.write("handler\n")
pid = os.fork()
if pid == 0:                                   # a DataLoader worker: SIGTERM kills it
    time.sleep(3)
    log.write("worker alive\n")
    os._exit(0)
t = time.time()
while not got and time.time() - t < 20:
    time.sleep(0.05)
log.write(f"trainer got {got}\n")
os.waitpid(pid, 0)
"""


def test_task_wrapper_holds_the_signal_until_the_trainer_catches_it(tmp_path):
    """SIGURG to every process of the task (what `scancel --signal=URG` does) during start-up: the wrapper waits
    for the trainer's SIGTERM handler, then signals the trainer alone; its forked worker lives on."""
    log = tmp_path / "log"
    proc = subprocess.Popen(["bash", str(SLURM / "task.sh"), sys.executable, "-c", CHILD, str(log)],
                            env=_env(OM_TASK_WAIT="self"), start_new_session=True)
    time.sleep(0.7)
    os.killpg(proc.pid, signal.SIGURG)
    for _ in range(40):  # and again once the worker exists: it must not be touched
        time.sleep(0.1)
        if log.exists() and "handler" in log.read_text():
            break
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGURG)
    assert proc.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert lines == ["handler", "trainer got [15]", "worker alive"], lines
