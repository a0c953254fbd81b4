"""Gold echo: every item answered with its own gold, as a model following the few-shot prompt would write it, and
graded twice: by octomega's grader and by the authors' rules.

- ``echo_completion(bench, answer)``: the answer in the benchmark's exemplar format (Minerva's "Final Answer: The
  final answer is $X$. I hope it is correct.", GSM's "The answer is X.", "(B)" for multiple choice, OCW's
  "Final answer: ... I hope it is correct.").
- ``authors_gold(bench, record)``: the gold as the authors' process_fn derives it from the record
  (GAIR-NLP/OctoThinker eval/data_processing/process_utils.py), MATH-style golds normalised once there
  (process_math_test -> extract_math_answer -> strip_string).
- ``authors_verdict(text, gold, scheme, question)``: their answer_extraction_fn and eval_fn per benchmark
  (eval/configs/en_math_cot_few_shot_test_configs.json, eval/eval/eval_script.py) through octomega's port of
  them (extract.py, harness.py), with their gold: no octomega-specific step (loaders, gold normalisation in the
  grader, College Math's multi-line answers).
- ``gold_echo(bench, records)``: both verdicts per item, graded in worker processes with timeouts (two threads,
  each with its own worker).

An item the authors' rules score correct must score correct in octomega too, or be a listed, deliberate
departure (tests/eval/test_gold_echo.py, docs/eval.md "Gold echo"). Benchmarks outside the authors' config get
the rules octomega chose for them: MATH500 and College Math MATH's (the gold from the answer field, normalised
once), minerva_math MATH's, AIME24 AMC's.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from octomega.eval import extract as ex
from octomega.eval import harness as hs
from octomega.eval.benchmarks import Benchmark
from octomega.eval.extract import answer_spans, split_math_answers
from octomega.eval.grader import HARNESS_TIMEOUT_S, grade_verdict
from octomega.eval.normalize import harness_strip
from octomega.eval.timeouts import WorkerPool

_POOL = WorkerPool(warmup="octomega.eval.grader:ensure_loaded")


class Echo(NamedTuple):
    id: str
    ours: bool  # octomega's grade() on the echo, with the loader's Item
    authors: bool  # the authors' rules (process_fn gold, extraction, eval_fn) on the same echo
    status: str  # "ok", or "timeout" / "error" of either grader (counted wrong)


# ---------------------------------------------------------------- the answer a model would write
def model_answer(bench: Benchmark, rec: dict) -> str | list[str]:
    """The gold as written in the record, before any normalisation: a list for several boxed answers."""
    name, scheme = bench.name, bench.scheme
    if scheme == "math":
        if name in ("math", "minerva_math"):
            return answer_spans(rec["solution"]) or [""]
        return rec["answer"].strip().strip("$") if name == "college_math" else rec["answer"]
    gold = authors_gold(bench, rec)
    return str(gold).strip()


def echo_completion(bench: Benchmark, answer: str | list[str]) -> str:
    """``answer`` written the way the benchmark's exemplars end (octomega/eval/prompts/*.json)."""
    s = bench.scheme
    if s == "math":
        if isinstance(answer, list) and len(answer) > 1:  # several answers: each boxed (the Final Answer line has one)
            return "So the answers are " + ", ".join(f"$\\boxed{{{a}}}$" for a in answer) + "."
        a = answer[0] if isinstance(answer, list) else answer
        return f"So the answer is $\\boxed{{{a}}}$.\nFinal Answer: The final answer is ${a}$. I hope it is correct."
    a = ", ".join(answer) if isinstance(answer, list) else str(answer)
    if s == "olympiad":  # the Minerva exemplars write the final answer in $...$
        return f"Final Answer: The final answer is {a if '$' in a else f'${a}$'}. I hope it is correct."
    if s in ("choice", "mmlu"):
        return f"Final Answer: The final answer is ({a.upper()}). I hope it is correct."
    if s == "ocw":
        return f"Final answer: The final answer is {a}. I hope it is correct."
    return f"We compute it step by step. The answer is {a}."


# ---------------------------------------------------------------- the authors' gold and verdict
def _math_rule(question: str, answers: list[str]) -> list[str]:
    """extract_math_answer on answers already cut out: strip_string once, then the comma / "and" split."""
    return split_math_answers(question, [harness_strip(a) for a in answers])


