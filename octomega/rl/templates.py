"""Prompt templates of the RL stage: one question -> the text the policy continues. Validation uses the same one.

    orz   OctoThinker's RL template (docs/recipe.md), rendered by octomega.eval.prompts (the rl-zeroshot suite's prompt)
    qa    the mid-training QA format "Question: {question}\\nAnswer:" (data_prep.QA_TEMPLATE without the answer):
          what the tiny models were trained on, so the tiny pipeline's RL starts from a model that answers
          (the eval's qa-zeroshot suite renders the same text)
    raw   the question as given (a prompt set whose questions are already rendered)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from octomega.config import ConfigError


@dataclass(frozen=True)
class Template:
    name: str
    render: Callable[[str], str]
    stop: tuple[str, ...] = field(default_factory=tuple)  # stop strings that end a response


def _orz(question: str) -> str:
    from octomega.eval.prompts import orz_prompt

    return orz_prompt(question)


def _qa(question: str) -> str:  # the eval's qa-zeroshot prompt: validation and `octomega eval` see the same text
    from octomega.eval.prompts import load_prompt

    return load_prompt("qa_zeroshot").render(question)


TEMPLATES: dict[str, Template] = {
    "orz": Template("orz", _orz),
    "qa": Template("qa", _qa, ("\nQuestion:",)),
    "raw": Template("raw", lambda q: q),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ConfigError(f"rollout.template={name!r}: unknown; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
