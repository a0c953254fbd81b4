"""Weight streaming to rollout engines: the stream (HF name, tensor) equals the HF checkpoint the model came
from and the run's HF export, for the local and the Transformer Engine parameter names, in bounded buckets; an
hf engine ends with the trainer's exact logits. The vLLM engine's side: tests/rl/test_vllm_rl.py (the real engine)."""

from __future__ import annotations

import pytest
import torch

from octomega.convert.mapping import LlamaShape
from octomega.convert.random_llama import tiny_shapes, write_random_llama
from octomega.rl.weight_stream import HFReceiver, WeightSync
from rl_helpers import RecordingReceiver, megatron_from_hf, read_safetensors, rename_to_te

SHAPES = ["gqa2_untied_scaled", "gqa3_tied_scaled"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl_sync")
    return {s: write_random_llama(root / s, tiny_shapes()[s], dtype=torch.float32, seed=7) for s in SHAPES}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("naming", ["local", "te"])
def test_stream_equals_checkpoint_and_export(world1, hf_dirs, tmp_path, shape, naming):
    from octomega.convert.mapping import layer_naming
    from octomega.rl.export import export_hf

    model, cfg = megatron_from_hf(hf_dirs[shape])
    if naming == "te":
        rename_to_te(model)
    assert layer_naming(model.decoder.layers[0]) == naming
    rec = RecordingReceiver()
    bucket = 6_000  # bytes: several buckets even for this tiny model
    stats = WeightSync(rec, bucket_bytes=bucket).push([model], cfg)
    stream = rec.stream
    names = [n for n, _ in stream]
    assert names == [n for n, _ in LlamaShape.of(cfg).hf_tensors()]  # every tensor once, in HF order
    assert rec.calls[0] == "begin" and rec.calls[-1] == "end" and len(rec.buckets) == stats["sync_buckets"] > 2
    for b in rec.buckets[:-1]:  # a bucket closes as soon as it reaches the budget
        sizes = [t.numel() * t.element_size() for _, t in b]
        assert sum(sizes) >= bucket and sum(sizes[:-1]) < bucket
    source = read_safetensors(hf_dirs[shape])
    exported = read_safetensors(export_hf(model, cfg, tmp_path / "hf", tokenizer_dir=hf_dirs[shape]))
    assert set(source) == set(exported) == set(names)
    for n, t in stream:
        assert torch.equal(t, source[n]), n
        assert torch.equal(t, exported[n]), n


def test_stream_is_a_copy(world1, hf_dirs):
    """The engine's tensors must not follow the live parameters after the next optimizer step."""
    model, cfg = megatron_from_hf(hf_dirs["gqa2_untied_scaled"])
    rec = RecordingReceiver()
    WeightSync(rec).push([model], cfg)
    before = dict(rec.stream)["model.norm.weight"].clone()
    with torch.no_grad():
        model.decoder.final_layernorm.weight.add_(1.0)
    assert torch.equal(dict(rec.stream)["model.norm.weight"], before)


def test_hf_receiver_reproduces_the_trainer_logits(world1, hf_dirs):
    from transformers import AutoTokenizer

    from octomega.rl.engines import build_hf_llama

    hf_dir = hf_dirs["gqa2_untied_scaled"]
    model, cfg = megatron_from_hf(hf_dir)
    with torch.no_grad():  # move away from the checkpoint, as training would
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    hf = build_hf_llama(cfg, tok, torch.float32, torch.device("cpu"))
    WeightSync(HFReceiver(hf), bucket_bytes=4096).push([model], cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(tokens, torch.arange(20).expand(2, 20), None)[..., : cfg.vocab_size]
        out = hf(tokens).logits
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_hf_receiver_refuses_an_incomplete_stream(world1, hf_dirs):
    from transformers import AutoTokenizer

    from octomega.rl.engines import build_hf_llama

    hf_dir = hf_dirs["gqa2_untied_scaled"]
    model, cfg = megatron_from_hf(hf_dir)
    recv = HFReceiver(build_hf_llama(cfg, AutoTokenizer.from_pretrained(str(hf_dir)), torch.float32,
                                     torch.device("cpu")))
    recv.begin()
    recv.load([("model.norm.weight", model.decoder.final_layernorm.weight.detach())])
    with pytest.raises(RuntimeError, match="incomplete"):
        recv.end()
    with pytest.raises(KeyError, match="no parameter"):
        recv.load([("model.layers.99.mlp.up_proj.weight", torch.zeros(1))])
