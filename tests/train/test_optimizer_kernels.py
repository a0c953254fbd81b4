"""megatron_compat item 4: without TE and Apex, Megatron-Core's Python stand-ins for Apex's multi-tensor kernels
(grad norm: one device-to-host sync per parameter tensor; scale: a scaled temporary per tensor) are replaced by
torch foreach ops that give the same values, bit for bit, on the CPU (the golden losses check the whole run)."""

from __future__ import annotations

import pytest
import torch

from octomega.runtime import megatron_compat
from octomega.runtime.megatron_compat import foreach_l2_norm, foreach_scale


def _tensors(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (7,), (3, 5, 2), (1,), (257,)]
    return [torch.randn(s, generator=g).to(dtype) * (i + 1) for i, s in enumerate(shapes)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_l2_norm_equals_megatron_local_implementation(dtype):
    ts = _tensors(dtype)
    # megatron.core.utils.local_multi_tensor_l2_norm without its device="cuda": norms as Python floats, then theirs
    want = torch.norm(torch.tensor([[float(torch.norm(t)) for t in ts]]))
    got, per_tensor = foreach_l2_norm(2048 * 32, None, [ts], False)
    assert got.shape == (1,) and got.dtype == torch.float32 and per_tensor is None
    assert torch.equal(got[0], want)
    _, per_tensor = foreach_l2_norm(2048 * 32, None, [ts], True)
    assert torch.equal(per_tensor, torch.stack([torch.norm(t).float() for t in ts]))


def test_scale_equals_megatron_local_implementation():
    src = _tensors()
    # in place (gradient clipping passes [grads, grads])
    inplace, want = [t.clone() for t in src], [t * 0.37 for t in src]
    foreach_scale(0, None, [inplace, inplace], 0.37)
    assert all(torch.equal(a, b) for a, b in zip(inplace, want))
    # fp32 main weights -> bf16 model weights, scale 1.0 (Float16Optimizer's copy) and another scale
    for scale in (1.0, 0.5):
        dst = [torch.empty_like(t, dtype=torch.bfloat16) for t in src]
        foreach_scale(0, None, [src, dst], scale)
        assert all(torch.equal(d, (s * scale).to(torch.bfloat16)) for s, d in zip(src, dst))
    foreach_scale(0, None, [[], []], 1.0)  # nothing to do


def test_apply_installs_them_where_megatron_fell_back():
    pytest.importorskip("megatron.core")
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads, optimizer

    megatron_compat.apply()
    if clip_grads.multi_tensor_applier is not utils.local_multi_tensor_applier:
        pytest.skip("Transformer Engine or Apex is installed: Megatron uses their kernels")
    assert clip_grads.l2_norm_impl is foreach_l2_norm
    assert clip_grads.multi_tensor_scale_impl is foreach_scale and optimizer.multi_tensor_scale_impl is foreach_scale
