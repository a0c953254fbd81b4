"""The generation contract: SamplingParams, the stop-string helper shared by all backends, the registry."""
from __future__ import annotations

import importlib.util

import pytest

from octomega.generate import (Completion, Generator, SamplingParams, available_backends, find_stop, get_generator,
                               register_backend, truncate_at_stop)


def test_sampling_params_defaults_and_validation():
    p = SamplingParams()
    assert p.greedy and p.n == 1 and p.stop == [] and p.max_new_tokens == 1024
    assert not SamplingParams(temperature=0.7).greedy
    assert SamplingParams(stop="\nQ:").stop == ["\nQ:"]
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"n": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# A toy tokenizer: each token id maps to a fixed string piece.
PIECES = {1: "The", 2: " answer", 3: " is", 4: " 6", 5: ".\n", 6: "Q", 7: ":", 8: " next", 9: "\n\n", 10: "x"}


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def test_truncate_at_stop_cuts_text_and_tokens_consistently():
    ids = [1, 2, 3, 4, 5, 6, 7, 8]  # "The answer is 6.\nQ: next"
    text, kept, lps, cut = truncate_at_stop(decode, ids, [-0.1 * i for i in ids], ["\nQ:"])
    assert cut and text == "The answer is 6."
    # the stop string starts inside token 5 (".\n"): it is kept so no character of the answer is lost
    assert kept == [1, 2, 3, 4, 5] and decode(kept).startswith(text)
    assert lps == [-0.1 * i for i in kept]


def test_truncate_at_stop_earliest_of_several_and_no_stop():
    ids = [1, 9, 10, 5, 6, 7]  # "The\n\nx.\nQ:"
    text, kept, _, cut = truncate_at_stop(decode, ids, [0.0] * 6, ["\nQ:", "\n\n"])
    assert cut and text == "The" and kept == [1]  # the stop string starts on a token boundary: dropped whole
    text, kept, lps, cut = truncate_at_stop(decode, [1, 2], [0.5, 0.25], ["\nQ:"])
    assert not cut and text == "The answer" and kept == [1, 2] and lps == [0.5, 0.25]
    assert find_stop("abc", []) == -1 and find_stop("a\nQ:b", ["b", "\nQ:"]) == 1


def test_keep_stop_tokens_keeps_the_stop_strings_tokens_but_not_its_text():
    """SamplingParams.keep_stop_tokens (the authors' RL rollouts: vLLM with include_stop_str_in_output=False cuts the
    text only): token_ids run up to the token that completes the stop string; the text still ends before it."""
    ids = [1, 2, 3, 4, 5, 6, 7, 8]  # "The answer is 6.\nQ: next": the engine would have stopped after token 7
    text, kept, lps, cut = truncate_at_stop(decode, ids, [-0.1 * i for i in ids], ["\nQ:"], keep_stop_tokens=True)
    assert cut and text == "The answer is 6."
    assert kept == [1, 2, 3, 4, 5, 6, 7] and decode(kept).endswith("\nQ:") and lps == [-0.1 * i for i in kept]
    ids = [1, 9, 10, 5, 6, 7]  # "The\n\nx.\nQ:": the earliest stop ("\n\n", token 9) ends the tokens too
    text, kept, _, cut = truncate_at_stop(decode, ids, [0.0] * 6, ["\nQ:", "\n\n"], keep_stop_tokens=True)
    assert cut and text == "The" and kept == [1, 9]
    assert SamplingParams().keep_stop_tokens is False  # evaluation and the tiny recipes cut the tokens too


def test_registry_knows_the_three_backends():
    assert {"hf", "vllm", "megatron"} <= set(available_backends())
    with pytest.raises(ValueError, match="unknown generation backend"):
        get_generator("nope", "x")


@pytest.mark.skipif(importlib.util.find_spec("octomega.generate.megatron_backend") is not None,
                    reason="the megatron backend exists: its own tests cover it")
def test_megatron_backend_missing_is_a_clear_error():
    with pytest.raises(ValueError, match="megatron"):
        get_generator("megatron", "some/ckpt")


def test_register_a_custom_backend():
    @register_backend("echo-test")
    class Echo(Generator):
        def __init__(self, model, **kw):
            self.model = model

        def generate(self, prompts, params):
            return [[Completion(prompt_index=i, sample_index=j, text=p, token_ids=[], logprobs=[],
                                finish_reason="stop") for j in range(params.n)] for i, p in enumerate(prompts)]

    gen = get_generator("echo-test", "m")
    out = gen.generate(["a", "b"], SamplingParams(n=2))
    assert [[c.text for c in o] for o in out] == [["a", "a"], ["b", "b"]]
    with pytest.raises(TypeError):
        register_backend("bad")(object)


def test_backends_are_imported_lazily():
    """Importing octomega.generate and using hf must not import vllm, megatron-core or the megatron backend."""
    import subprocess
    import sys

    code = (
        "import sys, octomega.generate as g\n"
        "g.backend_class('hf')\n"
        "bad = [m for m in ('vllm', 'megatron', 'megatron.core', 'octomega.generate.megatron_backend',"
        " 'octomega.generate.vllm_backend') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'megatron' in g.available_backends()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("octomega.generate.megatron_backend") is None,
                    reason="the megatron backend is not there yet")
def test_megatron_backend_registers_by_name():
    from octomega.generate import backend_class

    cls = backend_class("megatron")
    assert issubclass(cls, Generator) and cls.name == "megatron"
