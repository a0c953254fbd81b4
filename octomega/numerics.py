"""Pinned CPU numerics: the same floating-point results from the tiny stack on every x86-64 machine with AVX2.

A CPU training run is a long chaotic computation: after ~1,000 steps the last bit of one matmul decides which
model comes out. Three things choose those bits besides the code, and each differs between machines:

- ATen's vectorised kernels (softmax, norms, reductions, Adam, the CPU flash attention) are compiled for several
  instruction sets and picked at start-up by the CPU (AVX2 or AVX-512). ATEN_CPU_CAPABILITY=avx2 picks the
  AVX2 build on every machine that has AVX2.
- MKL, which does torch's fp32 matmuls on x86, picks a code path by CPU vendor, instruction set and cache sizes:
  an AMD EPYC and an Intel Xeon with the same AVX2 give different sums. Its conditional numerical
  reproducibility (CNR) mode pins the path; COMPATIBLE (SSE2 without the approximate rcpps/rsqrtps) is the one
  branch MKL documents as the same on Intel and non-Intel CPUs. Any other branch (MKL_CBWR=AVX2) falls back to
  the vendor's own path on AMD: measured here, it gave the unpinned AMD result. MKL_DYNAMIC=FALSE keeps the
  thread count fixed, which CNR requires. docs/numerics.md has the measurements.
- oneDNN picks its kernels by instruction set too: ONEDNN_MAX_CPU_ISA=AVX2 caps it (it does no fp32 matmul in
  octomega's runs; pinned for safety).
Thread counts: with the pins above, the tiny stack gave the same losses with 1 and 2 threads (measured); the
threads are still fixed (2 unless OMP_NUM_THREADS says otherwise), as MKL's CNR mode asks.

All of these are read once, when torch and MKL start, so they must be in the environment before `import torch`.
`octomega train` / `octomega rl` with a recipe whose `train.cpu_numerics` is "pinned" (every tiny recipe) set
them, restarting themselves once when torch is already loaded; the tiny pipeline and the tests that assert
exact numbers put them in their subprocesses' environment.

The price is speed: MKL's SSE2 path is slower than its AVX2 one (bench/tiny_numerics.py measures it). Only
CPU kernels read these variables: a pinned recipe run on a GPU computes as usual on the GPU.

This module imports nothing heavy (no torch): it must be usable before torch is loaded.
"""

from __future__ import annotations

import os
import platform
import sys

# The pins (see the module docstring for why each).
PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
DEFAULT_THREADS = 2  # the tiny stack is sized for 2 cores
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
MARK = "OCTOMEGA_PINNED_NUMERICS"  # set by a process that re-executed itself, so that it cannot loop


def supported() -> bool:
    """The pins are for x86-64 (ATen's AVX2 build, MKL); elsewhere they mean nothing."""
    return platform.machine().lower() in ("x86_64", "amd64")


def pinned_env(env: dict[str, str] | None = None, threads: int | None = None) -> dict[str, str]:
    """`env` (default os.environ) with the pins set. Thread counts: `threads` if given, else the OMP_NUM_THREADS
    already there, else DEFAULT_THREADS; MKL gets the same count as OpenMP."""
    out = dict(os.environ if env is None else env)
    out.update(PINS)
    n = str(threads) if threads is not None else out.get("OMP_NUM_THREADS") or str(DEFAULT_THREADS)
    for var in THREAD_VARS:
        out[var] = n
    return out


def missing(env: dict[str, str] | None = None) -> list[str]:
    """The pins (and fixed thread counts) that `env` (default os.environ) lacks, as NAME=VALUE."""
    env = os.environ if env is None else env
    out = [f"{k}={v}" for k, v in PINS.items() if env.get(k, "").upper() != v.upper()]
    threads = env.get("OMP_NUM_THREADS")
    if not threads:
        out.append(f"OMP_NUM_THREADS={DEFAULT_THREADS}")
    elif env.get("MKL_NUM_THREADS") != threads:
        out.append(f"MKL_NUM_THREADS={threads}")
    return out


def describe(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return " ".join(f"{k}={env.get(k, '')}" for k in (*PINS, *THREAD_VARS))


def ensure(mode: str, *, command: list[str] | None, prog: str = "octomega") -> None:
    """Make this process's CPU numerics what the run's config asks for.

    mode "native": nothing. "pinned" without the pins: set them in os.environ if torch is not loaded yet (the
    usual case: resolving a recipe does not load it); else, when `command` (this process's own arguments after
    `python -m octomega`) is given, re-execute it with the pins (the same process id, so torchrun and Slurm see no difference); else (a
    programmatic call that cannot restart) warn that the results may differ on another machine."""
    if mode != "pinned" or not supported():
        return
    lacking = missing()
    if not lacking:
        return
    if "torch" not in sys.modules:
        os.environ.update(pinned_env())
        print(f"{prog}: pinned CPU numerics: {describe()}", file=sys.stderr, flush=True)
        return
    if command is not None and os.environ.get(MARK) != "1":
        env = {**pinned_env(), MARK: "1"}
        print(f"{prog}: restarting with pinned CPU numerics ({' '.join(lacking)})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "octomega", *command], env)
    print(f"{prog}: warning: train.cpu_numerics=pinned but {' '.join(lacking)} not set before torch was loaded; "
          "the results may differ on another machine (octomega/numerics.py)", file=sys.stderr, flush=True)


def summary(mode: str) -> str:
    """One line for a CPU run's log: the mode asked for, whether the pins are in effect, and what ATen runs."""
    import torch

    lacking = missing()
    if mode != "pinned":
        state = "the fastest kernels of this CPU; results may differ on another machine"
    else:
        state = f"NOT in effect, lacking {' '.join(lacking)}" if lacking else "in effect"
    return (f"cpu numerics: {mode} ({state}); ATen {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}")
