"""Issue 17, item 6: a full disk while saving a checkpoint is one error line (the path, the bytes the checkpoint
needs, the bytes free, the previous checkpoint kept), exit status 2; the half-written checkpoint is removed (it was
never COMPLETE), and the run resumes from the previous one.

A full disk cannot be made here safely (filling the machine's disk would disturb everything else on it, and a small
tmpfs needs root), so these tests simulate one: a checkpoint write fails with ENOSPC part-way through its file (after
some bytes of it reached the disk), or the filesystem reports too little free space."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from workers import tiny_cfg

from octomega.testing import run_distributed

# Run `octomega train CONFIG` with the checkpoint writer's tensor writes failing with ENOSPC from the third one
# into iter_0000002 on (a simulated full disk: the first two writes of that file, and part of the third, land).
FULL_DISK_DRIVER = textwrap.dedent("""
    import errno, functools, os, sys
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    real, calls = filesystem_async._write_item, [0]

    @functools.wraps(real)
    def write_item(*args, **kwargs):
        stream = next(a for a in args if hasattr(a, "write") and isinstance(getattr(a, "name", None), str))
        if "iter_0000002" in stream.name:
            calls[0] += 1
            if calls[0] >= 3:
                stream.write(b"\\0" * 4096)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    filesystem_async._write_item = write_item
    from octomega.cli import main
    sys.exit(main(["train", sys.argv[1]]))
""")


def _octomega_train(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "disabled", **(env or {})})


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_the_run_resumes_from_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_cfg(run)))  # 5 steps, a checkpoint after each
    (tmp_path / "driver.py").write_text(FULL_DISK_DRIVER)
    proc = _octomega_train(str(tmp_path / "driver.py"), str(tmp_path / "cfg.json"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    ckpts = run / "checkpoints"
    assert re.fullmatch(
        rf"octomega train: error: no space left on device for checkpoint {ckpts}/iter_0000002: it needs about "
        rf"[\d.]+ [kM]B, free there now: [\d.]+ [kMGT]?B; nothing of it was kept, and the previous checkpoint "
        rf"{ckpts}/iter_0000001 is kept \(a resume starts there\)\. Free space there \(or write to a larger disk\), "
        r"then run again", last), last
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_0000001", "latest_checkpointed_iteration.txt"]
    assert (ckpts / "iter_0000001" / "COMPLETE").exists() and (ckpts / "latest_checkpointed_iteration.txt").read_text() == "1"

    again = _octomega_train("-m", "octomega", "train", str(tmp_path / "cfg.json"))  # space freed: run again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting at step 1" in again.stdout
    assert json.loads((run / "train_status.json").read_text())["status"] == "complete"
    assert [p.name for p in sorted(ckpts.glob("iter_*"))] == [f"iter_000000{i}" for i in range(1, 6)]


def _refusals(rank: int, run_dir: str) -> dict:
    """save_checkpoint with too little free space (a simulated nearly full disk), and with a write that fails for
    another reason; what each raised and what the checkpoints dir then held."""
    import errno
    import functools
    import shutil
    from unittest import mock

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from octomega import checkpoint as ckpt
    from octomega.config import RunConfig, from_dict
    from octomega.train.loop import Trainer

    t = Trainer(from_dict(RunConfig, tiny_cfg(run_dir)))
    save_dir = Path(run_dir) / "checkpoints"
    ckpt.save_checkpoint(save_dir, 1, t.model, optimizer=t.optimizer)
    out = {}
    nearly_full = shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    with mock.patch("shutil.disk_usage", return_value=nearly_full):
        try:
            ckpt.save_checkpoint(save_dir, 2, t.model, optimizer=t.optimizer)
        except ckpt.DiskFull as e:
            out["short"] = str(e)
    out["after_short"] = sorted(p.name for p in save_dir.iterdir())

    real = filesystem_async._write_item

    @functools.wraps(real)
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # an I/O error, not a full disk

    with mock.patch.object(filesystem_async, "_write_item", broken):
        try:
            ckpt.save_checkpoint(save_dir, 3, t.model, optimizer=t.optimizer)
        except BaseException as e:  # torch's CheckpointException is a BaseException
            out["other"] = f"{type(e).__name__}: {e}"[:300]
    out["after_other"] = sorted(p.name for p in save_dir.iterdir())
    return out


@pytest.mark.slow
def test_too_little_free_space_is_refused_before_writing_and_other_errors_keep_their_type(tmp_path):
    out = run_distributed(_refusals, 1, args=(str(tmp_path / "run"),), timeout=600)[0]
    ckpts = tmp_path / "run" / "checkpoints"
    assert re.fullmatch(rf"not enough free space for checkpoint {ckpts}/iter_0000002: it needs about 362 kB, free "
                        rf"there now: 1 kB; nothing was written, and the previous checkpoint {ckpts}/iter_0000001 is "
                        r"kept \(a resume starts there\)\. .*", out["short"]), out["short"]
    assert out["after_short"] == ["iter_0000001", "latest_checkpointed_iteration.txt"]
    assert out["other"].startswith("CheckpointException") and "DiskFull" not in out["other"]
    assert out["after_other"] == ["iter_0000001", "latest_checkpointed_iteration.txt"]  # the partial one removed
