"""Peak memory of `octomega convert` against the model's bf16 size, on a random Llama of a real shape.

    .venv/bin/python bench/convert_memory.py                  # Llama-3.2-1B shape (1.24B parameters, 2.47 GB bf16)
    .venv/bin/python bench/convert_memory.py --shape 3b --out bench/results/convert_memory_3b.json

Writes a random HF checkpoint of the shape (streaming, no download), then runs each conversion as its own
`python -m octomega.convert ...` process. Peak = the larger of (a) the resident memory of the process and all
its children (dist_checkpointing may start helpers), sampled every 20 ms, and (b) the kernel's high-water mark
(ru_maxrss) of the process itself, which catches spikes between samples. PSS (shared pages counted once) too.
Target (issue 4): peak < 1.5 x the bf16 model size. The idle interpreter with torch + Megatron-Core imported is
measured too: it is most of the difference at 1B and negligible at 8B.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import torch  # noqa: E402

from octomega.config import ModelConfig, RopeScaling  # noqa: E402
from octomega.convert.mapping import LlamaShape  # noqa: E402

# Shapes from the public config.json files (docs/recipe.md, "Base models").
SHAPES = {
    "1b": dict(num_layers=16, hidden_size=2048, ffn_hidden_size=8192, num_attention_heads=32, num_query_groups=8,
               tie_embeddings=True, rope_scaling=RopeScaling(factor=32.0)),
    "3b": dict(num_layers=28, hidden_size=3072, ffn_hidden_size=8192, num_attention_heads=24, num_query_groups=8,
               tie_embeddings=True, rope_scaling=RopeScaling(factor=32.0)),
    "8b": dict(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32, num_query_groups=8,
               tie_embeddings=False, rope_scaling=RopeScaling(factor=8.0)),
}


def model_config(shape: str) -> ModelConfig:
    return ModelConfig(name=f"llama-{shape}-random", vocab_size=128256, rope_theta=500000.0,
                       max_position_embeddings=131072, norm_eps=1e-5, **SHAPES[shape])


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) summed over a process and its descendants, bytes."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss


def measure(cmd: list[str], label: str, log_dir: Path) -> dict:
    """Run `cmd`; peak = max(sampled RSS of the process tree, the kernel's ru_maxrss of the process itself)."""
    t0 = time.time()
    log = open(log_dir / f"{label}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OCTOMEGA_DEVICE": "cpu"})
    ps = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss, pss = tree_memory(ps)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{(log_dir / f'{label}.log').read_text()[-3000:]}")
    maxrss = usage.ru_maxrss * 1024  # KiB on Linux
    return {"command": portable(cmd, log_dir), "seconds": round(time.time() - t0, 1),
            "peak_bytes": max(peak_rss, maxrss),
            "sampled_tree_rss_bytes": peak_rss, "sampled_tree_pss_bytes": peak_pss, "ru_maxrss_bytes": maxrss}


def portable(cmd: list[str], work: Path) -> str:
    """The command as a reader reruns it: `python` for this interpreter, $WORK for the work directory (results
    carry no path of the machine that made them)."""
    return " ".join("python" if c == sys.executable else str(c).replace(str(work), "$WORK") for c in cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--workdir", default=None, help="where the random model and outputs go (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/convert_memory.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    cfg = model_config(args.shape)
    params = sum(torch.Size(s).numel() for _, s in LlamaShape.of(cfg).hf_tensors())
    bf16_bytes = 2 * params
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert_mem_"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    print(f"{args.shape}: {params / 1e9:.3f}B parameters, {bf16_bytes / 1e9:.2f} GB in bf16; work dir {work}",
          flush=True)
    t = time.time()
    # In a child process: this process stays small, so the children measured below do not inherit (between fork
    # and exec) a large resident set that their ru_maxrss would count.
    subprocess.run([py, "-c", "import sys, torch; sys.path.insert(0, sys.argv[1]); "
                    "from bench.convert_memory import model_config; "
                    "from octomega.convert.random_llama import write_random_llama; "
                    "write_random_llama(sys.argv[2], model_config(sys.argv[3]), dtype=torch.bfloat16, seed=0)",
                    str(ROOT), str(work / "hf"), args.shape], check=True)
    print(f"random HF checkpoint written in {time.time() - t:.0f} s", flush=True)

    runs = {"idle_import": measure([py, "-c", "import torch, megatron.core, transformers, octomega.convert.commands, "
                                              "octomega.checkpoint"], "idle", work)}
    runs["hf_to_mcore"] = measure([py, "-m", "octomega.convert", "hf-to-mcore", str(work / "hf"), str(work / "ckpt")],
                                  "hf-to-mcore", work)
    if not args.keep:
        shutil.rmtree(work / "hf")  # disk: at 8B each copy is 16 GB (the checkpoint keeps the tokenizer)
    # the tokenizer comes from the checkpoint's hf_assets/
    runs["mcore_to_hf"] = measure([py, "-m", "octomega.convert", "mcore-to-hf", str(work / "ckpt"),
                                   str(work / "hf_out")], "mcore-to-hf", work)
    for name, r in runs.items():
        r["peak_over_bf16_size"] = round(r["peak_bytes"] / bf16_bytes, 3)
        print(f"{name:<12} peak {r['peak_bytes'] / 2**30:6.2f} GiB = {r['peak_over_bf16_size']:.2f} x bf16 size "
              f"(sampled tree RSS {r['sampled_tree_rss_bytes'] / 2**30:.2f} GiB, PSS "
              f"{r['sampled_tree_pss_bytes'] / 2**30:.2f} GiB; ru_maxrss {r['ru_maxrss_bytes'] / 2**30:.2f} GiB), "
              f"{r['seconds']} s", flush=True)
    result = {"shape": args.shape, "parameters": params, "bf16_bytes": bf16_bytes, "target_ratio": 1.5,
              "runs": runs, "machine": {"cpus": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total,
                                        "python": platform.python_version(), "torch": torch.__version__},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
