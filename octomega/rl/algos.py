"""The RL algorithms as pure tensor functions, with verl's semantics (verl/trainer/ppo/core_algos.py).

Shapes: per-sequence tensors are [N]; per-token tensors are [N, T] with a 0/1 `mask` marking response tokens.
tests/rl/test_algos.py checks every function against hand-computed values and, where verl is installed,
against verl's own functions.

Loss aggregation returns (numerator, denominator) rather than a mean, because Megatron's per-token loss
normalisation (`calculate_per_token_loss`) sums the numerators of all micro-batches and data-parallel ranks and
divides the gradients by the summed denominators: the loss is then exactly the mini-batch's, whatever the split.
    token-mean           sum over tokens / number of tokens in the mini-batch
    seq-mean-token-mean  mean over sequences of (mean over each sequence's tokens)
    seq-mean-token-sum   mean over sequences of (sum over each sequence's tokens)
Sequences without any response token are left out of the sequence counts (as verl does).
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


# ----------------------------------------------------------------------------------------------- advantages


def grpo_advantages(rewards: torch.Tensor, group: torch.Tensor, *, norm_by_std: bool = True,
                    eps: float = 1e-6) -> torch.Tensor:
    """Outcome advantages per sequence: reward minus its group's mean [divided by the group's std + eps].

    `group` [N] holds a prompt id per sequence. The std is the unbiased sample std (torch.std, as verl); a group
    of one sequence gets mean 0 and std 1 (verl's convention). Returns [N]."""
    rewards = rewards.double()
    adv = torch.empty_like(rewards)
    for g in torch.unique(group):
        idx = (group == g).nonzero(as_tuple=True)[0]
        r = rewards[idx]
        mean, std = (r.mean(), r.std()) if len(idx) > 1 else (r.new_tensor(0.0), r.new_tensor(1.0))
        adv[idx] = (r - mean) / (std + eps) if norm_by_std else r - mean
    return adv.float()


def zero_advantage_share(adv: torch.Tensor, group: torch.Tensor, tol: float = 1e-8) -> float:
    """Share of groups whose advantages are all zero (every sample got the same reward: no learning signal)."""
    groups = torch.unique(group)
    zero = sum(bool((adv[group == g].abs() <= tol).all()) for g in groups)
    return zero / max(len(groups), 1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries, var unbiased (verl's masked_whiten)."""
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = (((x - mean) ** 2) * mask).sum() / n * (n / (n - 1).clamp(min=1))
    return (x - mean) * torch.rsqrt(var + eps)


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens of each row (verl's compute_gae_advantage_return,
    without its whitening: see `masked_whiten`). Tokens outside the mask are skipped: the recursion passes over
    them unchanged. Returns (advantages, returns = advantages + values), both [N, T], zero outside the mask."""
    mask = mask.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])
    last = torch.zeros_like(values[:, 0])
    out = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        new = delta + gamma * lam * last
        next_value = values[:, t] * m + (1 - m) * next_value
        last = new * m + (1 - m) * last
        out[:, t] = last
    returns = out + values
    return out * mask, returns * mask


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] sequence rewards -> [N, T] token rewards: the reward on each row's last response token (verl)."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    has = mask.sum(-1) > 0
    last = mask.shape[1] - 1 - torch.flip(mask, dims=[1]).float().argmax(-1)
    out[has, last[has]] = rewards[has].float()
    return out


# ---------------------------------------------------------------------------------------------------- losses


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, *, clip_low: float,
                clip_high: float, clip_c: float = 3.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss (verl's compute_policy_loss_vanilla before aggregation).

    loss = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), r = exp(logp - old_logp); for A < 0 the loss is
    further capped at -A * clip_c (dual clip; clip_c = 0 turns it off). Returns (loss [N, T], per-token
    indicators: clipped (the clipped term won), clipped_lower (the dual clip bound), approx_kl = old - new)."""
    neg_kl = torch.clamp(logp - old_logp, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    loss1 = -adv * ratio
    loss2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    stats = {"clipped": torch.gt(loss2, loss1).float(), "approx_kl": -neg_kl.detach()}
    if clip_c:
        loss3 = -adv * clip_c
        dual = torch.minimum(loss3, clipped)
        stats["clipped_lower"] = (torch.gt(clipped, loss3) & (adv < 0)).float()
        return torch.where(adv < 0, dual, clipped), stats
    stats["clipped_lower"] = torch.zeros_like(ratio)
    return clipped, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped value loss 0.5 * max((v - R)^2, (clip(v, v_old +- clip) - R)^2) (verl's
    compute_value_loss before aggregation; verl applies the 0.5 after aggregating, the same thing).
    Returns (loss [N, T], clipped indicator [N, T])."""
    clipped_v = torch.clamp(values, old_values - clip, old_values + clip)
    l1 = (values - returns) ** 2
    l2 = (clipped_v - returns) ** 2
    return 0.5 * torch.maximum(l1, l2), torch.gt(l2, l1).float()


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference (verl's kl_penalty; Schulman's k1/k2/k3)."""
    if kind == "kl":
        return logp - ref_logp
    if kind == "abs":
        return (logp - ref_logp).abs()
    if kind == "mse":
        return 0.5 * (logp - ref_logp).square()
    if kind == "low_var_kl":
        kl = torch.clamp(ref_logp - logp, min=-20, max=20)
        return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)
    raise ValueError(f"unknown KL estimator {kind!r}")


def agg_terms(loss: torch.Tensor, mask: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) of a loss aggregation over the rows given (see the module docstring)."""
    mask = mask.to(loss.dtype)
    if mode == "token-mean":
        return (loss * mask).sum(), mask.sum()
    tokens = mask.sum(-1)
    rows = (tokens > 0).to(loss.dtype)
    per_seq = (loss * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / tokens.clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"unknown loss aggregation mode {mode!r}; choose one of {AGG_MODES}")
    return (per_seq * rows).sum(), rows.sum()


def agg_loss(loss: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The aggregated loss of one whole mini-batch (numerator / denominator)."""
    num, den = agg_terms(loss, mask, mode)
    return num / den.clamp(min=1)
