"""Reward functions: (response text, gold answer) -> Score. Pluggable by name (`reward.name=...`).

    boxed        (the default) the last \\boxed{} of the response, +1 when it matches the reference by any step of
                 the eval grader's cascade (string match, math-verify, Hendrycks normalisation), else -1, also when
                 there is no box.
    octothinker  the authors' reward exactly (the paper recipes'): a box found by their regex, and math-verify's
                 verdict final, the Hendrycks comparison only when math-verify raises (see `authors_verdict`).
    boxed_01     `boxed` as 1 / 0.
"Answered in a box" is reported apart from "correct": a reward that punishes a missing box teaches boxing first,
and the box rate shows when that phase is over. A response whose grading ran past ``timeout_s`` (the grader runs
in a worker process, killed at the budget) counts as wrong and has ``timed_out`` set.

Register another with

    @register_reward("my_reward")
    def my_reward(response: str, gold: str, *, timeout_s: float) -> Score: ...
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

from octomega.config import ConfigError


@dataclass(frozen=True)
class Score:
    reward: float
    has_box: bool  # the response holds a \boxed{...} answer
    correct: bool  # the answer matches the reference
    timed_out: bool = False  # grading was stopped at its time limit (the response then counts as wrong)


RewardFn = Callable[..., Score]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def deco(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return deco


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise ConfigError(f"reward.name={name!r}: unknown reward; registered: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


@register_reward("boxed")
def boxed(response: str, gold: str, *, timeout_s: float = 5.0) -> Score:
    """OctoThinker's reward: +1 correct boxed answer, -1 otherwise (wrong or no box)."""
    from octomega.eval.grader import boxed_reward_verdict

    reward, has_box, status = boxed_reward_verdict(response, str(gold), timeout_s=timeout_s)
    return Score(reward=float(reward), has_box=has_box, correct=reward > 0, timed_out=status == "timeout")


@register_reward("boxed_01")
def boxed_01(response: str, gold: str, *, timeout_s: float = 5.0) -> Score:
    """The same verdict as 1 / 0 (the convention of many verl recipes)."""
    s = boxed(response, gold, timeout_s=timeout_s)
    return Score(reward=1.0 if s.correct else 0.0, has_box=s.has_box, correct=s.correct, timed_out=s.timed_out)


# ------------------------------------------------------------------------------------- the authors' reward
# rl/verl/utils/reward_score/math_verifier.py (GAIR-NLP/OctoThinker), compute_score with reward_type "default" (the
# RL scripts set no other): the last match of a \boxed{...} regex (-1 when there is none), then is_equiv(pred, gold):
#   1. pred.strip().lower() == gold.strip().lower(): correct;
#   2. normalize_final_answer on both, math-verify's parse on both, verify(pred, gold): its True or False is final;
#   3. only when step 2 raises: Hendrycks' strip_string on both, compared; when that raises too, the two values as
#      step 2 left them (strings, or math-verify's parse results) compared with ==.
# Their normalize_final_answer comes from verl.utils.reward_score.eval, which the release does not include: taken
# (assumed) to be Minerva's normalize_final_answer, the function of that name in verl's reward_score/math_dapo.py
# and lm-eval's minerva_math (octomega.eval.normalize.minerva_normalize).

def _brace_group(depth: int) -> str:
    """A {...} group with up to `depth` more levels of groups inside (their regex nests the levels by hand)."""
    if depth == 0:
        return r"\{[^{}]*\}"
    return r"\{(?:[^{}]|\\\{|\\\}|" + _brace_group(depth - 1) + r")*\}"


# The box holds characters, escaped braces and {...} groups nested at most 3 deep (\boxed{\frac{a}{\sqrt{b^{2}}}}
# is the deepest that matches); no \fbox, no "\boxed 5". A box nested deeper does not match: an earlier one counts.
AUTHORS_BOX = re.compile(r"\\boxed\{((?:[^{}]|\\\{|\\\}|" + _brace_group(2) + r")*)\}")


def authors_box(response: str) -> str | None:
    """The content of the last box the authors' regex finds (non-overlapping matches, left to right), or None."""
    matches = AUTHORS_BOX.findall(response)
    return matches[-1] if matches else None


