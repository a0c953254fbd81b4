"""The name and layout mapping, both Megatron naming schemes, and the streaming safetensors writer."""

import json

import pytest
import torch

from octomega.config import ModelConfig, ParallelConfig
from octomega.convert.hf_io import INDEX, HFCheckpoint, SafetensorsWriter
from octomega.convert.mapping import (
    TE_NAMES,
    LlamaShape,
    fuse_qkv,
    hf_to_megatron_name,
    layer_naming,
    megatron_to_hf_names,
    split_fc1_shards,
    split_qkv,
)
from octomega.convert.random_llama import tiny_shapes

SHAPES = tiny_shapes()


def test_names_both_ways():
    assert megatron_to_hf_names("decoder.layers.3.self_attention.linear_qkv.weight") == [
        "model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.k_proj.weight",
        "model.layers.3.self_attn.v_proj.weight"]
    assert megatron_to_hf_names("module.decoder.layers.0.mlp.linear_fc1.weight", layer_offset=8) == [
        "model.layers.8.mlp.gate_proj.weight", "model.layers.8.mlp.up_proj.weight"]
    # The two naming schemes of the same norms
    for local, te, hf in (("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight",
                           "model.layers.2.input_layernorm.weight"),
                          ("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight",
                           "model.layers.2.post_attention_layernorm.weight")):
        assert megatron_to_hf_names(f"decoder.layers.2.{local}") == [hf]
        assert megatron_to_hf_names(f"decoder.layers.2.{te}") == [hf]
        assert hf_to_megatron_name(hf) == f"decoder.layers.2.{local}"
        assert hf_to_megatron_name(hf, naming="te") == f"decoder.layers.2.{te}"
    assert megatron_to_hf_names("output_layer.weight") == ["lm_head.weight"]
    assert hf_to_megatron_name("model.embed_tokens.weight") == "embedding.word_embeddings.weight"
    with pytest.raises(KeyError):
        megatron_to_hf_names("decoder.layers.0.self_attention.linear_qkv.bias")


def test_every_parameter_of_a_model_maps(world1):
    from octomega.model import build_model

    for name, cfg in SHAPES.items():
        model = build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False)
        hf = [n for p in dict(model.named_parameters()) for n in megatron_to_hf_names(p)]
        assert sorted(hf) == sorted(n for n, _ in LlamaShape.of(cfg).hf_tensors()), name
        assert hf_to_megatron_name("model.layers.1.mlp.up_proj.weight") in dict(model.named_parameters())


def test_te_names_are_megatrons_checkpoint_names(world1):
    """The local spec maps its norms to TE's names in sharded state dicts (its sharded_state_dict_keys_map):
    TE_NAMES must be exactly those names, so the mapping and dist checkpoints agree on both specs."""
    from octomega.model import build_model

    model = build_model(SHAPES["mha_tied"], ParallelConfig(), dtype=torch.float32, on_gpu=False)
    keys = {k: v.key for k, v in model.sharded_state_dict().items() if hasattr(v, "key")}
    assert keys["decoder.layers.0.input_layernorm.weight"] == "decoder.layers." + TE_NAMES["input_norm"]
    assert keys["decoder.layers.0.pre_mlp_layernorm.weight"] == "decoder.layers." + TE_NAMES["post_norm"]
    for role in ("qkv", "proj", "fc1", "fc2"):
        assert "decoder.layers." + TE_NAMES[role] in keys.values(), role


def _as_te_layout(model):
    """Rename a local-spec model's norms the way the Transformer Engine spec names them: the norm weights move
    into linear_qkv / linear_fc1 as `layer_norm_weight` and the standalone norms become identities."""
    from megatron.core.transformer.identity_op import IdentityOp

    for layer in model.decoder.layers:
        layer.self_attention.linear_qkv.layer_norm_weight = layer.input_layernorm.weight
        layer.mlp.linear_fc1.layer_norm_weight = layer.pre_mlp_layernorm.weight
        layer.input_layernorm = IdentityOp()
        layer.pre_mlp_layernorm = IdentityOp()
    return model


