"""Tokenize a corpus into a Megatron .bin/.idx prefix with datatrove.

    python -m data_prep.tokenize --input raw/web.jsonl --tokenizer tok/ --output-dir data --name web --valid-docs 200

Pipeline (datatrove, one task per contiguous piece of the input): read jsonl / parquet / a Hugging Face dataset
-> build the text (a text field, QA template "Question: {question}\\nAnswer: {answer}", or chat messages)
-> drop and report bad records -> tokenize with BOS and EOS around each document (MegatronDocumentTokenizer)
-> merge the task shards in input order into OUT/NAME.bin/.idx (or list them), hold out --valid-docs documents
in OUT/NAME_valid, write OUT/NAME.stats.json (+ OUT/NAME.bad_records.jsonl when records were skipped).

Work files live in OUT/.work/NAME. A re-run of the same command skips finished tasks (datatrove completion
markers) and reports an up-to-date output without redoing it; changed options start the work over.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from data_prep.megatron_io import PrefixError
from data_prep.pipeline import MergeStep, TokenizeJob, build_pipeline, finalize, job_dict
from data_prep.readers import load_hf_dataset
from data_prep.records import BadRecordError
from data_prep.registry import CORPORA
from data_prep.sources import InputError, detect_format, make_plan
from data_prep.tokenizer_utils import TokenizerError, describe_tokenizer

DEFAULT_MAX_CHARS = 1_000_000  # ~250k tokens: longer "documents" are nearly always broken dumps (0 = no limit)
SLURM_BYTES_PER_TASK = 1 << 30  # default Slurm task count: one task per GiB of input
ERRORS = (InputError, TokenizerError, BadRecordError, PrefixError)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mtimes(plan) -> list:
    return [os.path.getmtime(os.path.join(plan.root, f)) for f in plan.files]


def prepare(inputs, output_dir, name, tokenizer, *, input_format="auto", glob=None, text_key=None, qa_style=None,
            question_key="question", answer_key="answer", messages_key=None, hf_split="train", hf_subset=None,
            hf_data_dir=None, valid_docs=0, valid_seed=0, workers=1, tasks=None, on_bad_record="skip",
            max_chars=DEFAULT_MAX_CHARS, bos_token="auto", eos_token="auto", dtype="auto", merge=True,
            keep_shards=False, role=None, executor="local", log=print) -> TokenizeJob:
    """Resolve every option into a TokenizeJob (checks inputs and tokenizer; reads no records)."""
    inputs = [str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    for opt, value, least in (("--workers", workers, 1), ("--tasks", tasks or 1, 1), ("--valid-docs", valid_docs, 0),
                              ("--max-chars", max_chars, 0)):
        if value < least:
            raise InputError(f"{opt} must be >= {least} (got {value})")
    mode = "messages" if messages_key else "qa" if qa_style else "text"
    if mode != "text" and text_key:
        raise InputError(f"--text-key {text_key!r} conflicts with {'--messages-key' if messages_key else '--qa-style'}")
    tokenizer = str(Path(tokenizer).resolve()) if Path(tokenizer).exists() else str(tokenizer)
    info = describe_tokenizer(tokenizer, bos=bos_token, eos=eos_token, dtype=dtype)
    fmt = detect_format(inputs) if input_format == "auto" else input_format
    hf_rows = None
    if fmt == "hf":
        hf_rows = load_hf_dataset(inputs[0], hf_split, hf_subset, hf_data_dir).num_rows
    if tasks is None:
        tasks = workers
        if executor == "slurm" and fmt != "hf":
            total = make_plan(inputs, fmt, 1, glob=glob).total_bytes
            tasks = max(1, math.ceil(total / SLURM_BYTES_PER_TASK))
    plan = make_plan(inputs, fmt, tasks, glob=glob, hf_rows=hf_rows)
    out = Path(output_dir).resolve()
    source = {"inputs": [str(Path(i).resolve()) if Path(i).exists() else i for i in inputs], "format": plan.fmt,
              "files": len(plan.files), "size": plan.total_bytes, "mode": mode,
              "fields": {"text": {"text_key": text_key or "text"}, "qa": {"question_key": question_key,
                         "answer_key": answer_key}, "messages": {"messages_key": messages_key}}[mode],
              "qa_style": qa_style or ("long" if mode == "messages" else None), "hf_split": hf_split,
              "hf_subset": hf_subset, "hf_data_dir": hf_data_dir}
    job = TokenizeJob(name=name, output_dir=str(out), work_dir=str(out / ".work" / name), plan=plan, tokenizer=info,
                      mode=mode, text_key=text_key or "text", question_key=question_key, answer_key=answer_key,
                      messages_key=messages_key or "messages", qa_style=source["qa_style"] or "short",
                      hf_split=hf_split, hf_subset=hf_subset, hf_data_dir=hf_data_dir, on_bad=on_bad_record,
                      max_chars=max_chars, valid_docs=valid_docs, valid_seed=valid_seed, merge=merge,
                      keep_shards=keep_shards, role=role, source=source)
    job.config_hash = _hash([job_dict(job), _mtimes(plan)])
    return job


def _shard_config(job: TokenizeJob) -> dict:
    """What decides the shards' content: a change means finished tasks cannot be reused."""
    d = job_dict(job)
    for k in ("valid_docs", "valid_seed", "merge", "keep_shards", "role", "config_hash"):
        d.pop(k)
    return {"job": d, "mtimes": _mtimes(job.plan)}


