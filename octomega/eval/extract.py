"""Answer extraction per benchmark family, following the authors' harness (eval/data_processing/answer_extraction.py).

Each function takes the completion text (already cut at the prompt's stop string by the generator; the
harness cuts again at the next exemplar marker, so do we) and returns the harness's native prediction:
a string, or for MATH-style answers a list of strings (every boxed answer, normalised).
"""
from __future__ import annotations

import ast
import re

from octomega.eval.normalize import boxed_contents, harness_strip, last_boxed

NO_ANSWER = "[invalid]"


def _before(text: str, marker: str) -> str:
    return text.split(marker, 1)[0] if marker in text else text


# ---------------------------------------------------------------- GSM8K / SVAMP / ASDiv / MAWPS / AMC
def extract_last_number(text: str, marker: str = "Q: ") -> str:
    """GSM-style: the last number in the completion (before a next "Q: "). No thousands-separator handling:
    "1,000" yields "000", exactly like the harness."""
    nums = re.findall(r"-?\d+\.?\d*", _before(text, marker))
    return nums[-1] if nums else NO_ANSWER


# ---------------------------------------------------------------- MATH (Minerva prompt)
def answer_spans(text: str, first_line: bool = True) -> list[str]:
    """The harness's extract_answer(exhaust=True) before its strip_string (GAIR-NLP/OctoThinker
    eval/data_processing/answer_extraction.py): Minerva's "final answer is $...$. I hope", else every \\boxed{},
    else "The answer is ...", else a ```output block, else the last number; each cut to its first line (unless
    ``first_line`` is off: College Math's multi-line golds), ":" / "." / "/" trimmed at the ends."""
    if "final answer is $" in text and "$. I hope" in text:
        preds = [text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()]
    elif "boxed" in text:
        preds = boxed_contents(text)
    elif "he answer is" in text:
        preds = [text.split("he answer is")[-1].strip()]
    elif "```output" in text and text.split("```output")[-1].split("```")[0].strip():
        preds = [text.split("```output")[-1].split("```")[0].strip()]
    else:  # (an empty output block falls through to the last number, as there)
        nums = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
        preds = [nums[-1]] if nums else []
    out = []
    for p in preds:
        p = p.strip()
        out.append((p.split("\n")[0] if first_line else p).lstrip(":").rstrip(".").rstrip("/"))
    return out


def _harness_answers(text: str, first_line: bool = True) -> list[str]:
    """The harness's extract_answer(exhaust=True): ``answer_spans`` normalised by strip_string."""
    return [harness_strip(p) for p in answer_spans(text, first_line)]


def split_math_answers(question: str, answers: list[str]) -> list[str]:
    """extract_math_answer: split "a, b" when the question asks for a comma list, and "a \\text{ and } b"."""
    out = []
    for a in answers:
        if "separated by commas" in question and all(ch not in a for ch in "()[]"):
            out.extend(x.strip() for x in a.split(","))
        elif re.search(r"\\text\{\s*and\s*\}", a):
            out.extend(x.strip() for x in re.sub(r"\\text\{\s*and\s*\}", "[SEP]", a).split("[SEP]"))
        else:
            out.append(a.strip())
    return out


def extract_math(text: str, question: str = "", first_line: bool = True) -> list[str]:
    """extract_math_few_shot_cot_answer: the text before a next "Problem:", its answers normalised and split."""
    return split_math_answers(question, _harness_answers(_before(text, "Problem:"), first_line))


def extract_olympiad(text: str) -> list[str]:
    """OlympiadBench: everything after the last "Final Answer:", wrapped in \\boxed{} for math-verify."""
    t = text.split("Final Answer:")[-1].replace("The final answer is ", "")
    t = t.split("I hope it is correct.")[0].replace("\n", "")
    return ["\\boxed{" + t.strip() + "}"]


# ---------------------------------------------------------------- multiple choice
def extract_final_choice(text: str, letters: str = "abcd") -> str:
    """SAT / MathQA: "the final answer is (B)" (case-insensitive). The harness only looks for a-d, also for
    MathQA's five options: an "(E)" answer is never extracted there, nor here."""
    m = re.search(rf"the final answer is \(?(?P<ans>[{letters}])\)?", _before(text, "Problem:").lower())
    return m.group("ans").upper() if m else NO_ANSWER


def extract_last_paren_choice(text: str) -> str:
    """MMLU-STEM: the last "(a)".."(d)" anywhere in the completion."""
    found = re.findall(r"\(([abcd])\)", _before(text, "Problem:").lower())
    return found[-1].upper() if found else NO_ANSWER


# ---------------------------------------------------------------- OCW Courses
def extract_ocw(text: str) -> str:
    m = re.search(r"final answer is (?P<ans>.*)\. I hope it is correct.", _before(text, "Problem:"))
    return m.group("ans") if m else NO_ANSWER


# ---------------------------------------------------------------- TabMWP
def extract_tabmwp(text: str, question: str) -> str:
    """Multiple-choice TabMWP questions: the longest option found as a word sequence; else the MATH rule."""
    if "Please select from the following options:" not in question:
        answers = _harness_answers(text)
        return answers[-1] if answers else ""
    found = re.findall(r"\[(.*?)\]", question)
    try:
        options = list(ast.literal_eval(f"[{found[0]}]"))
    except (ValueError, SyntaxError, IndexError):
        return NO_ANSWER
    words = text.rstrip(".").split()
    best = ""
    for option in sorted(options, key=lambda o: len(str(o).split()), reverse=True):
        option = str(option).strip(".").lower()
        k = len(option.split())
        groups = {" ".join(words[i:i + k]).rstrip(".").lower() for i in range(len(words) - k + 1)}
        if option in groups:
            best = option
    return best or NO_ANSWER


# ---------------------------------------------------------------- zero-shot (orz template): last \boxed{}
def extract_boxed(text: str) -> str | None:
    """The RL reward's rule: content of the last \\boxed{...} (braces matched), None without a box."""
    return last_boxed(text)


def choice_letter(answer: str | None, letters: str = "ABCDE") -> str | None:
    """A choice letter from a boxed zero-shot answer: "B", "(B)", "\\text{(B)}", "B) 24" -> "B"."""
    if answer is None:
        return None
    a = re.sub(r"\\text(bf)?\{([^{}]*)\}", r"\2", answer).strip()
    m = re.match(rf"^\(?([{letters}{letters.lower()}])\)?(?:[\s.:)]|$)", a)
    return m.group(1).upper() if m else None
