"""Core attention for the local (non-Transformer-Engine) layer spec, on torch's scaled_dot_product_attention.

Megatron-Core's shipped local DotProductAttention materialises [b, heads, s, s] scores in a global buffer and
runs out of memory at seq 4096 on an 80 GB GPU (docs/architecture.md). SDPA picks flash / memory-efficient / cuDNN
kernels on a GPU and a fused math path on the CPU.

Masking rules:
- training (queries == keys): causal via `is_causal=True`; no s x s mask is built.
- decoding with a KV cache (fewer queries than keys): the queries are the LAST positions, so the causal mask is
  aligned bottom-right. SDPA's `is_causal` aligns top-left, which is wrong there, so an explicit mask is built
  (at most queries x keys, small during decoding).
- an explicit Megatron attention_mask (True = masked out) is honoured when given, combined with causality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention


class SDPAttention(DotProductAttention):
    """Drop-in for DotProductAttention: same constructor and tensor layout ([s, b, heads, head_dim])."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None:
            raise NotImplementedError("packed (THD) sequences need the Transformer Engine spec")
        if attention_bias is not None:
            raise NotImplementedError("attention_bias is not supported by SDPAttention")
        sq, b, np_, hn = query.shape
        sk = key.shape[0]
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)  # [b, ng, sk, hn]
        v = value.permute(1, 2, 0, 3)
        mask = None
        is_causal = False
        if attention_mask is not None and attention_mask.dtype == torch.bool and attention_mask.numel() > 1:
            allowed = ~attention_mask[..., -sq:, -sk:]  # Megatron: True = masked out; SDPA: True = attend
            causal = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
            mask = allowed & causal
        elif sq == sk:
            is_causal = True
        elif sq > 1:
            mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        dropout = self.config.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, scale=self.softmax_scale,
            enable_gqa=k.shape[1] != np_,
        )
        return out.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)
