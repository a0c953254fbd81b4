"""`octomega convert` end to end in one process: round trips, verify, and bad input."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from octomega.convert.cli import main
from octomega.convert.random_llama import tiny_shapes, write_random_llama, write_tokenizer

SHAPES = tiny_shapes()


def tensors(d):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(f"{d}/*.safetensors")):
        out.update(load_file(f))
    return out


def leftovers(parent):
    return [p for p in os.listdir(parent) if ".partial-" in p or ".old-" in p]


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "hf-to-mcore" in capsys.readouterr().out
    for cmd in ("hf-to-mcore", "mcore-to-hf", "verify"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "usage: octomega convert " + cmd in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "octomega.convert", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "mcore-to-hf" in r.stdout


@pytest.mark.parametrize("src_dtype,args,out_dtype", [
    (torch.float32, [], torch.float32),
    (torch.bfloat16, [], torch.bfloat16),
    (torch.float32, ["--dtype", "bf16"], torch.bfloat16),
])
def test_round_trip_is_identical(tmp_path, world1, src_dtype, args, out_dtype, capsys):
    cfg = SHAPES["gqa2_untied_scaled"]
    src = write_random_llama(tmp_path / "src", cfg, dtype=src_dtype, seed=5)
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck"), "--tp", "2", "--pp", "2", *args]) == 0
    out = capsys.readouterr().out
    assert "converted 100% of the weights" in out and "wrote" in out  # progress
    it = tmp_path / "ck" / "iter_0000000"
    assert (it / "COMPLETE").exists() and (tmp_path / "ck" / "latest_checkpointed_iteration.txt").read_text() == "0"
    meta = json.loads((it / "octomega.json").read_text())
    assert meta["config"]["parallel"]["tp"] == 2 and meta["config"]["model"]["vocab_size"] == 300
    assert meta["config"]["model"]["rope_scaling"]["low_freq_factor"] == 2.0
    assert meta["padded_vocab_size"] == 512  # 300 padded to a multiple of 128 x TP=2

    assert main(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 0
    want, got = tensors(src), tensors(tmp_path / "out")
    assert sorted(want) == sorted(got) and "lm_head.weight" in got
    for k in want:
        assert got[k].dtype == out_dtype and torch.equal(got[k], want[k].to(out_dtype)), k
    a = json.loads((src / "config.json").read_text())
    b = json.loads((tmp_path / "out" / "config.json").read_text())
    for key in ("rope_scaling", "rope_theta", "vocab_size", "num_key_value_heads", "tie_word_embeddings",
                "rms_norm_eps", "head_dim", "max_position_embeddings", "bos_token_id", "eos_token_id"):
        assert a[key] == b[key], key
    assert b["torch_dtype"] == {torch.float32: "float32", torch.bfloat16: "bfloat16"}[out_dtype]
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "out" / f).exists()
    assert leftovers(tmp_path) == []


def test_tied_model_has_no_lm_head_and_shards_with_index(tmp_path, world1):
    src = write_random_llama(tmp_path / "src", SHAPES["gqa3_tied_scaled"], seed=2, max_shard_size="60KB")
    assert len(glob.glob(f"{src}/*.safetensors")) > 1  # reading a sharded input too
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 0
    assert main(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out"), "--max-shard-size", "100KB"]) == 0
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert "lm_head.weight" not in index["weight_map"]
    assert len(set(index["weight_map"].values())) > 1
    want, got = tensors(src), tensors(tmp_path / "out")
    assert sorted(want) == sorted(got) and all(torch.equal(got[k], want[k]) for k in want)


def test_verify_passes_and_fails(tmp_path, world1, capsys):
    cfg = SHAPES["gqa4_untied_llama3"]
    a = write_random_llama(tmp_path / "a", cfg, seed=1)
    b = write_random_llama(tmp_path / "b", cfg, seed=2)  # same shape, other weights
    assert main(["hf-to-mcore", str(a), str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    assert main(["verify", str(a), str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-2])
    assert result["ok"] and result["max_abs_diff"] < 1e-4 and "max |logit difference|" in out
    assert main(["verify", str(b), str(tmp_path / "ck")]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert main(["verify", str(a), str(tmp_path / "ck"), "--dtype", "bf16"]) == 0  # relative tolerance
    assert main(["verify", str(b), str(tmp_path / "ck"), "--dtype", "bf16"]) == 1


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def src(tmp_path):
    return write_random_llama(tmp_path / "src", SHAPES["gqa2_untied_scaled"], seed=3, max_shard_size="100KB")


def run_bad(argv, capsys, match, out_dir):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not out_dir.exists() and leftovers(out_dir.parent) == []


def test_other_architecture(src, tmp_path, capsys):
    c = json.loads((src / "config.json").read_text())
    c.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (src / "config.json").write_text(json.dumps(c))
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, "is not a Llama", tmp_path / "ck")


def test_missing_shard(src, tmp_path, capsys):
    shards = sorted(glob.glob(f"{src}/model-*.safetensors"))
    os.remove(shards[1])
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, "missing weight shard", tmp_path / "ck")


def test_truncated_shard_is_named_before_any_work(src, tmp_path, capsys):
    """A shard cut short (an interrupted download) was a RuntimeError with a traceback from deep in the writer."""
    shard = sorted(glob.glob(f"{src}/model-*.safetensors"))[1]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, f"{shard}: truncated: ", tmp_path / "ck")


def test_missing_tensor_and_pytorch_bin(src, tmp_path, capsys):
    index = json.loads((src / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, "model.layers.1.mlp.up_proj.weight is missing",
            tmp_path / "ck")
    other = tmp_path / "bin"
    other.mkdir()
    shutil.copy(src / "config.json", other)
    (other / "pytorch_model.bin").write_bytes(b"")
    run_bad(["hf-to-mcore", str(other), str(tmp_path / "ck")], capsys, "only safetensors", tmp_path / "ck")


def test_mismatched_vocabulary(src, tmp_path, capsys):
    c = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**c, "vocab_size": 320}))
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, "mismatched vocabulary", tmp_path / "ck")
    (src / "config.json").write_text(json.dumps(c))
    write_tokenizer(src, 400)  # a tokenizer with ids the model cannot embed
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck")], capsys, "mismatched vocabulary", tmp_path / "ck")


def test_layout_that_does_not_divide(src, tmp_path, capsys):
    run_bad(["hf-to-mcore", str(src), str(tmp_path / "ck"), "--tp", "3"], capsys, "--tp 3 does not divide",
            tmp_path / "ck")


def test_incomplete_checkpoint_is_refused(src, tmp_path, world1, capsys):
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 0
    os.remove(tmp_path / "ck" / "iter_0000000" / "COMPLETE")
    run_bad(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out")], capsys, "no complete checkpoint",
            tmp_path / "out")
    run_bad(["mcore-to-hf", str(tmp_path / "ck" / "iter_0000000"), str(tmp_path / "out")], capsys, "incomplete",
            tmp_path / "out")
    run_bad(["verify", str(src), str(tmp_path / "ck")], capsys, "no complete checkpoint", tmp_path / "out")


def test_existing_output_needs_overwrite(src, tmp_path, world1, capsys):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "keep.txt").write_text("user data")
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "ck" / "keep.txt").exists()
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck"), "--overwrite"]) == 0
    assert not (tmp_path / "ck" / "keep.txt").exists() and (tmp_path / "ck" / "iter_0000000" / "COMPLETE").exists()


def test_failure_midway_leaves_nothing(src, tmp_path, world1, monkeypatch):
    from octomega.convert import commands

    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 0

    def broken(*args, **kwargs):
        yield "model.embed_tokens.weight", torch.zeros(300, 48)
        raise RuntimeError("disk full")

    monkeypatch.setattr(commands, "iter_hf_from_checkpoint", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_missing_tokenizer_is_an_error_unless_allowed(tmp_path, world1, capsys):
    src = write_random_llama(tmp_path / "src", SHAPES["mha_tied"], seed=4, tokenizer=False)
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 0
    run_bad(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out")], capsys, "no tokenizer found",
            tmp_path / "out")
    assert main(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out"), "--no-tokenizer"]) == 0
    assert (tmp_path / "out" / "config.json").exists()


def test_hf_to_mcore_failure_midway_leaves_nothing(src, tmp_path, world1, monkeypatch):
    from octomega.convert import offline

    real = offline.hf_layer_tensor

    def flaky(ckpt, s, role, i):
        if i == 1:
            raise RuntimeError("read error")
        return real(ckpt, s, role, i)

    monkeypatch.setattr(offline, "hf_layer_tensor", flaky)
    with pytest.raises(RuntimeError, match="read error"):
        main(["hf-to-mcore", str(src), str(tmp_path / "ck")])
    assert not (tmp_path / "ck").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------- full disk
# A full disk cannot be made here safely (filling the machine's disk disturbs everything on it; a small tmpfs needs
# root): a write fails with ENOSPC part-way instead, after some of its bytes reached the file.


def _enospc():
    import errno

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_in_mcore_to_hf_is_one_line(src, tmp_path, world1, capsys, monkeypatch):
    from octomega.convert import hf_io

    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck")]) == 0
    real, calls = hf_io.SafetensorsWriter.write, [0]

    def write(self, name, tensor):
        calls[0] += 1
        if calls[0] == 3:
            self.file.write(b"\0" * 100)
            raise _enospc()
        real(self, name, tensor)

    monkeypatch.setattr(hf_io.SafetensorsWriter, "write", write)
    capsys.readouterr()
    assert main(["mcore-to-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"octomega convert mcore-to-hf: error: no space left on device for the converted model {tmp_path / 'out'}: "
        "it needs about "), err
    assert f"nothing of it was kept, and {tmp_path / 'out'} was not created. Free space there" in err[0]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_full_disk_in_hf_to_mcore_is_one_line(src, tmp_path, world1, capsys, monkeypatch):
    import functools

    from torch.distributed.checkpoint import filesystem

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "keep.txt").write_text("an earlier output")
    real, calls = filesystem._write_item, [0]

    @functools.wraps(real)
    def write_item(transforms, stream, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            stream.write(b"\0" * 100)
            raise _enospc()
        return real(transforms, stream, *args, **kwargs)

    monkeypatch.setattr(filesystem, "_write_item", write_item)
    assert main(["hf-to-mcore", str(src), str(tmp_path / "ck"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"octomega convert hf-to-mcore: error: no space left on device for the converted model {tmp_path / 'ck'}: "
        "it needs about "), err
    assert f"nothing of it was kept, and {tmp_path / 'ck'} is unchanged" in err[0]
    assert sorted(os.listdir(tmp_path / "ck")) == ["keep.txt"] and leftovers(tmp_path) == []