def test_te_naming_loads_and_exports_the_same(hf_dirs, world1):
    from safetensors.torch import load_file

    from octomega.convert import export_hf_weights, load_hf_into_model
    from octomega.model import build_model

    name = "gqa2_untied_scaled"
    cfg = ModelConfig(hf_config=str(hf_dirs[name]))
    te = _as_te_layout(build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False))
    assert layer_naming(te.decoder.layers[0]) == "te"
    names = dict(te.named_parameters())
    assert "decoder.layers.1.self_attention.linear_qkv.layer_norm_weight" in names
    assert "decoder.layers.1.input_layernorm.weight" not in names
    load_hf_into_model(hf_dirs[name], [te])
    want = load_file(str(hf_dirs[name] / "model.safetensors"))
    assert torch.equal(names["decoder.layers.1.mlp.linear_fc1.layer_norm_weight"],
                       want["model.layers.1.post_attention_layernorm.weight"])
    exported = dict(export_hf_weights([te]))
    assert exported.keys() == want.keys()
    assert all(torch.equal(exported[k], want[k]) for k in want)


@pytest.mark.parametrize("heads,groups", [(4, 4), (4, 2), (6, 2), (8, 1)])
def test_qkv_fuse_split_inverse_and_grouped(heads, groups):
    d, h = 4, 16
    s = LlamaShape(num_layers=1, hidden=h, ffn=8, heads=heads, groups=groups, head_dim=d, vocab=10, tied=True)
    q, k, v = torch.randn(heads * d, h), torch.randn(groups * d, h), torch.randn(groups * d, h)
    fused = fuse_qkv(q, k, v, groups)
    hpg = heads // groups
    # group 0 starts with its query heads, then its one key head, then its one value head
    assert torch.equal(fused[: hpg * d], q[: hpg * d])
    assert torch.equal(fused[hpg * d:(hpg + 1) * d], k[:d])
    assert torch.equal(fused[(hpg + 1) * d:(hpg + 2) * d], v[:d])
    for a, b in zip(split_qkv(fused, s), (q, k, v)):
        assert torch.equal(a, b)


def test_fc1_shards_are_gate_up_per_rank():
    gate, up = torch.randn(8, 3), torch.randn(8, 3)
    shards = [torch.cat([gate[:4], up[:4]]), torch.cat([gate[4:], up[4:]])]  # TP=2 ranks
    g, u = split_fc1_shards(shards)
    assert torch.equal(g, gate) and torch.equal(u, up)


def test_writer_shards_index_and_transformers_reads_it(tmp_path):
    from safetensors.torch import load_file

    cfg = SHAPES["gqa4_untied_llama3"]
    plan = LlamaShape.of(cfg).hf_tensors()
    tensors = {n: torch.randn(s) for n, s in plan}
    w = SafetensorsWriter(tmp_path, plan, torch.bfloat16, max_shard_bytes=40_000)
    for n, _ in plan:
        w.write(n, tensors[n])
    files = w.finish()
    assert len(files) > 2 and all((tmp_path / f).exists() for f in files)
    index = json.loads((tmp_path / INDEX).read_text())
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in tensors.values())
    for f in files:
        assert (tmp_path / f).stat().st_size <= 40_000 + 2_000  # data under the limit (+ header)
        for n, t in load_file(str(tmp_path / f)).items():
            assert index["weight_map"][n] == f and t.dtype == torch.bfloat16
            assert torch.equal(t, tensors[n].to(torch.bfloat16))
    ck = HFCheckpoint(tmp_path)  # our reader agrees
    assert ck.meta["lm_head.weight"] == ((256, 64), torch.bfloat16)


def test_writer_refuses_out_of_order_and_incomplete(tmp_path):
    plan = [("a", (2, 2)), ("b", (3,))]
    w = SafetensorsWriter(tmp_path, plan, torch.float32)
    with pytest.raises(ValueError, match="expected a"):
        w.write("b", torch.zeros(3))
    w.write("a", torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"expected b \[3\]"):
        w.write("b", torch.zeros(4))
    with pytest.raises(ValueError, match="only 1 of 2"):
        w.finish()
