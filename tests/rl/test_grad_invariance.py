"""The loss normalisation: a mini-batch's gradients do not depend on how it is split into micro-batches or
data-parallel ranks, and equal plain autograd on the whole mini-batch, for the actor (clipped surrogate +
entropy + KL) and the critic (clipped value loss), in every aggregation mode. TP=2 gives TP=1's log-probs,
entropies and gradients, and the weight stream is gathered across TP. Two gloo launches."""

from __future__ import annotations

import pytest
import torch

from octomega.convert.random_llama import tiny_shapes, write_random_llama
from octomega.rl import algos
from octomega.testing import run_distributed
from rl_helpers import dist2_worker, grads_worker, read_safetensors

pytestmark = [pytest.mark.dist, pytest.mark.slow]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_random_llama(tmp_path_factory.mktemp("rl_grads") / "m", tiny_shapes()["gqa2_untied_scaled"],
                              dtype=torch.float32, seed=3)


@pytest.fixture(scope="module")
def grads(hf_dir):
    dp1 = run_distributed(grads_worker, 1, args=(hf_dir, (8, 2)), timeout=600)[0]  # 1 and 4 micro-batches
    both = run_distributed(dist2_worker, 2, args=(hf_dir, (4, 1)), timeout=900)  # per rank: 1 and 4
    return dp1, [b[0] for b in both], [b[1] for b in both]


def _t(x):
    return torch.from_numpy(x)


@pytest.mark.parametrize("kind", ["actor", "critic"])
@pytest.mark.parametrize("mode", algos.AGG_MODES)
def test_same_gradients_for_any_split(grads, kind, mode):
    dp1, dp2, _ = grads
    ref = _t(dp1[(kind, mode, "reference")])
    assert ref.abs().max() > 0
    assert dp1[(kind, mode, 2, "n_micro")] == 4 and dp2[0][(kind, mode, 1, "n_micro")] == 4
    candidates = {"dp1 x 1 micro": dp1[(kind, mode, 8)], "dp1 x 4 micro": dp1[(kind, mode, 2)],
                  "dp2 x 1 micro (rank 0)": dp2[0][(kind, mode, 4)], "dp2 x 4 micro (rank 0)": dp2[0][(kind, mode, 1)],
                  "dp2 x 4 micro (rank 1)": dp2[1][(kind, mode, 1)]}
    for name, g in candidates.items():
        g = _t(g)
        tol = 1e-5 * float(ref.abs().max())  # fp32 summation order differs between the splits
        assert torch.allclose(g, ref, rtol=1e-4, atol=tol), f"{name}: max diff {(g - ref).abs().max():.3e}"


def test_aggregation_modes_really_differ(grads):
    """Guards the test above: the modes give different gradients on this batch (rows of unequal lengths)."""
    dp1, _, _ = grads
    g = [_t(dp1[("actor", m, "reference")]) for m in algos.AGG_MODES]
    assert not torch.allclose(g[0], g[1]) and not torch.allclose(g[1], g[2])


def test_tensor_parallel_logprobs_and_stream(grads, hf_dir):
    out = grads[2]
    source = read_safetensors(hf_dir)
    for rank in range(2):
        tp1, tp2 = out[rank][1], out[rank][2]
        for key in ("logp", "entropy", "norm_grad"):  # norm_grad: backward through the TP reductions
            assert torch.allclose(_t(tp1[key]), _t(tp2[key]), atol=1e-5), key
        assert _t(tp1["logp"]).abs().sum() > 0
        for name, t in tp2["stream"]:  # each rank's engine gets the full (gathered) tensors
            assert torch.equal(_t(t), source[name]), name
        assert [n for n, _ in tp2["stream"]] == [n for n, _ in tp1["stream"]]
