"""Look inside Megatron prefixes and check blend files.

    python -m data_prep.inspect data/web [--tokenizer tok/] [--docs 3] [--start 0]
        counts, a length histogram and the first documents decoded (the tokenizer defaults to the one named
        in data/web.stats.json)
    python -m data_prep.inspect --blend blends/stable.json [--tokenizer tok/]
        every prefix exists with the blend's dtype, weights sum to 1, one tokenizer; with --tokenizer also that
        it is the blend's tokenizer, that its vocabulary fits the dtype, and that token ids stay below it
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from data_prep.megatron_io import PrefixError, read_index, read_tokens
from data_prep.mix import BlendError, load_blend
from data_prep.tokenizer_utils import TokenizerError, describe_tokenizer, dtype_for_vocab, load_tokenizer

SCAN_TOKENS = 1 << 24  # tokens of each prefix scanned for out-of-vocabulary ids (--full scans all)


def stats_for(prefix: str) -> dict | None:
    """The stats JSON data_prep.tokenize wrote for a prefix (also for its _valid and _partNNNNN siblings)."""
    for cand in (prefix, re.sub(r"(_valid|_part\d{5})$", "", prefix)):
        p = Path(cand + ".stats.json")
        if p.is_file():
            return json.loads(p.read_text())
    return None


def histogram(lengths: np.ndarray, width: int = 40) -> list[str]:
    """Document lengths in power-of-two bins, as text bars."""
    if len(lengths) == 0:
        return ["(no documents)"]
    top = int(np.ceil(np.log2(max(2, int(lengths.max()) + 1))))
    edges = [0] + [2 ** k for k in range(1, top + 1)]
    counts, _ = np.histogram(lengths, bins=edges + [edges[-1] * 2])
    lines, peak = [], max(1, counts.max())
    for lo, hi, n in zip(edges, edges[1:] + [edges[-1] * 2], counts):
        if n:
            lines.append(f"  {lo:>8,} - {hi - 1:<8,} {n:>9,} {'#' * max(1, round(width * n / peak))}")
    return lines


def show_prefix(prefix: str, tokenizer: str | None, docs: int, start: int, max_chars: int, ids: bool) -> None:
    ix = read_index(prefix)
    lengths = np.asarray(ix.lengths)
    print(f"{prefix}: {ix.n_docs:,} documents, {ix.n_tokens:,} tokens ({ix.dtype.name}), "
          f"mean {lengths.mean() if len(lengths) else 0:.1f} tokens/document")
    print("length histogram (tokens per document):")
    print("\n".join(histogram(lengths)))
    stats = stats_for(prefix)
    tokenizer = tokenizer or (stats or {}).get("tokenizer")
    tok = load_tokenizer(tokenizer) if tokenizer and not ids else None
    for i, toks in enumerate(read_tokens(ix, start, docs), start=start):
        print(f"--- document {i} ({len(toks)} tokens) ---")
        if tok is None:
            print(" ".join(map(str, toks[:200])) + (" ..." if len(toks) > 200 else ""))
        else:
            text = tok.decode(toks.tolist(), skip_special_tokens=False)
            more = f" ... [{len(text) - max_chars:,} more characters]" if len(text) > max_chars else ""
            print(text[:max_chars] + more)


def max_token(prefix: str, limit: int | None) -> int:
    ix = read_index(prefix)
    if ix.n_tokens == 0:
        return -1
    data = np.memmap(prefix + ".bin", dtype=ix.dtype, mode="r")
    data = data[:limit] if limit else data
    return int(max(data[i:i + SCAN_TOKENS].max() for i in range(0, len(data), SCAN_TOKENS)))


def verify_blend(path: str, tokenizer: str | None, full: bool) -> None:
    blend = load_blend(path)
    print(f"{path}: stage {blend.get('stage')}, {len(blend['corpora'])} prefixes, dtype {blend['dtype']}, "
          f"tokenizer {blend['tokenizer_fingerprint']}, train_tokens {blend.get('train_tokens', 0):,}")
    for c in blend["corpora"] + [dict(v, weight=None) for v in blend.get("valid", [])]:
        ix = read_index(c["prefix"])
        w = "valid" if c["weight"] is None else f"{c['weight']:.4f}"
        print(f"  {w:>8} {c['name']:24} {ix.n_docs:>12,} docs {ix.n_tokens:>15,} tokens  {c['prefix']}")
    if tokenizer:
        info = describe_tokenizer(tokenizer)
        if info.fingerprint != blend["tokenizer_fingerprint"]:
            raise BlendError(f"{path}: made with tokenizer {blend['tokenizer_fingerprint']}, but {tokenizer} is "
                             f"{info.fingerprint}: train with the tokenizer the corpora were tokenized with")
        if blend["dtype"] == "uint16" and dtype_for_vocab(info.vocab_size) != "uint16":
            raise BlendError(f"{path}: dtype uint16 cannot hold the {info.vocab_size:,} ids of {tokenizer}")
        for c in blend["corpora"] + blend.get("valid", []):
            top = max_token(c["prefix"], None if full else SCAN_TOKENS)
            if top >= info.vocab_size:
                raise BlendError(f"{c['prefix']}.bin holds token id {top}, outside the {info.vocab_size}-id vocabulary")
        print(f"  tokenizer {tokenizer}: {info.vocab_size:,} ids fit {blend['dtype']}, all scanned ids below it")
    print("blend OK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.inspect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefix", nargs="?", help="a Megatron prefix (path without .bin/.idx)")
    ap.add_argument("--blend", help="verify this blend file instead")
    ap.add_argument("--tokenizer", help="tokenizer to decode with / to check the blend against")
    ap.add_argument("--docs", type=int, default=3, help="documents to print (default 3)")
    ap.add_argument("--start", type=int, default=0, help="first document to print (default 0)")
    ap.add_argument("--max-chars", type=int, default=1500, help="characters printed per document (default 1500)")
    ap.add_argument("--ids", action="store_true", help="print token ids instead of text")
    ap.add_argument("--full", action="store_true", help="--blend: scan every token for out-of-vocabulary ids")
    args = ap.parse_args(argv)
    try:
        if args.blend:
            verify_blend(args.blend, args.tokenizer, args.full)
        elif args.prefix:
            show_prefix(args.prefix.removesuffix(".bin").removesuffix(".idx"), args.tokenizer, args.docs,
                        args.start, args.max_chars, args.ids)
        else:
            ap.error("give a PREFIX or --blend FILE")
    except (PrefixError, BlendError, TokenizerError) as e:
        print(f"inspect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
