"""octomega eval end to end on a tiny random Llama: outputs, resume after a crash, compare, bad input."""
from __future__ import annotations

import json
import shutil

import pytest

from octomega.eval.benchmarks import get_benchmark
from octomega.eval.cli import main
from octomega.eval.data import load_items
from octomega.eval.records import RecordFileError
from octomega.eval.runner import run_eval
from octomega.generate import Completion, Generator, SamplingParams, get_generator


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


class Counting(Generator):
    """Wraps a generator and counts the prompts it is asked for."""

    def __init__(self, inner):
        self.inner, self.prompts = inner, 0

    def generate(self, prompts, params):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params)


class Oracle(Generator):
    """Answers every tiny_arith question correctly, in the few-shot answer format."""

    def __init__(self, items):
        self.answers = {it.question: it.gold for it in items}

    def generate(self, prompts, params: SamplingParams):
        out = []
        for i, p in enumerate(prompts):
            q = next(q for q in self.answers if q in p.split("\n\nQuestion: ")[-1] or p.rstrip().endswith(q + "\nAssistant:"))
            text = f" Let me add. The answer is \\boxed{{{self.answers[q]}}}."
            out.append([Completion(prompt_index=i, sample_index=j, text=text, token_ids=[1, 2], logprobs=[-0.1, -0.2],
                                   finish_reason="stop") for j in range(params.n)])
        return out


@pytest.fixture(scope="module")
def hf_gen(tiny_model_dir):
    return get_generator("hf", str(tiny_model_dir), batch_size=8)


