"""Megatron-Core's static-batch decode loop, taught octomega's sampling contract (helper of megatron_backend.py).

``TextGenerationController.generate_all_output_tokens_static_batch`` (Megatron-Core 0.19) runs the loop: prefill
up to the shortest prompt of the batch, then one token per step through the ``StaticInferenceContext`` KV cache,
feeding the remaining prompt tokens of longer rows instead of their samples until those rows have started. It
calls two documented hooks each step, which ``OctoController`` overrides:

- ``sample_from_logits``: Megatron draws every row from one shared ``torch.Generator`` (a row's sample would
  depend on the batch) and returns no log-probabilities unless it materialises [batch, prompt, vocab] logits for
  the whole prompt (``return_log_probs``: 67 GB at batch 64 x 2048 tokens x 128k vocab in fp32). Here each
  (prompt, sample) row draws from its own stream (octomega.generate.sampling, the hf backend's code), only on
  steps where it really generates, and the log-probability of the chosen token is taken from the last-position
  logits the loop already has.
- ``update_generation_status``: Megatron stops on one termination id and does not count the stop token in the
  generated length. Here a row ends on any stop token (kept in its tokens, as interface.py says), on a stop
  string in its decoded tail, or after max_new_tokens (so the batch can end before the longest prompt would).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from megatron.core.inference.text_generation_controllers.text_generation_controller import (
    TextGenerationController,
)

from octomega.generate.interface import SamplingParams
from octomega.generate.sampling import sample_next


class MegatronTokenizer:
    """The tokenizer surface Megatron's controller uses (tokenize, detokenize, eod, bos), over an HF tokenizer.

    ``eod`` pads the batch to its maximum length (those positions are overwritten before they are read) and is
    the termination id Megatron would use; octomega's own stop tokens are checked in OctoController."""

    def __init__(self, hf_tokenizer, eod: int):
        self.hf = hf_tokenizer
        self.eod = int(eod)
        self.bos = hf_tokenizer.bos_token_id
        self.vocab_size = len(hf_tokenizer)

    def tokenize(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=True)["input_ids"])

    def detokenize(self, ids, skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)


@dataclass
class BatchState:
    """What one static batch needs beyond Megatron's own state. Row r of the batch is Megatron's request r."""

    params: SamplingParams
    prompt_lens: list[int]
    generators: list[torch.Generator | None]
    stop_ids: torch.Tensor  # [n_stop] on the model's device
    vocab: int  # logits columns that are real token ids (the rest is Megatron's vocabulary padding)
    decode: object  # ids -> text, special tokens skipped
    done: torch.Tensor  # [batch] bool: the row has ended
    count: torch.Tensor  # [batch] long: tokens generated so far
    logprobs: torch.Tensor  # [batch, max_new_tokens] float32, filled as tokens are drawn
    stopped: torch.Tensor  # [batch] bool: ended on a stop token or stop string (else: length)


@contextlib.contextmanager
def _cpu_sampling_rng():
    """Megatron's controller builds ``torch.Generator(device=torch.cuda.current_device())``; under octomega's CPU
    backend current_device() answers 0, which torch.Generator reads as a CUDA device. Answer "cpu" while the
    controller is constructed (its generator is never used: OctoController samples with per-row generators)."""
    from octomega.runtime import cpu_backend

    if not cpu_backend.enabled():
        yield
        return
    saved = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        yield
    finally:
        torch.cuda.current_device = saved


@contextlib.contextmanager
def cpu_pipeline_shim():
    """With PP > 1 the controller broadcasts each step's logits from the last stage through
    ``inference.communication_utils``, which asserts ``tensor.is_cuda``. Under octomega's CPU backend (gloo) the
    assertion is relaxed to "not None" for the duration of a generate call; nothing changes on a GPU."""
    from megatron.core.inference import communication_utils

    from octomega.runtime import cpu_backend

    if not cpu_backend.enabled():
        yield
        return

    def _is_not_none(tensor):
        assert tensor is not None

    saved = communication_utils._is_cuda
    communication_utils._is_cuda = _is_not_none
    try:
        yield
    finally:
        communication_utils._is_cuda = saved


class OctoController(TextGenerationController):
    """Megatron's TextGenerationController with per-row seeded sampling, raw-logit log-probabilities, several stop
    tokens and stop strings. ``state`` must be set (a BatchState) before each static batch."""

    def __init__(self, inference_wrapped_model, tokenizer: MegatronTokenizer):
        with _cpu_sampling_rng():
            super().__init__(inference_wrapped_model, tokenizer)
        self.state: BatchState | None = None

    def sample_from_logits(self, last_token_logits, sampling_params=None, vocab_size=None, generation_started=None,
                           top_n_logprobs_dict=None, logits=None, **kwargs):
        st = self.state
        logits = last_token_logits[:, : st.vocab]
        tokens = logits.argmax(dim=-1)  # rows still reading their prompt: a placeholder Megatron discards
        live = (generation_started & ~st.done).nonzero().flatten()
        if live.numel():
            rows = live.tolist()
            picked, lps = sample_next(logits[live], st.params, [st.generators[r] for r in rows])
            tokens[live] = picked
            # count < max_new_tokens for a live row: it would be done otherwise
            st.logprobs[live, st.count[live]] = lps.float()
        return tokens

    def update_generation_status(self, updated_prompts_tokens, generation_started, current_context_end_position,
                                 is_generation_done_tensor, generated_sequence_lengths, termination_id=None):
        st = self.state
        latest = updated_prompts_tokens[:, current_context_end_position]
        live = generation_started & ~st.done
        st.count += live
        generated_sequence_lengths += live  # includes the stop token, unlike Megatron's own count
        hit_stop = live & torch.isin(latest, st.stop_ids)
        if st.params.stop:
            tail = max(len(s) for s in st.params.stop) + 1  # tokens that can hold a stop string
            pos = current_context_end_position
            for r in (live & ~hit_stop).nonzero().flatten().tolist():
                start = max(st.prompt_lens[r], pos + 1 - tail)
                text = st.decode(updated_prompts_tokens[r, start:pos + 1].tolist())
                if any(s in text for s in st.params.stop):
                    hit_stop[r] = True
        st.stopped |= hit_stop
        st.done |= hit_stop | (live & (st.count >= st.params.max_new_tokens))
        is_generation_done_tensor = is_generation_done_tensor | st.done
        return is_generation_done_tensor, generated_sequence_lengths.int()
