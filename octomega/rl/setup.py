"""Everything the RL loop needs, built once: runtime, model shape, tokenizer, actor / reference / critic, restore.

The actor starts from an HF directory (init.hf_path) or an octomega checkpoint (init.from_checkpoint: a decay
branch, a converted model); its model shape comes from there unless `model` is set. A resume (the run
directory holds a complete checkpoint) loads the actor and critic with their optimizers, the scheduler, the RNG
and the prompt pool's position instead.

Checkpoints: the actor's are a standard octomega checkpoint at run_dir/checkpoints (so `octomega convert
mcore-to-hf` and init.from_checkpoint take them); the critic's sit at run_dir/critic/checkpoints, same iteration.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from octomega.config import ConfigError, ModelConfig, from_dict
from octomega.rl.actor import ModelRunner, constant_scheduler, optim_config
from octomega.rl.config import RLConfig
from octomega import checkpoint as ckpt


def starting_point(cfg: RLConfig) -> tuple[ModelConfig, str | None, Path | None]:
    """(model config, tokenizer dir, Megatron iter dir or None) of the run's starting point."""
    from octomega.config import load_hf_config

    if cfg.init.hf_path:
        hf = Path(cfg.init.hf_path)
        if not (hf / "config.json").exists():
            raise ConfigError(f"init.hf_path={hf}: no config.json (expected a Hugging Face Llama directory)")
        model = copy.deepcopy(cfg.model) if cfg.model is not None else ModelConfig(name=hf.name)
        model.hf_config = str(hf)
        return load_hf_config(model), cfg.data.tokenizer or str(hf), None
    try:
        src = ckpt.resolve(cfg.init.from_checkpoint, cfg.init.iteration)
    except FileNotFoundError as e:
        raise ConfigError(f"init.from_checkpoint: {e}") from None
    saved = (json.loads((src / ckpt.META).read_text()).get("config") or {})
    if cfg.model is not None:
        model = load_hf_config(cfg.model)
    elif "model" in saved:
        model = load_hf_config(from_dict(ModelConfig, saved["model"]))
    else:
        raise ConfigError(f"{src}: its octomega.json has no config.model; set model.* or use init.hf_path")
    tokenizer = cfg.data.tokenizer or (saved.get("data") or {}).get("tokenizer")
    assets = src / "hf_assets"
    if tokenizer is None and assets.is_dir():
        tokenizer = str(assets)
    if tokenizer is None:
        raise ConfigError(f"no tokenizer: set data.tokenizer (the checkpoint {src} does not name one)")
    return model, tokenizer, src


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).exists():
        raise ConfigError(f"tokenizer {path} does not exist (data.tokenizer)")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        from octomega.generate.hf_backend import pad_token_id_for

        tok.pad_token_id = pad_token_id_for(tok)
    return tok


@dataclass
class Models:
    actor: ModelRunner
    ref: ModelRunner | None
    critic: ModelRunner | None


def build_models(cfg: RLConfig, model_cfg: ModelConfig, dtype: torch.dtype, on_gpu: bool,
                 device: torch.device) -> Models:
    from octomega.train.setup import build_ddp_model_and_optimizer

    mbs = cfg.train.micro_batch_size
    ddp, opt = build_ddp_model_and_optimizer(model_cfg, cfg.parallel, optim_config(cfg.optim), dtype=dtype,
                                             on_gpu=on_gpu, device=device)
    sched = constant_scheduler(opt, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_steps)
    actor = ModelRunner("actor", ddp, opt, sched, micro_batch_size=mbs, device=device)
    ref = critic = None
    if cfg.algo.kl_loss_coef or cfg.algo.kl_reward_coef:
        from octomega.model import build_model

        frozen = build_model(model_cfg, cfg.parallel, dtype=dtype, on_gpu=on_gpu, device=device)
        frozen.config.calculate_per_token_loss = True
        frozen.requires_grad_(False)
        ref = ModelRunner("ref", frozen, micro_batch_size=mbs, device=device)
    if cfg.algo.name == "ppo":
        from octomega.rl.critic import attach_value_head, critic_model_config

        cddp, copt = build_ddp_model_and_optimizer(
            critic_model_config(model_cfg), cfg.parallel, optim_config(cfg.critic), dtype=dtype, on_gpu=on_gpu,
            device=device, post_process_hook=attach_value_head(cfg.critic.head_init_std))
        csched = constant_scheduler(copt, cfg.critic.lr, cfg.critic.weight_decay, cfg.critic.warmup_steps)
        critic = ModelRunner("critic", cddp, copt, csched, micro_batch_size=mbs, device=device)
    return Models(actor, ref, critic)


