"""data_prep.tokenize: what lands in the .bin, bad records, held-out documents, re-runs, formats and dtypes."""

from __future__ import annotations

import json
import os

import pytest
from dp_helpers import quiet, read_prefix, sample_texts, write_jsonl
from tokenizers import Tokenizer

from data_prep import tokenize
from data_prep.pipeline import LlamaMegatronTokenizer
from data_prep.sources import InputError
from data_prep.tokenizer_utils import TokenizerError


def expected(tok_dir, texts, bos=True, eos=True):
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    ids = tok.token_to_id
    return [([ids("<|begin_of_text|>")] if bos else []) + tok.encode(t, add_special_tokens=False).ids
            + ([ids("<|end_of_text|>")] if eos else []) for t in texts]


def corrupt_corpus(tmp_path):
    """Two files with valid documents and every kind of bad line; returns (dir, valid texts in order, bad lines)."""
    texts = sample_texts(300, seed=3)
    a = [{"text": t, "id": i} for i, t in enumerate(texts[:200])]
    bad_a = {5: '{"text": "unterminated', 17: {"content": "no text field"}, 40: {"text": 12345},
             77: {"text": "   "}, 120: b'{"text": "caf\xe9 latin-1 bytes"}', 150: "[1, 2, 3]", 151: ""}
    lines_a = []
    for i, rec in enumerate(a):
        if i in bad_a:
            lines_a.append(bad_a[i])
        lines_a.append(rec)
    write_jsonl(tmp_path / "raw" / "a.jsonl", lines_a)
    write_jsonl(tmp_path / "raw" / "b.jsonl", [{"text": t} for t in texts[200:]] + [{"text": None}])
    return tmp_path / "raw", texts


def test_bin_holds_bos_text_eos_in_order_and_bad_records_are_reported(tmp_path, tokenizer_dir):
    raw, texts = corrupt_corpus(tmp_path)
    stats = tokenize.run(raw, tmp_path / "out", "web", tokenizer_dir, workers=2, tasks=3, log=quiet)
    got = read_prefix(tmp_path / "out" / "web")
    assert got == expected(tokenizer_dir, texts)  # every valid document, once, in input order, BOS ... EOS
    assert stats["documents"] == 300 and stats["tokens"] == sum(map(len, got))
    assert stats["skipped"] == {"invalid_json": 1, "missing_field": 2, "non_string_field": 1, "empty_text": 1,
                                "invalid_utf8": 1, "not_an_object": 1}
    assert stats["records_read"] == 307 and stats["dtype"] == "uint16" and stats["vocab_size"] == 400
    bad = [json.loads(x) for x in open(stats["bad_records_file"])]
    where = {b["reason"]: b["where"] for b in bad}
    assert where["invalid_json"].endswith("a.jsonl:6") and where["invalid_utf8"].endswith("a.jsonl:125")
    assert where["non_string_field"].endswith("a.jsonl:43") and "int" in bad[2]["detail"]
    assert any(b["where"].endswith("b.jsonl:101") and "null" in b["detail"] for b in bad)
    assert stats["length_percentiles"]["min"] == min(map(len, got))


