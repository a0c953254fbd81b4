"""bench/device_te.sh's bookkeeping, on small fake parts in a scratch copy of the script (the real parts are the
276 MB TE wheel, and the build and bench need the GPU machine): parts are appended in order and once, a gap is
refused, a reassembled wheel with the wrong md5 is refused before anything is installed, and `bench` refuses to
start before `build`. bench/te_kit.sh (which downloads) is only checked for syntax."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _repo(tmp_path: Path, parts: dict[int, bytes]) -> Path:
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "device_te.sh", repo / "bench")
    for i, data in parts.items():
        (repo / ".te" / f"p{i}").mkdir(parents=True)
        (repo / ".te" / f"p{i}" / f"part{i - 1:02d}").write_bytes(data)
        (repo / ".te" / f"p{i}" / "core.name").write_text("core-1.0-py3-none-any.whl\n")
    return repo


def _run(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TE_TMP": str(tmp_path / "te"), "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(repo / "bench" / "device_te.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_parts_are_appended_in_order_once_and_a_gap_is_refused(tmp_path):
    repo = _repo(tmp_path, {1: b"aa", 3: b"cc"})
    p = _run(repo, tmp_path, "append")
    assert p.returncode == 2 and "part p3 is here but p2 was never appended" in p.stderr
    partial = tmp_path / "te" / "core-1.0-py3-none-any.whl.partial"
    assert partial.read_bytes() == b"aa"
    (repo / ".te" / "p2").mkdir()
    (repo / ".te" / "p2" / "part01").write_bytes(b"bb")
    (repo / ".te" / "p2" / "core.name").write_text("core-1.0-py3-none-any.whl\n")
    p = _run(repo, tmp_path, "append")
    assert p.returncode == 0, p.stderr
    assert _run(repo, tmp_path, "append").returncode == 0  # the same parts again: nothing appended twice
    assert partial.read_bytes() == b"aabbcc"


def test_build_refuses_a_wrong_md5_and_bench_waits_for_build(tmp_path):
    repo = _repo(tmp_path, {1: b"aa", 2: b"bb"})
    small = repo / ".te" / "small"
    small.mkdir()
    (small / "core.name").write_text("core-1.0-py3-none-any.whl\n")
    (small / "core.md5").write_text(hashlib.md5(b"aaXX").hexdigest() + "\n")
    p = _run(repo, tmp_path, "build")
    assert p.returncode == 1 and "reassembled with md5" in p.stderr and "p1 p2" in p.stderr
    assert not (tmp_path / "te" / "build_site").exists()
    p = _run(repo, tmp_path, "bench", "1b")
    assert p.returncode == 2 and "run 'build' first" in p.stderr


def test_scripts_parse():
    for script in ("te_kit.sh", "device_te.sh", "device_train_throughput.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "bench" / script)]).returncode == 0, script
