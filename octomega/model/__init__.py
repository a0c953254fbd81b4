"""Llama on Megatron-Core: build a GPTModel from a ModelConfig (an HF config.json is read by
octomega.config.load_hf_config)."""

from octomega.model.llama import (  # noqa: F401
    build_model,
    head_dim,
    llama3_inv_freq,
    padded_vocab_size,
    resolve_layer_spec,
    te_available,
    transformer_config,
)
