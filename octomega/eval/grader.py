"""Grading: the harness verdict per benchmark, math-verify as a second verdict, and the RL reward.

Public API (others import these):
- ``extract_answer(text, benchmark)``: the answer the harness would extract from a completion (display form).
- ``grade(pred, gold, benchmark)``: the harness-style verdict. ``pred`` is the model's completion text
  (extraction happens inside, as in the harness); ``gold`` the benchmark's gold answer (Item.gold).
- ``math_verify_grade(pred_text, gold)``: math-verify's verdict on the completion text, with math-verify's
  signal-based timeouts off and our own thread-safe per-item timeout (timeouts.py).
- ``boxed_reward(response, gold)``: OctoThinker's RL reward: last \\boxed{} in the response; +1 if it matches
  (string match, then math-verify on Minerva-normalised strings, then Hendrycks normalisation), else -1
  (also when there is no box). Returns (reward, had_box).

Suites: "base-fewshot" extracts and scores like the harness (scheme of the benchmark: gsm, math, olympiad,
choice, mmlu, ocw, tabmwp); "rl-zeroshot" extracts the last \\boxed{} and scores like the RL reward
(multiple-choice: the boxed letter).
"""
from __future__ import annotations

import re
import threading

from octomega.eval import extract as ex
from octomega.eval import harness as hs
from octomega.eval.benchmarks import Benchmark, get_benchmark
from octomega.eval.extract import split_math_answers
from octomega.eval.normalize import harness_strip, hendrycks_strip, last_boxed, minerva_normalize
from octomega.eval.prompts import is_zeroshot
from octomega.eval.timeouts import run_with_timeout

HARNESS_TIMEOUT_S = 15.0  # the harness's pebble pool gives each item 15 s
MV_TIMEOUT_S = 5.0  # math-verify's own default per parse/verify call
_MISSING = {ex.NO_ANSWER, "placeholder", "[invalidanswer]", ""}


_LOADED = threading.Event()
_LOAD_LOCK = threading.Lock()


def ensure_loaded() -> None:
    """Import sympy / latex2sympy / math-verify and warm their caches in the calling thread, once.

    The first import takes seconds: inside a timed grading call it would eat the timeout (a wrong verdict) and
    an interrupted import could leave a half-initialised module behind.
    """
    if _LOADED.is_set():
        return
    with _LOAD_LOCK:
        if not _LOADED.is_set():
            import sympy  # noqa: F401
            from latex2sympy2_extended import latex2sympy
            from math_verify import parse, verify

            verify(parse("$\\frac{1}{2}$", parsing_timeout=None), parse("0.5", parsing_timeout=None),
                   timeout_seconds=None)
            latex2sympy("x^2")
            _LOADED.set()


def _bench(benchmark: str | Benchmark) -> Benchmark:
    return benchmark if isinstance(benchmark, Benchmark) else get_benchmark(benchmark)


def _gold_list(gold: str | list[str], question: str) -> list[str]:
    golds = gold if isinstance(gold, list) else [gold]
    return split_math_answers(question, [harness_strip(g) for g in golds])


def gold_text(gold: str | list[str]) -> str:
    return ", ".join(gold) if isinstance(gold, list) else str(gold)


# ---------------------------------------------------------------- extraction
def _harness_prediction(text: str, bench: Benchmark, question: str):
    s = bench.scheme
    if s == "gsm":
        return ex.extract_last_number(text)
    if s == "math":
        return ex.extract_math(text, question)
    if s == "olympiad":
        return ex.extract_olympiad(text)
    if s == "choice":
        return ex.extract_final_choice(text)
    if s == "mmlu":
        return ex.extract_last_paren_choice(text)
    if s == "ocw":
        return ex.extract_ocw(text)
    if s == "tabmwp":
        return ex.extract_tabmwp(text, question)
    raise ValueError(f"unknown scoring scheme {s!r} of benchmark {bench.name!r}")


def extract_answer(text: str, benchmark: str | Benchmark, *, question: str = "",
                   suite: str = "base-fewshot") -> str | None:
    """The extracted answer as a string (several MATH answers joined by ", "); None when nothing was found."""
    bench = _bench(benchmark)
    if is_zeroshot(suite):
        box = ex.extract_boxed(text)
        return ex.choice_letter(box, bench.letters) if bench.is_choice else box
    pred = _harness_prediction(text, bench, question)
    if isinstance(pred, list):
        pred = ", ".join(p for p in pred if p)
    return None if pred in _MISSING else pred


