"""Megatron-Core models of the RL stage: the actor (and the pieces the critic and reference model share).

A `ModelRunner` is one model (actor, reference or critic) on this rank (its pipeline stage, its TP shard) with,
when it trains, Megatron's DDP and optimizer (built by octomega.train.setup like pre-training's). It runs batches
through Megatron's pipeline schedules (`get_forward_backward_func`) in two ways:

- `forward_only(batch, fn)`: per-token outputs (log-probabilities, values) of every row of a step. Each DP rank
  computes its slice; the results are gathered across DP and broadcast from the last pipeline stage, so every
  rank ends with the whole step's tensors.
- `train_minibatch(batch, loss_fn)`: one optimizer update on one mini-batch. Each micro-batch's loss function
  returns (loss numerator, denominator, metrics) (octomega.rl.algos.agg_terms); Megatron's per-token loss mode
  sums the denominators over micro-batches and DP ranks and divides the gradients by the total, so the update
  is the same for any micro-batch size and DP size (tests/rl/test_grad_invariance.py).

Log-probabilities come from the trainer's own forward pass with the logits divided by the sampling temperature
(never from the rollout engine); with tensor parallelism the vocabulary is split, so log-softmax, the picked
logit and the entropy are reduced across the TP group.
"""

from __future__ import annotations

from functools import partial

import torch

from octomega.config import OptimConfig
from octomega.rl import algos
from octomega.rl.batch import PAD_MULTIPLE, TensorBatch, micro_batches, padded_width
from octomega.train.setup import step_if_finite


def optim_config(o) -> OptimConfig:
    """An RL optimizer section (RLOptimConfig / CriticConfig) as the training core's OptimConfig."""
    return OptimConfig(lr=o.lr, weight_decay=o.weight_decay, adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2,
                       adam_eps=o.adam_eps, clip_grad=o.clip_grad, warmup_tokens=0)


def constant_scheduler(optimizer, lr: float, weight_decay: float, warmup_steps: int):
    """Megatron's scheduler at a constant LR after `warmup_steps` linear warm-up updates; it also applies each
    parameter group's weight-decay multiplier (norms and biases get none)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(optimizer, init_lr=0.0, max_lr=lr, min_lr=lr, lr_warmup_steps=warmup_steps,
                                   lr_decay_steps=max(warmup_steps, 1) + 1, lr_decay_style="constant",
                                   start_wd=weight_decay, end_wd=weight_decay, wd_incr_steps=1,
                                   wd_incr_style="constant")


# ------------------------------------------------------------------------------------ vocab-parallel log-probs


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0,
                   entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(labels) and (optionally) the entropy under softmax(logits / temperature), for logits split over the
    vocabulary across the TP group ([..., V / TP] on each rank). Differentiable; fp32."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region as tp_sum

    tp = ps.get_tensor_model_parallel_world_size()
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    top = logits.detach().max(dim=-1, keepdim=True).values
    if tp > 1:
        torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX,
                                     group=ps.get_tensor_model_parallel_group())
    shifted = logits - top
    exp = shifted.exp()
    sum_exp = exp.sum(-1)
    n = logits.shape[-1]
    local = labels - ps.get_tensor_model_parallel_rank() * n
    inside = (local >= 0) & (local < n)
    picked = shifted.gather(-1, local.clamp(0, n - 1).unsqueeze(-1)).squeeze(-1) * inside
    if tp > 1:
        sum_exp, picked = tp_sum(sum_exp), tp_sum(picked)
    log_z = sum_exp.log()
    logp = picked - log_z
    ent = None
    if entropy:
        weighted = (exp * shifted).sum(-1)
        if tp > 1:
            weighted = tp_sum(weighted)
        ent = log_z - weighted / sum_exp
    return logp, ent


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Per-position outputs (position t predicts token t + 1) -> aligned with the tokens they are about."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


def next_token_logprobs(logits, tokens, temperature, entropy=False):
    labels = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    logp, ent = token_logprobs(logits, labels, temperature=temperature, entropy=entropy)
    return shift_right(logp), (shift_right(ent) if ent is not None else None)


# -------------------------------------------------------------------------------------- the model runners


def _zero_loss(output: torch.Tensor) -> torch.Tensor:
    return output.sum() * 0.0


class ModelRunner:
    """One Megatron model on this rank. `model` may be DDP-wrapped (trainable) or bare (frozen reference)."""

    def __init__(self, name: str, model, optimizer=None, scheduler=None, *, micro_batch_size: int,
                 device: torch.device):
        from megatron.core import parallel_state as ps

        self.name, self.model, self.optimizer, self.scheduler = name, model, optimizer, scheduler
        self.micro_batch_size, self.device = micro_batch_size, device
        self.dp, self.dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        self.tp = ps.get_tensor_model_parallel_world_size()
        self.last_stage = ps.is_pipeline_last_stage()

    @property
    def module(self):
        return self.model.module if hasattr(self.model, "module") else self.model

    def width(self, batch: TensorBatch) -> int:
        return padded_width(batch.lengths(), PAD_MULTIPLE * self.tp)

    def _run(self, mbs: list[dict], loss_fn, *, forward_only: bool, width: int) -> list[dict]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        device = self.device

        def forward_step(data_iterator, model):
            mb = {k: v.to(device) for k, v in next(data_iterator).items()}
            return model(mb["tokens"], mb["position_ids"], None), partial(loss_fn, mb)

        return get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(mbs), model=[self.model], num_microbatches=len(mbs),
            seq_length=width, micro_batch_size=self.micro_batch_size, forward_only=forward_only)

    def _dp_rows(self, batch: TensorBatch) -> TensorBatch:
        per = batch.num_rows // self.dp
        return batch.rows(self.dp_rank * per, (self.dp_rank + 1) * per)

    @torch.no_grad()
    def forward_only(self, batch: TensorBatch, fn, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Per-token outputs [rows, T] of the whole batch on every rank. `fn(mb, output) -> {key: [b, width]}`."""
        from megatron.core import parallel_state as ps

        width = self.width(batch)
        local = self._dp_rows(batch)
        mbs = micro_batches(local, self.micro_batch_size, width)

        def loss_fn(mb, output):
            outs = fn(mb, output)
            return _zero_loss(output), output.new_zeros((), dtype=torch.int), {k: outs[k].float() for k in keys}

        self.model.eval()
        results = self._run(mbs, loss_fn, forward_only=True, width=width)
        self.model.train()
        out = {}
        for k in keys:
            if self.last_stage:
                t = torch.cat([r[k].to(self.device) for r in results]).contiguous()
            else:
                t = torch.zeros((local.num_rows, width), dtype=torch.float32, device=self.device)
            if ps.get_pipeline_model_parallel_world_size() > 1:
                torch.distributed.broadcast(t, src=ps.get_pipeline_model_parallel_last_rank(),
                                            group=ps.get_pipeline_model_parallel_group())
            if self.dp > 1:
                parts = [torch.empty_like(t) for _ in range(self.dp)]
                torch.distributed.all_gather(parts, t, group=ps.get_data_parallel_group())
                t = torch.cat(parts)
            full = torch.zeros((batch.num_rows, batch.width), dtype=torch.float32)
            full[:, :width] = t.cpu()[:, : batch.width]
            out[k] = full
        return out

    def train_minibatch(self, batch: TensorBatch, loss_fn, metric_keys: tuple[str, ...]) -> dict[str, float]:
        """One optimizer update on one mini-batch (all DP ranks pass the same mini-batch; each takes its slice).
        `metric_keys[0]` is the loss: when it or the gradients are not finite the update is not applied
        (octomega.train.setup.step_if_finite; "skipped" 1.0), and the scheduler moves on regardless."""
        width = self.width(batch)
        mbs = micro_batches(self._dp_rows(batch), self.micro_batch_size, width)
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        lr = self.optimizer.param_groups[0]["lr"]
        results = self._run(mbs, loss_fn, forward_only=False, width=width)
        metrics = reduce_metrics(results, metric_keys)
        ok, grad_norm = step_if_finite(self.model, self.optimizer, metrics[metric_keys[0]])
        self.scheduler.step(1)
        metrics.update(grad_norm=float(grad_norm or 0.0), lr=lr, skipped=float(not ok))
        return metrics


