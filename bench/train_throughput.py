"""Training throughput on ONE GPU: octomega's real training step against transformers' LlamaForCausalLM (issue 8).

    # the GPU measurement (bench/NOTES.md has the device-machine command, with Megatron-Core carried as a wheel)
    .venv/bin/python bench/train_throughput.py --shape 1b
    .venv/bin/python bench/train_throughput.py --shape 3b --recompute selective
    # the CPU smoke run (checks the plumbing only; the numbers mean nothing)
    .venv/bin/python bench/train_throughput.py --device cpu --shape tiny --seq 128 --global-batch 4 --steps 2 --warmup 1

Implementations (--impl, repeatable; default all three), each in its own subprocess so that one cannot disturb the
next (allocator state, compile caches, CUDA context), on the same shape and the same random tokens:
  octomega         octomega.train.loop.Trainer.train_step: the run's own data path (a random-token .bin/.idx corpus
                   and blend file written here -> GPTDataset -> DataLoader), Megatron DDP with fp32 gradient
                   buffers, Megatron's optimizer (bf16 params, fp32 master weights, Adam) and scheduler.
  hf_sdpa          transformers LlamaForCausalLM, attn_implementation="sdpa", random init (no download), bf16
                   params with fp32 master copies: gradients are accumulated into fp32 buffers by a post-accumulate
                   hook per parameter (as Megatron DDP's main_grad), clipped to norm 1.0, AdamW (fused on CUDA) steps
                   the fp32 copies, which are copied back to bf16. This is octomega's scheme; torch.autocast with
                   fp32 params would instead keep fp32 activations outside matmuls and recast weights every
                   micro-batch. Loss: HF's own (fp32 logits, sum / tokens of the global batch).
  hf_sdpa_compile  the same model under torch.compile.
  octomega[...]    with --octomega-set KEY=VALUE[,KEY=VALUE...] (repeatable): octomega again with those RunConfig
                   overrides, e.g. --octomega-set model.cross_entropy=chunked --octomega-set train.micro_batch_size=2,
                   each variant in its own process, right after the plain octomega run, so that one device call
                   measures every change of bench/NOTES.md side by side with the same transformers references.
Every optimizer step sees --global-batch sequences of --seq tokens (8 x 4096 by default) as --global-batch /
--micro-batch micro-batches, so the optimizer step is amortised as in a real run.

Per implementation: --warmup steps (not timed: compilation, lazy optimizer state), then --steps steps, each timed
between torch.cuda.synchronize calls. Reported: tokens/s, TFLOP/s per GPU and MFU by Megatron's FLOP formula
(octomega.train.flops.flops_per_batch, causal attention halved) against the GPU's dense bf16 peak
(octomega.train.flops.PEAK_FLOPS, 989.4e12 for H100), peak memory (torch.cuda.max_memory_allocated over the timed
steps), parameter count (must agree across implementations), first/last loss (~ln(vocab) on random tokens).
One JSON file under bench/results/ (or --out) holds every implementation's record, the versions, the GPU, the
exact command line and octomega's tokens/s divided by the best transformers variant's; it is rewritten after each
implementation, so a run killed midway keeps what it measured. A failing implementation (out of memory, say) is
recorded with its error and the end of its output, the others still run, and the exit code is 1.
On --device cpu everything is fp32 with one thread per worker and hf_sdpa_compile uses the aot_eager backend.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPLS = ("octomega", "hf_sdpa", "hf_sdpa_compile")
LR = 3e-5  # the 3B recipe's peak LR (recipes/paper.py); constant: the stable stage has no warm-up
CLIP_GRAD = 1.0  # global L2 norm, as the recipes
WEIGHT_DECAY = 0.1  # on >= 2-D weights only (Megatron's default param groups)
SEED = 1234
GIB = 1024 ** 3


def model_for(shape: str):
    """ModelConfig of a shape: the paper recipes' Llama-3.2 1B/3B, or a ~1.7M-parameter Llama for the CPU run."""
    from octomega.config import ModelConfig
    from recipes.paper import llama_model

    if shape == "tiny":  # 2 layers, hidden 256, GQA 4/2, vocab 2,048 (tied): 1.7M params, 7 MB in fp32
        return ModelConfig(name="bench_tiny", num_layers=2, hidden_size=256, ffn_hidden_size=512,
                           num_attention_heads=4, num_query_groups=2, head_dim=64, vocab_size=2048,
                           max_position_embeddings=8192, rope_theta=500000.0, tie_embeddings=True)
    return llama_model(shape)


