"""Checkpoints: Megatron dist_checkpointing (torch_dist), laid out as Megatron-LM does, and atomic. Pre-training
and RL write them; conversion, generation and the commands read them (docs/layers.md: below all of those).

    <run>/checkpoints/
        latest_checkpointed_iteration.txt      the newest COMPLETE iteration (Megatron-LM's tracker file)
        iter_0000100/                          a torch_dist checkpoint (reshardable: any TP/PP/DP on load)
            __0_0.distcp, metadata.json, ...   "model" (GPTModel.sharded_state_dict), "optimizer", "rng_state"
            octomega.json                      config, scheduler, counters, run identity (plain JSON)
            COMPLETE                           written last: a directory without it is never loaded

The distributed optimizer is saved in the `fully_reshardable` form (its state gathered to model space on save;
`fully_sharded_model_space` needs flattened ranges that dist_checkpointing 0.19 rejects), so a checkpoint saved with
TP=2 or the distributed optimizer at DP=2 loads at TP=1 / DP=1 (and the reverse).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from octomega.config import ConfigError, to_dict
from octomega.diskfull import DiskFull, disk_full_cause, disk_full_error, free_bytes, remove_partial  # noqa: F401

MARKER = "COMPLETE"
TRACKER = "latest_checkpointed_iteration.txt"
META = "octomega.json"
OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def iter_dir(save_dir: str | Path, iteration: int) -> Path:
    return Path(save_dir) / f"iter_{iteration:07d}"


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).exists()


def complete_iterations(save_dir: str | Path) -> list[int]:
    d = Path(save_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("iter_*"):
        if p.is_dir() and is_complete(p):
            try:
                out.append(int(p.name[5:]))
            except ValueError:
                pass
    return sorted(out)


def latest_finite(save_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (of a run directory's checkpoints/ or a checkpoints dir) recorded as finite
    ("finite" in its octomega.json: save_checkpoint checked its weights); None when there is none."""
    d = Path(save_dir)
    if (d / "checkpoints").is_dir():
        d = d / "checkpoints"
    for it in reversed(complete_iterations(d)):
        try:
            if json.loads((iter_dir(d, it) / META).read_text()).get("finite"):
                return iter_dir(d, it)
        except (OSError, ValueError):
            continue
    return None