def _up_to_date(job: TokenizeJob) -> dict | None:
    try:
        stats = json.loads(Path(job.stats_path).read_text())
    except (OSError, ValueError):
        return None
    prefixes = [p["prefix"] for p in stats.get("prefixes", [])] + ([stats["valid_prefix"]] if stats.get(
        "valid_prefix") else [])
    ok = stats.get("config_hash") == job.config_hash and all(
        os.path.isfile(p + ".bin") and os.path.isfile(p + ".idx") for p in prefixes)
    return stats if ok else None


def _reset_work_dir(job: TokenizeJob, overwrite: bool, log) -> None:
    work = Path(job.work_dir)
    cfg = work / "config.json"
    want = json.loads(json.dumps(_shard_config(job), default=str))
    if work.exists() and (overwrite or not cfg.is_file() or json.loads(cfg.read_text()) != want):
        if cfg.is_file() and not overwrite:
            log(f"tokenize: options or inputs changed since the last run in {work}; starting the work over")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps(want, indent=1))


def _slurm_executors(job: TokenizeJob, slurm: dict, workers: int | None):
    from datatrove.executor import SlurmPipelineExecutor

    venv = slurm.get("venv") or (os.path.join(sys.prefix, "bin", "activate") if sys.prefix != sys.base_prefix else None)
    common = dict(partition=slurm["partition"], time=slurm.get("time", "24:00:00"), qos=slurm.get("qos") or "",
                  venv_path=venv, env_command=slurm.get("env_command"), sbatch_args=slurm.get("sbatch_args") or {},
                  mem_per_cpu_gb=slurm.get("mem_per_cpu_gb", 2))
    tok = SlurmPipelineExecutor(build_pipeline(job), tasks=job.n_tasks, workers=workers or -1,
                                cpus_per_task=slurm.get("cpus_per_task", 1), job_name=f"tokenize_{job.name}",
                                logging_dir=os.path.join(job.work_dir, "datatrove"), **common)
    merge = SlurmPipelineExecutor([MergeStep(job)], tasks=1, cpus_per_task=1, job_name=f"merge_{job.name}",
                                  logging_dir=os.path.join(job.work_dir, "datatrove_merge"), depends=tok, **common)
    return tok, merge


