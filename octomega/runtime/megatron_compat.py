"""Fixes for Megatron-Core 0.19.2 paths that octomega uses and that break without Apex/Transformer Engine
(torch.optim.AdamW as the inner optimizer: CPU runs, and GPU runs without TE), and two in its checkpoint writer
(5, 6). Applied on every device.

1. DistributedOptimizer.load_state_dict sets a tensor 'step' in every parameter's Adam state, and then
   `_set_main_param_and_optimizer_states` copies every tensor of that state from the checkpoint, where the
   fully reshardable format has no per-parameter 'step' (it is saved once, in param_groups): KeyError 'step'.
   The patched copy skips the keys the checkpoint does not hold (the step was already restored).
2. The same load_state_dict gives every parameter's state the SAME 'step' tensor object; torch's Adam then
   increments it once per parameter per update, so bias correction after a resume is wrong (seen: a DP=2
   distributed-optimizer checkpoint resumed at DP=1 diverged at the second step). Each state gets its own copy.
3. RowParallelLinear.forward passes tp_group=None to linear_with_grad_accumulation_and_async_allreduce, whose
   get_tensor_model_parallel_group_if_none then calls warnings.warn (a DeprecationWarning) on rank 0 at every
   call. Under torch.compile (model.compile=layers) that warn call is a graph break in every layer, forward and
   backward. The tensor_parallel.layers module gets the same lookup without the warning.
4. Without TE and Apex, Megatron-Core falls back to megatron.core.utils' Python stand-ins for Apex's multi-tensor
   kernels: the grad-norm one turns every gradient's norm into a Python float (one device-to-host sync per
   parameter tensor, ~150 per step at 1B) and the scale one (clipping, and the fp32 main -> bf16 model weight
   copy) makes a scaled temporary of every tensor before copying it. They are replaced by torch's foreach ops
   (torch._foreach_norm, _foreach_mul, _foreach_copy_): no host sync, no temporary when the scale is 1, the same
   values (per-tensor norms, then the norm of those, in fp32).
5. dist_checkpointing's writer (FileSystemWriterAsync) collects its write results through a queue of a
   multiprocessing Manager that it starts, a server process with multiprocessing's resource tracker, on the first
   save of the process. Neither watches its parent: a run killed by SIGKILL left both behind for good. octomega
   saves synchronously (the writer threads run in the saving process), so an in-process queue does the same work,
   and no process is started.
6. The same writer reports a failed write as "an error is caught while starting worker 0, error: <class
   'OSError'>" (an assertion on the result's type replaces the exception), so a full disk cannot be told from a
   bug. The patched writer keeps each write's exception; octomega.checkpoint asks for them (take_write_errors)
   when a save fails.
"""

from __future__ import annotations

import functools
import queue

import torch

_APPLIED = False


def apply() -> None:
    global _APPLIED
    if _APPLIED:
        return
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    def _set_states(self, model_param, tensors):
        if self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            return original(self, model_param, tensors)
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        dst = {"param": main_param}
        dst.update({k: v for k, v in self.optimizer.state[main_param].items() if isinstance(v, torch.Tensor)})
        for key, tensor in dst.items():
            src = tensors.get(key)
            if isinstance(src, torch.Tensor):
                tensor.copy_(src)

    DistributedOptimizer._set_main_param_and_optimizer_states = _set_states

    original_load = DistributedOptimizer.load_state_dict

    def _load_state_dict(self, state_dict):
        original_load(self, state_dict)
        for st in self.optimizer.state.values():
            if isinstance(st.get("step"), torch.Tensor):
                st["step"] = st["step"].detach().clone()

    DistributedOptimizer.load_state_dict = _load_state_dict

    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import layers

    def _tp_group_if_none(tp_group, is_expert=False, check_initialized=True):
        # megatron.core.utils.get_tensor_model_parallel_group_if_none, minus its warnings.warn
        if not torch.distributed.is_initialized():
            return None
        if not parallel_state.is_initialized() or tp_group is not None:
            return tp_group
        if is_expert:
            return parallel_state.get_expert_tensor_parallel_group(check_initialized=check_initialized)
        return parallel_state.get_tensor_model_parallel_group(check_initialized=check_initialized)

    layers.get_tensor_model_parallel_group_if_none = _tp_group_if_none

    from megatron.core import utils as mcore_utils
    from megatron.core.optimizer import clip_grads
    from megatron.core.optimizer import optimizer as mcore_optimizer

    if clip_grads.l2_norm_impl is mcore_utils.local_multi_tensor_l2_norm:
        clip_grads.l2_norm_impl = foreach_l2_norm
    for module in (clip_grads, mcore_optimizer):
        if module.multi_tensor_scale_impl is mcore_utils.local_multi_tensor_scale:
            module.multi_tensor_scale_impl = foreach_scale
    _patch_checkpoint_writer()
    _APPLIED = True


_WRITE_ERRORS: list[BaseException] = []  # exceptions of failed checkpoint writes in this process (fix 6)


def take_write_errors() -> tuple[BaseException, ...]:
    """The exceptions of the checkpoint writes that failed in this process since the last call (fix 6)."""
    errors = tuple(_WRITE_ERRORS)
    _WRITE_ERRORS.clear()
    return errors


def _patch_checkpoint_writer() -> None:
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:  # fix 5
        filesystem_async._results_queue = queue.Queue()
    writer = filesystem_async.FileSystemWriterAsync
    original = writer.write_preloaded_data

    @functools.wraps(original)  # keeps the signature, which Megatron inspects
    def write_preloaded_data(*args, **kwargs):  # fix 6: one bucket (file) of a rank's checkpoint
        out = original(*args, **kwargs)
        if out is not None and isinstance(out[1], BaseException):
            _WRITE_ERRORS.append(out[1])
        return out

    writer.write_preloaded_data = staticmethod(write_preloaded_data)


def foreach_l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """Drop-in for megatron.core.utils.local_multi_tensor_l2_norm (itself a stand-in for amp_C.multi_tensor_l2norm):
    the L2 norm of all tensors of tensor_lists as a 1-element fp32 tensor on their device, without leaving it."""
    tensors = [t for group in tensor_lists for t in group]
    norms = torch.stack([n.float() for n in torch._foreach_norm(tensors)])
    return torch.linalg.vector_norm(norms).reshape(1), (norms if per_tensor else None)


def foreach_scale(chunk_size, noop_flag, tensor_lists, scale):
    """Drop-in for megatron.core.utils.local_multi_tensor_scale: tensor_lists[1][i] = tensor_lists[0][i] * scale."""
    src, dst = tensor_lists[0], tensor_lists[1]
    if not src:
        return
    if src is dst or all(a is b for a, b in zip(src, dst)):
        torch._foreach_mul_(dst, scale)
    else:
        torch._foreach_copy_(dst, src if isinstance(scale, float) and scale == 1.0 else torch._foreach_mul(src, scale))
