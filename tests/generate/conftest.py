"""Fixtures for generation tests: prompts and an hf generator on the tiny random Llama (tests/conftest.py's
tiny_model_dir: hidden 64, 2 layers, a Llama-3-style BPE tokenizer; octomega.generate.tiny, never downloaded)."""
from __future__ import annotations

import pytest
import torch

PROMPTS = [
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer:",
    "Q: hi",
    "Problem:\nFind the domain of the expression $x$ and the value of $y$.\n\nSolution:\n",
    "the",
    "A conversation between User and Assistant. User: 2+3?\nAssistant:",
]


@pytest.fixture(scope="session")
def hf_gen(tiny_model_dir):
    """float64 so that batched vs unbatched comparisons are exact rather than up to rounding."""
    from octomega.generate import get_generator

    return get_generator("hf", str(tiny_model_dir), dtype=torch.float64, batch_size=8)


@pytest.fixture
def prompts():
    return list(PROMPTS)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py)."""
