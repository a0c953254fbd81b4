"""The tiny recipes: every stage on a laptop CPU in minutes, on data_prep.synth's arithmetic corpora.

Model: 4 layers, hidden 128, 4 heads / 2 kv heads, SwiGLU 512, tied embeddings, seq 256: ~1.05M parameters
(the feasibility model of docs/tiny_science.md). Batches: 16 sequences x 256 tokens = 4,096 tokens per step.
"""

from __future__ import annotations

import copy
from pathlib import Path

from octomega.config import ModelConfig, RunConfig
from recipes import env_dir, recipe

TOKENS_PER_STEP = 16 * 256  # global batch 16 sequences x 256 tokens = 4,096
STABLE_STEPS = 800  # ~3.3M tokens, ~3 minutes at ~18k tokens/s (docs/tiny_science.md)
DECAY_STEPS = 350  # ~1.4M tokens per branch


def tiny_root() -> Path:
    """Where the tiny pipeline keeps data and runs (OCTOMEGA_TINY_ROOT, default ./runs/tiny)."""
    return Path(env_dir("OCTOMEGA_TINY_ROOT"))


def _build_data(cfg: RunConfig) -> None:
    """The tiny recipes' `prepare`: their synthetic corpora are built on first use (ensure_data, below)."""
    ensure_data(cfg)


def tiny_model() -> ModelConfig:
    return ModelConfig(name="tiny", num_layers=4, hidden_size=128, ffn_hidden_size=512, num_attention_heads=4,
                       num_query_groups=2, vocab_size=512, make_vocab_size_divisible_by=128,
                       max_position_embeddings=2048, rope_theta=10000.0, tie_embeddings=True)


@recipe("train", prepare=_build_data)
def tiny_stable() -> RunConfig:
    """tiny Llama (1M params), stable stage: 800 steps x 4,096 tokens at constant LR 1.5e-3 after 50 warm-up steps."""
    root = tiny_root()
    cfg = RunConfig(name="tiny_stable", run_dir=str(root / "tiny_stable"), model=tiny_model())
    cfg.optim.lr = 1.5e-3
    cfg.optim.warmup_tokens = 50 * TOKENS_PER_STEP
    cfg.optim.weight_decay = 0.1
    cfg.train.stage = "stable"
    cfg.train.train_tokens = STABLE_STEPS * TOKENS_PER_STEP
    cfg.train.seq_length, cfg.train.global_batch_size, cfg.train.micro_batch_size = 256, 16, 16
    cfg.train.valid_interval, cfg.train.valid_batches = 100, 2
    cfg.train.cpu_numerics = "pinned"  # the same losses on every x86-64 CPU (octomega/numerics.py)
    cfg.data.blend = str(root / "data" / "blends" / "stable.json")
    cfg.data.valid_blend = str(root / "data" / "blends" / "valid.json")
    cfg.data.tokenizer = str(root / "data" / "synth" / "tokenizer")
    cfg.checkpoint.save_interval = 200
    cfg.logging.log_interval = 20
    return cfg


def _tiny_decay(branch: str) -> RunConfig:
    stable = tiny_stable()
    cfg = copy.deepcopy(stable)
    cfg.name = f"tiny_decay_{branch}"
    cfg.run_dir = str(tiny_root() / cfg.name)
    cfg.train.stage = "decay"
    cfg.train.train_tokens = DECAY_STEPS * TOKENS_PER_STEP
    cfg.optim.lr = None  # start from the LR the stable stage ran at (read from its checkpoint)
    cfg.optim.min_lr_ratio = 0.1  # cosine to 10% of it (docs/recipe.md)
    cfg.optim.warmup_tokens = 0
    cfg.optim.decay_style = "cosine"
    cfg.init.from_checkpoint = stable.resolved_run_dir
    cfg.data.blend = str(tiny_root() / "data" / "blends" / f"decay_{branch}.json")
    cfg.checkpoint.save_interval = 0
    return cfg


@recipe("train", prepare=_build_data)
def tiny_decay_long() -> RunConfig:
    """tiny decay branch, long CoT: 350 steps, cosine to 10% of the stable LR, 40% web + 60% long-CoT QA."""
    return _tiny_decay("long")


