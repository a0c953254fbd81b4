"""`octomega rl RECIPE [key.sub=value ...] [--dry-run]`: the RL stage (GRPO or PPO) on Megatron-Core.

    octomega rl tiny_rl_grpo_short                        GRPO on the tiny decay-short model (CPU, ~2.5 min)
    octomega rl llama32_3b_rl_grpo --dry-run              print the resolved config and the batch arithmetic
    torchrun --nproc-per-node 8 -m octomega rl llama32_3b_rl_grpo rollout.backend=vllm
    octomega rl runs/x/config.json train.steps=10         a saved config, edited

Exit status: 0 done (or stopped by a time budget / signal with a checkpoint), 2 bad input.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

from octomega.config import ConfigError, apply_override, from_dict, to_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="octomega rl", description="Reinforcement learning on math prompts (GRPO / PPO) with Megatron-Core "
        "models and octomega.generate rollouts. Defaults are OctoThinker's settings (docs/recipe.md).",
        epilog="Overrides: any field as key.sub=value, e.g. algo.name=ppo rollout.backend=hf train.steps=50 "
               "rollout.response_stair=0:1024,50:2048 valid.benchmarks=math500,gsm8k. `octomega recipes` lists "
               "recipes (the RL ones contain '_rl_'). Docs: docs/rl.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="an RL recipe name, or a saved RL config JSON (a run's config.json)")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.add_argument("--dry-run", action="store_true",
                   help="print and save the resolved config and the units arithmetic; run nothing")
    p.add_argument("--world-size", type=int, default=None,
                   help="processes to plan for in --dry-run (default: tp x pp x (parallel.dp or 1))")
    return p


def resolve(recipe: str, overrides: list[str]):
    from octomega.rl.config import RLConfig

    if recipe.endswith(".json"):
        path = Path(recipe)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        cfg = from_dict(RLConfig, json.loads(path.read_text()))
    else:
        import recipes

        cfg = recipes.get(recipe)
        if not isinstance(cfg, RLConfig):
            raise ConfigError(f"{recipe!r} is not an RL recipe (it is a {type(cfg).__name__}); RL recipes are "
                              "named *_rl_*, see `octomega recipes`")
    for o in overrides:
        if o.startswith("model.") and cfg.model is None:
            raise ConfigError(f"{o}: the model comes from the starting checkpoint; set init.* instead (or a full "
                              "model section in a config JSON)")
        apply_override(cfg, o)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from octomega.rl.config import dry_run_report, validate_rl

    try:
        cfg = resolve(args.recipe, args.overrides)
        if args.dry_run:
            print(dry_run_report(cfg, args.world_size))
            out = Path(cfg.resolved_run_dir) / "config.dry_run.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(to_json(cfg))
            print(f"\nsaved {out}")
            return 0
        world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
        validate_rl(copy.deepcopy(cfg), int(world) if world else None)  # fail fast, before any process group
        if args.recipe.startswith("tiny_") and int(os.environ.get("RANK", "0")) == 0:
            from recipes.rl import ensure_tiny_start

            # builds the tiny prompt set on first use (rank 0, before the process group the other ranks wait
            # for) and says how to get the starting checkpoint
            ensure_tiny_start(cfg)
    except (ConfigError, KeyError) as e:
        print(f"octomega rl: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    from octomega import cli, numerics

    own_args = sys.argv[1:] if argv is None else argv
    numerics.ensure(cfg.train.cpu_numerics, command=None if cli._IN_PROCESS else ["rl", *own_args], prog="octomega rl")
    from octomega.rl.loop import run_rl

    try:
        result = run_rl(cfg)
    except (ConfigError, FileNotFoundError) as e:
        print(f"octomega rl: error: {e}", file=sys.stderr)
        return 2
    finally:
        from octomega.runtime import shutdown

        shutdown()
    print(json.dumps({k: v for k, v in result.items() if k != "valid"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
