"""n-gram decontamination of a corpus or an RL prompt set against benchmark test sets.

    python -m data_prep.decontaminate --input raw/openr1/ --messages-key messages \\
        --report decont/openr1.json [--write-filtered decont/openr1_clean/]
    python -m data_prep.decontaminate --input data/web --tokenizer tok/ --benchmarks bench/ --report r.json
    python -m data_prep.decontaminate --input synth/rl/prompts.jsonl --text-key question \\
        --benchmarks synth/benchmarks --report r.json

A document is contaminated by a benchmark item when they share --ngram consecutive words (13 by default;
NFKC, lower case, punctuation ignored: data_prep.ngrams). Items shorter than that must appear whole (if they
have at least --min-words words; shorter ones cannot be checked and are counted as such). --benchmarks defaults
to the 14 test sets that ship with octomega (octomega/eval/testsets, layout DIR/<benchmark>/test.jsonl); it may
also name other such directories, one benchmark directory or a .jsonl file. An item's text is the concatenation of its --fields that exist (problem/question-like fields by
default; add solution,answer to check those too).

Input: anything data_prep.tokenize reads (jsonl / parquet / Hugging Face, with the same text options), or a
tokenized Megatron prefix (--tokenizer decodes it). The report (JSON) has, per benchmark: items, items
checkable, items found, documents hit and examples. --write-filtered writes the input without the contaminated
documents: jsonl files (original records) for raw input, a prefix for a tokenized one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseReader

from data_prep.megatron_io import PrefixError, PrefixWriter, copy_docs, read_index
from data_prep.ngrams import NGramIndex
from data_prep.records import BadRecordError, RecordFormatter, RecordValidator
from data_prep.sources import InputError, detect_format, make_plan
from data_prep.tokenizer_utils import TokenizerError, load_tokenizer, tokenizer_json_path
from octomega.jsonl import read_jsonl

BENCH_FIELDS = ("Body", "body", "problem", "question", "Question", "input")
DEFAULT_BENCHMARKS = Path(__file__).resolve().parents[1] / "octomega" / "eval" / "testsets"


def find_benchmarks(paths: list[str], only: list[str] | None = None) -> dict[str, str]:
    """{benchmark name: test .jsonl path} from benchmark roots, benchmark directories or .jsonl files."""
    found: dict[str, str] = {}
    for p in map(Path, paths):
        if p.is_file():
            found[p.stem if p.stem != "test" else p.parent.name] = str(p)
        elif (p / "test.jsonl").is_file():
            found[p.name] = str(p / "test.jsonl")
        elif p.is_dir():
            found.update({d.name: str(d / "test.jsonl") for d in sorted(p.iterdir()) if (d / "test.jsonl").is_file()})
        else:
            raise InputError(f"{p}: no such benchmark directory or file (check --benchmarks)")
    if only:
        unknown = set(only) - set(found)
        if unknown:
            raise InputError(f"--only {sorted(unknown)}: not found; benchmarks here: {', '.join(found)}")
        found = {k: v for k, v in found.items() if k in only}
    if not found:
        raise InputError(f"no benchmark test sets (DIR/<name>/test.jsonl) under {', '.join(paths)}")
    return found


def load_items(path: str, fields=BENCH_FIELDS) -> list[str]:
    """One text per line of a benchmark file: its `fields` that are strings, joined (duplicates once)."""
    items = []
    for rec in read_jsonl(path, error=InputError, hint="a benchmark test set is one JSON object per line"):
        parts = [rec[k] for k in fields if isinstance(rec.get(k), str) and rec[k].strip()]
        items.append("\n".join(dict.fromkeys(parts)))
    return items


class NGramOverlapFilter(PipelineStep):
    """Drops documents that share an n-gram with a benchmark item; logs every hit to report_dir/matches/RANK.jsonl."""

    name = "🦠 N-gram overlap"
    type = "🦠 - DECONT"

    def __init__(self, benchmarks: dict[str, str], report_dir: str, n: int = 13, min_words: int = 8,
                 fields=BENCH_FIELDS):
        super().__init__()
        self.benchmarks, self.report_dir, self.fields = benchmarks, report_dir, fields
        self.n, self.min_words = n, min_words

    def run(self, data, rank: int = 0, world_size: int = 1):
        index = NGramIndex(self.n, self.min_words)
        for name, path in self.benchmarks.items():
            for i, text in enumerate(load_items(path, self.fields)):
                index.add(text, (name, i))
        seen = hit = 0
        os.makedirs(os.path.join(self.report_dir, "matches"), exist_ok=True)
        with open(os.path.join(self.report_dir, "matches", f"{rank:05d}.jsonl"), "w") as out:
            for doc in data:
                seen += 1
                found = index.find(doc.text)
                if found:
                    hit += 1
                    self.stat_update("contaminated")
                    out.write(json.dumps({"where": doc.metadata.get("where", doc.id), "doc": doc.metadata.get("doc"),
                                          "hits": [[*index.labels[k], g] for k, g in found.items()]}) + "\n")
                    continue
                yield doc
        with open(os.path.join(self.report_dir, "matches", f"{rank:05d}.json"), "w") as f:
            json.dump({"documents": seen, "contaminated": hit}, f)


class PrefixReader(BaseReader):
    """Documents of a Megatron prefix, decoded; task r reads a contiguous r-th share of them."""

    name = "🔢 Megatron prefix"

    def __init__(self, prefix: str, tokenizer: str, batch_size: int = 256):
        super().__init__()
        self.prefix, self.tokenizer_path, self.batch_size = prefix, tokenizer, batch_size

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import numpy as np

        ix = read_index(self.prefix)
        tok = load_tokenizer(self.tokenizer_path)
        lo, hi = ix.n_docs * rank // world_size, ix.n_docs * (rank + 1) // world_size
        tokens = np.memmap(self.prefix + ".bin", dtype=ix.dtype, mode="r") if ix.n_tokens else None
        size = ix.dtype.itemsize
        for start in range(lo, hi, self.batch_size):
            docs = range(start, min(start + self.batch_size, hi))
            ids = [tokens[ix.pointers[i] // size: ix.pointers[i] // size + ix.lengths[i]].tolist() for i in docs]
            for i, text in zip(docs, tok.decode_batch(ids, skip_special_tokens=True)):
                yield Document(text=text, id=f"{self.prefix}#{i}", metadata={"where": f"{self.prefix} document {i}",
                                                                              "doc": i})


def _record_adapter(self, document: Document) -> dict:
    return document.metadata["record"]


def _report(work: str, benchmarks: dict[str, str], args, n_tasks: int) -> dict:
    per = {name: {"items": 0, "items_checkable": 0, "items_found": set(), "documents_hit": 0, "examples": []}
           for name in benchmarks}
    for name, path in benchmarks.items():
        items = load_items(path, args.fields)
        idx = NGramIndex(args.ngram, args.min_words)
        per[name]["items"] = len(items)
        per[name]["items_checkable"] = sum(idx.add(t, i) for i, t in enumerate(items))
        per[name]["_texts"] = items
    scanned = contaminated = 0
    hit_docs: list[int] = []
    for r in range(n_tasks):
        counts = json.loads(Path(work, "matches", f"{r:05d}.json").read_text())
        scanned, contaminated = scanned + counts["documents"], contaminated + counts["contaminated"]
        for m in read_jsonl(Path(work, "matches", f"{r:05d}.jsonl")):
            if m["doc"] is not None:
                hit_docs.append(m["doc"])
            for name in dict.fromkeys(h[0] for h in m["hits"]):
                per[name]["documents_hit"] += 1
            for name, item, gram in m["hits"]:
                per[name]["items_found"].add(item)
                if len(per[name]["examples"]) < args.examples:
                    per[name]["examples"].append({"where": m["where"], "item": item, "ngram": gram,
                                                  "item_text": per[name]["_texts"][item][:300]})
    for v in per.values():
        v.pop("_texts")
        v["items_found"] = len(v["items_found"])
    return {"input": args.input, "ngram": args.ngram, "min_words": args.min_words, "fields": list(args.fields),
            "documents_scanned": scanned, "documents_contaminated": contaminated, "benchmarks": per,
            "_hit_docs": sorted(hit_docs)}


def run(args) -> dict:
    from data_prep.executor import LocalExecutor

    benchmarks = find_benchmarks(args.benchmarks, args.only)
    work = str(Path(args.report).resolve()) + ".work"
    shutil.rmtree(work, ignore_errors=True)  # a scan is cheap to redo; no stale task reports
    inp = args.input[0].removesuffix(".bin").removesuffix(".idx")
    is_prefix = Path(inp + ".idx").is_file() and Path(inp + ".bin").is_file()
    if is_prefix:
        if not args.tokenizer:
            raise InputError(f"{inp} is a tokenized prefix: pass --tokenizer to decode it")
        tokenizer_json_path(args.tokenizer)
        n_tasks, pipeline = args.workers, [PrefixReader(inp, args.tokenizer)]
    else:
        from data_prep.readers import UnitHFReader, UnitJsonlReader, UnitParquetReader, load_hf_dataset

        fmt_name = detect_format(args.input) if args.input_format == "auto" else args.input_format
        rows = load_hf_dataset(inp, args.hf_split).num_rows if fmt_name == "hf" else None
        plan = make_plan(args.input, fmt_name, args.workers, hf_rows=rows)
        mode = "messages" if args.messages_key else "qa" if args.qa_style else "text"
        fmt = RecordFormatter(mode, args.text_key or "text", args.question_key, args.answer_key,
                              args.messages_key or "messages", args.qa_style or "long")
        reader = {"jsonl": lambda: UnitJsonlReader(plan.root, plan.tasks),
                  "parquet": lambda: UnitParquetReader(plan.root, plan.tasks, columns=None),
                  "hf": lambda: UnitHFReader(plan.root, plan.tasks, split=args.hf_split)}[plan.fmt]()
        validator = RecordValidator(work, on_bad="skip", max_chars=0, keep_record=bool(args.write_filtered))
        n_tasks, pipeline = len(plan.tasks), [reader, fmt, validator]
    pipeline.append(NGramOverlapFilter(benchmarks, work, args.ngram, args.min_words, tuple(args.fields)))
    if args.write_filtered and not is_prefix:
        from datatrove.pipeline.writers import JsonlWriter

        pipeline.append(JsonlWriter(args.write_filtered, output_filename="${rank}.jsonl", compression=None,
                                    adapter=_record_adapter))
    LocalExecutor(pipeline, tasks=n_tasks, workers=args.workers, logging_dir=os.path.join(work, "datatrove"),
                  skip_completed=False).run()
    report = _report(work, benchmarks, args, n_tasks)
    hit_docs = report.pop("_hit_docs")
    if args.write_filtered and is_prefix:
        ix = read_index(inp)
        data = __import__("numpy").memmap(inp + ".bin", dtype="uint8", mode="r") if ix.n_tokens else None
        writer, prev = PrefixWriter(args.write_filtered, ix.dtype.name), 0
        for d in hit_docs + [ix.n_docs]:
            copy_docs(ix, data, prev, d, writer)
            prev = d + 1
        writer.close()
    report["filtered_output"] = args.write_filtered
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.decontaminate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", required=True, help="corpus: files/directory/HF dataset, or a prefix")
    ap.add_argument("--input-format", default="auto", choices=["auto", "jsonl", "parquet", "hf"])
    ap.add_argument("--hf-split", default="train", help="split of a Hugging Face dataset (default train)")
    ap.add_argument("--text-key", help="text field (default text)")
    ap.add_argument("--qa-style", choices=["short", "long"], help="check 'Question: ...\\nAnswer: ...' documents")
    ap.add_argument("--question-key", default="question")
    ap.add_argument("--answer-key", default="answer")
    ap.add_argument("--messages-key", help="field with chat messages")
    ap.add_argument("--tokenizer", help="tokenizer that decodes a tokenized --input prefix")
    ap.add_argument("--benchmarks", nargs="+", default=[str(DEFAULT_BENCHMARKS)],
                    help="benchmark roots (DIR/<name>/test.jsonl), benchmark dirs or .jsonl files "
                    f"(default {DEFAULT_BENCHMARKS})")
    ap.add_argument("--only", help="comma-separated benchmark names to check (default all found)")
    ap.add_argument("--fields", default=",".join(BENCH_FIELDS), help="benchmark fields that make an item's text")
    ap.add_argument("--ngram", type=int, default=13, help="words per n-gram (default 13)")
    ap.add_argument("--min-words", type=int, default=8, help="shorter items cannot be checked (default 8)")
    ap.add_argument("--report", required=True, help="report JSON to write")
    ap.add_argument("--write-filtered", help="write the clean documents here (jsonl dir, or a prefix for a prefix)")
    ap.add_argument("--examples", type=int, default=5, help="example matches kept per benchmark (default 5)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = ap.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x] if args.only else None
    args.fields = tuple(x for x in args.fields.split(",") if x)
    try:
        report = run(args)
    except (InputError, PrefixError, TokenizerError, BadRecordError) as e:
        print(f"decontaminate: error: {e}", file=sys.stderr)
        return 2
    print(f"decontaminate: {report['documents_contaminated']:,} of {report['documents_scanned']:,} documents share "
          f"a {args.ngram}-gram with a benchmark item")
    for name, b in report["benchmarks"].items():
        print(f"  {name:16} {b['items_found']:>6} of {b['items']:>6} items found ({b['items_checkable']} checkable), "
              f"{b['documents_hit']:,} documents")
    print(f"report: {args.report}" + (f"; clean copy: {args.write_filtered}" if args.write_filtered else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
