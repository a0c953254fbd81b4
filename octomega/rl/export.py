"""The HF export at the end of an RL run: the live actor -> a Hugging Face Llama directory (run_dir/hf).

Every rank walks octomega.convert's export stream (collective over TP/PP); rank 0 writes the safetensors, the
config.json (octomega.convert's form) and the tokenizer files, into a hidden directory renamed when complete. A
failed export removes that directory, and a full disk is one error line (DiskFull: the path, the bytes the export
needs, the bytes free); the run's checkpoints are untouched by it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from octomega.convert import export_hf_weights
from octomega.convert.hf_io import SafetensorsWriter, copy_assets, hf_config_dict
from octomega.convert.mapping import LlamaShape
from octomega.diskfull import disk_full_cause, disk_full_error, remove_partial


def export_hf(actor_module, model_cfg, out_dir: str | Path, *, tokenizer_dir: str | Path | None,
              dtype: torch.dtype | None = None, is_writer: bool = True) -> Path:
    out = Path(out_dir).absolute()
    tmp = out.parent / f".{out.name}.partial"
    ref = next(p for p in actor_module.parameters() if p.dim() == 2)
    dtype = dtype or ref.dtype
    try:
        _write(actor_module, model_cfg, out, tmp, tokenizer_dir, dtype, is_writer)
    except BaseException as e:
        if is_writer:
            remove_partial(tmp)
        cause = disk_full_cause(e)
        if cause is None:
            raise
        needed = sum(torch.Size(shape).numel() for _, shape in LlamaShape.of(model_cfg).hf_tensors()) \
            * ref.new_empty((), dtype=dtype).element_size()
        kept = f"{out} is unchanged" if out.exists() else f"{out} was not created"
        raise disk_full_error(out, what="the HF export", needed=needed, cause=cause,
                              kept=f"{kept} and the run's checkpoints are intact (octomega convert mcore-to-hf "
                                   "exports one)") from e
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out


def _write(actor_module, model_cfg, out: Path, tmp: Path, tokenizer_dir, dtype: torch.dtype, is_writer: bool) -> None:
    writer = None
    if is_writer:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        base = None
        if tokenizer_dir is not None:
            copy_assets(Path(tokenizer_dir), tmp)
            if (Path(tokenizer_dir) / "config.json").exists():
                base = json.loads((Path(tokenizer_dir) / "config.json").read_text())
            else:
                base = _token_ids(tokenizer_dir)
        config = hf_config_dict(model_cfg, dtype, base)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if not (tmp / "generation_config.json").exists():
            gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        writer = SafetensorsWriter(tmp, LlamaShape.of(model_cfg).hf_tensors(), dtype)
    try:
        for name, tensor in export_hf_weights([actor_module], model_cfg, dtype=dtype):
            if writer is not None:
                writer.write(name, tensor)
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()  # closes the open shard, so that removing it frees its space
        raise
    if writer is not None:
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)


def _token_ids(tokenizer_dir) -> dict:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception:  # noqa: BLE001  (the export must not fail on a tokenizer it only describes)
        return {}
    return {k: v for k, v in (("bos_token_id", tok.bos_token_id), ("eos_token_id", tok.eos_token_id),
                              ("pad_token_id", tok.pad_token_id)) if v is not None}
