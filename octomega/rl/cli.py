"""`octomega rl RECIPE [key.sub=value ...] [--dry-run]`: the RL stage (GRPO or PPO) on Megatron-Core.

    octomega rl tiny_rl_grpo_short                        GRPO on the tiny decay-short model (CPU, ~2.5 min)
    octomega rl llama32_3b_rl_grpo --dry-run              print the resolved config and the batch arithmetic
    torchrun --nproc-per-node 8 -m octomega rl llama32_3b_rl_grpo rollout.backend=vllm
    octomega rl runs/x/config.json train.steps=10         a saved config, edited

Exit status: 0 done (or stopped by a time budget / signal with a checkpoint), 2 bad input, 3 diverged (a non-finite
loss or grad norm: train.on_nonfinite).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from octomega.config import ConfigError, apply_override
from octomega.launch import (add_run_arguments, checked_config, load_config, prepare_recipe, run_command, run_stage,
                             stage_exit_status)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="octomega rl", description="Reinforcement learning on math prompts (GRPO / PPO) with Megatron-Core "
        "models and octomega.generate rollouts. Defaults are OctoThinker's settings (docs/recipe.md).",
        epilog="Overrides: any field as key.sub=value, e.g. algo.name=ppo rollout.backend=hf train.steps=50 "
               "rollout.response_stair=0:1024,50:2048 valid.benchmarks=math500,gsm8k. `octomega recipes --kind rl` "
               "lists the RL recipes. Docs: docs/rl.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_run_arguments(
        p, recipe_help="an RL recipe name, or a saved RL config JSON (a run's config.json)",
        dry_run_help="print and save the resolved config and the units arithmetic; run nothing")


def resolve(recipe: str, overrides: list[str]):
    from octomega.rl.config import RLConfig

    cfg = load_config(recipe, "rl", RLConfig)
    for o in overrides:
        if o.startswith("model.") and cfg.model is None:
            raise ConfigError(f"{o}: the model comes from the starting checkpoint; set init.* instead (or a full "
                              "model section in a config JSON)")
        apply_override(cfg, o)
    return cfg


def main(argv: list[str] | None = None, *, as_command: bool | None = None) -> int:
    """`as_command`: this process is the `octomega` command itself (not a call from Python), so it may restart
    itself to pin its CPU numerics (octomega.numerics.ensure); None: when `argv` is None (read from sys.argv)."""
    args = parser().parse_intermixed_args(argv)
    if as_command is None:
        as_command = argv is None
    own_args = sys.argv[1:] if argv is None else argv
    return run_command("octomega rl", args, lambda: _rl(args, own_args, as_command))


def _rl(args: argparse.Namespace, own_args: list[str], as_command: bool) -> int:
    from octomega.rl.config import dry_run_report, validate_rl

    cfg = checked_config(args, resolve, validate_rl, dry_run_report)
    if cfg is None:  # --dry-run
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        # the tiny recipes build their prompt set on first use (rank 0, before the process group the other ranks
        # wait for) and say how to get the starting checkpoint
        prepare_recipe(args.recipe, cfg)
    from octomega import numerics

    numerics.ensure(cfg.train.cpu_numerics, command=["rl", *own_args] if as_command else None, prog="octomega rl")
    if as_command:
        from octomega.train.run import catch_early_signals

        catch_early_signals()
    from octomega.rl.loop import run_rl

    result = run_stage(run_rl, cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "valid"}), flush=True)
    return stage_exit_status("octomega rl", result)


if __name__ == "__main__":
    sys.exit(main())
