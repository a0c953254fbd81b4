"""`octomega pipeline`: every stage end to end.

    octomega pipeline tiny [--out runs/tiny] [--from STAGE] [--jobs 2]     run on this machine (CPU, minutes)
    octomega pipeline tiny --cpu-numerics native                           faster; numbers differ by machine
    octomega pipeline tiny --list                                          the stages and whether they are done
    octomega pipeline tiny --dry-run                                       the stages' commands, nothing run
    octomega pipeline llama32_3b --dry-run | --submit                      the paper-scale sbatch chain

Re-running skips finished stages; `--from STAGE` redoes that stage and everything after it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from octomega.pipeline.runner import Runner, StageFailed
from recipes import env_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="octomega pipeline", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.strip().splitlines()[2:]))
    p.add_argument("target", help="tiny, or a paper model: llama32_1b | llama32_3b | llama31_8b")
    p.add_argument("--out", default=None, help="tiny: output root (default $OCTOMEGA_TINY_ROOT or runs/tiny)")
    p.add_argument("--from", dest="from_stage", default=None, help="redo this stage and every stage after it")
    p.add_argument("--jobs", type=int, default=2, help="stages run at once (tiny; default 2 = the 2 cores)")
    p.add_argument("--list", action="store_true", help="list the stages and whether each is done")
    p.add_argument("--dry-run", action="store_true", help="print what would run: tiny, each stage's command and "
                                                          "dependencies; paper, the sbatch chain")
    p.add_argument("--submit", action="store_true", help="paper: submit the chain with job dependencies")
    p.add_argument("--rl-override", action="append", default=[],
                   help="tiny: key=value passed to every RL stage (repeatable)")
    p.add_argument("--cpu-numerics", choices=("pinned", "native"), default="pinned",
                   help="tiny: pinned (default) = the same numbers on every x86-64 machine with AVX2, slower; "
                        "native = this CPU's fastest kernels, numbers that differ between machines "
                        "(octomega/numerics.py)")
    return p


def run_tiny(args) -> int:
    from octomega.pipeline.tiny import tiny_stages

    root = Path(args.out or env_dir("OCTOMEGA_TINY_ROOT")).resolve()
    os.environ["OCTOMEGA_TINY_ROOT"] = str(root)
    runner = Runner(tiny_stages(root, rl_overrides=args.rl_override, cpu_numerics=args.cpu_numerics), root,
                    jobs=args.jobs)
    if args.list:
        for s in runner.stages:
            print(f"{'done' if runner.is_done(s.name) else '    '}  {s.name:<20} after {', '.join(s.deps) or '-'}")
        return 0
    if args.dry_run:
        import shlex

        print(f"# octomega pipeline tiny: {len(runner.stages)} stages under {root}, {runner.jobs} at a time; "
              f"logs in {root / 'logs'}")
        for s in runner.stages:
            state = "done, skipped" if runner.is_done(s.name) else f"{s.threads} thread(s)"
            print(f"# {s.name} (after {', '.join(s.deps) or '-'}; {state})\n"
                  + " ".join(f"{k}={shlex.quote(v)}" for k, v in s.env.items()) + " " + shlex.join(s.cmd))
        return 0
    if args.from_stage:
        try:
            print(f"[pipeline] redoing: {', '.join(runner.reset_from(args.from_stage))}")
        except KeyError as e:
            print(f"octomega pipeline: error: {e.args[0]}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop the running stages too (they save and exit)
    try:
        runner.run()
    except StageFailed as e:
        print(f"octomega pipeline: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("octomega pipeline: interrupted; the running stages were stopped (training stages save a checkpoint "
              "first). Run the same command again: finished stages are skipped, training resumes.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"[pipeline] finished in {time.perf_counter() - t0:.0f} s; report: {root / 'report' / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.target == "tiny":
        return run_tiny(args)
    from octomega.pipeline.paper import run_paper

    return run_paper(args)