@recipe("train", prepare=_build_data)
def tiny_decay_short() -> RunConfig:
    """tiny decay branch, short CoT: 350 steps, cosine to 10% of the stable LR, 40% web + 60% short-CoT QA."""
    return _tiny_decay("short")


@recipe("train", prepare=_build_data)
def tiny_decay_hybrid() -> RunConfig:
    """tiny decay branch, hybrid: 350 steps, cosine to 10%, 40% web + 30% long + 30% short-CoT QA."""
    return _tiny_decay("hybrid")


@recipe("train", prepare=_build_data)
def tiny_decay_web() -> RunConfig:
    """tiny "stable-only" control: a compute-matched decay on web text only (no QA)."""
    return _tiny_decay("web")


# Mixtures of the tiny stages (weights per prepared corpus). docs/tiny_science.md: stable on web text only; decay
# branches 40% web + 60% QA of the branch's style; "web" is the compute-matched no-QA control.
TINY_MIXTURES = {
    "stable": "web=1.0",
    "decay_short": "web=0.4,qa_short=0.6",
    "decay_long": "web=0.4,qa_long=0.6",
    "decay_hybrid": "web=0.4,qa_short=0.3,qa_long=0.3",
    "decay_web": "web=1.0",
    "valid": "web=0.34,qa_short=0.33,qa_long=0.33",  # only its held-out sets are used
}
VALID_DOCS = 200  # held-out documents per corpus


def _run(args: list[str]) -> None:
    import subprocess
    import sys

    print("+ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], check=True)


def ensure_data(cfg: RunConfig | None = None, root: Path | None = None) -> Path:
    """Build the tiny corpora once (synth -> tokenize -> mix): a no-op when the blends exist.

    Every rank of a multi-process launch (`torchrun ... octomega train tiny_stable parallel.tp=2`) calls this before
    the process group exists; an exclusive lock on DATA/.build.lock makes one build while the others wait, then
    find the blends and return."""
    import fcntl

    if cfg is not None and cfg.data.mock:
        return tiny_root() / "data"
    data = (root or tiny_root()) / "data"
    blends = data / "blends"

    def built() -> bool:
        return all((blends / f"{name}.json").exists() for name in TINY_MIXTURES)

    if built():
        return data
    data.mkdir(parents=True, exist_ok=True)
    with open(data / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built():
            _build(data)
    return data


def _build(data: Path) -> None:
    blends, synth, tokens = data / "blends", data / "synth", data / "tokens"
    if not (synth / "tokenizer").exists():
        _run(["data_prep.synth", "--out", str(synth)])
    for name in ("web", "qa_short", "qa_long"):
        if not (tokens / f"{name}.stats.json").exists():
            qa = [] if name == "web" else ["--qa-style", name.split("_")[1]]
            _run(["data_prep.tokenize", "--input", str(synth / "raw" / f"{name}.jsonl"), *qa,
                  "--tokenizer", str(synth / "tokenizer"), "--output-dir", str(tokens), "--name", name,
                  "--valid-docs", str(VALID_DOCS), "--workers", "1"])
    blends.mkdir(parents=True, exist_ok=True)
    budget = {"stable": STABLE_STEPS * TOKENS_PER_STEP}
    for stage, weights in TINY_MIXTURES.items():
        names = [w.split("=")[0] for w in weights.split(",")]
        _run(["data_prep.mix", "--stats", *[str(tokens / f"{n}.stats.json") for n in names], "--mixture", "custom",
              "--weights", weights, "--train-tokens", str(budget.get(stage, DECAY_STEPS * TOKENS_PER_STEP)),
              "--out", str(blends / f"{stage}.json")])


if __name__ == "__main__":  # `python -m recipes.tiny data`: build the tiny corpora (the pipeline's first stage)
    import sys

    if sys.argv[1:] != ["data"]:
        sys.exit("usage: python -m recipes.tiny data   (builds $OCTOMEGA_TINY_ROOT/data, default runs/tiny/data)")
    print(f"tiny data ready under {ensure_data()}")
