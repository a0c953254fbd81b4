"""The algorithms against hand-computed values, and against verl's core_algos where verl is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from octomega.rl import algos


# ------------------------------------------------------------------------------------------ hand-computed


def test_grpo_advantages_by_hand():
    # group 0: [1, -1, -1, 1]: mean 0, unbiased std sqrt(4/3); group 1 all equal; group 2: mean -0.5, std 1
    rewards = torch.tensor([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, -1, 1], dtype=torch.float32)
    group = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    adv = algos.grpo_advantages(rewards, group, norm_by_std=True, eps=1e-6)
    s = 1 / (math.sqrt(4 / 3) + 1e-6)
    expected = [s, -s, -s, s, 0, 0, 0, 0, -0.5 / (1 + 1e-6), -0.5 / (1 + 1e-6), -0.5 / (1 + 1e-6), 1.5 / (1 + 1e-6)]
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)
    dr = algos.grpo_advantages(rewards, group, norm_by_std=False)  # Dr.GRPO: no division by the std
    assert torch.allclose(dr, torch.tensor([1, -1, -1, 1, 0, 0, 0, 0, -0.5, -0.5, -0.5, 1.5]))
    assert algos.zero_advantage_share(adv, group) == pytest.approx(1 / 3)


def test_grpo_single_sample_group_gets_its_reward():
    adv = algos.grpo_advantages(torch.tensor([0.7]), torch.tensor([3]))
    assert adv.item() == pytest.approx(0.7 / (1 + 1e-6))  # verl: mean 0, std 1 for a group of one


def test_gae_gamma_lambda_one_is_reward_minus_value():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]], dtype=torch.float32)
    values = torch.tensor([[0.5, 0.2, -0.1, 9.0], [7.0, 0.5, 0.25, 3.0]])
    rewards = algos.outcome_token_rewards(torch.tensor([1.0, 1.0]), mask)
    assert rewards.tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]  # on the last response token
    adv, ret = algos.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.8, 1.1, 0.0], [0.0, 0.5, 0.75, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]]))


def test_gae_discounted_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, -0.1]])
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    adv, ret = algos.gae(rewards, values, mask, gamma=0.5, lam=0.5)
    # t=2: 1 + 0 - (-0.1) = 1.1; t=1: 0.5*(-0.1) - 0.2 + 0.25*1.1 = 0.025; t=0: 0.5*0.2 - 0.5 + 0.25*0.025
    assert torch.allclose(adv, torch.tensor([[-0.39375, 0.025, 1.1]]))
    assert torch.allclose(ret, torch.tensor([[0.10625, 0.225, 1.0]]))


def test_policy_clipping_by_hand():
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0]])
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5, 5.0]])
    old = torch.zeros_like(ratio)
    loss, st = algos.policy_loss(ratio.log(), old, adv, clip_low=0.2, clip_high=0.2, clip_c=3.0)
    # A>0: max(-A r, -A clip(r)); A<0 additionally capped at -A * 3 (dual clip)
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.5, 1.5, 0.8, 3.0]]), atol=1e-6)
    assert st["clipped"].tolist() == [[1, 0, 0, 1, 0]]
    assert st["clipped_lower"].tolist() == [[0, 0, 0, 0, 1]]
    loss_nodual, _ = algos.policy_loss(ratio.log(), old, adv, clip_low=0.2, clip_high=0.2, clip_c=0)
    assert loss_nodual[0, 4].item() == pytest.approx(5.0)
    # asymmetric clip: upper 0.28 lets ratio 1.5 contribute up to 1.28
    loss_hi, _ = algos.policy_loss(ratio.log(), old, adv, clip_low=0.2, clip_high=0.28)
    assert loss_hi[0, 0].item() == pytest.approx(-1.28)


def test_paper_recipes_policy_loss_is_the_authors_forks():
    """The authors' fork (upstream verl of 2025-03, before dual clip) computes masked_mean(max(-A r, -A clip(r, 0.8,
    1.2))) with no lower bound for A < 0; the paper recipes' algo settings give exactly that, by hand."""
    import recipes

    a = recipes.get("llama32_3b_rl_grpo").algo
    assert (a.clip_low, a.clip_high, a.clip_ratio_c, a.loss_agg_mode) == (0.2, 0.2, 0.0, "token-mean")
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0, -2.0]])
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5, 5.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss, st = algos.policy_loss(ratio.log(), torch.zeros_like(ratio), adv, clip_low=a.clip_low,
                                 clip_high=a.clip_high, clip_c=a.clip_ratio_c)
    # per token: max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; max(1.5, 1.2) = 1.5; max(0.5, 0.8) = 0.8;
    # max(5.0, 1.2) = 5.0 (with dual clip 3 it would be capped at 3.0)
    assert torch.allclose(loss[0, :5], torch.tensor([-1.2, -0.5, 1.5, 0.8, 5.0]), atol=1e-6)
    assert algos.agg_loss(loss, mask, a.loss_agg_mode).item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8 + 5.0) / 5)
    assert algos.masked_mean(st["clipped"], mask).item() == pytest.approx(2 / 5)  # verl's pg_clipfrac
    assert st["clipped_lower"].sum().item() == 0


def test_loss_aggregation_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)  # row 3: no tokens
    assert algos.agg_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert algos.agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert algos.agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    num, den = algos.agg_terms(loss, mask, "seq-mean-token-sum")
    assert (num.item(), den.item()) == (10.0, 2.0)
    with pytest.raises(ValueError, match="aggregation"):
        algos.agg_terms(loss, mask, "token-sum-everything")


