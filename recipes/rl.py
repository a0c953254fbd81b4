"""RL recipes: the paper's GRPO/PPO stage (docs/recipe.md, "RL", gives every setting's source) and tiny ones.

Paper scale, per model size (llama32_1b, llama32_3b, llama31_8b) and starting point:
    <size>_rl_grpo_<branch>   GRPO from the converted HF checkpoint of decay branch long | short | hybrid,
                              $OCTOMEGA_RUNS/<size>_decay_<branch>/hf (`octomega convert mcore-to-hf RUN RUN/hf`)
    <size>_rl_grpo_base       GRPO from the untouched base model ($OCTOMEGA_MODELS/Llama-3.x-...)
    <size>_rl_grpo            = <size>_rl_grpo_long (OctoThinker's flagship branch)
    <size>_rl_ppo             PPO (critic + GAE) from the long branch
A step: 128 prompts x 16 responses = 2,048 sequences; mini-batches of 64 prompts (1,024 sequences): 2 updates per
step at LR 1e-6. Prompts: $OCTOMEGA_DATA/rl/math8k.jsonl (`python -m data_prep.rl_prompts --preset math8k --input
train.parquet --out $OCTOMEGA_DATA/rl/math8k.jsonl --tokenizer DIR`, from the authors' rl/data/math.8k/train.parquet).
Besides octomega.rl.config's defaults (among them the orz template's stop strings and the stair counted from step 1,
as the authors' code has them), these recipes set what their RL scripts and verl fork (GAIR-NLP/OctoThinker) do
where octomega's defaults differ: their reward (reward.name=octothinker), no dual clip, easy-prompt removal per
epoch, prompts over 380 tokens filtered, greedy validation every 4 steps on MATH500, GSM8K, OlympiadBench and AMC23,
and each run's length from their logs (STEPS).

Tiny (CPU, minutes; the feasibility settings of docs/tiny_science.md):
    tiny_rl_grpo_<branch>     GRPO from runs/tiny/tiny_decay_<branch> (short | long | hybrid | web)
    tiny_rl_ppo_<branch>      PPO from runs/tiny/tiny_decay_<branch> (short | long)
16 prompts x 8 samples = 128 sequences a step, mini-batches of 8 prompts (2 updates per step), Adam LR 5e-5,
max 256 new tokens, the mid-training "Question: ...\\nAnswer:" template, a 120 s budget.
"""

from __future__ import annotations

import os
from functools import partial

from octomega.config import ConfigError
from octomega.rl.config import RLConfig
from recipes import env_dir, register

PAPER_SIZES = {  # model-parallel layout per size on 8 x H100 80 GB nodes (assumed, as the pre-training recipes)
    "llama32_1b": dict(hf="Llama-3.2-1B", tp=1),
    "llama32_3b": dict(hf="Llama-3.2-3B", tp=1),
    "llama31_8b": dict(hf="Llama-3.1-8B", tp=2),
}
STAIRS = {
    "long": "0:2048,100:4096,160:8192",  # rl/scripts/llama_3b_long.sh: length_scheduler_dict="{0: 2048, 100: 4096, ...
    "hybrid": "0:4096",  # rl/scripts/llama_3b_hybrid.sh: length_scheduler_dict="{0: 4096}"
    "short": "0:2048,100:4096,160:8192",  # (assumed) no published stair: the Long one
    "base": "0:2048,100:4096,160:8192",  # (assumed) the Long one
}

# RL steps per run: the last step of each logged run (its last validation; they validated every 4 steps), read from
# the authors' plot/data/octothinker/{1b,3b}/acc_math500.csv (GAIR-NLP/OctoThinker): 3B decay_long 300, decay_short
# 604, decay_long.short.mix (Hybrid) 668; 1B decay_long 196, decay_short 876, decay_long.short.mix 692. The 3B base
# model (Llama-3.2-3B): 224 (plot/data/motivation/acc_math500.csv, rl.grpo_llama.3b_math.8k). No 8B or 1B-base run
# is published: those take the 3B numbers (assumed).
STEPS = {
    ("llama32_3b", "long"): 300, ("llama32_3b", "short"): 604, ("llama32_3b", "hybrid"): 668,
    ("llama32_3b", "base"): 224,
    ("llama32_1b", "long"): 196, ("llama32_1b", "short"): 876, ("llama32_1b", "hybrid"): 692,
}
# The authors' RL validation: greedy, every 4 steps (RL scripts: trainer.test_freq=4; before the first step too, and
# at the last), on the four sets of their logs (plot/data/octothinker/*/acc_{math500,gsm8k,olympiadbench,amc23}.csv),
# at the step's own stair cap (ray_trainer.py passes global_steps to the rollout for validation too)
VALID_BENCHMARKS = ["math500", "gsm8k", "olympiadbench", "amc23"]
VALID_INTERVAL = 4


def run_steps(size: str, branch: str) -> int:
    """The logged run length of (size, branch); the 3B's where none is published (8B, 1B base: assumed)."""
    return STEPS.get((size, branch), STEPS[("llama32_3b", branch)])


