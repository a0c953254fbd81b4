"""Fixtures for the data_prep tests: a tokenizer trained here (Llama-3-style specials), tiny synth corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_helpers import sample_texts

from data_prep.synth import generate
from data_prep.tokenizer_utils import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 400-id byte-level BPE with <|begin_of_text|> / <|end_of_text|> / <|eot_id|> / <|pad|>."""
    return train_tokenizer(sample_texts(2000, seed=1), tmp_path_factory.mktemp("tok"), vocab_size=400)


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory) -> Path:
    """A different tokenizer (other vocabulary): mixing it with tokenizer_dir must be refused."""
    return train_tokenizer(sample_texts(2000, seed=2), tmp_path_factory.mktemp("tok2"), vocab_size=300)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """The demo corpora at 2% scale (a few thousand documents; RL and test sets at full size)."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, seed=0, scale=0.02, log=lambda *a: None)
    return out
