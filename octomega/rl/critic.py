"""PPO's critic: the actor's network with a fresh scalar value head, and its value loss.

Choice: the critic is a GPTModel of the actor's shape built with UNTIED embeddings whose output layer (the
[vocab x hidden] projection) is replaced, before DDP wraps it, by `ValueHead`: a fresh linear map hidden -> 1
(normal(0, critic.head_init_std) weights, zero bias). The body (embedding, layers, final norm) is copied from the
actor's weights. GPTModel then returns [b, s, 1] values where the actor returns logits, so the critic runs
through the same schedules, checkpoints (dist_checkpointing saves the head as a replicated tensor) and
parallel layouts as the actor. Untied, because a tied output layer is one parameter with the embedding (and, at
PP > 1, synchronised with the first stage): the head must be a parameter of its own.

The value of a response token t is the head's output at position t - 1: the state before t was emitted (verl's
convention), so values align with log-probabilities.
"""

from __future__ import annotations

import copy

import torch

from octomega.rl import algos
from octomega.rl.actor import shift_right, sum_and_count

VALUE_METRICS = ("vf_loss", "vf_clipfrac", "vpred_mean")


class ValueHead(torch.nn.Module):
    """Stands in for GPTModel.output_layer: hidden states [s, b, h] -> ([s, b, 1], None). Its parameters are
    named `weight` [1, h] and `bias` [1], as the output layer's, which GPTModel's checkpoint code expects."""

    def __init__(self, hidden: int, init_std: float, sequence_parallel: bool, dtype: torch.dtype):
        super().__init__()
        g = torch.Generator().manual_seed(0x5EED)  # the same fresh head on every rank
        self.weight = torch.nn.Parameter((torch.randn((1, hidden), generator=g) * init_std).to(dtype))
        self.bias = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        self.sequence_parallel = sequence_parallel

    def forward(self, hidden, weight=None, runtime_gather_output=None):
        if self.sequence_parallel:
            from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
        return torch.nn.functional.linear(hidden, self.weight, self.bias), None


def critic_model_config(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    cfg.tie_embeddings = False
    return cfg


def attach_value_head(init_std: float):
    """post_process_hook for build_ddp_model_and_optimizer: replace the output layer on the last stage."""

    def hook(model):
        if getattr(model, "post_process", False):
            c = model.config
            head = ValueHead(c.hidden_size, init_std, bool(c.sequence_parallel), c.params_dtype)
            # build_model has already moved the model to its device (the rank's GPU): the head goes there too
            model.output_layer = head.to(next(model.decoder.parameters()).device)

    return hook


@torch.no_grad()
def copy_body(actor_module, critic_module) -> int:
    """Copy every actor parameter the critic has (same name and shape) into the critic; returns how many.
    Both models are this rank's stage at the same TP/PP layout. The value head stays fresh."""
    actor = dict(actor_module.named_parameters())
    n = 0
    for name, p in critic_module.named_parameters():
        if name.startswith("output_layer."):
            continue
        src = actor.get(name)
        if src is None:
            raise RuntimeError(f"critic parameter {name} has no counterpart in the actor")
        if src.shape != p.shape:
            raise RuntimeError(f"critic parameter {name}: shape {list(p.shape)} vs actor {list(src.shape)}")
        p.copy_(src)
        n += 1
    return n


def values_fn(mb, output):
    """forward_only fn: values aligned with the tokens they precede."""
    return {"values": shift_right(output.squeeze(-1).float())}


def value_loss_fn(algo, value_clip: float):
    def loss_fn(mb, output):
        mask = mb["mask"]
        v = shift_right(output.squeeze(-1).float())
        loss, clipped = algos.value_loss(v, mb["values"], mb["returns"], clip=value_clip)
        num, den = algos.agg_terms(loss, mask, algo.loss_agg_mode)
        tokens = mask.sum()
        metrics = {"vf_loss": sum_and_count(num, den), "vf_clipfrac": sum_and_count((clipped * mask).sum(), tokens),
                   "vpred_mean": sum_and_count((v.detach() * mask).sum(), tokens)}
        return num, den.round().to(torch.int), metrics

    return loss_fn
