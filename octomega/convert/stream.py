"""Megatron dist checkpoints (torch_dist) written and read one tensor at a time, for the converters' memory.

Writing: `dist_checkpointing.save` runs as usual (factories, key mapping, sharding validation, metadata.json)
over the `sharded_state_dict()` of a model whose weights were never initialised or written (torch.empty: the
pages are not resident). Only the last step differs: instead of Megatron's writer, which resolves every tensor
up front, torch's FileSystemWriter asks the planner for each tensor as it writes it, and the planner asks
`produce(key, offsets, sizes, dtype)` for exactly that chunk (one layer's tensor, converted from HF on demand).
The files are the same torch_dist format: Megatron loads and reshards them like any other checkpoint.

Reading: torch's DCP reader fills boxes (offsets, sizes) of stored tensors, e.g. layer i of the stacked
`decoder.layers.mlp.linear_fc1.weight`, whatever TP/PP layout wrote them.
Both rely on megatron-core 0.19's torch_dist internals (pinned in pyproject.toml; the tests cover them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

Produce = Callable[[str, tuple[int, ...], tuple[int, ...], torch.dtype], torch.Tensor | None]


def _planner_class():
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner
    from torch.distributed.checkpoint.planner import WriteItemType

    class LazySavePlanner(MCoreSavePlanner):
        """MCore's planner, but tensor data come from `produce` when the writer reaches them."""

        def __init__(self, produce: Produce, **kwargs):
            super().__init__(**kwargs)
            self.produce = produce

        def resolve_data(self, write_item):
            if write_item.type != WriteItemType.BYTE_IO:
                chunk = write_item.tensor_data.chunk
                t = self.produce(write_item.index.fqn, tuple(chunk.offsets), tuple(chunk.sizes),
                                 write_item.tensor_data.properties.dtype)
                if t is not None:
                    if tuple(t.shape) != tuple(chunk.sizes):
                        raise ValueError(f"{write_item.index.fqn}: produced {list(t.shape)} for a chunk of "
                                         f"{list(chunk.sizes)}")
                    return t
            return super().resolve_data(write_item)

    return LazySavePlanner


def _strategy(produce: Produce):
    from megatron.core.dist_checkpointing.strategies.torch import (
        TorchDistSaveShardedStrategy,
        _replace_state_dict_keys_with_sharded_keys,
        mcore_to_pyt_state_dict,
    )
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint import save as dcp_save

    class StreamingSave(TorchDistSaveShardedStrategy):
        def save(self, sharded_state_dict, checkpoint_dir):
            sharded_state_dict, _, _ = _replace_state_dict_keys_with_sharded_keys(
                sharded_state_dict, self.keep_only_main_replica)
            pyt_state_dict = mcore_to_pyt_state_dict(sharded_state_dict, False)
            planner = _planner_class()(produce, dedup_replicated_tensors=not self.keep_only_main_replica,
                                       flatten_state_dict=False, flatten_sharded_tensors=False)
            writer = FileSystemWriter(str(checkpoint_dir), single_file_per_rank=True, sync_files=True,
                                      thread_count=1)
            dcp_save(pyt_state_dict, storage_writer=writer, planner=planner, no_dist=True)

    return StreamingSave("torch_dist", 1)


def save_streaming(model, checkpoint_dir: str | Path, produce: Produce) -> None:
    """Write {"model": model.sharded_state_dict()} to `checkpoint_dir` (an existing, empty directory) with
    every tensor chunk taken from `produce`; `produce` returning None means "use the model's own tensor".
    One process (world of one)."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from torch.distributed.checkpoint.api import CheckpointException

    if dist.get_world_size() != 1:
        raise RuntimeError("save_streaming runs in a world of one process")
    try:
        dist_checkpointing.save({"model": model.sharded_state_dict()}, str(checkpoint_dir),
                                sharded_strategy=_strategy(produce))
    except CheckpointException as e:  # a BaseException wrapping the real error of each rank: unwrap it
        cause = next(iter(e.failures.values()), None)
        raise RuntimeError(f"writing {checkpoint_dir} failed: {cause!r}") from (
            cause if isinstance(cause, BaseException) else None)


def stored_tensors(checkpoint_dir: str | Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{key: (global shape, dtype)} of every tensor a torch_dist checkpoint holds."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = FileSystemReader(str(checkpoint_dir)).read_metadata()
    return {k: (tuple(v.size), v.properties.dtype) for k, v in md.state_dict_metadata.items()
            if isinstance(v, TensorStorageMetadata)}


def read_boxes(checkpoint_dir: str | Path, boxes: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]],
               dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """{name: (stored key, offsets, sizes)} -> {name: tensor of `sizes`} read from the checkpoint; only the
    stored chunks that overlap a box are read. `dtypes` gives each key's stored dtype."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as dcp_load
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata
    from torch.distributed.checkpoint.planner import LoadPlan
    from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

    out = {name: torch.empty(sizes, dtype=dtypes[key]) for name, (key, _, sizes) in boxes.items()}

    class BoxPlanner(DefaultLoadPlanner):
        def create_local_plan(self):
            items = []
            for name, (key, offsets, sizes) in boxes.items():
                chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))
                for item in create_read_items_for_chunk_list(name, self.metadata.state_dict_metadata[key], [chunk]):
                    items.append(_with_storage_fqn(item, key))  # read from `key`, into the buffer `name`
            self.plan = LoadPlan(items)
            return self.plan

        def resolve_tensor(self, read_item):
            t = out[read_item.dest_index.fqn]
            for dim, (offset, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
                t = t.narrow(dim, offset, length)
            return t

        def commit_tensor(self, read_item, tensor):
            pass  # resolve_tensor handed out views of our buffers: already in place

    dcp_load(out, storage_reader=FileSystemReader(str(checkpoint_dir)), planner=BoxPlanner(), no_dist=True)
    return out


def _with_storage_fqn(item, key: str):
    import dataclasses

    return dataclasses.replace(item, storage_index=dataclasses.replace(item.storage_index, fqn=key))
