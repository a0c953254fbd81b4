"""Evaluation: benchmark registry, fixed prompts, harness-style grading + math-verify, reports.

    from octomega.eval import run_eval
    results = run_eval(generator, ["gsm8k", "math500"], "base-fewshot", "runs/eval/mymodel", limit=100)

Graders (also used by the RL stage): ``octomega.eval.grader`` (extract_answer, grade, math_verify_grade,
boxed_reward). Names are imported lazily so that ``import octomega.eval.grader`` stays light.
"""
from __future__ import annotations

__all__ = ["run_eval", "EvalSettings", "BENCHMARKS", "get_benchmark", "load_items", "compare_runs",
           "extract_answer", "grade", "math_verify_grade", "boxed_reward"]

_WHERE = {"run_eval": "runner", "EvalSettings": "runner", "BENCHMARKS": "benchmarks", "get_benchmark": "benchmarks",
          "load_items": "data", "compare_runs": "report", "extract_answer": "grader", "grade": "grader",
          "math_verify_grade": "grader", "boxed_reward": "grader"}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"octomega.eval.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'octomega.eval' has no attribute {name!r}")
