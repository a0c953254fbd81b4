"""The hf backend on a tiny random Llama: batching, stops, seeds, logprobs, loading errors."""
from __future__ import annotations

import pytest
import torch

from octomega.generate import SamplingParams, get_generator
from octomega.generate.hf_backend import HFGenerator, check_hf_model_dir


def test_batched_left_padded_greedy_equals_unbatched(hf_gen, prompts):
    params = SamplingParams(max_new_tokens=24)
    batched = hf_gen.generate(prompts, params)  # one left-padded batch, rows leave as they finish
    for i, p in enumerate(prompts):
        single = hf_gen.generate([p], params)[0][0]
        assert batched[i][0].token_ids == single.token_ids, f"prompt {i}"
        assert batched[i][0].text == single.text
        assert batched[i][0].finish_reason == single.finish_reason
        assert batched[i][0].logprobs == pytest.approx(single.logprobs, abs=1e-9)
    assert {c[0].finish_reason for c in batched} <= {"stop", "length"}


def test_batch_size_does_not_change_results(tiny_model_dir, prompts, hf_gen):
    small = get_generator("hf", str(tiny_model_dir), dtype=torch.float64, batch_size=2)
    params = SamplingParams(max_new_tokens=16)
    assert [c[0].token_ids for c in small.generate(prompts, params)] == \
        [c[0].token_ids for c in hf_gen.generate(prompts, params)]


def test_logprobs_equal_a_forward_pass(hf_gen, prompts):
    for params in (SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)):
        out = hf_gen.generate(prompts[:2], params)
        for p, comps in zip(prompts[:2], out):
            c = comps[0]
            prompt_ids = hf_gen.encode([p])[0]
            ids = torch.tensor([prompt_ids + c.token_ids])
            with torch.no_grad():
                logp = torch.log_softmax(hf_gen.model(ids).logits[0].double(), dim=-1)
            expected = [logp[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(c.token_ids)]
            assert c.logprobs == pytest.approx(expected, abs=1e-8)


def test_stop_strings_truncate_text_and_tokens(hf_gen, prompts):
    params = SamplingParams(max_new_tokens=30)
    free = [c[0] for c in hf_gen.generate(prompts, params)]
    # Pick a piece of a free-running completion as stop string: the stopped run must end right before it.
    i, full = max(enumerate(free), key=lambda x: len(x[1].text))
    assert len(full.text) >= 8, "the tiny model should produce some text"
    stop = full.text[len(full.text) // 2: len(full.text) // 2 + 2]
    cut = full.text.find(stop)
    stopped = hf_gen.generate([prompts[i]], SamplingParams(max_new_tokens=30, stop=[stop]))[0][0]
    assert stopped.text == full.text[:cut] and stop not in stopped.text
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[:len(stopped.token_ids)]  # a prefix of the free run
    assert hf_gen.decode(stopped.token_ids).startswith(stopped.text)
    assert not hf_gen.decode(stopped.token_ids[:-1]).startswith(stopped.text) or not stopped.text
    assert len(stopped.logprobs) == len(stopped.token_ids)
    # keep_stop_tokens (the authors' RL rollouts): the same text, the tokens run through the stop string
    kept = hf_gen.generate([prompts[i]], SamplingParams(max_new_tokens=30, stop=[stop], keep_stop_tokens=True))[0][0]
    assert kept.text == stopped.text and kept.finish_reason == "stop"
    assert kept.token_ids == full.token_ids[:len(kept.token_ids)] and len(kept.token_ids) >= len(stopped.token_ids)
    assert stop in hf_gen.decode(kept.token_ids) and stop not in hf_gen.decode(kept.token_ids[:-1])
    assert len(kept.logprobs) == len(kept.token_ids)


def test_llama3_stop_tokens_end_generation(hf_gen, prompts):
    vocab = hf_gen.tokenizer.get_vocab()
    assert {vocab["<|end_of_text|>"], vocab["<|eot_id|>"]} <= set(hf_gen.stop_token_ids)
    assert hf_gen.pad_token_id == vocab["<|pad|>"]
    out = [c[0] for c in hf_gen.generate(prompts * 2, SamplingParams(max_new_tokens=40, temperature=1.0, seed=1))]
    stopped = [c for c in out if c.finish_reason == "stop"]
    assert stopped, "the random model should emit a stop token within 40 tokens for some prompt"
    for c in stopped:  # the stop token ends token_ids (the policy must learn it) but not the text
        assert c.token_ids[-1] in hf_gen.stop_token_ids
        assert "<|" not in c.text
    for c in out:
        assert c.finish_reason == "stop" or len(c.token_ids) == 40


def test_max_new_tokens_and_custom_stop_tokens(tiny_model_dir, prompts):
    gen = get_generator("hf", str(tiny_model_dir), dtype=torch.float64, stop_token_ids=[])
    out = gen.generate(prompts[:3], SamplingParams(max_new_tokens=7))
    assert all(c[0].finish_reason == "length" and len(c[0].token_ids) == 7 for c in out)


def test_n_samples_with_seeds_are_reproducible(hf_gen, tiny_model_dir, prompts):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = hf_gen.generate(prompts, params)
    b = get_generator("hf", str(tiny_model_dir), dtype=torch.float64, batch_size=3).generate(prompts, params)
    ids = lambda out: [[c.token_ids for c in o] for o in out]  # noqa: E731
    assert ids(a) == ids(b)  # same seed, other batch size: same samples
    assert all(len(o) == 3 and [c.sample_index for c in o] == [0, 1, 2] for o in a)
    assert all(c.prompt_index == i for i, o in enumerate(a) for c in o)
    assert any(len({tuple(c.token_ids) for c in o}) > 1 for o in a)  # samples of a prompt differ
    other = hf_gen.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=8))
    assert ids(other) != ids(a)


