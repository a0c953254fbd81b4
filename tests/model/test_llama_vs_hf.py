"""Megatron-Core's Llama (octomega.model.build_model) computes what transformers' LlamaForCausalLM computes."""

import json
import shutil

import pytest
import torch

from octomega.config import ModelConfig, ParallelConfig, RopeScaling
from octomega.convert.random_llama import tiny_shapes
from octomega.model import build_model, llama3_inv_freq
from octomega.model.llama import PAD_LOGIT, padded_vocab_size

SHAPES = tiny_shapes()
SEQ = 80  # > every original_max_position_embeddings of the scaled shapes but one: the scaled rope matters


def hf_logits(hf_dir, tokens, dtype=torch.float32):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=dtype).eval()
    with torch.no_grad():
        return model(tokens).logits.float()


def megatron_logits(hf_dir, tokens, dtype=torch.float32):
    from octomega.convert import load_hf_into_model

    model = build_model(ModelConfig(hf_config=str(hf_dir)), ParallelConfig(), dtype=dtype, on_gpu=False).eval()
    load_hf_into_model(hf_dir, [model])
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, pos, None).float(), model


def tokens_for(cfg, seed=0, batch=2, seq=SEQ):
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scaling", [
    None,
    RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192),
    RopeScaling(factor=8.0, low_freq_factor=2.0, high_freq_factor=8.0, original_max_position_embeddings=2048),
    RopeScaling(factor=3.0, low_freq_factor=0.5, high_freq_factor=3.0, original_max_position_embeddings=64),
])
@pytest.mark.parametrize("dim,theta", [(64, 500000.0), (128, 500000.0), (16, 10000.0)])
def test_inv_freq_equals_transformers(scaling, dim, theta):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        rope = {"rope_type": "llama3", "rope_theta": theta, "factor": scaling.factor,
                "low_freq_factor": scaling.low_freq_factor, "high_freq_factor": scaling.high_freq_factor,
                "original_max_position_embeddings": scaling.original_max_position_embeddings}
    cfg = LlamaConfig(hidden_size=dim * 4, num_attention_heads=4, head_dim=dim, rope_parameters=rope,
                      max_position_embeddings=131072)
    if scaling is None:
        want = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    else:
        want, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    got = llama3_inv_freq(dim, theta, scaling)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_equal_transformers_fp32(shape, hf_dirs, world1):
    cfg = SHAPES[shape]
    tokens = tokens_for(cfg)
    ref = hf_logits(hf_dirs[shape], tokens)
    out, model = megatron_logits(hf_dirs[shape], tokens)
    assert ref.abs().max() > 1.0  # logits of a size where a wrong mapping shows
    assert out.shape[-1] == padded_vocab_size(cfg, 1)
    torch.testing.assert_close(out[..., : cfg.vocab_size], ref, rtol=0, atol=1e-4)
    if out.shape[-1] > cfg.vocab_size:  # the padding rows never compete with real tokens
        assert torch.all(out[..., cfg.vocab_size:] == PAD_LOGIT)


def test_loss_equals_transformers_with_vocab_padding(hf_dirs, world1):
    """Megatron's own loss (labels given) equals transformers' loss although the vocabulary is padded 300 -> 384."""
    from transformers import LlamaForCausalLM

    from octomega.convert import load_hf_into_model

    shape = "gqa2_untied_scaled"
    cfg = SHAPES[shape]
    tokens = tokens_for(cfg, seed=3, seq=33)
    hf = LlamaForCausalLM.from_pretrained(str(hf_dirs[shape]), dtype=torch.float32)
    ref = hf(tokens, labels=tokens).loss
    model = build_model(ModelConfig(hf_config=str(hf_dirs[shape])), ParallelConfig(), dtype=torch.float32,
                        on_gpu=False)
    assert padded_vocab_size(cfg, 1) > cfg.vocab_size
    load_hf_into_model(hf_dirs[shape], [model])
    x, labels = tokens[:, :-1], tokens[:, 1:]
    loss = model(x, torch.arange(x.shape[1]).expand_as(x), None, labels=labels).mean()
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-5)
    loss.backward()  # the padded-logit fill is differentiable; padding rows get no gradient
    emb_grad = model.output_layer.weight.grad
    assert torch.all(emb_grad[cfg.vocab_size:] == 0) and emb_grad[: cfg.vocab_size].abs().sum() > 0


def test_a_wrong_mapping_is_caught(hf_dirs, world1, tmp_path, monkeypatch):
    """Negative controls: the comparison above detects a q/k/v layout without per-group interleaving, and a
    rope scaling that differs only in low_freq_factor."""
    from octomega.convert import live

    shape = "gqa3_tied_scaled"
    cfg = SHAPES[shape]
    tokens = tokens_for(cfg)
    ref = hf_logits(hf_dirs[shape], tokens)

    with monkeypatch.context() as m:
        m.setattr(live, "fuse_qkv", lambda q, k, v, groups: torch.cat([q, k, v]))  # the plain concatenation trap
        out, _ = megatron_logits(hf_dirs[shape], tokens)
    assert (out[..., : cfg.vocab_size] - ref).abs().max() > 0.1

    other = tmp_path / "other_rope"
    shutil.copytree(hf_dirs[shape], other)
    c = json.loads((other / "config.json").read_text())
    c["rope_scaling"]["low_freq_factor"] = 1.0
    (other / "config.json").write_text(json.dumps(c))
    out, _ = megatron_logits(other, tokens)
    assert (out[..., : cfg.vocab_size] - ref).abs().max() > 0.1


def test_bf16_logits_close_to_transformers(hf_dirs, world1):
    shape = "gqa4_untied_llama3"
    cfg = SHAPES[shape]
    tokens = tokens_for(cfg, seq=32)
    ref = hf_logits(hf_dirs[shape], tokens, torch.bfloat16)
    out, model = megatron_logits(hf_dirs[shape], tokens, torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    diff = (out[..., : cfg.vocab_size] - ref).abs()
    assert diff.max() < 0.05 * ref.abs().max()
    assert (out[..., : cfg.vocab_size].argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_model_built_with_other_rope_is_refused(hf_dirs, world1):
    from octomega.convert import ConvertError, load_hf_into_model

    shape = "gqa2_untied_scaled"
    cfg = ModelConfig(**{**SHAPES[shape].__dict__, "rope_scaling": None})
    model = build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=False)
    with pytest.raises(ConvertError, match="rope frequencies differ"):
        load_hf_into_model(hf_dirs[shape], [model])
    wrong_vocab = ModelConfig(**{**SHAPES[shape].__dict__, "vocab_size": 320})
    model = build_model(wrong_vocab, ParallelConfig(), dtype=torch.float32, on_gpu=False)
    with pytest.raises(ConvertError, match="vocab_size: model 320 vs HF 300"):
        load_hf_into_model(hf_dirs[shape], [model])
