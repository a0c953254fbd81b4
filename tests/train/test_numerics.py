"""Pinned CPU numerics (octomega/numerics.py): the environment they set, how `octomega train` applies them, and
that they make tiny training independent of what differs between machines.

Another CPU cannot be had here, so the machine differences are emulated on this one, where each can be:
- MKL's vendor: MKL picks its code path with an internal "is this an Intel CPU?" test, which libtorch_cpu
  exports (mkl_serv_intel_cpu_true). A two-line library preloaded with LD_PRELOAD answers the opposite of the
  truth, so MKL runs the other vendor's code path here (on an AMD CPU: its Intel AVX2 path). The test first shows
  that this changes an unpinned matmul, then that pinned training does not see it;
- thread counts: 1 against 2.
What cannot be emulated here: ATen's AVX-512 kernels on a CPU without AVX-512 (ATEN_CPU_CAPABILITY=avx2 makes
every machine run the AVX2 ones, which every x86-64 machine of this project's kind has). The golden losses
(tests/train/test_golden.py, tolerance 0) check the whole set on whatever machine CI runs on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from octomega import numerics

REPO = Path(__file__).resolve().parents[2]
needs_x86 = pytest.mark.skipif(not numerics.supported(), reason="the pins are for x86-64 (ATen AVX2, MKL)")


def _clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*numerics.PINS, *numerics.THREAD_VARS, numerics.MARK)}
    return {**env, "WANDB_MODE": "disabled", **extra}


def test_pinned_env_sets_every_pin_and_one_thread_count():
    env = numerics.pinned_env({"OMP_NUM_THREADS": "1", "PATH": "/bin"})
    assert {k: env[k] for k in numerics.PINS} == numerics.PINS
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["PATH"] == "/bin"
    assert numerics.pinned_env({})["OMP_NUM_THREADS"] == str(numerics.DEFAULT_THREADS)
    assert numerics.pinned_env({}, threads=3)["MKL_NUM_THREADS"] == "3"
    assert numerics.missing(env) == []
    lacking = numerics.missing({**env, "MKL_CBWR": "AVX2", "MKL_NUM_THREADS": "2"})
    assert lacking == ["MKL_CBWR=COMPATIBLE", "MKL_NUM_THREADS=1"]
    assert "OMP_NUM_THREADS=2" in numerics.missing({})


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO,
                          timeout=300)


@needs_x86
def test_ensure_sets_the_pins_before_torch_loads():
    code = ("from octomega import numerics; numerics.ensure('pinned', command=None); import os, torch; "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'], torch.get_num_threads())")
    proc = _python(code, _clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["AVX2", "COMPATIBLE", "2"]
    assert "pinned CPU numerics" in proc.stderr
    native = _python(code.replace("'pinned'", "'native'").replace("os.environ['MKL_CBWR']",
                                                                    "os.environ.get('MKL_CBWR')"), _clean_env())
    assert native.stdout.split()[1] == "None" and not native.stderr.strip()


@needs_x86
def test_ensure_restarts_a_command_whose_torch_is_already_loaded():
    """torch loaded first: the pins cannot take effect in this process, so the command runs again with them (the
    restarted `octomega recipes` lists the recipes); a programmatic call (no command) warns instead; a process that
    already restarted once never restarts again."""
    code = "import torch; from octomega import numerics; numerics.ensure('pinned', command={cmd})"
    proc = _python(code.format(cmd="['recipes']"), _clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "restarting with pinned CPU numerics (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE" in proc.stderr
    assert "tiny_stable" in proc.stdout
    warned = _python(code.format(cmd="None"), _clean_env())
    assert warned.returncode == 0 and "warning: train.cpu_numerics=pinned but" in warned.stderr
    looped = _python(code.format(cmd="['recipes']"), _clean_env(**{numerics.MARK: "1"}))
    assert "warning" in looped.stderr and "tiny_stable" not in looped.stdout


@pytest.mark.parametrize("argv, restart", [
    (["train", "tiny_stable", "data.mock=true"], None),  # a call from Python (a test) never restarts itself
    (None, ["train", "tiny_stable", "data.mock=true"]),  # the command itself may
    (["rl", "llama32_3b_rl_grpo"], None),
    (None, ["rl", "llama32_3b_rl_grpo"]),
])
def test_only_the_command_itself_may_restart(monkeypatch, argv, restart):
    """octomega.cli.main tells `train` and `rl` whether this process is the command (numerics.ensure's `command`)."""
    import octomega.rl.loop
    import octomega.train.loop
    from octomega.cli import main

    asked = []
    monkeypatch.setattr(numerics, "ensure", lambda mode, *, command, prog: asked.append(command))
    monkeypatch.setattr(octomega.train.loop, "run_training", lambda cfg: {"status": "complete"})
    monkeypatch.setattr(octomega.rl.loop, "run_rl", lambda cfg: {"status": "complete"})
    monkeypatch.setattr(sys, "argv", ["octomega", *(restart or [])])
    assert main(argv) == 0
    assert asked == [restart]


def test_rl_called_from_python_never_restarts(monkeypatch):
    import octomega.rl.loop
    from octomega.rl.cli import main

    asked = []
    monkeypatch.setattr(numerics, "ensure", lambda mode, *, command, prog: asked.append(command))
    monkeypatch.setattr(octomega.rl.loop, "run_rl", lambda cfg: {"status": "complete"})
    assert main(["llama32_3b_rl_grpo"]) == 0
    assert asked == [None]


def _vendor_flip_library(tmp_path: Path) -> Path:
    """A library that tells MKL the CPU is of the other vendor (see the module docstring)."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the vendor-flip library")
    intel = "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    src = tmp_path / "flip_vendor.c"
    answer = 0 if intel else 1
    src.write_text(f"int mkl_serv_intel_cpu_true(void) {{ return {answer}; }}\n"
                   f"int mkl_serv_intel_cpu(void) {{ return {answer}; }}\n")
    lib = tmp_path / "libflip_vendor.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


MATMUL = ("import torch; g = torch.Generator().manual_seed(0); a = torch.randn(300, 257, generator=g); "
          "b = torch.randn(257, 129, generator=g); print(repr((a @ b).double().sum().item()))")


@needs_x86
@pytest.mark.slow
def test_pinned_training_ignores_mkl_vendor_and_thread_count(tmp_path, tiny_data_root):
    lib = _vendor_flip_library(tmp_path)
    # The emulation is real: unpinned, the other vendor's MKL path gives another fp32 matmul.
    here = _python(MATMUL, _clean_env(OMP_NUM_THREADS="2"))
    flipped = _python(MATMUL, _clean_env(OMP_NUM_THREADS="2", LD_PRELOAD=str(lib)))
    assert here.returncode == 0 and flipped.returncode == 0, here.stderr + flipped.stderr
    assert here.stdout != flipped.stdout, "the vendor flip did not change MKL's code path"

    def train(name: str, **env) -> list[float]:
        run = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "octomega", "train", "tiny_stable", f"run_dir={run}", "train.train_tokens=81920",
             "optim.warmup_tokens=20480", "logging.log_interval=1", "checkpoint.save_interval=0",
             "train.valid_interval=0", "logging.wandb=false"],
            env=_clean_env(OCTOMEGA_TINY_ROOT=str(tiny_data_root), **env), capture_output=True, text=True,
            cwd=REPO, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "cpu numerics: pinned (in effect)" in proc.stdout
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "train"] + [r["valid_loss/qa_long"] for r in rows
                                                                    if r["kind"] == "valid"]

    # `octomega train` pins by itself (the tiny recipes say train.cpu_numerics=pinned): no pin in either env.
    reference = train("two_threads", OMP_NUM_THREADS="2")
    other = train("other_vendor_one_thread", OMP_NUM_THREADS="1", LD_PRELOAD=str(lib))
    assert len(reference) == 21
    assert other == reference
