"""Reward functions: (response text, gold answer) -> Score. Pluggable by name (`reward.name=...`).

The default is OctoThinker's: the last \\boxed{} of the response, +1 when it matches the reference (the eval
grader's cascade: string match, math-verify, Hendrycks normalisation), else -1, also when there is no box.
"Answered in a box" is reported apart from "correct": a reward that punishes a missing box teaches boxing first,
and the box rate shows when that phase is over. A response whose grading ran past ``timeout_s`` (the grader runs
in a worker process, killed at the budget) counts as wrong and has ``timed_out`` set.

Register another with

    @register_reward("my_reward")
    def my_reward(response: str, gold: str, *, timeout_s: float) -> Score: ...
"""

from __future__ import annotations

import logging
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
