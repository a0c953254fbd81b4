"""The three conversions: hf-to-mcore, mcore-to-hf and verify, each in one process (a world of one).

Memory: the two conversions never hold the model. hf-to-mcore writes the dist checkpoint of an uninitialised
TP=1 model (its weights are never touched, so not resident) and converts each chunk from the HF files when the
writer reaches it; mcore-to-hf reads the checkpoint one layer at a time (octomega.convert.offline) and streams
safetensors out. Peak = the process baseline plus about one layer and the embedding table. verify holds one
full model at a time.

A torch_dist checkpoint reshards on load (any TP/PP), so --tp only decides the vocabulary padding the
checkpoint is written with (a multiple of 128 x TP rows, the shape `octomega train` at that TP builds) and is
recorded with --pp in its octomega.json.

Outputs are atomic: written into a hidden sibling directory, renamed to OUT_DIR only once complete; a failure
removes it, and a full disk is one error line (DiskFull: OUT_DIR, the bytes the output needs, the bytes free).
Checkpoints follow octomega.checkpoint's contract (iter_0000000/ with octomega.json and the
COMPLETE marker written last), so `octomega train` starts from them (init.from_checkpoint=OUT_DIR with
init.reset_optimizer=true: a converted checkpoint has no optimizer state).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from octomega.config import ConfigError, ModelConfig, ParallelConfig, RunConfig, from_dict, load_hf_config, to_dict
from octomega.convert.hf_io import (
    ConvertError,
    HFCheckpoint,
    SafetensorsWriter,
    check_tokenizer_fits,
    config_dtype,
    copy_assets,
    dtype_name,
    hf_config_dict,
    parse_size,
    read_hf_config,
)
from octomega.convert.mapping import LlamaShape
from octomega.convert.offline import EMBEDDING, check_checkpoint, hf_producer, iter_hf_from_checkpoint, \
    write_checkpoint
from octomega.diskfull import disk_full_cause, disk_full_error

ASSETS_DIR = "hf_assets"  # inside an iter dir written by hf-to-mcore: the source's tokenizer and configs
Log = Callable[[str], None] | None


def _say(log: Log, msg: str) -> None:
    if log:
        log(msg)


def single_process_runtime() -> torch.device:
    """torch.distributed and Megatron's parallel state for one process at TP=1/PP=1; returns the device."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from octomega.runtime import init_distributed, use_gpu

    if dist.is_initialized() and dist.get_world_size() != 1:
        raise ConvertError("conversion runs in a single process: start it without torchrun/srun")
    if not (dist.is_initialized() and ps.model_parallel_is_initialized()
            and ps.get_tensor_model_parallel_world_size() == 1 and ps.get_pipeline_model_parallel_world_size() == 1):
        init_distributed(tp=1, pp=1, seed=0)
    return torch.device("cuda", torch.cuda.current_device()) if use_gpu() else torch.device("cpu")


def build_for_conversion(cfg: ModelConfig, dtype: torch.dtype, vocab_rows: int, device: torch.device):
    """A TP=1/PP=1 GPTModel of `cfg` with `vocab_rows` embedding rows, weights left uninitialised."""
    from octomega.model import build_model

    c = copy.deepcopy(cfg)
    c.hf_config, c.layer_spec, c.fp8, c.recompute, c.attention = None, "local", "none", "none", "sdpa"
    if vocab_rows < c.vocab_size:
        raise ConvertError(f"checkpoint embedding has {vocab_rows} rows < vocab_size {c.vocab_size}")
    c.make_vocab_size_divisible_by = vocab_rows  # padded_vocab_size(c, tp=1) == vocab_rows
    on_gpu = device.type == "cuda"
    model = build_model(c, ParallelConfig(), dtype=dtype, on_gpu=on_gpu, device=device, init_weights=False)
    model.octomega_model_config = c
    return model.eval()


