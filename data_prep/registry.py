"""OctoThinker's corpora (docs/recipe.md, "Data") and the stage mixtures, by role.

A role is what a corpus does in a mixture: "web" (the core math web corpus), "web_broad" (broad math web),
"dclm" (general web), "code", "qa" (MegaMath QA in the stable stage), "qa_short" / "qa_long" (short / long
chain-of-thought QA in the decay stage). A mixture gives each role a share of the stage's tokens; corpora that
fill the same role split its share in proportion to their tokens. The tiny corpora of data_prep.synth fill
the same roles, so the tiny pipeline runs the same code with the tiny_* mixtures (docs/tiny_science.md).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("web", "web_broad", "dclm", "code", "qa", "qa_short", "qa_long")


@dataclass(frozen=True)
class Corpus:
    name: str
    source: str  # hub id (input_format hf) or a path relative to the synth output directory
    roles: tuple[str, ...]
    input_format: str = "hf"
    subset: str | None = None  # hub configuration name
    data_dir: str | None = None  # hub data_dir (MegaMath keeps each subset in its own folder)
    split: str = "train"
    text_key: str | None = "text"
    question_key: str | None = None
    answer_key: str | None = None
    messages_key: str | None = None
    qa_style: str | None = None
    note: str = ""


CORPORA = {c.name: c for c in [
    Corpus("megamath-web-pro-max", "OctoThinker/MegaMath-Web-Pro-Max", ("web",),
           note="~70B+ tokens; the stable stage's core corpus (docs/recipe.md)"),
    Corpus("megamath-web-pro", "LLM360/MegaMath", ("web",), data_dir="megamath-web-pro", note="15.1B tokens"),
    Corpus("megamath-web", "LLM360/MegaMath", ("web_broad",), data_dir="megamath-web", note="263.9B tokens"),
    Corpus("megamath-code", "LLM360/MegaMath", ("code",), data_dir="megamath-code", note="28.1B tokens"),
    Corpus("megamath-qa", "LLM360/MegaMath", ("qa", "qa_short"), data_dir="megamath-qa",
           note="7.0B tokens of synthetic QA already written as text"),
    Corpus("megamath-text-code-block", "LLM360/MegaMath", ("code",), data_dir="megamath-text-code-block",
           note="50.3B tokens"),
    Corpus("megamath-translated-code", "LLM360/MegaMath", ("code",), data_dir="megamath-translated-code",
           note="7.2B tokens"),
    Corpus("dclm-baseline", "mlfoundations/dclm-baseline-1.0", ("dclm",), note="general web text (DCLM baseline)"),
    Corpus("openr1-math", "open-r1/OpenR1-Math-220k", ("qa_long",), subset="default", text_key=None,
           messages_key="messages", qa_style="long", note="long CoT (DeepSeek R1 traces), 94k problems"),
    Corpus("am-deepseek-r1-distilled", "a-m-team/AM-DeepSeek-R1-Distilled-1.4M", ("qa_long",), text_key=None,
           messages_key="messages", qa_style="long", note="long CoT; acknowledged by the paper, share unknown"),
    Corpus("openmathinstruct-2", "nvidia/OpenMathInstruct-2", ("qa_short",), text_key=None, question_key="problem",
           answer_key="generated_solution", qa_style="short", note="short CoT (OMI2)"),
    # The embedded demo corpora (python -m data_prep.synth --out DIR); source relative to DIR.
    Corpus("web", "raw/web.jsonl", ("web",), input_format="jsonl", note="tiny math web text"),
    Corpus("qa_short", "raw/qa_short.jsonl", ("qa_short",), input_format="jsonl", text_key=None,
           question_key="question", answer_key="answer", qa_style="short", note="tiny short-CoT QA"),
    Corpus("qa_long", "raw/qa_long.jsonl", ("qa_long",), input_format="jsonl", text_key=None,
           question_key="question", answer_key="answer", qa_style="long", note="tiny long-CoT QA"),
]}

# role -> share of the stage's training tokens. Exact branch mixtures are unpublished: these are docs/recipe.md's
# documented assumptions (stable: MegaMath-style mix around Web-Pro-Max; decay: 70% web + 30% QA of the style).
MIXTURES = {
    "stable": {"web": 0.70, "dclm": 0.10, "web_broad": 0.10, "qa": 0.05, "code": 0.05},
    "decay_long": {"web": 0.70, "qa_long": 0.30},
    "decay_short": {"web": 0.70, "qa_short": 0.30},
    "decay_hybrid": {"web": 0.70, "qa_long": 0.15, "qa_short": 0.15},
    # The tiny demo (docs/tiny_science.md): web-only stable stage, decay 40% web + 60% QA of the branch's style,
    # and a web-only decay as the "stable only" control.
    "tiny_stable": {"web": 1.0},
    "tiny_decay_web": {"web": 1.0},
    "tiny_decay_short": {"web": 0.40, "qa_short": 0.60},
    "tiny_decay_long": {"web": 0.40, "qa_long": 0.60},
    "tiny_decay_hybrid": {"web": 0.40, "qa_short": 0.30, "qa_long": 0.30},
}


def roles_of(name: str) -> list[str]:
    """The roles of a registry corpus name, or [name] when the name is a role ([] when neither)."""
    if name in ROLES:
        return [name]
    c = CORPORA.get(name)
    return list(c.roles) if c else []


def tokenize_command(c: Corpus, tokenizer: str = "TOKENIZER", out: str = "OUT") -> str:
    """The data_prep.tokenize command line that prepares corpus c."""
    return f"python -m data_prep.tokenize --corpus {c.name} --tokenizer {tokenizer} --output-dir {out}" + (
        f" --input SYNTH_DIR/{c.source}" if c.input_format != "hf" else "")
