"""Hugging Face Llama directories: read safetensors by slices, write them streaming, config.json both ways.

Reading opens a file only for the tensors asked for and closes it again (safetensors memory-maps files: pages
stay resident, and counted in RSS, while a file is open), so a conversion touches one layer at a time.
Writing streams: every tensor's name, shape and dtype are known from the config before the first byte, so each
shard's header is written first and tensors are appended as they arrive, one at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from contextlib import ExitStack
from pathlib import Path

import torch

from octomega.config import ModelConfig, load_hf_config
from octomega.convert.mapping import LlamaShape

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Copied along with the weights (whichever exist): what transformers and vLLM read besides config.json.
ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
               "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json")
_DTYPES = {"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}
_CONFIG_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class ConvertError(RuntimeError):
    """A conversion that cannot proceed; the message says what is wrong, where, and what to do."""


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float16: "float16"}[dtype]


class HFCheckpoint:
    """The safetensors weights of an HF directory: validated index, shapes, and sliced reads."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        if not self.dir.is_dir():
            raise ConvertError(f"{self.dir}: not a directory (expected a Hugging Face model directory)")
        if (self.dir / INDEX).exists():
            index = json.loads((self.dir / INDEX).read_text())
            if "weight_map" not in index:
                raise ConvertError(f"{self.dir / INDEX}: no weight_map")
            self.files = {name: self.dir / f for name, f in index["weight_map"].items()}
        elif (self.dir / SINGLE).exists():
            self.files = None
        elif any(self.dir.glob("*.bin")) or any(self.dir.glob("*.pth")):
            raise ConvertError(f"{self.dir}: only safetensors weights are supported (found .bin/.pth files); "
                               "re-save with transformers: model.save_pretrained(dir, safe_serialization=True)")
        else:
            raise ConvertError(f"{self.dir}: no {SINGLE} or {INDEX}")
        if self.files is None:
            self.files = {name: self.dir / SINGLE for name in self._header(self.dir / SINGLE)}
        missing = sorted({str(p.name) for p in self.files.values() if not p.exists()})
        if missing:
            raise ConvertError(f"{self.dir}: missing weight shard(s) {', '.join(missing)} listed in {INDEX}; "
                               "the download or copy is incomplete")
        self.meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for path in sorted(set(self.files.values())):
            for name, info in self._header(path).items():
                if self.files.get(name) == path:
                    if info["dtype"] not in _DTYPES:
                        raise ConvertError(f"{path}: tensor {name} has dtype {info['dtype']} (expected BF16/F32/F16)")
                    self.meta[name] = (tuple(info["shape"]), _DTYPES[info["dtype"]])
        absent = sorted(set(self.files) - set(self.meta))
        if absent:
            raise ConvertError(f"{self.dir}: tensors {absent[:5]} are listed in {INDEX} but absent from their files")

    @staticmethod
    def _header(path: Path) -> dict:
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, struct.error, ValueError) as e:
            raise ConvertError(f"{path}: not a readable safetensors file ({e})") from None
        header.pop("__metadata__", None)
        need = 8 + n + max((int(info["data_offsets"][1]) for info in header.values()
                            if isinstance(info, dict) and "data_offsets" in info), default=0)
        have = path.stat().st_size
        if have < need:
            raise ConvertError(f"{path}: truncated: {have:,} bytes, but its header describes {need:,}; the download "
                               "or copy is incomplete")
        return header

    def dtype(self) -> torch.dtype:
        return self.meta["model.embed_tokens.weight"][1]

    def check_shapes(self, shape: LlamaShape, config_path: Path) -> None:
        """Every tensor the config implies exists with its shape; nothing unexpected is left over."""
        expected = dict(shape.hf_tensors())
        emb = self.meta.get("model.embed_tokens.weight")
        if emb is not None and emb[0][0] != shape.vocab:
            raise ConvertError(f"mismatched vocabulary: {config_path} says vocab_size={shape.vocab} but "
                               f"model.embed_tokens.weight has {emb[0][0]} rows")
        for name, shp in expected.items():
            if name not in self.meta:
                raise ConvertError(f"{self.dir}: tensor {name} is missing (the config describes {shape.num_layers} "
                                   f"layers, {'tied' if shape.tied else 'untied'} embeddings)")
            if self.meta[name][0] != shp:
                raise ConvertError(f"{self.dir}: {name} has shape {list(self.meta[name][0])}, the config implies "
                                   f"{list(shp)}")
        ignorable = ("rotary_emb.inv_freq", "lm_head.weight")  # old files store inv_freq; tied files may hold lm_head
        extra = [n for n in self.meta if n not in expected and not n.endswith(ignorable)]
        if extra:
            raise ConvertError(f"{self.dir}: unexpected tensors {sorted(extra)[:5]} (biases? another architecture?)")

    def read(self, requests: dict[str, tuple]) -> dict[str, torch.Tensor]:
        """{key: (hf_name, index)} -> {key: tensor}; index is a tuple of slices (or () for the whole tensor).
        Files are opened for this call only."""
        from safetensors import safe_open

        out = {}
        with ExitStack() as stack:
            handles = {}
            for key, (name, index) in requests.items():
                path = self.files[name]
                if path not in handles:
                    handles[path] = stack.enter_context(safe_open(str(path), framework="pt"))
                sl = handles[path].get_slice(name)
                out[key] = sl[index] if index else sl[:]
        return out


