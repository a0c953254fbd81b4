"""Llama on Megatron-Core: build a GPTModel from a ModelConfig (or an HF config.json)."""

from octomega.model.llama import (  # noqa: F401
    build_model,
    head_dim,
    llama3_inv_freq,
    load_hf_config,
    padded_vocab_size,
    resolve_layer_spec,
    te_available,
    transformer_config,
)
