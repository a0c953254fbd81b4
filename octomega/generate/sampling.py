"""Token sampling shared by the torch backends (hf, megatron): greedy / temperature / top-p with one RNG stream per
sample, and the rows they decode.

Each (prompt i, sample j) row draws from its own ``torch.Generator`` seeded from (seed, i, j), so a sample does
not change when the batch size, the batch composition or the order of prompts changes. A backend decodes the rows
of ``sample_rows`` in batches, turns each into a Completion with ``row_completion`` and returns
``expand_samples``'s lists.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from octomega.generate.interface import Completion, SamplingParams, truncate_at_stop


def _draws(params: SamplingParams) -> int:
    return 1 if params.greedy else params.n  # greedy samples are identical: decoded once, copied


def sample_rows(encoded: Sequence[Sequence[int]], params: SamplingParams) -> list[tuple[int, int]]:
    """The (prompt index, sample index) rows to decode, for prompts of token ids ``encoded``: every sample, or one
    per prompt when greedy. Longest prompts first: rows of similar lengths share a batch (less padding, fewer
    single-token prefill steps)."""
    rows = [(i, j) for i in range(len(encoded)) for j in range(_draws(params))]
    rows.sort(key=lambda r: -len(encoded[r[0]]))  # stable: sample order within a prompt
    return rows


def row_completion(decode: Callable[[list[int]], str], row: tuple[int, int], token_ids: list[int],
                   logprobs: list[float], finish_reason: str, stop: Sequence[str], *,
                   keep_stop_tokens: bool = False) -> Completion:
    """The Completion of one decoded row, cut before its first stop string (then its finish reason is "stop");
    ``keep_stop_tokens``: SamplingParams.keep_stop_tokens (the stop string's tokens stay in token_ids)."""
    text, ids, lps, cut = truncate_at_stop(decode, token_ids, logprobs, stop, keep_stop_tokens=keep_stop_tokens)
    return Completion(prompt_index=row[0], sample_index=row[1], text=text, token_ids=ids, logprobs=lps,
                      finish_reason="stop" if cut else finish_reason)


def expand_samples(results: dict[tuple[int, int], Completion], n_prompts: int,
                   params: SamplingParams) -> list[list[Completion]]:
    """Per prompt, its ``params.n`` completions from the decoded rows' ``results``: a greedy prompt's one row is
    copied n times, each copy a Completion of its own (own lists, own sample index)."""
    draws = _draws(params)
    out = []
    for i in range(n_prompts):
        samples = [results[(i, j if j < draws else 0)] for j in range(params.n)]
        out.append([Completion(prompt_index=i, sample_index=j, text=c.text, token_ids=list(c.token_ids),
                               logprobs=list(c.logprobs), finish_reason=c.finish_reason)
                    for j, c in enumerate(samples)])
    return out


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for one sample, mixed by numpy's SeedSequence (well spread even for adjacent inputs)."""
    state = np.random.SeedSequence([seed, prompt_index, sample_index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def make_generators(params: SamplingParams, rows: list[tuple[int, int]], device) -> list[torch.Generator | None]:
    """One generator per (prompt_index, sample_index) row; None when greedy or unseeded."""
    if params.greedy or params.seed is None:
        return [None] * len(rows)
    return [torch.Generator(device=device).manual_seed(row_seed(params.seed, i, j)) for i, j in rows]


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero out tokens outside the nucleus (smallest set with cumulative probability >= top_p); renormalise."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cum = sorted_probs.cumsum(dim=-1)
    # Drop a token when the tokens ranked above it already reach top_p (the top token is always kept).
    drop_sorted = (cum - sorted_probs) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token of each row. logits: [rows, vocab]. Returns (token ids [rows], logprobs [rows]).

    The returned logprob is log_softmax of the raw logits at the chosen token (no temperature / top-p), the
    quantity an RL trainer recomputes with a forward pass.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    if params.greedy:
        tokens = logits.argmax(dim=-1)
    else:
        probs = top_p_filter(torch.softmax(logits / params.temperature, dim=-1), params.top_p)
        tokens = torch.stack(
            [torch.multinomial(probs[r], 1, generator=g).squeeze(0) for r, g in enumerate(generators)]
        )
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
