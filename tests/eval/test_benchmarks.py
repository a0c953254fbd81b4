"""Loaders for the shipped test sets (octomega/eval/testsets), and clear errors for bad input."""
from __future__ import annotations

import json

import pytest

from octomega.eval import data as data_mod
from octomega.eval.benchmarks import BENCHMARKS, DEFAULT_SUITE, get_benchmark
from octomega.eval.data import BenchmarkDataError, load_items, resolve_data_dir
from octomega.eval.grader import _gold_list

# Items per shipped file (the paper's counts, except MathQA's 1000-problem OctoThinker subset: same).
SHIPPED = {"gsm8k": 1319, "math500": 500, "olympiadbench": 675, "amc23": 40, "sat_math": 32, "ocw": 272,
          "mmlu_stem": 3018, "mathqa": 1000, "svamp": 1000, "asdiv": 2215, "mawps": 2065, "aime24": 30,
          "minerva_math": 272, "college_math": 2818}


def test_default_suite_is_the_papers_13_and_the_extras_are_named():
    paper = {"gsm8k", "math", "math500", "olympiadbench", "amc23", "sat_math", "ocw", "mmlu_stem", "mathqa",
             "svamp", "tabmwp", "asdiv", "mawps"}
    assert len(DEFAULT_SUITE) == 13 and paper == set(DEFAULT_SUITE)
    assert {"aime24", "tiny_arith", "minerva_math", "college_math"} <= set(BENCHMARKS) - set(DEFAULT_SUITE)
    # the shipped sets: 11 of the 13 (MATH and TabMWP are not shipped) and the three extras
    assert set(SHIPPED) == (paper - {"math", "tabmwp"}) | {"aime24", "minerva_math", "college_math"}
    assert get_benchmark("OlympiadBench").name == "olympiadbench" and get_benchmark("sat").name == "sat_math"
    assert get_benchmark("amc23").small and get_benchmark("aime24").small and not get_benchmark("gsm8k").small
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'; known: gsm8k"):
        get_benchmark("gsm9k")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_files_load(name, testsets_dir):
    bench = get_benchmark(name)
    items = load_items(bench, testsets_dir)
    assert len(items) == SHIPPED[name]
    assert len({it.id for it in items}) == len(items), "ids must be unique (resume keys)"
    for it in items:
        assert it.question.strip()
        gold = it.gold if isinstance(it.gold, list) else [it.gold]
        assert gold and all(isinstance(g, str) and g != "" for g in gold)
    if bench.is_choice:
        assert {it.gold.upper() for it in items} <= set(bench.letters)
        assert all("What of the following is the right choice?" in it.question for it in items)
    assert len(load_items(bench, testsets_dir, limit=5)) == 5


def test_specific_gold_parsing(testsets_dir):
    gsm = load_items(get_benchmark("gsm8k"), testsets_dir, limit=1)[0]
    assert gsm.gold == "18" and "The answer is 18." in gsm.solution and "<<" not in gsm.solution
    assert load_items(get_benchmark("asdiv"), testsets_dir, limit=1)[0].gold == "9"  # "9 (apples)"
    assert load_items(get_benchmark("mmlu_stem"), testsets_dir, limit=1)[0].gold == "C"  # answer index 2
    sat = load_items(get_benchmark("sat_math"), testsets_dir, limit=1)[0]
    assert sat.question.endswith("(A) $f(-6)=0$ (B) $f(6)=-6$ (C) $f(-6)=6$ (D) $f(0)=-6$")
    mathqa = load_items(get_benchmark("mathqa"), testsets_dir, limit=1)[0]
    assert mathqa.question.startswith("If log 8 x") and mathqa.question.endswith("(A) 12, (B) 16, (C) 18, (D) 24, (E) 26")
    # MATH-style golds stay as the file writes them; the grader normalises them once (as the harness's process_fn)
    math500 = load_items(get_benchmark("math500"), testsets_dir, limit=1)[0]
    assert math500.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert _gold_list(math500.gold, math500.question) == ["(3,\\frac{\\pi}{2})"]
    assert load_items(get_benchmark("minerva_math"), testsets_dir, limit=1)[0].gold == ["1.6"]  # from the solution


def test_tiny_arith_layout(tiny_arith_dir):
    items = load_items(get_benchmark("tiny_arith"), tiny_arith_dir)
    assert len(items) == 24 and items[0].meta["level"] == 1 and items[0].gold.isdigit()


def test_missing_and_malformed_files(tmp_path):
    bench = get_benchmark("gsm8k")
    with pytest.raises(BenchmarkDataError, match=r"test file not found at .*gsm8k/test.jsonl.*--hub \(openai/gsm8k\)"):
        load_items(bench, tmp_path)
    with pytest.raises(BenchmarkDataError, match="does not exist"):
        load_items(bench, tmp_path / "nowhere")
    f = tmp_path / "gsm8k" / "test.jsonl"
    f.parent.mkdir()
    f.write_text(json.dumps({"question": "q", "answer": "x #### 1"}) + "\n{not json\n")
    with pytest.raises(BenchmarkDataError, match=r"test.jsonl, line 2: not valid JSON"):
        load_items(bench, tmp_path)
    f.write_text(json.dumps({"question": "q", "answer": "x #### 1"}) + "\n" + json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"record 2: missing field 'answer'; fields present: \['problem'\]"):
        load_items(bench, tmp_path)
    f.write_text("[1, 2]\n")
    with pytest.raises(BenchmarkDataError, match="expected a JSON object"):
        load_items(bench, tmp_path)
    f.write_text("\n")
    with pytest.raises(BenchmarkDataError, match="no records"):
        load_items(bench, tmp_path)


def test_data_dir_resolution(tmp_path, monkeypatch):
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.delenv("OCTOMEGA_BENCHMARKS", raising=False)
    assert resolve_data_dir(None) == data_mod.SHIPPED_DIR  # the shipped sets are the default
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("OCTOMEGA_BENCHMARKS", str(tmp_path / "mine"))  # the user's choice wins over the shipped
    assert resolve_data_dir(None) == tmp_path / "mine"
    monkeypatch.delenv("OCTOMEGA_BENCHMARKS")
    monkeypatch.setattr(data_mod, "SHIPPED_DIR", tmp_path / "gone")  # an install without its data files
    with pytest.raises(BenchmarkDataError, match="--data-dir"):
        resolve_data_dir(None)


def test_hub_without_a_source_is_a_clear_error():
    with pytest.raises(BenchmarkDataError, match="no hub source is known for 'mawps'"):
        load_items(get_benchmark("mawps"), hub=True)


def test_shipped_readme_lists_every_file_with_its_count_and_hash(testsets_dir):
    """The README of the shipped sets is their manifest: every file is listed with its items and sha256 prefix."""
    import hashlib
    import re

    rows = {}
    for line in (testsets_dir / "README.md").read_text().splitlines():
        m = re.match(r"\| (\w+) \| (\d+) \| ([0-9a-f]{16}) \| (.+?) \| (.+?) \|$", line)
        if m:
            rows[m[1]] = (int(m[2]), m[3], m[4], m[5])
    files = {p.parent.name: p for p in testsets_dir.glob("*/test.jsonl")}
    assert set(rows) == set(files) == set(SHIPPED), "README table, shipped files and this test's counts disagree"
    for name, path in files.items():
        items, digest, source, licence = rows[name]
        assert items == SHIPPED[name] == sum(1 for line in path.open() if line.strip()), name
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == digest, f"{path} changed: update the README"
        assert source.strip() and licence.strip()
