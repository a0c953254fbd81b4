"""Conversions that never hold the whole model: HF files <-> Megatron dist checkpoint, one tensor at a time.

Inside a torch_dist checkpoint the weights are stored TP/PP-independent under the Transformer Engine names
(the local spec maps its norms onto them), each decoder tensor stacked over layers:
    embedding.word_embeddings.weight              [padded vocab, h]   (rows padded to 128 x TP of the writer)
    decoder.layers.self_attention.linear_qkv.layer_norm_weight   [L, h]
    decoder.layers.self_attention.linear_qkv.weight              [L, G (H/G + 2) d, h]   per-group interleaved
    decoder.layers.self_attention.linear_proj.weight             [L, h, H d]
    decoder.layers.mlp.linear_fc1.layer_norm_weight              [L, h]
    decoder.layers.mlp.linear_fc1.weight                         [L, 2 ffn, h]   [gate; up] (Megatron's swiglu
                                                                                  factory stores the TP=1 layout)
    decoder.layers.mlp.linear_fc2.weight                         [L, h, ffn]
    decoder.final_layernorm.weight                [h]
    output_layer.weight                           [padded vocab, h]   (untied models only)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from octomega.convert.hf_io import ConvertError, HFCheckpoint
from octomega.convert.mapping import TE_NAMES, LlamaShape, fuse_qkv, hf_layer_names, split_qkv
from octomega.convert.stream import Produce, read_boxes, save_streaming, stored_tensors

LAYER_KEYS = {role: "decoder.layers." + name for role, name in TE_NAMES.items()}
ROLE_OF_KEY = {key: role for role, key in LAYER_KEYS.items()}
EMBEDDING = "embedding.word_embeddings.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
OUTPUT = "output_layer.weight"


def stored_layer_shapes(s: LlamaShape) -> dict[str, tuple[int, ...]]:
    d, h = s.head_dim, s.hidden
    return {"input_norm": (h,), "qkv": (s.groups * (s.heads_per_group + 2) * d, h), "proj": (h, s.heads * d),
            "post_norm": (h,), "fc1": (2 * s.ffn, h), "fc2": (h, s.ffn)}


# ----------------------------------------------------------------------------------------------- HF -> ckpt


def hf_layer_tensor(ckpt: HFCheckpoint, s: LlamaShape, role: str, i: int) -> torch.Tensor:
    """One layer's parameter in Megatron's full (TP=1) layout, read from the HF files."""
    n = hf_layer_names(i)
    if role == "qkv":
        t = ckpt.read({"q": (n["q"], ()), "k": (n["k"], ()), "v": (n["v"], ())})
        return fuse_qkv(t["q"], t["k"], t["v"], s.groups)
    if role == "fc1":
        t = ckpt.read({"gate": (n["gate"], ()), "up": (n["up"], ())})
        return torch.cat([t["gate"], t["up"]])
    hf = {"input_norm": "input_norm", "proj": "o", "post_norm": "post_norm", "fc2": "down"}[role]
    return ckpt.read({"t": (n[hf], ())})["t"]


def hf_producer(ckpt: HFCheckpoint, s: LlamaShape) -> Produce:
    """Chunks of the dist checkpoint, converted from the HF files when the writer asks for them."""
    cache: dict = {}

    def layer(role: str, i: int) -> torch.Tensor:
        if (role, i) not in cache:
            cache.clear()  # keeps one tensor: the two fc1 chunks (gate, up) of a layer come one after the other
            cache[(role, i)] = hf_layer_tensor(ckpt, s, role, i)
        return cache[(role, i)]

    def vocab_rows(hf_name: str, offsets, sizes) -> torch.Tensor:
        start, n = offsets[0], sizes[0]
        stop = min(start + n, s.vocab)
        cols = slice(offsets[1], offsets[1] + sizes[1])
        if stop - start == n:  # no padding rows in this chunk: the HF rows as they are (one copy less)
            return ckpt.read({"w": (hf_name, (slice(start, stop), cols))})["w"]
        out = torch.zeros(sizes, dtype=ckpt.meta[hf_name][1])  # padding rows: zero (their logits are masked)
        if stop > start:
            out[: stop - start] = ckpt.read({"w": (hf_name, (slice(start, stop), cols))})["w"]
        return out

    def produce(key: str, offsets, sizes, dtype: torch.dtype) -> torch.Tensor | None:
        if key in ROLE_OF_KEY:
            full = layer(ROLE_OF_KEY[key], offsets[0])
            box = full[tuple(slice(o, o + n) for o, n in zip(offsets[1:], sizes[1:]))]
            return box.unsqueeze(0).to(dtype).contiguous()
        if key == EMBEDDING:
            return vocab_rows("model.embed_tokens.weight", offsets, sizes).to(dtype)
        if key == OUTPUT:
            return vocab_rows("model.embed_tokens.weight" if s.tied else "lm_head.weight", offsets, sizes).to(dtype)
        if key == FINAL_NORM:
            return ckpt.read({"t": ("model.norm.weight", ())})["t"].to(dtype)
        return None

    return produce


def write_checkpoint(save_dir: Path, iteration: int, model, produce: Produce, meta: dict) -> Path:
    """The checkpoint contract of octomega.checkpoint (iter dir, octomega.json, COMPLETE written last,
    latest_checkpointed_iteration.txt), model weights only, streamed through `produce`."""
    from octomega.checkpoint import MARKER, META, TRACKER, iter_dir

    target = iter_dir(save_dir, iteration)
    target.mkdir(parents=True)
    save_streaming(model, target, produce)
    (target / META).write_text(json.dumps({"iteration": iteration, "has_optimizer": False, **meta}, indent=2,
                                          default=str))
    for p in target.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    (target / MARKER).write_text("ok\n")
    (Path(save_dir) / TRACKER).write_text(str(iteration))
    return target


# ----------------------------------------------------------------------------------------------- ckpt -> HF


def check_checkpoint(it_dir: Path, s: LlamaShape) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The stored tensors match the shape in the checkpoint's config; returns them."""
    stored = stored_tensors(it_dir)
    want = {key: (s.num_layers, *shape) for key, shape in
            ((LAYER_KEYS[r], shp) for r, shp in stored_layer_shapes(s).items())}
    want[FINAL_NORM] = (s.hidden,)
    problems = [f"{k}: stored {list(stored[k][0]) if k in stored else 'nothing'}, config implies {list(v)}"
                for k, v in want.items() if k not in stored or stored[k][0] != v]
    for key in [EMBEDDING] + ([] if s.tied else [OUTPUT]):
        if key not in stored:
            problems.append(f"{key}: missing")
        elif stored[key][0][1] != s.hidden or stored[key][0][0] < s.vocab:
            problems.append(f"mismatched vocabulary: {key} is stored as {list(stored[key][0])} but the config has "
                            f"vocab_size={s.vocab}, hidden_size={s.hidden}")
    if problems:
        raise ConvertError(f"{it_dir} does not match its octomega.json config: " + "; ".join(problems))
    return stored


