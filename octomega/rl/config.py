"""The RL stage's configuration: typed dataclasses whose defaults are OctoThinker's settings (docs/recipe.md, "RL").

The batch sizes of a step (`batch_sizes`; verl's units, as `octomega rl RECIPE --dry-run` prints them):
    a step      samples rollout.prompts_per_step prompts x rollout.samples_per_prompt responses
                (128 x 16 = 2,048 sequences);
    a mini-batch is train.mini_batch_prompts prompts with all their responses (64 x 16 = 1,024 sequences):
                one optimizer update each, so a step makes 128 / 64 = 2 updates (x algo.ppo_epochs);
    micro-batches (train.micro_batch_size sequences on one data-parallel rank) only split memory: the loss is
                normalised over the whole mini-batch, so gradients do not depend on them or on the DP size.
Every field says its unit. "(assumed)" marks a default no source settles (docs/recipe.md's convention).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from octomega.config import (ConfigError, LoggingConfig, ModelConfig, NamedRun, NonFiniteSteps, ParallelConfig,
                             check_layout, check_numbers, check_optimizer, to_json)


@dataclass(kw_only=True)
class AlgoConfig:
    """The policy-gradient algorithm (verl's core_algos semantics)."""

    name: Literal["grpo", "ppo"] = "grpo"  # docs/recipe.md: the authors ran adv_estimator=grpo (no critic)
    # GRPO: advantage = (reward - group mean) / (group std + eps); False = Dr.GRPO (no division)
    norm_adv_by_std: bool = True
    adv_eps: float = 1e-6  # added to the group std (verl's epsilon)
    # PPO: generalised advantage estimation over response tokens; gamma = discount per token, lam = GAE lambda
    gamma: float = 1.0
    lam: float = 1.0
    whiten_advantages: bool = True  # PPO: advantages whitened over the step's response tokens (verl's GAE does)
    # Clipped surrogate: ratio clipped to [1 - clip_low, 1 + clip_high]; None = clip_ratio (docs/recipe.md: 0.2)
    clip_ratio: float = 0.2
    clip_ratio_low: float | None = None
    clip_ratio_high: float | None = None
    # Dual clip (verl's clip_ratio_c): for negative advantages the loss is capped at -A * clip_ratio_c; 0 = off.
    # 3.0 is verl's default since verl PR #784 (2025-04-02). The authors' fork predates it (its training/rl/verl/
    # trainer/config/ppo_trainer.yaml has no clip_ratio_c and matches upstream verl of 2025-03-08..11, whose
    # compute_policy_loss has no dual clip): the paper recipes set 0 (recipes/rl.py)
    clip_ratio_c: float = 3.0
    # How token losses become one number: over the mini-batch's tokens (token-mean), or per sequence first
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    entropy_coef: float = 0.0  # docs/recipe.md: entropy 0 (entropy is still measured)
    # KL to a frozen reference model (built only when a coefficient is > 0). docs/recipe.md: 0 in loss and reward
    kl_loss_coef: float = 0.0  # added to the actor loss (verl use_kl_loss)
    kl_loss_type: Literal["kl", "abs", "mse", "low_var_kl"] = "low_var_kl"
    kl_reward_coef: float = 0.0  # subtracted from the token rewards (verl use_kl_in_reward; PPO)
    kl_reward_type: Literal["kl", "abs", "mse", "low_var_kl"] = "kl"
    ppo_epochs: int = 1  # passes over a step's samples (verl's default 1)

    @property
    def clip_low(self) -> float:
        return self.clip_ratio if self.clip_ratio_low is None else self.clip_ratio_low

    @property
    def clip_high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high


@dataclass(kw_only=True)
class RolloutConfig:
    backend: Literal["megatron", "vllm", "hf"] = "megatron"  # megatron shares the trainer's weights (no copy)
    prompts_per_step: int = 128  # prompts sampled per RL step (the paper's global batch; docs/recipe.md)
    samples_per_prompt: int = 16  # responses per prompt (GRPO group size; docs/recipe.md)
    temperature: float = 1.0  # sampling temperature; the trainer divides its logits by it too
    top_p: float = 1.0
    # Response cap in tokens by RL step, "step:tokens,...": RL step s (1-based, as logged; 0 = the validation before
    # the first step) gets the cap of the last entry at or below s, so "100:4096" caps step 100 at 4,096 (the
    # authors' training/rl/verl/utils/vllm_scheduler/vllm_params_manager.py: SortedDict.bisect_right(step) - 1,
    # with verl's global_steps counting from 1). rl/scripts/llama_3b_long.sh: {0: 2048, 100: 4096, 160: 8192}
    response_stair: str = "0:2048,100:4096,160:8192"
    max_prompt_tokens: int = 400  # longer prompts (BOS included) are filtered out (and counted) when loading the set
    template: str = "orz"  # prompt template (octomega/rl/templates.py): orz | qa | raw
    stop: list[str] = field(default_factory=list)  # extra stop strings; the template's own are always used
    # Easy-prompt removal (the authors' data.dynamic_remove_easy_sample, on in their training/rl/verl/trainer/config/
    # ppo_trainer.yaml): each prompt's mean reward over its samples is recorded when it is drawn; when an epoch ends,
    # prompts whose last mean reward is above easy_reward_max leave the set (octomega/rl/rollout.py, PromptPool)
    remove_easy_prompts: bool = False
    # Their dataset code keeps a prompt while its last mean reward is <= 1.0: with +-1 rewards that keeps every
    # prompt (a prompt solved by all 16 samples has mean 1.0). Below 1 it removes prompts solved that often.
    easy_reward_max: float = 1.0
    seed: int = 1234  # sampling seed (each step and DP rank derives its own)
    log_samples: int = 4  # responses per step written to run_dir/rollouts.jsonl (for reading, not for metrics)
    hf_batch_size: int = 64  # hf backend: sequences per forward pass
    weight_bucket_mb: int = 512  # hf/vllm: weights are streamed to the engine in buckets of this many MB
    vllm_gpu_memory_utilization: float = 0.5  # vllm: share of GPU memory vLLM may take while awake (assumed)
    vllm_sleep_level: int = 1  # vllm: 1 = weights to host RAM while training, 2 = discarded (reloaded anyway)
    vllm_tensor_parallel_size: int | None = None  # vllm: None = parallel.tp
    vllm_kv_cache_mb: int | None = None  # vllm: KV-cache size in MiB; None = 256 on CPU, gpu_memory_utilization on GPU

    def stair(self) -> list[tuple[int, int]]:
        out = []
        for part in self.response_stair.split(","):
            try:
                step, cap = part.split(":")
                out.append((int(step), int(cap)))
            except ValueError:
                raise ConfigError(f"rollout.response_stair={self.response_stair!r}: expected 'step:tokens,...' "
                                  "such as '0:2048,100:4096'") from None
        out.sort()
        if not out or out[0][0] != 0:
            raise ConfigError(f"rollout.response_stair={self.response_stair!r}: the first entry must be step 0")
        if any(cap < 1 for _, cap in out):
            raise ConfigError("rollout.response_stair: every cap must be >= 1 token")
        return out

    def response_cap(self, step: int) -> int:
        """Max new tokens of RL step `step` (1-based, the number it is logged under; 0 = before the first step)."""
        cap = 0
        for start, tokens in self.stair():
            if step >= start:
                cap = tokens
        return cap


@dataclass(kw_only=True)
class RLOptimConfig:
    """Adam for the actor (verl's actor defaults: weight decay 0.01, betas 0.9/0.999) at a constant LR."""

    lr: float = 1e-6  # docs/recipe.md: actor LR 1e-6, constant
    warmup_steps: int = 0  # optimizer updates of linear warm-up from 0 (docs/recipe.md: none)
    weight_decay: float = 0.01  # verl's actor default (assumed: the release does not override it)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999  # verl's default
    adam_eps: float = 1e-8
    clip_grad: float = 1.0  # global L2 norm (docs/recipe.md: grad clip 1.0)


@dataclass(kw_only=True)
class CriticConfig:
    """PPO's critic: the actor's network with a fresh scalar value head (octomega/rl/critic.py)."""

    lr: float = 1e-5  # the default (verl's critic default too)
    warmup_steps: int = 0  # no warm-up
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    value_clip: float = 0.5  # value clipping: new values stay within +-value_clip of the rollout's (verl: 0.5)
    head_init_std: float = 0.02  # std of the value head's fresh weights (its bias starts at 0)


@dataclass(kw_only=True)
class RewardConfig:
    name: str = "boxed"  # reward function (octomega/rl/rewards.py): boxed = OctoThinker's +1/-1 on the last \boxed{}
    no_answer: float = -1.0  # reward of a response cut at the cap without a box (OctoThinker: -1)
    timeout_s: float = 5.0  # math-verify's budget per response (our own timeout, not its signal.alarm)


@dataclass(kw_only=True)
class RLTrainConfig(NonFiniteSteps):  # on_nonfinite, max_skipped_steps: as pre-training's
    steps: int = 300  # RL steps (assumed: the authors' logged validation runs from step 0 to ~300; docs/recipe.md)
    time_budget_s: float | None = None  # stop (with a checkpoint) after this many seconds of this process
    mini_batch_prompts: int = 64  # prompts per optimizer update, all their samples included (docs/recipe.md: 64)
    micro_batch_size: int = 4  # sequences per forward/backward on one DP rank (memory only)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    seed: int = 1234  # model-parallel RNG seed
    exit_after_steps: int | None = None  # stop (with a checkpoint) after this many steps of this process
    cpu_numerics: Literal["native", "pinned"] = "native"  # as in pre-training's train.cpu_numerics


@dataclass(kw_only=True)
class RLInitConfig:
    """Where the actor starts. Exactly one of hf_path and from_checkpoint (a resume loads its own checkpoint)."""

    hf_path: str | None = None  # a Hugging Face Llama directory (e.g. `octomega convert mcore-to-hf` output)
    from_checkpoint: str | None = None  # an octomega run / checkpoint directory (e.g. a decay branch)
    iteration: int | None = None  # which iteration of from_checkpoint; None = its latest complete one


@dataclass(kw_only=True)
class RLDataConfig:
    prompts: str | None = None  # prompt set: jsonl with id, question, answer (python -m data_prep.rl_prompts)
    tokenizer: str | None = None  # HF tokenizer dir; None = the starting checkpoint's (its data.tokenizer or hf dir)
    shuffle: bool = True  # a new permutation of the prompts every epoch (seeded by rollout.seed)


@dataclass(kw_only=True)
class ValidConfig:
    """Greedy zero-shot validation with the rollout template, scored by the reward function (and, with sampled,
    one sampled completion per item as well)."""

    interval: int = 10  # RL steps between validations (also before the first step and after the last); 0 = ends only
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])  # octomega.eval benchmark names; [] = none
    data_dir: str | None = None  # DIR/<benchmark>/test.jsonl; None = octomega.eval's default (the shipped sets)
    limit: int | None = None  # first N items of each benchmark; None = all
    max_new_tokens: int | None = None  # None = the rollout's response cap at that step
    # Also one sample per item at the rollout temperature/top_p (<bench>/sampled_accuracy): the policy RL optimises.
    sampled: bool = False


