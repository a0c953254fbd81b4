"""HF weights into a live Megatron model, and a live model's weights out as HF tensors, at any TP/PP.

Both work on the model chunks of the current process (one GPTModel per rank without virtual pipeline stages;
DDP/Float16Module wrappers are unwrapped) and are called on every rank of the model-parallel group.

- `load_hf_into_model(hf_dir, chunks)`: each rank reads only its own slices (its pipeline stage's layers, its
  TP rows/columns) from the safetensors files, one layer at a time.
- `export_hf_weights(chunks, cfg)`: yields (HF name, full tensor) in HF order on every rank, gathering TP
  shards (all_gather in the TP group) and moving each pipeline stage's tensors to all stages (broadcast in the
  PP group), one tensor at a time, with the vocabulary padding removed. The RL stage streams these to vLLM.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from octomega.config import ModelConfig, load_hf_config
from octomega.convert.hf_io import ConvertError, HFCheckpoint, read_hf_config
from octomega.convert.mapping import LlamaShape, fuse_qkv, hf_layer_names, layer_params, split_fc1_shards, split_qkv
from octomega.runtime import collective_device


def _unwrap(chunk):
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def _chunks(model_chunks) -> list:
    if not isinstance(model_chunks, (list, tuple)):
        model_chunks = [model_chunks]
    return [_unwrap(c) for c in model_chunks]


def _tp():
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()


def _layers(chunk) -> list[tuple[int, torch.nn.Module]]:
    """(global 0-based layer index, layer) of a chunk; Megatron numbers layers globally from 1."""
    return [(layer.layer_number - 1, layer) for layer in chunk.decoder.layers]


def model_config_of(chunk) -> ModelConfig:
    """The ModelConfig a chunk was built from (build_model records it), or one derived from its TransformerConfig."""
    cfg = getattr(chunk, "octomega_model_config", None)
    if cfg is not None:
        return cfg
    c = chunk.config
    return ModelConfig(num_layers=c.num_layers, hidden_size=c.hidden_size, ffn_hidden_size=c.ffn_hidden_size,
                       num_attention_heads=c.num_attention_heads, num_query_groups=c.num_query_groups,
                       head_dim=c.kv_channels, vocab_size=chunk.vocab_size, norm_eps=c.layernorm_epsilon,
                       tie_embeddings=chunk.share_embeddings_and_output_weights)


# ------------------------------------------------------------------------------------------------ loading


def _check_compatible(chunk, hf_cfg: ModelConfig, where: str) -> None:
    """The live model must have been built with the HF model's shape, rope and norm epsilon."""
    from octomega.model.llama import llama3_inv_freq

    have = model_config_of(chunk)
    problems = []
    for field in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                  "vocab_size", "tie_embeddings"):
        if getattr(have, field) != getattr(hf_cfg, field):
            problems.append(f"{field}: model {getattr(have, field)} vs HF {getattr(hf_cfg, field)}")
    if (have.head_dim or have.hidden_size // have.num_attention_heads) != LlamaShape.of(hf_cfg).head_dim:
        problems.append("head_dim differs")
    if abs(chunk.config.layernorm_epsilon - hf_cfg.norm_eps) > 1e-12:
        problems.append(f"rms_norm_eps: model {chunk.config.layernorm_epsilon} vs HF {hf_cfg.norm_eps}")
    rope = getattr(chunk, "rotary_pos_emb", None)
    if rope is not None:
        want = llama3_inv_freq(LlamaShape.of(hf_cfg).head_dim, hf_cfg.rope_theta, hf_cfg.rope_scaling)
        if not torch.allclose(rope.inv_freq.detach().float().cpu(), want, rtol=1e-6, atol=0):
            problems.append(f"rope frequencies differ (HF: rope_theta={hf_cfg.rope_theta}, "
                            f"rope_scaling={hf_cfg.rope_scaling})")
    if problems:
        raise ConvertError(f"the model does not match {where}: " + "; ".join(problems) +
                           f". Build it from the HF config (model.hf_config={where})")


@torch.no_grad()
def _copy(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ConvertError(f"{name}: model shard has shape {list(param.shape)}, HF slice {list(value.shape)}")
    param.data.copy_(value)


def _load_vocab_rows(ckpt: HFCheckpoint, hf_name: str, param: torch.Tensor, vocab: int, tp_rank: int) -> None:
    """Rows [r*n, (r+1)*n) of the padded vocabulary; padding rows are zero (their logits are masked)."""
    n = param.shape[0]
    start, stop = tp_rank * n, min((tp_rank + 1) * n, vocab)
    part = torch.zeros(tuple(param.shape), dtype=param.dtype)
    if stop > start:
        part[: stop - start] = ckpt.read({"w": (hf_name, (slice(start, stop),))})["w"]
    _copy(param, part, hf_name)


def _load_layer(ckpt: HFCheckpoint, i: int, layer, s: LlamaShape, tp_rank: int, tp: int) -> None:
    p = layer_params(layer)
    n = hf_layer_names(i)
    g = s.groups // tp  # query groups on this rank
    d, hpg = s.head_dim, s.heads_per_group
    q_rows = slice(tp_rank * g * hpg * d, (tp_rank + 1) * g * hpg * d)
    kv_rows = slice(tp_rank * g * d, (tp_rank + 1) * g * d)
    f = s.ffn // tp
    f_rows = slice(tp_rank * f, (tp_rank + 1) * f)
    t = ckpt.read({"input_norm": (n["input_norm"], ()), "post_norm": (n["post_norm"], ()),
                   "q": (n["q"], (q_rows,)), "k": (n["k"], (kv_rows,)), "v": (n["v"], (kv_rows,)),
                   "o": (n["o"], (slice(None), q_rows)), "gate": (n["gate"], (f_rows,)),
                   "up": (n["up"], (f_rows,)), "down": (n["down"], (slice(None), f_rows))})
    _copy(p["input_norm"], t["input_norm"], n["input_norm"])
    _copy(p["post_norm"], t["post_norm"], n["post_norm"])
    _copy(p["qkv"], fuse_qkv(t["q"], t["k"], t["v"], g), f"layer {i} q/k/v")
    _copy(p["proj"], t["o"], n["o"])
    _copy(p["fc1"], torch.cat([t["gate"], t["up"]]), f"layer {i} gate/up")
    _copy(p["fc2"], t["down"], n["down"])


def load_hf_into_model(hf_dir: str | Path, model_chunks, *, optimizer=None,
                       log: Callable[[str], None] | None = None) -> ModelConfig:
    """Copy an HF Llama's weights into live Megatron model chunks (any TP/PP, local or TE naming).

    Call on every rank after building the model from the same HF config (model.hf_config = hf_dir). With a
    Megatron mixed-precision optimizer already built, pass it: its fp32 main weights are reloaded from the new
    model weights (otherwise its first step would write the old random weights back). Returns the HF ModelConfig.
    """
    hf_cfg, _ = read_hf_config(hf_dir)
    ckpt = HFCheckpoint(hf_dir)
    s = LlamaShape.of(hf_cfg)
    ckpt.check_shapes(s, Path(hf_dir) / "config.json")
    tp_rank, tp = _tp()
    for chunk in _chunks(model_chunks):
        _check_compatible(chunk, hf_cfg, str(hf_dir))
        if chunk.pre_process:
            _load_vocab_rows(ckpt, "model.embed_tokens.weight", chunk.embedding.word_embeddings.weight, s.vocab,
                             tp_rank)
        for i, layer in _layers(chunk):
            _load_layer(ckpt, i, layer, s, tp_rank, tp)
            if log:
                log(f"loaded layer {i + 1}/{s.num_layers}")
        if chunk.post_process:
            _copy(chunk.decoder.final_layernorm.weight, ckpt.read({"w": ("model.norm.weight", ())})["w"],
                  "model.norm.weight")
            if chunk.output_layer.weight is not None:  # untied, or tied at PP > 1 (the last stage's copy)
                _load_vocab_rows(ckpt, "model.embed_tokens.weight" if s.tied else "lm_head.weight",
                                 chunk.output_layer.weight, s.vocab, tp_rank)
    if optimizer is not None and hasattr(optimizer, "reload_model_params"):
        optimizer.reload_model_params()
    return hf_cfg


# ------------------------------------------------------------------------------------------------ exporting


def _gather_tp(t: torch.Tensor) -> list[torch.Tensor]:
    from megatron.core import parallel_state as ps

    _, tp = _tp()
    if tp == 1:
        return [t]
    parts = [torch.empty_like(t) for _ in range(tp)]
    torch.distributed.all_gather(parts, t.contiguous(), group=ps.get_tensor_model_parallel_group())
    return parts


def _stage_tensors(role_tensors: dict, s: LlamaShape, i: int) -> list[tuple[str, torch.Tensor]]:
    """One layer's TP-local parameters -> its full HF tensors (collective over the TP group)."""
    n = hf_layer_names(i)
    qkv = torch.cat(_gather_tp(role_tensors["qkv"]))
    q, k, v = split_qkv(qkv, s)
    del qkv
    gate, up = split_fc1_shards(_gather_tp(role_tensors["fc1"]))
    return [(n["input_norm"], role_tensors["input_norm"]), (n["q"], q), (n["k"], k), (n["v"], v),
            (n["o"], torch.cat(_gather_tp(role_tensors["proj"]), dim=1)), (n["post_norm"], role_tensors["post_norm"]),
            (n["gate"], gate), (n["up"], up), (n["down"], torch.cat(_gather_tp(role_tensors["fc2"]), dim=1))]


def export_hf_weights(model_chunks, model_cfg: ModelConfig | None = None, *,
                      dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, tensor) for every tensor of the HF Llama, in HF order, on every rank.

    Collective: every rank of the TP x PP group must consume the whole iterator. Tensors are full (TP shards
    gathered, padding rows stripped), on the model's device, in `dtype` (default: the dtype of the model's
    weight matrices; the local spec keeps norm weights in fp32 in a bf16 model). Some are views of live
    parameters: copy them to keep them past the next optimizer step.
    """
    from megatron.core import parallel_state as ps

    chunks = _chunks(model_chunks)
    cfg = model_cfg or model_config_of(chunks[0])
    if cfg.hf_config:
        cfg = load_hf_config(copy.deepcopy(cfg))
    s = LlamaShape.of(cfg)
    ref = next(p for c in chunks for p in c.parameters() if p.dim() == 2)  # norms may be fp32 in a bf16 model
    device, out_dtype = ref.device, dtype or ref.dtype
    local_layers = {i: layer for c in chunks for i, layer in _layers(c)}
    pre = next((c for c in chunks if c.pre_process), None)
    post = next((c for c in chunks if c.post_process), None)

    pp = ps.get_pipeline_model_parallel_world_size()
    if (pp > 1 or _tp()[1] > 1) and device.type != collective_device().type:
        # The TP gathers and PP broadcasts below run on the parameters' device: nccl cannot move CPU tensors.
        raise RuntimeError(f"export_hf_weights: the model is on {device} but this process group communicates on "
                           f"{collective_device()}: build the model on its rank's device (octomega.runtime)")
    if pp > 1:
        group = ps.get_pipeline_model_parallel_group()
        ranks = torch.distributed.get_process_group_ranks(group)
        mine = {"layers": sorted(local_layers), "pre": pre is not None, "post": post is not None}
        everyone = [None] * pp
        torch.distributed.all_gather_object(everyone, mine, group=group)
        owner = {i: ranks[r] for r, e in enumerate(everyone) for i in e["layers"]}
        owner["pre"] = ranks[next(r for r, e in enumerate(everyone) if e["pre"])]
        owner["post"] = ranks[next(r for r, e in enumerate(everyone) if e["post"])]
    missing = [i for i in range(s.num_layers) if i not in (owner if pp > 1 else local_layers)]
    if missing:
        raise ConvertError(f"layers {missing} are on no pipeline stage of this model")
    shapes = dict(s.hf_tensors())

    def emit(key, produce: Callable[[], list[tuple[str, torch.Tensor]]], names: list[str]):
        """Tensors produced on the owning stage, broadcast to the other stages."""
        if pp == 1:
            items = [(n, t.to(out_dtype)) for n, t in produce()]
        else:
            src = owner[key]
            if torch.distributed.get_rank() == src:
                items = [(n, t.to(out_dtype).contiguous()) for n, t in produce()]
            else:
                items = [(n, torch.empty(shapes[n], dtype=out_dtype, device=device)) for n in names]
            for _, t in items:
                torch.distributed.broadcast(t, src=src, group=group)
        yield from items

    def produce_embedding():
        w = pre.embedding.word_embeddings.weight.detach()
        return [("model.embed_tokens.weight", torch.cat(_gather_tp(w))[: s.vocab])]

    yield from emit("pre", produce_embedding if pre is not None else None, ["model.embed_tokens.weight"])
    for i in range(s.num_layers):
        layer = local_layers.get(i)
        produce = None
        if layer is not None:
            params = {k: v.detach() for k, v in layer_params(layer).items()}
            produce = (lambda p=params, i=i: _stage_tensors(p, s, i))
        n = hf_layer_names(i)
        yield from emit(i, produce, [n[k] for k in ("input_norm", "q", "k", "v", "o", "post_norm", "gate", "up",
                                                    "down")])
    tail = ["model.norm.weight"] + ([] if s.tied else ["lm_head.weight"])

    def produce_tail():
        out = [("model.norm.weight", post.decoder.final_layernorm.weight.detach())]
        if not s.tied:
            w = post.output_layer.weight.detach()
            out.append(("lm_head.weight", torch.cat(_gather_tp(w))[: s.vocab]))
        return out

    yield from emit("post", produce_tail if post is not None else None, tail)
