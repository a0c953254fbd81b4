"""python -m data_prep.rl_prompts: the common record layouts, templating, length filter, dedup, errors."""

from __future__ import annotations

import json

import pytest

from data_prep.rl_prompts import PromptSetError, build, main
from octomega.generate.tiny import build_tiny_llama


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("rlp_tok"))


def _tok(d):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(d))


def test_layouts_templating_filtering(tmp_path, tok_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in [
        {"problem": "What is 2+3?", "answer": "5", "level": "Level 3", "unique_id": "u1"},
        {"question": "What is 2+3?", "gt_answer": "5"},  # duplicate question
        {"question": "Long " + "very " * 400, "answer": "1"},  # over the token limit
        {"problem": "Solve x+1=3.", "solution": "x = \\boxed{2}."},  # answer from the solution's box
        {"problem": "No answer here"},
    ]) + "\n")
    pq.write_table(pa.Table.from_pylist([{"prompt": [{"role": "system", "content": "be brief"},
                                                     {"role": "user", "content": "What is 7*6?"}],
                                          "reward_model": {"style": "rule", "ground_truth": "42"}}]),
                   tmp_path / "b.parquet")
    arr = tmp_path / "c.json"
    arr.write_text(json.dumps([{"question": "What is 1+1?", "gt_answer": "2"}]))
    out = tmp_path / "out" / "prompts.jsonl"
    stats = build([str(jl), str(tmp_path / "b.parquet"), str(arr)], out, _tok(tok_dir), template="orz",
                  max_prompt_tokens=400, log=lambda m: None)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["question"], r["answer"]) for r in rows] == [("What is 2+3?", "5"), ("Solve x+1=3.", "2"),
                                                           ("What is 7*6?", "42"), ("What is 1+1?", "2")]
    assert rows[0]["id"] == "u1" and rows[0]["level"] == "Level 3" and rows[1]["id"] == "a-3"
    assert rows[0]["prompt"].startswith("A conversation between User and Assistant")
    assert "What is 2+3?" in rows[0]["prompt"]
    assert all(r["prompt_tokens"] <= 400 for r in rows)
    counts = [stats[k] for k in ("read", "written", "duplicate", "too_long", "no_answer")]
    assert counts == [7, 4, 1, 1, 1]
    assert json.loads((tmp_path / "out" / "prompts.jsonl.stats.json").read_text())["written"] == 4


def test_output_feeds_the_rl_prompt_pool(tmp_path, tok_dir):
    from octomega.rl.rollout import PromptPool

    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"question": "What is 4+4?", "answer": "8"}) + "\n")
    out = tmp_path / "p.jsonl"
    assert main(["--input", str(src), "--out", str(out), "--tokenizer", str(tok_dir), "--template", "qa"]) == 0
    pool = PromptPool(out, _tok(tok_dir), template="raw", max_prompt_tokens=400, seed=0)
    assert pool.prompts[0].text == "Question: What is 4+4?\nAnswer:" and pool.prompts[0].answer == "8"


def test_errors(tmp_path, tok_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["--input", str(bad), "--out", str(tmp_path / "o.jsonl"), "--tokenizer", str(tok_dir)]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "missing.jsonl"), "--out", "o", "--tokenizer", str(tok_dir)]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(PromptSetError, match="no prompts left"):
        build([str(empty)], tmp_path / "o.jsonl", _tok(tok_dir), log=lambda m: None)
    fields = tmp_path / "f.jsonl"
    fields.write_text(json.dumps({"q": "What?", "meta": {"gold": "3"}}) + "\n")
    build([str(fields)], tmp_path / "o.jsonl", _tok(tok_dir), question_field="q", answer_field="meta.gold",
          log=lambda m: None)
    assert json.loads((tmp_path / "o.jsonl").read_text())["answer"] == "3"


def test_math8k_preset_reads_the_authors_parquet_layout(tmp_path, tok_dir, capsys):
    """--preset math8k: the question is prompt[1].content and the answer reward_model.ground_truth (how the authors'
    dataset code and reward manager read rl/data/math.8k/train.parquet), the orz template, and prompts over 380
    tokens dropped. Without --input the error says where the file comes from (nothing is downloaded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def row(q, a):
        return {"data_source": "math", "prompt": [{"role": "system", "content": "x"}, {"role": "user", "content": q}],
                "ability": "math", "reward_model": {"style": "rule", "ground_truth": a}}

    tok = _tok(tok_dir)
    from octomega.rl.templates import get_template

    base = len(tok(get_template("orz").render(""), add_special_tokens=True)["input_ids"])
    words = ["seven"] * 800
    fits = next(n for n in range(800, 0, -1)
                if len(tok(get_template("orz").render(" ".join(words[:n])))["input_ids"]) <= 380)
    src = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([row("What is 6*7?", "42"), row(" ".join(words[:fits]), "1"),
                                         row(" ".join(words[:fits + 3]), "2")]), src)
    out = tmp_path / "math8k.jsonl"
    assert main(["--preset", "math8k", "--input", str(src), "--out", str(out), "--tokenizer", str(tok_dir)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["question"][:12], r["answer"]) for r in rows] == [("What is 6*7?", "42"), ("seven seven ", "1")]
    assert all(r["template"] == "orz" and r["prompt_tokens"] <= 380 for r in rows) and base < 380
    assert json.loads((tmp_path / "math8k.jsonl.stats.json").read_text())["too_long"] == 1
    capsys.readouterr()
    assert main(["--preset", "math8k", "--out", str(out), "--tokenizer", str(tok_dir)]) == 2
    err = capsys.readouterr().err
    assert "--input is missing" in err and "rl/data/math.8k/train.parquet" in err