def check_layout(cfg: ModelConfig, tp: int, pp: int) -> None:
    for flag, div, name, value in (("tp", tp, "num_attention_heads", cfg.num_attention_heads),
                                   ("tp", tp, "num_key_value_heads", cfg.num_query_groups),
                                   ("tp", tp, "intermediate_size", cfg.ffn_hidden_size),
                                   ("pp", pp, "num_hidden_layers", cfg.num_layers)):
        if div < 1 or value % div:
            raise ConvertError(f"--{flag} {div} does not divide {name}={value}")


@contextmanager
def atomic_dir(final: str | Path, overwrite: bool, *, needed: int | None = None):
    """Yield a fresh hidden sibling of `final`; rename it to `final` only when the body completes. A failure removes
    it; a full disk (ENOSPC, EDQUOT) is then DiskFull naming `final` and the `needed` bytes (what the output takes)."""
    from octomega.runtime.megatron_compat import take_write_errors

    final = Path(final).absolute()
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise ConvertError(f"{final} already exists and is not empty: choose another directory or pass --overwrite")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    existed = final.exists()
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = disk_full_cause(e, take_write_errors())
        if cause is None:
            raise
        raise disk_full_error(final, what="the converted model", needed=needed, cause=cause,
                              kept=f"{final} {'is unchanged' if existed else 'was not created'}") from e
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def output_bytes(s: LlamaShape, dtype: torch.dtype) -> int:
    """The bytes of a model's weights in `dtype`: what a conversion writes, within its small metadata."""
    return sum(torch.Size(shape).numel() for _, shape in s.hf_tensors()) * torch.tensor([], dtype=dtype).element_size()


# ---------------------------------------------------------------------------------------------- hf-to-mcore