# The paper-scale recipes: name -> (size, starting point: a decay branch or "base", algorithm).
PAPER_RL = {
    "llama32_1b_rl_grpo_long": ("llama32_1b", "long", "grpo"),
    "llama32_1b_rl_grpo_short": ("llama32_1b", "short", "grpo"),
    "llama32_1b_rl_grpo_hybrid": ("llama32_1b", "hybrid", "grpo"),
    "llama32_1b_rl_grpo_base": ("llama32_1b", "base", "grpo"),
    "llama32_1b_rl_grpo": ("llama32_1b", "long", "grpo"),  # = llama32_1b_rl_grpo_long under its own run dir
    "llama32_1b_rl_ppo": ("llama32_1b", "long", "ppo"),
    "llama32_3b_rl_grpo_long": ("llama32_3b", "long", "grpo"),
    "llama32_3b_rl_grpo_short": ("llama32_3b", "short", "grpo"),
    "llama32_3b_rl_grpo_hybrid": ("llama32_3b", "hybrid", "grpo"),
    "llama32_3b_rl_grpo_base": ("llama32_3b", "base", "grpo"),
    "llama32_3b_rl_grpo": ("llama32_3b", "long", "grpo"),
    "llama32_3b_rl_ppo": ("llama32_3b", "long", "ppo"),
    "llama31_8b_rl_grpo_long": ("llama31_8b", "long", "grpo"),
    "llama31_8b_rl_grpo_short": ("llama31_8b", "short", "grpo"),
    "llama31_8b_rl_grpo_hybrid": ("llama31_8b", "hybrid", "grpo"),
    "llama31_8b_rl_grpo_base": ("llama31_8b", "base", "grpo"),
    "llama31_8b_rl_grpo": ("llama31_8b", "long", "grpo"),
    "llama31_8b_rl_ppo": ("llama31_8b", "long", "ppo"),
}


def paper_rl(size: str, branch: str, algo: str = "grpo", name: str | None = None) -> RLConfig:
    """RL of `size` from decay branch `branch` (or "base": the base model); `name` default <size>_rl_<algo>_<branch>."""
    data, models, runs = env_dir("OCTOMEGA_DATA"), env_dir("OCTOMEGA_MODELS"), env_dir("OCTOMEGA_RUNS")
    name = name or f"{size}_rl_{algo}_{branch}"
    cfg = RLConfig(name=name, run_dir=f"{runs}/{name}")
    cfg.algo.name = algo
    cfg.init.hf_path = (f"{models}/{PAPER_SIZES[size]['hf']}" if branch == "base"
                        else f"{runs}/{size}_decay_{branch}/hf")
    cfg.data.prompts = f"{data}/rl/math8k.jsonl"
    cfg.rollout.response_stair = STAIRS[branch]
    cfg.parallel.tp = PAPER_SIZES[size]["tp"]
    cfg.parallel.sequence_parallel = cfg.parallel.tp > 1
    cfg.parallel.distributed_optimizer = True
    cfg.train.precision = "bf16"
    cfg.train.micro_batch_size = 2  # sequences of up to 380 + 8,192 tokens per forward/backward (assumed)
    cfg.train.steps = run_steps(size, branch)
    # Their rl_dataset.py (RLHFDataset, orz_base): a prompt is kept when the template's tokens (BOS included) are
    # <= max_prompt_length - 20 = 380 (RL scripts: data.max_prompt_length=400, data.filter_overlong_prompts=True)
    cfg.rollout.max_prompt_tokens = 380
    # data.dynamic_remove_easy_sample: True (training/rl/verl/trainer/config/ppo_trainer.yaml), applied after each
    # epoch (ray_trainer.py: train_dataset.update_dataset()), keeping prompts whose last mean reward is <= 1.0
    cfg.rollout.remove_easy_prompts, cfg.rollout.easy_reward_max = True, 1.0
    cfg.reward.name = "octothinker"  # rl/verl/utils/reward_score/math_verifier.py (octomega/rl/rewards.py)
    cfg.algo.clip_ratio_c = 0.0  # no dual clip in their fork's verl (octomega/rl/config.py, AlgoConfig)
    cfg.valid.benchmarks, cfg.valid.interval = list(VALID_BENCHMARKS), VALID_INTERVAL
    cfg.checkpoint.save_interval = 20  # (assumed; their RL scripts save every 40 steps)
    return cfg


def _paper_doc(name: str, size: str, branch: str, algo: str) -> str:
    if algo == "ppo":
        return f"{size}: PPO (critic from the actor, LR 1e-5; GAE gamma 1, lambda 1) from the {branch} branch"
    if name != f"{size}_rl_{algo}_{branch}":
        return f"{size}: GRPO from the {branch} decay branch (= {size}_rl_{algo}_{branch} under its own run dir)"
    start = "the base model" if branch == "base" else f"the '{branch}' decay branch (HF export)"
    return (f"{size}: GRPO from {start}; 128 prompts x 16, 2 updates/step at LR 1e-6, stair {STAIRS[branch]}, "
            f"{run_steps(size, branch)} steps")


