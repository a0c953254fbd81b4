"""The `megatron` backend: generation from a Megatron checkpoint, an HF directory or a LIVE GPTModel, with
Megatron-Core's static inference path.

    gen = MegatronGenerator("runs/stable/checkpoints")             # a run dir, checkpoints dir or iter dir
    gen = MegatronGenerator(ddp_model, tokenizer=tok)              # the RL actor itself: same weights, no copy
    gen.generate(prompts, SamplingParams(max_new_tokens=256, temperature=1.0, n=8, seed=step))

Which Megatron-Core 0.19 pieces run, per batch of rows (a row = one prompt x one sample):
- ``GPTInferenceWrapper`` around the (unwrapped) GPTModel, with a fresh ``StaticInferenceContext`` sized to the
  batch: the KV cache Megatron's Attention allocates per layer ([max_seq, batch, kv_heads x head_dim]).
- ``TextGenerationController.generate_all_output_tokens_static_batch``: the decode loop (prefill to the shortest
  prompt, then one token per step; logits gathered across TP ranks). Subclassed in megatron_controller.py only
  to sample with octomega's per-row seeded streams, take log-probabilities of the chosen tokens, and stop on
  several stop tokens, stop strings and max_new_tokens.
- Not ``StaticInferenceEngine``: in 0.19 it first tries to build the dynamic engine (flash-attn kernels, absent
  on CPU and on the GPU machine) and falls back, with a warning, to ``legacy`` mode, which runs the controller
  above; but its ``generate`` reseeds the global torch RNG (to 1234), its constructor leaves ``InferenceMode`` set
  for the whole process, and its scheduler keeps every finished request: side effects on a live training
  process. Batching here does what its scheduler does (fixed-size batches in order), with rows sorted by prompt
  length so that a batch holds similar lengths.
- With PP > 1, Megatron's wrapper passes activations between stages and the controller broadcasts each step's
  logits from the last stage, so every rank samples the same tokens.

Masking: the prefill has queries == keys (causal); later steps feed one query against the cache, which needs no
mask. octomega's SDPAttention also builds the bottom-right causal mask for several queries against a longer
cache (SDPA's ``is_causal`` alone would be wrong there). Prompts are right-padded and start at position 0, so no
padding mask exists: a row longer than the shortest prompt feeds its own prompt tokens until it starts.

A live model is put in eval mode and handed back in the mode it came in; the KV cache and the inference wrapper
are dropped before ``generate`` returns; the global RNG is not touched (an unseeded call draws its seed from
the OS); Megatron's process-wide ``InferenceMode`` flag is set only during the call. Sequence parallelism, which
Megatron's static path refuses, is switched off during generation and back on after (Megatron's own
set_model_to_sequence_parallel; untested here: the local spec's norms cannot be built with it).

Limits: every rank of a TP x PP model-parallel group must call ``generate`` with the same prompts and params
(they decode in lock-step); data-parallel ranks are independent. Static batching: a row that ends early keeps
its slot until its batch ends (the hf backend evicts it). One model chunk (no virtual pipeline stages). FP8
(TE) actors go through Megatron's prepare_model_for_fp8_inference; untested here.
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from octomega.generate.hf_backend import pad_token_id_for, stop_token_ids_for
from octomega.generate.interface import Completion, Generator, SamplingParams
from octomega.generate.registry import register_backend
from octomega.generate.sampling import expand_samples, make_generators, row_completion, sample_rows


def unwrap(model: Any):
    """The bare GPTModel inside Megatron DDP / Float16Module wrappers (or a one-chunk list of them)."""
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise NotImplementedError(f"the megatron backend takes one model chunk, got {len(model)} (virtual "
                                      "pipeline stages are not supported)")
        model = model[0]
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _ensure_runtime():
    """Megatron's parallel state: the caller's when set up, else a world of one (TP=1, PP=1)."""
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        return
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() != 1:
        raise RuntimeError("torch.distributed runs with several ranks but Megatron's parallel state is not set up: "
                           "call octomega.runtime.init_distributed(tp=..., pp=...) before building the generator")
    from octomega.runtime import init_distributed

    init_distributed(tp=1, pp=1, seed=0)


def load_model(path: str | os.PathLike, *, iteration: int | None = None, dtype: torch.dtype | None = None,
               tokenizer: Any = None):
    """(GPTModel at the current TP layout, tokenizer source dir or None, generation config dict) from an HF Llama
    directory or an octomega/Megatron checkpoint (run dir, checkpoints dir or iter dir)."""
    from megatron.core import dist_checkpointing
    from megatron.core import parallel_state as ps

    from octomega.config import ModelConfig, ParallelConfig, load_hf_config
    from octomega.model import build_model
    from octomega.runtime import use_gpu

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model path {str(p)!r} does not exist")
    on_gpu = use_gpu()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    parallel = ParallelConfig(tp=ps.get_tensor_model_parallel_world_size(),
                              pp=ps.get_pipeline_model_parallel_world_size())

    def generation_ready(cfg: ModelConfig) -> ModelConfig:
        cfg = copy.deepcopy(cfg)
        cfg.recompute, cfg.fp8 = "none", "none"
        if not on_gpu:
            cfg.layer_spec = "local"
        return cfg

    from octomega.checkpoint import is_checkpoint_path

    if (p / "config.json").is_file() and not is_checkpoint_path(p):  # a Hugging Face directory (a run dir has
        # octomega's own config.json beside checkpoints/)
        from octomega.convert import load_hf_into_model

        cfg = generation_ready(load_hf_config(ModelConfig(hf_config=str(p))))
        model = build_model(cfg, parallel, dtype=dtype, on_gpu=on_gpu, device=device, init_weights=False)
        load_hf_into_model(p, [model])
        return model, p, _read_generation_config(p)

    from octomega.convert.commands import find_assets, read_checkpoint_config
    from octomega.checkpoint import load_checkpoint, resolve

    it_dir = resolve(p, iteration)
    cfg, run = read_checkpoint_config(it_dir)
    rows = dist_checkpointing.load_tensors_metadata(str(it_dir))["embedding.word_embeddings.weight"].global_shape[0]
    if rows % parallel.tp:
        raise ValueError(f"{it_dir} stores {rows} embedding rows, which TP={parallel.tp} does not divide: load it "
                         "at a TP size that divides it")
    cfg = generation_ready(cfg)
    cfg.make_vocab_size_divisible_by = rows // parallel.tp  # padded_vocab_size(cfg, tp) == the stored rows
    model = build_model(cfg, parallel, dtype=dtype, on_gpu=on_gpu, device=device, init_weights=False)
    load_checkpoint(it_dir, model)
    assets = None if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)) \
        else find_assets(it_dir, run, tokenizer)
    return model, assets, _read_generation_config(assets) if assets else {}


def _read_generation_config(d: Path) -> dict:
    import json

    f = Path(d) / "generation_config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


@register_backend("megatron")
class MegatronGenerator(Generator):
    """``MegatronGenerator(path)`` (octomega checkpoint or HF directory) or ``MegatronGenerator(model, tokenizer=tok)``
    (a live GPTModel, possibly wrapped in Megatron DDP; its weights are used in place).

    Torch.distributed and Megatron's parallel state must be set up for TP > 1 (octomega.runtime.init_distributed);
    without them a world of one is started. tokenizer: an HF tokenizer or its directory (a checkpoint finds its
    own in hf_assets/, init.hf_path or data.tokenizer). dtype (paths only): default bf16 on GPU, fp32 on CPU.
    batch_size: rows (prompt x sample) per static batch. stop_token_ids: default EOS + <|end_of_text|> + <|eot_id|>.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, iteration: int | None = None,
                 dtype: torch.dtype | str | None = None, batch_size: int = 32,
                 stop_token_ids: Sequence[int] | None = None):
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _ensure_runtime()
        gen_cfg: dict = {}
        if isinstance(model, (str, os.PathLike)):
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            path = model
            model, assets, gen_cfg = load_model(path, iteration=iteration, dtype=dtype, tokenizer=tokenizer)
            if tokenizer is None:
                if assets is None:
                    raise ValueError(f"no tokenizer found for {str(path)!r} (looked in hf_assets/, init.hf_path and "
                                     "data.tokenizer): pass tokenizer=<HF tokenizer or its directory>")
                tokenizer = assets
            model.eval()
            self._owns_model = True
        elif tokenizer is None:
            raise ValueError("MegatronGenerator with a live model needs its tokenizer: "
                             "MegatronGenerator(model, tokenizer=tok)")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self._owns_model = getattr(self, "_owns_model", False)
        self.model = unwrap(model)
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.device = next(self.model.parameters()).device
        cfg = getattr(self.model, "octomega_model_config", None)
        self.vocab = cfg.vocab_size if cfg is not None else self.model.vocab_size
        if len(tokenizer) > self.model.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the model only {self.model.vocab_size} rows")
        eos = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=gen_cfg.get("eos_token_id")))
        self.stop_token_ids = list(stop_token_ids) if stop_token_ids is not None else stop_token_ids_for(tokenizer, eos)
        if not self.stop_token_ids:
            raise ValueError("no stop token: the tokenizer has no EOS and no Llama-3 stop token; pass stop_token_ids")

    def close(self) -> None:
        """Drop a model this generator loaded (a live model belongs to its caller and is left alone)."""
        if self._owns_model and self.model is not None:
            self.model = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        if self.model is None:
            raise RuntimeError("this MegatronGenerator was closed")
        if not prompts:
            return []
        encoded = self.encode(prompts)
        if any(not ids for ids in encoded):
            raise ValueError("a prompt encodes to no tokens (empty prompt and no BOS): give it at least one token")
        if not params.greedy and params.seed is None:  # TP ranks must draw the same samples: share one seed
            params = copy.copy(params)
            params.seed = self._shared_random_seed()
        rows = sample_rows(encoded, params)
        results: dict[tuple[int, int], Completion] = {}
        with self._generation_mode() as controller:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                outs = self._decode(controller, [encoded[i] for i, _ in chunk], chunk, params)
                for row, (ids, lps, reason) in zip(chunk, outs):
                    results[row] = row_completion(self.decode, row, ids, lps, reason, params.stop,
                                                  keep_stop_tokens=params.keep_stop_tokens)
        return expand_samples(results, len(prompts), params)

    def _filler_id(self) -> int:
        """The id Megatron pads its token buffer with (positions overwritten before they are read): a real
        token id, since the embedding would fail on -1 (the id benchmarks give as stop token to disable stops)."""
        try:
            return pad_token_id_for(self.tokenizer)
        except IndexError:  # no pad, EOS or Llama-3 token in the vocabulary
            return 0

    def _shared_random_seed(self) -> int:
        """A fresh random seed, the same on every rank of the model-parallel group (TP x PP ranks decode the same
        rows in lock-step), drawn from the OS so that the global torch RNG is left alone."""
        from megatron.core import parallel_state as ps

        from octomega.runtime import collective_device

        group = ps.get_model_parallel_group()
        seed = torch.tensor([int.from_bytes(os.urandom(7), "little")], dtype=torch.long,
                            device=collective_device(group))
        if torch.distributed.get_world_size(group) > 1:
            torch.distributed.broadcast(seed, src=torch.distributed.get_process_group_ranks(group)[0], group=group)
        return int(seed.item())

    @contextlib.contextmanager
    def _generation_mode(self):
        """Eval mode, no sequence parallelism, Megatron's InferenceMode flag; a controller around a fresh
        inference wrapper. Everything is restored (and the wrapper dropped) on exit, also after an error."""
        from megatron.core.inference.contexts import StaticInferenceContext
        from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import GPTInferenceWrapper
        from megatron.core.inference.utils import InferenceMode
        from megatron.core.transformer.utils import set_model_to_sequence_parallel

        from octomega.generate.megatron_controller import MegatronTokenizer, OctoController, cpu_pipeline_shim

        model = self.model
        was_training, was_active = model.training, InferenceMode.is_active()
        seq_parallel = bool(model.config.sequence_parallel)
        model.eval()
        if seq_parallel:
            set_model_to_sequence_parallel(model, False)
        InferenceMode.set_active()
        wrapper = GPTInferenceWrapper(model, StaticInferenceContext(1, 1))
        try:
            with cpu_pipeline_shim():
                yield OctoController(wrapper, MegatronTokenizer(self.tokenizer, self._filler_id()))
        finally:
            wrapper.inference_context = None
            if not was_active:
                InferenceMode.unset_active()
            if seq_parallel:
                set_model_to_sequence_parallel(model, True)
            model.train(was_training)

    def _decode(self, controller, prompts: list[list[int]], rows: list[tuple[int, int]], params: SamplingParams):
        """One static batch. Returns [(token_ids, logprobs, finish_reason)] in row order."""
        from megatron.core.inference.contexts import StaticInferenceContext
        from megatron.core.inference.inference_request import InferenceRequest
        from megatron.core.inference.sampling_params import SamplingParams as MegatronSamplingParams

        from octomega.generate.megatron_controller import BatchState

        n, dev = len(prompts), self.device
        context = StaticInferenceContext(n, max(len(p) for p in prompts) + params.max_new_tokens)
        controller.inference_wrapped_model.inference_context = context
        controller.state = BatchState(
            params=params, prompt_lens=[len(p) for p in prompts], generators=make_generators(params, rows, dev),
            stop_ids=torch.tensor(self.stop_token_ids, device=dev), vocab=self.vocab, decode=self.decode,
            done=torch.zeros(n, dtype=torch.bool, device=dev), count=torch.zeros(n, dtype=torch.long, device=dev),
            logprobs=torch.zeros(n, params.max_new_tokens, dtype=torch.float32, device=dev),
            stopped=torch.zeros(n, dtype=torch.bool, device=dev))
        # Megatron's sampling knobs are unused (OctoController samples); return_log_probs=False keeps the prefill
        # from materialising logits for every prompt position.
        mparams = MegatronSamplingParams(num_tokens_to_generate=params.max_new_tokens, return_log_probs=False,
                                         temperature=1.0, top_k=0, top_p=0.0)
        requests = OrderedDict((r, InferenceRequest(request_id=r, prompt="", sampling_params=mparams,
                                                    prompt_tokens=list(p))) for r, p in enumerate(prompts))
        try:
            done = controller.generate_all_output_tokens_static_batch(requests)
            st = controller.state
            counts, stopped = st.count.tolist(), st.stopped.tolist()
            lps = st.logprobs.tolist()
            out = []
            for r, req in done.items():
                ids = req.generated_tokens.tolist()
                if len(ids) != counts[r]:
                    raise RuntimeError(f"Megatron returned {len(ids)} tokens for row {r}, octomega counted {counts[r]}")
                out.append((ids, lps[r][:len(ids)], "stop" if stopped[r] else "length"))
            return out
        finally:
            controller.state = None
            context.key_value_memory_dict.clear()
            controller.inference_wrapped_model.inference_context = StaticInferenceContext(1, 1)