def hf_to_mcore(hf_dir: str | Path, out_dir: str | Path, *, tp: int = 1, pp: int = 1,
                dtype: torch.dtype | None = None, overwrite: bool = False, log: Log = None) -> Path:
    """HF Llama directory -> a checkpoint directory `out_dir/iter_0000000` that `octomega train` starts from
    (init.from_checkpoint=out_dir). dtype None = the HF config's torch_dtype (float16 becomes bf16)."""
    from octomega.model.llama import padded_vocab_size

    hf_dir = Path(hf_dir)
    cfg, raw = read_hf_config(hf_dir)
    s = LlamaShape.of(cfg)
    ckpt = HFCheckpoint(hf_dir)
    ckpt.check_shapes(s, hf_dir / "config.json")
    check_tokenizer_fits(hf_dir, s.vocab, f"{hf_dir / 'config.json'}")
    check_layout(cfg, tp, pp)
    if dtype is None:
        dtype = config_dtype(raw) or ckpt.dtype()
        if dtype == torch.float16:
            dtype = torch.bfloat16
    _say(log, f"{hf_dir}: Llama with {s.num_layers} layers, hidden {s.hidden}, {s.heads}/{s.groups} heads, "
              f"vocab {s.vocab} ({'tied' if s.tied else 'untied'} embeddings); writing {dtype_name(dtype)} "
              f"for TP={tp} PP={pp}")
    with atomic_dir(out_dir, overwrite, needed=output_bytes(s, dtype)) as tmp:
        single_process_runtime()
        rows = padded_vocab_size(cfg, tp)
        # Weights never initialised nor written (not resident): the writer takes each chunk from the HF files.
        model = build_for_conversion(cfg, dtype, rows, torch.device("cpu"))
        run_cfg = RunConfig(name=f"hf_{hf_dir.name}", model=copy.deepcopy(cfg), parallel=ParallelConfig(tp=tp, pp=pp))
        _say(log, "writing the Megatron dist checkpoint, one tensor at a time")
        produce = hf_producer(ckpt, s)
        total, done, shown = 2 * sum(torch.Size(shp).numel() for _, shp in s.hf_tensors()), [0], [0]

        def produce_logged(key, offsets, sizes, dtype_):
            t = produce(key, offsets, sizes, dtype_)
            if t is not None:
                done[0] += 2 * t.numel()
                if shown[0] < 10 and done[0] * 10 // total > shown[0]:
                    shown[0] = min(done[0] * 10 // total, 10)
                    _say(log, f"converted {min(done[0] / total, 1.0):.0%} of the weights")
            return t

        it_dir = write_checkpoint(tmp, 0, model, produce_logged, {
            "config": to_dict(run_cfg), "converted_from": str(hf_dir.absolute()), "dtype": dtype_name(dtype),
            "padded_vocab_size": rows})
        assets = it_dir / ASSETS_DIR
        assets.mkdir()
        shutil.copy2(hf_dir / "config.json", assets / "config.json")
        copy_assets(hf_dir, assets)
        del model
        gc.collect()
    _say(log, f"wrote {Path(out_dir)} (iter_0000000)")
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------- mcore-to-hf


def _resolve(ckpt_dir, iteration):
    from octomega.checkpoint import resolve

    try:
        return resolve(ckpt_dir, iteration)
    except FileNotFoundError as e:
        raise ConvertError(str(e)) from None


def read_checkpoint_config(it_dir: Path) -> tuple[ModelConfig, dict]:
    """(resolved ModelConfig, the RunConfig dict) from an iter dir's octomega.json."""
    from octomega.checkpoint import META

    meta_path = it_dir / META
    if not meta_path.exists():
        raise ConvertError(f"{it_dir}: no {META}; not an octomega checkpoint")
    run = (json.loads(meta_path.read_text()).get("config") or {})
    if "model" not in run:
        raise ConvertError(f"{meta_path}: no config.model; cannot tell the model's shape")
    try:
        cfg = load_hf_config(from_dict(ModelConfig, run["model"]))
    except ConfigError as e:
        raise ConvertError(f"{meta_path}: config.model: {e}") from None
    return cfg, run


def load_checkpoint_model(ckpt_dir, *, iteration: int | None = None, dtype: torch.dtype | None = None,
                          log: Log = None):
    """(TP=1/PP=1 model loaded from a complete checkpoint, its ModelConfig, iter dir, run config dict): the
    whole model in memory (verify and tests; the conversions stream instead)."""
    from octomega.checkpoint import load_checkpoint

    it_dir = _resolve(ckpt_dir, iteration)
    cfg, run = read_checkpoint_config(it_dir)
    rows, stored_dtype = check_checkpoint(it_dir, LlamaShape.of(cfg))[EMBEDDING]
    dtype = dtype or stored_dtype
    device = single_process_runtime()
    model = build_for_conversion(cfg, dtype, rows[0], device)
    _say(log, f"loading {it_dir} ({dtype_name(stored_dtype)} stored, {rows[0]} embedding rows)")
    load_checkpoint(it_dir, model)
    return model, cfg, it_dir, run


def find_assets(it_dir: Path, run: dict, tokenizer: str | Path | None) -> Path | None:
    """Where the tokenizer files come from: --tokenizer, the checkpoint's hf_assets/, init.hf_path, data.tokenizer."""
    if tokenizer is not None:
        if not Path(tokenizer).is_dir():
            raise ConvertError(f"--tokenizer {tokenizer}: not a directory")
        return Path(tokenizer)
    candidates = [it_dir / ASSETS_DIR, (run.get("init") or {}).get("hf_path"), (run.get("data") or {}).get("tokenizer")]
    for c in candidates:
        if c and Path(c).is_dir() and ((Path(c) / "tokenizer.json").exists()
                                       or (Path(c) / "tokenizer_config.json").exists()):
            return Path(c)
    return None


def mcore_to_hf(ckpt_dir: str | Path, out_dir: str | Path, *, dtype: torch.dtype | None = None,
                iteration: int | None = None, tokenizer: str | Path | None = None, max_shard_size: str | int = "5GB",
                allow_no_tokenizer: bool = False, overwrite: bool = False, log: Log = None) -> Path:
    """A complete checkpoint (run dir, checkpoints dir or iter dir; any TP/PP it was saved at) -> an HF Llama
    directory: safetensors (sharded above max_shard_size, with an index), config.json, generation_config.json
    and the tokenizer files. dtype None = the dtype the checkpoint stores."""
    it_dir = _resolve(ckpt_dir, iteration)
    cfg, run = read_checkpoint_config(it_dir)
    assets = find_assets(it_dir, run, tokenizer)
    if assets is None and not allow_no_tokenizer:
        raise ConvertError(f"no tokenizer found for {it_dir} (looked in {ASSETS_DIR}/, config init.hf_path and "
                           "data.tokenizer): pass --tokenizer DIR, the HF tokenizer the model was trained with")
    if assets is not None:
        check_tokenizer_fits(assets, cfg.vocab_size, f"the checkpoint's config ({it_dir})")
    s = LlamaShape.of(cfg)
    stored = check_checkpoint(it_dir, s)
    out_dtype = dtype or stored[EMBEDDING][1]
    with atomic_dir(out_dir, overwrite, needed=output_bytes(s, out_dtype)) as tmp:
        base = None
        if assets is not None:
            copy_assets(assets, tmp)
            if (assets / "config.json").exists():
                base = json.loads((assets / "config.json").read_text())
        config = hf_config_dict(cfg, out_dtype, base)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if not (tmp / "generation_config.json").exists():
            gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        _say(log, f"exporting {it_dir} ({s.num_layers} layers) as {dtype_name(out_dtype)}, one layer at a time")
        writer = SafetensorsWriter(tmp, s.hf_tensors(), out_dtype, parse_size(max_shard_size))
        try:
            for name, tensor in iter_hf_from_checkpoint(it_dir, s, log=log):
                writer.write(name, tensor)
            files = writer.finish()
        except BaseException:
            writer.abort()
            raise
    _say(log, f"wrote {Path(out_dir)}: {len(files)} safetensors file(s), {writer.total / 1e9:.2f} GB "
              f"{dtype_name(out_dtype)}")
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------------- verify

# Default tolerance on max |logit difference|: fp32 absolute; bf16 relative to the largest |logit| (the two
# implementations round differently: 1.3% of the largest logit on a random 1B model, 1.3% on the tiny ones;
# a wrong mapping differs by the size of the logits themselves).
DEFAULT_ATOL_FP32 = 1e-3
DEFAULT_RTOL_BF16 = 0.03


@torch.no_grad()
def verify(hf_dir: str | Path, ckpt_dir: str | Path, *, iteration: int | None = None,
           dtype: torch.dtype = torch.float32, batch: int = 2, seq_len: int = 64, seed: int = 0,
           atol: float | None = None, log: Log = None) -> dict:
    """Logits of transformers' LlamaForCausalLM (hf_dir) and of the Megatron checkpoint on the same random
    tokens. One model is in memory at a time. Returns max/mean absolute difference, argmax agreement, ok."""
    from transformers import AutoModelForCausalLM

    hf_cfg, _ = read_hf_config(hf_dir)
    it_dir = _resolve(ckpt_dir, iteration)
    ck_cfg, _ = read_checkpoint_config(it_dir)
    if ck_cfg.vocab_size != hf_cfg.vocab_size:
        raise ConvertError(f"mismatched vocabulary: {hf_dir} has {hf_cfg.vocab_size} ids, {it_dir} {ck_cfg.vocab_size}")
    seq_len = min(seq_len, hf_cfg.max_position_embeddings)
    tokens = torch.randint(0, hf_cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    _say(log, f"transformers: {hf_dir} ({dtype_name(dtype)}), {batch} x {seq_len} random tokens (seed {seed})")
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype).eval()
    ref = hf(tokens).logits.float()
    del hf
    gc.collect()
    model, cfg, _, _ = load_checkpoint_model(it_dir, dtype=dtype, log=log)
    device = next(model.parameters()).device
    pos = torch.arange(seq_len).expand(batch, seq_len)
    out = model(tokens.to(device), pos.to(device), None)[..., : cfg.vocab_size].float().cpu()
    del model
    gc.collect()
    diff = (out - ref).abs()
    if atol is not None:
        tol = atol
    elif dtype == torch.float32:
        tol = DEFAULT_ATOL_FP32
    else:
        tol = DEFAULT_RTOL_BF16 * ref.abs().max().item()
    result = {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
              "argmax_agreement": (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
              "max_abs_logit": ref.abs().max().item(), "tolerance": tol, "dtype": dtype_name(dtype)}
    result["ok"] = result["max_abs_diff"] <= tol
    return result