# --------------------------------------------------------------------------------------------------- the plan


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=("tiny", "1b", "3b"), default="1b",
                   help="model shape: Llama-3.2 1B/3B (recipes/paper.py) or tiny (1.7M params, CPU smoke run)")
    p.add_argument("--seq", type=int, default=4096, help="tokens per sequence (default 4096)")
    p.add_argument("--global-batch", type=int, default=8,
                   help="sequences per optimizer step, by gradient accumulation (default 8: 8 x 4096 tokens)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward (default 1)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per implementation (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (default 3)")
    p.add_argument("--impl", action="append", choices=IMPLS,
                   help="implementation to run; repeatable (default: all three, in this order: "
                        + ", ".join(IMPLS) + ")")
    p.add_argument("--octomega-set", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE...]",
                   help="run octomega once more with these RunConfig overrides (repeatable: one variant each), e.g. "
                        "model.cross_entropy=chunked or model.cross_entropy=native,model.ce_chunk_tokens=2048")
    p.add_argument("--recompute", choices=("none", "selective", "full"), default="none",
                   help="activation recomputation. octomega: Megatron's (selective = core attention; full = every "
                        "layer). transformers: full = gradient checkpointing per layer; it has no selective mode, so "
                        "selective leaves it without recomputation (recorded). Use it when the 3B does not fit: on "
                        "one GPU the distributed optimizer has no other rank to shard Adam state onto")
    p.add_argument("--layer-spec", choices=("auto", "te", "local"), default="auto",
                   help="octomega's layer spec (default auto: Transformer Engine when importable, else local + SDPA)")
    p.add_argument("--fp8", action="store_true",
                   help="octomega only: FP8 hybrid (e4m3 forward, e5m2 gradients) through Transformer Engine; "
                        "refused when transformer_engine is not importable")
    p.add_argument("--fp8-recipe", choices=("delayed", "tensorwise", "blockwise"), default="delayed",
                   help="FP8 scaling recipe with --fp8 (default delayed: the faster one in docs/te_on_device.md)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (one GPU, bf16) or cpu (fp32, one thread per worker: the smoke test only; MFU null)")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend of hf_sdpa_compile (default inductor on cuda; aot_eager on cpu, where "
                        "inductor's C++ build of forward + backward alone takes minutes on 2 cores)")
    p.add_argument("--timeout-s", type=int, default=900, help="wall-clock limit per implementation (default 900 s)")
    p.add_argument("--out", help="output JSON "
                   "(default bench/results/train_throughput_<shape>_seq<seq>_<device>_<time>.json)")
    p.add_argument("--profile", action="store_true",
                   help="after the timed steps, run one more step of each implementation under torch.profiler and "
                        "record where its time goes: kernels grouped by kind (matmul, attention, cross entropy, "
                        "norm/elementwise, optimizer, copies) and the 30 costliest (not timed: the profiler slows it)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit (no data, no GPU)")
    p.add_argument("--keep-work-dir", action="store_true", help="keep the temp dir (corpus, blend, per-impl logs)")
    # Internal: the parent runs each implementation as `--worker IMPL --plan FILE --result FILE`.
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args, p
    for name in ("seq", "global_batch", "micro_batch", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.global_batch % args.micro_batch:
        p.error(f"--global-batch {args.global_batch} is not a multiple of --micro-batch {args.micro_batch}")
    args.impl = list(dict.fromkeys(args.impl or IMPLS))
    if args.octomega_set and "octomega" not in args.impl:
        p.error("--octomega-set runs octomega variants: keep octomega among --impl")
    for spec in args.octomega_set:
        try:
            check_overrides(spec.split(","))
        except Exception as e:  # ConfigError, or a value of the wrong type
            p.error(f"--octomega-set {spec}: {e}")
    if args.fp8:
        if "octomega" not in args.impl:
            p.error("--fp8 applies to the octomega implementation only: add --impl octomega or drop --fp8")
        if importlib.util.find_spec("transformer_engine") is None:
            p.error("--fp8 needs Transformer Engine, and transformer_engine is not importable by "
                    f"{sys.executable}. Install it (pip install octomega[gpu]; on the GPU machine see "
                    "docs/te_on_device.md) or drop --fp8.")
        if args.device != "cuda":
            p.error("--fp8 needs --device cuda (a Hopper-or-newer GPU)")
        if args.layer_spec == "local":
            p.error("--fp8 needs the Transformer Engine layer spec: use --layer-spec te or auto")
    return args, p


def file_slug(name: str) -> str:
    """A run's name ("octomega[model.cross_entropy=chunked]") as a file name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def check_overrides(overrides: list[str]) -> None:
    """Apply octomega variant overrides to a throwaway RunConfig: a wrong key or value fails before any run."""
    from octomega.config import RunConfig, apply_overrides

    apply_overrides(RunConfig(name="check"), overrides)


def run_order(impls: list[str], octomega_sets: list[str]) -> list[dict]:
    """[{name, impl, overrides}] in run order: octomega, its variants, then the transformers references."""
    out = []
    for impl in impls:
        out.append({"name": impl, "impl": impl, "overrides": []})
        if impl == "octomega":
            out += [{"name": f"octomega[{spec}]", "impl": "octomega", "overrides": spec.split(",")}
                    for spec in octomega_sets]
    return out


def resolve_plan(args) -> dict:
    """Everything a worker needs, as plain JSON (written to a file each worker reads)."""
    from octomega.config import to_dict
    from octomega.model.llama import padded_vocab_size
    from octomega.train.flops import flops_per_batch

    model = model_for(args.shape)
    if args.seq > model.max_position_embeddings:
        raise SystemExit(f"--seq {args.seq} exceeds the {args.shape} shape's {model.max_position_embeddings} positions")
    tokens_per_step = args.global_batch * args.seq
    return {
        "shape": args.shape, "model": to_dict(model), "padded_vocab_size": padded_vocab_size(model, 1),
        "seq_length": args.seq, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "micro_batches_per_step": args.global_batch // args.micro_batch, "tokens_per_step": tokens_per_step,
        "steps": args.steps, "warmup": args.warmup, "impls": args.impl, "runs": run_order(args.impl, args.octomega_set),
        "recompute": args.recompute,
        "layer_spec": args.layer_spec, "fp8": {"format": "hybrid", "recipe": args.fp8_recipe} if args.fp8 else None,
        "device": args.device, "precision": "bf16" if args.device == "cuda" else "fp32",
        "data_workers": 2 if args.device == "cuda" else 0,  # the paper recipe's 2 DataLoader workers on a GPU
        "compile_backend": args.compile_backend or ("inductor" if args.device == "cuda" else "aot_eager"),
        "lr": LR, "clip_grad": CLIP_GRAD, "weight_decay": WEIGHT_DECAY, "seed": SEED,
        # Megatron's formula: 3 (fwd + bwd) x 2 (FMA) x tokens x (layers x (QKV/out + causal-halved attention +
        # SwiGLU) + logits); for the 1B at seq 4096: 8 x 4096 tokens x 8.22 GFLOP/token = 0.27 PFLOP per step.
        "flops_per_step": flops_per_batch(model, args.seq, args.global_batch),
        "timeout_s": args.timeout_s, "profile": args.profile,
    }


# ------------------------------------------------------------------------------------------ data: random tokens


def total_steps(plan: dict) -> int:
    """Optimizer steps of one implementation: warm-up, timed, and the profiled one."""
    return plan["warmup"] + plan["steps"] + (1 if plan.get("profile") else 0)


def write_random_corpus(work_dir: Path, plan: dict) -> dict:
    """A Megatron .bin/.idx corpus of random tokens (documents of seq/2 .. 2 seq tokens, each ending in the EOD id
    vocab-1) and a blend file naming it. Sized for every step of the run plus one spare sequence."""
    import numpy as np

    from data_prep.megatron_io import PrefixWriter
    from data_prep.mix import BLEND_FORMAT

    seq, vocab = plan["seq_length"], plan["model"]["vocab_size"]
    need = (total_steps(plan) + 1) * plan["global_batch"] * (seq + 1)
    rng = np.random.default_rng(plan["seed"])
    lengths = []
    while sum(lengths) < need:
        lengths.append(int(rng.integers(max(seq // 2, 2), 2 * seq + 1)))
    tokens = rng.integers(0, vocab - 1, size=sum(lengths), dtype=np.int32)  # ids 0 .. vocab-2
    tokens[np.cumsum(lengths) - 1] = vocab - 1  # EOD: what octomega takes as EOD without a tokenizer (vocab - 1)
    prefix = work_dir / "corpus" / "random"
    writer = PrefixWriter(prefix, "int32")  # int32: a 128k vocabulary does not fit uint16
    writer.append(tokens, np.asarray(lengths))
    writer.close()
    blend = {"format": BLEND_FORMAT, "stage": "bench", "dtype": "int32", "tokenizer_fingerprint": "random-tokens",
             "tokenizer": None, "vocab_size": vocab, "valid": [],
             "corpora": [{"name": "random", "role": "bench", "prefix": str(prefix), "weight": 1.0,
                          "tokens": int(tokens.size), "documents": len(lengths)}]}
    blend_path = work_dir / "blend.json"
    blend_path.write_text(json.dumps(blend, indent=1))
    return {"prefix": str(prefix), "blend": str(blend_path), "tokens": int(tokens.size), "documents": len(lengths)}


# ------------------------------------------------------------------------------------------------- timing


def time_steps(step, plan: dict, device, name: str) -> dict:
    """Run plan["warmup"] untimed and plan["steps"] timed optimizer steps; `step()` returns the step's loss."""
    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    losses, times = [], []
    t0 = time.perf_counter()
    for i in range(plan["warmup"]):
        losses.append(step())
        print(f"[{name}] warm-up step {i + 1}/{plan['warmup']} loss {losses[-1]:.4f}", flush=True)
    sync()
    warmup_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(plan["steps"]):
        sync()
        t0 = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - t0)
        print(f"[{name}] step {i + 1}/{plan['steps']} loss {losses[-1]:.4f} {times[-1]:.3f} s "
              f"{plan['tokens_per_step'] / times[-1]:,.0f} tok/s", flush=True)
    out = {"warmup_s": warmup_s, "step_times_s": times, "losses": losses,
           "peak_memory_gib": torch.cuda.max_memory_allocated() / GIB if cuda else None}
    if plan.get("profile"):
        out["profile"] = profile_step(step, cuda)
        print(f"[{name}] profile: " + ", ".join(f"{k} {v:.0%}" for k, v in out["profile"]["share"].items()),
              flush=True)
    return out


