"""Run Megatron-Core on CPU (gloo), for tests, the tiny pipeline and laptops.

Megatron-Core has no CPU path: it creates tensors on "cuda", asks torch.cuda for the current device, streams
and RNG states, and asserts CUDA tensor types in the optimizer. What was found by running it (docs/megatron_cpu.md)
is redirected here, and only here:

- factory calls and .to()/.cuda() that name a CUDA device are mapped to the CPU (a TorchFunctionMode);
- torch.cuda.current_device/synchronize/empty_cache/streams/events become harmless stand-ins;
- the CUDA RNG tracker reads and writes the CPU generator;
- Tensor.type() answers CUDA type names ('torch.cuda.FloatTensor'), which the (distributed) optimizer checks;
- the fp32 grad clip (a CUDA type assertion and a fused kernel) is replaced by a plain CPU one.

`enable()` is called by octomega.runtime.init only when no GPU is used; nothing here is active on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

_ENABLED = False


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpu(TorchFunctionMode):
    """Rewrites device="cuda"/int arguments to the CPU and makes Tensor.cuda() a no-op."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.cuda,):
            return args[0]
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to,) and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron's optimizers compare type names with 'torch.cuda.FloatTensor' etc.: answer as CUDA would.
            return func(*args).replace("torch.", "torch.cuda.", 1)
        return func(*args, **kwargs)


class _FakeStream:
    """Stands in for torch.cuda.Stream/Event: everything on CPU is already synchronous."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *a, **k):
        pass

    def wait_event(self, *a, **k):
        pass

    def record_event(self, *a, **k):
        return _FakeStream()

    def record(self, *a, **k):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def wait(self, *a, **k):
        pass

    def elapsed_time(self, other):
        return 0.0


@contextlib.contextmanager
def _null_ctx(*args, **kwargs):
    yield


def _patch_cuda_module() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.synchronize = lambda *a, **k: None
    cuda.empty_cache = lambda: None
    cuda.set_device = lambda *a, **k: None
    cuda.Stream = _FakeStream
    cuda.Event = _FakeStream
    cuda.current_stream = lambda *a, **k: _FakeStream()
    cuda.default_stream = lambda *a, **k: _FakeStream()
    cuda.stream = _null_ctx
    cuda.set_stream = lambda *a, **k: None
    cuda.is_current_stream_capturing = lambda: False
    cuda.memory_allocated = lambda *a, **k: 0
    cuda.max_memory_allocated = lambda *a, **k: 0
    cuda.memory_reserved = lambda *a, **k: 0
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    # torch.manual_seed itself calls torch.cuda.manual_seed_all: seed the CPU generator directly, and make
    # manual_seed_all a no-op (the CPU generator is the only one and torch.manual_seed already seeded it).
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.manual_seed_all = lambda seed: None
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state
    # Megatron's optimizer and DDP compare tensor type names against CUDA types.
    cuda.FloatTensor = torch.FloatTensor
    cuda.HalfTensor = torch.HalfTensor
    cuda.BFloat16Tensor = torch.BFloat16Tensor


def _patch_megatron() -> None:
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)

    # The fp32 grad clip asserts grad.type() == 'torch.cuda.FloatTensor' and uses a fused multi-tensor kernel.
    from megatron.core.optimizer import clip_grads

    def _cpu_clip_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        grads = []
        for p in parameters:
            g = getattr(p, "decoupled_grad", None) if use_decoupled_grad else p.grad
            if g is not None:
                grads.append(g)
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0:
            for g in grads:
                g.mul_(clip_coeff)

    clip_grads.clip_grad_by_total_norm_fp32 = _cpu_clip_by_total_norm
    from megatron.core.optimizer import optimizer as mp_optimizer

    if hasattr(mp_optimizer, "clip_grad_by_total_norm_fp32"):
        mp_optimizer.clip_grad_by_total_norm_fp32 = _cpu_clip_by_total_norm


def enable() -> None:
    """Redirect Megatron-Core's CUDA-only calls to the CPU for the rest of the process. Idempotent; once enabled,
    a later call re-applies the torch.cuda stand-ins if another library replaced them (vLLM's CPU worker installs
    its own Event and Stream placeholders, which lack the elapsed_time Megatron's generation calls)."""
    global _ENABLED
    if _ENABLED:
        if torch.cuda.Event is not _FakeStream or torch.cuda.Stream is not _FakeStream:
            _patch_cuda_module()
        return
    if torch.cuda.is_available():
        raise RuntimeError("octomega's CPU backend must not be enabled on a machine that uses its GPU")
    _patch_cuda_module()
    _patch_megatron()
    _CudaToCpu().__enter__()  # stays active for the process
    _ENABLED = True


def enabled() -> bool:
    return _ENABLED
