"""OctoThinker at paper scale (docs/recipe.md has every number with its source).

Stable: 200B tokens at constant LR; each decay branch 20B tokens, cosine to 10% of the stable LR.
Batch: 512 sequences x 8,192 tokens = 4,194,304 tokens/step (MegaMath Table 13; released names `bs4M_seq8k`).
=> stable: 200e9 / 4,194,304 = 47,683.7 -> 47,684 steps; decay: 20e9 / 4,194,304 = 4,768.4 -> 4,769 steps.
AdamW (0.9, 0.95), eps 1e-8, weight decay 0.1, grad clip 1.0, no warm-up, bf16.

Paths come from the environment so the same recipe runs anywhere:
  OCTOMEGA_DATA   (default ./data)    blends from `python -m data_prep.mix`, tokenizer under $OCTOMEGA_DATA/tokenizer
  OCTOMEGA_MODELS (default ./models)  Hugging Face base models (Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B)
  OCTOMEGA_RUNS   (default ./runs)    run directories
"""

from __future__ import annotations

import copy
from functools import partial

from octomega.config import ModelConfig, RopeScaling, RunConfig
from recipes import env_dir, register

SEQ = 8192
GLOBAL_BATCH = 512  # sequences: 512 x 8,192 = 4,194,304 tokens per step
STABLE_TOKENS = 200_000_000_000
DECAY_TOKENS = 20_000_000_000


def llama_model(size: str) -> ModelConfig:
    """Llama-3.x shapes from the public config.json files (docs/recipe.md, "Base models")."""
    common = dict(vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0, norm_eps=1e-5)
    if size == "1b":
        return ModelConfig(name="llama32_1b", num_layers=16, hidden_size=2048, ffn_hidden_size=8192,
                           num_attention_heads=32, num_query_groups=8, head_dim=64, tie_embeddings=True,
                           rope_scaling=RopeScaling(factor=32.0), **common)
    if size == "3b":
        return ModelConfig(name="llama32_3b", num_layers=28, hidden_size=3072, ffn_hidden_size=8192,
                           num_attention_heads=24, num_query_groups=8, head_dim=128, tie_embeddings=True,
                           rope_scaling=RopeScaling(factor=32.0), **common)
    if size == "8b":
        return ModelConfig(name="llama31_8b", num_layers=32, hidden_size=4096, ffn_hidden_size=14336,
                           num_attention_heads=32, num_query_groups=8, head_dim=128, tie_embeddings=False,
                           rope_scaling=RopeScaling(factor=8.0), **common)
    raise ValueError(size)


# Per size: peak LR (MegaMath Table 13: 1B 5e-5, 3B 3e-5; 8B 3e-5 assumed), HF base model dir, and a layout
# for 8xH100 (80 GB) nodes. 1B/3B: pure data parallel with the distributed optimizer; 3B recomputes
# selectively; 8B: TP=2 with sequence parallelism. micro-batch 1 (one 8k sequence) everywhere. `stable`: the
# size's stable recipe, which its decay branches start from.
SIZES = {
    "1b": dict(lr=5e-5, hf="Llama-3.2-1B", tp=1, recompute="none", stable="llama32_1b_stable"),
    "3b": dict(lr=3e-5, hf="Llama-3.2-3B", tp=1, recompute="selective", stable="llama32_3b_stable"),
    # 8B LR: assumed (docs/recipe.md)
    "8b": dict(lr=3e-5, hf="Llama-3.1-8B", tp=2, recompute="selective", stable="llama31_8b_stable"),
}

# The recipes: name -> (size, stage), the stage being "stable" or the decay branch (long | short | hybrid).
PAPER_TRAIN = {
    "llama32_1b_stable": ("1b", "stable"),
    "llama32_1b_decay_long": ("1b", "long"),
    "llama32_1b_decay_short": ("1b", "short"),
    "llama32_1b_decay_hybrid": ("1b", "hybrid"),
    "llama32_3b_stable": ("3b", "stable"),
    "llama32_3b_decay_long": ("3b", "long"),
    "llama32_3b_decay_short": ("3b", "short"),
    "llama32_3b_decay_hybrid": ("3b", "hybrid"),
    "llama31_8b_stable": ("8b", "stable"),
    "llama31_8b_decay_long": ("8b", "long"),
    "llama31_8b_decay_short": ("8b", "short"),
    "llama31_8b_decay_hybrid": ("8b", "hybrid"),
}


