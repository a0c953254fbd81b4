"""The paper-scale pipeline as a chain of sbatch jobs with dependencies (`afterok` waits through requeues).

    stable -> decay_<b> -> convert_<b> -> eval_<b>                 (b: long, short, hybrid)
                                      \\-> rl_<b> -> eval_rl_<b>    (the RL run writes its HF export, RUN/hf)
    eval_base                                                     (no dependency: the untouched base model)

The eval jobs run the evaluation recipes of recipes/evals.py through slurm/eval.sh (`<size>_eval_base`,
`<size>_eval_<b>`, `<size>_eval_rl_<b>`): the recipe holds the paper's settings (suite, greedy, the RL models' token
cap = their RL stair's last cap, tensor parallel size, output directory), so the chain passes none. SUITE, BACKEND and OUT, which slurm/eval.sh
reads as overrides, are removed from the environment the chain submits with (a stray OUT in the shell would send
every eval job to one directory); the command says so when it drops one. Data preparation submits its own
datatrove job arrays (`slurm/data_prep.sh all`, run it first, where sbatch works).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from recipes import env_dir

MODELS = ("llama32_1b", "llama32_3b", "llama31_8b")
BRANCHES = ("long", "short", "hybrid")
EVAL_OVERRIDES = ("SUITE", "BACKEND", "OUT")  # slurm/eval.sh's overrides of a recipe: never taken from the shell here
REPO = Path(__file__).resolve().parents[2]


def chain(model: str) -> list[tuple[str, list[str], list[str], dict]]:
    """(job name, command, names it depends on, extra env) in submission order."""
    runs = env_dir("OCTOMEGA_RUNS")
    slurm = REPO / "slurm"
    env = {"MODEL": model}
    jobs = [("stable", [str(slurm / "stable.sh"), f"{model}_stable"], [], env),
            ("eval_base", [str(slurm / "eval.sh"), f"{model}_eval_base"], [], env)]
    for b in BRANCHES:
        run = f"{runs}/{model}_decay_{b}"
        jobs += [
            (f"decay_{b}", [str(slurm / "decay.sh"), b], ["stable"], env),
            (f"convert_{b}", [str(slurm / "convert.sh"), run, f"{run}/hf"], [f"decay_{b}"], env),
            (f"eval_{b}", [str(slurm / "eval.sh"), f"{model}_eval_{b}"], [f"convert_{b}"], env),
            (f"rl_{b}", [str(slurm / "rl.sh"), f"{model}_rl_grpo_{b}"], [f"convert_{b}"], env),
            (f"eval_rl_{b}", [str(slurm / "eval.sh"), f"{model}_eval_rl_{b}"], [f"rl_{b}"], env),
        ]
    return jobs


def _sbatch(name: str, cmd: list[str], deps: list[str], env: dict, dry: bool, ids: dict) -> str:
    """Submit one job (or, dry, print the shell line that would): returns its job id or a shell variable."""
    var = f"JOB_{name.upper()}"
    dep = ["--dependency=afterok:" + ":".join(ids[d] for d in deps)] if deps else []
    full = ["sbatch", "--parsable", *dep, *cmd]
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    line = " ".join(c if c.startswith("--dependency") else shlex.quote(c) for c in full)
    print(f"{var}=$({envs} {line})", flush=True)
    if dry:
        return "$" + var
    base = {k: v for k, v in os.environ.items() if k not in EVAL_OVERRIDES}
    out = subprocess.run(full, env=dict(base, **env), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch failed for {name}: {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def run_paper(args) -> int:
    if args.target not in MODELS:
        print(f"octomega pipeline: unknown target {args.target!r}: tiny or one of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    if not (args.dry_run or args.submit):
        print("octomega pipeline: paper-scale runs go through Slurm: add --dry-run (print the sbatch chain) or "
              "--submit (submit it)", file=sys.stderr)
        return 2
    print(f"# first, where sbatch works: OCTOMEGA_DATA=... slurm/data_prep.sh all   (datatrove job arrays + mix)")
    dropped = [k for k in EVAL_OVERRIDES if k in os.environ]
    if dropped:
        print(f"# not passed to the jobs: {', '.join(f'{k}={os.environ[k]}' for k in dropped)} (the eval recipes set "
              "suite, backend and output directory; to evaluate otherwise, submit slurm/eval.sh yourself)")
    ids: dict[str, str] = {}
    for name, cmd, deps, env in chain(args.target):
        print(f"# {name}" + (f" (after {', '.join(deps)})" if deps else ""))
        ids[name] = _sbatch(name, cmd, deps, env, args.dry_run, ids)
    if args.submit:
        print("submitted: " + ", ".join(f"{k}={v}" for k, v in ids.items()))
    return 0
