"""Issue 17, item 7: a data_prep command killed by SIGKILL leaves no process behind (data_prep/executor.py).

datatrove's local executor starts a `multiprocess` Manager for every run and, with --workers > 1, a pool of workers
through multiprocessing's fork server; none of them watched the command, so a killed tokenize left them running
(a busy worker finished its task and wrote into the work directory). Now each asks the kernel to end with its
parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from dp_helpers import sample_texts
from proc_marks import kill_marked, marked, marked_env, wait_for


@pytest.mark.slow
def test_a_killed_tokenize_leaves_no_process(tmp_path, tokenizer_dir):
    texts = sample_texts(2000, seed=5)
    with open(tmp_path / "big.jsonl", "w") as f:  # ~20 MB: the workers are busy for a while
        for i in range(100):
            f.write("".join(json.dumps({"text": f"{i} {t}"}) + "\n" for t in texts) * 2)
    mark, env = marked_env()
    env["RAYON_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "data_prep.tokenize", "--input", str(tmp_path / "big.jsonl"),
                             "--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path / "out"), "--name", "web",
                             "--workers", "2", "--tasks", "4"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    logs = tmp_path / "out" / ".work" / "web" / "datatrove" / "logs"
    try:
        end = time.monotonic() + 120
        while len(list(logs.glob("task_*.log"))) < 2:  # both workers are in a task
            assert proc.poll() is None and time.monotonic() < end, "tokenize ended or did not start its tasks"
            time.sleep(0.1)
        running = marked(mark)  # the command, datatrove's manager, the fork server and two workers (and more)
        assert proc.poll() is None and len(running) >= 5, running
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_for(mark, lambda m: not m, 5.0)
        assert left == {}, f"left behind after SIGKILL: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(mark)
