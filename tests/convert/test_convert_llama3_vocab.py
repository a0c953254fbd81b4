"""Conversion with Llama 3's real vocabulary (128,256 ids, Meta's tokenizer): hf -> mcore at the tensor-parallel
padding Megatron-LM gives, mcore -> hf back, transformers' LlamaForCausalLM as the oracle."""

import glob
import json

import pytest
import torch

V = 128_256


def tensors(d):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(f"{d}/*.safetensors")):
        out.update(load_file(f))
    return out


def megatron_lm_padding(vocab: int, tp: int, divisible_by: int = 128) -> int:
    """Megatron-LM's own rule (megatron.training, shipped in the megatron-core wheel)."""
    from megatron.training.vocab_utils import calculate_padded_vocab_size

    return calculate_padded_vocab_size(vocab, divisible_by, tp, logging_enabled=False)


def math_prompts():
    from octomega.eval.data import SHIPPED_DIR

    lines = (SHIPPED_DIR / "math500" / "test.jsonl").read_text().splitlines()[:3]
    return [json.loads(x)["problem"] for x in lines]


@pytest.fixture(scope="module")
def real_tokens(tiny_llama3_dir):
    """Real math text through the real tokenizer: ids spread over the whole vocabulary, BOS 128000 first."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama3_dir))
    ids = tok(math_prompts()[0])["input_ids"][:48]
    assert ids[0] == 128_000 and len(ids) == 48 and max(ids[1:]) > 20_000
    return torch.tensor([ids, ids[::-1]])


@pytest.mark.parametrize("tp", [2, 4])
def test_round_trip_with_the_real_vocabulary(tiny_llama3_dir, real_tokens, tmp_path, world1, tp):
    from transformers import LlamaForCausalLM

    from octomega.convert.commands import hf_to_mcore, load_checkpoint_model, mcore_to_hf, verify

    padded = megatron_lm_padding(V, tp)
    assert padded == {2: V, 4: V + 256}[tp]  # 128,256 = 501 x 256: no padding at TP=2; 256 rows at TP=4
    hf_to_mcore(tiny_llama3_dir, tmp_path / "ck", tp=tp)
    it = tmp_path / "ck" / "iter_0000000"
    meta = json.loads((it / "octomega.json").read_text())
    assert meta["padded_vocab_size"] == padded and meta["config"]["model"]["vocab_size"] == V

    src = tensors(tiny_llama3_dir)
    model, cfg, _, _ = load_checkpoint_model(tmp_path / "ck")
    emb, out_w = model.embedding.word_embeddings.weight, model.output_layer.weight
    assert emb.shape == out_w.shape == (padded, 64) and cfg.vocab_size == V
    assert torch.equal(emb[:V], src["model.embed_tokens.weight"]) and torch.equal(out_w[:V], src["lm_head.weight"])
    assert not emb[V:].any() and not out_w[V:].any()  # padding rows are zero
    with torch.no_grad():
        pos = torch.arange(real_tokens.shape[1]).expand_as(real_tokens)
        mg_logits = model(real_tokens, pos, None)
    assert mg_logits.shape[-1] == padded
    del model

    report = verify(tiny_llama3_dir, tmp_path / "ck")  # random ids over all 128,256 against transformers
    assert report["ok"] and report["argmax_agreement"] == 1.0, report

    mcore_to_hf(tmp_path / "ck", tmp_path / "out")
    got = tensors(tmp_path / "out")
    assert sorted(got) == sorted(src)
    for k in src:
        assert torch.equal(got[k], src[k]), k
    assert got["model.embed_tokens.weight"].shape == got["lm_head.weight"].shape == (V, 64)  # padding dropped
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "out" / f).read_bytes() == (tiny_llama3_dir / f).read_bytes(), f
    a = json.loads((tiny_llama3_dir / "config.json").read_text())
    b = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (b["vocab_size"], b["bos_token_id"], b["eos_token_id"]) == (V, 128_000, [128_001, 128_009])
    assert a["vocab_size"] == b["vocab_size"]

    with torch.no_grad():  # the oracle: transformers on the source and on the round-tripped directory
        want = LlamaForCausalLM.from_pretrained(str(tiny_llama3_dir), dtype=torch.float32).eval()(real_tokens).logits
        back = LlamaForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32).eval()(real_tokens).logits
    assert torch.equal(back, want) and want.shape[-1] == V
    assert (mg_logits[..., :V] - want).abs().max() < 1e-3
    assert torch.equal(mg_logits[..., :V].argmax(-1), want.argmax(-1))


def _tp2_generate(rank, ckpt_dir, prompts):
    from megatron.core import parallel_state as ps

    from octomega.generate import SamplingParams
    from octomega.generate.megatron_backend import MegatronGenerator
    from octomega.runtime import init_distributed

    init_distributed(tp=2, pp=1, seed=0)
    gen = MegatronGenerator(str(ckpt_dir), batch_size=4)  # tokenizer from the checkpoint's hf_assets/
    shard = gen.model.embedding.word_embeddings.weight.shape[0]
    out = gen.generate(prompts, SamplingParams(max_new_tokens=6))
    return {"tp": ps.get_tensor_model_parallel_world_size(), "rows_per_rank": shard, "vocab": gen.vocab,
            "ids": [c[0].token_ids for c in out], "logprobs": [c[0].logprobs for c in out]}


@pytest.mark.slow
@pytest.mark.dist
def test_tp2_ranks_split_the_real_vocabulary_and_generate_like_transformers(tiny_llama3_dir, tmp_path):
    """The checkpoint written for TP=4 (128,512 rows) loaded on two gloo ranks: 64,256 vocabulary rows each, and the
    greedy continuations of real prompts equal the hf backend's on the source directory."""
    from octomega.convert.commands import hf_to_mcore
    from octomega.generate import SamplingParams, get_generator
    from octomega.testing import run_distributed

    prompts = [p[:200] for p in math_prompts()]
    hf = get_generator("hf", str(tiny_llama3_dir), batch_size=4)
    want = hf.generate(prompts, SamplingParams(max_new_tokens=6))
    ck = hf_to_mcore(tiny_llama3_dir, tmp_path / "ck", tp=4)
    results = run_distributed(_tp2_generate, world_size=2, args=(str(ck), prompts), timeout=280)
    for r in results:
        assert r["tp"] == 2 and r["rows_per_rank"] == megatron_lm_padding(V, 4) // 2 and r["vocab"] == V
        assert r["ids"] == [c[0].token_ids for c in want]
        for got_lp, want_lp in zip(r["logprobs"], [c[0].logprobs for c in want]):
            assert max(abs(x - y) for x, y in zip(got_lp, want_lp)) < 1e-3
    assert len({i for ids in results[0]["ids"] for i in ids}) > 3  # not a degenerate repetition
