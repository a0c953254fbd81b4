"""The tokenize pipeline as datatrove runs it, and the merge that turns task shards into the final prefix.

    reader (data_prep.readers) -> RecordFormatter -> RecordValidator -> LlamaMegatronTokenizer
      => WORK/shards/RANK_tokens.bin/.idx per task  (datatrove marks each finished task in WORK/datatrove/completions)
    finalize(): shards in rank order -> OUT/NAME (+ OUT/NAME_valid), OUT/NAME.stats.json

finalize runs in the calling process for local runs and as a one-task Slurm job that depends on the array job
for Slurm runs (MergeStep). Everything a worker needs travels in a picklable TokenizeJob.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer, MegatronTokenizedFile
from datatrove.utils.batching import batched

from data_prep.megatron_io import PrefixError, length_summary, read_index, read_tokens, split_shards
from data_prep.readers import UnitHFReader, UnitJsonlReader, UnitParquetReader
from data_prep.records import RecordFormatter, RecordValidator
from data_prep.sources import Plan
from data_prep.tokenizer_utils import TokenizerInfo, load_tokenizer

STATS_FORMAT = "octomega-corpus-stats/1"


class LlamaMegatronTokenizer(MegatronDocumentTokenizer):
    """datatrove's MegatronDocumentTokenizer with BOS and EOS around every document.

    datatrove's eos_token replaces the tokenizer's post-processor with "$A <EOS>", which drops the BOS that
    Llama 3's post-processor adds. This step installs "<BOS> $A <EOS>" itself (either side optional), turns
    off any truncation/padding saved in tokenizer.json, and uses the dtype data_prep chose. Special-token text
    inside a document ("<|end_of_text|>" quoted by a web page) is encoded as plain text, as Meta's Llama-3
    tokenizer encodes documents (tiktoken's disallowed_special=()): only the template's BOS/EOS are special."""

    name = "✍️ Megatron writer (BOS/EOS)"

    def __init__(self, output_folder, tokenizer: TokenizerInfo, batch_size: int = 1000):
        super().__init__(output_folder, tokenizer_name_or_path=tokenizer.json_path, eos_token=None,
                         batch_size=batch_size)
        self.info = tokenizer

    @cached_property
    def tokenizer(self):
        from tokenizers.processors import TemplateProcessing

        tok = load_tokenizer(self.info.json_path)
        tok.no_truncation()
        tok.no_padding()
        tok.encode_special_tokens = True  # special-token literals in the text are text, not document boundaries
        single = " ".join(x for x in (self.info.bos, "$A", self.info.eos) if x)
        specials = [(t, i) for t, i in ((self.info.bos, self.info.bos_id), (self.info.eos, self.info.eos_id)) if t]
        tok.post_processor = TemplateProcessing(single=single, pair=None, special_tokens=specials)
        return tok

    @cached_property
    def token_size(self) -> int:
        return 2 if self.info.dtype == "uint16" else 4

    def write_tokens(self, data, filename: str) -> MegatronTokenizedFile:
        """datatrove's write_tokens with less work per document: encode_batch_fast (no character offsets, which
        a .bin does not keep; 5-20% faster), one .bin write and one stats update per batch instead of per document.
        The files are datatrove's MegatronTokenizedFile, so the .idx is written by datatrove's own code."""
        out = MegatronTokenizedFile(self.output_folder, filename, upload_block_size=self.upload_block_size,
                                    token_size=self.token_size)
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                ids = [e.ids for e in encode([doc.text for doc in batch])]
                lengths = [len(x) for x in ids]
                total = sum(lengths)
                out.bin_file.write(np.fromiter(chain.from_iterable(ids), out.token_dtype, total).tobytes())
                first = len(out.sequence_lengths)
                out.sequence_lengths.extend(lengths)
                out.document_indices.extend(range(first + 1, first + 1 + len(lengths)))
                self.stat_update("tokens", value=total, unit="batch")
        out.close()
        return out


@dataclass(kw_only=True)
class TokenizeJob:
    """Every resolved option of one `data_prep.tokenize` run (see tokenize.py for their meaning)."""

    name: str
    output_dir: str  # absolute
    work_dir: str  # absolute; shards, per-task reports, datatrove logs and completion markers
    plan: Plan
    tokenizer: TokenizerInfo
    mode: str = "text"  # text | qa | messages
    text_key: str = "text"
    question_key: str = "question"
    answer_key: str = "answer"
    messages_key: str = "messages"
    qa_style: str = "short"
    hf_split: str | None = "train"
    hf_subset: str | None = None
    hf_data_dir: str | None = None
    on_bad: str = "skip"
    max_chars: int = 0
    valid_docs: int = 0
    valid_seed: int = 0
    merge: bool = True
    keep_shards: bool = False
    role: str | None = None
    source: dict = field(default_factory=dict)
    config_hash: str = ""

    @property
    def prefix(self) -> str:
        return os.path.join(self.output_dir, self.name)

    @property
    def valid_prefix(self) -> str:
        return self.prefix + "_valid"

    @property
    def stats_path(self) -> str:
        return self.prefix + ".stats.json"

    @property
    def n_tasks(self) -> int:
        return len(self.plan.tasks)


def build_pipeline(job: TokenizeJob) -> list[PipelineStep]:
    fmt = RecordFormatter(job.mode, job.text_key, job.question_key, job.answer_key, job.messages_key, job.qa_style)
    if job.plan.fmt == "jsonl":
        reader = UnitJsonlReader(job.plan.root, job.plan.tasks)
    elif job.plan.fmt == "parquet":
        reader = UnitParquetReader(job.plan.root, job.plan.tasks, columns=fmt.columns())
    else:
        reader = UnitHFReader(job.plan.root, job.plan.tasks, split=job.hf_split, subset=job.hf_subset,
                              data_dir=job.hf_data_dir, columns=fmt.columns())
    return [reader, fmt, RecordValidator(job.work_dir, on_bad=job.on_bad, max_chars=job.max_chars),
            LlamaMegatronTokenizer(os.path.join(job.work_dir, "shards"), job.tokenizer)]


def _task_reports(job: TokenizeJob) -> list[dict]:
    reports = []
    for r in range(job.n_tasks):
        path = os.path.join(job.work_dir, "records", f"{r:05d}.json")
        if not os.path.isfile(path) or not os.path.isfile(os.path.join(job.work_dir, "shards", f"{r:05d}_tokens.idx")):
            raise PrefixError(f"task {r} of {job.n_tasks} has not finished ({path} missing): run the same command "
                              "again to finish the remaining tasks (finished ones are skipped)")
        reports.append(json.loads(Path(path).read_text()))
    return reports


def _check_bos_eos(job: TokenizeJob, prefix: str) -> None:
    """Look at what actually landed in the .bin: first and last token of a few documents."""
    ix = read_index(prefix)
    picks = sorted({0, ix.n_docs // 2, ix.n_docs - 1}) if ix.n_docs else []
    for i in picks:
        toks = read_tokens(ix, i)[0]
        bad = (job.tokenizer.bos_id is not None and toks[0] != job.tokenizer.bos_id) or (
            job.tokenizer.eos_id is not None and toks[-1] != job.tokenizer.eos_id)
        if bad:
            raise PrefixError(f"{prefix}.bin document {i} starts with id {toks[0]} and ends with {toks[-1]}, expected "
                              f"BOS {job.tokenizer.bos_id} / EOS {job.tokenizer.eos_id}: the tokenizer's "
                              "post-processing did not apply; please report this with the tokenizer used")


def finalize(job: TokenizeJob, log=print) -> dict:
    """Merge (or list) the task shards, hold out validation documents, write the stats JSON. Idempotent."""
    t0 = time.time()
    reports = _task_reports(job)
    shards = [os.path.join(job.work_dir, "shards", f"{r:05d}_tokens") for r in range(job.n_tasks)]
    shard_docs = [read_index(s).n_docs for s in shards]
    kept = sum(r["kept"] for r in reports)
    skipped: dict[str, int] = {}
    for r in reports:
        for k, v in r["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    bad_path = job.prefix + ".bad_records.jsonl"
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    with open(bad_path, "w") as out:
        for r in range(job.n_tasks):
            with open(os.path.join(job.work_dir, "records", f"{r:05d}.bad.jsonl")) as f:
                shutil.copyfileobj(f, out)
    if not skipped:
        os.remove(bad_path)
    if kept != sum(shard_docs):
        raise PrefixError(f"{job.work_dir}: the validators passed {kept} documents but the shards hold "
                          f"{sum(shard_docs)}; delete {job.work_dir} and run again")
    if kept == 0:
        top = max(skipped, key=skipped.get) if skipped else "no records"
        raise PrefixError(f"no valid documents in {job.source.get('inputs')}: {sum(r['records'] for r in reports)} "
                          f"records read, skipped {skipped or '-'} (most: {top}); see {job.prefix}.bad_records.jsonl "
                          "and check --text-key / --question-key / --answer-key / --messages-key")
    if job.valid_docs >= kept:
        raise PrefixError(f"--valid-docs {job.valid_docs} leaves no training documents ({kept} valid in all); "
                          "ask for fewer")
    nonempty = [s for s, n in zip(shards, shard_docs) if n]
    stale = glob.glob(job.prefix + "_part[0-9][0-9][0-9][0-9][0-9].*") + (
        [] if job.merge else [job.prefix + ".bin", job.prefix + ".idx"])
    for path in stale:  # outputs of an earlier run in the other mode or with more tasks
        if os.path.exists(path):
            os.remove(path)
    targets = [job.prefix] if job.merge else [f"{job.prefix}_part{i:05d}" for i in range(len(nonempty))]
    log(f"tokenize: writing {job.prefix}{'' if job.merge else '_partNNNNN'} from {len(nonempty)} task shards"
        + (f", holding out {job.valid_docs} documents in {job.valid_prefix}" if job.valid_docs else ""))
    train_lengths, valid_lengths = split_shards(nonempty, targets, job.valid_prefix, job.valid_docs,
                                                job.tokenizer.dtype, job.valid_seed)
    if not job.valid_docs:
        for ext in (".bin", ".idx"):
            if os.path.exists(job.valid_prefix + ext):
                os.remove(job.valid_prefix + ext)
    parts = [{"prefix": t, "documents": int(len(n)), "tokens": int(n.sum(dtype=np.int64))}
             for t, n in zip(targets, train_lengths)]
    for p in parts if not job.merge else []:
        if p["documents"] == 0:  # every document of that shard was held out: no empty prefix in a blend
            for ext in (".bin", ".idx"):
                os.remove(p["prefix"] + ext)
    parts = [p for p in parts if p["documents"] or job.merge]
    _check_bos_eos(job, parts[0]["prefix"])
    lengths = np.concatenate(train_lengths)
    stats = {
        "format": STATS_FORMAT, "name": job.name, "role": job.role.split(",")[0] if job.role else None,
        "roles": job.role.split(",") if job.role else [],
        "prefix": job.prefix if job.merge else None, "prefixes": parts,
        "valid_prefix": job.valid_prefix if job.valid_docs else None,
        "documents": int(len(lengths)), "tokens": int(lengths.sum(dtype=np.int64)),
        "valid_documents": int(len(valid_lengths)), "valid_tokens": int(valid_lengths.sum(dtype=np.int64)),
        "records_read": sum(r["records"] for r in reports), "skipped": skipped,
        "skipped_total": sum(skipped.values()), "bad_records_file": bad_path if skipped else None,
        "length_percentiles": length_summary(lengths), "dtype": job.tokenizer.dtype,
        "vocab_size": job.tokenizer.vocab_size, "tokenizer": job.tokenizer.source,
        "tokenizer_fingerprint": job.tokenizer.fingerprint, "bos_token": job.tokenizer.bos,
        "eos_token": job.tokenizer.eos, "tokens_include": "BOS and EOS of every document",
        "source": job.source, "tasks": job.n_tasks, "config_hash": job.config_hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = job.stats_path + ".tmp"
    Path(tmp).write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, job.stats_path)
    if not job.keep_shards:  # the prefix now holds the data; a later re-run starts from the inputs again
        shutil.rmtree(os.path.join(job.work_dir, "shards"), ignore_errors=True)
        shutil.rmtree(os.path.join(job.work_dir, "datatrove", "completions"), ignore_errors=True)
    log(f"tokenize: {stats['documents']:,} documents, {stats['tokens']:,} tokens ({job.tokenizer.dtype}) in "
        f"{job.prefix}; {stats['valid_documents']:,} held out; {stats['skipped_total']:,} records skipped"
        f"{' ' + str(skipped) if skipped else ''}; merge {time.time() - t0:.1f}s; stats in {job.stats_path}")
    return stats


class MergeStep(PipelineStep):
    """finalize() as a datatrove step, so Slurm can run it as a job that depends on the tokenize array job."""

    name = "🧩 Merge shards"
    type = "🔢 - TOKENIZER"

    def __init__(self, job: TokenizeJob):
        super().__init__()
        self.job = job

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        finalize(self.job)
        return
        yield  # a generator, like every step


def job_dict(job: TokenizeJob) -> dict:
    """JSON-friendly view of a job (for --dry-run and the work dir's config.json)."""
    return asdict(job)
