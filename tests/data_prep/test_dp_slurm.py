"""The Slurm executor path end to end, with stand-ins for sbatch and scontrol.

tokenize --executor slurm submits a datatrove job array and a merge job that depends on it. The stand-in sbatch
records each submission; the test then plays Slurm: it runs every array task and the merge job the way the
submitted scripts do (launch_pickled_pipeline with SLURM_ARRAY_TASK_ID set), and checks the merged output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dp_helpers import read_prefix, sample_texts, write_jsonl
from test_dp_tokenize import expected

from data_prep import tokenize

SBATCH = """#!/bin/sh
n=$(($(cat "$LOG/count" 2>/dev/null || echo 0) + 1)); echo $n > "$LOG/count"
echo "$@" > "$LOG/args_$n"; eval "cat \\${$#}" > "$LOG/script_$n"; echo "Submitted batch job $n"
"""


def test_slurm_submission_then_array_tasks_and_merge(tmp_path, tokenizer_dir, monkeypatch, capsys):
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch_log"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(log))
    texts = sample_texts(120, seed=21)
    lines = [{"text": t} for t in texts[:60]] + ["{broken"] + [{"text": t} for t in texts[60:]]
    write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out"
    code = tokenize.main(["--input", str(tmp_path / "in.jsonl"), "--tokenizer", str(tokenizer_dir), "--output-dir",
                          str(out), "--name", "c", "--executor", "slurm", "--partition", "debug", "--tasks", "2",
                          "--time", "1:00:00", "--valid-docs", "5"])
    assert code == 0 and "submitted Slurm jobs" in capsys.readouterr().out
    scripts = {int(p.name.split("_")[1]): p.read_text() for p in log.glob("script_*")}
    args = {int(p.name.split("_")[1]): p.read_text() for p in log.glob("args_*")}
    jobs = {n: s for n, s in scripts.items() if "launch_pickled_pipeline" in s}  # not datatrove's merge_stats jobs
    tok_job = next(n for n, s in jobs.items() if "--job-name=tokenize_c" in s)
    merge_job = next(n for n, s in jobs.items() if "--job-name=merge_c" in s)
    assert "#SBATCH --array=0-1" in scripts[tok_job] and "#SBATCH --partition=debug" in scripts[tok_job]
    assert f"--dependency=afterok:{tok_job}" in args[merge_job]
    assert not (out / "c.bin").exists()

    env = dict(os.environ, SLURM_NODELIST="localhost")  # jobs import data_prep as installed, not from the cwd
    launcher = str(Path(sys.executable).parent / "launch_pickled_pipeline")
    for task in range(2):  # Slurm runs the array tasks, then the merge job
        subprocess.run([launcher, str(out / ".work/c/datatrove/executor.pik")], check=True, cwd=tmp_path,
                       env=env | {"SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True)
    subprocess.run([launcher, str(out / ".work/c/datatrove_merge/executor.pik")], check=True, cwd=tmp_path,
                   env=env | {"SLURM_ARRAY_TASK_ID": "0"}, capture_output=True)
    stats = json.loads((out / "c.stats.json").read_text())
    assert stats["documents"] == 115 and stats["valid_documents"] == 5 and stats["skipped"] == {"invalid_json": 1}
    assert sorted(read_prefix(out / "c") + read_prefix(out / "c_valid")) == sorted(expected(tokenizer_dir, texts))
