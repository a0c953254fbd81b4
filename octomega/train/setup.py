"""Build the trainable objects shared by pre-training and the RL stage: model (Megatron DDP), optimizer, dtype; and
the optimizer step they share, which never applies a non-finite update (step_if_finite)."""

from __future__ import annotations

import math

import torch

from octomega.config import ModelConfig, OptimConfig, ParallelConfig


def precision_dtype(precision: str, on_gpu: bool) -> torch.dtype:
    """train.precision as a parameter dtype: "auto" is bf16 (with fp32 master weights) on a GPU and fp32 on a CPU."""
    if precision == "auto":
        precision = "bf16" if on_gpu else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def build_ddp_model_and_optimizer(model_cfg: ModelConfig, parallel: ParallelConfig, optim: OptimConfig, *,
                                  dtype: torch.dtype, on_gpu: bool, device: torch.device,
                                  per_token_loss: bool = True, post_process_hook=None):
    """(DDP-wrapped GPTModel, Megatron optimizer). `per_token_loss`: the loss function returns (sum, tokens)
    and gradients are divided by the global token count (Megatron's calculate_per_token_loss), so they do not
    depend on how a batch is split into micro-batches or data-parallel ranks.
    `post_process_hook(model)`: called on the bare GPTModel before wrapping (e.g. to add a value head)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from octomega.model import build_model

    model = build_model(model_cfg, parallel, dtype=dtype, on_gpu=on_gpu, device=device)
    if post_process_hook is not None:
        post_process_hook(model)
    model.config.calculate_per_token_loss = per_token_loss
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                               use_distributed_optimizer=parallel.distributed_optimizer)
    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=optim.lr or 0.0, min_lr=0.0, weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1, adam_beta2=optim.adam_beta2, adam_eps=optim.adam_eps,
        clip_grad=optim.clip_grad, bf16=dtype == torch.bfloat16, params_dtype=dtype,
        use_distributed_optimizer=parallel.distributed_optimizer), [ddp])
    model.config.no_sync_func = ddp.no_sync
    model.config.finalize_model_grads_func = finalize_model_grads
    return ddp, optimizer


def step_if_finite(model, optimizer, loss: float | None) -> tuple[bool, float | None]:
    """Megatron's optimizer.step() on this step's gradients, unless the step's `loss` (the same on every rank) or its
    gradients (on any rank) are not finite: then nothing changes (weights, Adam moments and step count), and every
    rank decides alike. Returns (applied, grad norm): the norm before clipping, as optimizer.step() reports it
    (None when it measures none: fp32 without clipping).

    Megatron's optimizer does not refuse such a step here: its found-inf check runs only with a loss scaler (fp16, or
    an explicit loss_scale), which neither our fp32 nor our bf16 uses, so it would clip by a NaN norm and write NaN
    into every weight. Megatron-LM instead raises on a NaN loss or gradient (check_for_nan_in_loss_and_grad). The
    gradients are checked in DDP's gradient buffers after their reduction (one float64 sum, one all-reduce); a
    non-finite step's grad norm is then measured by the optimizer without stepping. A step whose gradients are
    finite but whose norm overflows fp32 is applied by Megatron with its gradients clipped to zero; the loops then
    count it as non-finite all the same (its grad norm is inf)."""
    from octomega.checkpoint import all_finite

    buffers = [*model.buffers, *model.expert_parallel_buffers]  # Megatron DDP's gradient buffers
    grads_ok = all_finite([b.grad_data for b in buffers])  # every rank calls it, whatever the loss
    if grads_ok and (loss is None or math.isfinite(loss)):
        ok, grad_norm, _ = optimizer.step()
        return ok, grad_norm
    optimizer.prepare_grads()
    return False, float(optimizer.get_grad_norm())
