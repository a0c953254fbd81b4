"""What pinned CPU numerics cost: tiny_stable with train.cpu_numerics=native against =pinned, side by side.

    .venv/bin/python bench/tiny_numerics.py                      # 60 steps each, 2 rounds, alternating
    .venv/bin/python bench/tiny_numerics.py --steps 100 --rounds 3 --out bench/results/tiny_numerics.json

Each run is `octomega train tiny_stable` in its own process on the tiny corpora (built under --root on first
use), with no checkpoint and one validation at the end. The runs alternate native, pinned, native, pinned...
so that a change in the machine's load reaches both alike. Reported per mode: tokens/s over the steps after
the first logging interval (start-up and the first steps excluded), and whether the two modes' losses agree
(they should not: the pins change MKL's code path; two runs of one mode must agree exactly). The JSON keeps the
command, the machine's CPU and every run. octomega/numerics.py says what the pins are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from octomega import numerics  # noqa: E402  (no torch: safe before the runs)

LOG_INTERVAL = 10


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _env(mode: str, root: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}
    env.update(OCTOMEGA_TINY_ROOT=str(root), WANDB_MODE="disabled")
    if mode == "pinned":
        return numerics.pinned_env(env, threads=threads)
    return {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_one(mode: str, root: Path, work: Path, steps: int, threads: int, index: int) -> dict:
    run_dir = work / f"{index:02d}_{mode}"
    cmd = [sys.executable, "-m", "octomega", "train", "tiny_stable", f"run_dir={run_dir}",
           f"train.train_tokens={steps * 4096}", f"optim.warmup_tokens={min(50, steps // 2) * 4096}",
           f"logging.log_interval={LOG_INTERVAL}", "checkpoint.save_interval=0", "train.valid_interval=0",
           "logging.wandb=false", f"train.cpu_numerics={mode}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(mode, root, threads), capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    timed = [r for r in train if r["step"] > LOG_INTERVAL and r["step"] % LOG_INTERVAL == 0]
    seconds = sum(r["step_time_s"] * LOG_INTERVAL for r in timed)
    summary = next((line for line in proc.stdout.splitlines() if line.startswith("cpu numerics:")), "")
    return {"mode": mode, "wall_s": round(wall, 1), "timed_steps": len(timed) * LOG_INTERVAL,
            "tokens_per_s": round(len(timed) * LOG_INTERVAL * 4096 / seconds, 1),
            "losses": [r["loss"] for r in train], "numerics": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    p.add_argument("--rounds", type=int, default=2, help="native+pinned pairs (default 2)")
    p.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of every run (default 2)")
    p.add_argument("--root", type=Path, default=None,
                   help="tiny root with the corpora (default: a temporary one, built first, ~20 s)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the environments; run nothing")
    args = p.parse_args(argv)
    if args.steps <= LOG_INTERVAL:
        p.error(f"--steps must be more than {LOG_INTERVAL} (the first logging interval is not timed)")
    plan = ["native", "pinned"] * args.rounds
    if args.dry_run:
        print(f"runs: {', '.join(plan)}; {args.steps} steps each, {args.threads} threads")
        print(f"pinned adds: {numerics.describe(numerics.pinned_env({}, threads=args.threads))}")
        return 0
    with tempfile.TemporaryDirectory(prefix="tiny_numerics_") as tmp:
        root = args.root or Path(tmp) / "root"
        env = {**os.environ, "OCTOMEGA_TINY_ROOT": str(root)}
        print(f"building the tiny corpora under {root} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "recipes.tiny", "data"], env=env, check=True, cwd=REPO,
                       capture_output=True)
        runs = []
        for i, mode in enumerate(plan):
            r = run_one(mode, root, Path(tmp), args.steps, args.threads, i)
            print(f"[{i + 1}/{len(plan)}] {mode:<6} {r['tokens_per_s']:>8,.0f} tokens/s  (wall {r['wall_s']} s)",
                  flush=True)
            runs.append(r)
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in ("native", "pinned")}
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python bench/tiny_numerics.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "steps": args.steps, "threads": args.threads,
        "median_tokens_per_s": {m: statistics.median(r["tokens_per_s"] for r in rs) for m, rs in by_mode.items()},
        "repeatable_within_mode": {m: all(r["losses"] == rs[0]["losses"] for r in rs) for m, rs in by_mode.items()},
        "modes_agree": by_mode["native"][0]["losses"] == by_mode["pinned"][0]["losses"],
        "runs": [{k: v for k, v in r.items() if k != "losses"} | {"last_loss": r["losses"][-1]} for r in runs],
    }
    med = result["median_tokens_per_s"]
    result["pinned_over_native"] = round(med["pinned"] / med["native"], 3)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
