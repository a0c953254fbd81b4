"""The repository stands on its own: no tracked file reads from, links to or cites a folder outside it (the
reference desk beside the checkout, or a path of the machine a file was written on)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folders outside the repository that a file must not depend on or cite.
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(design|benchmarks)\b")
# Absolute paths of a particular machine: the workspace and home folders, and temp dirs made by tempfile/pytest
# (results record commands; they must be rerunnable elsewhere). Conventional scratch paths in examples, such as
# /tmp/site or /data/octo, are not a machine's and stay allowed.
MACHINE_PATH = re.compile(
    r"(?<![\w.~$}/-])(/(?:work|root)/|/(?:home|Users)/\w|/tmp/(?:pytest-of-|tmp\w{6,}|\w+_[a-z0-9_]{8}\b))")
# Background notes that were never part of the repository (their content lives in docs/ now).
OLD_NOTES = re.compile(r"\b(RECIPE|TINY_SCIENCE|TE_ON_DEVICE|ARCHITECTURE|MEGATRON_NOTES|VLLM_ON_CPU|STYLE)\.md\b")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # an unpacked source tree without git
        return [p for p in ROOT.rglob("*") if p.is_file() and not set(p.relative_to(ROOT).parts[:1]) & {
            ".git", ".venv", "runs", "pipeline_out", ".pytest_cache"} and "__pycache__" not in p.parts]
    return [ROOT / name for name in out.decode().split("\0") if name]


def offending_lines(pattern: re.Pattern) -> list[str]:
    hits = []
    for path in tracked_files():
        if "testsets" in path.parts or not path.is_file():  # benchmark data: third-party text
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:160]}")
    return hits


@pytest.mark.parametrize("what,pattern", [("a folder outside the repository", OUTSIDE),
                                          ("an absolute path of a particular machine", MACHINE_PATH),
                                          ("a note that is not in the repository (use docs/)", OLD_NOTES)])
def test_no_tracked_file_refers_outside_the_repository(what, pattern):
    hits = offending_lines(pattern)
    assert not hits, f"{len(hits)} line(s) refer to {what}:\n" + "\n".join(hits[:40])


# The examples are assembled from pieces, so that this file itself holds no such reference and is scanned like any.
_S, _M = "shared", ".md"


@pytest.mark.parametrize("line,bad", [
    (f"see ../{_S}/benchmarks", OUTSIDE), (f"{_S}/design/RECIPE{_M} says", OUTSIDE),
    ('"command": "/' + 'work/main/.venv/bin/python -m x"', MACHINE_PATH), ("cd /" + "home/alice/octo", MACHINE_PATH),
    ("written to /" + "tmp/convert_mem_a0js1gdy/hf", MACHINE_PATH),
    ("/" + "tmp/pytest-of-root/pytest-3/x", MACHINE_PATH), ("/" + "root/octo", MACHINE_PATH),
    (f"defaults from RECIPE{_M}", OLD_NOTES)])
def test_the_patterns_catch_what_they_are_for(line, bad):
    assert bad.search(line)


@pytest.mark.parametrize("line", ["pip install --target /tmp/site x", "--output-dir /data/octo",
                                  "$OCTOMEGA_SLURM_DIR (default /tmp/octomega-slurm)", "docs/recipe.md",
                                  "the shared benchmark layout", "~/work/x", "OUT=/tmp/stray"])
def test_the_patterns_leave_ordinary_text_alone(line):
    assert not any(p.search(line) for p in (OUTSIDE, MACHINE_PATH, OLD_NOTES))