def authors_gold(bench: Benchmark, rec: dict) -> str | list[str]:
    """The gold of eval/data_processing/process_utils.py's process_<benchmark> for a shipped record."""
    name = bench.name
    if name in ("math", "minerva_math"):  # process_math_test: extract_math_answer(question, solution)
        return _math_rule(rec["problem"], answer_spans(rec["solution"]))
    if name == "math500":  # not in the config: MATH's rule on the answer field (process_math500 keeps it raw)
        return _math_rule(rec["problem"], [rec["answer"]])
    if name == "college_math":  # not in the harness: MATH's rule on the answer field
        return _math_rule(rec["question"], [rec["answer"].strip().strip("$")])
    if name == "gsm8k":  # process_gsm8k_test: answer.replace(',', '') (their file has the number; ours "... #### N")
        return rec["answer"].split("####")[-1].strip().replace(",", "")
    if name == "olympiadbench":  # process_olympiad_bench: final_answer[0]
        return rec["final_answer"][0]
    if name in ("amc23", "aime24"):  # process_amc: str(answer)
        return str(rec["answer"])
    if name == "sat_math":  # process_math_sat: Answer
        return rec["Answer"]
    if name == "mmlu_stem":  # process_mmlu_stem: the letter (the shipped file holds its index)
        ans = rec["answer"]
        return "ABCD"[int(ans)] if str(ans).isdigit() else str(ans)
    if name == "mathqa":  # process_mathqa: str(correct)
        return str(rec["correct"])
    if name == "svamp":  # process_svamp: str(Answer)
        return str(rec["Answer"])
    if name == "asdiv":  # process_asdiv: answer without "(...)", not stripped
        return re.sub(r"\(.*?\)", "", rec["answer"])
    if name == "mawps":  # process_mawps: str(target)
        return str(rec["target"])
    if name == "ocw":  # process_ocwcourses: answer
        return rec["answer"]
    raise ValueError(f"no reference gold rule for benchmark {name!r}")


def authors_verdict(text: str, gold, scheme: str, question: str) -> bool:
    """The config's answer_extraction_fn + eval_fn for the scheme (eval/eval/eval_script.py)."""
    if scheme == "math":  # extract_math_few_shot_cot_answer + eval_math
        return hs.eval_math(ex.extract_math(text, question), list(gold))
    if scheme == "gsm":  # extract_gsm_few_shot_cot_answer + eval_last_single_answer
        return hs.is_correct(ex.extract_last_number(text), gold)
    if scheme == "olympiad":  # extract_olympiad_math_answer + eval_olympiad_math
        return hs.eval_olympiad(ex.extract_olympiad(text), gold)
    if scheme == "choice":  # extract_sat_few_shot_answer / extract_mathqa_few_shot_answer + eval_math_sat
        return hs.eval_choice(ex.extract_final_choice(text), gold)
    if scheme == "mmlu":  # extract_mmlu_stem + eval_mmlu_stem
        return hs.eval_choice(ex.extract_last_paren_choice(text), gold)
    if scheme == "ocw":  # extract_ocwcourses_few_shot_answer + eval_ocwcourses
        return hs.eval_ocw(ex.extract_ocw(text), gold)
    raise ValueError(f"no reference rule for scheme {scheme!r}")


# ---------------------------------------------------------------- both verdicts over a test set
def _one(bench: Benchmark, item, rec: dict, timeout_s: float) -> Echo:
    text = echo_completion(bench, model_answer(bench, rec))
    ours = grade_verdict(text, item.gold, bench, question=item.question, timeout_s=timeout_s)
    theirs, status = _POOL.run(authors_verdict, text, authors_gold(bench, rec), bench.scheme, item.question,
                               timeout_s=timeout_s, default=False)
    worst = ours.status if ours.status != "ok" else status
    return Echo(item.id, ours.correct, bool(theirs), worst)


def gold_echo(bench: Benchmark, items: list, records: list[dict], *, threads: int = 2,
              timeout_s: float = HARNESS_TIMEOUT_S) -> list[Echo]:
    """Both verdicts for every (item, record) pair (items from the loader, records the raw lines, same order)."""
    if len(items) != len(records):
        raise ValueError(f"{bench.name}: {len(items)} items but {len(records)} records")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda pair: _one(bench, *pair, timeout_s), zip(items, records)))
