"""The megatron backend (Megatron-Core's static inference path) against transformers on the same random weights:
greedy tokens, log-probabilities, stops, seeded samples, checkpoints, a live DDP actor, TP=2."""
from __future__ import annotations

import gc

import pytest
import torch

from octomega.generate import SamplingParams, get_generator
from octomega.generate.tiny import build_tiny_llama
from octomega.testing import hf_greedy

MAX_NEW = 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and on a busy 2-core machine the threads' barrier makes
    each step 10-40x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def untied_dir(tmp_path_factory):
    """An untied GQA Llama (8 query / 2 key-value heads) whose 300-id vocabulary Megatron pads to 384 rows."""
    return build_tiny_llama(tmp_path_factory.mktemp("untied_llama"), heads=8, kv_heads=2, seed=1, vocab_size=300,
                            intermediate=96, max_positions=512, rope_theta=10000.0, tied=False)


@pytest.fixture(scope="session")
def model_dirs(tiny_model_dir, untied_dir):
    return {"tied_gqa4x2_vocab384": tiny_model_dir, "untied_gqa8x2_vocab300": untied_dir}


@pytest.fixture(scope="session")
def mg_gen(tiny_model_dir):
    return get_generator("megatron", str(tiny_model_dir), batch_size=8)


def forward_logprobs(gen, prompt: str, token_ids: list[int]) -> list[float]:
    """log_softmax of one full forward pass (no KV cache) of the generator's own Megatron model."""
    prompt_ids = gen.encode([prompt])[0]
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = gen.model(ids, torch.arange(ids.shape[1])[None], None)[0, :, : gen.vocab].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(token_ids)]


def ids(out):
    return [[c.token_ids for c in o] for o in out]


@pytest.mark.parametrize("shape", ["tied_gqa4x2_vocab384", "untied_gqa8x2_vocab300"])
def test_greedy_equals_transformers_generate(shape, model_dirs, prompts):
    gen = get_generator("megatron", str(model_dirs[shape]), batch_size=8)
    out = gen.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW))
    want = hf_greedy(model_dirs[shape], prompts, MAX_NEW, gen.stop_token_ids)
    assert len({len(p) for p in gen.encode(prompts)}) == len(prompts)  # prompts of different lengths
    assert [o[0].token_ids for o in out] == want
    for o, w in zip(out, want):
        c = o[0]
        assert c.finish_reason == ("stop" if w[-1] in gen.stop_token_ids else "length")
        assert c.text == gen.decode(c.token_ids) and len(c.logprobs) == len(c.token_ids)
    # one prompt per batch gives the same tokens as one batch of all
    single = get_generator("megatron", gen.model, tokenizer=gen.tokenizer, batch_size=1)
    assert ids(single.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW))) == ids(out)


def test_kv_cache_chunks_equal_a_full_forward(mg_gen, monkeypatch):
    """Several queries against a longer KV cache need the bottom-right causal mask (octomega's SDPAttention);
    SDPA's is_causal (top-left) alone gets them wrong: the negative control shows the test would see it."""
    from types import SimpleNamespace

    from megatron.core.inference.contexts import StaticInferenceContext

    from octomega.model import attention

    model, n = mg_gen.model, 13
    tokens = torch.randint(0, mg_gen.vocab, (2, n), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(n)[None].expand(2, n)

    def chunked(chunks=(5, 4, 1, 3)):
        ctx, out, start = StaticInferenceContext(2, n), [], 0
        ctx.config.materialize_only_last_token_logits = False
        for c in chunks:
            out.append(model(tokens[:, start:start + c], pos[:, start:start + c], None, inference_context=ctx))
            ctx.increment_sequence_len_offset(c)
            start += c
        return torch.cat(out, dim=1)

    with torch.no_grad():
        full = model(tokens, pos, None)
        torch.testing.assert_close(chunked(), full, rtol=0, atol=1e-4)

        def top_left_causal(q, k, v, attn_mask=None, is_causal=False, **kw):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, **kw)

        monkeypatch.setattr(attention, "F", SimpleNamespace(scaled_dot_product_attention=top_left_causal))
        assert (chunked()[:, 5:9] - full[:, 5:9]).abs().max() > 0.1


def test_logprobs_equal_a_full_forward_pass(mg_gen, prompts):
    for params in (SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)):
        for p, comps in zip(prompts, mg_gen.generate(prompts, params)):
            c = comps[0]
            assert c.logprobs == pytest.approx(forward_logprobs(mg_gen, p, c.token_ids), abs=1e-4)
            assert all(lp <= 0 for lp in c.logprobs)