def _stable(size: str, name: str) -> RunConfig:
    s = SIZES[size]
    data, models, runs = env_dir("OCTOMEGA_DATA"), env_dir("OCTOMEGA_MODELS"), env_dir("OCTOMEGA_RUNS")
    cfg = RunConfig(name=name, run_dir=f"{runs}/{name}", model=llama_model(size))
    cfg.model.recompute = s["recompute"]
    cfg.parallel.tp = s["tp"]
    cfg.parallel.sequence_parallel = s["tp"] > 1
    cfg.parallel.distributed_optimizer = True
    cfg.optim.lr = s["lr"]
    cfg.optim.warmup_tokens = 0  # MegaMath Table 13: no warm-up
    cfg.optim.weight_decay, cfg.optim.clip_grad = 0.1, 1.0
    cfg.train.stage, cfg.train.train_tokens = "stable", STABLE_TOKENS
    cfg.train.seq_length, cfg.train.global_batch_size, cfg.train.micro_batch_size = SEQ, GLOBAL_BATCH, 1
    cfg.train.precision = "bf16"
    cfg.train.valid_interval, cfg.train.valid_batches = 1000, 8
    # The stable and decay_* mixtures behind these blends are assumptions (the branch mixtures are unpublished); the
    # published ablation shares are data_prep.registry's ablate_* / decay_*_0X0 mixtures (docs/recipe.md, "Data")
    cfg.data.blend = f"{data}/blends/stable.json"
    cfg.data.valid_blend = f"{data}/blends/valid.json"
    cfg.data.tokenizer = f"{data}/tokenizer"
    cfg.data.num_workers = 2
    cfg.init.hf_path = f"{models}/{s['hf']}"
    cfg.checkpoint.save_interval, cfg.checkpoint.keep_last = 500, 3
    cfg.logging.log_interval = 10
    return cfg


def _decay(size: str, stable: RunConfig, branch: str) -> RunConfig:
    cfg = copy.deepcopy(stable)
    cfg.name = stable.name.replace("_stable", f"_decay_{branch}")
    cfg.run_dir = stable.resolved_run_dir.replace("_stable", f"_decay_{branch}")
    cfg.train.stage, cfg.train.train_tokens = "decay", DECAY_TOKENS
    cfg.optim.lr = None  # the stable stage's LR, read from its checkpoint
    cfg.optim.min_lr_ratio = 0.1  # cosine to 10% (MegaMath Table 13: 3e-5 -> 3e-6)
    cfg.optim.decay_style = "cosine"
    cfg.init.hf_path = None
    cfg.init.from_checkpoint = stable.resolved_run_dir
    cfg.data.blend = cfg.data.blend.replace("stable.json", f"decay_{branch}.json")
    cfg.checkpoint.save_interval = 250
    return cfg


def paper_train(name: str) -> RunConfig:
    """The PAPER_TRAIN recipe `name`: a stable stage, or a decay branch of its size's stable recipe."""
    size, stage = PAPER_TRAIN[name]
    stable = _stable(size, SIZES[size]["stable"])
    return stable if stage == "stable" else _decay(size, stable, stage)


def _doc(size: str, stage: str) -> str:
    prefix = SIZES[size]["stable"].removesuffix("_stable")
    if stage == "stable":
        return (f"{prefix}: stable stage, 200B tokens (47,684 steps x 4.19M tokens) at constant LR "
                f"{SIZES[size]['lr']:g}, from HF {SIZES[size]['hf']}")
    return f"{prefix}: decay branch '{stage}', 20B tokens (4,769 steps), cosine to 10% of the stable LR"


for _name, (_size, _stage) in PAPER_TRAIN.items():
    register(_name, "train", partial(paper_train, _name), _doc(_size, _stage))
