"""Issue 17, item 7: a training run killed by SIGKILL (the OOM killer, scancel, kill -9) leaves no process behind.

Before, two processes of every killed run lived on for good: the multiprocessing Manager that Megatron's checkpoint
writer starts on the first save, and multiprocessing's resource tracker that Manager kept open (octomega/runtime/
megatron_compat.py, fix 5, now starts neither). DataLoader workers (data.num_workers) ask the kernel to end with the
run (octomega/lifetime.py) instead of noticing a dead parent between batches, every few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from proc_marks import kill_marked, marked, marked_env, wait_for
from workers import tiny_cfg


@pytest.mark.slow
def test_a_killed_run_leaves_no_process(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", "train.train_tokens=2560000", "data.num_workers=2")  # ~10k steps: still running
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    mark, env = marked_env()
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "octomega", "train", str(tmp_path / "cfg.json")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 300
        while not list((tmp_path / "run" / "checkpoints").glob("iter_*/COMPLETE")):  # the writer has run
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.monotonic() < end, "no checkpoint after 300 s"
            time.sleep(0.2)
        running = wait_for(mark, lambda m: len(m) >= 3, 30)  # the run and its two DataLoader workers
        assert proc.pid in running and len(running) >= 3, running
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_for(mark, lambda m: not m, 3.0)
        assert left == {}, f"left behind after SIGKILL: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(mark)
        log.close()
