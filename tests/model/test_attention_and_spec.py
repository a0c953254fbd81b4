"""The SDPA core attention (training and KV-cache decoding) and the layer-spec refusals (HF-config ones:
tests/train/test_config.py)."""

import pytest
import torch
import torch.nn.functional as F

from octomega.config import ConfigError, ModelConfig, ParallelConfig
from octomega.model import llama
from octomega.model.llama import resolve_layer_spec, transformer_config


def make_attention(heads=6, groups=2, hd=8):
    from megatron.core.transformer.enums import AttnMaskType

    from octomega.model.attention import SDPAttention

    cfg = ModelConfig(num_layers=1, hidden_size=heads * hd, num_attention_heads=heads, num_query_groups=groups)
    tc = transformer_config(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False)
    return SDPAttention(tc, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self").eval()


def qkv(s, b=2, heads=6, groups=2, hd=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(s, b, heads, hd, generator=g), torch.randn(s, b, groups, hd, generator=g),
            torch.randn(s, b, groups, hd, generator=g))


def reference(q, k, v):
    """Plain causal GQA attention: query head h reads key/value head h // (heads / groups), as HF's repeat_kv."""
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    sq, sk = q.shape[0], k.shape[0]
    scores = torch.einsum("qbhd,kbhd->bhqk", q, k) / q.shape[-1] ** 0.5
    mask = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,kbhd->qbhd", probs, v)
    return out.reshape(sq, q.shape[1], -1)


def test_full_sequence_attention_is_causal_gqa(world1):
    attn = make_attention()
    q, k, v = qkv(10)
    torch.testing.assert_close(attn(q, k, v, None), reference(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("new", [1, 3])
def test_decoding_with_fewer_queries_equals_last_rows(world1, new):
    """KV-cache decoding: the last `new` queries against all keys give the full sequence's last rows (the causal
    mask aligned bottom-right, not SDPA's top-left is_causal)."""
    attn = make_attention()
    q, k, v = qkv(12)
    full = attn(q, k, v, None)
    step = attn(q[-new:], k, v, None)
    torch.testing.assert_close(step, full[-new:], rtol=1e-5, atol=1e-5)
    if new > 1:  # is_causal=True on the 3x12 block would be the wrong (top-left) mask: make sure it differs
        wrong = F.scaled_dot_product_attention(q[-new:].permute(1, 2, 0, 3), k.permute(1, 2, 0, 3),
                                               v.permute(1, 2, 0, 3), is_causal=True, enable_gqa=True)
        assert (wrong.permute(2, 0, 1, 3).reshape(step.shape) - step).abs().max() > 1e-3


def test_explicit_padding_mask_is_honoured(world1):
    attn = make_attention()
    q, k, v = qkv(8)
    masked = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masked[1, ..., :2] = True  # batch row 1: the first two keys are padding
    out = attn(q, k, v, masked)
    torch.testing.assert_close(out[:, 0], reference(q, k, v)[:, 0], rtol=1e-5, atol=1e-5)
    ref1 = reference(q[2:, 1:], k[2:, 1:], v[2:, 1:])  # keys 2.. only, for queries 2..
    torch.testing.assert_close(out[2:, 1:], ref1, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ layer spec refusals


def test_fp8_without_transformer_engine_is_refused(monkeypatch):
    monkeypatch.setattr(llama, "te_available", lambda: False)
    with pytest.raises(ConfigError, match="needs the Transformer Engine layer spec"):
        resolve_layer_spec(ModelConfig(fp8="hybrid"), on_gpu=True)
    with pytest.raises(ConfigError, match="transformer_engine is not importable"):
        resolve_layer_spec(ModelConfig(layer_spec="te"), on_gpu=True)
    assert resolve_layer_spec(ModelConfig(), on_gpu=True) == "local"  # auto without TE
    with pytest.raises(ConfigError, match="rope_fusion needs the Transformer Engine layer spec"):
        resolve_layer_spec(ModelConfig(rope_fusion=True), on_gpu=True)


def test_te_spec_on_cpu_is_refused(monkeypatch):
    monkeypatch.setattr(llama, "te_available", lambda: True)
    with pytest.raises(ConfigError, match="needs a GPU"):
        resolve_layer_spec(ModelConfig(layer_spec="te"), on_gpu=False)
    assert resolve_layer_spec(ModelConfig(), on_gpu=False) == "local"  # auto on CPU
    assert resolve_layer_spec(ModelConfig(), on_gpu=True) == "te"  # auto on a GPU with TE
    assert resolve_layer_spec(ModelConfig(rope_fusion=True), on_gpu=True) == "te"
    with pytest.raises(ConfigError, match="rope_fusion needs the Transformer Engine layer spec \\(now: local\\)"):
        resolve_layer_spec(ModelConfig(rope_fusion=True, layer_spec="local"), on_gpu=True)


def test_fp8_on_pre_hopper_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(llama, "te_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    with pytest.raises(ConfigError, match="Hopper"):
        resolve_layer_spec(ModelConfig(fp8="e4m3"), on_gpu=True)
    with pytest.raises(ConfigError, match="unfused applies to the local spec"):
        resolve_layer_spec(ModelConfig(layer_spec="te", attention="unfused"), on_gpu=True)


def test_sequence_parallel_without_te_spec_is_a_clear_error(world1):
    """Megatron's local spec asserts deep inside its norm; octomega names the setting and the fix."""
    from octomega.model import build_model

    with pytest.raises(ConfigError, match="sequence_parallel needs the Transformer Engine layer spec"):
        build_model(ModelConfig(layer_spec="local"), ParallelConfig(tp=2, sequence_parallel=True),
                    dtype=torch.float32, on_gpu=False)


def test_compile_layers_refused_with_te_spec_and_one_graph_for_all_layers(world1):
    """model.compile=layers: refused on the TE spec; on the local spec every layer runs one captured graph with
    no graph break (a Megatron warnings.warn inside RowParallelLinear broke it until megatron_compat removed it)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from octomega.model import build_model
    from octomega.model.llama import compile_layers
    from octomega.runtime import megatron_compat

    megatron_compat.apply()
    cfg = ModelConfig(num_layers=3, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                      vocab_size=128, max_position_embeddings=64, compile="layers", compile_backend="aot_eager")
    torch.manual_seed(0)
    gpt = build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False)
    gpt.octomega_layer_spec = "te"
    with pytest.raises(ConfigError, match="model.compile=layers is for the local spec"):
        compile_layers(gpt, cfg)
    gpt.octomega_layer_spec = "local"
    tokens = torch.randint(0, 128, (2, 16))
    pos = torch.arange(16).expand_as(tokens)
    eager = gpt(tokens, pos, None, labels=tokens)
    torch._dynamo.reset()
    counters.clear()
    compile_layers(gpt, cfg)
    compiled = gpt(tokens, pos, None, labels=tokens)
    compiled.sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
