"""Issue 17, item 6: a token id outside the vocabulary in a training corpus is one error naming the .bin file and
the document (octomega/train/checked_dataset.py), with or without DataLoader workers, instead of an IndexError
naming nothing at step 1 (or, with TP > 1, silent training on masked ids)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from workers import tiny_cfg

from data_prep.megatron_io import PrefixWriter
from data_prep.mix import BLEND_FORMAT
from octomega.config import RunConfig, from_dict

VOCAB = 256  # tiny_cfg's model.vocab_size
BAD_DOC, BAD_TOKEN, BAD_ID = 13, 5, 300


def corpus_with_a_bad_id(tmp_path) -> tuple[str, str]:
    """20 documents of 20 tokens, all below VOCAB but document BAD_DOC's token BAD_TOKEN; (blend file, prefix)."""
    rng = np.random.default_rng(0)
    docs = rng.integers(0, VOCAB - 6, size=(20, 20)).astype(np.uint16)
    docs[BAD_DOC, BAD_TOKEN] = BAD_ID
    prefix = str(tmp_path / "corpus" / "web")
    w = PrefixWriter(prefix, "uint16")
    w.append(docs.reshape(-1), np.full(20, 20))
    w.close()
    blend = {"format": BLEND_FORMAT, "tokenizer_fingerprint": "test", "dtype": "uint16", "valid": [],
             "corpora": [{"name": "web", "prefix": prefix, "weight": 1.0}]}
    (tmp_path / "blend.json").write_text(json.dumps(blend))
    return str(tmp_path / "blend.json"), prefix


def expected(prefix: str) -> str:
    return (rf"{re.escape(prefix)}\.bin, document {BAD_DOC} \(0-based\), token {BAD_TOKEN}: id {BAD_ID} is outside "
            rf"the vocabulary of {VOCAB} ids \(data.tokenizer, else model.vocab_size\)\. The corpus was tokenized with "
            r"another tokenizer or is corrupt: .*data_prep.inspect --blend BLEND --tokenizer DIR --full.*")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_data_loader_names_the_file_and_document(tmp_path, num_workers):
    from octomega.train.checked_dataset import TokenIdError
    from octomega.train.data import build_datasets, train_iterator

    blend, prefix = corpus_with_a_bad_id(tmp_path)
    cfg = from_dict(RunConfig, tiny_cfg(tmp_path / "run", f"data.blend={blend}", "data.mock=false",
                                        f"data.num_workers={num_workers}"))
    train, _, _, _ = build_datasets(cfg, num_train_samples=40, dp=1)  # 40 x 33 tokens: every document, twice
    with pytest.raises(TokenIdError) as e:
        for _ in train_iterator(train, cfg, start_step=0, steps=5, dp=1, dp_rank=0):
            pass
    assert re.fullmatch(expected(prefix), str(e.value)), str(e.value)


@pytest.mark.slow
def test_training_stops_with_one_line(tmp_path):
    blend, prefix = corpus_with_a_bad_id(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_cfg(tmp_path / "run", f"data.blend={blend}", "data.mock=false",
                                                           "data.num_workers=2")))
    proc = subprocess.run([sys.executable, "-m", "octomega", "train", str(tmp_path / "cfg.json")], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch("octomega train: error: " + expected(prefix), last), last
