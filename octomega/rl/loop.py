"""The RL loop: one flat loop over steps (rollout -> score -> update), the run skeleton around it.

One step (verl's order):
  1. rollout: the rollout engine gets the actor's weights (hf/vllm: a weight stream; megatron: shared, nothing to
     do); prompts_per_step prompts x samples_per_prompt responses are sampled at the stair's cap and graded;
  2. score: the trainer recomputes the old log-probabilities (logits / temperature) with a forward pass, and the
     reference log-probabilities and the critic's values when those models exist; then the advantages:
     GRPO = group-normalised rewards; PPO = GAE over the critic's values (whitened);
  3. update: for each mini-batch (x ppo_epochs): one critic update (PPO), one actor update.
Metrics every step go to the console, run_dir/metrics.jsonl and wandb; a few responses to run_dir/rollouts.jsonl.
When to stop and save, and the status file (run_dir/rl_status.json): octomega/train/run.py, as in pre-training.
"""

from __future__ import annotations

import json
import time

import torch

from octomega.rl import algos
from octomega.rl.actor import POLICY_METRICS, actor_logprob_fn, policy_loss_fn
from octomega.rl.config import RLConfig, batch_sizes, validate_rl
from octomega.rl.critic import VALUE_METRICS, value_loss_fn, values_fn
from octomega.rl.engines import make_engine
from octomega.rl.rollout import PromptPool, Rollout, generate_step, rollout_metrics
from octomega.rl.setup import build_models, initialise_weights, load_tokenizer, restore, starting_point
from octomega.rl.templates import get_template
from octomega.rl.validate import load_benchmark, run_validation
from octomega.runtime import init_distributed, use_gpu
from octomega import checkpoint as ckpt
from octomega.train.callbacks import MetricsLogger, _fmt_duration
from octomega.train.run import RunControl, finite, open_run_dir, start_logging
from octomega.train.setup import precision_dtype

CONSOLE = (("reward_mean", "reward {:+.3f}"), ("accuracy", "acc {:.3f}"), ("box_rate", "box {:.3f}"),
           ("response_len_mean", "len {:.0f}"), ("cap_share", "capped {:.2f}"), ("zero_adv_share", "zero-adv {:.2f}"),
           ("entropy", "ent {:.3f}"), ("pg_clipfrac", "clip {:.3f}"), ("vf_loss", "vf {:.4f}"),
           ("grad_norm", "gnorm {:.3f}"), ("logprob_gap_mean", "lp-gap {:.1e}"), ("time_generate_s", "gen {:.1f}s"),
           ("time_train_s", "train {:.1f}s"))


class RLMetricsLogger(MetricsLogger):
    def _console(self, step: int, m: dict) -> None:
        if self.start_step is None:
            self.start_step = step - 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(step - self.start_step, 1) * (self.total - step)
        parts = [f"step {step}/{self.total}"] + [f.format(m[k]) for k, f in CONSOLE if k in m]
        print(" | ".join(parts + [f"ETA {_fmt_duration(eta)}"]), flush=True)


