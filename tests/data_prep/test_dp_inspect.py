"""data_prep.inspect: decoded documents and histogram of a prefix; blend verification."""

from __future__ import annotations

import json

from dp_helpers import quiet, sample_texts, write_jsonl

from data_prep import inspect, mix, tokenize


def test_prefix_counts_histogram_and_decoded_documents(tmp_path, tokenizer_dir, capsys):
    texts = sample_texts(40, seed=11)
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    stats = tokenize.run(tmp_path / "in.jsonl", tmp_path, "c", tokenizer_dir, log=quiet)
    assert inspect.main([str(tmp_path / "c"), "--docs", "2", "--start", "3"]) == 0  # tokenizer from the stats
    out = capsys.readouterr().out
    assert f"40 documents, {stats['tokens']:,} tokens (uint16)" in out
    assert f"<|begin_of_text|>{texts[3]}<|end_of_text|>" in out and texts[4] in out and texts[2] not in out
    assert "--- document 3" in out and "#" in out


def test_blend_verification(tmp_path, tokenizer_dir, other_tokenizer_dir, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in sample_texts(40, seed=12)])
    tokenize.run(tmp_path / "in.jsonl", tmp_path, "web", tokenizer_dir, valid_docs=4, log=quiet)
    assert mix.main(["--stats", str(tmp_path), "--mixture", "tiny_stable", "--train-tokens", "1M",
                     "--out", str(tmp_path / "b.json")]) == 0
    assert inspect.main(["--blend", str(tmp_path / "b.json"), "--tokenizer", str(tokenizer_dir)]) == 0
    assert "blend OK" in capsys.readouterr().out
    assert inspect.main(["--blend", str(tmp_path / "b.json"), "--tokenizer", str(other_tokenizer_dir)]) == 2
    assert "train with the tokenizer the corpora were tokenized with" in capsys.readouterr().err
    blend = json.loads((tmp_path / "b.json").read_text())
    blend["corpora"][0]["weight"] = 0.5
    (tmp_path / "bad.json").write_text(json.dumps(blend))
    assert inspect.main(["--blend", str(tmp_path / "bad.json")]) == 2
    assert "sum to 0.500000000" in capsys.readouterr().err


def test_blend_verification_finds_token_ids_beyond_the_vocabulary(tmp_path, tokenizer_dir, capsys):
    """A corpus whose .bin holds an id >= the tokenizer's vocabulary (a corrupt byte, a wrong tokenizer) is named
    by `inspect --blend` before training would fail at step 1 with an IndexError naming nothing."""
    import numpy as np

    from data_prep.megatron_io import read_index
    from data_prep.tokenizer_utils import describe_tokenizer

    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in sample_texts(40, seed=13)])
    tokenize.run(tmp_path / "in.jsonl", tmp_path, "web", tokenizer_dir, valid_docs=4, log=quiet)
    assert mix.main(["--stats", str(tmp_path), "--mixture", "tiny_stable", "--train-tokens", "1M",
                     "--out", str(tmp_path / "b.json")]) == 0
    index = read_index(tmp_path / "web")
    data = np.memmap(str(tmp_path / "web.bin"), dtype=index.dtype, mode="r+")
    data[5] = describe_tokenizer(tokenizer_dir).vocab_size + 7
    data.flush()
    assert inspect.main(["--blend", str(tmp_path / "b.json"), "--tokenizer", str(tokenizer_dir)]) == 2
    err = capsys.readouterr().err
    assert "web.bin holds token id" in err and "outside the" in err