def read_hf_config(hf_dir: str | Path) -> tuple[ModelConfig, dict]:
    """(ModelConfig of the HF Llama, the raw config.json); another architecture is a ConfigError."""
    path = Path(hf_dir) / "config.json"
    if not path.exists():
        raise ConvertError(f"{hf_dir}: no config.json (expected a Hugging Face model directory)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None
    return load_hf_config(ModelConfig(hf_config=str(path))), raw


def hf_config_dict(cfg: ModelConfig, dtype: torch.dtype, base: dict | None = None) -> dict:
    """config.json for LlamaForCausalLM. Written in the form Meta publishes (rope_theta + rope_scaling at the
    top level), which transformers 4.x, 5.x and vLLM all read. `base` (the source model's config.json) keeps
    its other keys (token ids, ...)."""
    out = dict(base or {})
    for k in ("rope_parameters", "torch_dtype", "dtype", "transformers_version"):
        out.pop(k, None)
    s = LlamaShape.of(cfg)
    out.update({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "hidden_act": "silu",
        "hidden_size": s.hidden, "intermediate_size": s.ffn, "num_hidden_layers": s.num_layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.groups, "head_dim": s.head_dim,
        "vocab_size": s.vocab, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "tie_word_embeddings": s.tied,
        "initializer_range": cfg.init_std, "pretraining_tp": 1, "use_cache": True,
        "torch_dtype": dtype_name(dtype),
    })
    r = cfg.rope_scaling
    out["rope_scaling"] = None if r is None else {
        "rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.low_freq_factor,
        "high_freq_factor": r.high_freq_factor, "original_max_position_embeddings": r.original_max_position_embeddings}
    return dict(sorted(out.items()))


def config_dtype(raw: dict) -> torch.dtype | None:
    name = raw.get("torch_dtype") or raw.get("dtype")
    return _CONFIG_DTYPES.get(name) if isinstance(name, str) else None


def tokenizer_vocab_size(asset_dir: Path) -> int | None:
    """Ids of the tokenizer in `asset_dir` (base vocabulary + added tokens), or None without tokenizer.json."""
    path = Path(asset_dir) / "tokenizer.json"
    if not path.exists():
        return None
    from tokenizers import Tokenizer

    return max(Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True).values()) + 1


def check_tokenizer_fits(asset_dir: Path, vocab: int, where: str) -> None:
    n = tokenizer_vocab_size(asset_dir)
    if n is not None and n > vocab:
        raise ConvertError(f"mismatched vocabulary: the tokenizer in {asset_dir} has ids up to {n - 1} but {where} "
                           f"has vocab_size={vocab}; the model cannot embed its tokens")


def copy_assets(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in ASSET_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


# ------------------------------------------------------------------------------------------------ writing


def parse_size(text: str | int) -> int:
    """'5GB' / '500MB' / '2GiB' / bytes -> bytes (GB = 10^9, as transformers counts)."""
    if isinstance(text, int):
        return text
    t = text.strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for u, f in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * f)
    return int(t)


class SafetensorsWriter:
    """Writes a known list of tensors into HF-style shards, one tensor at a time, in the given order.

    Shards are cut before a tensor that would take a shard past `max_shard_bytes` (a larger tensor gets a shard
    of its own). One shard is `model.safetensors`; more are `model-0000k-of-0000n.safetensors` plus the index.
    """

    def __init__(self, out_dir: str | Path, plan: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype,
                 max_shard_bytes: int = 5 * 10**9):
        self.dir, self.dtype = Path(out_dir), dtype
        item = torch.tensor([], dtype=dtype).element_size()
        shards: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
        size = 0
        for name, shape in plan:
            n = item
            for d in shape:
                n *= d
            if shards[-1] and size + n > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(shape), n))
            size += n
        k = len(shards)
        self.shards = [(SINGLE if k == 1 else f"model-{i + 1:05d}-of-{k:05d}.safetensors", s)
                       for i, s in enumerate(shards)]
        self.queue = [(fname, name, shape) for fname, s in self.shards for name, shape, _ in s]
        self.pos = 0
        self.file = None
        self.total = sum(n for _, s in self.shards for _, _, n in s)

    def _open(self, fname: str) -> None:
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, n in dict(self.shards)[fname]:
            header[name] = {"dtype": _NAMES[self.dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
        self.file = open(self.dir / fname, "wb")
        self.file.write(struct.pack("<Q", len(blob)) + blob)
        self.fname = fname

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.pos >= len(self.queue):
            raise ValueError(f"unexpected extra tensor {name}")
        fname, want, shape = self.queue[self.pos]
        if name != want or tuple(tensor.shape) != shape:
            raise ValueError(f"expected {want} {list(shape)}, got {name} {list(tensor.shape)}")
        if self.file is None or self.fname != fname:
            self._close()
            self._open(fname)
        t = tensor.detach().to(device="cpu", dtype=self.dtype).contiguous()
        self.file.write(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")
        self.pos += 1

    def _close(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None

    def finish(self) -> list[str]:
        self._close()
        if self.pos != len(self.queue):
            raise ValueError(f"only {self.pos} of {len(self.queue)} tensors were written "
                             f"(next expected: {self.queue[self.pos][1]})")
        if len(self.shards) > 1:
            index = {"metadata": {"total_size": self.total},
                     "weight_map": {name: fname for fname, s in self.shards for name, _, _ in s}}
            (self.dir / INDEX).write_text(json.dumps(index, indent=2))
        return [f for f, _ in self.shards]

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
