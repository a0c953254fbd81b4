"""Tokens, steps and GPU-hours of the paper-scale training recipes, from a measured MFU.

    python -m recipes.estimate [--mfu 0.342] [--gpus 64]

GPU-hours = Megatron's model FLOPs of the recipe's tokens (num_floating_point_operations: causal-halved attention,
SwiGLU, logits; forward + backward) / (MFU x 989.4 TFLOP/s, the H100's dense bf16 peak) / 3600.

The default MFU, 34.2%, is a measurement on ONE H100 (docs/te_on_device.md): Megatron-Core + Transformer
Engine, bf16, the Llama-3.2-1B shape at seq 4096, 8 micro-batches of one sequence per optimizer step. It is not
octomega's own multi-node number (none has been measured: issue 8), and the paper runs at seq 8,192 (more attention
per token), on many nodes (gradient reduce-scatter over the network) and at 3B/8B (larger matmuls, usually a higher
MFU). Treat the hours as an order of magnitude. The README's recipe table is this script's output
(tests/train/test_config.py checks that it stays so).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import warnings


@contextlib.contextmanager
def _quiet_import():
    """Megatron-Core says at import what it lacks (Apex, Transformer Engine, absl) and torch's cpp_extension, which
    it imports, that there is no CUDA runtime: notes for a training run, noise above a table. Silenced inside this
    block only, not for the process (a test importing this module keeps its warnings); OCTOMEGA_WARNINGS=1 shows
    them, as for the octomega command."""
    if os.environ.get("OCTOMEGA_WARNINGS") == "1":
        yield
        return
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\.")
            yield
    finally:
        torch_log.setLevel(level)


with _quiet_import():
    from octomega.train.flops import PEAK_FLOPS, flops_per_batch
    from octomega.train.schedule import budget

MEASURED_MFU = 0.342  # Megatron-Core + TE bf16, Llama-3.2-1B shape, seq 4096, one H100 (docs/te_on_device.md)
PEAK = PEAK_FLOPS["H100"]
SIZES = ("llama32_1b", "llama32_3b", "llama31_8b")
STAGES = ("stable", "decay_long", "decay_short", "decay_hybrid")


def estimate(name: str, mfu: float = MEASURED_MFU) -> dict:
    import recipes

    cfg = recipes.get(name)
    b = budget(cfg)  # the trainer's own rounding up to whole steps
    flops = flops_per_batch(cfg.model, cfg.train.seq_length, cfg.train.global_batch_size) * b.steps
    return {"recipe": name, "tokens": b.tokens, "steps": b.steps, "tokens_per_step": b.tokens_per_step,
            "lr": cfg.optim.lr, "layout": f"TP{cfg.parallel.tp} PP{cfg.parallel.pp}"
            + (" SP" if cfg.parallel.sequence_parallel else "") + (" dist-opt" if cfg.parallel.distributed_optimizer
                                                                    else "")
            + ("" if cfg.model.recompute == "none" else f", recompute {cfg.model.recompute}"),
            "flops": flops, "gpu_hours": flops / (mfu * PEAK) / 3600}


def table(mfu: float = MEASURED_MFU, gpus: int = 64) -> str:
    lines = [f"| recipe | tokens | steps x tokens/step | layout | GPU-hours at {100 * mfu:.1f}% MFU | days on {gpus} H100 |",
             "|---|---:|---:|---|---:|---:|"]
    for size in SIZES:
        for stage in STAGES:
            e = estimate(f"{size}_{stage}", mfu)
            lines.append(f"| `{e['recipe']}` | {e['tokens'] / 1e9:,.1f}B | {e['steps']:,} x {e['tokens_per_step']:,} | "
                         f"{e['layout']} | {e['gpu_hours']:,.0f} | {e['gpu_hours'] / gpus / 24:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipes.estimate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mfu", type=float, default=MEASURED_MFU, help="model FLOPs utilisation (default: %(default)s, "
                                                                   "measured: see the module docstring)")
    p.add_argument("--gpus", type=int, default=64, help="GPUs of the wall-clock column (default 64 = 8 nodes x 8)")
    args = p.parse_args(argv)
    if not 0 < args.mfu <= 1:
        p.error("--mfu is a fraction in (0, 1]")
    with _quiet_import():  # flops_per_batch imports Megatron's FLOP formula (megatron.training) on first use
        text = table(args.mfu, args.gpus)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