def reduce_metrics(results: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """Each micro-batch reports {key: [sum, count]}: the ratio of totals over micro-batches and all ranks.
    Ranks without a loss (non-last pipeline stages) add zeros; TP copies scale both terms alike. The totals live on
    the collective's device (the rank's GPU under nccl, which cannot reduce CPU tensors)."""
    from octomega.runtime import collective_device

    device = collective_device()
    total = torch.zeros((len(keys), 2), dtype=torch.float64, device=device)
    for r in results:
        for i, k in enumerate(keys):
            total[i] += r[k].to(device=device, dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    return {k: float(total[i, 0] / total[i, 1].clamp(min=1e-12)) for i, k in enumerate(keys)}


def sum_and_count(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """A metric's [sum, count] (detached clones: the schedule scales the loss tensor in place)."""
    return torch.stack([x.detach().clone().float(), n.detach().clone().float()])


# ------------------------------------------------------------------------------------------ actor losses


POLICY_METRICS = ("pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "entropy", "ref_kl")


def actor_logprob_fn(temperature: float, raw: bool):
    """forward_only fn: log-probs at the sampling temperature (and, if `raw`, of the raw logits too)."""

    def fn(mb, logits):
        out = {"logp": next_token_logprobs(logits, mb["tokens"], temperature)[0]}
        if raw:
            out["logp_raw"] = next_token_logprobs(logits, mb["tokens"], 1.0)[0]
        return out

    return fn


def policy_loss_fn(algo, temperature: float):
    """The actor's per-micro-batch loss: clipped surrogate (+ KL to the reference) (- entropy bonus)."""

    def loss_fn(mb, logits):
        mask = mb["mask"]
        need_ent = True  # always measured; in the loss only with entropy_coef
        logp, ent = next_token_logprobs(logits, mb["tokens"], temperature, entropy=need_ent)
        pg, stats = algos.policy_loss(logp, mb["old_logp"], mb["adv"], clip_low=algo.clip_low,
                                      clip_high=algo.clip_high, clip_c=algo.clip_ratio_c)
        loss = pg
        if algo.entropy_coef:
            loss = loss - algo.entropy_coef * ent
        ref_kl = torch.zeros_like(logp)
        if "ref_logp" in mb:
            ref_kl = algos.kl_penalty(logp, mb["ref_logp"], algo.kl_loss_type)
            if algo.kl_loss_coef:
                loss = loss + algo.kl_loss_coef * ref_kl
        num, den = algos.agg_terms(loss, mask, algo.loss_agg_mode)
        tokens = mask.sum()
        metrics = {"pg_loss": sum_and_count(num, den),
                   "pg_clipfrac": sum_and_count((stats["clipped"] * mask).sum(), tokens),
                   "pg_clipfrac_lower": sum_and_count((stats["clipped_lower"] * mask).sum(), tokens),
                   "ppo_kl": sum_and_count((stats["approx_kl"] * mask).sum(), tokens),
                   "entropy": sum_and_count((ent.detach() * mask).sum(), tokens),
                   "ref_kl": sum_and_count((ref_kl.detach() * mask).sum(), tokens)}
        return num, den.round().to(torch.int), metrics

    return loss_fn
