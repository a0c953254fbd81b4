"""The Llama weight mapping: Hugging Face names and layouts <-> Megatron-Core GPTModel parameters.

One decoder layer, Hugging Face (`model.layers.{i}.`)      Megatron-Core (`decoder.layers.{j}.`, j local to the stage)
    input_layernorm.weight                                 input_layernorm.weight                  (local spec)
                                                           self_attention.linear_qkv.layer_norm_weight  (TE spec)
    self_attn.{q,k,v}_proj.weight                          self_attention.linear_qkv.weight  (fused, see below)
    self_attn.o_proj.weight                                self_attention.linear_proj.weight
    post_attention_layernorm.weight                        pre_mlp_layernorm.weight                (local spec)
                                                           mlp.linear_fc1.layer_norm_weight        (TE spec)
    mlp.{gate,up}_proj.weight                              mlp.linear_fc1.weight  (fused [gate; up])
    mlp.down_proj.weight                                   mlp.linear_fc2.weight
Outside the layers: model.embed_tokens.weight <-> embedding.word_embeddings.weight (rows padded to a multiple of
128 x TP), model.norm.weight <-> decoder.final_layernorm.weight, lm_head.weight <-> output_layer.weight (untied
models only: a tied model has no lm_head.weight in its HF files and no output_layer.weight at PP=1).

Fused layouts, and how tensor parallelism (TP) splits them (Megatron-Bridge's Llama mapping does the same):
- linear_qkv is grouped per query group g (GQA: G groups of H/G query heads sharing one key/value head):
  [q heads of g (H/G x d rows); k of g (d rows); v of g (d rows)] for g = 0..G-1. TP rank r holds groups
  [r G/TP, (r+1) G/TP): a contiguous row block of the fused tensor.
- linear_fc1 on TP rank r is [gate rows of r; up rows of r]; the full (TP=1) tensor is [gate; up].
- linear_proj and linear_fc2 (row-parallel) split columns; embedding and output_layer split vocabulary rows;
  norms are replicated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from octomega.config import ModelConfig


@dataclass(frozen=True)
class LlamaShape:
    """The numbers the mapping needs, from a resolved ModelConfig."""

    num_layers: int
    hidden: int
    ffn: int
    heads: int
    groups: int  # key/value heads
    head_dim: int
    vocab: int  # real (tokenizer) vocabulary, without Megatron's padding
    tied: bool

    @classmethod
    def of(cls, cfg: ModelConfig) -> "LlamaShape":
        return cls(num_layers=cfg.num_layers, hidden=cfg.hidden_size, ffn=cfg.ffn_hidden_size,
                   heads=cfg.num_attention_heads, groups=cfg.num_query_groups,
                   head_dim=cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads, vocab=cfg.vocab_size,
                   tied=cfg.tie_embeddings)

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.groups

    def hf_tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every HF tensor (name, shape) in the order export_hf_weights yields them."""
        h, d = self.hidden, self.head_dim
        out = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.num_layers):
            n = hf_layer_names(i)
            out += [(n["input_norm"], (h,)), (n["q"], (self.heads * d, h)), (n["k"], (self.groups * d, h)),
                    (n["v"], (self.groups * d, h)), (n["o"], (h, self.heads * d)), (n["post_norm"], (h,)),
                    (n["gate"], (self.ffn, h)), (n["up"], (self.ffn, h)), (n["down"], (h, self.ffn))]
        out.append(("model.norm.weight", (h,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.vocab, h)))
        return out


def hf_layer_names(i: int) -> dict[str, str]:
    p = f"model.layers.{i}."
    return {"input_norm": p + "input_layernorm.weight", "q": p + "self_attn.q_proj.weight",
            "k": p + "self_attn.k_proj.weight", "v": p + "self_attn.v_proj.weight",
            "o": p + "self_attn.o_proj.weight", "post_norm": p + "post_attention_layernorm.weight",
            "gate": p + "mlp.gate_proj.weight", "up": p + "mlp.up_proj.weight", "down": p + "mlp.down_proj.weight"}


# Parameter of a Megatron TransformerLayer, per role, for each naming scheme.
LOCAL_NAMES = {"input_norm": "input_layernorm.weight", "qkv": "self_attention.linear_qkv.weight",
               "proj": "self_attention.linear_proj.weight", "post_norm": "pre_mlp_layernorm.weight",
               "fc1": "mlp.linear_fc1.weight", "fc2": "mlp.linear_fc2.weight"}
TE_NAMES = {**LOCAL_NAMES, "input_norm": "self_attention.linear_qkv.layer_norm_weight",
            "post_norm": "mlp.linear_fc1.layer_norm_weight"}
