"""Output layer + cross entropy in token chunks: the [tokens, vocab] logits never exist for the whole sequence.

Why: Megatron-Core 0.19's unfused loss (`tensor_parallel.vocab_parallel_cross_entropy`) takes the bf16 logits of
the output layer ([4096, 128256] per sequence at Llama-3 vocabulary: 1.05 GB), makes an fp32 copy (2.1 GB) and
keeps an fp32 softmax of the same size for the backward. Its fused variants keep the logits too. Here the output
layer's matmul and the loss run over chunks of `chunk_tokens` tokens: per chunk the logits (bf16, then fp32), the
log-sum-exp and the loss, and, when gradients are wanted, the gradient with respect to that chunk's logits, which
goes straight into the gradients of the hidden states and of the output weight. Nothing of the chunk is kept.

The gradient is computed in the forward pass (as Liger-Kernel's fused linear cross entropy does), so the
backward re-runs no matmul: it only scales. That requires the loss to be a weighted SUM of per-token losses with
weights known in the forward pass, which is octomega's per-token loss (sum of loss x loss_mask; Megatron then
divides the gradients by the global token count). So the function returns that sum, differentiable, and the
per-token losses, not differentiable (for logging and checks).

Tensor parallelism: the weight is this rank's vocabulary shard; hidden states are the full sequence on every rank
(the caller gathers them as ColumnParallelLinear does, whose backward sums the partial hidden-state gradients).
Per chunk three small all-reduces over the TP group (max, sum of exponentials, target logit) give every rank the
same loss, exactly as `vocab_parallel_cross_entropy`. Vocabulary padding rows (ids >= vocab_size) get
PAD_LOGIT, as the output-layer hook of llama.py gives them, so they take no probability mass.

Memory per micro-batch: about chunk_tokens x vocab/TP x 6 bytes of transients, the fp32 gradient of the output
weight (vocab/TP x hidden x 4 bytes: 1.05 GB at 1B, kept from forward to backward) and the hidden-state gradient.
Against the unfused loss at seq 4096, vocab 128256: ~5 GB less at the peak.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from octomega.model.llama import PAD_LOGIT


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, weights, vocab_size, vocab_start, chunk, group, want_grad):
        # hidden [T, h]; weight [V_local, h]; labels [T] global ids; weights [T] float (the loss mask).
        tokens, v_local = hidden.shape[0], weight.shape[0]
        tp = dist.get_world_size(group) if group is not None else 1
        losses = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
        pad_from = max(vocab_size - vocab_start, 0)  # first local column that is vocabulary padding
        for s in range(0, tokens, chunk):
            e = min(s + chunk, tokens)
            h = hidden[s:e]
            logits = torch.matmul(h, weight.t()).float()  # [c, V_local]
            if pad_from < v_local:
                logits[:, pad_from:] = PAD_LOGIT
            local = labels[s:e] - vocab_start
            inside = (local >= 0) & (local < v_local)
            local = torch.where(inside, local, torch.zeros_like(local))
            mx = logits.max(dim=-1).values
            if tp > 1:
                dist.all_reduce(mx, op=dist.ReduceOp.MAX, group=group)
            logits.sub_(mx.unsqueeze(-1))
            target = torch.where(inside, logits.gather(1, local.unsqueeze(1)).squeeze(1), torch.zeros_like(mx))
            exp = logits.exp_()  # in place: the shifted logits are not needed any more
            sum_exp = exp.sum(dim=-1)
            if tp > 1:
                dist.all_reduce(sum_exp, group=group)
                dist.all_reduce(target, group=group)
            losses[s:e] = torch.log(sum_exp) - target
            if want_grad:
                # d(sum_t w_t loss_t) / d logits = w_t (softmax - onehot), on this rank's vocabulary columns
                g = exp.div_(sum_exp.unsqueeze(-1))
                g.scatter_add_(1, local.unsqueeze(1), -inside.to(g.dtype).unsqueeze(1))  # no host sync
                g.mul_(weights[s:e].unsqueeze(-1))
                g = g.to(hidden.dtype)
                grad_hidden[s:e] = torch.matmul(g, weight)
                grad_weight += torch.matmul(g.t(), h)
        total = (losses * weights).sum()
        ctx.mark_non_differentiable(losses)
        if want_grad:
            ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.want_grad = want_grad
        ctx.weight_dtype = weight.dtype
        return total, losses

    @staticmethod
    def backward(ctx, grad_total, _grad_losses):
        if not ctx.want_grad:
            raise RuntimeError("linear_cross_entropy ran without gradients (under no_grad) but backward was called")
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_total.to(torch.float32)
        return ((grad_hidden * scale.to(grad_hidden.dtype)), (grad_weight * scale).to(ctx.weight_dtype),
                None, None, None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *,
                         vocab_size: int, vocab_start: int = 0, chunk_tokens: int = 1024,
                         group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over tokens of weights x cross entropy, per-token cross entropy [T] fp32, no gradient).

    hidden [T, h] and weight [V_local, h] in the model's dtype; labels [T] int (ids of the whole vocabulary);
    weights [T] (the loss mask). `vocab_start`: the first vocabulary id of this rank's weight rows; `group`: the
    tensor-parallel group (None or size 1: no communication)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} "
                         "must be [tokens, h] and [vocab, h]")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens}: must be >= 1")
    want_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, labels.reshape(-1), weights.reshape(-1).float(), vocab_size,
                                     vocab_start, chunk_tokens, group, want_grad)


class ChunkedLossProcessor:
    """A GPTModel `output_processor`: replaces the output layer + loss of the last pipeline stage.

    Returns (weighted loss sum, per-token losses [b, s]) where Megatron would return per-token losses [b, s];
    octomega's loss function takes either (octomega.train.loop._loss_func)."""

    def __init__(self, vocab_size: int, chunk_tokens: int):
        self.vocab_size = vocab_size
        self.chunk_tokens = chunk_tokens

    def __call__(self, *, hidden_states, output_layer, output_weight, labels, loss_mask, config, **_):
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel.mappings import (
            copy_to_tensor_model_parallel_region,
            gather_from_sequence_parallel_region,
        )

        if labels is None or loss_mask is None:
            raise ValueError("the chunked loss needs labels and loss_mask (model.cross_entropy=chunked trains only)")
        if getattr(config, "use_mup", False):
            raise ValueError("model.cross_entropy=chunked does not apply MuP logit scaling")
        weight = output_weight if output_weight is not None else output_layer.weight
        group = parallel_state.get_tensor_model_parallel_group()
        tp = parallel_state.get_tensor_model_parallel_world_size()
        # What ColumnParallelLinear does with its input: the full sequence on every TP rank, and in the
        # backward the sum (or reduce-scatter) of each rank's partial gradient.
        if output_layer.sequence_parallel:
            hidden_states = gather_from_sequence_parallel_region(hidden_states, True, group)
        elif tp > 1:
            hidden_states = copy_to_tensor_model_parallel_region(hidden_states, group)
        s, b, h = hidden_states.shape
        rank = parallel_state.get_tensor_model_parallel_rank()
        total, losses = linear_cross_entropy(
            hidden_states.reshape(s * b, h), weight, labels.t().reshape(-1), loss_mask.t().reshape(-1),
            vocab_size=self.vocab_size, vocab_start=rank * weight.shape[0], chunk_tokens=self.chunk_tokens,
            group=group if tp > 1 else None)
        return total, losses.reshape(s, b).t()