def test_seeded_samples_match_the_hf_backend_whatever_the_batch(mg_gen, hf_gen, tiny_model_dir, prompts):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = mg_gen.generate(prompts, params)
    b = get_generator("megatron", mg_gen.model, tokenizer=mg_gen.tokenizer, batch_size=3).generate(prompts, params)
    assert all(c.prompt_index == i and c.sample_index == j for i, o in enumerate(a) for j, c in enumerate(o))
    assert ids(a) == ids(b)  # other batch size, so other batch-mates and prompt-length spreads
    assert ids(mg_gen.generate(prompts[:2], params)) == ids(a)[:2]  # fewer prompts: the first two unchanged
    assert any(len({tuple(c.token_ids) for c in o}) > 1 for o in a)  # samples of a prompt differ
    # the same (seed, prompt, sample) streams as the hf backend: the same samples from the same weights
    assert ids(a) == ids(hf_gen.generate(prompts, params))
    assert ids(mg_gen.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, n=3,
                                                       seed=8))) != ids(a)
    greedy = mg_gen.generate(prompts[:2], SamplingParams(max_new_tokens=8, n=3))
    assert all(len({tuple(c.token_ids) for c in o}) == 1 and len(o) == 3 for o in greedy)


def test_stop_strings_and_llama3_stop_tokens(mg_gen, hf_gen, tiny_model_dir, prompts):
    free = [c[0] for c in mg_gen.generate(prompts, SamplingParams(max_new_tokens=30))]
    i, full = max(enumerate(free), key=lambda x: len(x[1].text))
    stop = full.text[len(full.text) // 2: len(full.text) // 2 + 2]
    cut = full.text.find(stop)
    stopped = mg_gen.generate([prompts[i]], SamplingParams(max_new_tokens=30, stop=[stop]))[0][0]
    assert stopped.text == full.text[:cut] and stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[:len(stopped.token_ids)]
    assert mg_gen.decode(stopped.token_ids).startswith(stopped.text)
    assert len(stopped.logprobs) == len(stopped.token_ids)

    vocab = mg_gen.tokenizer.get_vocab()
    assert {vocab["<|end_of_text|>"], vocab["<|eot_id|>"]} <= set(mg_gen.stop_token_ids)
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=1)
    out = [c[0] for c in mg_gen.generate(prompts * 2, params)]
    ended = [c for c in out if c.finish_reason == "stop"]
    assert ended, "the random model should emit a stop token within 40 tokens for some prompt"
    for c in ended:  # the stop token ends token_ids but not the text
        assert c.token_ids[-1] in mg_gen.stop_token_ids and "<|" not in c.text
    assert all(c.finish_reason == "stop" or len(c.token_ids) == 40 for c in out)
    ref = [c[0] for c in hf_gen.generate(prompts * 2, params)]
    assert [(c.token_ids, c.text, c.finish_reason) for c in out] == [(c.token_ids, c.text, c.finish_reason)
                                                                      for c in ref]
    no_stops = get_generator("megatron", mg_gen.model, tokenizer=mg_gen.tokenizer, stop_token_ids=[-1])
    assert all(c[0].finish_reason == "length" and len(c[0].token_ids) == 7
               for c in no_stops.generate(prompts, SamplingParams(max_new_tokens=7)))


def test_generation_from_a_megatron_checkpoint(tiny_model_dir, mg_gen, prompts, tmp_path):
    from octomega.convert import hf_to_mcore

    ckpt = hf_to_mcore(tiny_model_dir, tmp_path / "ckpt")
    gen = get_generator("megatron", str(ckpt))  # tokenizer found in the checkpoint's hf_assets/
    params = SamplingParams(max_new_tokens=MAX_NEW)
    assert ids(gen.generate(prompts, params)) == ids(mg_gen.generate(prompts, params))
    assert gen.stop_token_ids == mg_gen.stop_token_ids
    # a run directory: checkpoints/ beside octomega's own config.json, which is not an HF config
    import json
    import shutil
    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "checkpoints")
    (run / "config.json").write_text(json.dumps({"name": "a_run", "model": {"num_layers": 2}}))
    gen = get_generator("megatron", str(run))
    assert ids(gen.generate(prompts, params)) == ids(mg_gen.generate(prompts, params))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_generator("megatron", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="tokenizer"):
        get_generator("megatron", mg_gen.model)


def build_actor(model_dir, *, tp: int = 1, sequence_parallel: bool = False, lr: float = 1e-2):
    """The RL actor as the trainer builds it: Megatron DDP + optimizer (octomega.train.setup), HF weights loaded."""
    from octomega.config import ModelConfig, OptimConfig, ParallelConfig
    from octomega.convert import load_hf_into_model
    from octomega.train.setup import build_ddp_model_and_optimizer

    ddp, opt = build_ddp_model_and_optimizer(
        ModelConfig(hf_config=str(model_dir)), ParallelConfig(tp=tp, sequence_parallel=sequence_parallel),
        OptimConfig(lr=lr, weight_decay=0.0, clip_grad=0.0), dtype=torch.float32, on_gpu=False,
        device=torch.device("cpu"))
    load_hf_into_model(model_dir, [ddp.module])
    return ddp, opt


