"""Process groups and devices: torchrun, srun or a single process; nccl on GPUs, gloo (and the CPU backend) else."""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch

from octomega.runtime import cpu_backend, megatron_compat


@dataclass(kw_only=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    tp: int
    pp: int
    dp: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_from_slurm() -> None:
    """srun starts one task per GPU without torchrun's variables: derive them from Slurm's."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or "SLURM_NTASKS" not in os.environ:
        return
    if int(os.environ["SLURM_NTASKS"]) == 1 and "MASTER_ADDR" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError("srun launch: export MASTER_ADDR (the first node of $SLURM_JOB_NODELIST) and MASTER_PORT")


def use_gpu() -> bool:
    """GPUs are used when CUDA is available, unless OCTOMEGA_DEVICE=cpu says otherwise."""
    return torch.cuda.is_available() and os.environ.get("OCTOMEGA_DEVICE", "").lower() != "cpu"


def collective_device(group=None) -> torch.device:
    """The device a tensor must be on for a torch.distributed collective over `group` (None: the default group).

    nccl reduces CUDA tensors only: a CPU tensor raises ("No backend type associated with device type cpu"), so
    under nccl it is the current CUDA device (the rank's GPU: init_distributed sets it). gloo (CPU runs) takes CPU
    tensors. Without an initialised process group: the CPU (nothing is communicated). Every collective octomega
    makes on a tensor it builds itself (flags, loss sums, metrics, seeds) puts it here; tensors that already live on
    the model's device (activations, parameters) are there by construction, since the model is on the rank's GPU
    exactly when the backend is nccl."""
    if not torch.distributed.is_initialized():
        return torch.device("cpu")
    if "nccl" in str(torch.distributed.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(*, tp: int = 1, pp: int = 1, seed: int = 1234, timeout_minutes: int = 30) -> Runtime:
    """Initialise torch.distributed and Megatron's model-parallel groups (TP x PP x DP)."""
    from megatron.core import parallel_state, tensor_parallel

    _env_from_slurm()
    gpu = use_gpu()
    megatron_compat.apply()
    if not gpu:
        cpu_backend.enable()
    if not torch.distributed.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if gpu:
            torch.cuda.set_device(local_rank)
        kwargs = {}
        if "RANK" not in os.environ:
            # A plain `python -m octomega ...`: a world of one on a free port. Nothing is written to os.environ,
            # so subprocesses (tests, Slurm steps, the pipeline's stages) do not inherit a rank or a busy port.
            kwargs = dict(init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        torch.distributed.init_process_group(
            backend="nccl" if gpu else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs
        )
    world = torch.distributed.get_world_size()
    if world % (tp * pp):
        raise RuntimeError(f"world size {world} is not divisible by tp*pp = {tp}*{pp}")
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return Runtime(
        rank=torch.distributed.get_rank(),
        world_size=world,
        local_rank=local_rank,
        device=torch.device("cuda", local_rank) if gpu else torch.device("cpu"),
        tp=tp,
        pp=pp,
        dp=world // (tp * pp),
    )


_AT_SHUTDOWN: list = []


def at_shutdown(fn) -> None:
    """Run fn() in shutdown(), after Megatron's groups and before the process group goes: what joined the world
    and must leave it first (a colocated vLLM engine, whose own exit hook would otherwise find its groups gone and
    print a traceback after a finished run)."""
    _AT_SHUTDOWN.append(fn)


def shutdown() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    while _AT_SHUTDOWN:
        _AT_SHUTDOWN.pop()()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
