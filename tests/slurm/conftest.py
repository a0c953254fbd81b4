"""A real one-node Slurm cluster for tests/slurm, started with scripts/slurm_local.sh.

scripts/slurm_local.sh installs Debian's slurm-wlm and munge with apt-get when they are missing, writes a
slurm.conf for this host and starts munged, slurmctld and slurmd; this fixture stops the daemons at the end of the
session when it started them. Tests that need the cluster are skipped, with the reason, only when Slurm cannot be
installed or started here (not root, no apt-get, apt-get failed); OCTOMEGA_REQUIRE_SLURM=1 turns that skip into a
failure (CI). Any other start-up failure fails the tests with the daemons' log tails.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLURM_LOCAL = ROOT / "scripts" / "slurm_local.sh"
FINAL_STATES = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def _local(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM_LOCAL), *args], capture_output=True, text=True, timeout=timeout)


def _cannot(reason: str) -> None:
    msg = f"no local Slurm cluster: {reason}"
    if os.environ.get("OCTOMEGA_REQUIRE_SLURM") == "1":
        pytest.fail(msg + " (OCTOMEGA_REQUIRE_SLURM=1)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def slurm_cluster():
    """{"SLURM_CONF": path} of a running one-node cluster."""
    check = _local("check")
    if check.returncode == 3:
        _cannot(check.stdout.strip() or check.stderr.strip())
    was_running = _local("status").returncode == 0
    start = _local("start")
    if start.returncode == 3:
        _cannot(start.stderr.strip().splitlines()[-1])
    if start.returncode != 0:
        pytest.fail(f"scripts/slurm_local.sh start failed (exit {start.returncode}):\n{start.stderr}")
    conf = start.stdout.strip().rsplit("SLURM_CONF=", 1)[-1]
    yield {"SLURM_CONF": conf}
    if not was_running:
        _local("stop", timeout=60)


class Slurm:
    """Submit and follow jobs on the test cluster."""

    def __init__(self, conf: str):
        self.env = {**os.environ, "SLURM_CONF": conf, "WANDB_MODE": "disabled"}
        for k in list(self.env):  # a test run inside a Slurm job must not look like one to the scripts
            if k.startswith(("SLURM_", "SBATCH_")) and k != "SLURM_CONF":
                del self.env[k]

    def run(self, args: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run(args, cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def job(self, job_id: str) -> dict:
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait(self, job_id: str, timeout: float) -> dict:
        """The job's record once it reached a final state (requeued jobs go on until they end)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                self.run(["scancel", job_id], check=False)
                raise AssertionError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s; cancelled")
            time.sleep(2)


@pytest.fixture(scope="session")
def slurm(slurm_cluster) -> Slurm:
    return Slurm(slurm_cluster["SLURM_CONF"])
