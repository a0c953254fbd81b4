"""The `octomega` command: train, recipes, convert, eval, rl, pipeline.

    octomega recipes                                   list recipes, one line each
    octomega train RECIPE [key.sub=value ...] [--dry-run]
    torchrun --nproc-per-node 2 -m octomega train tiny_stable parallel.tp=2
    octomega convert {hf-to-mcore,mcore-to-hf,verify} ...
    octomega eval MODEL [...] | octomega eval compare RUN_DIR ...
    octomega pipeline tiny [--from STAGE]
"""

from __future__ import annotations

import argparse
import importlib
import os
import json
import sys

from octomega.config import apply_overrides, to_json, validate
from octomega.launch import (add_run_arguments, checked_config, load_config, prepare_recipe, run_command, run_stage,
                             stage_exit_status)

# Subcommands implemented by their own modules' `main(argv) -> int`.
DELEGATES = {
    "convert": ("octomega.convert.cli", "Hugging Face <-> Megatron checkpoints"),
    "eval": ("octomega.eval.cli", "benchmark evaluation and comparison"),
    "rl": ("octomega.rl.cli", "the RL stage (GRPO, PPO)"),
    "pipeline": ("octomega.pipeline", "every stage, end to end (tiny) or as an sbatch chain (paper)"),
}


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="octomega train",
        description="Train a recipe (stable stage or a decay branch) on Megatron-Core. Launch with torchrun or "
                    "srun for several processes; a plain `octomega train` is a world of one.",
        epilog="Overrides: any config field as key.sub=value, e.g. optim.lr=3e-5 train.train_tokens=2e9 "
               "parallel.tp=2 model.recompute=selective. Token counts accept 2e9. `octomega recipes` lists recipes.")
    return add_run_arguments(
        p, recipe_help="recipe name (see `octomega recipes`), or a saved config JSON such as a run's config.json",
        dry_run_help="print and save the resolved config, the token budget, the LR at key steps and the theoretical "
                     "memory per GPU; train nothing")


def resolve_config(recipe_name: str, overrides: list[str]):
    """A training recipe by name, or a saved config JSON (a run's config.json), with overrides applied."""
    from octomega.config import RunConfig

    return apply_overrides(load_config(recipe_name, "train", RunConfig), overrides)


