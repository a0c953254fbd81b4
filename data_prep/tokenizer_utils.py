"""Tokenizers for data_prep: a tiny trainable Llama-3-style tokenizer, loading, fingerprints, BOS/EOS and dtype.

`train_tokenizer` builds the byte-level BPE the tiny pipeline and the tests use: digits split one per token,
Llama-3 special tokens appended after the BPE vocabulary (as Llama 3 does at 128000+), and a post-processor
that adds `<|begin_of_text|>` (BOS) but not `<|end_of_text|>` (EOS), like Llama 3. The directory it writes
loads with `transformers.AutoTokenizer.from_pretrained(dir)` and with `tokenizers.Tokenizer.from_file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, EOT, PAD)
UINT16_IDS = int(np.iinfo(np.uint16).max) + 1  # 65,536 ids fit uint16 (ids 0..65535)
INT32_IDS = int(np.iinfo(np.int32).max) + 1
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class TokenizerError(ValueError):
    """A tokenizer that cannot be used as asked (missing, wrong dtype, no BOS/EOS): the message says what to do."""


def train_tokenizer(texts: Iterable[str], out_dir, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE on `texts` and save a Hugging Face tokenizer directory at `out_dir`.

    vocab_size counts everything: 256 byte symbols + merges + the 4 special tokens. Returns out_dir as a Path.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least 261 ids")
    tok = Tokenizer(models.BPE())
    # Digits one per token (as the feasibility run did): numbers are spelled digit by digit.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Appended after the BPE vocabulary, so their ids follow it (Llama 3 keeps them at 128000+ too).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2) + "\n"
    )
    return out


def tokenizer_json_path(path_or_id: str | os.PathLike) -> str:
    """The tokenizer.json inside a directory, the file itself, or a hub id unchanged (datatrove accepts all three)."""
    p = Path(path_or_id)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise TokenizerError(
                f"{p}: no tokenizer.json in this directory. Give a Hugging Face tokenizer directory (with a fast "
                "tokenizer.json), the tokenizer.json file itself, or a hub id."
            )
        return str(p / "tokenizer.json")
    if p.is_file():
        return str(p)
    if not _HUB_ID.fullmatch(str(path_or_id)):
        raise TokenizerError(f"{path_or_id}: no such tokenizer directory or file (and not a hub id like org/name)")
    return str(path_or_id)


def load_tokenizer(path_or_id: str | os.PathLike):
    """A `tokenizers.Tokenizer` from a directory, a tokenizer.json file, or a hub id (the hub needs the network)."""
    from tokenizers import Tokenizer

    src = tokenizer_json_path(path_or_id)
    if Path(src).is_file():
        return Tokenizer.from_file(src)
    try:
        return Tokenizer.from_pretrained(src)
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; all mean "could not get it"
        raise TokenizerError(
            f"{path_or_id}: not a local tokenizer directory or file, and loading it as a hub id failed ({e}). "
            "Download it first (huggingface-cli download ID --local-dir DIR) and pass the directory."
        ) from e


def _tokenizer_json(path_or_id) -> dict:
    src = tokenizer_json_path(path_or_id)
    if Path(src).is_file():
        return json.loads(Path(src).read_text(encoding="utf-8"))
    return json.loads(load_tokenizer(src).to_str())


def tokenizer_fingerprint(path) -> str:
    """A short hash of the vocabulary, merges and added/special tokens: equal tokenizers give equal fingerprints.

    Only what decides token ids is hashed (not file layout or the post-processor), so a tokenizer re-saved by
    another library version keeps its fingerprint.
    """
    data = _tokenizer_json(path)
    model = data.get("model", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", []) or []]
    added = sorted((t["id"], t["content"], bool(t.get("special"))) for t in data.get("added_tokens", []))
    canon = {"type": model.get("type"), "vocab": sorted((model.get("vocab") or {}).items()), "merges": merges,
             "added": added}
    digest = hashlib.sha256(json.dumps(canon, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    return digest[:16]


def _config_token(path_or_id, key: str) -> str | None:
    cfg = Path(path_or_id) / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    value = json.loads(cfg.read_text(encoding="utf-8")).get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def dtype_for_vocab(n_ids: int) -> str:
    """Megatron token dtype: uint16 up to 65,536 ids, int32 above (datatrove and megatron-core agree)."""
    return "uint16" if n_ids <= UINT16_IDS else "int32"


@dataclass(frozen=True)
class TokenizerInfo:
    """What data_prep needs to know about a tokenizer; `describe_tokenizer` builds it and checks it."""

    source: str  # the directory / file / hub id given
    json_path: str  # tokenizer.json path (or hub id) handed to datatrove
    vocab_size: int  # number of ids = highest id + 1 (added tokens included)
    bos: str | None
    bos_id: int | None
    eos: str | None
    eos_id: int | None
    dtype: str  # "uint16" | "int32"
    fingerprint: str


def _resolve_special(tok, path_or_id, wanted: str, default: str, config_key: str, flag: str):
    if wanted == "none":
        return None, None
    name = wanted
    if wanted == "auto":
        name = default if tok.token_to_id(default) is not None else _config_token(path_or_id, config_key)
        if name is None:
            return None, None
    tid = tok.token_to_id(name)
    if tid is None:
        raise TokenizerError(f"{path_or_id}: token {name!r} ({flag}) is not in the vocabulary; pass another {flag}")
    return name, tid


def describe_tokenizer(path_or_id, bos: str = "auto", eos: str = "auto", dtype: str = "auto") -> TokenizerInfo:
    """Load and check a tokenizer for Megatron output.

    bos/eos: "auto" (Llama-3 names, else tokenizer_config.json), "none", or a token string.
    dtype: "auto" follows the vocabulary; "uint16"/"int32" are checked against it.
    """
    tok = load_tokenizer(path_or_id)
    ids = list(tok.get_vocab(with_added_tokens=True).values())
    n_ids = max(ids) + 1 if ids else 0
    bos_name, bos_id = _resolve_special(tok, path_or_id, bos, BOS, "bos_token", "--bos-token")
    eos_name, eos_id = _resolve_special(tok, path_or_id, eos, EOS, "eos_token", "--eos-token")
    if eos == "auto" and eos_id is None:
        raise TokenizerError(
            f"{path_or_id}: no end-of-document token found ({EOS} or tokenizer_config.json eos_token). Megatron "
            "needs one between packed documents: pass --eos-token TOKEN (or --eos-token none to go without)."
        )
    needed = dtype_for_vocab(n_ids)
    if dtype == "auto":
        dtype = needed
    elif dtype == "uint16" and needed != "uint16":
        raise TokenizerError(
            f"{path_or_id}: {n_ids:,} token ids do not fit uint16 (at most {UINT16_IDS:,} ids); "
            "use --dtype int32 or --dtype auto"
        )
    elif dtype not in ("uint16", "int32"):
        raise TokenizerError(f"--dtype {dtype!r}: choose auto, uint16 or int32")
    if n_ids > INT32_IDS:
        raise TokenizerError(f"{path_or_id}: {n_ids:,} token ids do not fit int32")
    return TokenizerInfo(
        source=str(path_or_id), json_path=tokenizer_json_path(path_or_id), vocab_size=n_ids, bos=bos_name,
        bos_id=bos_id, eos=eos_name, eos_id=eos_id, dtype=dtype, fingerprint=tokenizer_fingerprint(path_or_id),
    )
