"""Self-agreement: grade each benchmark's own gold solutions (and gold answers) as if a model had written them.

Two modes:
- "solution": the file's worked solution, turned into a completion in the few-shot format (e.g. GSM8K's
  "#### 18" becomes "The answer is 18."; OCW's boxed answer gets the "Final answer: ..." line; SVAMP's equation
  is evaluated). Its answer comes from the solution, the gold from the answer field: a real check of
  extraction, normalisation and gold parsing. Only where the file has solutions.
- "format": the gold answer written in the exemplars' answer format: a plumbing check for every benchmark.
A rate well below 100% points at a grader or gold-parsing problem (or a known harness quirk, see docs/eval.md).
"""
from __future__ import annotations

import re

from octomega.eval.benchmarks import Benchmark, Item
from octomega.eval.goldecho import echo_completion
from octomega.eval.grader import gold_text, grade, math_verify_grade
from octomega.eval.harness import safe_arith
from octomega.eval.normalize import last_boxed
from octomega.eval.prompts import is_zeroshot


def solution_completion(bench: Benchmark, item: Item) -> str | None:
    sol = item.solution
    if not sol:
        return None
    name = bench.name
    if name in ("gsm8k", "math", "math500", "minerva_math"):
        return sol
    if name == "ocw":
        box = last_boxed(sol)
        return None if box is None else f"{sol}\nFinal answer: The final answer is {box}. I hope it is correct."
    if name == "aime24":
        box = last_boxed(sol)
        return None if box is None else f"The answer is {box}."
    if name == "svamp":
        try:
            return f"The answer is {safe_arith(sol)}."
        except (ValueError, SyntaxError, ZeroDivisionError):
            return None
    if name == "asdiv":
        return f"The answer is {sol.split('=')[-1].strip()}."
    if name == "mathqa":
        low = sol.lower()
        found = re.findall(r"(?:answer|option)[\s:]*(?:is)?[\s:]*(?:option)?\s*\(?([a-e])\b", low) or \
            re.findall(r"\b([a-e])\s*\)\s*\"?\s*$", low)
        return None if not found else f"Final Answer: The final answer is ({found[-1].upper()}). I hope it is correct."
    return None


def format_completion(bench: Benchmark, item: Item, suite: str = "base-fewshot") -> str:
    """The item's gold written as the exemplars write answers (goldecho.echo_completion), or boxed (zero-shot)."""
    if is_zeroshot(suite):
        g = gold_text(item.gold)
        return f"Let me think. The answer is \\boxed{{{g.upper() if bench.is_choice else g}}}."
    return echo_completion(bench, item.gold)


def self_agreement(bench: Benchmark, items: list[Item], mode: str = "solution", suite: str = "base-fewshot",
                   max_failures: int = 5) -> dict:
    """Share of items whose own solution (or gold) is graded correct, by the harness and by math-verify."""
    n = harness_ok = mv_ok = 0
    failures = []
    for item in items:
        text = solution_completion(bench, item) if mode == "solution" else format_completion(bench, item, suite)
        if text is None and mode == "solution" and item.solution is None:
            continue
        n += 1
        h = text is not None and grade(text, item.gold, bench, question=item.question, suite=suite)
        m = text is not None and math_verify_grade(text, item.gold, letters=bench.letters)
        harness_ok += h
        mv_ok += m
        if not h and len(failures) < max_failures:
            failures.append({"id": item.id, "gold": item.gold, "completion": (text or "")[-200:]})
    return {"benchmark": bench.name, "mode": mode, "suite": suite, "n": n,
            "harness": harness_ok / n if n else None, "math_verify": mv_ok / n if n else None, "failures": failures}