# Kernel (or, on CPU, operator) name fragments, lower case, by kind; the first kind that matches wins.
KINDS = (
    ("attention", ("flash", "fmha", "attention", "attn", "sdpa", "cudnn")),
    ("cross_entropy", ("cross_entropy", "crossentropy", "nll_loss", "log_softmax", "logsumexp", "softmax")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "l2norm", "clip")),
    ("matmul", ("gemm", "matmul", "mm", "cutlass", "xmma", "nvjet", "cublas", "linear", "addmm", "bmm")),
    ("copy_cast", ("copy", "memcpy", "memset", "cast", "to_copy", "fill", "zero")),
    ("norm", ("rms", "norm")),
    ("communication", ("nccl", "gloo", "all_reduce", "allreduce")),
)


def profile_step(step, cuda: bool) -> dict:
    """One more step under torch.profiler: self time of device kernels (CPU operators without a GPU) by kind,
    and the 30 costliest by self time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = e.self_device_time_total if cuda else e.self_cpu_time_total
        if t > 0 and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA):
            rows.append((e.key, t / 1e3, e.count))
    total = sum(t for _, t, _ in rows) or 1.0
    by_kind: dict[str, float] = {}
    for key, t, _ in rows:
        low = key.lower()
        kind = next((k for k, frags in KINDS if any(f in low for f in frags)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + t
    rows.sort(key=lambda r: -r[1])
    by_kind = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return {"what": "self CUDA kernel time" if cuda else "self CPU operator time", "total_ms": total,
            "ms_by_kind": by_kind, "share": {k: v / total for k, v in by_kind.items()},
            "top": [{"name": k[:160], "ms": t, "calls": c} for k, t, c in rows[:30]]}


# ------------------------------------------------------------------------------------------ implementations


def octomega_config(plan: dict, work_dir: Path, overrides: list[str] = ()):
    """The RunConfig of the octomega run: the plan's shape and batch, one GPU, no checkpoints, no wandb; then a
    variant's overrides."""
    from octomega.config import ModelConfig, RunConfig, apply_overrides, from_dict

    cfg = RunConfig(name=f"bench_{plan['shape']}", run_dir=str(work_dir / "octomega_run"),
                    model=from_dict(ModelConfig, plan["model"]))
    cfg.model.recompute, cfg.model.layer_spec = plan["recompute"], plan["layer_spec"]
    if plan["fp8"]:
        cfg.model.fp8, cfg.model.fp8_recipe = plan["fp8"]["format"], plan["fp8"]["recipe"]
    cfg.parallel.distributed_optimizer = False  # one rank: nothing to shard
    cfg.optim.lr, cfg.optim.warmup_tokens = plan["lr"], 0
    cfg.optim.weight_decay, cfg.optim.clip_grad = plan["weight_decay"], plan["clip_grad"]
    cfg.train.stage = "stable"
    cfg.train.train_tokens = total_steps(plan) * plan["tokens_per_step"]
    cfg.train.seq_length, cfg.train.global_batch_size = plan["seq_length"], plan["global_batch"]
    cfg.train.micro_batch_size, cfg.train.precision = plan["micro_batch"], plan["precision"]
    cfg.train.seed = plan["seed"]
    cfg.train.valid_interval = 0  # the blend has no valid sets: nothing is validated
    cfg.data.blend, cfg.data.tokenizer = plan["corpus"]["blend"], None  # no tokenizer: EOD = vocab - 1
    cfg.data.num_workers = plan["data_workers"]
    cfg.checkpoint.save_interval, cfg.checkpoint.resume = 0, False
    cfg.logging.wandb, cfg.logging.log_interval = False, 1
    return apply_overrides(cfg, list(overrides))


