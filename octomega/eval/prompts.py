"""Fixed, versioned prompts. Exemplars live in prompts/*.json with their source; this module renders them.

A prompt file holds: the exemplars, how one exemplar is written (``exemplar_template``), how exemplars are
joined, the query template (``{prefix}`` = the rendered exemplars, ``{question}``), a post-processing step
(the harness ``rstrip``s its prompts, AMC's 0-shot prompt only loses leading newlines) and the stop strings
that end a completion before the model starts the next exemplar. ``PromptSpec.fingerprint`` hashes all of
it: results record "name@vN#hash", and tests pin the hashes, so an edited prompt must bump its version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

PROMPT_DIR = Path(__file__).parent / "prompts"
SUITES = ("base-fewshot", "rl-zeroshot", "qa-zeroshot")
ZERO_SHOT_PROMPT = "orz_zeroshot"
ZERO_SHOT_SUITES = {"rl-zeroshot": ZERO_SHOT_PROMPT, "qa-zeroshot": "qa_zeroshot"}
"""Zero-shot suites: one prompt for every benchmark, the last \\boxed{} graded (the RL reward's rule).
rl-zeroshot is OctoThinker's RL template; qa-zeroshot is the mid-training QA format the tiny models learnt."""


def is_zeroshot(suite: str) -> bool:
    return suite in ZERO_SHOT_SUITES


def fill(template: str, **values: str) -> str:
    """Replace {name} placeholders in one pass; other braces (LaTeX, \\boxed{}) are left alone."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True)
class PromptSpec:
    name: str
    version: int
    source: str
    exemplar_template: str
    joiner: str
    prefix_suffix: str
    query_template: str
    post: str
    stop: tuple[str, ...]
    exemplars: tuple[dict, ...]
    fingerprint: str

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}#{self.fingerprint[:8]}"

    @functools.cached_property
    def prefix(self) -> str:
        shots = [fill(self.exemplar_template, **e) for e in self.exemplars]
        return self.joiner.join(shots) + self.prefix_suffix

    def render(self, question: str) -> str:
        text = fill(self.query_template, prefix=self.prefix, question=question)
        if self.post == "rstrip":
            return text.rstrip()
        if self.post == "lstrip_newlines":
            return text.lstrip("\n")
        return text


@functools.lru_cache(maxsize=None)
def load_prompt(name: str) -> PromptSpec:
    path = PROMPT_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.json"))
        raise ValueError(f"unknown prompt {name!r}; prompt files in {PROMPT_DIR}: {known}")
    raw = path.read_text(encoding="utf-8")
    d = json.loads(raw)
    keys = ("exemplar_template", "joiner", "prefix_suffix", "query_template", "post", "stop", "exemplars")
    canonical = json.dumps({k: d[k] for k in keys}, sort_keys=True, ensure_ascii=False)
    return PromptSpec(
        name=d["name"], version=int(d["version"]), source=d["source"], exemplar_template=d["exemplar_template"],
        joiner=d["joiner"], prefix_suffix=d["prefix_suffix"], query_template=d["query_template"], post=d["post"],
        stop=tuple(d["stop"]), exemplars=tuple(d["exemplars"]),
        fingerprint=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    )


def prompt_for(fewshot_prompt: str, suite: str) -> PromptSpec:
    """The prompt a benchmark uses in a suite: its few-shot prompt, or the suite's zero-shot template."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {list(SUITES)}")
    return load_prompt(fewshot_prompt if suite == "base-fewshot" else ZERO_SHOT_SUITES[suite])


def orz_prompt(question: str) -> str:
    """The RL stage's zero-shot prompt for one question (the RL rollout uses the same text)."""
    return load_prompt(ZERO_SHOT_PROMPT).render(question)
