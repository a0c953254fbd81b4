"""data_prep.tokenizer_utils: the tiny Llama-3-style tokenizer, fingerprints, BOS/EOS and dtype checks."""

from __future__ import annotations

import json
import time

import pytest
from dp_helpers import sample_texts

from data_prep.tokenizer_utils import (BOS, EOS, PAD, TokenizerError, describe_tokenizer, load_tokenizer,
                                       tokenizer_fingerprint, train_tokenizer)


def test_train_is_fast_and_transformers_loads_it_like_llama3(tmp_path):
    texts = sample_texts(3000)
    t0 = time.process_time()  # CPU time: other jobs on a shared machine do not count
    out = train_tokenizer(texts, tmp_path / "tok", vocab_size=512)
    assert time.process_time() - t0 < 2.0
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out))
    ids = hf("Tom has 1234 apples.")["input_ids"]
    assert ids[0] == hf.bos_token_id and ids[-1] != hf.eos_token_id  # BOS added, EOS not (Llama 3)
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOS, PAD)
    assert [hf.decode([i]) for i in ids if hf.decode([i]).strip().isdigit()] == ["1", "2", "3", "4"]
    assert hf.decode(ids, skip_special_tokens=True) == "Tom has 1234 apples."
    tok = load_tokenizer(out)
    assert tok.get_vocab_size() <= 512 and tok.token_to_id(BOS) >= 256 and tok.token_to_id("<|eot_id|>") is not None


def test_fingerprint_follows_the_vocabulary_not_the_file(tmp_path, tokenizer_dir, other_tokenizer_dir):
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp_path / "resaved"))
    fp = tokenizer_fingerprint(tokenizer_dir)
    assert fp == tokenizer_fingerprint(tmp_path / "resaved") == tokenizer_fingerprint(tokenizer_dir / "tokenizer.json")
    assert fp != tokenizer_fingerprint(other_tokenizer_dir) and len(fp) == 16


def test_describe_finds_bos_eos_and_checks_dtype(tmp_path, tokenizer_dir):
    info = describe_tokenizer(tokenizer_dir)
    assert (info.bos, info.eos, info.dtype, info.vocab_size) == (BOS, EOS, "uint16", 400)
    assert describe_tokenizer(tokenizer_dir, dtype="int32").dtype == "int32"
    assert describe_tokenizer(tokenizer_dir, bos="none").bos_id is None
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        describe_tokenizer(tokenizer_dir, eos="<|missing|>")
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())  # a tokenizer without any EOS
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != EOS]
    data["post_processor"] = None
    (tmp_path / "noeos").mkdir()
    (tmp_path / "noeos" / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="--eos-token"):
        describe_tokenizer(tmp_path / "noeos")
