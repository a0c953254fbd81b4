"""data_prep.decontaminate finds planted n-gram overlaps, and nothing else, in raw, tokenized and RL-prompt inputs."""

from __future__ import annotations

import json

import pytest
from dp_helpers import quiet, read_prefix, write_jsonl
from tokenizers import Tokenizer

from data_prep import decontaminate, tokenize
from data_prep.ngrams import NGramIndex

A0 = "A farmer has 17 cows and buys 5 more cows at the market on Monday before selling 3 of them to a neighbor."
A1 = "Compute the number of ordered pairs of positive integers whose product is exactly 360 and whose sum is even."
A3 = "Find the remainder when 7 to the power 2024 is divided"  # 11 words: short, must appear whole
B2 = "The train leaves the station at 9 and travels 240 kilometers at a steady speed of 80 per hour."
FILLER = "Some unrelated words about rivers mountains and the history of ancient trade routes across the desert."


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "benchmarks"
    write_jsonl(root / "bench_a" / "test.jsonl", [{"question": A0, "answer": "19"}, {"question": A1, "answer": "4"},
                                                  {"question": "Too short to check.", "answer": "1"},
                                                  {"question": A3, "answer": "2"}])
    write_jsonl(root / "bench_b" / "test.jsonl", [{"Body": "Unrelated body text about apples and pears here.",
                                                   "Question": "How many apples?"}, {"problem": "Another one."},
                                                  {"problem": B2}])
    return root


def planted_docs():
    a0 = A0.split()
    a1 = A1.split()
    return [
        {"text": FILLER},                                                     # 0 clean
        {"text": f"{FILLER} {' '.join(a0[2:15]).upper()}!! and more"},        # 1 13 words of A0, other case/punct
        {"text": f"{' '.join(a1[:12])} {FILLER}"},                            # 2 only 12 words of A1: clean
        {"text": f"Intro: {B2} Outro."},                                      # 3 B2 whole
        {"text": " ".join(a0[:6] + ["18"] + a0[7:16])},                       # 4 one number changed: clean
        {"text": f"{FILLER} {A3.lower()} by 13."},                            # 5 the short item whole
        {"text": f"{' '.join(A3.split()[1:])} {FILLER}"},                     # 6 10 of its 11 words: clean
    ]


def run(argv):
    assert decontaminate.main(argv) == 0


def test_planted_overlaps_are_found_and_nothing_else(tmp_path, bench):
    write_jsonl(tmp_path / "corpus.jsonl", planted_docs())
    run(["--input", str(tmp_path / "corpus.jsonl"), "--benchmarks", str(bench), "--report", str(tmp_path / "r.json"),
         "--write-filtered", str(tmp_path / "clean"), "--workers", "2"])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["documents_scanned"] == 7 and r["documents_contaminated"] == 3
    a, b = r["benchmarks"]["bench_a"], r["benchmarks"]["bench_b"]
    assert (a["items"], a["items_checkable"], a["items_found"], a["documents_hit"]) == (4, 3, 2, 2)
    assert (b["items"], b["items_checkable"], b["items_found"], b["documents_hit"]) == (3, 2, 1, 1)
    assert sorted(e["where"].rsplit(":", 1)[1] for e in a["examples"] + b["examples"]) == ["2", "4", "6"]
    clean = [json.loads(x) for f in sorted((tmp_path / "clean").glob("*.jsonl")) for x in open(f)]
    assert clean == [d for i, d in enumerate(planted_docs()) if i in (0, 2, 4, 6)]


