"""Helpers for multi-rank tests and tools: run a function on N gloo ranks in fresh processes.

`run_distributed(fn, world_size=2, args=(...))` spawns `world_size` processes (spawn start method, so each
imports Megatron-Core afresh), sets the torchrun environment variables, calls `fn(rank, *args)` in each and
returns the list of per-rank return values (which must be picklable; prefer numpy or plain Python to torch
tensors: a tensor shares memory with a rank that may exit before the parent reads it). A failure on any rank raises with that
rank's traceback; a hang is killed after `timeout` seconds. The ranks run on the CPU (gloo, OCTOMEGA_DEVICE=cpu)
unless `gpu=True`: then each rank takes GPU LOCAL_RANK and nccl (tests/gpu).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import socket
import traceback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(fn, rank, world_size, port, args, queue, gpu=False):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if gpu:  # one GPU per rank (LOCAL_RANK), nccl: what octomega.runtime picks where CUDA is available
        os.environ.pop("OCTOMEGA_DEVICE", None)
    else:
        os.environ["OCTOMEGA_DEVICE"] = "cpu"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
        result = fn(rank, *args)
        queue.put((rank, "ok", result))
    except BaseException:  # report every failure, including SystemExit from a CLI
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        try:
            import sys

            import torch.distributed as dist

            if "octomega.runtime" in sys.modules:  # its shutdown hooks first (a colocated vLLM engine)
                sys.modules["octomega.runtime"].shutdown()
            elif dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


def run_distributed(fn, world_size: int = 2, args: tuple = (), timeout: float = 300.0, *, gpu: bool = False) -> list:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(fn, r, world_size, port, args, queue, gpu))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    errors = []
    try:
        for _ in range(world_size):
            rank, status, payload = queue.get(timeout=timeout)
            if status == "ok":
                results[rank] = payload
            else:
                errors.append(f"rank {rank} failed:\n{payload}")
                break
    except queue_mod.Empty:
        errors.append(f"timed out after {timeout:.0f} s waiting for ranks")
    except Exception as e:
        errors.append(f"could not read a rank's result: {type(e).__name__}: {e}")
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 1)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [results[r] for r in range(world_size)]


def start_pinned(tiny_root, *args: str, threads: int = 2):
    """Start `python -m octomega ARGS` on the tiny root `tiny_root` with pinned CPU numerics and `threads` threads
    (what a test asserts exact numbers on must compute the same on every machine, with any thread count:
    octomega/numerics.py); returns the running subprocess.Popen (text stdout and stderr, piped)."""
    import subprocess
    import sys

    from octomega import numerics

    env = numerics.pinned_env({**os.environ, "OCTOMEGA_TINY_ROOT": str(tiny_root), "WANDB_MODE": "disabled"},
                              threads=threads)
    return subprocess.Popen([sys.executable, "-m", "octomega", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_pinned(proc, timeout: float = 2400) -> str:
    """Wait for a start_pinned process; returns its stdout; a failure raises with the tail of both streams."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"octomega {' '.join(proc.args[3:])} failed:\n{out[-3000:]}\n{err[-3000:]}")
    return out


def run_pinned(tiny_root, *args: str, timeout: float = 2400) -> str:
    """`python -m octomega ARGS` on the tiny root with pinned CPU numerics and two threads, to the end (start_pinned,
    finish_pinned). Returns stdout."""
    return finish_pinned(start_pinned(tiny_root, *args), timeout)


def checkpoint_tensors(iter_dir) -> dict:
    """{path: tensor} of every tensor in a dist_checkpointing checkpoint directory (model and optimizer state), read
    from its files alone (torch's dcp_to_torch_save); nested keys joined with '/', list items as [i]."""
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    flat: dict = {}

    def walk(x, key):
        if isinstance(x, torch.Tensor):
            flat[key] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}[{i}]")

    with tempfile.TemporaryDirectory() as d:
        dcp_to_torch_save(str(iter_dir), f"{d}/all.pt")
        walk(torch.load(f"{d}/all.pt", weights_only=False), "")
    return flat


def hf_greedy(model_dir, prompts, max_new: int, stop_ids, device: str = "cpu") -> list[list[int]]:
    """transformers' own LlamaForCausalLM.generate, fp32, greedy, one left-padded batch on `device`; each row cut
    after its first stop id: the reference the generation backends are compared with."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device).eval()
    enc = tok(prompts, return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=tok.pad_token_id)
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((k + 1 for k, t in enumerate(row) if t in stop_ids), len(row))
        rows.append(row[:cut])
    return rows
