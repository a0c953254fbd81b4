"""Issue 17, item 6: a parquet file with a damaged page. In data_prep.tokenize the row group that cannot be read is
a bad record "corrupt_row_group" naming the file and the row group: skipped and reported (the default) or, with
--on-bad-record fail, one error line; the other row groups are read in full. data_prep.rl_prompts fails naming both.
Page checksums are verified."""

from __future__ import annotations

import json

import pytest
from dp_helpers import quiet, read_prefix, sample_texts
from tokenizers import Tokenizer

from data_prep import tokenize

ROWS, GROUP = 300, 100  # three row groups


def damaged_parquet(path, *, compression="snappy", checksums=False):
    """A parquet file of ROWS texts in row groups of GROUP, with 16 bytes flipped inside the middle of row group 1's
    text column chunk (its compressed page data); returns the texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"{i} {t}" for i, t in enumerate(sample_texts(ROWS, seed=7))]
    pq.write_table(pa.Table.from_pylist([{"text": t, "id": i} for i, t in enumerate(texts)]), path,
                   row_group_size=GROUP, compression=compression, write_page_checksum=checksums)
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    raw = bytearray(path.read_bytes())
    mid = start + chunk.total_compressed_size // 2
    raw[mid:mid + 16] = bytes(b ^ 0x5A for b in raw[mid:mid + 16])
    path.write_bytes(bytes(raw))
    return texts


def ids(tok_dir, texts):
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    return [[bos] + tok.encode(t, add_special_tokens=False).ids + [eos] for t in texts]


@pytest.mark.parametrize("compression, checksums", [("snappy", False), ("none", True)])
def test_a_damaged_row_group_is_skipped_and_reported(tmp_path, tokenizer_dir, compression, checksums):
    """snappy: the damaged page does not decompress; uncompressed with page checksums: only the checksum tells (the
    damaged page would otherwise read as other text)."""
    texts = damaged_parquet(tmp_path / "in.parquet", compression=compression, checksums=checksums)
    stats = tokenize.run(tmp_path / "in.parquet", tmp_path / "out", "web", tokenizer_dir, tasks=2, log=quiet)
    kept = texts[:GROUP] + texts[2 * GROUP:]
    assert read_prefix(tmp_path / "out" / "web") == ids(tokenizer_dir, kept)  # the other row groups, whole
    assert stats["skipped"] == {"corrupt_row_group": 1} and stats["documents"] == 2 * GROUP
    (bad,) = [json.loads(line) for line in open(stats["bad_records_file"])]
    assert bad["where"] == f"{tmp_path / 'in.parquet'} row group 1" and bad["reason"] == "corrupt_row_group"
    assert bad["detail"].startswith(f"rows {GROUP + 1}-{2 * GROUP} of the file cannot be read (")


def test_fail_mode_is_one_line_naming_file_and_row_group(tmp_path, tokenizer_dir, capsys):
    damaged_parquet(tmp_path / "in.parquet")
    code = tokenize.main(["--input", str(tmp_path / "in.parquet"), "--tokenizer", str(tokenizer_dir),
                          "--output-dir", str(tmp_path / "out"), "--name", "web", "--on-bad-record", "fail"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith(f"tokenize: error: {tmp_path / 'in.parquet'} row group 1: rows {GROUP + 1}-{2 * GROUP} of "
                          "the file cannot be read (Corrupt snappy compressed data.): the file is damaged; "
                          "re-download or re-export it (a parquet row group that cannot be read)."), err
    assert "--on-bad-record skip" in err and not (tmp_path / "out" / "web.bin").exists()


def test_rl_prompts_names_file_and_row_group(tmp_path):
    """data_prep.rl_prompts reads a prompt set whole: a damaged row group fails it, naming the file and the row
    group (its command prints that as one line, exit status 2)."""
    from data_prep.rl_prompts import PromptSetError, read_records

    damaged_parquet(tmp_path / "prompts.parquet")
    with pytest.raises(PromptSetError) as e:
        read_records(str(tmp_path / "prompts.parquet"))
    assert str(e.value) == (f"{tmp_path / 'prompts.parquet'} row group 1: rows {GROUP + 1}-{2 * GROUP} of the file "
                            "cannot be read (Corrupt snappy compressed data.): the file is damaged; re-download or "
                            "re-export it")
