"""OctoThinker's corpora (docs/recipe.md, "Data") and the stage mixtures, by role.

A role is what a corpus does in a mixture: "web" (the core math web corpus), "web_broad" (broad math web),
"dclm" (general web), "code", "qa" (MegaMath QA in the stable stage), "qa_short" / "qa_long" (short / long
chain-of-thought QA in the decay stage), "instruct" (general instruction data). A mixture gives each role a share
of the stage's tokens; corpora that fill the same role split its share in proportion to their tokens. A mixture may
also name one registry corpus instead of a role (the ablations below name OpenR1 and OMI2 apart). The tiny corpora
of data_prep.synth fill the same roles, so the tiny pipeline runs the same code with the tiny_* mixtures
(docs/tiny_science.md).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("web", "web_broad", "dclm", "code", "qa", "qa_short", "qa_long", "instruct")


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
    Corpus("tulu-3-sft-mixture", "allenai/tulu-3-sft-mixture", ("instruct",), text_key=None, messages_key="messages",
           qa_style="short", note="general instruction data (assumed: the paper does not name its instruction set)"),
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

# OctoThinker's mid-training ablations, from the run names the authors logged (plot/data/**.csv in GAIR-NLP/OctoThinker;
# the same names as the released checkpoints). What a name gives is published; the rest is marked assumed.
#  - 20B-token mid-training of Llama-3.2-3B on MegaMath-Web-Pro (plot/data/analysis_qa, analysis_instruction):
#    "mmwebpro.synqa.91" = 90% MegaMath-Web-Pro + 10% MegaMath synthetic QA; "mmwebpro.openr1.91" = 90% + 10%
#    OpenR1 (long CoT); "mmwebpro.synqa.ins.89101" and "mmwebpro.openr1.ins.89101" = 89% + 10% + 1% instruction data.
#    Which instruction set: not published (the registry's instruct corpus is assumed).
#  - decays of 10B tokens after a 130B-token stable stage (plot/data/3b_decay_ablation_*): "decay.omi.0X0",
#    "decay.synthqa.0X0", "decay.openr1.0X0" = that QA corpus at 10, 20, 30, 40%; "decay.openr1.010.omi2.020" /
#    ".015.omi2.015" / ".020.omi2.010" = OpenR1 + OMI2 at 10+20, 15+15, 20+10%. The rest of each decay mixture is not
#    in the names: assumed to be the stable stage's web corpus ("web").
ABLATION_QA = {"omi2": "openmathinstruct-2", "synthqa": "megamath-qa", "openr1": "openr1-math"}
MIXTURES.update({
    "ablate_synqa_91": {"megamath-web-pro": 0.90, "megamath-qa": 0.10},
    "ablate_openr1_91": {"megamath-web-pro": 0.90, "openr1-math": 0.10},
    "ablate_synqa_ins_89101": {"megamath-web-pro": 0.89, "megamath-qa": 0.10, "instruct": 0.01},
    "ablate_openr1_ins_89101": {"megamath-web-pro": 0.89, "openr1-math": 0.10, "instruct": 0.01},
    **{f"decay_{tag}_{pct:03d}": {"web": 1 - pct / 100, corpus: pct / 100}
       for tag, corpus in ABLATION_QA.items() for pct in (10, 20, 30, 40)},
    **{f"decay_openr1_{a:03d}_omi2_{b:03d}": {"web": 0.70, "openr1-math": a / 100, "openmathinstruct-2": b / 100}
       for a, b in ((10, 20), (15, 15), (20, 10))},
})


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