def run_octomega(plan: dict, work_dir: Path, run: dict) -> dict:
    from octomega.train.flops import theoretical_memory_gb
    from octomega.train.loop import Trainer

    # train_step is what Trainer.train() runs each step
    trainer = Trainer(octomega_config(plan, work_dir / file_slug(run["name"]), run["overrides"]))
    data, n_micro = trainer.data_iterator(0), trainer.micro_batches_per_step
    record = time_steps(lambda: trainer.train_step(data, n_micro)[0], plan, trainer.rt.device, run["name"])
    gpt, m = trainer.model.module, trainer.cfg.model  # the run's settings, a variant's overrides included
    record.update(
        overrides=run["overrides"], cross_entropy=m.cross_entropy, micro_batch=trainer.cfg.train.micro_batch_size,
        params=sum(p.numel() for p in gpt.parameters()), layer_spec=gpt.octomega_layer_spec,
        recompute=m.recompute, fp8={"format": m.fp8, "recipe": m.fp8_recipe} if m.fp8 != "none" else None, precision=f"{plan['precision']} params, fp32 master weights "
        "and gradient buffers (Megatron Float16OptimizerWithFloat16Params)",
        megatron_theoretical_memory_gib=theoretical_memory_gb(trainer.cfg, n_micro))
    return record