def train_step(ddp, opt, tokens):
    ddp.train()
    ddp.zero_grad_buffer()
    opt.zero_grad()
    x, y = tokens[:, :-1], tokens[:, 1:]
    loss = ddp(x, torch.arange(x.shape[1])[None].expand_as(x), None, labels=y).float().mean()
    loss.backward()
    ddp.finish_grad_sync()
    opt.step()
    return loss.item()


def test_live_actor_keeps_its_mode_weights_and_rng(tiny_model_dir, mg_gen, prompts):
    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.inference.utils import InferenceMode

    ddp, opt = build_actor(tiny_model_dir)
    ddp.train()
    weights = {k: v.detach().clone() for k, v in ddp.module.state_dict().items() if torch.is_tensor(v)}
    rng = torch.get_rng_state()
    gen = get_generator("megatron", ddp, tokenizer=mg_gen.tokenizer)  # DDP-wrapped: unwrapped, not copied
    assert gen.model is ddp.module
    params = SamplingParams(max_new_tokens=12, temperature=1.0, n=2, seed=4)
    before = gen.generate(prompts, params)
    assert ids(before) == ids(mg_gen.generate(prompts, params))
    assert ddp.training and all(m.training for m in ddp.modules())
    assert all(torch.equal(v, ddp.module.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not InferenceMode.is_active()
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, StaticInferenceContext)], "a KV cache was left behind"
    # the trainer can take a step right after generating (no inference tensors kept), and the generator then
    # sees the new weights: it shares them
    tokens = torch.tensor([gen.encode([prompts[0]])[0][:16]])
    assert torch.isfinite(torch.tensor(train_step(ddp, opt, tokens)))
    after = gen.generate(prompts, params)
    assert [c.logprobs for o in after for c in o] != [c.logprobs for o in before for c in o]
    for p, comps in zip(prompts, after):
        assert comps[0].logprobs == pytest.approx(forward_logprobs(gen, p, comps[0].token_ids), abs=1e-4)
    ddp.eval()
    gen.generate(prompts[:1], SamplingParams(max_new_tokens=2))
    assert not ddp.module.training  # eval mode stays eval


def _tp2_pp2_worker(rank, model_dir, ckpt_dir, prompts, sampled):
    from megatron.core import parallel_state as ps

    from octomega.generate.megatron_backend import MegatronGenerator
    from octomega.runtime import init_distributed

    greedy = SamplingParams(max_new_tokens=MAX_NEW)
    init_distributed(tp=2, pp=1, seed=0)
    gen = MegatronGenerator(str(ckpt_dir), batch_size=4)  # saved at TP=1 (384 vocabulary rows), resharded
    assert ps.get_tensor_model_parallel_world_size() == 2 and gen.model.vocab_size == 384
    out = {"greedy": ids(gen.generate(prompts, greedy)), "sampled": ids(gen.generate(prompts, sampled))}
    # the live actor (sequence parallelism would need the TE spec: the local spec's torch norms refuse it)
    ddp, _ = build_actor(model_dir, tp=2)
    ddp.train()
    live = MegatronGenerator(ddp, tokenizer=gen.tokenizer, batch_size=8)
    out["live"] = ids(live.generate(prompts, greedy))
    out["unseeded"] = ids(live.generate(prompts[:2], SamplingParams(max_new_tokens=4, temperature=1.0, seed=None,
                                                                    n=2)))  # one seed drawn for both TP ranks
    out["restored"] = ddp.training
    init_distributed(tp=1, pp=2, seed=0)
    pp = MegatronGenerator(str(model_dir), batch_size=8)  # one layer per stage, logits broadcast from the last
    assert ps.get_pipeline_model_parallel_world_size() == 2 and len(pp.model.decoder.layers) == 1
    out["pp_greedy"], out["pp_sampled"] = ids(pp.generate(prompts, greedy)), ids(pp.generate(prompts, sampled))
    return out


@pytest.mark.slow
@pytest.mark.dist
def test_tp2_and_pp2_equal_tp1(untied_dir, prompts, tmp_path):
    from octomega.convert import hf_to_mcore
    from octomega.testing import run_distributed

    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, n=2, seed=11)
    tp1 = get_generator("megatron", str(untied_dir), batch_size=8)
    want_greedy = ids(tp1.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW)))
    want_sampled = ids(tp1.generate(prompts, sampled))
    ckpt = hf_to_mcore(untied_dir, tmp_path / "ckpt")
    results = run_distributed(_tp2_pp2_worker, world_size=2, args=(str(untied_dir), str(ckpt), prompts, sampled),
                              timeout=600)
    for r in results:
        assert r["greedy"] == want_greedy and r["live"] == want_greedy and r["pp_greedy"] == want_greedy
        assert r["sampled"] == want_sampled and r["pp_sampled"] == want_sampled
        assert len(r["unseeded"][1]) == 2 and r["restored"]
    assert results[0] == results[1]  # the unseeded samples too: both TP ranks drew the same
