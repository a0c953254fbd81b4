"""Fixtures for model tests: random tiny HF Llamas written once per session, and a one-process Megatron world."""

import pytest
import torch

from octomega.convert.random_llama import tiny_shapes, write_random_llama

SHAPES = tiny_shapes()


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """{shape name: HF directory} of fp32 random Llamas (seeded; one per shape of tiny_shapes())."""
    root = tmp_path_factory.mktemp("hf_llamas")
    return {name: write_random_llama(root / name, cfg, dtype=torch.float32, seed=i)
            for i, (name, cfg) in enumerate(SHAPES.items())}


@pytest.fixture
def world1():
    """torch.distributed + Megatron parallel state for this process at TP=1/PP=1 (idempotent)."""
    from octomega.convert.commands import single_process_runtime

    return single_process_runtime()