def authors_strip(s: str) -> str:
    """Hendrycks' MATH strip_string as the authors' reward file has it, raising where it raises: more than one
    "\\text{ " (its unit remover asserts one), an argument-less \\sqrt or \\frac (it indexes the argument's first
    character), and one "/" between parts that are not integers (int() fails)."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("more than one '\\text{ '")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:  # "k = 3" -> "3"
        s = s.split("=")[1]
    if "\\sqrt" in s:  # \sqrt3 -> \sqrt{3}
        head, *rest = s.split("\\sqrt")
        s = head + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in rest)
    s = _authors_fix_fracs(s.replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    parts = s.split("/")
    if len(parts) == 2:  # "3/4" -> \frac{3}{4}
        a, b = int(parts[0]), int(parts[1])
        if s == f"{a}/{b}":
            s = f"\\frac{{{a}}}{{{b}}}"
    return s


def _authors_fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}; an argument of one character leaves the whole string as it was; none raises."""
    head, *rest = s.split("\\frac")
    out = head
    for p in rest:
        if p[0] == "{":
            out += "\\frac" + p
        elif len(p) < 2:
            return s
        else:
            out += "\\frac{" + p[0] + "}" + (p[1] + p[2:] if p[1] == "{" else "{" + p[1] + "}" + p[2:])
    return out


def authors_equivalent(pred: str, gold: str) -> bool:
    """The authors' is_equiv(pred, gold), step by step (the comment above)."""
    from math_verify import parse, verify

    from octomega.eval.normalize import minerva_normalize

    if pred.strip().lower() == gold.strip().lower():
        return True
    a, b = pred, gold
    try:  # one assignment at a time, as theirs: what the fallback compares depends on where an error struck
        a = minerva_normalize(a)
        b = minerva_normalize(b)
        a = parse(a, parsing_timeout=None)  # math-verify's own timeouts off: the worker's budget bounds the call
        b = parse(b, parsing_timeout=None)
        return bool(verify(a, b, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - their fallback runs on any error of this step
        pass
    try:
        return authors_strip(a) == authors_strip(b)
    except Exception:  # noqa: BLE001
        return a == b


def authors_verdict(response: str, gold: str) -> tuple[bool, bool]:
    """(a box was found, its answer is correct) by the authors' reward; any error counts as wrong, as theirs."""
    try:
        box = authors_box(response)
        return box is not None, box is not None and authors_equivalent(box, gold)
    except Exception:  # noqa: BLE001
        return "\\boxed{" in response, False


_POOL = None


@register_reward("octothinker")
def octothinker(response: str, gold: str, *, timeout_s: float = 5.0) -> Score:
    """The authors' reward: +1 correct boxed answer, -1 otherwise. The regex and math-verify run in a grading worker
    killed at timeout_s (their regex can backtrack for long on many unclosed braces): then -1, timed_out set."""
    global _POOL
    if "\\boxed{" not in response:
        return Score(reward=-1.0, has_box=False, correct=False)
    if _POOL is None:
        from octomega.eval.timeouts import WorkerPool

        _POOL = WorkerPool(warmup="octomega.eval.grader:ensure_loaded")
    value, status = _POOL.run(authors_verdict, response, str(gold), timeout_s=timeout_s, default=None)
    if value is None:
        return Score(reward=-1.0, has_box=True, correct=False, timed_out=status == "timeout")
    has_box, correct = value
    return Score(reward=1.0 if correct else -1.0, has_box=has_box, correct=correct)


def score_responses(fn: RewardFn, responses: list[str], golds: list[str], truncated: list[bool], *,
                    no_answer: float, timeout_s: float) -> list[Score]:
    """Score a batch. A response cut at the length cap without a box gets the no-answer reward, whatever the
    reward function says (a half-written answer is not an answer). Responses whose grading timed out are counted
    in one warning line per batch (Score.timed_out has them one by one)."""
    out = []
    for text, gold, cut in zip(responses, golds, truncated):
        s = fn(text, gold, timeout_s=timeout_s)
        if cut and not s.has_box:
            s = Score(reward=no_answer, has_box=False, correct=False, timed_out=s.timed_out)
        out.append(s)
    late = sum(s.timed_out for s in out)
    if late:
        logging.getLogger("octomega.rl").warning(
            "%d of %d responses ran past the grading time limit (%g s) and count as wrong", late, len(out), timeout_s)
    return out
