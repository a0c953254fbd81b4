"""The `vllm` backend: vLLM's offline ``LLM`` engine, tensor parallel across the GPUs of one node.

UNVERIFIED: vLLM cannot be installed on the machines this was written on (it pins its own torch and needs a
GPU). The adapter is tested against a fake engine that records what it is sent and returns vLLM-shaped
outputs (tests/generate/test_vllm_adapter.py); it follows vLLM's documented offline API:
``LLM(model, tensor_parallel_size, dtype, seed, ...)``, ``LLM.generate(prompts, [SamplingParams, ...])`` returning
one ``RequestOutput`` per prompt, in order, whose ``.outputs[j]`` carry ``text``, ``token_ids``,
``logprobs`` (a list of {token_id: Logprob(logprob=...)} per generated token when ``logprobs=0`` is asked for)
and ``finish_reason`` ("stop" | "length").

Conventions match the hf backend: stop tokens = EOS + <|end_of_text|> + <|eot_id|>; text and token ids are
cut at stop strings by the shared ``truncate_at_stop`` (vLLM keeps the tokens of a matched stop string in
``token_ids``; we drop the ones past the cut); per-prompt seeds from (seed, prompt index); logprobs are vLLM's
default "raw" logprobs of the sampled tokens (log_softmax of the unprocessed logits).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

from octomega.generate.hf_backend import check_hf_model_dir, stop_token_ids_for
from octomega.generate.interface import Completion, Generator, SamplingParams, truncate_at_stop
from octomega.generate.registry import register_backend
from octomega.generate.sampling import row_seed


def vllm_sampling_kwargs(params: SamplingParams, prompt_index: int, stop_token_ids: Sequence[int]) -> dict:
    """Keyword arguments of vllm.SamplingParams for one prompt."""
    greedy = params.greedy
    return {
        "n": 1 if greedy else params.n,  # greedy samples are identical (and vLLM may refuse n > 1 greedy)
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": None if greedy or params.seed is None else row_seed(params.seed, prompt_index, 0) % 2**31,
        "stop": list(params.stop),
        "stop_token_ids": list(stop_token_ids),
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "logprobs": 0,  # 0 = only the sampled token's logprob
    }


def _sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float]:
    if not logprobs:
        return [math.nan] * len(token_ids)
    out = []
    for tok, entry in zip(token_ids, logprobs):
        lp = entry.get(tok) if isinstance(entry, dict) else None
        out.append(math.nan if lp is None else float(getattr(lp, "logprob", lp)))
    return out


@register_backend("vllm")
class VLLMGenerator(Generator):
    """``VLLMGenerator("/path/to/hf_dir", tensor_parallel_size=8)``.

    engine / sampling_params_cls: inject a ready engine (e.g. one colocated with the RL trainer) or, in tests, a
    fake; by default ``vllm.LLM`` and ``vllm.SamplingParams``. Extra keyword arguments go to ``vllm.LLM``.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.85, engine: Any = None,
                 sampling_params_cls: Callable[..., Any] | None = None, stop_token_ids: Sequence[int] | None = None,
                 **engine_kw: Any):
        if engine is None:
            if not isinstance(model, (str, os.PathLike)):
                raise ValueError("the vllm backend loads weights from a Hugging Face directory; got a live model "
                                 "(use the hf backend, or save it with model.save_pretrained first)")
            check_hf_model_dir(model)
            try:
                import vllm
            except ImportError as e:
                raise ValueError("the vllm backend needs vLLM: pip install -e '.[vllm]' (GPU nodes only)") from e
            engine = vllm.LLM(model=str(model), tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed,
                              gpu_memory_utilization=gpu_memory_utilization, **engine_kw)
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
        if sampling_params_cls is None:
            try:
                from vllm import SamplingParams as sampling_params_cls  # noqa: N813
            except ImportError as e:
                raise ValueError("with a custom engine and no vllm installed, pass sampling_params_cls") from e
        self.engine, self.sampling_params_cls = engine, sampling_params_cls
        self.tokenizer = tokenizer if tokenizer is not None else engine.get_tokenizer()
        self.stop_token_ids = list(stop_token_ids) if stop_token_ids is not None else stop_token_ids_for(self.tokenizer)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        sps = [self.sampling_params_cls(**vllm_sampling_kwargs(params, i, self.stop_token_ids))
               for i in range(len(prompts))]
        outputs = self.engine.generate(list(prompts), sps, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        results = []
        for i, request in enumerate(outputs):
            samples = sorted(request.outputs, key=lambda o: getattr(o, "index", 0))
            if params.greedy:
                samples = samples[:1] * params.n
            comps = []
            for j, o in enumerate(samples):
                ids = list(o.token_ids)
                text, ids, lps, cut = truncate_at_stop(self.decode, ids, _sampled_logprobs(ids, o.logprobs), params.stop,
                                                       keep_stop_tokens=params.keep_stop_tokens)
                reason = "stop" if cut or o.finish_reason == "stop" else "length"
                comps.append(Completion(prompt_index=i, sample_index=j, text=text, token_ids=ids, logprobs=lps,
                                        finish_reason=reason))
            results.append(comps)
        return results

    def close(self) -> None:
        self.engine = None
