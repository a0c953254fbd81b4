"""A small stage runner: a DAG of commands, run as subprocesses up to `jobs` at a time, skipping finished stages.

Each stage writes OUT/logs/<stage>.log; a stage counts as finished only when its command exited 0 and the runner
wrote OUT/stages/<stage>.done (with its duration). `--from STAGE` deletes the done markers of that stage and of
every stage that depends on it, so they run again. While stages run, the console shows each one's progress from
its log (the "step k/N | ... | ETA" lines of octomega train and octomega rl) every `progress_every` seconds, when
it moved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from octomega.lifetime import exec_argv


@dataclass
class Stage:
    name: str
    cmd: list[str]
    deps: list[str] = field(default_factory=list)
    threads: int = 1  # OMP/torch threads for the stage's process
    env: dict = field(default_factory=dict)
    what: str = ""  # one line for the progress output
    priority: int = 0  # among stages ready to start, higher first (long training stages before short evaluations)


class StageFailed(RuntimeError):
    pass


_STEP = re.compile(r"step (\d+)/(\d+)")
_SHOWN = ("loss", "reward", "acc")  # besides step and ETA, the fields a progress line keeps


def stage_progress(log: Path, tail_bytes: int = 16384) -> str | None:
    """The last progress line of a stage's log, compacted ("step 120/350 (34%) | loss 2.1234 | ETA 1:05"), or None.

    Progress lines are the console lines of octomega train and octomega rl: "step k/N | name value | ... | ETA t".
    Only the end of the log is read, and only its complete lines."""
    try:
        with open(log, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - tail_bytes)
            f.seek(start)
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    first = tail.find("\n") + 1 if start else 0  # a line cut by the tail is not read
    for line in reversed(tail[first:tail.rfind("\n") + 1].splitlines()):
        parts = [p.strip() for p in line.split(" | ")]
        m = _STEP.fullmatch(parts[0])
        if m is None or not parts[-1].startswith("ETA "):
            continue
        k, n = int(m[1]), int(m[2])
        pct = f" ({100 * k // n}%)" if n > 0 else ""
        return " | ".join([f"step {k}/{n}{pct}", *(p for p in parts[1:-1] if p.split(" ", 1)[0] in _SHOWN),
                           parts[-1]])
    return None


def downstream(stages: list[Stage], start: str) -> set[str]:
    names = {s.name for s in stages}
    if start not in names:
        raise KeyError(f"unknown stage {start!r}; stages: {', '.join(s.name for s in stages)}")
    out, changed = {start}, True
    while changed:
        changed = False
        for s in stages:
            if s.name not in out and out.intersection(s.deps):
                out.add(s.name)
                changed = True
    return out


class Runner:
    def __init__(self, stages: list[Stage], out: Path, *, jobs: int = 2, progress_every: float = 20.0):
        self.stages, self.out, self.jobs = stages, out, max(1, jobs)
        self.progress_every = progress_every  # seconds between looks at the running stages' logs

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def done_marker(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.done"

    def is_done(self, name: str) -> bool:
        return self.done_marker(name).exists()

    def reset_from(self, start: str) -> list[str]:
        redo = downstream(self.stages, start)
        for name in redo:
            self.done_marker(name).unlink(missing_ok=True)
        return sorted(redo)

    def _start(self, s: Stage) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS=str(s.threads), OCTOMEGA_THREADS=str(s.threads),
                   MKL_NUM_THREADS=str(s.threads), **s.env)
        log = open(self.log_path(s.name), "w")
        log.write("$ " + " ".join(s.cmd) + "\n")
        log.flush()
        # through octomega.lifetime: a pipeline killed by SIGKILL sends its running stages SIGTERM (they save and
        # stop, as on the pipeline's own SIGTERM) instead of leaving them running beside a re-run
        return subprocess.Popen(exec_argv(s.cmd), stdout=log, stderr=subprocess.STDOUT, env=env)

    def run(self) -> dict[str, float]:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "stages").mkdir(parents=True, exist_ok=True)
        pending = [s for s in self.stages if not self.is_done(s.name)]
        skipped = [s.name for s in self.stages if self.is_done(s.name)]
        if skipped:
            print(f"[pipeline] already done (skipped): {', '.join(skipped)}", flush=True)
        running: dict[str, tuple[subprocess.Popen, float, Stage]] = {}
        durations: dict[str, float] = {}
        t_start = time.perf_counter()
        try:
            self._loop(pending, running, durations, t_start)
        finally:  # an interrupted or failed pipeline leaves no stage running behind it
            for proc, _, _ in running.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc, _, _ in running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        return durations

    def _show_progress(self, running: dict, shown: dict[str, str]) -> None:
        """A line per running stage whose progress moved since it was last shown."""
        for name in running:
            progress = stage_progress(self.log_path(name))
            if progress and progress != shown.get(name):
                shown[name] = progress
                print(f"[pipeline] {name}: {progress}", flush=True)

    def _loop(self, pending: list[Stage], running: dict, durations: dict, t_start: float) -> None:
        shown: dict[str, str] = {}
        next_look = time.monotonic() + self.progress_every
        while pending or running:
            for s in sorted(pending, key=lambda s: -s.priority):  # stable sort: list order within a priority
                if len(running) >= self.jobs:
                    break
                if all(self.is_done(d) for d in s.deps):
                    pending.remove(s)
                    print(f"[pipeline] start {s.name}: {s.what or ' '.join(s.cmd[-3:])}", flush=True)
                    running[s.name] = (self._start(s), time.perf_counter(), s)
            for name, (proc, t0, s) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[name]
                dt = time.perf_counter() - t0
                if rc != 0:
                    tail = self.log_path(name).read_text().splitlines()[-25:]
                    raise StageFailed(f"stage {name} failed (exit {rc}) after {dt:.0f} s; last lines of "
                                      f"{self.log_path(name)}:\n" + "\n".join(tail))
                self.done_marker(name).write_text(json.dumps({"seconds": dt, "finished": time.time()}))
                durations[name] = dt
                print(f"[pipeline] done  {name} in {dt:.0f} s (total {time.perf_counter() - t_start:.0f} s)",
                      flush=True)
            if pending and not running and not any(all(self.is_done(d) for d in s.deps) for s in pending):
                raise StageFailed("stages cannot start (missing dependencies): " + ", ".join(s.name for s in pending))
            if time.monotonic() >= next_look:
                self._show_progress(running, shown)
                next_look = time.monotonic() + self.progress_every
            time.sleep(0.2)


def python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]
