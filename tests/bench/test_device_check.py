"""bench/device_check.sh's bookkeeping, on the CPU. What cannot run here is the GPU: in --simulate mode every part
runs in its CPU form (the GPU tier collects and skips for want of CUDA, the bench is its CPU smoke run, nvidia-smi
is absent), so the parts, the merged JUnit XML, the bench JSON, summary.json and the files left in $OUT are the
real ones. The time boxes are tested with stand-in commands (sleepers, one that ignores SIGTERM, one whose child
outlives it): what they check is the clock and the killing, not the commands."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "device_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "bench" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.slow
def test_simulated_call_runs_every_part_and_summarises(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    p = _run("--simulate", "--out", str(out), "--budget-s", "600")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert time.monotonic() - t0 < 600
    files = sorted(f.name for f in out.iterdir())
    assert files == ["gpu_tests.log", "gpu_tests.xml", "setup.log", "summary.json", "train_throughput_tiny_cpu.json",
                     "train_throughput_tiny_cpu.log"]  # at most 8 files come back from the device, no folder
    s = json.loads((out / "summary.json").read_text())
    assert [(e["part"], e["status"]) for e in s["parts"]] == [
        ("env", "ok"), ("install", "skipped: megatron.core imports already"), ("tests", "ok"), ("bench", "ok")]
    tests = next(e for e in s["parts"] if e["part"] == "tests")
    assert [m["module"] for m in tests["modules"]] == list(_module().MODULES)
    t = s["tests"]
    assert t["tests"] >= 16 and t["skipped"] == t["tests"] and t["passed"] == 0 and t["failed"] == []
    assert all("needs a CUDA GPU" in reason for reason in t["skipped_tests"].values())
    root = ET.parse(out / "gpu_tests.xml").getroot()
    assert root.tag == "testsuites" and sum(int(x.get("tests")) for x in root) == t["tests"]
    b = s["bench"]
    assert b["written"] and b["complete"] and set(b["runs"]) == {"hf_sdpa", "octomega"}
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in b["runs"].values())
    assert s["elapsed_s"] <= 600 and "gpu tests: 0 passed, 0 failed" in p.stdout
    assert "python 3." in (out / "setup.log").read_text()  # the env part's versions line


def test_a_part_cut_by_its_box_does_not_lose_the_next(tmp_path):
    """tests runs a stand-in that ignores SIGTERM and leaves a grandchild: at its 2 s box the whole process group
    gets SIGTERM, then SIGKILL; the bench after it still runs, and summary.json says what happened to each."""
    out, pidfile = tmp_path / "out", tmp_path / "grandchild.pid"
    stubborn = (f"{sys.executable} -c \"import signal, subprocess, time; signal.signal(signal.SIGTERM, "
                f"signal.SIG_IGN); open('{pidfile}', 'w').write(str(subprocess.Popen(['sleep', '300']).pid)); "
                "time.sleep(300)\"")
    t0 = time.monotonic()
    p = _run("--simulate", "--out", str(out), "--parts", "tests,bench", "--box", "tests=2",
             "--part-cmd", f"tests={stubborn}", "--part-cmd", "bench=echo bench ran", timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stdout + p.stderr  # a part timed out
    s = json.loads((out / "summary.json").read_text())
    tests, bench = s["parts"]
    assert tests["status"] == "timed out" and tests["modules"][0]["timed_out"]
    assert 2 <= tests["modules"][0]["seconds"] < 2 + _module().KILL_GRACE_S + 5  # SIGTERM ignored: SIGKILL
    assert all(m["status"] == "not run: the tier's box is spent" for m in tests["modules"][1:])
    assert bench["status"] == "ok" and "bench ran" in (out / "train_throughput_tiny_cpu.log").read_text()
    assert s["bench"] == {"written": False} and took < 60
    grandchild = int(pidfile.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_boxes_leave_the_bench_its_share_and_never_pass_the_budget(tmp_path):
    m = _module()
    check = m.Check(m.parse_args(["--budget-s", "200", "--out", str(tmp_path)]))
    assert check.box("env") == 30 and check.box("install") == 90
    assert check.box("tests") == pytest.approx(200 - m.RESERVE_S - m.BENCH_MIN_S, abs=0.5)  # not its 270 s cap
    assert check.box("bench") == pytest.approx(200 - m.RESERVE_S, abs=0.5)
    check = m.Check(m.parse_args(["--budget-s", "600", "--out", str(tmp_path), "--box", "tests=50"]))
    assert check.box("tests") == 50 and check.box("env") == 30
    check = m.Check(m.parse_args(["--budget-s", "600", "--out", str(tmp_path), "--parts", "tests"]))
    assert check.box("tests") == 270  # no bench to leave time for; the cap holds
    check.t0 -= 595  # 5 s left of the budget: nothing starts
    assert check.box("bench") == 0
    entry = check.run_part("bench", ["sleep", "1"], "x.log")
    assert entry["status"] == "not run: no time left"


@pytest.mark.parametrize("args, message", [
    (["--parts", "env,gpu"], "unknown part(s) gpu"),
    (["--box", "tests"], "expected PART=VALUE"),
    (["--box", "tests=soon"], "is not a number of seconds"),
    (["--budget-s", "5"], "must be above 10 s"),
])
def test_bad_arguments_are_one_line(args, message):
    p = _run(*args, "--dry-run", timeout=60)
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_te_needs_the_kit_built_on_this_machine(tmp_path):
    p = _run("--te", "--out", str(tmp_path), env={"TE_TMP": str(tmp_path / "te")}, timeout=60)
    assert p.returncode == 2 and "bench/device_te.sh build" in p.stderr and not any(tmp_path.iterdir())


def test_dry_run_prints_the_device_call():
    p = _run("--dry-run", timeout=60)
    plan = json.loads(p.stdout)
    assert plan["device_call"] == {"command": "bash bench/device_check.sh", "carry": [".whl"], "timeout_s": 540}
    assert plan["budget_s"] < 480 < plan["device_call"]["timeout_s"] <= 600  # 8 minutes of work, the tool's 10
    assert "--shape 1b" in plan["bench"] and "--impl hf_sdpa --impl octomega --impl hf_sdpa_compile" in plan["bench"]
    te = json.loads(_run("--dry-run", "--te", env={"TE_TMP": "/nonexistent"}, timeout=60).stdout)
    assert te["device_call"]["carry"] == [] and "--layer-spec te" in te["bench"]  # TE came by device_te.sh


def test_carry_is_measured_against_the_limit(tmp_path):
    m = _module()
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (repo / ".gitignore").write_text(".whl/\n")
    (repo / "tracked.py").write_bytes(b"x" * 1000)
    git("add", ".")
    (repo / "untracked.txt").write_bytes(b"y" * 500)  # untracked, not ignored: it travels too
    (repo / ".whl").mkdir()
    (repo / ".whl" / "a.whl").write_bytes(b"z" * 2048)
    r = m.carry_report(repo, [".whl"])
    assert r["tree_bytes"] == 1000 + 500 + len(".whl/\n") and r["carry_bytes"] == {".whl": 2048} and r["fits"]
    with open(repo / ".whl" / "big.whl", "wb") as f:
        f.truncate(m.CARRY_LIMIT)  # 64 MiB on top of the rest
    assert not m.carry_report(repo, [".whl"])["fits"]
    real = m.carry_report(ROOT, [])
    assert real["fits"] and real["tree_bytes"] < 40 * 2**20, real  # room left for wheels


def test_scripts_parse():
    for script in ("device_check.sh", "te_build_wheel.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "bench" / script)]).returncode == 0, script


def test_te_build_wheel_needs_the_kit(tmp_path):
    """bench/te_build_wheel.sh (its build needs the 5 GB venv and ~30+ min here: run by hand, bench/NOTES.md) refuses
    to start without te_kit.sh's downloads, before making anything."""
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    (repo / "bench" / "te_build_wheel.sh").write_text((ROOT / "bench" / "te_build_wheel.sh").read_text())
    p = subprocess.run(["bash", str(repo / "bench" / "te_build_wheel.sh")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "TE_BUILD": str(tmp_path / "build")})
    assert p.returncode == 2 and "run bench/te_kit.sh first" in p.stderr and not (tmp_path / "build").exists()
