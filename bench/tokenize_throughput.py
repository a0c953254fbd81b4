"""End-to-end data_prep.tokenize throughput with Meta's real Llama-3 tokenizer (128,256 ids), side by side with
the raw `tokenizers` rate and tiktoken's on the same documents, in one run.

    .venv/bin/python bench/tokenize_throughput.py [--text-repeat 2] [--tokenizers llama3] [--workers 1,2] [--repeats 3]

Documents: the real math text of the test sets shipped in octomega/eval/testsets (each record's text fields of over
20 characters joined: 15,244 documents, 4.6 MB, ~300 characters each), repeated --text-repeat times and shuffled into
one jsonl (optionally with the synth corpora, --synth-scale). Short documents are the hard case for per-document
overhead. Tokenizers: "llama3" = Meta's Llama-3 tokenizer built offline from llama-models
(data_prep.llama3_tokenizer), "tiny" = a 512-id byte-level BPE trained here like the tiny pipeline's, or a
tokenizer directory.
Every side runs with RAYON_NUM_THREADS=1, so one worker = one core:
  raw(n): n processes each encode_batch their share of the same texts (batches of 1000, BOS/EOS added as the
          pipeline does, special-token text kept plain as the pipeline does); tokens / wall seconds. Reading and
          JSON parsing are not timed.
  raw fast(n): the same with encode_batch_fast (no character offsets), the call the pipeline makes.
  tiktoken(n) (llama3 only): the same texts through tiktoken's Encoding built by Meta's llama_models Tokenizer
          (encode_ordinary per text, + BOS/EOS); token counts must equal the others'.
  e2e(n): data_prep.tokenize.run(workers=n, tasks=n) in a fresh process: reading, formatting, validation,
          tokenizing, writing task shards (int32 for 128k ids), merging, stats; tokens / wall seconds of run().
ratio = e2e(n) / raw(n); e2e(n) / raw fast(n) isolates the pipeline's own work; per worker = e2e(n) / n / raw(1);
scaling = e2e(2) / e2e(1), next to raw(2) / raw(1), what the machine itself allows. CPU seconds (own + reaped
workers, workers started with fork) give tokens per CPU second, steadier than wall-clock rates on a shared
machine. Each configuration runs --repeats times, the sides alternating; the best of each is kept, and the load
average is recorded around each configuration. Writes bench/results/tokenize_throughput.json.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported anywhere: one thread per process

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TESTSETS = ROOT / "octomega" / "eval" / "testsets"
BATCH = 1000  # documents per encode_batch, as LlamaMegatronTokenizer uses


def make_corpus(work: Path, real_text: Path | None, repeat: int, synth_scale: float) -> Path:
    """Real math text (each test-set record's strings joined) x repeat, plus synth corpora if synth_scale > 0."""
    texts = []
    if real_text is not None:
        for f in sorted(Path(real_text).glob("*/test.jsonl")):
            for line in open(f, encoding="utf-8"):
                parts = [v for v in json.loads(line).values() if isinstance(v, str) and len(v) > 20]
                if parts:
                    texts.append("\n".join(parts))
        if not texts:
            raise SystemExit(f"no */test.jsonl text under {real_text}")
        texts *= repeat
    if synth_scale > 0:
        from data_prep.synth import generate
        from data_prep.templates import QA_TEMPLATE

        generate(work / "synth", seed=0, scale=synth_scale, log=lambda *a: None)
        for name in ("web", "qa_short", "qa_long"):
            for line in open(work / "synth" / "raw" / f"{name}.jsonl"):
                r = json.loads(line)
                texts.append(r["text"] if "text" in r else QA_TEMPLATE.format(**r))
    random.Random(0).shuffle(texts)  # interleave benchmarks (and copies)
    path = work / "bench.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def tokenizer_dir(name: str, work: Path, corpus: Path) -> Path:
    if name == "llama3":
        from data_prep.llama3_tokenizer import build_llama3_tokenizer

        return build_llama3_tokenizer(work / "llama3")
    if name == "tiny":  # the tiny pipeline's kind of tokenizer (512 ids), trained on these documents
        from data_prep.tokenizer_utils import train_tokenizer

        texts = [json.loads(x)["text"] for x in open(corpus)]
        return train_tokenizer(texts[:20_000], work / "tiny", vocab_size=512)
    return Path(name)


def _raw_worker(job: tuple, barrier, results) -> None:
    """Encode this worker's share of the texts with the pipeline's BOS/EOS template; time only the encoding,
    which starts in all workers at once (barrier) after each has loaded its texts."""
    tok_dir, corpus, i, n, kind = job
    texts = [json.loads(x)["text"] for x in open(corpus)]
    lo, hi = len(texts) * i // n, len(texts) * (i + 1) // n
    texts = texts[lo:hi]
    if kind == "tiktoken":  # Meta's own encoder: tiktoken.Encoding from llama_models' Tokenizer
        from data_prep.llama3_tokenizer import meta_tokenizer

        enc = meta_tokenizer().model

        def encode(batch):  # special-token text stays plain (encode_ordinary); + BOS and EOS per document
            return [len(enc.encode_ordinary(t)) + 2 for t in batch]
    else:
        from tokenizers.processors import TemplateProcessing

        from data_prep.tokenizer_utils import describe_tokenizer, load_tokenizer

        info = describe_tokenizer(tok_dir)
        tok = load_tokenizer(tok_dir)
        tok.no_truncation()
        tok.encode_special_tokens = True  # as LlamaMegatronTokenizer: special-token text in documents is text
        tok.post_processor = TemplateProcessing(single=f"{info.bos} $A {info.eos}", pair=None,
                                                special_tokens=[(info.bos, info.bos_id), (info.eos, info.eos_id)])
        call = tok.encode_batch_fast if kind == "fast" else tok.encode_batch

        def encode(batch):
            return [len(e.ids) for e in call(batch)]
    barrier.wait()
    c0, t0 = time.process_time(), time.time()
    tokens = 0
    for b in range(0, len(texts), BATCH):
        tokens += sum(encode(texts[b:b + BATCH]))
    results.put({"tokens": tokens, "start": t0, "end": time.time(), "cpu": time.process_time() - c0})


def raw(tok_dir: Path, corpus: Path, n: int, kind: str = "batch") -> dict:
    """kind: batch (encode_batch), fast (encode_batch_fast) or tiktoken."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_raw_worker, args=((str(tok_dir), str(corpus), i, n, kind), barrier, results))
             for i in range(n)]
    for p in procs:
        p.start()
    parts = [results.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    tokens = sum(p["tokens"] for p in parts)
    return {"tokens": tokens, "wall_s": wall, "cpu_s": sum(p["cpu"] for p in parts), "tokens_per_s": tokens / wall}


def _e2e_child(cfg: dict) -> None:
    """Runs in a fresh process: the tokenize run, its wall time and the CPU time of it and its workers."""
    import datatrove.executor  # noqa: F401 - imported before the clock starts, as the CLI has at startup

    from data_prep import tokenize

    r0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    t0 = time.time()
    stats = tokenize.run(cfg["corpus"], cfg["out"], "bench", cfg["tokenizer"], workers=cfg["workers"],
                         tasks=cfg["workers"], overwrite=True, start_method="fork", log=lambda *a: None)
    wall = time.time() - t0
    r1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(r0, r1))
    print(json.dumps({"tokens": stats["tokens"], "documents": stats["documents"], "wall_s": wall, "cpu_s": cpu}))


def e2e(tok_dir: Path, corpus: Path, n: int, work: Path) -> dict:
    cfg = {"corpus": str(corpus), "out": str(work / "out"), "tokenizer": str(tok_dir), "workers": n}
    proc = subprocess.run([sys.executable, __file__, "--_e2e", json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"e2e run failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["tokens_per_s"] = r["tokens"] / r["wall_s"]
    return r


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["tokens_per_s"]) | {"all_tokens_per_s": [round(r["tokens_per_s"]) for r in runs]}


def command_line(argv: list[str]) -> str:
    """The command as run, paths inside the repository written relative to it (no absolute paths)."""
    def rel(x: str) -> str:
        p = Path(x)
        return os.path.relpath(p, ROOT) if p.is_absolute() and p.is_relative_to(ROOT) else x
    exe = Path(sys.executable)
    return " ".join([rel(str(exe)) if exe.is_relative_to(ROOT) else exe.name, "bench/tokenize_throughput.py",
                     *map(rel, argv)])


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-text", default=str(TESTSETS),
                    help="directory of <name>/test.jsonl files whose text makes the documents (default: the test "
                         "sets shipped in octomega/eval/testsets; 'none' to skip)")
    ap.add_argument("--text-repeat", type=int, default=2, help="copies of the real text (default 2: ~10 MB)")
    ap.add_argument("--synth-scale", type=float, default=0.0, help="also the synth corpora at this scale (0 = none)")
    ap.add_argument("--tokenizers", default="llama3", help="llama3, tiny and/or tokenizer directories (default llama3)")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration; the best counts (default 3)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tokenize_throughput.json"))
    ap.add_argument("--_e2e", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._e2e:
        _e2e_child(json.loads(args._e2e))
        return 0
    workers = [int(w) for w in args.workers.split(",")]
    real = None if args.real_text == "none" else Path(args.real_text)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = make_corpus(work, real, args.text_repeat, args.synth_scale)
        n_docs = sum(1 for _ in open(corpus))
        text_source = None if real is None else (os.path.relpath(real.resolve(), ROOT)
                                                 if real.resolve().is_relative_to(ROOT) else real.name)
        result = {"command": command_line(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
                  "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                              "load_avg_before": load(),
                              "note": "shared machine: other jobs ran beside the bench; load averages (1, 5, 15 "
                                      "min) are recorded before, after and around each configuration"},
                  "text": {"source": text_source, "repeat": args.text_repeat, "synth_scale": args.synth_scale},
                  "documents": n_docs, "bytes": corpus.stat().st_size, "rayon_num_threads": 1, "tokenizers": {}}
        from data_prep.tokenizer_utils import describe_tokenizer, load_tokenizer

        for name in args.tokenizers.split(","):
            t0 = time.time()
            tok_dir = tokenizer_dir(name, work, corpus)
            build_s, t0 = time.time() - t0, time.time()
            info = describe_tokenizer(tok_dir)
            describe_s, t0 = time.time() - t0, time.time()
            load_tokenizer(tok_dir)
            load_s = time.time() - t0
            kinds = {"raw": "batch", "raw_fast": "fast"} | ({"tiktoken": "tiktoken"} if name == "llama3" else {})
            # fixed costs inside every e2e run (not in raw): describe_tokenizer in prepare() and the tokenizer
            # load in each worker
            res = {"vocab_size": info.vocab_size, "dtype": info.dtype, "build_s": round(build_s, 2),
                   "describe_tokenizer_s": round(describe_s, 2), "load_tokenizer_s": round(load_s, 2),
                   **{k: {} for k in kinds}, "e2e": {}, "load_avg": {}}
            if name == "llama3":
                from importlib.metadata import version

                res["source"] = f"llama-models {version('llama-models')} llama_models/llama3/tokenizer.model"
            for n in workers:
                res["load_avg"][n] = [load()]
                runs = [{**{k: raw(tok_dir, corpus, n, kind) for k, kind in kinds.items()},
                         "e2e": e2e(tok_dir, corpus, n, work)} for _ in range(args.repeats)]
                res["load_avg"][n].append(load())
                for k in (*kinds, "e2e"):
                    res[k][n] = best([r[k] for r in runs])
                    assert res[k][n]["tokens"] == res["raw"][n]["tokens"], f"{k} and raw token counts differ"
            base = res["raw"][workers[0]]["tokens_per_s"] / workers[0]

            def rate(k, n, cpu=False):
                r = res[k][n]
                return r["tokens"] / (r["cpu_s"] if cpu else r["wall_s"])
            # e2e(n) / raw(n): both sides with n processes, in the same conditions
            res["ratio"] = {n: rate("e2e", n) / rate("raw", n) for n in workers}
            # against encode_batch_fast, the call the pipeline makes: what reading, validation and writing cost
            res["ratio_vs_fast"] = {n: rate("e2e", n) / rate("raw_fast", n) for n in workers}
            # e2e(n) per worker / raw(1): the ratio and the scaling in one number
            res["ratio_per_worker_vs_raw1"] = {n: rate("e2e", n) / n / base for n in workers}
            # tokens per CPU second, e2e(n) / raw(n) and / raw fast(n): insensitive to other load on the machine
            res["ratio_cpu"] = {n: rate("e2e", n, True) / rate("raw", n, True) for n in workers}
            res["ratio_cpu_vs_fast"] = {n: rate("e2e", n, True) / rate("raw_fast", n, True) for n in workers}
            if "tiktoken" in res:  # tiktoken / encode_batch_fast, wall and per CPU second
                res["tiktoken_vs_fast"] = {n: rate("tiktoken", n) / rate("raw_fast", n) for n in workers}
                res["tiktoken_vs_fast_cpu"] = {n: rate("tiktoken", n, True) / rate("raw_fast", n, True)
                                               for n in workers}
            if len(workers) > 1:
                lo, hi = workers[0], workers[-1]
                res["scaling_e2e"] = rate("e2e", hi) / rate("e2e", lo)
                res["scaling_raw"] = rate("raw", hi) / rate("raw", lo)
            result["tokenizers"][name] = res
            print(f"{name} ({res['vocab_size']:,} ids, {res['dtype']}), {n_docs:,} documents, "
                  f"{res['raw'][workers[0]]['tokens']:,} tokens; fixed costs in each e2e run: describe_tokenizer "
                  f"{describe_s:.2f} s, tokenizer load {load_s:.2f} s per worker")
            for n in workers:
                tk = f"  tiktoken {rate('tiktoken', n):>9,.0f}" if "tiktoken" in res else ""
                print(f"  {n} worker(s): raw {rate('raw', n):>9,.0f} tok/s  raw fast {rate('raw_fast', n):>9,.0f}"
                      f"{tk}  e2e {rate('e2e', n):>9,.0f}  e2e/raw {res['ratio'][n]:.3f}  e2e/raw fast "
                      f"{res['ratio_vs_fast'][n]:.3f}  e2e per worker / raw(1) {res['ratio_per_worker_vs_raw1'][n]:.3f}"
                      f"  per CPU second: e2e/raw {res['ratio_cpu'][n]:.3f}, e2e/raw fast "
                      f"{res['ratio_cpu_vs_fast'][n]:.3f}"
                      + (f", tiktoken/raw fast {res['tiktoken_vs_fast_cpu'][n]:.3f}" if "tiktoken" in res else "")
                      + f"  (load {res['load_avg'][n][0][0]:.1f} -> {res['load_avg'][n][1][0]:.1f})")
            if len(workers) > 1:
                print(f"  scaling {workers[0]} -> {workers[-1]} workers: e2e x{res['scaling_e2e']:.2f}, "
                      f"raw x{res['scaling_raw']:.2f}")
        result["machine"]["load_avg_after"] = load()
        result["wall_s"] = round(time.time() - t_start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {command_line([args.out]).split()[-1]} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
