"""Helpers of the GPU tests (tests/gpu), importable inside spawned ranks (octomega.testing.run_distributed, gpu=True).

Everything runs on the GPU machine's image as it is plus the carried Megatron-Core wheel (bench/device_check.sh):
no datatrove, math-verify, wandb or vLLM is imported. The training data is a Megatron .bin/.idx corpus written here
with data_prep's own writer (no tokenizer: EOD is vocab - 1, as bench/train_throughput.py does), whose documents
follow a fixed bigram rule, so that a small model's loss falls visibly within 20 steps (random tokens would leave
it at ln(vocab)).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

def on_gpu(fn, *args, timeout: float = 600.0):
    """fn(0, *args) in a fresh process on GPU 0 with nccl (a world of one); its return value."""
    from octomega.testing import run_distributed

    return run_distributed(fn, 1, args=args, timeout=timeout, gpu=True)[0]


def te_or_skip() -> None:
    """Skip the calling test when Transformer Engine is not importable here (the GPU machine's image has none: it
    travels with bench/te_kit.sh and bench/device_te.sh)."""
    import pytest

    from octomega.model import te_available

    if not te_available():
        pytest.skip("Transformer Engine is not importable: install transformer-engine (on the GPU machine: "
                    "bench/te_kit.sh here, bench/device_te.sh there, then bench/device_check.sh --te)")


VOCAB = 1024  # the model's vocabulary; 1023 = EOD
USED = 251  # documents use ids 0..250 only: next = (5 x token + 3) mod 251 (251 is prime: a permutation)
BIGRAM_A, BIGRAM_B = 5, 3
STEPS = 20


def write_corpus(root, *, tokens: int = 400_000, seed: int = 0) -> str:
    """A corpus of documents of 32..256 tokens that follow the bigram rule from a random first token, each ended by
    the EOD id; returns the path of its blend file. A model first learns that only 251 ids occur (ln 1024 = 6.93 ->
    ln 251 = 5.53), then the rule (-> ~0.1): a clear fall within 20 steps."""
    import numpy as np

    from data_prep.megatron_io import PrefixWriter
    from data_prep.mix import BLEND_FORMAT

    root = Path(root)
    rng = np.random.default_rng(seed)
    lengths, docs = [], []
    while sum(lengths) < tokens:
        n = int(rng.integers(32, 257))
        doc = np.empty(n, dtype=np.int64)
        doc[0] = rng.integers(0, USED)
        for i in range(1, n - 1):
            doc[i] = (BIGRAM_A * doc[i - 1] + BIGRAM_B) % USED
        doc[n - 1] = VOCAB - 1
        docs.append(doc)
        lengths.append(n)
    prefix = root / "corpus" / "bigram"
    writer = PrefixWriter(prefix, "uint16")
    writer.append(np.concatenate(docs).astype(np.uint16), np.asarray(lengths))
    writer.close()
    blend = {"format": BLEND_FORMAT, "stage": "gpu_tests", "dtype": "uint16", "tokenizer_fingerprint": "bigram",
             "tokenizer": None, "vocab_size": VOCAB, "valid": [],
             "corpora": [{"name": "bigram", "role": "gpu_tests", "prefix": str(prefix), "weight": 1.0,
                          "tokens": int(sum(lengths)), "documents": len(lengths)}]}
    path = root / "blend.json"
    path.write_text(json.dumps(blend, indent=1))
    return str(path)


def small_model():
    """2 layers, hidden 256, SwiGLU 512, 4 query / 2 KV heads of 64 channels, untied, vocab 1024: every linear
    width a multiple of 16 (FP8), ~1.3M parameters."""
    from octomega.config import ModelConfig

    return ModelConfig(name="gpu_small", num_layers=2, hidden_size=256, ffn_hidden_size=512, num_attention_heads=4,
                       num_query_groups=2, vocab_size=VOCAB, max_position_embeddings=512, rope_theta=10000.0,
                       tie_embeddings=False, layer_spec="local")


def train_cfg(run_dir, blend: str, *overrides: str, steps: int | None = None) -> dict:
    """A bf16 pre-training run of small_model() on the bigram corpus: seq 128, 8 sequences per step in micro-batches
    of 2 (four per step), `steps` (default STEPS) steps at a constant LR 1e-3, a checkpoint every 5 steps, a log
    line every step."""
    from octomega.config import RunConfig, apply_overrides, to_dict

    cfg = RunConfig(name=Path(run_dir).name, run_dir=str(run_dir), model=small_model())
    t = cfg.train
    t.seq_length, t.global_batch_size, t.micro_batch_size = 128, 8, 2
    t.train_tokens, t.precision, t.valid_interval = (steps or STEPS) * 8 * 128, "bf16", 0
    cfg.optim.lr, cfg.optim.warmup_tokens = 1e-3, 0
    cfg.data.blend, cfg.data.tokenizer, cfg.data.num_workers = blend, None, 0
    cfg.checkpoint.save_interval, cfg.checkpoint.keep_last = 5, 10
    cfg.logging.log_interval, cfg.logging.wandb = 1, False
    apply_overrides(cfg, list(overrides))
    return to_dict(cfg)


def train(cfg_dict: dict) -> dict:
    from octomega.config import RunConfig, from_dict
    from octomega.train.loop import run_training

    return run_training(from_dict(RunConfig, copy.deepcopy(cfg_dict)))


def metrics(run_dir, kind: str = "train") -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind] if path.exists() else []


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in metrics(run_dir)]


def mean(xs) -> float:
    return sum(xs) / len(xs)


def all_finite(xs) -> bool:
    return all(isinstance(x, float) and math.isfinite(x) for x in xs)


def deterministic_kernels() -> None:
    """Deterministic CUDA kernels for bit-exact comparisons between runs: cuBLAS's fixed workspace
    (CUBLAS_WORKSPACE_CONFIG, read when its handle is created) and torch's deterministic algorithms (flash
    attention's backward otherwise accumulates dQ with atomics). warn_only: an op without a deterministic kernel
    warns instead of failing; the comparison then shows whether it mattered."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def safetensors_dir(d) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def forward_logits(model, tokens, vocab: int):
    import torch

    pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, pos, None)[..., :vocab].float()
