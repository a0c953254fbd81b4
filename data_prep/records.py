"""Pipeline steps between the readers and the tokenizer: build each document's text, and deal with bad records.

Readers (data_prep.readers) yield one Document per input record with the parsed record in
metadata["record"] and its location in metadata["where"] ("file.jsonl:17"), or metadata["bad"] =
(reason, detail) when the record could not be parsed. RecordFormatter turns a record into text (a text
field, the QA template, or chat messages). RecordValidator drops bad documents, logs each one (location,
reason, detail) to a per-task file, counts them per reason, and with on_bad="fail" stops at the first one.
Per-task files are rewritten whenever a task (re)starts, so a re-run after a crash counts nothing twice.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from data_prep.templates import QA_TEMPLATE

REASONS = {
    "invalid_json": "not valid JSON",
    "invalid_utf8": "not valid UTF-8",
    "not_an_object": "a JSON value that is not an object",
    "missing_field": "a required field is missing",
    "non_string_field": "a field is not a string",
    "bad_messages": "chat messages in an unexpected shape",
    "empty_text": "empty or whitespace-only text",
    "too_long": "text longer than --max-chars",
    "corrupt_row_group": "a parquet row group that cannot be read",
}
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_MISSING = object()


class BadRecord(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class BadRecordError(RuntimeError):
    """Raised with --on-bad-record fail; the message names file, line, field and what to do."""


def _field(rec: dict, key: str) -> str:
    value = rec.get(key, _MISSING)
    if value is _MISSING:
        keys = ", ".join(list(rec)[:12]) or "none"
        raise BadRecord("missing_field", f"field {key!r} is missing (the record has: {keys})")
    if value is None:
        raise BadRecord("missing_field", f"field {key!r} is null")
    if not isinstance(value, str):
        raise BadRecord("non_string_field", f"field {key!r} is {type(value).__name__}, not a string")
    return value


def format_qa(question: str, answer: str, style: str) -> str:
    """The QA document text (data_prep.QA_TEMPLATE). short drops a leading <think>...</think> block; long keeps
    the answer as given, thinking inline."""
    if style == "short":
        answer = _THINK.sub("", answer, count=1)
    return QA_TEMPLATE.format(question=question.strip(), answer=answer.strip())


def format_messages(messages, style: str, key: str) -> str:
    """Chat messages -> text: user turns become "Question: ...", assistant turns "Answer: ...", system turns
    stay plain text; turns joined by newlines. One user + one assistant turn gives exactly the QA template."""
    if not isinstance(messages, list) or not messages:
        raise BadRecord("bad_messages", f"field {key!r} must be a non-empty list of {{role, content}} objects")
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                "system", "user", "assistant"):
            raise BadRecord("bad_messages", f"{key}[{i}] needs a role (system/user/assistant) and a string content")
        content = m["content"].strip()
        if m["role"] == "assistant" and style == "short":
            content = _THINK.sub("", content, count=1)
        parts.append({"system": "{}", "user": "Question: {}", "assistant": "Answer: {}"}[m["role"]].format(content))
    return "\n".join(parts)


class RecordFormatter(PipelineStep):
    """Builds document text: mode "text" (one field), "qa" (question + answer fields) or "messages"."""

    name = "📝 Record formatter"
    type = "✂️ - FORMAT"

    def __init__(self, mode: str = "text", text_key: str = "text", question_key: str = "question",
                 answer_key: str = "answer", messages_key: str = "messages", qa_style: str = "short"):
        super().__init__()
        if mode not in ("text", "qa", "messages") or qa_style not in ("short", "long"):
            raise ValueError(f"mode {mode!r} / qa_style {qa_style!r}: mode text|qa|messages, style short|long")
        self.mode, self.text_key, self.question_key, self.answer_key = mode, text_key, question_key, answer_key
        self.messages_key, self.qa_style = messages_key, qa_style

    def columns(self) -> list[str]:
        """The record fields this formatter reads (parquet/hf readers load only these)."""
        return {"text": [self.text_key], "qa": [self.question_key, self.answer_key],
                "messages": [self.messages_key]}[self.mode]

    def format(self, rec: dict) -> str:
        if self.mode == "text":
            return _field(rec, self.text_key)
        if self.mode == "qa":
            return format_qa(_field(rec, self.question_key), _field(rec, self.answer_key), self.qa_style)
        if self.messages_key not in rec:
            _field(rec, self.messages_key)  # raises missing_field with the record's keys
        return format_messages(rec[self.messages_key], self.qa_style, self.messages_key)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            meta = doc.metadata
            if "bad" not in meta:
                try:
                    doc.text = self.format(meta["record"])
                except BadRecord as e:
                    meta["bad"] = (e.reason, e.detail)
            yield doc


class RecordValidator(PipelineStep):
    """Drops and reports bad documents (see module docstring); passes the good ones on unchanged.

    Writes report_folder/records/RANK.json ({"records", "kept", "skipped": {reason: n}}) and
    report_folder/records/RANK.bad.jsonl (one {"where", "reason", "detail"} per skipped record).
    """

    name = "🛂 Record validator"
    type = "🔻 - FILTER"

    def __init__(self, report_folder: DataFolderLike, on_bad: str = "skip", max_chars: int = 0,
                 keep_record: bool = False, progress_every_s: float = 30.0):
        super().__init__()
        if on_bad not in ("skip", "fail"):
            raise ValueError(f"on_bad={on_bad!r}: choose skip or fail")
        self.report_folder = get_datafolder(report_folder)
        self.on_bad, self.max_chars, self.progress_every_s = on_bad, max_chars, progress_every_s
        self.keep_record = keep_record  # keep metadata["record"] for a writer downstream

    def check(self, doc) -> tuple[str, str] | None:
        bad = doc.metadata.get("bad")
        if bad is not None:
            return bad
        if not doc.text.strip():
            return "empty_text", "the document text is empty or only whitespace"
        if self.max_chars and len(doc.text) > self.max_chars:
            return "too_long", (f"the document has {len(doc.text):,} characters, over --max-chars "
                                f"{self.max_chars:,}; raise --max-chars (0 = no limit) to keep it")
        return None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen = kept = 0
        skipped: Counter = Counter()
        last = time.monotonic()
        with self.report_folder.open(f"records/{rank:05d}.bad.jsonl", "w") as bad_log:
            for doc in data:
                seen += 1
                bad = self.check(doc)
                if bad is not None:
                    reason, detail = bad
                    where = doc.metadata.get("where", doc.id)
                    if self.on_bad == "fail":
                        raise BadRecordError(f"{where}: {detail} ({REASONS.get(reason, reason)}). Fix or remove "
                                             "this record, or pass --on-bad-record skip to skip and count such "
                                             "records.")
                    skipped[reason] += 1
                    self.stat_update(f"skipped_{reason}")
                    bad_log.write(json.dumps({"where": where, "reason": reason, "detail": detail}) + "\n")
                    if sum(skipped.values()) <= 5:
                        logger.warning(f"skipping {where}: {detail}")
                    continue
                kept += 1
                if not self.keep_record:
                    doc.metadata = {"where": doc.metadata.get("where")}
                yield doc
                if time.monotonic() - last > self.progress_every_s:
                    last = time.monotonic()
                    logger.info(f"task {rank}: {seen:,} records read, {kept:,} kept, "
                                f"{sum(skipped.values()):,} skipped (at {doc.metadata['where']})")
        with self.report_folder.open(f"records/{rank:05d}.json", "w") as f:
            json.dump({"records": seen, "kept": kept, "skipped": dict(skipped)}, f)