@dataclass(kw_only=True)
class RLCheckpointConfig:
    save_interval: int = 20  # RL steps between checkpoints (also at the end and on SIGTERM/SIGUSR1) (assumed)
    keep_last: int = 2
    resume: bool = True  # continue from the run directory's latest complete checkpoint
    export_hf: bool = True  # write a Hugging Face directory (run_dir/hf) at the end of the run


@dataclass(kw_only=True)
class RLConfig(NamedRun):
    name: str = "rl"
    run_dir: str | None = None  # None = runs/<name>
    kind: Literal["rl"] = "rl"  # tells RL configs from pre-training ones (recipes share one registry)
    model: ModelConfig | None = None  # None = the starting checkpoint's model (HF config.json or saved config)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)
    init: RLInitConfig = field(default_factory=RLInitConfig)
    data: RLDataConfig = field(default_factory=RLDataConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)
    checkpoint: RLCheckpointConfig = field(default_factory=RLCheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


@dataclass(frozen=True)
class BatchSizes:
    """The batch sizes of one RL step and the arithmetic between them (verl's units)."""

    prompts: int  # per step
    samples: int  # per prompt
    sequences: int  # per step
    mini_batch_prompts: int
    mini_batch_sequences: int
    updates_per_step: int
    dp: int
    micro_batch_size: int
    micro_batches_per_update: int  # per DP rank

    def describe(self) -> list[str]:
        return [
            f"a step samples {self.prompts} prompts x {self.samples} responses = {self.sequences:,} sequences",
            f"a mini-batch is {self.mini_batch_prompts} prompts x {self.samples} = {self.mini_batch_sequences:,} "
            f"sequences: one optimizer update; {self.prompts} / {self.mini_batch_prompts} (x ppo_epochs) = "
            f"{self.updates_per_step} updates per step",
            f"{self.mini_batch_sequences:,} sequences / (dp {self.dp} x micro-batch {self.micro_batch_size}) = "
            f"{self.micro_batches_per_update} micro-batches per update per DP rank (memory only: the loss is "
            "normalised over the whole mini-batch)",
        ]


def batch_sizes(cfg: RLConfig, dp: int | None = None) -> BatchSizes:
    r, t = cfg.rollout, cfg.train
    dp = dp or cfg.parallel.dp or 1
    mb_seq = t.mini_batch_prompts * r.samples_per_prompt
    return BatchSizes(prompts=r.prompts_per_step, samples=r.samples_per_prompt,
                 sequences=r.prompts_per_step * r.samples_per_prompt, mini_batch_prompts=t.mini_batch_prompts,
                 mini_batch_sequences=mb_seq,
                 updates_per_step=(r.prompts_per_step // max(t.mini_batch_prompts, 1)) * cfg.algo.ppo_epochs,
                 dp=dp, micro_batch_size=t.micro_batch_size,
                 micro_batches_per_update=mb_seq // max(t.micro_batch_size * dp, 1))


def validate_rl(cfg: RLConfig, world_size: int | None = None) -> RLConfig:
    """Check the run before any work (layout, batch arithmetic, algorithm options). Fills parallel.dp."""
    from octomega.rl.rewards import get_reward
    from octomega.rl.templates import get_template

    p, r, t, a = cfg.parallel, cfg.rollout, cfg.train, cfg.algo
    if getattr(cfg, "kind", "rl") != "rl":
        raise ConfigError("not an RL config")
    check_numbers(cfg)
    check_optimizer(cfg.optim, "optim")
    check_optimizer(cfg.critic, "critic")
    dp = check_layout(p, world_size)
    if sum(x is not None for x in (cfg.init.hf_path, cfg.init.from_checkpoint)) != 1:
        raise ConfigError("set exactly one of init.hf_path (a Hugging Face Llama directory) and "
                          "init.from_checkpoint (an octomega run or checkpoint directory)")
    if not cfg.data.prompts:
        raise ConfigError("data.prompts is not set: a jsonl prompt set (python -m data_prep.rl_prompts writes one)")
    if r.prompts_per_step < 1 or r.samples_per_prompt < 1:
        raise ConfigError("rollout.prompts_per_step and rollout.samples_per_prompt must be >= 1")
    if a.name == "grpo" and r.samples_per_prompt < 2:
        raise ConfigError("GRPO needs rollout.samples_per_prompt >= 2 (advantages are relative to the group)")
    if t.mini_batch_prompts < 1 or r.prompts_per_step % t.mini_batch_prompts:
        raise ConfigError(f"rollout.prompts_per_step={r.prompts_per_step} is not a multiple of "
                          f"train.mini_batch_prompts={t.mini_batch_prompts}")
    mb_seq = t.mini_batch_prompts * r.samples_per_prompt
    if t.micro_batch_size < 1 or mb_seq % (t.micro_batch_size * dp):
        raise ConfigError(f"a mini-batch of {t.mini_batch_prompts} prompts x {r.samples_per_prompt} samples = "
                          f"{mb_seq} sequences is not divisible by train.micro_batch_size x dp = "
                          f"{t.micro_batch_size} x {dp}")
    if r.temperature <= 0:
        raise ConfigError("rollout.temperature must be > 0 for RL (greedy rollouts give GRPO no signal)")
    if not 0 < r.top_p <= 1:
        raise ConfigError("rollout.top_p must be in (0, 1]")
    r.stair()
    if r.max_prompt_tokens < 1:
        raise ConfigError("rollout.max_prompt_tokens must be >= 1")
    if a.clip_low < 0 or a.clip_high < 0 or (a.clip_ratio_c and a.clip_ratio_c <= 1.0):
        raise ConfigError("algo.clip_ratio(_low/_high) must be >= 0 and algo.clip_ratio_c > 1 (or 0 = off)")
    if a.ppo_epochs < 1:
        raise ConfigError("algo.ppo_epochs must be >= 1")
    if a.name == "grpo" and a.kl_reward_coef:
        raise ConfigError("algo.kl_reward_coef applies to PPO (token rewards); GRPO uses algo.kl_loss_coef")
    if t.steps < 1:
        raise ConfigError("train.steps must be >= 1")
    get_reward(cfg.reward.name)
    get_template(r.template)
    if r.backend == "vllm" and p.pp > 1:
        raise ConfigError("rollout.backend=vllm with parallel.pp > 1 is not supported: vLLM runs tensor-parallel "
                          "only here")
    return cfg


def dry_run_report(cfg: RLConfig, world_size: int | None = None) -> str:
    cfg = validate_rl(copy.deepcopy(cfg), world_size)
    u = batch_sizes(cfg)
    r = cfg.rollout
    lines = ["resolved config:", to_json(cfg), "", "units (verl's):"]
    lines += [f"  {x}" for x in u.describe()]
    lines += [f"  {cfg.train.steps} steps x {u.sequences:,} sequences = {cfg.train.steps * u.sequences:,} responses; "
              f"{cfg.train.steps * u.updates_per_step:,} optimizer updates at LR {cfg.optim.lr:g} (constant"
              f"{', %d warm-up updates' % cfg.optim.warmup_steps if cfg.optim.warmup_steps else ''})",
              "", "response cap (rollout.response_stair):"]
    for start, cap in r.stair():
        lines.append(f"  from step {start:>5}: {cap:,} new tokens")
    lines += ["", f"algorithm: {cfg.algo.name}"
              + (f" (GAE gamma {cfg.algo.gamma:g}, lambda {cfg.algo.lam:g}; critic LR {cfg.critic.lr:g})"
                 if cfg.algo.name == "ppo" else
                 f" (group-normalised advantages{'' if cfg.algo.norm_adv_by_std else ' without the std (Dr.GRPO)'}; "
                 "no critic)"),
              f"  clip [{1 - cfg.algo.clip_low:g}, {1 + cfg.algo.clip_high:g}], loss {cfg.algo.loss_agg_mode}, "
              f"KL loss {cfg.algo.kl_loss_coef:g}, KL reward {cfg.algo.kl_reward_coef:g}, "
              f"entropy {cfg.algo.entropy_coef:g}, temperature {r.temperature:g}",
              f"  rollout backend {r.backend}; reward {cfg.reward.name} (no answer: {cfg.reward.no_answer:g})",
              f"  starts from {cfg.init.hf_path or cfg.init.from_checkpoint}; prompts {cfg.data.prompts} "
              f"(template {r.template}, prompts over {r.max_prompt_tokens} tokens filtered)"]
    return "\n".join(lines)