def test_greedy_with_n_returns_identical_copies(hf_gen, prompts):
    out = hf_gen.generate(prompts[:2], SamplingParams(max_new_tokens=8, n=3))
    for o in out:
        assert [c.sample_index for c in o] == [0, 1, 2] and len({tuple(c.token_ids) for c in o}) == 1


def test_top_p_keeps_the_nucleus():
    from octomega.generate.sampling import top_p_filter

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert top_p_filter(probs, 0.7)[0].tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert top_p_filter(probs, 0.1)[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_live_model_and_tokenizer(tiny_model_dir, hf_gen, prompts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()  # e.g. the RL actor between updates
    live = HFGenerator(model, tokenizer=tok)
    params = SamplingParams(max_new_tokens=10)
    assert [c[0].token_ids for c in live.generate(prompts, params)] == \
        [c[0].token_ids for c in hf_gen.generate(prompts, params)]
    assert model.training  # handed back in the mode it came in
    with pytest.raises(ValueError, match="tokenizer"):
        HFGenerator(model)


def test_model_dir_errors(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_hf_model_dir(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_hf_model_dir(tmp_path / "f.txt")
    megatron = tmp_path / "ckpt"
    (megatron / "iter_0000010").mkdir(parents=True)
    (megatron / "latest_checkpointed_iteration.txt").write_text("10")
    with pytest.raises(ValueError, match="is an octomega run or Megatron checkpoint.*mcore-to-hf.*--backend megatron"):
        check_hf_model_dir(megatron)
    run = tmp_path / "run"  # a run dir: octomega's config.json beside checkpoints/
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"name": "a_run"}')
    with pytest.raises(ValueError, match="is an octomega run or Megatron checkpoint"):
        check_hf_model_dir(run)
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no weights"):
        check_hf_model_dir(weightless)
    assert check_hf_model_dir(tiny_model_dir) == tiny_model_dir


def test_dtype_names(tiny_model_dir):
    from octomega.generate.hf_backend import torch_dtype

    assert torch_dtype("bf16") is torch.bfloat16 and torch_dtype("float32") is torch.float32
    assert torch_dtype(None) is None and torch_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        get_generator("hf", str(tiny_model_dir), dtype="float17")
