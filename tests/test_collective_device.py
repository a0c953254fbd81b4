"""Collectives on tensors octomega builds itself (flags, loss sums, metrics, seeds) use the collective's device.

nccl reduces CUDA tensors only: a CPU tensor handed to it raises ("No backend type associated with device type
cpu"), so a flag built on the CPU breaks every GPU run at its first step while gloo (the CPU runs of CI) accepts
it. `octomega.runtime.collective_device()` names the device from the process group's backend; every such call site
builds or moves its tensor there.

Faked, because neither can exist on this machine: the nccl backend (torch.distributed's backend query answers
"nccl") and the GPU. For the call sites, collective_device is replaced by the "meta" device (a device no code
picks by itself) and the collective by a recorder that keeps the device of the tensor it is handed and stops the
call: the test checks that the tensor reaching the collective is on the device collective_device named. The real
collectives under nccl run in tests/gpu/test_gpu_collectives.py on a GPU machine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

import octomega.runtime as runtime
from octomega.runtime import collective_device

META = torch.device("meta")


def test_collective_device_follows_the_process_group_backend(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert collective_device() == torch.device("cpu")  # nothing is communicated
    asked = []
    backend = {"name": "gloo"}

    def get_backend(group=None):
        asked.append(group)
        return backend["name"]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", get_backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collective_device() == torch.device("cpu")
    backend["name"] = "nccl"
    assert collective_device() == torch.device("cuda", 3)
    assert collective_device("tp group") == torch.device("cuda", 3)
    backend["name"] = "cpu:gloo,cuda:nccl"  # a mixed backend: CUDA tensors go to nccl
    assert collective_device() == torch.device("cuda", 3)
    assert asked == [None, None, "tp group", None]


class Handed(Exception):
    """Raised by the recording collective: the tensor was handed over, the rest of the call is not wanted."""


@pytest.fixture
def handed(monkeypatch):
    """A fake nccl world: the devices of the tensors handed to all_reduce / broadcast, in call order."""
    seen = []

    def record(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise Handed

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(runtime, "collective_device", lambda group=None: META)
    monkeypatch.setattr(dist, "all_reduce", record)
    monkeypatch.setattr(dist, "broadcast", record)
    return seen


def _any_rank():
    from octomega.train.run import any_rank

    any_rank(True, False)  # the stop flags of every step (signal, time budget), pre-training and RL


def _all_finite_nothing():
    from octomega.checkpoint import all_finite

    all_finite([])  # a rank holding no tensor still joins the all-reduce


def _all_finite_cpu_tensors():
    from octomega.checkpoint import all_finite

    all_finite([torch.ones(3), torch.zeros(2, 2)])


def _reduce_loss():
    from octomega.train.loop import _reduce_loss

    _reduce_loss([{"lm loss": torch.tensor([6.0, 3.0])}, {"lm loss": torch.tensor([2.0, 1.0])}])


def _reduce_loss_no_micro_batches():
    from octomega.train.loop import _reduce_loss

    _reduce_loss([])  # a non-last pipeline stage: only the zeros built here


def _reduce_metrics():
    from octomega.rl.actor import reduce_metrics

    reduce_metrics([{"pg_loss": torch.tensor([1.0, 2.0]), "entropy": torch.tensor([3.0, 2.0])}],
                   ("pg_loss", "entropy"))


def _generation_seed(monkeypatch):
    from megatron.core import parallel_state as ps

    from octomega.generate.megatron_backend import MegatronGenerator

    monkeypatch.setattr(ps, "get_model_parallel_group", lambda: "model parallel group")
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_process_group_ranks", lambda group: [0, 1])
    MegatronGenerator._shared_random_seed(SimpleNamespace(device=torch.device("cpu")))


SITES = {"any_rank": _any_rank, "all_finite_nothing": _all_finite_nothing,
         "all_finite_cpu_tensors": _all_finite_cpu_tensors, "reduce_loss": _reduce_loss,
         "reduce_loss_no_micro_batches": _reduce_loss_no_micro_batches, "reduce_metrics": _reduce_metrics}


@pytest.mark.parametrize("site", sorted(SITES))
def test_collective_gets_its_tensor_on_the_collective_device(handed, site):
    with pytest.raises(Handed):
        SITES[site]()
    assert handed == [META]


def test_generation_seed_is_broadcast_on_the_collective_device(handed, monkeypatch):
    """The megatron backend's shared sampling seed, even for a model that sits on the CPU."""
    with pytest.raises(Handed):
        _generation_seed(monkeypatch)
    assert handed == [META]


def test_value_head_is_built_on_the_device_of_the_model():
    """The critic's value head replaces the output layer after build_model has moved the model to its GPU: it must
    follow it there, or the critic's first forward mixes devices (and Megatron DDP gets a CPU parameter). The
    "meta" device stands in for the GPU."""
    from octomega.rl.critic import attach_value_head

    model = SimpleNamespace(post_process=True, decoder=torch.nn.Linear(4, 4, device="meta"),
                            config=SimpleNamespace(hidden_size=4, sequence_parallel=False, params_dtype=torch.bfloat16))
    model.parameters = lambda: model.decoder.parameters()
    attach_value_head(0.5)(model)
    assert {p.device for p in model.output_layer.parameters()} == {META}
    assert {p.dtype for p in model.output_layer.parameters()} == {torch.bfloat16}
