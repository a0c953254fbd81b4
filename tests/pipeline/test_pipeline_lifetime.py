"""A pipeline killed by SIGKILL takes its running stage along: the stage gets SIGTERM (a training stage saves and
stops, as on the pipeline's own SIGTERM) instead of running on beside a re-run (octomega/lifetime.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from proc_marks import kill_marked, marked, marked_env, wait_for

RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from octomega.pipeline.runner import Runner, Stage

    out = Path(sys.argv[1])
    stage = ("import signal, sys, time\\n"
             "def term(*_):\\n"
             "    open(sys.argv[1], 'w').write('SIGTERM')\\n"
             "    sys.exit(0)\\n"
             "signal.signal(signal.SIGTERM, term)\\n"
             "open(sys.argv[1], 'w').write('running')\\n"
             "time.sleep(300)\\n")
    Runner([Stage("long", [sys.executable, "-c", stage, str(out / "stage.txt")])], out).run()
""")


def test_a_killed_pipeline_stops_its_stage(tmp_path):
    (tmp_path / "runner.py").write_text(RUNNER)
    mark, env = marked_env()
    proc = subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(tmp_path)], env=env)
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "stage.txt").exists() or (tmp_path / "stage.txt").read_text() != "running":
            assert proc.poll() is None and time.monotonic() < end, "the stage did not start"
            time.sleep(0.1)
        assert len(marked(mark)) == 2  # the runner and its stage
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_for(mark, lambda m: not m, 5.0) == {}
        assert (tmp_path / "stage.txt").read_text() == "SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(mark)
