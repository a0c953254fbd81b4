"""The training loop: Megatron DDP + optimizer + pipeline schedules, one flat loop with callbacks around it
(when to stop and save, signals, the status file: the run skeleton of octomega/train/run.py, shared with RL).

Loss normalisation: per token over the whole global batch (Megatron's `calculate_per_token_loss`): each
micro-batch returns its summed loss and token count, and finalize_model_grads divides the gradients by the
global token count. Gradients are therefore the same whether a global batch runs as 1 or 4 micro-batches, or
on 1 or 2 data-parallel ranks.
"""

from __future__ import annotations

import json
from functools import partial

import torch

from octomega.config import RunConfig, validate
from octomega.runtime import init_distributed, use_gpu
from octomega import checkpoint as ckpt
from octomega.train.callbacks import MetricsLogger, Throughput
from octomega.train.data import blend_fingerprint, build_datasets, train_iterator, valid_iterator
from octomega.train.flops import detect_peak_flops, flops_per_batch
from octomega.train.resume import check_resume_compatible, identity
from octomega.train.run import ExitSignal, RunControl, finite, open_run_dir, start_logging
from octomega.train.setup import build_ddp_model_and_optimizer, precision_dtype, step_if_finite
from octomega.train.schedule import budget, build_scheduler, check_resumed_scheduler, lr_bounds


def _loss_func(loss_mask: torch.Tensor, output):
    """(summed loss, token count, logged). `output`: per-token losses [b, s] from Megatron's loss, or
    (sum of loss x mask, per-token losses) from model.cross_entropy=chunked (octomega.model.linear_ce)."""
    mask = loss_mask.reshape(-1).float()
    if isinstance(output, tuple):
        loss = output[0]
    else:
        loss = torch.sum(output.float().reshape(-1) * mask)
    tokens = mask.sum().to(torch.int)
    # The schedule may scale the returned loss in place: report a clone (docs/megatron_cpu.md, "Traps").
    return loss, tokens, {"lm loss": torch.stack([loss.detach().clone(), mask.sum().detach()])}


def forward_step(data_iterator, model, device, processor=None):
    """`processor`: a GPTModel output_processor computing the loss (model.cross_entropy=chunked), or None."""
    batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iterator).items()}
    if processor is None:
        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    else:
        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"],
                       loss_mask=batch["loss_mask"], output_processor=processor)
    return output, partial(_loss_func, batch["loss_mask"])


def _reduce_loss(losses: list[dict]) -> float:
    """Token-weighted mean loss of the global batch, the same number on every rank. The sums are made on the
    collective's device (octomega.runtime.collective_device): a rank without a loss (a non-last PP stage) has only
    the zeros built here, which nccl could not reduce on the CPU."""
    from octomega.runtime import collective_device

    device = collective_device()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for d in losses:
        total += d["lm loss"].to(device=device, dtype=torch.float64)
    torch.distributed.all_reduce(total)  # non-last PP stages add zeros; TP copies scale both terms alike
    return float(total[0] / total[1].clamp(min=1))