def run(inputs, output_dir, name, tokenizer, *, workers: int = 1, executor: str = "local", slurm: dict | None = None,
        tokenizer_threads: int | None = None, overwrite: bool = False, dry_run: bool = False, log=print,
        start_method: str = "forkserver", **options) -> dict:
    """Tokenize `inputs` into OUTPUT_DIR/NAME; returns the stats dict (see module docstring).

    options: as `prepare` (input_format, text_key, qa_style, valid_docs, on_bad_record, ...). With
    executor="slurm" the work is submitted (slurm: partition, time, cpus_per_task, mem_per_cpu_gb, qos, venv,
    env_command, sbatch_args) and the returned dict describes the submission; stats appear when the merge job ends.
    start_method: how local worker processes start (datatrove's default forkserver; the benchmark uses fork so
    that the workers' CPU time is counted).
    """
    job = prepare(inputs, output_dir, name, tokenizer, workers=workers, executor=executor, log=log, **options)
    n_workers = max(1, min(workers, job.n_tasks))
    if dry_run:
        d = job_dict(job)
        log(json.dumps({k: d[k] for k in ("name", "output_dir", "work_dir", "mode", "on_bad", "valid_docs")}, indent=1))
        log(f"tokenizer: {json.dumps(asdict(job.tokenizer))}")
        log(f"input: {job.plan.fmt}, {len(job.plan.files)} files, {job.plan.total_bytes:,} "
            f"{'rows' if job.plan.fmt == 'hf' else 'bytes'}, {job.n_tasks} tasks:")
        for r, units in enumerate(job.plan.tasks):
            log(f"  task {r}: " + ", ".join(f"{u.path or job.plan.root}[{u.start}:{'' if u.end is None else u.end}]"
                                            for u in units))
        if executor == "slurm":
            tok, _ = _slurm_executors(job, slurm or {}, workers if workers > 1 else None)
            log("sbatch script of the tokenize array job (a one-task merge job follows it):\n" +
                tok.get_launch_file_contents(tok.get_sbatch_args(job.n_tasks), "launch_pickled_pipeline ..."))
        return {"dry_run": True, "job": job_dict(job)}
    if not overwrite and (stats := _up_to_date(job)):
        log(f"tokenize: {job.prefix} is up to date ({stats['documents']:,} documents, {stats['tokens']:,} tokens); "
            "pass --overwrite to redo it")
        return stats
    _reset_work_dir(job, overwrite, log)
    # One tokenizer thread per worker by default, so N workers use N cores (RAYON_NUM_THREADS set by you wins).
    cores = (slurm or {}).get("cpus_per_task", 1) if executor == "slurm" else max(1, (os.cpu_count() or 1) // n_workers)
    os.environ.setdefault("RAYON_NUM_THREADS", str(tokenizer_threads or cores))  # Slurm jobs inherit it (--export=ALL)
    unit = "rows" if job.plan.fmt == "hf" else "bytes"
    log(f"tokenize: {name}: {job.plan.fmt} input, {job.plan.total_bytes:,} {unit}"
        f" in {job.n_tasks} tasks on {n_workers if executor == 'local' else 'Slurm'} workers; work dir {job.work_dir}")
    if executor == "slurm":
        if not (slurm or {}).get("partition"):
            raise InputError("--executor slurm needs --partition")
        shutil.rmtree(os.path.join(job.work_dir, "datatrove_merge", "completions"), ignore_errors=True)
        tok, merge = _slurm_executors(job, slurm, workers if workers > 1 else None)
        merge.run()
        log(f"tokenize: submitted Slurm jobs {tok.job_id} (tokenize, {job.n_tasks} tasks) and {merge.job_id} (merge); "
            f"logs in {job.work_dir}/datatrove*/; {job.stats_path} appears when the merge job ends")
        return {"submitted": {"tokenize": tok.job_id, "merge": merge.job_id}, "stats_path": job.stats_path}
    from data_prep.executor import LocalExecutor

    LocalExecutor(build_pipeline(job), tasks=job.n_tasks, workers=n_workers, start_method=start_method,
                  logging_dir=os.path.join(job.work_dir, "datatrove")).run()
    return finalize(job, log=log)


def _corpus_defaults(args) -> None:
    """--corpus NAME fills input, format and fields from the registry (explicit options win)."""
    c = CORPORA.get(args.corpus)
    if c is None:
        raise InputError(f"--corpus {args.corpus!r} is not in the registry: {', '.join(sorted(CORPORA))}")
    if not args.input and c.input_format != "hf":
        raise InputError(f"--corpus {c.name} is a synth corpus: pass --input SYNTH_DIR/{c.source}")
    args.input = args.input or [c.source]
    args.input_format = args.input_format if args.input_format != "auto" else c.input_format
    args.hf_subset = args.hf_subset or c.subset
    args.hf_data_dir = args.hf_data_dir or c.data_dir
    args.hf_split = args.hf_split or c.split
    args.name = args.name or c.name
    args.role = args.role or ",".join(c.roles)
    if not (args.text_key or args.qa_style or args.messages_key):
        args.text_key, args.messages_key = c.text_key, c.messages_key
        args.qa_style = c.qa_style if (c.question_key or c.messages_key) else None
        args.question_key, args.answer_key = c.question_key or args.question_key, c.answer_key or args.answer_key


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m data_prep.tokenize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("input")
    g.add_argument("--input", action="append", help="a file, a directory (searched recursively), a saved Hugging Face "
                   "dataset directory or a hub id; repeat for several")
    g.add_argument("--input-format", default="auto", choices=["auto", "jsonl", "parquet", "hf"],
                   help="auto: from file extensions; hf for a dataset directory or hub id (default auto)")
    g.add_argument("--glob", help="file pattern inside directories (default: *.jsonl[.gz|.zst] or *.parquet)")
    g.add_argument("--hf-split", default=None, help="split of a Hugging Face dataset (default train)")
    g.add_argument("--hf-subset", help="configuration name of a Hugging Face dataset")
    g.add_argument("--hf-data-dir", help="data_dir of a Hugging Face dataset (e.g. megamath-web-pro)")
    g.add_argument("--corpus", help="a registry corpus (python -m data_prep.mix --list-corpora): fills input and "
                   "fields")
    g = ap.add_argument_group("document text (one of)")
    g.add_argument("--text-key", help="field holding the document text (default text)")
    g.add_argument("--qa-style", choices=["short", "long"], help="build 'Question: {q}\\nAnswer: {a}' documents; "
                   "short drops a leading <think>...</think> of the answer, long keeps it inline")
    g.add_argument("--question-key", default="question", help="question field for --qa-style (default question)")
    g.add_argument("--answer-key", default="answer", help="answer field for --qa-style (default answer)")
    g.add_argument("--messages-key", help="field with chat messages [{role, content}]: user -> 'Question: ', "
                   "assistant -> 'Answer: ' (style long unless --qa-style short)")
    g = ap.add_argument_group("tokenizer and output")
    g.add_argument("--tokenizer", required=True, help="tokenizer directory, tokenizer.json file or hub id")
    g.add_argument("--output-dir", required=True, help="where OUT/NAME.bin/.idx and OUT/NAME.stats.json go")
    g.add_argument("--name", help="prefix name inside --output-dir (default: the --corpus name)")
    g.add_argument("--role", help="the corpus's role(s) in mixtures (web, qa_short, qa_long, ...; comma-separated "
                   "when it can fill several), stored in the stats")
    g.add_argument("--valid-docs", type=int, default=0, help="hold out this many documents in OUT/NAME_valid (0)")
    g.add_argument("--valid-seed", type=int, default=0, help="seed of the held-out choice (default 0)")
    g.add_argument("--bos-token", default="auto", help="token before each document: auto (<|begin_of_text|> or the "
                   "tokenizer's bos_token), none, or a token")
    g.add_argument("--eos-token", default="auto", help="token after each document: auto (<|end_of_text|> or "
                   "eos_token), none, or a token")
    g.add_argument("--dtype", default="auto", choices=["auto", "uint16", "int32"],
                   help="token dtype: auto = uint16 up to 65,536 ids, int32 above")
    g.add_argument("--no-merge", dest="merge", action="store_false",
                   help="keep one prefix per task (OUT/NAME_partNNNNN) instead of merging; the stats list them")
    g.add_argument("--keep-shards", action="store_true", help="keep the per-task shards in OUT/.work/NAME")
    g = ap.add_argument_group("bad records")
    g.add_argument("--on-bad-record", default="skip", choices=["skip", "fail"],
                   help="skip: drop, count per reason in the stats and list in OUT/NAME.bad_records.jsonl; "
                   "fail: stop at the first one with its file and line (default skip)")
    g.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help=f"longer documents are bad records 'too_long' (default {DEFAULT_MAX_CHARS:,}; 0 = no limit)")
    g = ap.add_argument_group("execution")
    g.add_argument("--executor", default="local", choices=["local", "slurm"],
                   help="local processes or a Slurm job array")
    g.add_argument("--workers", type=int, default=1, help="local: parallel processes; slurm: most array tasks at once")
    g.add_argument("--tasks", type=int, help="datatrove tasks = pieces of the input (default: --workers locally, "
                   "one per GiB on Slurm)")
    g.add_argument("--tokenizer-threads", type=int, help="RAYON_NUM_THREADS per worker (default cores / workers)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--time", default="24:00:00", help="Slurm time limit per task (default 24:00:00)")
    g.add_argument("--cpus-per-task", type=int, default=1, help="Slurm CPUs per task (default 1)")
    g.add_argument("--mem-per-cpu-gb", type=int, default=2, help="Slurm memory per CPU in GB (default 2)")
    g.add_argument("--qos", help="Slurm QOS")
    g.add_argument("--venv", help="activate script sourced by Slurm jobs (default: this venv's bin/activate)")
    g.add_argument("--overwrite", action="store_true", help="redo everything even if the output is up to date")
    g.add_argument("--dry-run", action="store_true",
                   help="print the plan (tasks, tokenizer, sbatch script); run nothing")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.corpus:
            _corpus_defaults(args)
        if not args.input or not args.name:
            raise InputError("--input and --name are required (or --corpus NAME from the registry)")
        slurm = {"partition": args.partition, "time": args.time, "cpus_per_task": args.cpus_per_task,
                 "mem_per_cpu_gb": args.mem_per_cpu_gb, "qos": args.qos, "venv": args.venv}
        run(args.input, args.output_dir, args.name, args.tokenizer, workers=args.workers, executor=args.executor,
            slurm=slurm, tokenizer_threads=args.tokenizer_threads, overwrite=args.overwrite, dry_run=args.dry_run,
            input_format=args.input_format, glob=args.glob, text_key=args.text_key, qa_style=args.qa_style,
            question_key=args.question_key, answer_key=args.answer_key, messages_key=args.messages_key,
            hf_split=args.hf_split or "train", hf_subset=args.hf_subset, hf_data_dir=args.hf_data_dir,
            valid_docs=args.valid_docs, valid_seed=args.valid_seed, tasks=args.tasks, on_bad_record=args.on_bad_record,
            max_chars=args.max_chars, bos_token=args.bos_token, eos_token=args.eos_token, dtype=args.dtype,
            merge=args.merge, keep_shards=args.keep_shards, role=args.role)
    except ERRORS as e:
        print(f"tokenize: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
