"""The generation interface every backend implements: prompts + SamplingParams -> Completions.

One contract for three backends (hf, vllm, megatron) so that evaluation and RL rollouts never care which
engine produced a completion:

- ``SamplingParams``: what to generate (max new tokens, temperature/top-p, seed, n samples, stop strings).
- ``Completion``: one sample: its text (stop string excluded), the token ids the model produced for it,
  the log-probability of each of those tokens under the model, and why it ended.
- ``Generator.generate(prompts, params) -> list[list[Completion]]``: outer list per prompt, inner per sample.

Conventions shared by all backends (tests check them on the hf backend, the vllm adapter follows them):
- Log-probabilities are ``log_softmax`` of the model's raw logits (no temperature, no top-p), taken at the
  sampled token: what an RL loss needs to compare with the trainer's forward pass.
- A completion that ends on a stop *token* (``<|end_of_text|>``, ``<|eot_id|>``, the tokenizer's EOS) keeps that
  token in ``token_ids`` (the policy must learn to emit it) but not in ``text``.
- A completion that ends on a stop *string* is cut by ``truncate_at_stop``: ``text`` ends just before the
  stop string, ``token_ids`` is the shortest prefix of the generated tokens whose decoding starts with ``text``;
  with ``SamplingParams.keep_stop_tokens`` it is the shortest prefix whose decoding holds the whole stop string
  (what vLLM returns with ``include_stop_str_in_output=False``: the text is cut, the token ids are not).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

# Llama-3 special tokens that end a completion. <|end_of_text|> is the base models' EOS (id 128001),
# <|eot_id|> (128009) ends a turn in the instruct/RL chat format; both must stop generation.
LLAMA3_STOP_TOKENS = ("<|end_of_text|>", "<|eot_id|>")
# Tokens used for padding when the tokenizer has none (Llama-3.1+ ships <|finetune_right_pad_id|>).
LLAMA3_PAD_TOKENS = ("<|pad|>", "<|finetune_right_pad_id|>")

FinishReason = Literal["stop", "length"]


@dataclass(kw_only=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding (then top_p and seed do not matter)."""

    max_new_tokens: int = 1024
    """upper bound on generated tokens per sample (the stop token counts)."""
    temperature: float = 0.0
    """softmax temperature; 0 = greedy (argmax)."""
    top_p: float = 1.0
    """nucleus sampling: keep the smallest set of tokens whose probability sums to >= top_p."""
    seed: int | None = 0
    """base seed; sample j of prompt i draws from its own stream seeded by (seed, i, j), so results do not
    depend on batch size or order. None = nondeterministic."""
    n: int = 1
    """samples per prompt."""
    stop: list[str] = field(default_factory=list)
    """stop strings; the completion text ends just before the first one found (it is not included)."""
    keep_stop_tokens: bool = False
    """keep the tokens of a matched stop string in ``token_ids`` (and ``logprobs``); the text still ends before it.
    RL rollouts of the authors' recipe do (their vLLM rollout cuts only the text, and the policy is trained on
    the stop string's tokens too)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(kw_only=True)
class Completion:
    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    """log-probability of each token in token_ids (raw logits, see module docstring)."""
    finish_reason: FinishReason


class Generator(abc.ABC):
    """A text generator. Subclasses register with ``@register_backend(name)`` (see registry.py)."""

    name: str = "abstract"

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt, ``params.n`` completions (outer list per prompt, inner per sample)."""

    def close(self) -> None:
        """Free engine resources (GPU memory, worker processes). Safe to call twice."""

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_stop(text: str, stop: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def truncate_at_stop(
    decode: Callable[[list[int]], str],
    token_ids: list[int],
    logprobs: list[float],
    stop: Sequence[str],
    *,
    keep_stop_tokens: bool = False,
) -> tuple[str, list[int], list[float], bool]:
    """Cut a generated sequence before its first stop string, keeping text and token ids consistent.

    ``decode`` turns token ids into text (special tokens skipped). Returns (text, token_ids, logprobs, stopped):
    ``text`` ends just before the earliest stop string; ``token_ids`` (and ``logprobs``) keep the shortest prefix
    whose decoding starts with ``text``: when a stop string begins inside a token (e.g. token ".\\n" and stop
    "\\nQ:"), that token is kept so no character of the answer is lost. With ``keep_stop_tokens`` they keep the
    shortest prefix whose decoding holds a whole stop string instead (the tokens a vLLM engine returns: it stops
    after the token that completes one). Without a stop string in the decoded text, everything is returned
    unchanged with stopped=False. Shared by all backends.
    """
    full = decode(token_ids)
    cut = find_stop(full, stop) if stop else -1
    if cut < 0:
        return full, list(token_ids), list(logprobs), False
    text = full[:cut]

    def covered(prefix: str) -> bool:
        return find_stop(prefix, stop) >= 0 if keep_stop_tokens else prefix.startswith(text)

    # Smallest k with covered(decode(ids[:k])); monotone in k for byte-level BPE, so bisect.
    lo, hi = 0, len(token_ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if covered(decode(token_ids[:mid])):
            hi = mid
        else:
            lo = mid + 1
    return text, list(token_ids[:lo]), list(logprobs[:lo]), True