def test_fail_mode_names_file_line_and_field(tmp_path, tokenizer_dir, capsys):
    raw, _ = corrupt_corpus(tmp_path)
    code = tokenize.main(["--input", str(raw / "a.jsonl"), "--tokenizer", str(tokenizer_dir), "--output-dir",
                          str(tmp_path / "out"), "--name", "web", "--on-bad-record", "fail"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "a.jsonl:6: invalid JSON" in err and "--on-bad-record skip" in err
    assert not (tmp_path / "out" / "web.bin").exists()


def test_valid_docs_are_held_out_deterministically(tmp_path, tokenizer_dir):
    texts = sample_texts(500, seed=4)
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    runs = []
    for tasks in (1, 4):
        out = tmp_path / f"out{tasks}"
        stats = tokenize.run(tmp_path / "in.jsonl", out, "c", tokenizer_dir, tasks=tasks, valid_docs=37, log=quiet)
        runs.append((read_prefix(out / "c"), read_prefix(out / "c_valid")))
        assert stats["valid_documents"] == 37 and stats["documents"] == 463
    (train, valid), (train4, valid4) = runs
    assert valid == valid4 and train == train4  # the choice does not depend on how the input was cut
    exp = expected(tokenizer_dir, texts)
    assert sorted(train + valid) == sorted(exp) and not set(map(tuple, valid)) & set(map(tuple, train))
    assert [d for d in exp if d in valid] == valid  # held-out documents keep their input order


def test_rerun_after_crash_skips_finished_tasks_and_counts_once(tmp_path, tokenizer_dir, monkeypatch):
    raw, texts = corrupt_corpus(tmp_path)
    original = LlamaMegatronTokenizer.run

    def crash_on_rank_2(self, data, rank=0, world_size=1):
        if rank == 2:
            raise RuntimeError("simulated crash")
        return original(self, data, rank, world_size)

    monkeypatch.setattr(LlamaMegatronTokenizer, "run", crash_on_rank_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tokenize.run(raw, tmp_path / "out", "web", tokenizer_dir, tasks=3, log=quiet)
    logs = tmp_path / "out/.work/web/datatrove/logs"
    assert (tmp_path / "out/.work/web/shards/00000_tokens.bin").exists()
    before = {r: os.path.getmtime(logs / f"task_0000{r}.log") for r in range(3)}
    assert "simulated crash" in (logs / "task_00002.log").read_text()
    monkeypatch.setattr(LlamaMegatronTokenizer, "run", original)
    stats = tokenize.run(raw, tmp_path / "out", "web", tokenizer_dir, tasks=3, log=quiet)
    after = {r: os.path.getmtime(logs / f"task_0000{r}.log") for r in range(3)}
    assert after[0] == before[0] and after[1] == before[1]  # finished tasks were not run again
    assert "Processing done for rank=2" in (logs / "task_00002.log").read_text()
    assert read_prefix(tmp_path / "out" / "web") == expected(tokenizer_dir, texts)
    assert stats["records_read"] == 307 and stats["skipped_total"] == 7
    again = tokenize.run(raw, tmp_path / "out", "web", tokenizer_dir, tasks=3, log=quiet)
    assert again["created"] == stats["created"]  # up to date: nothing redone


def test_fifty_megabyte_document_is_reported_not_lost_silently(tmp_path, tokenizer_dir):
    texts = sample_texts(20, seed=5)
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts[:10]] + [{"text": "x" * (50 << 20)}]
                + [{"text": t} for t in texts[10:]])
    stats = tokenize.run(tmp_path / "in.jsonl", tmp_path / "out", "c", tokenizer_dir, tasks=2, log=quiet)
    assert stats["skipped"] == {"too_long": 1} and stats["documents"] == 20
    assert read_prefix(tmp_path / "out" / "c") == expected(tokenizer_dir, texts)
    bad = json.loads(open(stats["bad_records_file"]).readline())
    assert bad["where"].endswith("in.jsonl:11") and "52,428,800 characters" in bad["detail"]


def test_qa_messages_parquet_and_hf_inputs(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"problem": f"What is {i} + 1?", "solution": f"<think>{i} plus one</think> It is {i + 1}."}
            for i in range(40)]
    rows[7]["solution"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet", row_group_size=10)
    stats = tokenize.run(tmp_path / "qa.parquet", tmp_path / "out", "qa", tokenizer_dir, tasks=3, qa_style="short",
                         question_key="problem", answer_key="solution", log=quiet)
    texts = [f"Question: What is {i} + 1?\nAnswer: It is {i + 1}." for i in range(40) if i != 7]
    assert read_prefix(tmp_path / "out" / "qa") == expected(tokenizer_dir, texts)
    assert stats["skipped"] == {"missing_field": 1} and stats["source"]["format"] == "parquet"

    msgs = [{"messages": [{"role": "user", "content": f"Q{i}"},
                          {"role": "assistant", "content": f"<think>t</think>A{i}"}]}
            for i in range(30)] + [{"messages": []}]
    Dataset.from_list(msgs).save_to_disk(str(tmp_path / "hf"))
    stats = tokenize.run(tmp_path / "hf", tmp_path / "out", "chat", tokenizer_dir, tasks=2, messages_key="messages",
                         log=quiet)
    texts = [f"Question: Q{i}\nAnswer: <think>t</think>A{i}" for i in range(30)]  # long style keeps thinking
    assert read_prefix(tmp_path / "out" / "chat") == expected(tokenizer_dir, texts)
    assert stats["skipped"] == {"bad_messages": 1} and stats["source"]["format"] == "hf"


def test_large_vocabulary_is_int32_and_uint16_is_refused(tmp_path, tokenizer_dir):
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tok.add_tokens([f"<x{i}>" for i in range(66_000)])
    big = tmp_path / "big.json"
    tok.save(str(big))
    write_jsonl(tmp_path / "in.jsonl", [{"text": "apples <x65999> and <x3>"}, {"text": "plus"}])
    stats = tokenize.run(tmp_path / "in.jsonl", tmp_path / "out", "c", big, log=quiet)
    docs = read_prefix(tmp_path / "out" / "c")
    assert stats["dtype"] == "int32" and max(docs[0]) == tok.token_to_id("<x65999>") > 65_535
    with pytest.raises(TokenizerError, match="do not fit uint16"):
        tokenize.run(tmp_path / "in.jsonl", tmp_path / "out", "d", big, dtype="uint16", log=quiet)


def test_no_bos_option_no_merge_and_clear_input_errors(tmp_path, tokenizer_dir, capsys):
    texts = sample_texts(60, seed=6)
    write_jsonl(tmp_path / "in.jsonl", [{"body": t} for t in texts])
    stats = tokenize.run(tmp_path / "in.jsonl", tmp_path / "out", "c", tokenizer_dir, tasks=3, text_key="body",
                         bos_token="none", merge=False, log=quiet)
    assert stats["prefix"] is None and len(stats["prefixes"]) == 3
    docs = sum((read_prefix(p["prefix"]) for p in stats["prefixes"]), [])
    assert docs == expected(tokenizer_dir, texts, bos=False)
    with pytest.raises(InputError, match="no such file or directory"):
        tokenize.run(tmp_path / "missing.jsonl", tmp_path / "out", "c", tokenizer_dir, log=quiet)
    with pytest.raises(TokenizerError, match="no such tokenizer"):
        tokenize.run(tmp_path / "in.jsonl", tmp_path / "out", "c", tmp_path / "no_tok", log=quiet)
    code = tokenize.main(["--input", str(tmp_path / "in.jsonl"), "--tokenizer", str(tokenizer_dir),
                          "--output-dir", str(tmp_path / "o2"), "--name", "c"])  # default text key "text"
    assert code == 2 and "field 'text' is missing (the record has: body)" in capsys.readouterr().err


def test_slurm_dry_run_prints_the_sbatch_script(tmp_path, tokenizer_dir, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in sample_texts(50)])
    code = tokenize.main(["--input", str(tmp_path / "in.jsonl"), "--tokenizer", str(tokenizer_dir), "--output-dir",
                          str(tmp_path / "out"), "--name", "c", "--executor", "slurm", "--partition", "cpu",
                          "--time", "2:00:00", "--tasks", "4", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "#SBATCH --partition=cpu" in out and "#SBATCH --time=2:00:00" in out
    assert "#SBATCH --array=0-3" in out and "task 3: in.jsonl[" in out
    assert not (tmp_path / "out" / "c.bin").exists()


def test_compressed_files_stay_whole_and_order_is_kept(tmp_path, tokenizer_dir):
    import gzip

    texts = sample_texts(90, seed=7)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": t} for t in texts[:30]])
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts[30:60])
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"text": t} for t in texts[60:]])
    stats = tokenize.run(tmp_path / "in", tmp_path / "out", "c", tokenizer_dir, tasks=4, log=quiet)
    assert read_prefix(tmp_path / "out" / "c") == expected(tokenizer_dir, texts) and stats["source"]["files"] == 3


def test_registry_corpus_fills_fields_and_role(tmp_path, synth_dir, tokenizer_dir):
    code = tokenize.main(["--corpus", "qa_long", "--input", str(synth_dir / "raw" / "qa_long.jsonl"),
                          "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path)])
    stats = json.loads((tmp_path / "qa_long.stats.json").read_text())
    assert code == 0 and stats["role"] == "qa_long" and stats["source"]["mode"] == "qa"
    assert stats["source"]["qa_style"] == "long" and stats["skipped_total"] == 0