def test_tokenized_prefix_input_and_filtered_prefix(tmp_path, bench, tokenizer_dir):
    docs = planted_docs()
    write_jsonl(tmp_path / "corpus.jsonl", docs)
    tokenize.run(tmp_path / "corpus.jsonl", tmp_path / "tok", "c", tokenizer_dir, log=quiet)
    run(["--input", str(tmp_path / "tok" / "c"), "--tokenizer", str(tokenizer_dir), "--benchmarks", str(bench),
         "--report", str(tmp_path / "r.json"), "--write-filtered", str(tmp_path / "clean")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["documents_contaminated"] == 3 and r["benchmarks"]["bench_a"]["items_found"] == 2
    assert read_prefix(tmp_path / "clean") == [read_prefix(tmp_path / "tok" / "c")[i] for i in (0, 2, 4, 6)]
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert tok.decode(read_prefix(tmp_path / "clean")[1], skip_special_tokens=True) == docs[2]["text"]


def test_rl_prompts_of_synth_are_clean_and_a_planted_test_question_is_found(tmp_path, synth_dir):
    prompts = [json.loads(x) for x in open(synth_dir / "rl" / "prompts.jsonl")]
    test = [json.loads(x) for x in open(synth_dir / "benchmarks" / "tiny_arith" / "test.jsonl")]
    write_jsonl(tmp_path / "p.jsonl", prompts[:500] + [test[42]])
    run(["--input", str(tmp_path / "p.jsonl"), "--text-key", "question", "--benchmarks",
         str(synth_dir / "benchmarks"), "--report", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())["benchmarks"]["tiny_arith"]
    assert r["items_found"] == 1 and r["documents_hit"] == 1 and r["examples"][0]["item"] == 42


def test_qa_training_data_of_synth_shares_no_13_gram_with_the_test_set(synth_dir):
    index = NGramIndex(13, 13)
    for line in open(synth_dir / "benchmarks" / "tiny_arith" / "test.jsonl"):
        index.add(json.loads(line)["question"], 0)
    for line in open(synth_dir / "rl" / "prompts.jsonl"):
        index.add(json.loads(line)["question"], 1)
    for name in ("qa_short", "qa_long", "web"):
        for line in open(synth_dir / "raw" / f"{name}.jsonl"):
            rec = json.loads(line)
            assert not index.find(rec.get("question") or rec["text"], first_only=True), (name, rec)


def test_unknown_benchmark_and_prefix_without_tokenizer_are_clear_errors(tmp_path, bench, capsys, tokenizer_dir):
    write_jsonl(tmp_path / "c.jsonl", planted_docs())
    assert decontaminate.main(["--input", str(tmp_path / "c.jsonl"), "--benchmarks", str(bench), "--only", "gsm9k",
                               "--report", str(tmp_path / "r.json")]) == 2
    assert "gsm9k" in capsys.readouterr().err
    tokenize.run(tmp_path / "c.jsonl", tmp_path / "tok", "c", tokenizer_dir, log=quiet)
    assert decontaminate.main(["--input", str(tmp_path / "tok" / "c"), "--benchmarks", str(bench),
                               "--report", str(tmp_path / "r.json")]) == 2
    assert "pass --tokenizer" in capsys.readouterr().err


def test_default_benchmarks_are_the_shipped_test_sets(tmp_path):
    """Without --benchmarks, the 14 test sets shipped with octomega are checked: a GSM8K test question and a
    MATH500 problem planted in a corpus are found, each under its benchmark."""
    from octomega.eval.data import SHIPPED_DIR

    gsm = json.loads((SHIPPED_DIR / "gsm8k" / "test.jsonl").open().readline())["question"]
    math = json.loads((SHIPPED_DIR / "math500" / "test.jsonl").read_text().splitlines()[7])["problem"]
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": FILLER}, {"text": f"Homework. {gsm}"}, {"text": math}])
    run(["--input", str(tmp_path / "corpus.jsonl"), "--report", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r["benchmarks"]) == {p.parent.name for p in SHIPPED_DIR.glob("*/test.jsonl")}
    assert len(r["benchmarks"]) == 14
    assert r["documents_contaminated"] == 2
    assert r["benchmarks"]["gsm8k"]["documents_hit"] == 1 and r["benchmarks"]["math500"]["documents_hit"] >= 1