@pytest.mark.parametrize("mode", algos.AGG_MODES)
def test_split_terms_add_up_to_the_whole(mode):
    """Numerators and denominators of any split of the rows sum to the whole batch's: what makes gradients
    independent of micro-batching and DP once Megatron divides by the total."""
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(8, 6, generator=g)
    mask = (torch.rand(8, 6, generator=g) > 0.3).float()
    whole = algos.agg_loss(loss, mask, mode)
    parts = [algos.agg_terms(loss[i:i + 2], mask[i:i + 2], mode) for i in range(0, 8, 2)]
    assert (sum(n for n, _ in parts) / sum(d for _, d in parts)).item() == pytest.approx(whole.item(), rel=1e-6)


def test_value_loss_by_hand():
    v = torch.tensor([[1.0, 0.2]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[2.0, 0.3]])
    loss, clipped = algos.value_loss(v, old, ret, clip=0.5)
    assert torch.allclose(loss, torch.tensor([[0.5 * 2.25, 0.5 * 0.01]]))
    assert clipped.tolist() == [[1.0, 0.0]]


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert algos.kl_penalty(lp, ref, "kl").item() == pytest.approx(1.0)
    assert algos.kl_penalty(lp, ref, "abs").item() == pytest.approx(1.0)
    assert algos.kl_penalty(lp, ref, "mse").item() == pytest.approx(0.5)
    assert algos.kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(math.exp(-1) + 1 - 1)


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = algos.masked_whiten(x, m)
    assert torch.allclose(w[0, :3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)  # unbiased var of 1,2,3 is 1


# --------------------------------------------------------------------------------------------- verl oracle


def _random_batch(seed=0, n=12, t=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, t)
    for i in range(n):  # a contiguous response of 1..t-1 tokens after 0..2 masked (prompt) tokens
        start = int(torch.randint(0, 3, (1,), generator=g))
        mask[i, start:start + int(torch.randint(1, t - start + 1, (1,), generator=g))] = 1
    return g, mask


def test_grpo_matches_verl(verl_algos):
    g, mask = _random_batch()
    rewards = torch.randint(0, 2, (12,), generator=g).float() * 2 - 1
    index = np.array([i // 4 for i in range(12)])
    for norm in (True, False):
        ref, _ = verl_algos.compute_grpo_outcome_advantage(algos.outcome_token_rewards(rewards, mask), mask, index,
                                                           norm_adv_by_std_in_grpo=norm)
        mine = algos.grpo_advantages(rewards, torch.tensor(index), norm_by_std=norm)[:, None] * mask
        assert torch.allclose(mine, ref, atol=1e-5)


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.95)])
def test_gae_matches_verl(verl_algos, gamma, lam):
    g, mask = _random_batch(1)
    values = torch.randn(mask.shape, generator=g)
    rewards = algos.outcome_token_rewards(torch.randn(12, generator=g), mask)
    ref_adv, ref_ret = verl_algos.compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    adv, ret = algos.gae(rewards, values, mask, gamma=gamma, lam=lam)
    assert torch.allclose(algos.masked_whiten(adv, mask) * mask, ref_adv * mask, atol=1e-5)
    assert torch.allclose(ret * mask, ref_ret * mask, atol=1e-5)


@pytest.mark.parametrize("mode", algos.AGG_MODES)
def test_policy_loss_matches_verl(verl_algos, mode):
    g, mask = _random_batch(2)
    old = -torch.rand(mask.shape, generator=g) * 3
    new = old + torch.randn(mask.shape, generator=g) * 0.4
    adv = torch.randn(mask.shape, generator=g)
    ref_loss, ref_clip, ref_kl, ref_lower = verl_algos.compute_policy_loss(
        old, new, adv, mask, cliprange=0.2, clip_ratio_c=3.0, loss_agg_mode=mode)
    loss, st = algos.policy_loss(new, old, adv, clip_low=0.2, clip_high=0.2, clip_c=3.0)
    assert algos.agg_loss(loss, mask, mode).item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-6)
    assert algos.masked_mean(st["clipped"], mask).item() == pytest.approx(float(ref_clip), abs=1e-6)
    assert algos.masked_mean(st["approx_kl"], mask).item() == pytest.approx(float(ref_kl), abs=1e-5)
    assert algos.masked_mean(st["clipped_lower"], mask).item() == pytest.approx(float(ref_lower), abs=1e-6)


@pytest.mark.parametrize("mode", algos.AGG_MODES)
def test_value_loss_matches_verl(verl_algos, mode):
    g, mask = _random_batch(3)
    values, old, ret = (torch.randn(mask.shape, generator=g) for _ in range(3))
    ref_loss, ref_clip = verl_algos.compute_value_loss(values, ret, old, mask, cliprange_value=0.5, loss_agg_mode=mode)
    loss, clipped = algos.value_loss(values, old, ret, clip=0.5)
    assert algos.agg_loss(loss, mask, mode).item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert algos.masked_mean(clipped, mask).item() == pytest.approx(float(ref_clip), abs=1e-6)


@pytest.mark.parametrize("kind", ["kl", "abs", "mse", "low_var_kl"])
def test_kl_matches_verl(verl_algos, kind):
    g = torch.Generator().manual_seed(4)
    lp, ref = -torch.rand(5, 6, generator=g) * 4, -torch.rand(5, 6, generator=g) * 4
    assert torch.allclose(algos.kl_penalty(lp, ref, kind), verl_algos.kl_penalty(lp, ref, kind), atol=1e-6)
