"""Grading: the harness verdict per benchmark, math-verify as a second verdict, and the RL reward.

Public API (others import these):
- ``extract_answer(text, benchmark)``: the answer the harness would extract from a completion (display form).
- ``grade(pred, gold, benchmark)``: the harness-style verdict. ``pred`` is the model's completion text
  (extraction happens inside, as in the harness); ``gold`` the benchmark's gold answer (Item.gold).
- ``math_verify_grade(pred_text, gold)``: math-verify's verdict on the completion text, with math-verify's
  signal-based timeouts off and our own per-item timeout.
- ``boxed_reward(response, gold)``: OctoThinker's RL reward: last \\boxed{} in the response; +1 if it matches
  (string match, then math-verify on Minerva-normalised strings, then Hendrycks normalisation), else -1
  (also when there is no box). Returns (reward, had_box).
- ``grade_verdict``, ``math_verify_verdict``, ``boxed_reward_verdict``: the same, with the grading status:
  "ok", "timeout" (the grader ran past its budget: counted wrong) or "error" (the grader failed: wrong).

Budgets: sympy evaluates powers and factorials eagerly (``9^{9^{9^{9}}}`` would run for hours, in C, holding
the GIL), so every verdict that can reach sympy runs in a worker process (timeouts.WorkerPool) that is killed at
the budget; each call returns within its budget whatever the answer. Only cheap string work (extraction of the
last box, exact string comparison) runs in the caller.

Suites: "base-fewshot" extracts and scores like the harness (scheme of the benchmark: gsm, math, olympiad,
choice, mmlu, ocw, tabmwp); "rl-zeroshot" extracts the last \\boxed{} and scores like the RL reward
(multiple-choice: the boxed letter).
"""
from __future__ import annotations

import re
import threading
from types import SimpleNamespace
from typing import NamedTuple

from octomega.eval import extract as ex
from octomega.eval import harness as hs
from octomega.eval.benchmarks import Benchmark, get_benchmark
from octomega.eval.extract import split_math_answers
from octomega.eval.normalize import harness_strip, hendrycks_strip, last_boxed, minerva_normalize
from octomega.eval.prompts import is_zeroshot
from octomega.eval.timeouts import WorkerPool

HARNESS_TIMEOUT_S = 15.0  # the harness's pebble pool gives each item 15 s
MV_TIMEOUT_S = 5.0  # math-verify's own default per parse/verify call
_MISSING = {ex.NO_ANSWER, "placeholder", "[invalidanswer]", ""}


_LOADED = threading.Event()
_LOAD_LOCK = threading.Lock()
_POOL = WorkerPool(warmup="octomega.eval.grader:ensure_loaded")


class Verdict(NamedTuple):
    correct: bool
    status: str = "ok"  # "ok", "timeout" (past the budget: counted wrong) or "error" (the grader failed: wrong)

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout"


def _run(fn, *args, timeout_s: float | None) -> Verdict:
    """fn(*args) in a grading worker process, killed past timeout_s (None: here, without a limit)."""
    value, status = _POOL.run(fn, *args, timeout_s=timeout_s, default=False)
    return Verdict(bool(value), status)


def grading_worker_pids() -> list[int]:
    """Process ids of this process's grading workers (tests, diagnostics)."""
    return _POOL.pids()


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
    """A MATH-style gold as the harness's process_fn leaves it: each answer strip_string-ed once, then split
    (extract_math_answer). Items hold the file's un-normalised answers, so this is the only normalisation: a
    second strip_string is not idempotent (``x \\in [-2,7]`` -> ``x\\in[-2,7]`` -> ``[-2,7]``)."""
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
        return ex.extract_math(text, question, first_line=not getattr(bench, "multiline_answers", False))
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
    """The extracted answer as a string (several MATH answers joined by ", "); None when nothing was found.
    Runs here, without a time limit; ``extract_answer_within`` runs it in a grading worker with a budget (the
    harness's rules are regular expressions over model output, and one of them was once quadratic on long digit
    runs: the budget holds whatever the next one does)."""
    return _extract(text, _bench(benchmark), question, suite)


def _extract_in_worker(text: str, scheme: str, name: str, letters: str | None, question: str,
                       suite: str, multiline: bool = False) -> str | None:
    bench = SimpleNamespace(scheme=scheme, name=name, letters=letters, is_choice=letters is not None,
                            multiline_answers=multiline)
    return _extract(text, bench, question, suite)


def extract_answer_within(text: str, benchmark: str | Benchmark, *, question: str = "", suite: str = "base-fewshot",
                          timeout_s: float | None = HARNESS_TIMEOUT_S) -> tuple[str | None, str]:
    """``extract_answer`` in a grading worker: (answer, "ok"), or (None, "timeout" | "error")."""
    bench = _bench(benchmark)
    return _POOL.run(_extract_in_worker, text, bench.scheme, bench.name, bench.letters, question, suite,
                     bench.multiline_answers, timeout_s=timeout_s, default=None)


def _extract(text: str, bench, question: str, suite: str) -> str | None:
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