class RandomWindows:
    """Micro-batches of the same random corpus, read straight from its .bin: consecutive seq+1 token windows
    (inputs = window[:-1], labels = window[1:]), as GPTDataset cuts them."""

    def __init__(self, prefix: str, seq: int, micro_batch: int, device):
        import numpy as np

        self.tokens = np.memmap(prefix + ".bin", dtype=np.int32, mode="r")
        self.seq, self.mbs, self.device, self.next = seq, micro_batch, device, 0
        self.windows = (self.tokens.size - 1) // seq

    def __next__(self):
        import numpy as np
        import torch

        rows = []
        for _ in range(self.mbs):
            start = (self.next % self.windows) * self.seq
            rows.append(np.asarray(self.tokens[start:start + self.seq + 1], dtype=np.int64))
            self.next += 1
        batch = torch.from_numpy(np.stack(rows))
        # contiguous: with more than one row, a column slice is not viewable as 1-D (transformers' loss views the
        # labels), and a same-device .to() (CPU) keeps the slice's strides
        return tuple(t.contiguous().to(self.device, non_blocking=True) for t in (batch[:, :-1], batch[:, 1:]))


def _accumulate_fp32(main_grad, param) -> None:
    """Post-accumulate hook: add the bf16 gradient into the fp32 buffer and free it (Megatron DDP's main_grad)."""
    main_grad.add_(param.grad)
    param.grad = None


