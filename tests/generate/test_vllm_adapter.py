"""The vllm adapter, tested against a fake engine that records what it is sent (vLLM itself cannot be installed
here: it pins its own torch and needs a GPU). The fake returns vLLM-shaped outputs (RequestOutput.outputs[j]
with text, token_ids, logprobs as [{token_id: Logprob}], finish_reason), including vLLM's habit of keeping the
tokens of a matched stop string in token_ids."""
from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest

from octomega.generate import SamplingParams, get_generator
from octomega.generate.tiny import build_tokenizer

SCRIPT = "The answer is 6.\nQ: and more text"


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class FakeEngine:
    def __init__(self, tokenizer, finish_by_eos=False):
        self.tokenizer, self.calls, self.finish_by_eos = tokenizer, [], finish_by_eos

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append({"prompts": list(prompts), "params": [sp.kw for sp in sampling_params], "use_tqdm": use_tqdm})
        outs = []
        for prompt, sp in zip(prompts, sampling_params):
            kw = sp.kw
            samples = []
            for j in range(kw["n"]):
                ids = self.tokenizer(SCRIPT, add_special_tokens=False)["input_ids"][: kw["max_tokens"]]
                text, reason = self.tokenizer.decode(ids), "length"
                for s in kw["stop"]:  # vLLM: stop at the string, keep its tokens, drop it from the text
                    for k in range(1, len(ids) + 1):
                        if s in self.tokenizer.decode(ids[:k]):
                            text = self.tokenizer.decode(ids[:k]).split(s)[0]
                            ids, reason = ids[:k], "stop"
                            break
                if self.finish_by_eos:
                    ids, reason = ids[:4] + [kw["stop_token_ids"][0]], "stop"
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                lps = [{t: SimpleNamespace(logprob=-0.5 - 0.01 * k - j)} for k, t in enumerate(ids)]
                samples.append(SimpleNamespace(index=j, text=text, token_ids=ids, logprobs=lps, finish_reason=reason))
            outs.append(SimpleNamespace(prompt=prompt, outputs=samples))
        return outs


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_vllm_adapter_with_fake_engine(tokenizer):
    engine = FakeEngine(tokenizer)
    gen = get_generator("vllm", "unused-path", engine=engine, sampling_params_cls=FakeSamplingParams)
    vocab = tokenizer.get_vocab()
    params = SamplingParams(max_new_tokens=64, temperature=0.7, top_p=0.95, n=2, seed=11, stop=["\nQ:"])
    out = gen.generate(["p0", "p1", "p2"], params)

    call = engine.calls[-1]
    assert call["prompts"] == ["p0", "p1", "p2"] and call["use_tqdm"] is False
    sent = call["params"]
    assert len(sent) == 3  # one SamplingParams per prompt (per-prompt seeds)
    for kw in sent:
        assert kw["n"] == 2 and kw["temperature"] == 0.7 and kw["top_p"] == 0.95 and kw["max_tokens"] == 64
        assert kw["stop"] == ["\nQ:"] and kw["logprobs"] == 0 and kw["include_stop_str_in_output"] is False
        assert {vocab["<|end_of_text|>"], vocab["<|eot_id|>"]} <= set(kw["stop_token_ids"])
    assert len({kw["seed"] for kw in sent}) == 3  # different streams per prompt, fixed by (seed, prompt index)
    again = FakeEngine(tokenizer)
    get_generator("vllm", "x", engine=again, sampling_params_cls=FakeSamplingParams).generate(["p0", "p1", "p2"], params)
    assert [kw["seed"] for kw in again.calls[-1]["params"]] == [kw["seed"] for kw in sent]

    assert len(out) == 3 and all(len(o) == 2 for o in out)
    c = out[1][1]
    assert (c.prompt_index, c.sample_index) == (1, 1)
    assert c.text == "The answer is 6." and c.finish_reason == "stop"
    # token ids cut consistently with the text (vLLM had kept "Q:" tokens), logprobs aligned with them
    assert tokenizer.decode(c.token_ids).startswith(c.text)
    assert not tokenizer.decode(c.token_ids).startswith(c.text + "\nQ")
    assert c.logprobs == pytest.approx([-1.5 - 0.01 * k for k in range(len(c.token_ids))])


def test_vllm_adapter_greedy_length_and_eos(tokenizer):
    engine = FakeEngine(tokenizer)
    gen = get_generator("vllm", "x", engine=engine, sampling_params_cls=FakeSamplingParams)
    out = gen.generate(["p"], SamplingParams(max_new_tokens=3, temperature=0.0, top_p=0.5, seed=5))
    kw = engine.calls[-1]["params"][0]
    assert kw["temperature"] == 0.0 and kw["top_p"] == 1.0 and kw["seed"] is None  # greedy: no randomness
    assert out[0][0].finish_reason == "length" and len(out[0][0].token_ids) == 3

    eos_engine = FakeEngine(tokenizer, finish_by_eos=True)
    gen = get_generator("vllm", "x", engine=eos_engine, sampling_params_cls=FakeSamplingParams)
    c = gen.generate(["p"], SamplingParams(max_new_tokens=50))[0][0]
    assert c.finish_reason == "stop" and c.token_ids[-1] in gen.stop_token_ids and "<|" not in c.text
    assert not any(math.isnan(x) for x in c.logprobs)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_is_a_clear_error(tmp_path):
    from octomega.generate.tiny import build_tiny_llama

    d = build_tiny_llama(tmp_path / "m")
    with pytest.raises(ValueError, match="vLLM"):
        get_generator("vllm", str(d))
    with pytest.raises(ValueError, match="live model"):
        get_generator("vllm", object())


def test_vllm_adapter_greedy_n_copies(tokenizer):
    engine = FakeEngine(tokenizer)
    gen = get_generator("vllm", "x", engine=engine, sampling_params_cls=FakeSamplingParams)
    out = gen.generate(["p"], SamplingParams(max_new_tokens=8, n=3))
    assert engine.calls[-1]["params"][0]["n"] == 1
    assert [c.sample_index for c in out[0]] == [0, 1, 2] and len({tuple(c.token_ids) for c in out[0]}) == 1
