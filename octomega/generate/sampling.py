"""Token sampling shared by the torch backends: greedy / temperature / top-p with one RNG stream per sample.

Each (prompt i, sample j) row draws from its own ``torch.Generator`` seeded from (seed, i, j), so a sample does
not change when the batch size, the batch composition or the order of prompts changes.
"""
from __future__ import annotations

import numpy as np
import torch

from octomega.generate.interface import SamplingParams


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
