"""Prompt templates of the RL stage: one question -> the text the policy continues. Validation uses the same one.

    orz   OctoThinker's RL template (docs/recipe.md), rendered by octomega.eval.prompts (the rl-zeroshot suite's
          prompt); responses stop at "User:", "Assistant:", "Question:" or "Answer:", the stop string's tokens kept
          in the trained response (the authors' rollout; see ORZ_STOP)
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
    # The matched stop string's tokens stay in the response the policy is trained on (its text is cut either way)
    keep_stop_tokens: bool = False


# The authors' rollout stops at these strings and keeps their tokens: training/rl/verl/workers/rollout/vllm_rollout/
# vllm_rollout_spmd.py (GAIR-NLP/OctoThinker) sets SamplingParams(stop=['User:', 'Assistant:', "Question:",
# "Answer:"], include_stop_str_in_output=False); vLLM then cuts only the output text (vllm/engine/output_processor/
# stop_checker.py), and verl trains on, and its reward decodes, the response token ids, stop string included.
ORZ_STOP = ("User:", "Assistant:", "Question:", "Answer:")


def _orz(question: str) -> str:
    from octomega.eval.prompts import orz_prompt

    return orz_prompt(question)


def _qa(question: str) -> str:  # the eval's qa-zeroshot prompt: validation and `octomega eval` see the same text
    from octomega.eval.prompts import load_prompt

    return load_prompt("qa_zeroshot").render(question)


TEMPLATES: dict[str, Template] = {
    "orz": Template("orz", _orz, ORZ_STOP, keep_stop_tokens=True),
    "qa": Template("qa", _qa, ("\nQuestion:",)),
    "raw": Template("raw", lambda q: q),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ConfigError(f"rollout.template={name!r}: unknown; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
