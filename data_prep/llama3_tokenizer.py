"""Meta's Llama-3 tokenizer as a Hugging Face fast tokenizer directory, built offline from the llama-models package.

    python -m data_prep.llama3_tokenizer OUT_DIR

PyPI's `llama-models` ships Meta's `llama_models/llama3/tokenizer.model` (a tiktoken BPE: 128,000 ranks) and its
`Tokenizer` class (the pre-tokenizer regex and the 256 special tokens, ids 128,000-128,255). This tool converts
them with transformers' own tiktoken converter (`convert_slow_tokenizer.TikTokenConverter`) into
OUT_DIR/tokenizer.json + tokenizer_config.json + special_tokens_map.json, which `AutoTokenizer.from_pretrained`,
`tokenizers.Tokenizer.from_file`, datatrove and `data_prep.tokenize` load. Nothing is downloaded.

What the directory does (the same as Meta's Llama-3 release on the Hugging Face hub):
- 128,256 ids: the 128,000 byte-level BPE tokens, then the 256 special tokens at Meta's ids: <|begin_of_text|>
  128000 (bos_token), <|end_of_text|> 128001 (eos_token), <|start_header_id|> 128006, <|end_header_id|> 128007,
  <|eom_id|> 128008, <|eot_id|> 128009, <|python_tag|> 128010, <|finetune_right_pad_id|> 128004, reserved ones.
- The same pre-tokenizer regex as Meta's `Tokenizer.pat_str`; token ids equal tiktoken's on any text.
- BOS: `tokenizer(text)` prepends <|begin_of_text|> (a TemplateProcessing post-processor, as the hub release and
  data_prep.tokenizer_utils.train_tokenizer do); it never appends EOS. `add_special_tokens=False` gives the bare
  ids. octomega.generate relies on the BOS being there; `data_prep.tokenize` installs its own
  "<|begin_of_text|> text <|end_of_text|>" template for every document, so the saved post-processor does not matter
  there.
- Special-token literals in text: `tokenizer(text)` maps "<|eot_id|>" written in the text to id 128009 (the hub
  release's behaviour, Meta's `allowed_special="all"`): prompts may use them. `data_prep.tokenize` encodes
  documents with special literals as plain text instead (Meta's default, `disallowed_special=()`), so a web page
  that quotes "<|end_of_text|>" cannot end a document early.
- No pad token (as Meta's release); octomega.generate pads with <|finetune_right_pad_id|>. Decoding does not
  "clean up tokenization spaces", so decode(encode(text)) == text.
- Meta's `Tokenizer.encode` cuts text into pieces of at most 25,000 consecutive (non-)whitespace characters before
  calling tiktoken (tiktoken's recursion limit); the fast tokenizer does not need that, so on such runs (a 30,000-digit
  number) its ids equal tiktoken's `Encoding.encode` of the whole text, not Meta's cut pieces.

Idempotent: OUT_DIR/octomega_tokenizer_build.json records the source file's hash, the llama-models version and the
hashes of the written files; a later build into the same directory reuses a matching build. A directory that
holds some other tokenizer.json is not overwritten without --force.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from data_prep.tokenizer_utils import BOS, EOS, TokenizerError

BUILD_FORMAT = "octomega-llama3-tokenizer/1"
BUILD_FILE = "octomega_tokenizer_build.json"
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
INSTALL_HINT = "pip install 'octomega[llama3]'"
MODEL_MAX_LENGTH = 131_072  # Llama 3.1+/3.2 context (the OctoThinker bases); only a length warning threshold
# Checked against tiktoken after every build (seconds of work, catches a converter that changed behaviour).
SELF_CHECK = ("Let $f(x) = 3x^2 - 12345678x + \\frac{\\pi}{2}$. Find f(7).\n\n  Answer:\t\\boxed{42}  ",
              "He's sure they'RE here; I'd say 1,000,000.5 apples cost $3.99... caf\u00e9 \u4e2d\u6587 \U0001f600\r\n")


class Llama3TokenizerError(TokenizerError):
    """The Llama-3 tokenizer cannot be built (missing package, foreign directory, failed self-check)."""


class Llama3Unavailable(Llama3TokenizerError):
    """llama-models or tiktoken is not installed (or lacks tokenizer.model): the message says what to install."""


def _meta():
    """(Meta's Tokenizer class, the tokenizer.model path, llama-models version); a one-line error without them."""
    try:
        from importlib.metadata import version

        import tiktoken  # noqa: F401 - Meta's tokenizer module needs it
        from llama_models.llama3 import tokenizer as meta_tokenizer
    except ImportError as e:
        raise Llama3Unavailable(f"building the Llama-3 tokenizer needs llama-models and tiktoken ({e.name or e} "
                                   f"is missing): {INSTALL_HINT}") from None
    path = Path(meta_tokenizer.__file__).parent / "tokenizer.model"
    if not path.is_file():
        raise Llama3Unavailable(f"{path} is missing from the installed llama-models: reinstall it ({INSTALL_HINT})")
    return meta_tokenizer.Tokenizer, path, version("llama-models")


def meta_tokenizer():
    """Meta's own Llama-3 Tokenizer (tiktoken) from llama-models: the reference the built directory must equal."""
    cls, path, _ = _meta()
    return cls(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_build(out: Path) -> dict | None:
    try:
        return json.loads((out / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_current_build(out_dir, source_sha256: str | None = None) -> bool:
    """True when out_dir holds an unmodified build of this format (from the given source file, when given)."""
    out = Path(out_dir)
    rec = _read_build(out)
    if not rec or rec.get("format") != BUILD_FORMAT:
        return False
    if source_sha256 is not None and rec.get("source_sha256") != source_sha256:
        return False
    files = rec.get("files") or {}
    return set(files) == set(FILES) and all((out / f).is_file() and _sha256(out / f) == h for f, h in files.items())


@contextmanager
def _no_tiktoken_cache():
    """tiktoken caches every file it reads in $TMPDIR/data-gym-cache unless TIKTOKEN_CACHE_DIR is empty."""
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def convert(meta=None):
    """Meta's tokenizer -> (tokenizers.Tokenizer, {special token: id}); checked id by id against Meta's."""
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    cls, path, _ = _meta()
    meta = meta or cls(path)
    n_bpe = meta.model.n_vocab - len(meta.special_tokens)
    with _no_tiktoken_cache():  # transformers reads the file with tiktoken's own loader
        tok = TikTokenConverter(vocab_file=str(path), pattern=cls.pat_str).converted()
    if tok.get_vocab_size(with_added_tokens=True) != n_bpe:
        raise Llama3TokenizerError(f"the converter read {tok.get_vocab_size():,} BPE tokens from {path}, Meta's "
                                   f"tokenizer has {n_bpe:,}")
    specials = sorted(meta.special_tokens, key=meta.special_tokens.get)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    wrong = {t: (tok.token_to_id(t), i) for t, i in meta.special_tokens.items() if tok.token_to_id(t) != i}
    if wrong:
        raise Llama3TokenizerError(f"special token ids differ from Meta's (got, want): {dict(list(wrong.items())[:5])}")
    bos = meta.special_tokens[BOS]
    # As Meta's Llama-3 release on the hub: BOS before every text (and each of a pair), never EOS.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                                      special_tokens=[(BOS, bos)]),
    ])
    return tok, dict(meta.special_tokens)


def _self_check(tok, meta) -> None:
    for text in SELF_CHECK:
        got = tok.encode(text, add_special_tokens=False).ids
        want = meta.model.encode(text, disallowed_special=())
        if got != want:
            raise Llama3TokenizerError(f"self-check failed: {text[:40]!r} encodes to {got[:12]}... here and "
                                       f"{want[:12]}... with tiktoken; the installed transformers/tokenizers "
                                       "convert differently, please report the versions")


def _write(tok, tmp: Path) -> None:
    """Save with transformers, then make the directory loadable by transformers 4.x and 5.x alike."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                 clean_up_tokenization_spaces=False, model_max_length=MODEL_MAX_LENGTH)
    hf.save_pretrained(str(tmp))
    cfg_path = tmp / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # transformers 5 names its backend class ("TokenizersBackend"), which 4.x cannot resolve; both resolve this one.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    # transformers 4.x writes special_tokens_map.json, 5.x no longer does: written for readers of either.
    (tmp / "special_tokens_map.json").write_text(json.dumps({"bos_token": BOS, "eos_token": EOS}, indent=2) + "\n")


def build_llama3_tokenizer(out_dir, *, force: bool = False, log=None) -> Path:
    """Write Meta's Llama-3 tokenizer as a Hugging Face fast tokenizer directory at out_dir; return it as a Path.

    Reuses a matching earlier build in out_dir. Refuses to replace a tokenizer.json it did not write unless force.
    log: a print-like callable for progress (None: quiet).
    """
    say = log or (lambda *_a, **_k: None)
    out = Path(out_dir)
    cls, path, version = _meta()
    source_sha = _sha256(path)
    if not force and is_current_build(out, source_sha):
        say(f"{out}: already holds the Llama-3 tokenizer (llama-models {version}); reused")
        return out
    if not force and (out / "tokenizer.json").exists() and _read_build(out) is None:
        raise Llama3TokenizerError(f"{out} already holds a tokenizer.json that this tool did not write: choose another "
                                   "directory or pass --force (force=True) to replace it")
    say(f"reading Meta's Llama-3 tokenizer from llama-models {version} ({path})")
    meta = cls(path)
    say(f"converting {meta.model.n_vocab - len(meta.special_tokens):,} BPE ranks and {len(meta.special_tokens)} "
        "special tokens with transformers' TikTokenConverter")
    tok, specials = convert(meta)
    _self_check(tok, meta)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".llama3_tokenizer.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(tok, tmp)
        (out / BUILD_FILE).unlink(missing_ok=True)  # no stale record while the files change
        for name in FILES:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = {"format": BUILD_FORMAT, "llama_models_version": version, "source": "llama_models/llama3/tokenizer.model",
              "source_sha256": source_sha, "vocab_size": meta.model.n_vocab, "bos": [BOS, specials[BOS]],
              "eos": [EOS, specials[EOS]], "files": {f: _sha256(out / f) for f in FILES}}
    (out / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")  # last: marks the build complete
    say(f"wrote {out}: {meta.model.n_vocab:,} ids ({meta.model.n_vocab - len(specials):,} BPE + {len(specials)} "
        f"special), bos {BOS}={specials[BOS]}, eos {EOS}={specials[EOS]}, <|eot_id|>={specials['<|eot_id|>']}; "
        f"files {', '.join(FILES)}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.llama3_tokenizer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (created; a matching build is reused)")
    ap.add_argument("--force", action="store_true", help="rebuild, replacing whatever tokenizer OUT_DIR holds")
    args = ap.parse_args(argv)
    try:
        build_llama3_tokenizer(args.out_dir, force=args.force, log=print)
    except TokenizerError as e:
        print(f"llama3_tokenizer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
