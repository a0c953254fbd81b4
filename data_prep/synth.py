"""Deterministic generator of the tiny demo corpora (docs/tiny_science.md).

    python -m data_prep.synth --out DIR [--seed 0] [--scale 1.0]

writes
    DIR/raw/web.jsonl                    {"text"}: arithmetic facts, equation lists, ~30% worked examples
    DIR/raw/qa_short.jsonl               {"question","answer"}: answer = equations, "The answer is \\boxed{N}."
    DIR/raw/qa_long.jsonl                {"question","answer"}: each clause restated, each step checked
    DIR/rl/prompts.jsonl                 {"id","question","answer","level"}: 3,000 problems (1,000 per level)
    DIR/benchmarks/tiny_arith/test.jsonl same fields: 300 problems (100 per level L1/L2/L3)
    DIR/tokenizer/                       byte-level BPE (digits split) trained on the corpus, <= 512 ids
    DIR/manifest.json                    seed, scale, record counts and sha256 of every file

Every stream has its own seed (test, rl, qa_short, qa_long, web). RL problems sharing a 13-word n-gram with a
test question, and QA/web problems sharing one with a test or RL question, are dropped (this also removes equal
question texts), so neither the RL prompts nor the test set appear in training text.
--scale multiplies the web and QA sizes (scale 1.0 ~ 4M / 1M / 1.5M tokens under the tiny tokenizer);
the RL and test sets keep their sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

from data_prep.templates import QA_TEMPLATE
from data_prep.synth_problems import (equation_list, fact_sentence, long_cot, make_problem, question, short_cot,
                                      worked_example)
from data_prep.ngrams import NGramIndex
from data_prep.tokenizer_utils import train_tokenizer

LEVELS = ("L1", "L2", "L3")
# Documents at scale 1.0, calibrated so the tiny tokenizer gives ~4M / ~1M / ~1.5M tokens (docs/data_prep.md).
WEB_DOCS, SHORT_DOCS, LONG_DOCS = 23_500, 12_300, 6_800
RL_PER_LEVEL, TEST_PER_LEVEL = 1_000, 100
EXCLUDE_NGRAM = 13  # a QA/web/RL problem sharing 13 consecutive words with a test (or RL) question is dropped
TOKENIZER_SAMPLE = 3_000  # documents of each corpus the tokenizer is trained on (keeps synth fast)


def _rng(seed: int, stream: str) -> random.Random:
    # A str seed is hashed with SHA-512 by `random`: the same on every platform and Python run.
    return random.Random(f"octomega-synth/{seed}/{stream}")


def _unique_problems(rng, per_level: int, exclude: NGramIndex, id_prefix: str) -> list[dict]:
    rows, seen = [], set()
    for level in LEVELS:
        n = 0
        while n < per_level:
            p = make_problem(rng, level)
            q = question(p)
            if q in seen or exclude.find(q, first_only=True):
                continue
            seen.add(q)
            rows.append({"question": q, "answer": str(p.answer), "level": level})
            n += 1
    rng.shuffle(rows)  # levels interleaved, deterministically
    return [{"id": f"{id_prefix}-{i:05d}", **r} for i, r in enumerate(rows)]


def _qa_rows(rng, n: int, exclude: NGramIndex, style: str) -> list[dict]:
    rows = []
    while len(rows) < n:
        p = make_problem(rng, LEVELS[len(rows) % 3])
        q = question(p)
        if exclude.find(q, first_only=True):
            continue
        rows.append({"question": q, "answer": short_cot(p) if style == "short" else long_cot(p)})
    return rows


def _web_doc(rng, exclude: NGramIndex) -> str:
    r = rng.random()
    if r < 0.35:
        head = rng.choice(["Arithmetic facts.", "Some facts about numbers.", "Quick facts:",
                           "Number facts to remember."])
        return " ".join([head] + [fact_sentence(rng) for _ in range(rng.randint(6, 14))])
    if r < 0.70:
        return equation_list(rng)
    examples = []
    while len(examples) < rng.randint(1, 3):
        p = make_problem(rng, rng.choice(LEVELS))
        if not exclude.find(question(p), first_only=True):
            examples.append(worked_example(rng, p))
    lead = rng.choice(["", "Here is how such a story works out.\n", "Word problems in practice.\n"])
    return lead + "\n\n".join(examples)


def _write_jsonl(path: Path, rows) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return {"records": len(rows), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def generate(out, seed: int = 0, scale: float = 1.0, vocab_size: int = 512, log=print) -> dict:
    """Write every file listed in the module docstring under `out`; returns the manifest."""
    if scale <= 0:
        raise ValueError(f"--scale must be > 0 (got {scale})")
    out = Path(out)
    t0 = time.time()
    n_web, n_short, n_long = (max(3, round(n * scale)) for n in (WEB_DOCS, SHORT_DOCS, LONG_DOCS))
    exclude = NGramIndex(EXCLUDE_NGRAM, min_words=EXCLUDE_NGRAM)  # problems sharing a 13-gram count as the same
    test = _unique_problems(_rng(seed, "test"), TEST_PER_LEVEL, exclude, "tiny_arith")
    for r in test:
        exclude.add(r["question"], r["id"])
    rl = _unique_problems(_rng(seed, "rl"), RL_PER_LEVEL, exclude, "rl")
    for r in rl:
        exclude.add(r["question"], r["id"])
    short = _qa_rows(_rng(seed, "qa_short"), n_short, exclude, "short")
    long_ = _qa_rows(_rng(seed, "qa_long"), n_long, exclude, "long")
    web_rng = _rng(seed, "web")
    web = [{"text": _web_doc(web_rng, exclude)} for _ in range(n_web)]
    log(f"synth: generated {n_web:,} web, {n_short:,} short-CoT, {n_long:,} long-CoT documents, "
        f"{len(rl):,} RL prompts, {len(test)} test problems in {time.time() - t0:.1f}s")
    files = {
        "raw/web.jsonl": _write_jsonl(out / "raw/web.jsonl", web),
        "raw/qa_short.jsonl": _write_jsonl(out / "raw/qa_short.jsonl", short),
        "raw/qa_long.jsonl": _write_jsonl(out / "raw/qa_long.jsonl", long_),
        "rl/prompts.jsonl": _write_jsonl(out / "rl/prompts.jsonl", rl),
        "benchmarks/tiny_arith/test.jsonl": _write_jsonl(out / "benchmarks/tiny_arith/test.jsonl", test),
    }
    sample = [d["text"] for d in web[:TOKENIZER_SAMPLE]]
    sample += [QA_TEMPLATE.format(question=r["question"], answer=r["answer"])
               for r in short[:TOKENIZER_SAMPLE] + long_[:TOKENIZER_SAMPLE]]
    train_tokenizer(sample, out / "tokenizer", vocab_size=vocab_size)
    manifest = {"generator": "octomega-synth/1", "seed": seed, "scale": scale, "vocab_size": vocab_size,
                "qa_template": QA_TEMPLATE, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(f["bytes"] for f in files.values()) / 1e6
    log(f"synth: wrote {out} ({size:.1f} MB, tokenizer in {out / 'tokenizer'}) "
        f"in {time.time() - t0:.1f}s")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_prep.synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created; files in it are overwritten)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; each stream derives its own (default 0)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplies the web and QA document counts (default 1.0 = ~6.5M tokens; 0.05 for tests)")
    ap.add_argument("--vocab-size", type=int, default=512, help="tokenizer size, special tokens included (512)")
    ap.add_argument("--dry-run", action="store_true", help="print the document counts and exit without writing")
    args = ap.parse_args(argv)
    if args.dry_run:
        n = [max(3, round(x * args.scale)) for x in (WEB_DOCS, SHORT_DOCS, LONG_DOCS)]
        print(f"would write to {args.out}: web {n[0]:,}, qa_short {n[1]:,}, qa_long {n[2]:,} documents, "
              f"{RL_PER_LEVEL * 3:,} RL prompts, {TEST_PER_LEVEL * 3} test problems, a {args.vocab_size}-id tokenizer")
        return 0
    try:
        generate(args.out, seed=args.seed, scale=args.scale, vocab_size=args.vocab_size)
    except (OSError, ValueError) as e:
        print(f"synth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