# HF tensors each Megatron role is made of.
ROLE_TO_HF = {"input_norm": ("input_norm",), "qkv": ("q", "k", "v"), "proj": ("o",), "post_norm": ("post_norm",),
              "fc1": ("gate", "up"), "fc2": ("down",)}


def layer_naming(layer: torch.nn.Module) -> str:
    """'te' when the layer norms are fused into the linear layers (Transformer Engine spec), else 'local'."""
    return "te" if hasattr(layer.self_attention.linear_qkv, "layer_norm_weight") else "local"


def layer_params(layer: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """role -> parameter of one TransformerLayer, whichever naming scheme it uses."""
    names = TE_NAMES if layer_naming(layer) == "te" else LOCAL_NAMES
    params = dict(layer.named_parameters())
    missing = [n for n in names.values() if n not in params]
    if missing:
        raise ValueError(f"not a Llama layer: parameters {missing} missing (has {sorted(params)}); biases, MoE and "
                         "other layer types are not supported by octomega's Llama mapping")
    extra = sorted(set(params) - set(names.values()))
    if extra:
        raise ValueError(f"unexpected parameters {extra} in a Llama layer (biases? q/k norms?): not supported")
    return {role: params[name] for role, name in names.items()}


_GLOBAL = {"embedding.word_embeddings.weight": "model.embed_tokens.weight",
           "decoder.final_layernorm.weight": "model.norm.weight", "output_layer.weight": "lm_head.weight"}
_LAYER_RE = re.compile(r"^(?:module\.)*decoder\.layers\.(\d+)\.(.+)$")


def megatron_to_hf_names(name: str, layer_offset: int = 0) -> list[str]:
    """HF names of one Megatron parameter name (either naming scheme). `layer_offset` turns a pipeline stage's
    local layer index into the global one. Fused parameters give several names ([q, k, v], [gate, up])."""
    name = re.sub(r"^(module\.)+", "", name)
    if name in _GLOBAL:
        return [_GLOBAL[name]]
    m = _LAYER_RE.match(name)
    if m:
        i, rest = int(m.group(1)) + layer_offset, m.group(2)
        for names in (LOCAL_NAMES, TE_NAMES):
            for role, n in names.items():
                if n == rest:
                    hf = hf_layer_names(i)
                    return [hf[k] for k in ROLE_TO_HF[role]]
    raise KeyError(f"{name!r} is not a parameter of octomega's Llama mapping")


def hf_to_megatron_name(name: str, naming: str = "local") -> str:
    """The Megatron parameter (TP=1, PP=1 model) that holds an HF tensor; `naming` is 'local' or 'te'."""
    for mg, hf in _GLOBAL.items():
        if name == hf:
            return mg
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
    if m:
        i = int(m.group(1))
        for role, parts in ROLE_TO_HF.items():
            if any(hf_layer_names(i)[p] == name for p in parts):
                return f"decoder.layers.{i}." + (TE_NAMES if naming == "te" else LOCAL_NAMES)[role]
    raise KeyError(f"{name!r} is not a tensor of a Hugging Face Llama checkpoint")


# ----------------------------------------------------------------------------------- fused layouts (full tensors)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """HF q/k/v rows (for `groups` consecutive query groups) -> Megatron's per-group interleaved linear_qkv."""
    cols = q.shape[-1]
    return torch.cat([q.reshape(groups, -1, cols), k.reshape(groups, -1, cols), v.reshape(groups, -1, cols)],
                     dim=1).reshape(-1, cols)


def split_qkv(qkv: torch.Tensor, s: LlamaShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron's full (all groups) linear_qkv -> HF q, k, v (contiguous)."""
    d, hpg = s.head_dim, s.heads_per_group
    g = qkv.reshape(s.groups, (hpg + 2) * d, qkv.shape[-1])
    q = g[:, : hpg * d].reshape(-1, qkv.shape[-1])
    k = g[:, hpg * d:(hpg + 1) * d].reshape(-1, qkv.shape[-1])
    v = g[:, (hpg + 1) * d:].reshape(-1, qkv.shape[-1])
    return q.contiguous(), k.contiguous(), v.contiguous()


def split_fc1_shards(shards: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """linear_fc1 of each TP rank ([gate_r; up_r]) -> full HF gate and up."""
    halves = [torch.chunk(t, 2, dim=0) for t in shards]
    return torch.cat([h[0] for h in halves]).contiguous(), torch.cat([h[1] for h in halves]).contiguous()
