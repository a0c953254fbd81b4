"""Evaluation recipes: which model, which suite, which benchmarks and how to generate, as `octomega eval RECIPE`.

    <size>_eval_base            the untouched base model, few-shot (docs/recipe.md: CoT, greedy, 1,024 new tokens)
    <size>_eval_<branch>        a decay branch's HF export, few-shot, every benchmark (branch: long | short | hybrid)
    <size>_eval_rl_<branch>     that branch after GRPO (RUN/hf), zero-shot with the orz template (docs/recipe.md)
    <size>_eval_rl              = <size>_eval_rl_long

Benchmarks: all 13 (octomega.eval.benchmarks.DEFAULT_SUITE); avg@K with K = 16 samples on the small sets (AMC23,
AIME24; assumed, docs/recipe.md "Evaluation"). Generation: vLLM with the training recipe's tensor
parallel size. Paths follow $OCTOMEGA_RUNS / $OCTOMEGA_MODELS as the training recipes do; any field can be
changed on the command line (`octomega eval llama32_1b_eval_long --limit 50 --backend hf`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

from recipes import env_dir, register
from recipes.rl import PAPER_SIZES  # size -> HF base model name

VLLM_TP = 1  # one H100 holds any of the three in bf16 (8B: 16 GB of weights); more GPUs = more eval jobs


@dataclass
class EvalRecipe:
    """The `octomega eval` options of one evaluation (field = the option without its dashes)."""

    name: str
    model: str  # a Hugging Face model directory
    suite: str = "base-fewshot"  # base-fewshot | rl-zeroshot | qa-zeroshot
    benchmarks: list[str] | None = None  # None = all 13
    backend: str = "vllm"
    tensor_parallel_size: int | None = None
    samples: int = 1  # K sampled completions (avg@K) besides the greedy one
    samples_on: str = "small"
    max_new_tokens: int | None = None  # None: 1024 (few-shot), 2048 (zero-shot)
    out: str | None = None

    def cli_defaults(self) -> dict:
        d = asdict(self)
        d["benchmarks"] = ",".join(self.benchmarks) if self.benchmarks else None
        return d


# The recipes: name -> (size, what): the base model, a decay branch's HF export (long | short | hybrid), or
# rl_<branch>: GRPO from that branch.
PAPER_EVALS = {
    "llama32_1b_eval_base": ("llama32_1b", "base"),
    "llama32_1b_eval_long": ("llama32_1b", "long"),
    "llama32_1b_eval_short": ("llama32_1b", "short"),
    "llama32_1b_eval_hybrid": ("llama32_1b", "hybrid"),
    "llama32_1b_eval_rl_long": ("llama32_1b", "rl_long"),
    "llama32_1b_eval_rl_short": ("llama32_1b", "rl_short"),
    "llama32_1b_eval_rl_hybrid": ("llama32_1b", "rl_hybrid"),
    "llama32_1b_eval_rl": ("llama32_1b", "rl_long"),  # = llama32_1b_eval_rl_long, its own output dir
    "llama32_3b_eval_base": ("llama32_3b", "base"),
    "llama32_3b_eval_long": ("llama32_3b", "long"),
    "llama32_3b_eval_short": ("llama32_3b", "short"),
    "llama32_3b_eval_hybrid": ("llama32_3b", "hybrid"),
    "llama32_3b_eval_rl_long": ("llama32_3b", "rl_long"),
    "llama32_3b_eval_rl_short": ("llama32_3b", "rl_short"),
    "llama32_3b_eval_rl_hybrid": ("llama32_3b", "rl_hybrid"),
    "llama32_3b_eval_rl": ("llama32_3b", "rl_long"),
    "llama31_8b_eval_base": ("llama31_8b", "base"),
    "llama31_8b_eval_long": ("llama31_8b", "long"),
    "llama31_8b_eval_short": ("llama31_8b", "short"),
    "llama31_8b_eval_hybrid": ("llama31_8b", "hybrid"),
    "llama31_8b_eval_rl_long": ("llama31_8b", "rl_long"),
    "llama31_8b_eval_rl_short": ("llama31_8b", "rl_short"),
    "llama31_8b_eval_rl_hybrid": ("llama31_8b", "rl_hybrid"),
    "llama31_8b_eval_rl": ("llama31_8b", "rl_long"),
}


def paper_eval(size: str, what: str, name: str | None = None) -> EvalRecipe:
    """Evaluate `what` (base | long | short | hybrid | rl_<branch>) of `size`; `name` default <size>_eval_<what>."""
    runs, models = env_dir("OCTOMEGA_RUNS"), env_dir("OCTOMEGA_MODELS")
    name = name or f"{size}_eval_{what}"
    if what == "base":
        model, suite = f"{models}/{PAPER_SIZES[size]['hf']}", "base-fewshot"
    elif what.startswith("rl_"):
        model, suite = f"{runs}/{size}_rl_grpo_{what[3:]}/hf", "rl-zeroshot"
    else:
        model, suite = f"{runs}/{size}_decay_{what}/hf", "base-fewshot"
    return EvalRecipe(name=name, model=model, suite=suite, tensor_parallel_size=VLLM_TP, samples=16,
                      out=f"{runs}/eval/{name}")


def _doc(name: str, size: str, what: str) -> str:
    if name != f"{size}_eval_{what}":
        return f"{size}: evaluate GRPO from the {what[3:]} branch (= {size}_eval_{what}, its own output dir)"
    if what == "base":
        return f"{size}: evaluate the base model {PAPER_SIZES[size]['hf']}, few-shot, 13 benchmarks"
    if what.startswith("rl_"):
        return f"{size}: evaluate GRPO from the '{what[3:]}' branch (its RUN/hf), zero-shot orz template, 13 benchmarks"
    return f"{size}: evaluate the '{what}' decay branch (its HF export), few-shot, 13 benchmarks"


for _name, (_size, _what) in PAPER_EVALS.items():
    register(_name, "eval", partial(paper_eval, _size, _what, _name), _doc(_name, _size, _what))
