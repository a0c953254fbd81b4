"""Hand-written grader cases (tests/eval/grader_cases.jsonl), each graded by the harness rules and math-verify.

Fields: prediction (a completion), gold, benchmark, optional question / suite, expected (the true verdict),
and where a grader knowingly departs from the truth, "harness" / "math_verify" with the verdict it gives and a
note (these are reproduced harness quirks, documented in docs/eval.md, not bugs to fix here). "authors_harness":
the verdict of the authors' own harness code where it differs from octomega's port (measured by
bench/harness_parity.py, docs/eval.md "Parser departure"), with a note saying why.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from octomega.eval.benchmarks import get_benchmark
from octomega.eval.grader import grade, math_verify_grade

CASES = [json.loads(line) for line in (Path(__file__).parent / "grader_cases.jsonl").read_text().splitlines() if line]
REQUIRED = {"fraction-decimal", "dfrac", "units", "percent", "thousands", "interval", "tuple", "matrix", "multiple",
            "text", "choice", "no-box", "nested"}


def test_case_file_covers_the_required_categories():
    assert len(CASES) >= 60
    counts = collections.Counter(c["category"] for c in CASES)
    assert REQUIRED <= set(counts), REQUIRED - set(counts)
    assert all(counts[c] >= 3 for c in REQUIRED)
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert sum(not c["expected"] for c in CASES) >= 15  # wrong answers must be rejected, not only right ones accepted
    assert all("note" in c for c in CASES if "harness" in c or "math_verify" in c or "authors_harness" in c)
    # where the authors' code differs from octomega's port, the port's verdict is the other one (else no field)
    assert all(c["authors_harness"] != c.get("harness", c["expected"]) for c in CASES if "authors_harness" in c)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_grader_case(case):
    bench = get_benchmark(case["benchmark"])
    suite = case.get("suite", "base-fewshot")
    h = grade(case["prediction"], case["gold"], bench, question=case.get("question", ""), suite=suite)
    m = math_verify_grade(case["prediction"], case["gold"], letters=bench.letters)
    assert h == case.get("harness", case["expected"]), f"harness verdict; {case.get('note', '')}"
    assert m == case.get("math_verify", case["expected"]), f"math-verify verdict; {case.get('note', '')}"
