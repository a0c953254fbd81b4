"""Evaluation recipes: which model, which suite, which benchmarks and how to generate, as `octomega eval RECIPE`.

    <size>_eval_base            the untouched base model, few-shot (docs/recipe.md: CoT, greedy, 1,024 new tokens)
    <size>_eval_<branch>        a decay branch's HF export, few-shot, every benchmark (branch: long | short | hybrid)
    <size>_eval_rl_<branch>     that branch after GRPO (RUN/hf), zero-shot with the orz template (docs/recipe.md),
                                greedy, at most the branch's final RL response cap new tokens (Long 8,192,
                                Hybrid 4,096; Short 8,192 assumed: recipes/rl.py STAIRS)
    <size>_eval_rl              = <size>_eval_rl_long

Benchmarks: the paper's 13 (octomega.eval.benchmarks.DEFAULT_SUITE; AIME24 and the other extras only when named).
Greedy only, one completion per item, as the authors' eval script (GAIR-NLP/OctoThinker
eval/scripts/en_math_cot_eval_last4dir.sh: temperature=0, n_repeats=1); avg@K over sampled completions
(`--samples K`) is an option of octomega's, off here. Generation: vLLM with the training recipe's tensor
parallel size. Paths follow $OCTOMEGA_RUNS / $OCTOMEGA_MODELS as the training recipes do; any field can be
changed on the command line (`octomega eval llama32_1b_eval_long --limit 50 --backend hf`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

from octomega.rl.config import RolloutConfig
from recipes import env_dir, register
from recipes.rl import PAPER_SIZES, STAIRS  # size -> HF base model name; branch -> RL response-length stair

VLLM_TP = 1  # one H100 holds any of the three in bf16 (8B: 16 GB of weights); more GPUs = more eval jobs


@dataclass
class EvalRecipe:
    """The `octomega eval` options of one evaluation (field = the option without its dashes)."""

    name: str
    model: str  # a Hugging Face model directory
    suite: str = "base-fewshot"  # base-fewshot | rl-zeroshot | qa-zeroshot
    benchmarks: list[str] | None = None  # None = the paper's 13 (DEFAULT_SUITE)
    backend: str = "vllm"
    tensor_parallel_size: int | None = None
    samples: int = 1  # K sampled completions (avg@K) besides the greedy one; 1 = greedy only (the authors')
    samples_on: str = "small"
    max_new_tokens: int | None = None  # None: 1024 (few-shot), 2048 (zero-shot); RL recipes: the stair's last cap
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


def rl_eval_tokens(branch: str) -> int:
    """New tokens for evaluating a model trained by RL from `branch`: the last (largest-step) cap of its RL
    response-length stair, the length the run ends with. GAIR-NLP/OctoThinker rl/scripts/llama_3b_long.sh:
    length_scheduler_dict "{0: 2048, 100: 4096, 160: 8192}" -> 8,192; rl/scripts/llama_3b_hybrid.sh: "{0: 4096}"
    -> 4,096; Short has no published script (recipes/rl.py STAIRS: the Long stair, assumed). The release has no
    separate evaluation script for RL models: their reported numbers are RL validation, generated with the
    rollout's settings."""
    return RolloutConfig(response_stair=STAIRS[branch]).stair()[-1][1]


def paper_eval(size: str, what: str, name: str | None = None) -> EvalRecipe:
    """Evaluate `what` (base | long | short | hybrid | rl_<branch>) of `size`; `name` default <size>_eval_<what>."""
    runs, models = env_dir("OCTOMEGA_RUNS"), env_dir("OCTOMEGA_MODELS")
    name = name or f"{size}_eval_{what}"
    max_new_tokens = None  # few-shot: 1,024 (EvalSettings; the authors' run_cot_eval.py: max_tokens=1024)
    if what == "base":
        model, suite = f"{models}/{PAPER_SIZES[size]['hf']}", "base-fewshot"
    elif what.startswith("rl_"):
        model, suite = f"{runs}/{size}_rl_grpo_{what[3:]}/hf", "rl-zeroshot"
        max_new_tokens = rl_eval_tokens(what[3:])
    else:
        model, suite = f"{runs}/{size}_decay_{what}/hf", "base-fewshot"
    # samples=1: greedy only. The authors' eval script runs temperature=0, n_repeats=1
    # (GAIR-NLP/OctoThinker eval/scripts/en_math_cot_eval_last4dir.sh); avg@K stays an option (--samples K).
    return EvalRecipe(name=name, model=model, suite=suite, tensor_parallel_size=VLLM_TP, samples=1,
                      max_new_tokens=max_new_tokens, out=f"{runs}/eval/{name}")


def _doc(name: str, size: str, what: str) -> str:
    if name != f"{size}_eval_{what}":
        return f"{size}: evaluate GRPO from the {what[3:]} branch (= {size}_eval_{what}, its own output dir)"
    if what == "base":
        return f"{size}: evaluate the base model {PAPER_SIZES[size]['hf']}, few-shot, 13 benchmarks"
    if what.startswith("rl_"):
        return (f"{size}: evaluate GRPO from the '{what[3:]}' branch (its RUN/hf), zero-shot orz template, "
                f"{rl_eval_tokens(what[3:])} new tokens, 13 benchmarks")
    return f"{size}: evaluate the '{what}' decay branch (its HF export), few-shot, 13 benchmarks"


for _name, (_size, _what) in PAPER_EVALS.items():
    register(_name, "eval", partial(paper_eval, _size, _what, _name), _doc(_name, _size, _what))