def dry_run_report(cfg, world_size: int | None = None) -> str:
    cfg = validate(cfg, world_size)  # no torch: a bad config fails in a fraction of a second
    # The LR curve comes from Megatron's own scheduler and the memory from its formula: these import Megatron-Core.
    from octomega.train.flops import theoretical_memory_gb
    from octomega.train.schedule import budget, lr_at, lr_bounds

    b = budget(cfg)
    lines = ["resolved config:", to_json(cfg), "", "token budget:",
             f"  {cfg.train.train_tokens:,} tokens requested / ({cfg.train.global_batch_size} sequences x "
             f"{cfg.train.seq_length} tokens = {b.tokens_per_step:,} tokens/step) = "
             f"{cfg.train.train_tokens / b.tokens_per_step:,.1f} steps -> {b.steps:,} steps",
             f"  tokens actually trained: {b.tokens:,}", f"  {b.describe()}"]
    micro = cfg.train.global_batch_size // (cfg.train.micro_batch_size * cfg.parallel.dp)
    lines.append(f"  layout: tp {cfg.parallel.tp} x pp {cfg.parallel.pp} x dp {cfg.parallel.dp}; "
                 f"{micro} micro-batches of {cfg.train.micro_batch_size} per step per DP rank")
    stable_lr = None
    if cfg.optim.lr is None and cfg.init.from_checkpoint:
        try:
            from octomega.checkpoint import read_meta

            stable_lr = read_meta(cfg.init.from_checkpoint).get("stable_lr")
        except FileNotFoundError:
            pass
    lines += ["", f"learning rate ({cfg.train.stage} stage; the scheduler counts optimizer steps):"]
    if cfg.optim.lr is None and stable_lr is None:
        lines.append(f"  peak = the LR of {cfg.init.from_checkpoint} (no complete checkpoint there yet); "
                     f"min = {cfg.optim.min_lr_ratio:g} x peak, {cfg.optim.decay_style} over {b.steps:,} steps")
    else:
        peak, low = lr_bounds(cfg, stable_lr)
        keys = sorted({0, b.warmup_steps, b.steps // 4, b.steps // 2, (3 * b.steps) // 4, b.steps - 1, b.steps})
        for s, lr in zip(keys, lr_at(cfg, keys, peak, low)):
            lines.append(f"  step {s:>9,}: {lr:.4e}")
    mem = theoretical_memory_gb(cfg, micro)
    lines += ["", "theoretical memory per GPU (Megatron's formula; bf16 + fp32 Adam, most loaded PP stage):",
              f"  weights+optimizer {mem['weights_and_optimizer_gib']:.2f} GiB + activations "
              f"{mem['activations_gib']:.2f} GiB (recompute={cfg.model.recompute}) = {mem['total_gib']:.2f} GiB"]
    return "\n".join(lines)


def cmd_train(argv: list[str], *, as_command: bool = False) -> int:
    """`as_command`: this process is the `octomega` command itself (not a call from Python), so it may restart
    itself to pin its CPU numerics (octomega.numerics.ensure)."""
    args = _train_parser().parse_intermixed_args(argv)
    return run_command("octomega train", args, lambda: _train(args, argv, as_command))


def _train(args: argparse.Namespace, argv: list[str], as_command: bool) -> int:
    cfg = checked_config(args, resolve_config, validate, dry_run_report)
    if cfg is None:  # --dry-run
        return 0
    from octomega import numerics

    numerics.ensure(cfg.train.cpu_numerics, command=["train", *argv] if as_command else None, prog="octomega train")
    if as_command:
        from octomega.train.run import catch_early_signals

        catch_early_signals()
    prepare_recipe(args.recipe, cfg)  # the tiny recipes build their synthetic corpora on first use
    from octomega.train.loop import run_training

    result = run_stage(run_training, cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result), flush=True)
    return stage_exit_status("octomega train", result)


def cmd_recipes(argv: list[str]) -> int:
    import recipes

    p = argparse.ArgumentParser(prog="octomega recipes",
                                description="List the recipes: name, kind (the command that runs it), description.")
    p.add_argument("--kind", choices=("train", "rl", "eval"), help="only the recipes of this kind")
    rows = recipes.entries(p.parse_args(argv).kind)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.kind:<5}  {r.doc}")
    return 0


def _quiet_library_warnings() -> None:
    """Megatron-Core and friends warn at import about optional kernels (Apex, TE, flash-attn) and experimental
    modules; the lines repeat per process. Known, harmless: hide them (OCTOMEGA_WARNINGS=1 shows them)."""
    import warnings

    if os.environ.get("OCTOMEGA_WARNINGS") != "1":
        for module in ("megatron", "transformer_engine", "torch.distributed.checkpoint", "datatrove"):
            warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
    # Without arguments this process is the `octomega` command itself, which may restart itself to pin its CPU
    # numerics (octomega.numerics.ensure); called with arguments (from Python, e.g. a test) it must not.
    as_command = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": "train a recipe", "recipes": "list the recipes",
                **{k: v[1] for k, v in DELEGATES.items()}}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands:\n" + "\n".join(f"  {k:<9} {v}" for k, v in commands.items()))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return cmd_train(rest, as_command=as_command)
    if cmd == "recipes":
        return cmd_recipes(rest)
    if cmd in DELEGATES:
        try:
            module = importlib.import_module(DELEGATES[cmd][0])
        except ModuleNotFoundError as e:
            print(f"octomega {cmd}: not available in this build ({e})", file=sys.stderr)
            return 2
        if cmd == "rl":  # like train, it may restart itself
            return int(module.main(rest, as_command=as_command) or 0)
        return int(module.main(rest) or 0)
    print(f"octomega: unknown command {cmd!r}; commands: {', '.join(commands)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