class Trainer:
    def __init__(self, cfg: RunConfig):
        from megatron.core import parallel_state as ps

        from octomega.model.llama import compile_layers, loss_processor

        # Handle SIGTERM/SIGUSR1 from the start: a signal during model build or checkpoint load must not kill
        # the run unsaved (it is acted on after the first step).
        self.signals = ExitSignal()
        self.rt = init_distributed(tp=cfg.parallel.tp, pp=cfg.parallel.pp, seed=cfg.train.seed)
        self.cfg = validate(cfg, self.rt.world_size)
        self.is_writer = self.rt.rank == 0
        self.run_dir = open_run_dir(cfg, is_writer=self.is_writer)
        self.save_dir = self.run_dir / "checkpoints"
        if self.is_writer:
            self.save_dir.mkdir(exist_ok=True)
        self.budget = budget(cfg)
        self.dtype = precision_dtype(cfg.train.precision, use_gpu())
        self.model, self.optimizer = build_ddp_model_and_optimizer(
            cfg.model, cfg.parallel, cfg.optim, dtype=self.dtype, on_gpu=use_gpu(), device=self.rt.device)
        model_cfg = self.model.module.octomega_model_config  # cfg.model with its HF config.json resolved
        self.loss_processor = loss_processor(model_cfg)
        compile_layers(self.model.module, model_cfg)
        self.dp_rank, self.dp = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.start_step, self.meta = self._restore()
        self.train_ds, self.valid_ds, self.blend, _ = build_datasets(
            cfg, self.budget.steps * cfg.train.global_batch_size, self.dp)
        if self.meta.get("resumed"):
            check_resume_compatible(self.meta, cfg, blend_fingerprint(self.blend))
        peak, low = lr_bounds(cfg, self.meta.get("stable_lr"))
        self.scheduler = build_scheduler(self.optimizer, cfg, peak, low)
        if self.meta.get("resumed"):
            self.scheduler.load_state_dict(self.meta["scheduler"])
            check_resumed_scheduler(self.scheduler, cfg, peak, low)
        self.peak_lr, self.min_lr = peak, low

    def _restore(self) -> tuple[int, dict]:
        """Resume this run, or start a branch from another run's checkpoint, or from HF weights."""
        cfg = self.cfg
        latest = ckpt.latest_complete(self.save_dir) if cfg.checkpoint.resume else None
        if latest is not None:
            saved = json.loads((latest / ckpt.META).read_text())
            same_layout = saved.get("layout") == [cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.dp]
            self._set_group_lr_bounds(saved)
            meta = ckpt.load_checkpoint(latest, self.model, optimizer=self.optimizer, load_rng=same_layout)
            self._print(f"resumed from {latest} (step {meta['iteration']})")
            return int(meta["iteration"]), {**meta, "resumed": True}
        if cfg.init.from_checkpoint:
            src = ckpt.resolve(cfg.init.from_checkpoint, cfg.init.iteration)
            src_meta = json.loads((src / ckpt.META).read_text())
            optimizer = None if cfg.init.reset_optimizer else self.optimizer
            self._set_group_lr_bounds(src_meta)
            ckpt.load_checkpoint(src, self.model, optimizer=optimizer)
            stable_lr = (src_meta.get("config") or {}).get("optim", {}).get("lr")
            kept = "weights" if cfg.init.reset_optimizer else "weights and Adam moments"
            self._print(f"branch from {src}: kept {kept}; reset iteration, consumed samples, data order, scheduler")
            return 0, {"stable_lr": stable_lr, "branched_from": str(src)}
        if cfg.init.hf_path:
            from octomega.convert import load_hf_into_model

            load_hf_into_model(cfg.init.hf_path, [self.model.module], optimizer=self.optimizer)
            self._print(f"initialised from Hugging Face weights {cfg.init.hf_path}")
        return 0, {}

    def _set_group_lr_bounds(self, saved_meta: dict) -> None:
        """Megatron matches loaded param groups by a key that includes max_lr/min_lr: use the saved values
        while loading (build_scheduler then sets this run's own)."""
        bounds = saved_meta.get("lr_bounds")
        if bounds:
            for group in self.optimizer.param_groups:
                group["max_lr"], group["min_lr"] = bounds

    def _print(self, msg: str) -> None:
        if self.is_writer:
            print(msg, flush=True)

    def _run_batches(self, iterator, num_microbatches: int, forward_only: bool):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        return get_forward_backward_func()(
            forward_step_func=partial(forward_step, device=self.rt.device, processor=self.loss_processor),
            data_iterator=iterator,
            model=[self.model], num_microbatches=num_microbatches, seq_length=self.cfg.train.seq_length,
            micro_batch_size=self.cfg.train.micro_batch_size, forward_only=forward_only)

    def validate(self) -> dict:
        self.model.eval()
        out = {}
        with torch.no_grad():
            for name, ds in self.valid_ds.items():
                it = valid_iterator(ds, self.cfg, dp=self.dp, dp_rank=self.dp_rank)
                out[f"valid_loss/{name}"] = _reduce_loss(self._run_batches(it, self.cfg.train.valid_batches, True))
        self.model.train()
        return out

    def save(self, step: int, control: RunControl) -> None:
        """Checkpoint `step`; weights that are not finite are not saved: the run has diverged (control)."""
        state = {"consumed_samples": step * self.cfg.train.global_batch_size,
                 "layout": [self.cfg.parallel.tp, self.cfg.parallel.pp, self.cfg.parallel.dp],
                 "stable_lr": self.peak_lr, "lr_bounds": [self.peak_lr, self.min_lr], "wandb_id": self.logger.wandb_id,
                 "skipped_steps": control.skipped_steps, **identity(self.cfg, self.blend)}
        try:
            path = ckpt.save_checkpoint(self.save_dir, step, self.model, optimizer=self.optimizer,
                                        scheduler=self.scheduler, state=state, config=self.cfg,
                                        keep_last=self.cfg.checkpoint.keep_last)
        except ckpt.NonFiniteWeights:
            control.weights_not_finite(step)
            return
        self._print(f"saved checkpoint {path}")

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches of this DP rank per optimizer step."""
        return self.cfg.train.global_batch_size // (self.cfg.train.micro_batch_size * self.dp)

    def data_iterator(self, start_step: int):
        """This rank's training micro-batches from `start_step` on (resume: the same order as an uninterrupted run)."""
        return train_iterator(self.train_ds, self.cfg, start_step=start_step, steps=self.budget.steps, dp=self.dp,
                              dp_rank=self.dp_rank)

    def train_step(self, data_iterator, num_microbatches: int) -> tuple[float, float | None, bool]:
        """One optimizer step over `num_microbatches` micro-batches of this rank: (global-batch loss, grad norm,
        ok). A method of its own so that bench/train_throughput.py times exactly the step train() runs.
        ok=False: the loss or the gradients were not finite and the update was not applied (step_if_finite); the
        step still used up its batch and moves the scheduler on, so that step N always trains on batch N at the LR
        of step N (Megatron-LM holds its scheduler back on a skipped step instead)."""
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self._run_batches(data_iterator, num_microbatches, False)
        loss = _reduce_loss(losses)
        ok, grad_norm = step_if_finite(self.model, self.optimizer, loss)
        self.scheduler.step(1)
        return loss, grad_norm, ok

    def train(self) -> dict:
        cfg, b = self.cfg, self.budget
        micro_per_step = self.micro_batches_per_step
        self.logger = start_logging(MetricsLogger, cfg, self.run_dir, total_steps=b.steps, is_writer=self.is_writer,
                                    wandb_id=self.meta.get("wandb_id"),
                                    headline=f"training {cfg.name}: {b.describe()}; starting at step {self.start_step}",
                                    start_step=self.start_step)
        flops = flops_per_batch(cfg.model, cfg.train.seq_length, cfg.train.global_batch_size)
        speed = Throughput(flops, b.tokens_per_step, self.rt.world_size, detect_peak_flops())
        data = self.data_iterator(self.start_step)
        control = RunControl(self.run_dir, is_writer=self.is_writer, status_file="train_status.json",
                             start_step=self.start_step, total_steps=b.steps,
                             exit_after_steps=cfg.train.exit_after_steps, save_interval=cfg.checkpoint.save_interval,
                             signals=self.signals, on_nonfinite=cfg.train.on_nonfinite,
                             max_skipped_steps=cfg.train.max_skipped_steps,
                             skipped_steps=int(self.meta.get("skipped_steps", 0)), checkpoints=self.save_dir,
                             advice="Lower optim.lr (or lengthen optim.warmup_tokens) and train again in a new run "
                                    "directory, from the start or from a finite checkpoint (init.from_checkpoint=PATH)")
        step = self.start_step
        while control.running(step):
            lr = self.optimizer.param_groups[0]["lr"]
            loss, grad_norm, ok = self.train_step(data, micro_per_step)
            step += 1
            speed.step()
            nonfinite = not ok or not finite(loss, grad_norm)
            if nonfinite or step % cfg.logging.log_interval == 0 or step in (1, b.steps):
                self.logger.log(step, {"loss": loss, "lr": lr, "grad_norm": float(grad_norm or 0.0),
                                       "tokens": step * b.tokens_per_step, "skipped": not ok, **speed.report()})
            if nonfinite:
                control.nonfinite(step, loss=loss, grad_norm=grad_norm)
                if control.diverged:
                    break
            if self.valid_ds and control.due(step, cfg.train.valid_interval):
                self.logger.log(step, {**self.validate(), "tokens": step * b.tokens_per_step}, kind="valid")
            control.check_stop()
            if control.should_save(step):
                self.save(step, control)
        if control.final_save_due(step):
            self.save(step, control)
        control.close(self.logger)
        return control.write_status(step)


def run_training(cfg: RunConfig) -> dict:
    return Trainer(cfg).train()
