"""Fixtures for generation tests: a tiny random Llama (hidden 64, 2 layers) + a Llama-3-style BPE tokenizer,
built here (octomega.generate.tiny), never downloaded."""
from __future__ import annotations

import pytest
import torch

from octomega.generate.tiny import build_tiny_llama

PROMPTS = [
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer:",
    "Q: hi",
    "Problem:\nFind the domain of the expression $x$ and the value of $y$.\n\nSolution:\n",
    "the",
    "A conversation between User and Assistant. User: 2+3?\nAssistant:",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def hf_gen(tiny_model_dir):
    """float64 so that batched vs unbatched comparisons are exact rather than up to rounding."""
    from octomega.generate import get_generator

    return get_generator("hf", str(tiny_model_dir), dtype=torch.float64, batch_size=8)


@pytest.fixture
def prompts():
    return list(PROMPTS)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
    threads make it 10-20x slower; restored after each test."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