@torch.no_grad()
def copy_params(src_module, dst_module) -> None:
    dst = dict(dst_module.named_parameters())
    for name, p in src_module.named_parameters():
        dst[name].copy_(p)


def _reload_main_params(optimizer) -> None:
    """Mixed-precision optimizers keep fp32 copies of the weights: refresh them after the weights changed."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if hasattr(opt, "reload_model_params"):
            opt.reload_model_params()


def initialise_weights(cfg: RLConfig, models: Models, src: Path | None, log) -> None:
    """Fresh run: actor from HF or a checkpoint; reference = actor; critic body = actor, fresh value head."""
    from octomega.rl.critic import copy_body

    actor = models.actor
    if src is None:
        from octomega.convert import load_hf_into_model

        load_hf_into_model(cfg.init.hf_path, [actor.module])
        log(f"actor: Hugging Face weights from {cfg.init.hf_path}")
    else:
        ckpt.load_checkpoint(src, actor.model)
        log(f"actor: weights of {src} (fresh optimizer)")
    _reload_main_params(actor.optimizer)
    if models.ref is not None:
        copy_params(actor.module, models.ref.module)
    if models.critic is not None:
        n = copy_body(actor.module, models.critic.module)
        _reload_main_params(models.critic.optimizer)
        log(f"critic: {n} tensors from the actor + a fresh value head")


def _set_lr_bounds(runner: ModelRunner, bounds) -> None:
    """Megatron matches loaded parameter groups by a key holding max_lr/min_lr: use the saved ones."""
    if bounds:
        for group in runner.optimizer.param_groups:
            group["max_lr"], group["min_lr"] = bounds


def restore(cfg: RLConfig, models: Models, run_dir: Path, log) -> tuple[int, dict] | None:
    """Resume from the newest step with complete actor (and critic) checkpoints; None when there is none."""
    if not cfg.checkpoint.resume:
        return None
    actor_its = set(ckpt.complete_iterations(run_dir / "checkpoints"))
    if models.critic is not None:
        actor_its &= set(ckpt.complete_iterations(run_dir / "critic" / "checkpoints"))
    if not actor_its:
        return None
    step = max(actor_its)
    path = ckpt.iter_dir(run_dir / "checkpoints", step)
    meta = json.loads((path / ckpt.META).read_text())
    same_layout = meta.get("layout") == [cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.dp]
    _set_lr_bounds(models.actor, meta.get("lr_bounds", {}).get("actor"))
    ckpt.load_checkpoint(path, models.actor.model, optimizer=models.actor.optimizer, load_rng=same_layout)
    if models.critic is not None:
        _set_lr_bounds(models.critic, meta.get("lr_bounds", {}).get("critic"))
        ckpt.load_checkpoint(ckpt.iter_dir(run_dir / "critic" / "checkpoints", step), models.critic.model,
                             optimizer=models.critic.optimizer)
    for runner, o in ((models.actor, cfg.optim), (models.critic, cfg.critic)):
        if runner is not None:
            runner.scheduler = constant_scheduler(runner.optimizer, o.lr, o.weight_decay, o.warmup_steps)
            if "scheduler" in meta and runner is models.actor and meta["scheduler"]:
                runner.scheduler.num_steps = int(meta["scheduler"]["num_steps"])
                runner.scheduler.step(0)
            elif runner is models.critic and meta.get("critic_scheduler_steps") is not None:
                runner.scheduler.num_steps = int(meta["critic_scheduler_steps"])
                runner.scheduler.step(0)
    if models.ref is not None:  # the reference stays the starting policy: reload it from the start
        _, _, src = starting_point(cfg)
        if src is None:
            from octomega.convert import load_hf_into_model

            load_hf_into_model(cfg.init.hf_path, [models.ref.module])
        else:
            ckpt.load_checkpoint(src, models.ref.model)
    log(f"resumed from {path} (step {step})")
    return step, meta