# ---------------------------------------------------------------- harness verdict
def _harness_verdict(text: str, gold, bench: Benchmark, question: str) -> bool:
    pred = _harness_prediction(text, bench, question)
    s = bench.scheme
    if s == "math":
        return hs.eval_math(pred, _gold_list(gold, question))
    if isinstance(pred, str) and pred in _MISSING:
        return False
    if s == "olympiad":
        return hs.eval_olympiad(pred, gold_text(gold))
    if s in ("choice", "mmlu"):
        return hs.eval_choice(pred, gold_text(gold))
    if s == "ocw":
        return hs.eval_ocw(pred, gold_text(gold))
    if s == "tabmwp" and "Please select from the following options:" in question:
        return hs.eval_choice(pred, gold_text(gold))
    return hs.is_correct(pred, gold_text(gold))  # gsm, tabmwp free-form: eval_last_single_answer


def _zeroshot_verdict(text: str, gold, bench: Benchmark, timeout_s: float | None) -> bool:
    box = ex.extract_boxed(text)
    if box is None:
        return False
    if bench.is_choice:
        return ex.choice_letter(box, bench.letters) == gold_text(gold).strip().upper()
    return answers_equivalent(box, gold_text(gold), timeout_s=timeout_s)


def grade(pred: str, gold: str | list[str], benchmark: str | Benchmark, *, question: str = "",
          suite: str = "base-fewshot", timeout_s: float | None = HARNESS_TIMEOUT_S) -> bool:
    """Harness-style verdict on a completion. A grader that runs past timeout_s counts as wrong."""
    bench = _bench(benchmark)
    ensure_loaded()
    if is_zeroshot(suite):
        return _zeroshot_verdict(pred, gold, bench, timeout_s)
    verdict, _ = run_with_timeout(_harness_verdict, pred, gold, bench, question, timeout_s=timeout_s, default=False)
    return bool(verdict)


# ---------------------------------------------------------------- math-verify verdict
def _as_latex(gold: str) -> str:
    return gold if ("$" in gold or "\\boxed" in gold or "\\(" in gold or "\\[" in gold) else f"${gold}$"


def _sci_notation(s: str) -> str:
    """4.5e33 -> 4.5*10^33: math-verify reads "4.5e33" as 4.5 (and "$4.5e33$" as 4.5*e*33)."""
    return re.sub(r"(?<![\w\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)\b", r"\1*10^\2", s)


def _mv_verdict(pred_text: str, gold: str, letters: str | None) -> bool:
    from math_verify import StringExtractionConfig, parse, verify

    if letters:  # math-verify's letter extraction wants bare letters: "(B)" and "\boxed{B}" -> "B"
        config = [StringExtractionConfig(strings=tuple(letters))]
        text = re.sub(r"\\boxed\{\(?([A-Za-z])\)?\}", r"\1", pred_text)
        text = re.sub(r"\(([A-Za-z])\)", lambda m: m.group(1).upper(), text)
        g, p = parse(gold.strip().upper(), config, parsing_timeout=None), parse(text, config, parsing_timeout=None)
    else:
        g = parse(_as_latex(_sci_notation(gold)), parsing_timeout=None)
        p = parse(_sci_notation(pred_text), parsing_timeout=None)
    return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))


def math_verify_grade(pred_text: str, gold: str | list[str], timeout_s: float | None = MV_TIMEOUT_S, *,
                      letters: str | None = None) -> bool:
    """math-verify's verdict on a completion; ``letters`` (e.g. "ABCD") for multiple choice."""
    ensure_loaded()
    verdict, _ = run_with_timeout(_mv_verdict, pred_text, gold_text(gold), letters, timeout_s=timeout_s, default=False)
    return bool(verdict)


# ---------------------------------------------------------------- RL reward
def _mv_pair(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    # Same argument order as the authors' reward (math_verifier.py: verify(parse(pred), parse(gt))).
    return bool(verify(parse(pred, parsing_timeout=None), parse(gold, parsing_timeout=None), timeout_seconds=None))


def answers_equivalent(pred: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> bool:
    """The RL reward's equivalence: case-insensitive string match, math-verify on Minerva-normalised strings,
    Hendrycks-normalised string match (a cascade: any step that matches counts)."""
    if pred.strip().lower() == gold.strip().lower():
        return True
    ensure_loaded()
    ok, _ = run_with_timeout(_mv_pair, minerva_normalize(pred), minerva_normalize(gold), timeout_s=timeout_s,
                             default=False)
    if ok:
        return True
    try:
        return hendrycks_strip(pred) == hendrycks_strip(gold)
    except Exception:  # noqa: BLE001
        return pred == gold


def boxed_reward(response: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> tuple[float, bool]:
    """(+1.0 if the last \\boxed{} of the response matches gold else -1.0, whether a box was present)."""
    box = last_boxed(response)
    if box is None:
        return -1.0, False
    return (1.0 if answers_equivalent(box, str(gold), timeout_s=timeout_s) else -1.0), True