def run_hf(plan: dict, work_dir: Path, compile_model: bool) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from octomega.config import ModelConfig, from_dict
    from octomega.convert.hf_io import hf_config_dict

    device = torch.device("cuda" if plan["device"] == "cuda" else "cpu")
    dtype = torch.bfloat16 if plan["precision"] == "bf16" else torch.float32
    if device.type == "cuda":
        torch.cuda.set_device(0)
    torch.manual_seed(plan["seed"])
    conf = LlamaConfig.from_dict({**hf_config_dict(from_dict(ModelConfig, plan["model"]), dtype), "use_cache": False})
    with torch.device(device):
        model = LlamaForCausalLM._from_config(conf, attn_implementation="sdpa", dtype=dtype)
    model.train()
    recompute = "full (gradient checkpointing per layer)" if plan["recompute"] == "full" else "none"
    if plan["recompute"] == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() lists a tied weight once
    master = [p.detach().float().clone() for p in params]  # fp32 master weights (a copy even when params are fp32)
    for p, m in zip(params, master):
        m.grad = torch.zeros_like(m)  # fp32 gradient buffer, filled by the hook across micro-batches
        p.register_post_accumulate_grad_hook(partial(_accumulate_fp32, m.grad))
    groups = [{"params": [m for m in master if m.ndim >= 2], "weight_decay": plan["weight_decay"]},
              {"params": [m for m in master if m.ndim < 2], "weight_decay": 0.0}]  # norms: no decay, as Megatron
    opt = torch.optim.AdamW(groups, lr=plan["lr"], betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    fwd = torch.compile(model, backend=plan["compile_backend"]) if compile_model else model
    data = RandomWindows(plan["corpus"]["prefix"], plan["seq_length"], plan["micro_batch"], device)
    n_micro, total_tokens = plan["micro_batches_per_step"], plan["tokens_per_step"]

    def step() -> float:
        loss_sum = torch.zeros((), device=device)
        for _ in range(n_micro):
            inputs, labels = next(data)
            # labels are already shifted (window[1:]); num_items_in_batch: sum / global-batch tokens, like
            # octomega's per-token loss, so gradients do not depend on the micro-batch split.
            loss = fwd(input_ids=inputs, labels=labels, shift_labels=labels, num_items_in_batch=total_tokens).loss
            loss.backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(master, plan["clip_grad"], foreach=True)
        opt.step()
        with torch.no_grad():
            torch._foreach_copy_(params, master)  # fp32 master -> bf16 model weights
            torch._foreach_zero_([m.grad for m in master])
        return float(loss_sum)  # the loss is logged every step: one host sync, as octomega's

    name = "hf_sdpa_compile" if compile_model else "hf_sdpa"
    record = time_steps(step, plan, device, name)
    record.update(params=sum(p.numel() for p in params), attn_implementation=model.config._attn_implementation,
                  compiled=plan["compile_backend"] if compile_model else False, recompute=recompute,
                  precision=f"{plan['precision']} params, fp32 master weights and gradient buffers, AdamW "
                            f"{'fused' if device.type == 'cuda' else 'foreach'}")
    return record


def worker(args) -> int:
    """One implementation in this process; the record (or the error) goes to --result."""
    plan = json.loads(Path(args.plan).read_text())
    work_dir = Path(args.plan).parent
    run = next(r for r in plan["runs"] if r["name"] == (args.variant or args.worker))
    record: dict = {"impl": args.worker, "name": run["name"]}
    rc = 0
    try:
        import torch

        if plan["device"] == "cpu":
            torch.set_num_threads(1)  # a shared 2-core machine: more threads only spin against each other
        if plan["device"] == "cuda":
            from octomega.train.flops import detect_peak_flops

            record.update(gpu=torch.cuda.get_device_name(0), peak_flops=detect_peak_flops())
        if args.worker == "octomega":
            record.update(run_octomega(plan, work_dir, run))
        else:
            record.update(run_hf(plan, work_dir, compile_model=args.worker == "hf_sdpa_compile"))
        record["status"] = "ok"
    except BaseException as e:  # out of memory included: the parent records it and runs the next implementation
        record.update(status="error", error=f"{type(e).__name__}: {e}"[:2000], traceback=traceback.format_exc()[-4000:])
        try:
            import torch

            if torch.cuda.is_available() and plan["device"] == "cuda":
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / GIB
        except Exception:
            pass
        rc = 1
    Path(args.result).write_text(json.dumps(record, indent=1))
    return rc


# ---------------------------------------------------------------------------------------------------- parent


def run_impl(run: dict, plan: dict, plan_path: Path, work_dir: Path) -> dict:
    """Run one implementation (or octomega variant) in a fresh Python; its console output is shown as it comes and
    kept in a log."""
    impl, name = run["impl"], run["name"]
    slug = file_slug(name)
    result = work_dir / f"{slug}.result.json"
    env = dict(os.environ)
    if plan["device"] == "cpu":
        env["OCTOMEGA_DEVICE"] = "cpu"  # octomega's runtime would otherwise pick a GPU when one exists
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--variant", name, "--plan",
           str(plan_path), "--result", str(result)]
    tail: deque[str] = deque(maxlen=40)
    t0 = time.perf_counter()
    with open(work_dir / f"{slug}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        timer = threading.Timer(plan["timeout_s"], proc.kill)  # a hung worker prints nothing: kill it by the clock
        timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                if line.startswith(f"[{name}]"):
                    print(line, end="", flush=True)
            proc.wait()
        finally:
            timer.cancel()
    wall = time.perf_counter() - t0
    if result.exists():
        record = json.loads(result.read_text())
    else:
        timed_out = wall >= plan["timeout_s"]
        record = {"impl": impl, "name": name, "status": "error",
                  "error": f"timed out after {plan['timeout_s']} s (--timeout-s)" if timed_out else
                  f"worker exited with code {proc.returncode} without a result (killed? see output_tail)"}
    record["wall_s"] = wall
    record["returncode"] = proc.returncode
    if record["status"] != "ok":
        record["output_tail"] = list(tail)
        print(f"[{name}] FAILED: {record['error']}", flush=True)
    return record


def summarise(record: dict, plan: dict) -> dict:
    """Tokens/s, TFLOP/s per GPU and MFU over the timed steps."""
    if record.get("status") != "ok":
        return record
    times = record["step_times_s"]
    seconds = sum(times)
    tokens_per_s = plan["tokens_per_step"] * len(times) / seconds
    tflops = plan["flops_per_step"] * len(times) / seconds / 1e12  # one GPU: per GPU
    peak = record.get("peak_flops")
    record.update(tokens_per_s=tokens_per_s, tflops_per_gpu=tflops, mfu=tflops * 1e12 / peak if peak else None,
                  median_step_s=sorted(times)[len(times) // 2], first_loss=record["losses"][0],
                  last_loss=record["losses"][-1])
    return record


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "megatron-core", "transformer-engine", "transformer-engine-torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def default_out(plan: dict) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"train_throughput_{plan['shape']}_seq{plan['seq_length']}_{plan['device']}_{stamp}.json"
    return ROOT / "bench" / "results" / name


def build_report(plan: dict, results: dict, command: str) -> dict:
    """The JSON of the run: plan, versions, every implementation's record, octomega / best transformers."""
    hf_ok = {k: v["tokens_per_s"] for k, v in results.items()
             if not k.startswith("octomega") and v.get("status") == "ok"}
    best_hf = max(hf_ok, key=hf_ok.get) if hf_ok else None
    ours = {k: v["tokens_per_s"] for k, v in results.items() if k.startswith("octomega") and v.get("status") == "ok"}
    ratios = {k: t / hf_ok[best_hf] for k, t in ours.items()} if best_hf else {}
    params = {k: v["params"] for k, v in results.items() if v.get("params")}
    gpus = sorted({v["gpu"] for v in results.values() if v.get("gpu")})
    return {
        "bench": "train_throughput", "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command, "gpu": gpus[0] if len(gpus) == 1 else gpus or None,
        "versions": versions(), "env": {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF",
                                                                        "CUDA_DEVICE_MAX_CONNECTIONS")},
        "plan": {k: v for k, v in plan.items() if k not in ("corpus", "timeout_s")} | {"corpus": {
            k: plan["corpus"][k] for k in ("tokens", "documents")}},
        "complete": list(results) == [r["name"] for r in plan["runs"]], "param_counts": params,
        "same_param_count": len(set(params.values())) <= 1, "results": results,
        "best_hf": best_hf, "octomega_over_best_hf_tokens_per_s": ratios.get("octomega"),
        "best_octomega": max(ours, key=ours.get) if ours else None, "octomega_runs_over_best_hf_tokens_per_s": ratios,
    }


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    if args.worker:
        return worker(args)
    plan = resolve_plan(args)
    # Relative to the repository root, as a reader reruns it (results carry no path of the machine that made them).
    command = shlex.join(["python", "bench/train_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    if args.recompute != "none":
        print(f"recompute={args.recompute}: used because one GPU has no data-parallel peers for the distributed "
              "optimizer to shard the fp32 master weights and Adam moments onto (12 of the ~18 bytes/param); "
              + ("transformers uses gradient checkpointing (full)." if args.recompute == "full" else
                 "transformers has no selective mode and runs without recomputation."), flush=True)
    if args.dry_run:
        print(json.dumps({"command": command, "plan": plan, "versions": versions()}, indent=2))
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but torch sees no CUDA GPU; use --device cpu for the smoke run")
    out = Path(args.out) if args.out else default_out(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="octomega_train_bench_"))
    results: dict = {}
    try:
        plan["corpus"] = write_random_corpus(work, plan)
        plan_path = work / "plan.json"
        plan_path.write_text(json.dumps(plan, indent=1))
        for run in plan["runs"]:
            print(f"== {run['name']}: {plan['shape']} seq {plan['seq_length']} x {plan['global_batch']} sequences/step, "
                  f"{plan['warmup']} warm-up + {plan['steps']} timed steps on {plan['device']}", flush=True)
            results[run["name"]] = summarise(run_impl(run, plan, plan_path, work), plan)
            report = build_report(plan, results, command)
            out.write_text(json.dumps(report, indent=1) + "\n")  # after each one: a killed run keeps what it measured
    finally:
        if args.keep_work_dir:
            print(f"work dir kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print("\n| implementation | tokens/s | TFLOP/s/GPU | MFU | peak memory GiB | status |")
    print("|---|---:|---:|---:|---:|---|")
    for impl, r in results.items():
        ok = r.get("status") == "ok"
        cell = (lambda k, f: f.format(r[k]) if ok and r.get(k) is not None else "-")
        print(f"| {impl} | {cell('tokens_per_s', '{:,.0f}')} | {cell('tflops_per_gpu', '{:.1f}')} | "
              f"{cell('mfu', '{:.1%}')} | {cell('peak_memory_gib', '{:.1f}')} | {r.get('status')} |")
    for name, ratio in report["octomega_runs_over_best_hf_tokens_per_s"].items():
        print(f"{name} / {report['best_hf']} tokens/s: {ratio:.3f}")
    if not report["same_param_count"]:
        print(f"WARNING: parameter counts differ across implementations: {report['param_counts']}")
    print(f"wrote {out}")
    return 0 if all(r.get("status") == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
