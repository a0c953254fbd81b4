"""The benchmark registry: the paper's 13 (the default suite), three extras (AIME24, minerva_math, college_math)
and tiny_arith.

The 13: the 12 of the authors' harness config (GAIR-NLP/OctoThinker eval/configs/en_math_cot_few_shot_test_configs.json:
gsm8k, math, olympiad-bench, amc, math_sat, ocw-courses, mmlu-stem, mathqa, svamp, tabmwp, asdiv, mawps) plus MATH500
(its test file ships with that harness, eval/datasets/math500/test.jsonl, and the authors' RL validation uses it).

For each benchmark: how a record of its test file becomes an ``Item`` (question text as the harness builds it,
gold answer as the file gives it: the grader normalises MATH-style golds once, as the harness's process_fn does),
which few-shot prompt and scoring scheme it uses, and where users can download it. Question formatting and gold parsing follow the harness's eval/data_processing/process_utils.py.
Schemes (scoring families, see grader.py): gsm, math, olympiad, choice, mmlu, ocw, tabmwp.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from octomega.eval.extract import answer_spans

RIGHT_CHOICE = "What of the following is the right choice? Explain your answer."


@dataclass
class Item:
    id: str
    question: str
    gold: str | list[str]  # as written in the file (MATH-style: un-normalised; grader._gold_list normalises once)
    meta: dict[str, Any] = field(default_factory=dict)
    solution: str | None = None  # a worked solution ending in the answer, for self-agreement checks


@dataclass(frozen=True)
class HubSource:
    path: str
    configs: tuple[str | None, ...] = (None,)
    split: str = "test"


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    scheme: str
    prompt: str  # few-shot prompt file (prompts/<name>.json)
    to_item: Callable[[dict, int], Item]
    size: int | None = None  # items in the paper's table
    hub: HubSource | None = None
    small: bool = False  # gets avg@K over K samples
    letters: str | None = None  # answer letters of multiple-choice benchmarks
    suite: bool = True  # part of the default suite (the paper's 13)
    # MATH scheme: keep every line of a final answer. The harness cuts each answer to its first line; College
    # Math has 133 golds that span lines, which that cut would make unscorable (docs/eval.md, "Gold echo").
    multiline_answers: bool = False

    @property
    def is_choice(self) -> bool:
        return self.letters is not None


def _field(rec: dict, *names: str) -> Any:
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    raise KeyError(" or ".join(repr(n) for n in names))


def _num(x: Any) -> str:
    return str(x).strip()


# ---------------------------------------------------------------- per-benchmark record -> Item
def _gsm8k(r, i):
    cot, ans = r["answer"].split("####") if "####" in r["answer"] else ("", r["answer"])
    solution = re.sub(r"<<[^<>]*>>", "", cot).strip() + f"\nThe answer is {ans.strip()}."
    return Item(str(r.get("idx", i)), r["question"], ans.strip().replace(",", ""), solution=solution)


def _math(r, i):  # full MATH: gold = every boxed answer of the solution (the harness's extract_math_answer, whose
    q = r["problem"]  # strip_string and comma split the grader applies: eval/data_processing/process_utils.py)
    gold = answer_spans(r["solution"])
    return Item(str(r.get("unique_id", r.get("id", i))), q, gold, {"level": r.get("level"), "subject": r.get("type")},
                solution=r["solution"])


def _math500(r, i):
    q = r["problem"]
    return Item(str(r.get("unique_id", i)), q, r["answer"],
                {"level": r.get("level"), "subject": r.get("subject")}, solution=r.get("solution"))


def _minerva(r, i):
    item = _math(r, i)
    item.id, item.meta = str(r.get("idx", i)), {"subject": r.get("type")}
    return item


def _olympiad(r, i):
    gold = r["final_answer"]
    return Item(str(r.get("id", i)), r["question"], gold[0] if isinstance(gold, list) else gold,
                {"subject": r.get("subfield"), "answer_type": r.get("answer_type")})


def _amc(r, i):  # AMC23 and AIME24
    return Item(str(r.get("id", i)), _field(r, "problem", "question"), _num(r["answer"]), solution=r.get("solution"))


def _sat(r, i):
    options = "(" + r["options"].strip()
    for ch in "BCDEFG":
        options = options.replace(f" {ch}) ", f" ({ch}) ")
    return Item(str(r.get("id", i)), f"{r['question'].strip()}\n{RIGHT_CHOICE}\n{options.strip()}",
                _field(r, "Answer", "answer").strip())


def _ocw(r, i):
    return Item(str(r.get("id", i)), r["problem"].strip(), r["answer"], solution=r.get("solution"))


def _mmlu_stem(r, i):
    choices = _field(r, "choices", "options")
    options = ", ".join(f"({label}) {str(c).strip()}" for label, c in zip("ABCD", choices))
    ans = r["answer"]
    gold = "ABCD"[ans] if isinstance(ans, int) else str(ans).strip()
    return Item(str(r.get("id", i)), f"{r['question'].strip()}\n{RIGHT_CHOICE}\n{options}", gold,
                {"subject": r.get("type", r.get("subject"))})


def _mathqa(r, i):
    q = _field(r, "problem", "Problem").strip()
    q = q[0].upper() + q[1:]
    options = re.sub(r"([a-z])\s*\)\s*([^,]+)\s*,?\s*", lambda m: f"({m.group(1).upper()}) {m.group(2).strip()}, ",
                     r["options"]).strip().rstrip(",")
    rationale = _field(r, "rationale", "Rationale") if ("rationale" in r or "Rationale" in r) else None
    return Item(str(r.get("id", i)), f"{q}\n{RIGHT_CHOICE}\n{options}", str(r["correct"]).strip(),
                {"subject": r.get("category", r.get("type"))}, solution=rationale)


def _svamp(r, i):
    body = r["Body"].strip()
    body = body if body.endswith(".") else body + "."
    return Item(str(r.get("ID", i)), f"{body} {r['Question'].strip()}", _num(r["Answer"]),
                {"type": r.get("Type")}, solution=r.get("Equation"))


def _asdiv(r, i):
    return Item(str(r.get("idx", i)), f"{r['body'].strip()} {r['question'].strip()}",
                re.sub(r"\(.*?\)", "", r["answer"]).strip(), {"type": r.get("solution_type")}, solution=r.get("formula"))


def _mawps(r, i):
    return Item(str(r.get("idx", i)), _field(r, "input", "question"), _num(_field(r, "target", "answer")))


def _tabmwp(r, i):
    title = f'regarding "{r["table_title"]}" ' if r.get("table_title") else ""
    q = f"Read the following table {title}and answer a question:\n{r['table']}\n{r['question']}"
    if r.get("choices"):
        q += f" Please select from the following options: {r['choices']}"
    return Item(str(r.get("id", i)), q, str(r["answer"]), {"ans_type": r.get("ans_type")}, solution=r.get("solution"))


def _college_math(r, i):
    ans = r["answer"].strip().strip("$")
    return Item(f"{r.get('data_source', '')}:{r.get('question_number', i)}", r["question"], ans,
                {"subject": r.get("data_topic")})


def _tiny_arith(r, i):
    return Item(str(r.get("id", i)), r["question"], _num(r["answer"]), {"level": r.get("level")})


# ---------------------------------------------------------------- the registry
_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                  "prealgebra", "precalculus")
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("gsm8k", "GSM8K", "gsm", "gsm_8shot", _gsm8k, 1319, HubSource("openai/gsm8k", ("main",))),
    Benchmark("math", "MATH", "math", "minerva_math_4shot", _math, 5000,
              HubSource("EleutherAI/hendrycks_math", _MATH_SUBJECTS)),
    Benchmark("math500", "MATH500", "math", "minerva_math_4shot", _math500, 500, HubSource("HuggingFaceH4/MATH-500")),
    Benchmark("olympiadbench", "OlympiadBench", "olympiad", "minerva_math_4shot", _olympiad, 675,
              HubSource("Hothan/OlympiadBench", ("OE_TO_maths_en_COMP",), "train")),
    Benchmark("amc23", "AMC23", "gsm", "amc_0shot", _amc, 40, HubSource("math-ai/amc23"), small=True),
    Benchmark("sat_math", "SAT-Math", "choice", "sat_math_4shot", _sat, 32, letters="ABCD"),
    Benchmark("ocw", "OCW Courses", "ocw", "ocw_4shot", _ocw, 272),
    Benchmark("mmlu_stem", "MMLU-STEM", "mmlu", "mmlu_stem_4shot", _mmlu_stem, 3018, HubSource("TIGER-Lab/MMLU-STEM"),
              letters="ABCD"),
    Benchmark("mathqa", "MathQA", "choice", "mathqa_4shot", _mathqa, 1000, letters="ABCDE"),
    Benchmark("svamp", "SVAMP", "gsm", "gsm_8shot", _svamp, 1000, HubSource("ChilleD/SVAMP", split="train+test")),
    Benchmark("tabmwp", "TabMWP", "tabmwp", "gsm_8shot", _tabmwp, 1000),
    Benchmark("asdiv", "ASDiv", "gsm", "gsm_8shot", _asdiv, 2215, HubSource("EleutherAI/asdiv", split="validation")),
    Benchmark("mawps", "MAWPS", "gsm", "gsm_8shot", _mawps, 2065),
    # Extras, outside the paper's 13 (run when named in --benchmarks): AIME24 (not in the authors' harness: AMC's
    # prompt and rules), the OCW problems in Qwen2.5-Math's layout, and College Math.
    Benchmark("aime24", "AIME24", "gsm", "amc_0shot", _amc, 30, HubSource("HuggingFaceH4/aime_2024", split="train"),
              small=True, suite=False),
    Benchmark("minerva_math", "Minerva Math (OCW)", "math", "minerva_math_4shot", _minerva, 272, suite=False),
    Benchmark("college_math", "College Math", "math", "minerva_math_4shot", _college_math, 2818, suite=False,
              multiline_answers=True),
    # The tiny pipeline's synthetic test set (data_prep.synth): integer answers, levels 1-3.
    Benchmark("tiny_arith", "tiny arithmetic", "gsm", "tiny_arith_3shot", _tiny_arith, None, suite=False),
]}
ALIASES = {"olympiad_bench": "olympiadbench", "sat": "sat_math", "math_sat": "sat_math", "ocwcourses": "ocw",
           "mmlu-stem": "mmlu_stem", "aime": "aime24", "amc": "amc23", "gsm": "gsm8k"}
DEFAULT_SUITE = [name for name, b in BENCHMARKS.items() if b.suite]  # the paper's 13


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]
