"""Issue 17, item 6: the RL run's HF export on a full disk is one error line (the path, the bytes the export needs,
the bytes free); the hidden partial directory is removed and an earlier export is left as it was. A full disk cannot
be made here safely (filling the machine's disk disturbs everything on it; a small tmpfs needs root): a shard write
fails with ENOSPC part-way instead, after some of its bytes reached the file."""

from __future__ import annotations

import errno
import os
import re

import pytest
import torch
from rl_helpers import megatron_from_hf, read_safetensors

from octomega.convert.random_llama import tiny_shapes, write_random_llama
from octomega.diskfull import DiskFull


def test_full_disk_during_the_export(world1, tmp_path, monkeypatch):
    from octomega.convert import hf_io
    from octomega.rl.export import export_hf

    src = write_random_llama(tmp_path / "src", tiny_shapes()["gqa2_untied_scaled"], dtype=torch.float32, seed=7)
    model, cfg = megatron_from_hf(src)
    out = tmp_path / "run" / "hf"
    export_hf(model, cfg, out, tokenizer_dir=src)
    before = read_safetensors(out)
    with torch.no_grad():
        model.decoder.final_layernorm.weight.add_(1.0)  # a later actor: a second export would differ
    real, calls = hf_io.SafetensorsWriter.write, [0]

    def write(self, name, tensor):
        calls[0] += 1
        if calls[0] == 3:
            self.file.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, name, tensor)

    monkeypatch.setattr(hf_io.SafetensorsWriter, "write", write)
    with pytest.raises(DiskFull) as e:
        export_hf(model, cfg, out, tokenizer_dir=src)
    assert re.fullmatch(rf"no space left on device for the HF export {out}: it needs about [\d.]+ kB, free there now: "
                        rf".*; nothing of it was kept, and {out} is unchanged and the run's checkpoints are intact "
                        r"\(octomega convert mcore-to-hf exports one\)\. Free space there .*", str(e.value)), str(e.value)
    assert sorted(os.listdir(out.parent)) == ["hf"]  # no .hf.partial left
    after = read_safetensors(out)
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
