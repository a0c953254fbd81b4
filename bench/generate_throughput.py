"""Output tokens/s of the generation backends on the same prompts and settings, in one run.

    .venv/bin/python bench/generate_throughput.py                      # the tiny pipeline's shape on CPU, 3 backends
    .venv/bin/python bench/generate_throughput.py --model runs/convert/hf --device cuda --batch-size 64 \
        --prompt-tokens 128 --new-tokens 512 --num-prompts 256       # docs/architecture.md's GPU setting

Every backend gets the same prompts (same token counts), greedy decoding, a fixed number of new tokens (stop
tokens replaced by the id -1, which is never sampled, so that every row generates exactly --new-tokens;
random tiny models emit EOS often) and the same batch size: no backend
generates one prompt at a time (vLLM schedules its own batches: --batch-size caps its concurrent sequences,
max_num_seqs). Columns are backends; one row per batch size. Besides the steady tokens/s (best of --repeats after a
warm-up), each backend's time to first batch is recorded: building the generator (loading the model; vLLM's engine
start-up) plus generating the first batch-size prompts, cold. A backend that is not available (vllm without vLLM)
is reported as such instead of failing the run. Add a backend by adding a builder to BUILDERS.

The default model is a random Llama of the tiny pipeline's shape (recipes/tiny.py: 4 layers, hidden 128, 4 query /
2 key-value heads, head_dim 32, SwiGLU 512) and the default sizes are the tiny RL stage's (recipes/rl.py: 16 prompts
x 8 samples = 128 sequences per step, up to 256 new tokens).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from octomega.generate import SamplingParams, get_generator  # noqa: E402
from octomega.generate.registry import backend_class  # noqa: E402


NO_STOP = [-1]  # a token id no model samples: every row runs to --new-tokens


def build_hf(model: str, args):
    return get_generator("hf", model, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                         stop_token_ids=NO_STOP)


def build_megatron(model: str, args):
    # The megatron backend takes a checkpoint path or an HF directory (its module documents which); it must
    # generate the same greedy tokens as transformers on the same weights, so the same HF dir is passed here.
    kw = {"batch_size": args.batch_size, "stop_token_ids": NO_STOP, "dtype": args.dtype}
    return get_generator("megatron", model, **{k: v for k, v in kw.items() if v is not None})


def build_vllm(model: str, args):
    # vLLM refuses the id -1; no stop ids at all makes it ignore EOS too (vllm_sampling_kwargs)
    kw = {"tensor_parallel_size": args.tensor_parallel_size, "stop_token_ids": [], "max_num_seqs": args.batch_size,
          "dtype": args.dtype or ("float32" if (args.device or "cpu") == "cpu" else "auto")}
    return get_generator("vllm", model, **kw)


BUILDERS: dict[str, Callable] = {"hf": build_hf, "megatron": build_megatron, "vllm": build_vllm}


def make_prompts(tokenizer, n: int, prompt_tokens: int) -> list[str]:
    """n distinct prompts of about prompt_tokens tokens each (numbered arithmetic text)."""
    prompts = []
    for i in range(n):
        words, text = [], ""
        k = 0
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < prompt_tokens:
            words.append(f"{(i * 7 + k) % 97} plus {k % 13} is {((i * 7 + k) % 97) + k % 13}.")
            text = f"Question {i}: " + " ".join(words)
            k += 1
        prompts.append(text)
    return prompts


def measure(gen, prompts: list[str], new_tokens: int, repeats: int, batch_size: int, built_s: float) -> dict:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    t0 = time.perf_counter()
    gen.generate(prompts[:batch_size], params)  # cold: the first batch a run waits for
    first = built_s + time.perf_counter() - t0
    gen.generate(prompts[: min(2, len(prompts))], SamplingParams(max_new_tokens=4))  # warm-up
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = gen.generate(prompts, params)
        dt = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for o in outs for c in o)
        if best is None or tokens / dt > best["tokens_per_s"]:
            best = {"tokens_per_s": tokens / dt, "seconds": dt, "output_tokens": tokens}
    return {**best, "build_s": built_s, "first_batch_s": first}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF model directory (default: build a tiny random Llama in a temp dir)")
    p.add_argument("--backends", default="hf,megatron,vllm", help="comma-separated, from: " + ",".join(BUILDERS))
    p.add_argument("--num-prompts", type=int, default=128, help="default: the tiny RL stage's 16 prompts x 8 samples")
    p.add_argument("--prompt-tokens", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=256, help="default: the tiny RL stage's response cap")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64, 128], help="one row per batch size")
    p.add_argument("--repeats", type=int, default=2, help="best of N timed runs")
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--hidden", type=int, default=128, help="random model width when --model is not given")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    model = args.model
    if model is None:
        from octomega.generate.tiny import build_tiny_llama

        tmp = tempfile.TemporaryDirectory()
        model = str(build_tiny_llama(Path(tmp.name) / "tiny", hidden=args.hidden, layers=args.layers, heads=args.heads,
                                     kv_heads=args.kv_heads, intermediate=args.ffn))
    from transformers import AutoTokenizer

    prompts = make_prompts(AutoTokenizer.from_pretrained(model), args.num_prompts, args.prompt_tokens)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows, notes = [], {}
    for bs in args.batch_size:
        row = {"batch_size": bs}
        for name in backends:
            try:
                backend_class(name)
                ns = argparse.Namespace(**{**vars(args), "batch_size": bs})
                t0 = time.perf_counter()
                gen = BUILDERS[name](model, ns)
                built = time.perf_counter() - t0
            except (ValueError, ImportError) as e:
                row[name], notes[name] = None, str(e)
                continue
            row[name] = measure(gen, prompts, args.new_tokens, args.repeats, bs, built)
            gen.close()
        rows.append(row)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# generation throughput: {args.num_prompts} prompts x ~{args.prompt_tokens} prompt tokens, "
          f"{args.new_tokens} new tokens each, greedy; model {'tiny random Llama' if args.model is None else model}; "
          f"device {device}, torch threads {torch.get_num_threads()}\n")
    print("| batch size | " + " | ".join(f"{b}: output tokens/s (first batch, s)" for b in backends) + " |")
    print("|---:|" + "---:|" * len(backends))
    for row in rows:
        cells = ["n/a" if row[b] is None else f"{row[b]['tokens_per_s']:,.0f} ({row[b]['first_batch_s']:.1f})"
                 for b in backends]
        print(f"| {row['batch_size']} | " + " | ".join(cells) + " |")
    for name, why in notes.items():
        print(f"\n{name}: not measured ({why})")
    if args.json:
        import datetime
        import os

        record = {"command": "python bench/generate_throughput.py " + " ".join(sys.argv[1:]),
                  "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "load_average_1_5_15_min": os.getloadavg(), "cpus": os.cpu_count()}
        Path(args.json).write_text(json.dumps({**record, "settings": {k: v for k, v in vars(args).items()
                                                             if isinstance(v, (int, float, str, list, type(None)))},
                                               "rows": rows, "notes": notes}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
