"""The RL loop: one flat loop over steps (rollout -> old log-probs -> advantages -> updates), callbacks around it.

One step (verl's order):
  1. the rollout engine gets the actor's weights (hf/vllm: a weight stream; megatron: shared, nothing to do);
  2. prompts_per_step prompts x samples_per_prompt responses are sampled at the stair's cap and graded;
  3. the trainer recomputes the old log-probabilities (logits / temperature) with a forward pass, and the
     reference log-probabilities and the critic's values when those models exist;
  4. advantages: GRPO = group-normalised rewards; PPO = GAE over the critic's values (whitened);
  5. for each mini-batch (x ppo_epochs): one critic update (PPO), one actor update.
Metrics every step go to the console, run_dir/metrics.jsonl and wandb; a few responses to run_dir/rollouts.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from octomega import numerics
from octomega.config import to_json
from octomega.rl import algos
from octomega.rl.actor import POLICY_METRICS, actor_logprob_fn, policy_loss_fn
from octomega.rl.config import RLConfig, units, validate_rl
from octomega.rl.critic import VALUE_METRICS, value_loss_fn, values_fn
from octomega.rl.engines import make_engine
from octomega.rl.rollout import PromptPool, generate_step, rollout_metrics, solved_prompt_ids
from octomega.rl.setup import build_models, initialise_weights, load_tokenizer, precision_dtype, restore, starting_point
from octomega.rl.validate import load_benchmark, run_validation
from octomega.runtime import init_distributed, use_gpu
from octomega.train import checkpoint as ckpt
from octomega.train.callbacks import ExitSignal, MetricsLogger, _fmt_duration

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
    """|trainer - rollout engine| log-probability of the sampled tokens (engines report raw-logit logprobs)."""
    ok = (mask > 0) & ~torch.isnan(engine_logp)
    if not ok.any():
        return {}
    d = (trainer_logp[ok] - engine_logp[ok]).abs()
    return {"logprob_gap_mean": float(d.mean()), "logprob_gap_max": float(d.max())}


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
        self.is_writer = self.rt.rank == 0
        self.model_cfg, tok_dir, src = starting_point(cfg)
        cfg.model = self.model_cfg  # resolved: checkpoints and the HF export record the real shape
        cfg.data.tokenizer = tok_dir
        self.run_dir = Path(cfg.resolved_run_dir)
        if self.is_writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(to_json(cfg))
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
                               shuffle=cfg.data.shuffle)
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

    def _print(self, msg: str) -> None:
        if self.is_writer:
            print(msg, flush=True)

    # -------------------------------------------------------------------------------------------- pieces
    def validate(self, step: int) -> dict[str, float]:
        c = self.cfg
        self.engine.before_generate(self.models.actor.module, self.model_cfg)
        out = run_validation(self.engine.generator, self.valid_items, template=c.rollout.template,
                             stop=c.rollout.stop, max_new_tokens=c.valid.max_new_tokens or c.rollout.response_cap(step),
                             reward_name=c.reward.name, no_answer=c.reward.no_answer, timeout_s=c.reward.timeout_s,
                             samples_path=self.run_dir / "valid_samples.jsonl", step=step,
                             sampled=(c.rollout.temperature, c.rollout.top_p) if c.valid.sampled else None)
        self.engine.after_generate()
        return out

    def save(self, step: int) -> None:
        m, c = self.models, self.cfg
        state = {"pool": self.pool.state_dict(), "wandb_id": self.logger.wandb_id,
                 "layout": [c.parallel.tp, c.parallel.pp, c.parallel.dp],
                 "lr_bounds": {"actor": [c.optim.lr, 0.0], "critic": [c.critic.lr, 0.0]},
                 "critic_scheduler_steps": m.critic.scheduler.num_steps if m.critic else None}
        if m.critic is not None:  # first: the actor's COMPLETE marker then means the whole step is saved
            ckpt.save_checkpoint(self.run_dir / "critic" / "checkpoints", step, m.critic.model,
                                 optimizer=m.critic.optimizer, scheduler=m.critic.scheduler, config=c,
                                 keep_last=c.checkpoint.keep_last)
        path = ckpt.save_checkpoint(self.run_dir / "checkpoints", step, m.actor.model, optimizer=m.actor.optimizer,
                                    scheduler=m.actor.scheduler, state=state, config=c,
                                    keep_last=c.checkpoint.keep_last)
        self._print(f"saved checkpoint {path}")

    def _log_samples(self, step: int, samples: list[dict]) -> None:
        if not self.is_writer or not self.cfg.rollout.log_samples:
            return
        with open(self.run_dir / "rollouts.jsonl", "a") as f:
            for s in samples[: self.cfg.rollout.log_samples]:
                f.write(json.dumps({"step": step, **{k: v for k, v in s.items() if k not in ("token_ids", "logprobs")},
                                    "tokens": len(s["token_ids"])}) + "\n")

    def _any_rank(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    # ---------------------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        c, m = self.cfg, self.models
        u = units(c)
        self.logger = RLMetricsLogger(c, self.run_dir, total_steps=c.train.steps, is_writer=self.is_writer,
                                      wandb_id=self.meta.get("wandb_id"))
        self._print(f"RL ({c.algo.name}) {c.name}: " + "; ".join(u.describe())
                    + f"; starting at step {self.start_step}")
        if not use_gpu():
            self._print(numerics.summary(c.train.cpu_numerics))
        signals, t_start = ExitSignal(), time.perf_counter()
        history, status, step, last_saved = [], "complete", self.start_step, None
        stop_at = c.train.steps if c.train.exit_after_steps is None else min(
            c.train.steps, self.start_step + c.train.exit_after_steps)
        if self.valid_items and step == 0:
            history.append({"step": 0, **self.validate(0)})
            self.logger.log(0, history[-1], kind="valid")
        actor_fn = policy_loss_fn(c.algo, c.rollout.temperature)
        critic_fn = value_loss_fn(c.algo, c.critic.value_clip) if m.critic else None
        T = c.rollout.temperature
        while step < stop_at:
            t0 = time.perf_counter()
            sync = self.engine.before_generate(m.actor.module, self.model_cfg)
            cap = c.rollout.response_cap(step)
            prompts = self.pool.next_batch(c.rollout.prompts_per_step)
            ro = generate_step(self.engine.generator, prompts, n=c.rollout.samples_per_prompt, max_new_tokens=cap,
                               temperature=T, top_p=c.rollout.top_p,
                               stop=list(self._template_stop()) + list(c.rollout.stop), seed=c.rollout.seed, step=step,
                               reward_name=c.reward.name, no_answer=c.reward.no_answer,
                               timeout_s=c.reward.timeout_s, pad_id=self.tokenizer.pad_token_id)
            self.engine.after_generate()
            t1 = time.perf_counter()
            batch = ro.batch
            lp = m.actor.forward_only(batch, actor_logprob_fn(T, raw=T != 1.0), ("logp", "logp_raw") if T != 1.0
                                      else ("logp",))
            batch["old_logp"] = lp["logp"]
            metrics = {**rollout_metrics(ro, cap), **sync, "prompts_filtered": float(self.pool.filtered)}
            metrics.update(logprob_gap(batch["engine_logp"], lp.get("logp_raw", lp["logp"]), batch["mask"]))
            if m.ref is not None:
                batch["ref_logp"] = m.ref.forward_only(batch, actor_logprob_fn(T, raw=False), ("logp",))["logp"]
            if m.critic is not None:
                batch["values"] = m.critic.forward_only(batch, values_fn, ("values",))["values"]
            metrics.update(advantages(c, batch, ro.rewards))
            updates: list[dict] = []
            rows = u.mini_batch_sequences
            for _ in range(c.algo.ppo_epochs):
                for k in range(batch.num_rows // rows):
                    mb = batch.rows(k * rows, (k + 1) * rows)
                    upd = {}
                    if m.critic is not None:
                        cm = m.critic.train_minibatch(mb, critic_fn, VALUE_METRICS)
                        upd.update({"vf_loss": cm["vf_loss"], "vf_clipfrac": cm["vf_clipfrac"],
                                    "vpred_mean": cm["vpred_mean"], "critic_grad_norm": cm["grad_norm"],
                                    "critic_lr": cm["lr"]})
                    upd.update(m.actor.train_minibatch(mb, actor_fn, POLICY_METRICS))
                    updates.append(upd)
            metrics.update({k: sum(x[k] for x in updates) / len(updates) for k in updates[0]})
            if c.rollout.drop_solved_prompts:
                self.pool.drop(solved_prompt_ids(ro.samples))
                metrics["prompts_active"] = float(self.pool.active)
            step += 1
            t2 = time.perf_counter()
            tokens = int(batch.lengths().sum())
            metrics.update(time_train_s=t2 - t1, time_step_s=t2 - t0, tokens_per_s=tokens / max(t2 - t0, 1e-9),
                           epoch=float(self.pool.epoch))
            self.logger.log(step, metrics)
            self._log_samples(step, ro.samples)
            if self.valid_items and ((c.valid.interval and step % c.valid.interval == 0) or step == c.train.steps):
                history.append({"step": step, **self.validate(step)})
                self.logger.log(step, history[-1], kind="valid")
            interrupted = signals.any_rank()
            over_budget = self._any_rank(c.train.time_budget_s is not None
                                         and time.perf_counter() - t_start > c.train.time_budget_s)
            if (c.checkpoint.save_interval and step % c.checkpoint.save_interval == 0) or interrupted:
                self.save(step)
                last_saved = step
            if interrupted:
                status = "interrupted"
                break
            if over_budget:
                status = "time_budget"
                break
        if status != "interrupted":
            if last_saved != step:
                self.save(step)
            if status == "complete" and step < c.train.steps:
                status = "stopped"
            if self.valid_items and (not history or history[-1]["step"] != step):
                history.append({"step": step, **self.validate(step)})
                self.logger.log(step, history[-1], kind="valid")
            if c.checkpoint.export_hf:
                from octomega.rl.export import export_hf

                out = export_hf(m.actor.module, self.model_cfg, self.run_dir / "hf", tokenizer_dir=c.data.tokenizer,
                                is_writer=self.is_writer)
                self._print(f"exported the actor to {out}")
        signals.restore()
        self.logger.finish()
        result = {"status": status, "step": step, "steps": c.train.steps, "run_dir": str(self.run_dir),
                  "valid": history, "seconds": time.perf_counter() - t_start}
        if self.is_writer:
            (self.run_dir / "rl_status.json").write_text(json.dumps(result, indent=2))
        return result

    def _template_stop(self):
        from octomega.rl.templates import get_template

        return get_template(self.cfg.rollout.template).stop


def run_rl(cfg: RLConfig) -> dict:
    return RLTrainer(cfg).train()