def test_cli_end_to_end(tiny_model_dir, bench_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main([str(tiny_model_dir), "--benchmarks", "tiny_arith,gsm8k,amc23", "--limit", "4", "--samples", "2",
               "--data-dir", str(bench_dir), "--max-new-tokens", "10", "--out", str(out), "--chunk-size", "3"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "| Benchmark | n | Accuracy (harness) | 95% CI |" in printed.out
    assert "tiny_arith" in printed.err  # the progress bar
    res = json.loads((out / "results.json").read_text())
    assert set(res["benchmarks"]) == {"tiny_arith", "gsm8k", "amc23"} and res["suite"] == "base-fewshot"
    assert res["model"] == tiny_model_dir.name and res["generation"]["max_new_tokens"] == 10
    ta = res["benchmarks"]["tiny_arith"]
    assert ta["n"] == 4 and 0 <= ta["accuracy"] <= 1 and len(ta["ci95"]) == 2 and ta["ci95"][0] <= ta["ci95"][1]
    assert set(ta["levels"]) == {"1", "2", "3"} and "math_verify" in ta
    assert ta["prompt"].startswith("tiny_arith_3shot@v1#")
    assert "avg_at_k" not in res["benchmarks"]["gsm8k"]  # K samples only for the small sets
    assert res["benchmarks"]["amc23"]["avg_at_k"]["k"] == 2
    md = (out / "results.md").read_text()
    assert "AMC23" in md and "(K=2)" in md and "Accuracy by level" in md
    recs = lines(out / "amc23" / "samples.jsonl")
    assert len(recs) == 4 * 3 and sorted({r["sample"] for r in recs}) == [0, 1, 2]
    r = recs[0]
    assert {"prompt", "completion", "extracted", "gold", "verdicts", "finish_reason", "num_tokens"} <= set(r)
    assert set(r["verdicts"]) == {"harness", "math_verify"} and r["prompt"].startswith("Q: ")
    assert len(lines(out / "gsm8k" / "samples.jsonl")) == 4


def test_default_data_is_the_shipped_sets_from_any_directory(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """No --data-dir, no $OCTOMEGA_BENCHMARKS, run from an unrelated directory: octomega eval reads the test sets
    that ship inside the package, and its records hold their questions."""
    monkeypatch.delenv("OCTOMEGA_BENCHMARKS", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main([str(tiny_model_dir), "--benchmarks", "math500,svamp", "--limit", "2", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    assert set(res["benchmarks"]) == {"math500", "svamp"} and res["benchmarks"]["math500"]["n"] == 2
    shipped = load_items(get_benchmark("math500"), None, limit=2)
    recs = lines(out / "math500" / "samples.jsonl")
    assert [r["gold"] for r in recs] == [it.gold for it in shipped]
    assert shipped[0].question in recs[0]["prompt"]


def test_oracle_scores_100_percent_and_zero_shot_suite(tiny_arith_dir, tmp_path):
    bench = get_benchmark("tiny_arith")
    items = load_items(bench, tiny_arith_dir)
    for suite in ("base-fewshot", "rl-zeroshot"):
        res = run_eval(Oracle(items), ["tiny_arith"], suite, tmp_path / suite, data_dir=tiny_arith_dir, progress=False,
                       model_name="oracle")
        m = res["benchmarks"]["tiny_arith"]
        assert m["accuracy"] == 1.0 and m["math_verify"]["accuracy"] == 1.0 and m["n"] == 24
        assert all(v["accuracy"] == 1.0 for v in m["levels"].values())
    first = lines(tmp_path / "rl-zeroshot" / "tiny_arith" / "samples.jsonl")[0]
    assert first["prompt"].startswith("A conversation between User and Assistant.")


def test_resume_after_a_crash_matches_an_uninterrupted_run(hf_gen, tiny_arith_dir, tmp_path):
    kw = dict(data_dir=tiny_arith_dir, progress=False, max_new_tokens=8, chunk_size=4, samples=2, samples_on="all")
    full = run_eval(hf_gen, ["tiny_arith"], "base-fewshot", tmp_path / "full", limit=12, **kw)
    full_recs = lines(tmp_path / "full" / "tiny_arith" / "samples.jsonl")
    assert len(full_recs) == 12 * 3

    # Simulate a crash: half the records written, the last line cut in the middle.
    crashed = tmp_path / "crashed" / "tiny_arith"
    crashed.mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "tiny_arith" / "run.json", crashed / "run.json")
    raw = (tmp_path / "full" / "tiny_arith" / "samples.jsonl").read_text().splitlines(keepends=True)
    kept = raw[:16]
    (crashed / "samples.jsonl").write_text("".join(kept) + raw[16][: len(raw[16]) // 2])
    counting = Counting(hf_gen)
    resumed = run_eval(counting, ["tiny_arith"], "base-fewshot", tmp_path / "crashed", limit=12, **kw)
    assert counting.prompts < 12 + 12  # it did not start over
    key = lambda r: (r["id"], r["sample"])  # noqa: E731
    resumed_recs = lines(crashed / "samples.jsonl")
    assert len(resumed_recs) == len(full_recs) and len({key(r) for r in resumed_recs}) == len(full_recs)
    by_key = {key(r): r for r in full_recs}
    for r in resumed_recs:
        assert r["completion"] == by_key[key(r)]["completion"] and r["verdicts"] == by_key[key(r)]["verdicts"]
    assert resumed["benchmarks"]["tiny_arith"] == full["benchmarks"]["tiny_arith"]

    with pytest.raises(ValueError, match="other settings"):
        run_eval(hf_gen, ["tiny_arith"], "base-fewshot", tmp_path / "crashed", limit=12,
                 **(kw | {"max_new_tokens": 9}))
    bad = crashed / "samples.jsonl"
    text = bad.read_text().splitlines()
    bad.write_text("\n".join(text[:3] + ["{broken"] + text[3:]) + "\n")
    with pytest.raises(RecordFileError, match="line 4: damaged record"):
        run_eval(hf_gen, ["tiny_arith"], "base-fewshot", tmp_path / "crashed", limit=12, **kw)


def test_compare_writes_table_and_png(tiny_arith_dir, tmp_path, capsys):
    items = load_items(get_benchmark("tiny_arith"), tiny_arith_dir)
    run_eval(Oracle(items), ["tiny_arith"], "base-fewshot", tmp_path / "a", data_dir=tiny_arith_dir, progress=False,
             model_name="oracle")

    class Wrong(Oracle):
        def generate(self, prompts, params):
            return [[Completion(prompt_index=i, sample_index=0, text=" The answer is \\boxed{0}.", token_ids=[],
                                logprobs=[], finish_reason="stop")] for i in range(len(prompts))]

    run_eval(Wrong(items), ["tiny_arith"], "base-fewshot", tmp_path / "b", data_dir=tiny_arith_dir, progress=False,
             model_name="always-zero")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| Benchmark | oracle | always-zero |" in md and "100.0 ±" in md and "0.0 ±" in md
    png = (tmp_path / "cmp" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bad_input_gives_clear_errors(tiny_model_dir, tiny_arith_dir, tmp_path, capsys):
    assert main([str(tiny_model_dir), "--benchmarks", "gsm9k", "--data-dir", str(tiny_arith_dir)]) == 2
    assert "unknown benchmark 'gsm9k'" in capsys.readouterr().err
    not_model = tmp_path / "not_a_model"
    not_model.mkdir()
    assert main([str(not_model), "--benchmarks", "tiny_arith", "--data-dir", str(tiny_arith_dir)]) == 2
    assert "is not a Hugging Face model directory: config.json is missing" in capsys.readouterr().err
    assert main([str(tiny_model_dir), "--benchmarks", "gsm8k", "--data-dir", str(tiny_arith_dir)]) == 2
    assert "test file not found" in capsys.readouterr().err
    assert main([str(tmp_path / "missing_model"), "--benchmarks", "tiny_arith", "--data-dir", str(tiny_arith_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tiny_model_dir), "--suite", "chat"])