def _harness_verdict_in_worker(text: str, gold, scheme: str, name: str, question: str, multiline: bool = False) -> bool:
    # the Benchmark itself need not travel (its to_item may be a lambda): the verdict needs scheme, name, one flag
    return _harness_verdict(text, gold, SimpleNamespace(scheme=scheme, name=name, multiline_answers=multiline),
                            question)


def _zeroshot_verdict(text: str, gold, bench: Benchmark, timeout_s: float | None) -> Verdict:
    box = ex.extract_boxed(text)
    if box is None:
        return Verdict(False)
    if bench.is_choice:
        return Verdict(ex.choice_letter(box, bench.letters) == gold_text(gold).strip().upper())
    return equivalence_verdict(box, gold_text(gold), timeout_s=timeout_s)


def grade_verdict(pred: str, gold: str | list[str], benchmark: str | Benchmark, *, question: str = "",
                  suite: str = "base-fewshot", timeout_s: float | None = HARNESS_TIMEOUT_S) -> Verdict:
    """``grade`` with its status: a grader that runs past timeout_s is stopped and counts as wrong ("timeout")."""
    bench = _bench(benchmark)
    if is_zeroshot(suite):
        return _zeroshot_verdict(pred, gold, bench, timeout_s)
    return _run(_harness_verdict_in_worker, pred, gold, bench.scheme, bench.name, question, bench.multiline_answers,
                timeout_s=timeout_s)


def grade(pred: str, gold: str | list[str], benchmark: str | Benchmark, *, question: str = "",
          suite: str = "base-fewshot", timeout_s: float | None = HARNESS_TIMEOUT_S) -> bool:
    """Harness-style verdict on a completion. A grader that runs past timeout_s counts as wrong."""
    return grade_verdict(pred, gold, benchmark, question=question, suite=suite, timeout_s=timeout_s).correct


# ---------------------------------------------------------------- math-verify verdict
def _as_latex(gold: str) -> str:
    # A gold that opens a math span is math-verify's already; one with "$" only inside (College Math's answers with
    # their outer "$" taken off: "x=1$ and $y=2") is wrapped too, so its spans stay balanced.
    return gold if (gold.startswith("$") or "\\boxed" in gold or "\\(" in gold or "\\[" in gold) else f"${gold}$"


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


def math_verify_verdict(pred_text: str, gold: str | list[str], timeout_s: float | None = MV_TIMEOUT_S, *,
                        letters: str | None = None) -> Verdict:
    """``math_verify_grade`` with its status ("timeout": stopped at timeout_s, counted wrong)."""
    return _run(_mv_verdict, pred_text, gold_text(gold), letters, timeout_s=timeout_s)


def math_verify_grade(pred_text: str, gold: str | list[str], timeout_s: float | None = MV_TIMEOUT_S, *,
                      letters: str | None = None) -> bool:
    """math-verify's verdict on a completion; ``letters`` (e.g. "ABCD") for multiple choice."""
    return math_verify_verdict(pred_text, gold, timeout_s, letters=letters).correct


# ---------------------------------------------------------------- RL reward
def _mv_pair(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    # Same argument order as the authors' reward (math_verifier.py: verify(parse(pred), parse(gt))).
    return bool(verify(parse(pred, parsing_timeout=None), parse(gold, parsing_timeout=None), timeout_seconds=None))


def _equivalent_in_worker(pred: str, gold: str) -> bool:
    # The cascade's later steps, in one budget: any step that matches counts, so the cheap string step goes first
    # (the verdict is the same in either order).
    try:
        if hendrycks_strip(pred) == hendrycks_strip(gold):
            return True
    except Exception:  # noqa: BLE001
        if pred == gold:
            return True
    try:
        return _mv_pair(minerva_normalize(pred), minerva_normalize(gold))
    except Exception:  # noqa: BLE001 - math-verify failing is "no match", as before
        return False


def equivalence_verdict(pred: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> Verdict:
    """``answers_equivalent`` with its status ("timeout": stopped at timeout_s, counted wrong)."""
    if pred.strip().lower() == gold.strip().lower():
        return Verdict(True)
    return _run(_equivalent_in_worker, pred, gold, timeout_s=timeout_s)


def answers_equivalent(pred: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> bool:
    """The RL reward's equivalence: case-insensitive string match, math-verify on Minerva-normalised strings,
    Hendrycks-normalised string match (a cascade: any step that matches counts)."""
    return equivalence_verdict(pred, gold, timeout_s).correct


def boxed_reward_verdict(response: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> tuple[float, bool, str]:
    """``boxed_reward`` with the grading status: (reward, had_box, "ok" | "timeout" | "error")."""
    box = last_boxed(response)
    if box is None:
        return -1.0, False, "ok"
    v = equivalence_verdict(box, str(gold), timeout_s=timeout_s)
    return (1.0 if v.correct else -1.0), True, v.status


def boxed_reward(response: str, gold: str, timeout_s: float | None = MV_TIMEOUT_S) -> tuple[float, bool]:
    """(+1.0 if the last \\boxed{} of the response matches gold else -1.0, whether a box was present)."""
    reward, had_box, _ = boxed_reward_verdict(response, gold, timeout_s)
    return reward, had_box
