"""data_prep.synth: deterministic, verifiable arithmetic, the documented formats and sizes."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from tokenizers import Tokenizer

from data_prep import QA_TEMPLATE, synth
from data_prep.tokenizer_utils import tokenizer_fingerprint

EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def rows(path):
    return [json.loads(x) for x in open(path)]


def test_files_counts_fields_and_levels(synth_dir):
    rl, test = rows(synth_dir / "rl/prompts.jsonl"), rows(synth_dir / "benchmarks/tiny_arith/test.jsonl")
    assert len(rl) == 3000 and Counter(r["level"] for r in rl) == {"L1": 1000, "L2": 1000, "L3": 1000}
    assert len(test) == 300 and Counter(r["level"] for r in test) == {"L1": 100, "L2": 100, "L3": 100}
    assert set(rl[0]) == set(test[0]) == {"id", "question", "answer", "level"}
    assert len({r["id"] for r in rl + test}) == 3300 and len({r["question"] for r in rl + test}) == 3300
    assert not {r["question"] for r in rl + test} & {r["question"] for r in rows(synth_dir / "raw/qa_short.jsonl")}
    assert all(set(r) == {"text"} for r in rows(synth_dir / "raw/web.jsonl"))
    assert all(set(r) == {"question", "answer"} for r in rows(synth_dir / "raw/qa_long.jsonl"))
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["files"]["rl/prompts.jsonl"]["records"] == 3000 and manifest["qa_template"] == QA_TEMPLATE


def test_every_equation_is_right_and_the_boxed_answer_follows_them(synth_dir):
    for name in ("qa_short", "qa_long"):
        for r in rows(synth_dir / f"raw/{name}.jsonl"):
            eqs = EQ.findall(r["answer"])
            assert eqs and all(OPS[op](int(a), int(b)) == int(c) for a, op, b, c in eqs), r
            m = re.search(r"The answer is \\boxed\{(\d+)\}\.$", r["answer"])
            assert m, r["answer"][-60:]
            start = int(re.match(r"\w+ has (\d+) ", r["question"]).group(1))
            if name == "qa_short":  # the last add/subtract gives the count
                first_add = eqs[0] if eqs[0][1] in "+-" else eqs[1]  # L3 may start with the bags product
                assert int(m.group(1)) == int(eqs[-1][3]) and start == int(first_add[0])
            else:  # the running count after the last step is the answer
                assert int(m.group(1)) == int(re.findall(r"Now \w+ has (\d+) ", r["answer"])[-1])
    for r in rows(synth_dir / "raw/qa_long.jsonl")[:200]:  # every step checked by its inverse operation
        steps = len(re.findall(r"^(First|Next|Then|After that), ", r["answer"], re.M))
        assert r["answer"].count("Check: ") >= steps >= 1 and "which is right" in r["answer"]


def test_levels_have_their_number_of_steps(synth_dir):
    for r in rows(synth_dir / "benchmarks/tiny_arith/test.jsonl"):
        clauses = r["question"].count(". ")
        bags = " in each" in r["question"]
        assert clauses == {"L1": 1, "L2": 2, "L3": 3}[r["level"]] + 1 and bags == (r["level"] == "L3"), r
        assert int(r["answer"]) >= 0


def test_web_text_has_worked_examples_and_never_qa_labels(synth_dir):
    web = [r["text"] for r in rows(synth_dir / "raw/web.jsonl")]
    assert not any("Question:" in t or "Answer:" in t for t in web)
    worked = sum(("Example." in t or "Suppose " in t) for t in web) / len(web)
    assert 0.2 < worked < 0.4 and any("\\boxed{" in t for t in web)
    assert any(re.search(r"^\d+ \* \d+ = \d+$", t, re.M) for t in web)  # equation lists


def test_deterministic_and_seed_dependent(tmp_path, synth_dir):
    again = synth.generate(tmp_path / "a", seed=0, scale=0.02, log=lambda *a: None)
    first = json.loads((synth_dir / "manifest.json").read_text())
    assert again["files"] == first["files"]
    assert tokenizer_fingerprint(tmp_path / "a/tokenizer") == tokenizer_fingerprint(synth_dir / "tokenizer")
    other = synth.generate(tmp_path / "b", seed=1, scale=0.02, log=lambda *a: None)
    assert other["files"]["rl/prompts.jsonl"]["sha256"] != first["files"]["rl/prompts.jsonl"]["sha256"]


@pytest.mark.slow
def test_scale_one_sizes_under_the_tiny_tokenizer(tmp_path):
    synth.generate(tmp_path, seed=0, scale=1.0, log=lambda *a: None)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer/tokenizer.json"))
    assert 400 <= tok.get_vocab_size() <= 512
    sizes = {}
    for name in ("web", "qa_short", "qa_long"):
        texts = [r.get("text") or QA_TEMPLATE.format(**r) for r in rows(tmp_path / f"raw/{name}.jsonl")]
        sizes[name] = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    assert 3.5e6 < sizes["web"] < 4.5e6 and 0.85e6 < sizes["qa_short"] < 1.15e6
    assert 1.3e6 < sizes["qa_long"] < 1.7e6, sizes