def iter_hf_from_checkpoint(it_dir: Path, s: LlamaShape,
                            log: Callable[[str], None] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) in HF order, read from the checkpoint one layer at a time (any TP/PP it was saved at)."""
    stored = check_checkpoint(it_dir, s)
    dtypes = {k: v[1] for k, v in stored.items()}

    def whole(key):
        return read_boxes(it_dir, {"t": (key, (0,) * len(stored[key][0]), stored[key][0])}, dtypes)["t"]

    yield "model.embed_tokens.weight", whole(EMBEDDING)[: s.vocab]
    shapes = stored_layer_shapes(s)
    for i in range(s.num_layers):
        t = read_boxes(it_dir, {role: (LAYER_KEYS[role], (i,) + (0,) * len(shp), (1, *shp))
                                for role, shp in shapes.items()}, dtypes)
        t = {role: v[0] for role, v in t.items()}
        n = hf_layer_names(i)
        q, k, v = split_qkv(t["qkv"], s)
        gate, up = torch.chunk(t["fc1"], 2)
        yield from ((n["input_norm"], t["input_norm"]), (n["q"], q), (n["k"], k), (n["v"], v), (n["o"], t["proj"]),
                    (n["post_norm"], t["post_norm"]), (n["gate"], gate), (n["up"], up), (n["down"], t["fc2"]))
        if log:
            log(f"exported layer {i + 1}/{s.num_layers}")
    yield "model.norm.weight", whole(FINAL_NORM)
    if not s.tied:
        yield "lm_head.weight", whole(OUTPUT)[: s.vocab]