def logprob_gap(engine_logp: torch.Tensor, trainer_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Rollout-vs-trainer drift over the sampled tokens (engines report raw-logit logprobs): the mean and max of
    |trainer - engine| log-probability, and the mean probability ratio exp(trainer - engine). ~0 and 1 when the
    engine generates with the actor's weights at the same precision; a stale or broken weight sync shows here."""
    ok = (mask > 0) & ~torch.isnan(engine_logp)
    if not ok.any():
        return {}
    diff = trainer_logp[ok].double() - engine_logp[ok].double()
    return {"logprob_gap_mean": float(diff.abs().mean()), "logprob_gap_max": float(diff.abs().max()),
            "prob_ratio_mean": float(diff.exp().mean())}


def nonfinite_update(metrics: dict[str, float]) -> dict | None:
    """The first model of a step (the critic, then the actor) with an update not applied (its loss or gradients were
    not finite) or a non-finite loss or grad norm: RunControl.nonfinite's arguments; None when all were finite."""
    for what, loss, norm, skipped in (("critic", "vf_loss", "critic_grad_norm", "critic_skipped"),
                                      ("actor", "pg_loss", "grad_norm", "skipped")):
        if skipped in metrics and (metrics[skipped] > 0 or not finite(metrics[loss], metrics[norm])):
            return {"what": what, "loss": metrics[loss], "grad_norm": metrics[norm]}
    return None


def advantages(cfg: RLConfig, batch, rewards: torch.Tensor) -> dict[str, float]:
    a, mask = cfg.algo, batch["mask"]
    same = algos.grpo_advantages(rewards, batch["group"], norm_by_std=False)
    out = {"zero_adv_share": algos.zero_advantage_share(same, batch["group"])}
    if a.name == "grpo":
        adv = algos.grpo_advantages(rewards, batch["group"], norm_by_std=a.norm_adv_by_std, eps=a.adv_eps)
        batch["adv"] = adv[:, None] * mask
    else:
        token_rewards = algos.outcome_token_rewards(rewards, mask)
        if a.kl_reward_coef:
            kl = algos.kl_penalty(batch["old_logp"], batch["ref_logp"], a.kl_reward_type) * mask
            token_rewards = token_rewards - a.kl_reward_coef * kl
            out["reward_kl"] = float(algos.masked_mean(kl, mask))
        adv, ret = algos.gae(token_rewards, batch["values"], mask, gamma=a.gamma, lam=a.lam)
        if a.whiten_advantages:
            adv = algos.masked_whiten(adv, mask) * mask
        batch["adv"], batch["returns"] = adv, ret
        out["returns_mean"] = float(algos.masked_mean(ret, mask))
        out["values_mean"] = float(algos.masked_mean(batch["values"], mask))
    out["adv_abs_mean"] = float(algos.masked_mean(batch["adv"].abs(), mask))
    return out


class RLTrainer:
    def __init__(self, cfg: RLConfig):
        self.rt = init_distributed(tp=cfg.parallel.tp, pp=cfg.parallel.pp, seed=cfg.train.seed)
        self.cfg = cfg = validate_rl(cfg, self.rt.world_size)
        self.sizes = batch_sizes(cfg)
        self.is_writer = self.rt.rank == 0
        self.model_cfg, tok_dir, src = starting_point(cfg)
        cfg.model = self.model_cfg  # resolved: checkpoints and the HF export record the real shape
        cfg.data.tokenizer = tok_dir
        self.run_dir = open_run_dir(cfg, is_writer=self.is_writer)
        self.tokenizer = load_tokenizer(tok_dir)
        on_gpu = use_gpu()
        self.dtype = precision_dtype(cfg.train.precision, on_gpu)
        self.models = build_models(cfg, self.model_cfg, self.dtype, on_gpu, self.rt.device)
        resumed = restore(cfg, self.models, self.run_dir, self._print)
        if resumed is None:
            initialise_weights(cfg, self.models, src, self._print)
        self.start_step, self.meta = resumed if resumed is not None else (0, {})
        self.pool = PromptPool(cfg.data.prompts, self.tokenizer, template=cfg.rollout.template,
                               max_prompt_tokens=cfg.rollout.max_prompt_tokens, seed=cfg.rollout.seed,
                               shuffle=cfg.data.shuffle, remove_easy_above=cfg.rollout.easy_reward_max
                               if cfg.rollout.remove_easy_prompts else None)
        if "pool" in self.meta:
            self.pool.load_state_dict(self.meta["pool"])
        self._print(f"prompts: {len(self.pool.prompts):,} from {cfg.data.prompts} ({self.pool.filtered:,} longer "
                    f"than {cfg.rollout.max_prompt_tokens} tokens filtered)")
        boot_dir = cfg.init.hf_path
        if cfg.rollout.backend == "vllm" and boot_dir is None:  # vLLM boots from an HF directory
            from octomega.rl.export import export_hf

            boot_dir = str(export_hf(self.models.actor.module, self.model_cfg, self.run_dir / "rollout_boot_hf",
                                     tokenizer_dir=tok_dir, is_writer=self.is_writer))
        self.engine = make_engine(cfg, self.models.actor.model, self.model_cfg, self.tokenizer, self.rt.device,
                                  boot_dir)
        self.valid_items = {b: load_benchmark(b, cfg.valid.data_dir, cfg.valid.limit) for b in cfg.valid.benchmarks}
        template = get_template(cfg.rollout.template)
        self.stop_strings = [*template.stop, *cfg.rollout.stop]  # the template's, then rollout.stop
        self.keep_stop_tokens = template.keep_stop_tokens
        self.policy_loss = policy_loss_fn(cfg.algo, cfg.rollout.temperature)
        self.value_loss = value_loss_fn(cfg.algo, cfg.critic.value_clip) if self.models.critic else None

    def _print(self, msg: str) -> None:
        if self.is_writer:
            print(msg, flush=True)

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> dict:
        cfg = self.cfg
        self.logger = start_logging(RLMetricsLogger, cfg, self.run_dir, total_steps=cfg.train.steps,
                                    is_writer=self.is_writer, wandb_id=self.meta.get("wandb_id"),
                                    headline=f"RL ({cfg.algo.name}) {cfg.name}: " + "; ".join(self.sizes.describe())
                                    + f"; starting at step {self.start_step}", start_step=self.start_step)
        control = RunControl(self.run_dir, is_writer=self.is_writer, status_file="rl_status.json",
                             start_step=self.start_step, total_steps=cfg.train.steps,
                             exit_after_steps=cfg.train.exit_after_steps, save_interval=cfg.checkpoint.save_interval,
                             time_budget_s=cfg.train.time_budget_s, work_after_last_step=True,
                             on_nonfinite=cfg.train.on_nonfinite, max_skipped_steps=cfg.train.max_skipped_steps,
                             skipped_steps=int(self.meta.get("skipped_steps", 0)),
                             checkpoints=self.run_dir / "checkpoints",
                             advice="Lower optim.lr (critic.lr for the critic) and start again in a new run directory, "
                                    "from the start or from a finite checkpoint (init.from_checkpoint=PATH)")
        history: list[dict] = []  # this process's validations: {"step": ..., **metrics}
        step = self.start_step
        if self.valid_items and step == 0:
            self._validate(step, history)
        while control.running(step):
            started = time.perf_counter()
            rollout, metrics = self.rollout(step)
            generated = time.perf_counter()
            metrics.update(self.score(rollout))
            metrics.update(self.update(rollout.batch))
            if cfg.rollout.remove_easy_prompts:  # recorded now, applied when the epoch ends (PromptPool)
                self.pool.record(rollout.samples)
                metrics.update(prompts_active=float(self.pool.active),
                               prompts_removed_easy=float(self.pool.removed_easy))
            step += 1
            finished = time.perf_counter()
            tokens = int(rollout.batch.lengths().sum())
            metrics.update(time_train_s=finished - generated, time_step_s=finished - started,
                           tokens_per_s=tokens / max(finished - started, 1e-9), epoch=float(self.pool.epoch))
            self.logger.log(step, metrics)
            self._log_samples(step, rollout.samples)
            bad = nonfinite_update(metrics)
            if bad is not None:  # its update was not applied
                control.nonfinite(step, **bad)
                if control.diverged:
                    break
            if self.valid_items and control.due(step, cfg.valid.interval):
                self._validate(step, history)
            control.check_stop()
            if control.should_save(step):
                self.save(step, control)
        if control.final_save_due(step):
            self.save(step, control)
        # A signal leaves at once (saved above): the restart validates and exports. A diverged run does neither.
        if not control.interrupted and not control.diverged:
            if self.valid_items and (not history or history[-1]["step"] != step):
                self._validate(step, history)
            if cfg.checkpoint.export_hf:
                self.export_hf()
        control.close(self.logger)
        return control.write_status(step, valid=history, seconds=control.elapsed())

    # ------------------------------------------------------------------------------------------- one step
    def rollout(self, step: int) -> tuple[Rollout, dict[str, float]]:
        """Sample and grade this step's responses with the actor's current weights: (the rollout, its metrics)."""
        cfg, engine = self.cfg, self.engine
        sync = engine.before_generate(self.models.actor.module, self.model_cfg)
        cap = cfg.rollout.response_cap(step + 1)  # `step` counts the steps done: this one is logged as step + 1
        prompts = self.pool.next_batch(cfg.rollout.prompts_per_step)
        rollout = generate_step(engine.generator, prompts, n=cfg.rollout.samples_per_prompt, max_new_tokens=cap,
                                temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, stop=self.stop_strings,
                                seed=cfg.rollout.seed, step=step, reward_name=cfg.reward.name,
                                no_answer=cfg.reward.no_answer, timeout_s=cfg.reward.timeout_s,
                                pad_id=self.tokenizer.pad_token_id, keep_stop_tokens=self.keep_stop_tokens)
        engine.after_generate()
        return rollout, {**rollout_metrics(rollout, cap), **sync, "prompts_filtered": float(self.pool.filtered)}

    def score(self, rollout: Rollout) -> dict[str, float]:
        """The trainer's view of a rollout, written into its batch: "old_logp" (the actor's log-probabilities at
        the sampling temperature), "ref_logp" and "values" when a reference and a critic exist, then "adv" (and,
        PPO, "returns"). Returns the trainer-vs-engine log-probability gap and the advantage metrics."""
        models, batch, temperature = self.models, rollout.batch, self.cfg.rollout.temperature
        tempered = temperature != 1.0  # then the raw-logit log-probs too: the engine reports those
        logprobs = models.actor.forward_only(batch, actor_logprob_fn(temperature, raw=tempered),
                                             ("logp", "logp_raw") if tempered else ("logp",))
        batch["old_logp"] = logprobs["logp"]
        metrics = logprob_gap(batch["engine_logp"], logprobs.get("logp_raw", logprobs["logp"]), batch["mask"])
        if models.ref is not None:
            batch["ref_logp"] = models.ref.forward_only(batch, actor_logprob_fn(temperature, raw=False),
                                                        ("logp",))["logp"]
        if models.critic is not None:
            batch["values"] = models.critic.forward_only(batch, values_fn, ("values",))["values"]
        metrics.update(advantages(self.cfg, batch, rollout.rewards))
        return metrics

    def update(self, batch) -> dict[str, float]:
        """algo.ppo_epochs passes over the scored batch's mini-batches, one critic update (PPO) and one actor update
        each. Returns the updates' metrics, averaged."""
        models, rows = self.models, self.sizes.mini_batch_sequences
        updates: list[dict[str, float]] = []
        for _ in range(self.cfg.algo.ppo_epochs):
            for k in range(batch.num_rows // rows):
                mini_batch = batch.rows(k * rows, (k + 1) * rows)
                update = {}
                if models.critic is not None:
                    critic = models.critic.train_minibatch(mini_batch, self.value_loss, VALUE_METRICS)
                    update.update({"vf_loss": critic["vf_loss"], "vf_clipfrac": critic["vf_clipfrac"],
                                   "vpred_mean": critic["vpred_mean"], "critic_grad_norm": critic["grad_norm"],
                                   "critic_lr": critic["lr"], "critic_skipped": critic["skipped"]})
                update.update(models.actor.train_minibatch(mini_batch, self.policy_loss, POLICY_METRICS))
                updates.append(update)
        return {key: sum(u[key] for u in updates) / len(updates) for key in updates[0]}

    # ---------------------------------------------------------------------------------------- around steps
    def validate(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        self.engine.before_generate(self.models.actor.module, self.model_cfg)
        out = run_validation(self.engine.generator, self.valid_items, template=cfg.rollout.template,
                             stop=cfg.rollout.stop,
                             max_new_tokens=cfg.valid.max_new_tokens or cfg.rollout.response_cap(step),
                             reward_name=cfg.reward.name, no_answer=cfg.reward.no_answer,
                             timeout_s=cfg.reward.timeout_s, samples_path=self.run_dir / "valid_samples.jsonl",
                             step=step, sampled=(cfg.rollout.temperature, cfg.rollout.top_p) if cfg.valid.sampled
                             else None)
        self.engine.after_generate()
        return out

    def _validate(self, step: int, history: list[dict]) -> None:
        history.append({"step": step, **self.validate(step)})
        self.logger.log(step, history[-1], kind="valid")

    def save(self, step: int, control: RunControl) -> None:
        """Checkpoint `step` (critic, then actor); weights that are not finite are not saved: the run has diverged."""
        models, cfg = self.models, self.cfg
        state = {"pool": self.pool.state_dict(), "wandb_id": self.logger.wandb_id,
                 "layout": [cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.dp],
                 "lr_bounds": {"actor": [cfg.optim.lr, 0.0], "critic": [cfg.critic.lr, 0.0]},
                 "critic_scheduler_steps": models.critic.scheduler.num_steps if models.critic else None,
                 "skipped_steps": control.skipped_steps}
        what = "critic"
        try:
            if models.critic is not None:  # first: the actor's COMPLETE marker then means the whole step is saved
                ckpt.save_checkpoint(self.run_dir / "critic" / "checkpoints", step, models.critic.model,
                                     optimizer=models.critic.optimizer, scheduler=models.critic.scheduler, config=cfg,
                                     keep_last=cfg.checkpoint.keep_last)
            what = "actor"
            path = ckpt.save_checkpoint(self.run_dir / "checkpoints", step, models.actor.model,
                                        optimizer=models.actor.optimizer, scheduler=models.actor.scheduler,
                                        state=state, config=cfg, keep_last=cfg.checkpoint.keep_last)
        except ckpt.NonFiniteWeights:
            control.weights_not_finite(step, what)
            return
        self._print(f"saved checkpoint {path}")

    def export_hf(self) -> None:
        from octomega.rl.export import export_hf

        out = export_hf(self.models.actor.module, self.model_cfg, self.run_dir / "hf",
                        tokenizer_dir=self.cfg.data.tokenizer, is_writer=self.is_writer)
        self._print(f"exported the actor to {out}")

    def _log_samples(self, step: int, samples: list[dict]) -> None:
        if not self.is_writer or not self.cfg.rollout.log_samples:
            return
        with open(self.run_dir / "rollouts.jsonl", "a") as f:
            for s in samples[: self.cfg.rollout.log_samples]:
                f.write(json.dumps({"step": step, **{k: v for k, v in s.items() if k not in ("token_ids", "logprobs")},
                                    "tokens": len(s["token_ids"])}) + "\n")


def run_rl(cfg: RLConfig) -> dict:
    return RLTrainer(cfg).train()

