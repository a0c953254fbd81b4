"""Random Hugging Face Llama directories for tests and benchmarks (no downloads, no transformers needed).

Weights are written streaming, tensor by tensor, so a 1B- or 8B-shaped model costs one tensor of memory.
Values are chosen so that a wrong mapping shows in the logits: every tensor differs (no all-ones norms),
projections have std 1/sqrt(fan_in), embeddings std 0.5.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

from octomega.config import ModelConfig
from octomega.convert.hf_io import SafetensorsWriter, hf_config_dict, parse_size
from octomega.convert.mapping import LlamaShape

BOS, EOS = "<s>", "</s>"


def random_tensor(name: str, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if len(shape) == 1:  # a norm weight
        return (1.0 + 0.2 * torch.randn(shape, generator=g)).to(dtype)
    std = 0.5 if name.endswith(("embed_tokens.weight", "lm_head.weight")) else shape[1] ** -0.5
    out = torch.empty(shape, dtype=dtype)
    rows = max(1, (1 << 24) // shape[1])  # fill in blocks of ~16M values: bounded fp32 scratch memory
    for start in range(0, shape[0], rows):
        block = torch.randn((min(rows, shape[0] - start), shape[1]), generator=g) * std
        out[start:start + block.shape[0]] = block.to(dtype)
    return out


def write_tokenizer(out_dir: str | Path, vocab_size: int) -> None:
    """A word-level tokenizer with ids 0..vocab_size-1 (`t{i}` words; <s>=0 and </s>=1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {BOS: 0, EOS: 1, **{f"t{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(Path(out_dir) / "tokenizer.json"))
    (Path(out_dir) / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "model_max_length": 8192}))


def write_random_llama(out_dir: str | Path, cfg: ModelConfig, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                       max_shard_size: str | int = "5GB", tokenizer: bool = True) -> Path:
    """config.json, generation_config.json, safetensors (sharded above max_shard_size) and a tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(cfg, dtype, {"bos_token_id": 0, "eos_token_id": 1})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    plan = LlamaShape.of(cfg).hf_tensors()
    writer = SafetensorsWriter(out, plan, dtype, parse_size(max_shard_size))
    for name, shape in plan:
        writer.write(name, random_tensor(name, shape, seed, dtype))
    writer.finish()
    if tokenizer:
        write_tokenizer(out, cfg.vocab_size)
    return out


def tiny_shapes() -> dict[str, ModelConfig]:
    """Tiny shapes that between them hit every conversion trap: GQA ratios 1/2/3/4, tied and untied embeddings,
    Llama-3 rope scaling off, with Meta's values and with non-default values of all four parameters, an explicit
    head_dim unlike hidden/heads, vocabularies that need padding (300, 500) and one that does not (256)."""
    from octomega.config import RopeScaling

    common = dict(max_position_embeddings=256)
    return {
        "mha_tied": ModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                                num_query_groups=4, vocab_size=256, tie_embeddings=True, rope_theta=10000.0,
                                rope_scaling=None, norm_eps=1e-6, **common),
        "gqa2_untied_scaled": ModelConfig(
            num_layers=2, hidden_size=48, ffn_hidden_size=80, num_attention_heads=4, num_query_groups=2,
            vocab_size=300, tie_embeddings=False, rope_theta=10000.0, norm_eps=1e-5,
            rope_scaling=RopeScaling(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
                                     original_max_position_embeddings=32), **common),
        "gqa3_tied_scaled": ModelConfig(
            num_layers=4, hidden_size=48, ffn_hidden_size=64, num_attention_heads=6, num_query_groups=2, head_dim=12,
            vocab_size=500, tie_embeddings=True, rope_theta=50000.0, norm_eps=1e-5,
            rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.5, high_freq_factor=6.0,
                                     original_max_position_embeddings=48), **common),
        "gqa4_untied_llama3": ModelConfig(
            num_layers=2, hidden_size=64, ffn_hidden_size=96, num_attention_heads=8, num_query_groups=2,
            vocab_size=256, tie_embeddings=False, rope_theta=500000.0, norm_eps=1e-5,
            rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=8192), **common),
    }