for _name, (_size, _branch, _algo) in PAPER_RL.items():
    register(_name, "rl", partial(paper_rl, _size, _branch, _algo, _name), _paper_doc(_name, _size, _branch, _algo))


# --------------------------------------------------------------------------------------------------- tiny

TINY_PROMPTS, TINY_SAMPLES = 16, 8  # 16 prompts x 8 samples = 128 sequences per step (docs/tiny_science.md)
TINY_MINI_BATCH = 8  # prompts per update: 16 / 8 = 2 updates per rollout
TINY_MAX_NEW = 256  # tokens
# Steps per tiny RL run, fixed (not a time budget) so that the demo's report is the same on a quiet and a busy
# machine: the lengths of tests/rl/test_learning.py, where held-out sampled accuracy rose from the long branch in all
# three seeds of each algorithm (docs/rl.md). 10 GRPO steps took about as long as the former 120 s budget on a quiet
# 2-core machine.
TINY_RL_STEPS = {"grpo": 10, "ppo": 16}


def tiny_rl(branch: str, algo: str = "grpo") -> RLConfig:
    from recipes.tiny import tiny_root

    root = tiny_root()
    name = f"tiny_rl_{algo}_{branch}"
    cfg = RLConfig(name=name, run_dir=str(root / name))
    cfg.algo.name = algo
    cfg.init.from_checkpoint = str(root / f"tiny_decay_{branch}")
    cfg.data.prompts = str(root / "data" / "synth" / "rl" / "prompts.jsonl")
    cfg.rollout.backend = "hf"  # a 1M-parameter model: a transformers copy refreshed each step costs nothing
    cfg.rollout.template = "qa"  # what the tiny models saw in mid-training ("Question: ...\nAnswer:")
    cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt = TINY_PROMPTS, TINY_SAMPLES
    cfg.rollout.response_stair = f"0:{TINY_MAX_NEW}"
    cfg.rollout.max_prompt_tokens = 400
    cfg.train.mini_batch_prompts = TINY_MINI_BATCH
    cfg.train.micro_batch_size = 16  # 64 sequences per update / 16 = 4 micro-batches on one rank
    cfg.train.steps = TINY_RL_STEPS[algo]
    cfg.train.time_budget_s = None
    cfg.train.cpu_numerics = "pinned"  # the same rollouts and updates on every x86-64 CPU (octomega/numerics.py)
    cfg.optim.lr = 5e-5  # docs/tiny_science.md (1e-4 with 8 prompts made the model worse)
    cfg.optim.weight_decay = 0.0  # plain Adam (docs/tiny_science.md)
    cfg.critic.lr = 1e-4  # (assumed) the tiny critic's fresh head needs a faster LR than the paper's 1e-5
    cfg.valid.benchmarks = ["tiny_arith"]
    cfg.valid.data_dir = str(root / "data" / "synth" / "benchmarks")
    cfg.valid.interval = 0  # before and after only: 300 greedy problems take a while on 2 cores
    cfg.valid.max_new_tokens = TINY_MAX_NEW
    cfg.checkpoint.save_interval = 0
    cfg.logging.log_interval = 1
    return cfg


# The tiny recipes: name -> (starting decay branch, algorithm).
TINY_RL = {
    "tiny_rl_grpo_short": ("short", "grpo"),
    "tiny_rl_grpo_long": ("long", "grpo"),
    "tiny_rl_grpo_hybrid": ("hybrid", "grpo"),
    "tiny_rl_grpo_web": ("web", "grpo"),
    "tiny_rl_ppo_short": ("short", "ppo"),
    "tiny_rl_ppo_long": ("long", "ppo"),
}


def _tiny_doc(branch: str, algo: str) -> str:
    if algo == "ppo":
        return (f"tiny PPO from tiny_decay_{branch}: critic from the actor (fresh value head), GAE gamma 1 "
                f"lambda 1, {TINY_RL_STEPS['ppo']} steps")
    return (f"tiny GRPO from tiny_decay_{branch}: 16 prompts x 8, 2 updates/step, Adam 5e-5, 256 new tokens, "
            f"{TINY_RL_STEPS['grpo']} steps")


def ensure_tiny_start(cfg: RLConfig) -> None:
    """The tiny prompt set is built on first use; the starting checkpoint must exist (it takes minutes)."""
    from recipes.tiny import ensure_data

    ensure_data()
    from octomega.checkpoint import latest_complete

    src = cfg.init.from_checkpoint
    if src and latest_complete(src) is None:
        branch = os.path.basename(str(src).rstrip("/"))
        raise ConfigError(f"{src} holds no checkpoint yet: run `octomega train tiny_stable` and `octomega train "
                          f"{branch}` first (or `octomega pipeline tiny`)")


for _name, (_branch, _algo) in TINY_RL.items():
    register(_name, "rl", partial(tiny_rl, _branch, _algo), _tiny_doc(_branch, _algo), prepare=ensure_tiny_start)