def latest_complete(save_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory's checkpoints/ (or of a checkpoints dir itself)."""
    d = Path(save_dir)
    if (d / "checkpoints").is_dir():
        d = d / "checkpoints"
    its = complete_iterations(d)
    return iter_dir(d, its[-1]) if its else None


def resolve(path: str | Path, iteration: int | None = None) -> Path:
    """A checkpoint path given as a run dir, a checkpoints dir or an iter dir -> a complete iter dir."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.name.startswith("iter_"):
        target = p
    elif iteration is not None:
        base = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        target = iter_dir(base, iteration)
    else:
        target = latest_complete(p)
        if target is None:
            raise FileNotFoundError(f"{p} holds no complete checkpoint (iter_*/{MARKER} missing)")
    if not is_complete(target):
        raise FileNotFoundError(f"checkpoint {target} is incomplete (no {MARKER} marker: the save was interrupted); "
                                "use an earlier iteration")
    return target


def is_checkpoint_path(path: str | Path) -> bool:
    """Whether `path` is what resolve() takes (a run dir with checkpoints/, a checkpoints dir, an iter dir), not an
    HF directory. A run dir also holds octomega's config.json, so config.json alone does not mean HF."""
    p = Path(path)
    return p.name.startswith("iter_") or (p / TRACKER).is_file() or (p / "checkpoints").is_dir() \
        or any(p.glob("iter_*"))


def read_meta(path: str | Path) -> dict:
    return json.loads((resolve(path) / META).read_text())


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _rng_state():
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    state = {"torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    pp, tp = ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()
    return ShardedObject("rng_state", state, (pp, tp), (ps.get_pipeline_model_parallel_rank(),
                         ps.get_tensor_model_parallel_rank()), replica_id=ps.get_data_parallel_rank())


def _prime_adam_state(optimizer) -> None:
    """Give every parameter an Adam state (zeros, step 0) before loading into a fresh optimizer.

    Megatron's DistributedOptimizer.state_dict() asserts a single shared 'step' when neither Apex nor TE is
    installed (torch.optim.AdamW), but torch creates 'step' only at the first update, and Megatron's
    init_state_fn does not: loading into a fresh distributed optimizer then fails. The loaded values replace
    these zeros."""
    import torch

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None:
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if "step" not in st:
                    st.setdefault("exp_avg", torch.zeros_like(p.data))
                    st.setdefault("exp_avg_sq", torch.zeros_like(p.data))
                    st["step"] = torch.tensor(0.0)


def _sharded_state(model, optimizer, *, loading: bool, with_rng: bool) -> dict:
    sd = {"model": _unwrap(model).sharded_state_dict()}
    if optimizer is not None:
        if loading:
            _prime_adam_state(optimizer)
        sd["optimizer"] = optimizer.sharded_state_dict(sd["model"], is_loading=loading, metadata=OPTIM_METADATA)
    if with_rng:
        sd["rng_state"] = _rng_state()
    return sd


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


class NonFiniteWeights(RuntimeError):
    """save_checkpoint was given a model whose weights are not finite (NaN, inf): it wrote nothing."""


def all_finite(tensors) -> bool:
    """Whether every element of `tensors` is finite on every rank (every rank must call it: one all-reduce). A sum in
    float64 per tensor: NaN and inf propagate, and finite fp32 values cannot overflow it."""
    from octomega.runtime import collective_device

    device = collective_device()  # a rank may hold no tensor (or CPU ones): the flag goes where nccl can reduce it
    sums = [t.detach().sum(dtype=torch.float64).to(device) for t in tensors]
    local = torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64, device=device)
    bad = (~torch.isfinite(local)).to(torch.float32).reshape(1)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return not bool(bad.item())


def save_checkpoint(save_dir: str | Path, iteration: int, model, *, optimizer=None, scheduler=None,
                    state: dict | None = None, config=None, keep_last: int | None = None) -> Path:
    """Save on all ranks; the checkpoint counts only once rank 0 has written COMPLETE (last).

    A model whose weights are not finite (on any rank) is never saved: NonFiniteWeights, and nothing written. So
    every checkpoint is finite (octomega.json records "finite": true), and the keep_last rotation, which keeps the
    newest ones, never deletes the newest finite checkpoint.

    A checkpoint that does not fit on its disk raises DiskFull (one line: the path, the bytes it needs, the bytes
    free, the previous checkpoint kept): before anything is written when some rank sees less free space than the
    checkpoint's tensors take, or when a write fails with ENOSPC/EDQUOT; the partial directory is then removed (it
    was never COMPLETE), and the rotation, which runs only after a complete save, has deleted nothing."""
    from megatron.core import dist_checkpointing

    from octomega.runtime import megatron_compat

    megatron_compat.apply()  # its checkpoint-writer fixes: no orphaned process, write errors kept
    rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    target = iter_dir(save_dir, iteration)
    if not all_finite(_unwrap(model).parameters()):
        raise NonFiniteWeights(f"not saving {target}: the model's weights are not finite")
    sharded = _sharded_state(model, optimizer, loading=False, with_rng=True)
    previous = latest_complete(save_dir)
    kept = (f"the previous checkpoint {previous} is kept (a resume starts there)" if previous is not None
            else "no earlier checkpoint exists")
    needed = _check_space(save_dir, target, sharded, kept)
    if rank0:
        if target.exists():  # a leftover of an interrupted save of this iteration
            shutil.rmtree(target)
        target.mkdir(parents=True)
    _barrier()
    megatron_compat.take_write_errors()  # forget those of an earlier failed save
    try:
        dist_checkpointing.save(sharded, str(target))
        _barrier()
        if rank0:
            meta = {"iteration": iteration, "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "config": to_dict(config) if config is not None else None, "has_optimizer": optimizer is not None,
                    "param_dtype": _param_dtype(model), "finite": True, **(state or {})}
            (target / META).write_text(json.dumps(meta, indent=2, default=str))
            _fsync_dir(target)
            (target / MARKER).write_text("ok\n")
            tmp = Path(save_dir) / (TRACKER + ".tmp")
            tmp.write_text(str(iteration))
            os.replace(tmp, Path(save_dir) / TRACKER)
    except BaseException as e:  # torch's CheckpointException is a BaseException
        if rank0:  # never left half-written (and its space is freed for what comes next)
            remove_partial(target)
            remove_partial(Path(save_dir) / (TRACKER + ".tmp"))
        cause = disk_full_cause(e, megatron_compat.take_write_errors())
        if cause is None:
            raise
        raise disk_full_error(target, what="checkpoint", needed=needed, kept=kept, cause=cause) from e
    if rank0 and keep_last:
        for old in complete_iterations(save_dir)[:-keep_last]:
            shutil.rmtree(iter_dir(save_dir, old), ignore_errors=True)
    _barrier()
    return target


def _check_space(save_dir: str | Path, target: Path, sharded: dict, kept: str) -> int:
    """The bytes of tensor data this save writes, all ranks together; DiskFull on every rank, before anything is
    written, when some rank sees less free space than that (every rank must call it: two all-reduces of one
    number, so that all ranks decide alike)."""
    from octomega.runtime import collective_device

    device = collective_device()
    total = torch.tensor([float(_tensor_bytes(sharded))], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    needed = int(total.item())
    free = free_bytes(save_dir)
    short = torch.tensor([float(free is not None and free < needed)], dtype=torch.float32, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(short, op=torch.distributed.ReduceOp.MAX)
    if short.item():
        raise disk_full_error(target, what="checkpoint", needed=needed, kept=kept)
    return needed


def _tensor_bytes(sharded: dict) -> int:
    """Bytes of the tensors this rank writes from a sharded state dict (its main replicas; the files add a little:
    metadata and pickled objects)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory, is_main_replica

    n = 0
    for sh in nested_values(sharded):  # a factory (a fused weight saved as parts) holds the whole local tensor
        if isinstance(sh, (ShardedTensor, ShardedTensorFactory)) and is_main_replica(sh.replica_id) \
                and isinstance(sh.data, torch.Tensor):
            rng = getattr(sh, "flattened_range", None)
            n += (rng.stop - rng.start if rng is not None else sh.data.numel()) * sh.data.element_size()
    return n


def _param_dtype(model) -> str:
    """The model's parameter dtype as saved in octomega.json ('bfloat16', 'float32')."""
    return str(next(_unwrap(model).parameters()).dtype).removeprefix("torch.")


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def load_checkpoint(path: str | Path, model, *, optimizer=None, load_rng: bool = False) -> dict:
    """Load model (and optimizer, RNG) from a complete checkpoint into the current layout; returns its meta.

    The current TP/PP/DP may differ from the saved one: dist_checkpointing reshards. RNG states are restored
    only when asked (an exact resume at the same layout).
    """
    from megatron.core import dist_checkpointing

    target = resolve(path)
    meta = json.loads((target / META).read_text())
    if optimizer is not None and not meta.get("has_optimizer", True):
        raise ConfigError(f"{target} holds no optimizer state; set init.reset_optimizer=true to start a fresh one")
    saved, now = meta.get("param_dtype"), _param_dtype(model)
    if optimizer is not None and saved is not None and saved != now:
        # A bf16 run's optimizer holds fp32 master weights that an fp32 run's has not (and the reverse): Megatron
        # would fail on a missing 'fp32_param' key. The weights alone load into either precision.
        raise ConfigError(f"{target} was saved by a {saved} run and this run is {now}: its optimizer state does not "
                         f"fit. Set train.precision to match ({'bf16' if saved == 'bfloat16' else 'fp32'}), or "
                         "init.reset_optimizer=true to take the weights only")
    sharded = _sharded_state(model, optimizer, loading=True, with_rng=load_rng)
    loaded = dist_checkpointing.load(sharded, str(target))
    _unwrap(model).load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if load_rng and "rng_state" in loaded:
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        rng = loaded["rng_state"]
        torch.set_rng_state(rng["torch"])
        get_cuda_rng_tracker().set_states(rng["tracker"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return meta
