"""One generation interface, three backends (hf, vllm, megatron), picked by name.

    from octomega.generate import SamplingParams, get_generator
    gen = get_generator("hf", "runs/convert/hf")              # or get_generator("hf", model, tokenizer=tok)
    outs = gen.generate(["Question: 2+3?\\nAnswer:"], SamplingParams(max_new_tokens=64, stop=["\\nQuestion:"]))
    outs[0][0].text, outs[0][0].token_ids, outs[0][0].logprobs, outs[0][0].finish_reason

Backends are imported on first use (octomega/generate/registry.py), so importing this package needs neither
vllm nor megatron-core.
"""
from octomega.generate.interface import (
    LLAMA3_PAD_TOKENS,
    LLAMA3_STOP_TOKENS,
    Completion,
    Generator,
    SamplingParams,
    find_stop,
    truncate_at_stop,
)
from octomega.generate.registry import available_backends, backend_class, get_generator, register_backend

__all__ = [
    "Completion", "Generator", "SamplingParams", "get_generator", "register_backend", "available_backends",
    "backend_class", "truncate_at_stop", "find_stop", "LLAMA3_STOP_TOKENS", "LLAMA3_PAD_TOKENS",
]
