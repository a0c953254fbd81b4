"""datatrove readers that keep every record and say where it came from.

datatrove's own JsonlReader logs and drops a line that is not JSON, stops reading a file at the first invalid
UTF-8 byte, and drops records without text silently; its readers shard by whole files (rank::world_size).
These subclasses keep datatrove's DataFolder I/O (compression included) and step stats, but
  - read the contiguous units a Plan gives each task (data_prep.sources), so order is preserved and one big
    file is shared by several tasks;
  - yield one Document per record: metadata["record"] (the parsed dict) and metadata["where"]
    ("path:line" / "path row N" / "dataset[N]"), or metadata["bad"] = (reason, detail) for an unparsable
    line or an unreadable parquet row group ("path row group G"). RecordFormatter and RecordValidator
    (data_prep.records) decide what happens next.
"""

from __future__ import annotations

import os

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader

from data_prep.sources import InputError, Unit

_COUNT_CHUNK = 16 << 20


def _doc(where: str, record=None, bad=None) -> Document:
    meta = {"where": where}
    if bad is None:
        meta["record"] = record
    else:
        meta["bad"] = bad
    return Document(text="", id=where, metadata=meta)


class _UnitReaderMixin:
    """run(): read this rank's units in order instead of datatrove's rank::world_size file shard."""

    def _units_init(self, units: tuple[tuple[Unit, ...], ...]):
        self.units = units

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        if world_size != len(self.units):
            raise ValueError(f"the plan has {len(self.units)} tasks but the executor runs {world_size}")
        for unit in self.units[rank]:
            n = 0
            for doc in self.read_unit(unit):
                n += 1
                yield doc
            self.stat_update("records", value=n, unit="input_unit")  # per unit, not per record: cheaper


class UnitJsonlReader(_UnitReaderMixin, JsonlReader):
    """JSON Lines, one record per line; a unit is a byte range of a file (the lines that start in it)."""

    name = "🐿 Jsonl (units)"

    def __init__(self, data_folder, units, compression="infer", **kwargs):
        super().__init__(data_folder, compression=compression, **kwargs)
        self._units_init(units)

    def read_unit(self, unit: Unit) -> DocumentsPipeline:
        import orjson

        full = self.data_folder.resolve_paths(unit.path)
        compression = self.compression if unit.path.endswith((".gz", ".zst", ".bz2", ".xz")) else None
        try:
            with self.data_folder.open(unit.path, "rb", compression=compression) as f:
                lineno, pos = 0, 0
                if unit.start > 0:  # count the lines before our range (fast: ~GB/s), finish the straddling line
                    while pos < unit.start - 1:
                        chunk = f.read(min(_COUNT_CHUNK, unit.start - 1 - pos))
                        if not chunk:
                            return
                        lineno += chunk.count(b"\n")
                        pos += len(chunk)
                    rest = f.readline()
                    pos += len(rest)
                    lineno += rest.endswith(b"\n")
                while unit.end is None or pos < unit.end:
                    line = f.readline()
                    if not line:
                        break
                    pos += len(line)
                    lineno += 1
                    if not line.strip():
                        continue  # blank lines are not records
                    where = f"{full}:{lineno}"
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        try:
                            line.decode("utf-8")
                        except UnicodeDecodeError as u:
                            yield _doc(where, bad=("invalid_utf8", f"invalid UTF-8 at byte {u.start} of the line"))
                            continue
                        yield _doc(where, bad=("invalid_json", f"invalid JSON ({e})"))
                        continue
                    if not isinstance(rec, dict):
                        yield _doc(where, bad=("not_an_object", f"a JSON {type(rec).__name__}, not an object"))
                        continue
                    yield _doc(where, rec)
        except (OSError, EOFError) as e:
            raise InputError(f"{full}: cannot read this file ({e}); is it complete and in the format its "
                             "extension says?") from e


class UnitParquetReader(_UnitReaderMixin, ParquetReader):
    """Parquet; a unit is a run of row groups of one file. Reads only `columns` (None = all)."""

    name = "📒 Parquet (units)"

    def __init__(self, data_folder, units, columns: list[str] | None = None, batch_size: int = 1000, **kwargs):
        super().__init__(data_folder, batch_size=batch_size, **kwargs)
        self._units_init(units)
        self.columns = columns

    def read_unit(self, unit: Unit) -> DocumentsPipeline:
        """One row group at a time. A row group that cannot be read (a corrupt page: bad compressed data, a page
        checksum that does not match, an invalid encoding) is one bad record "corrupt_row_group" naming the file,
        the row group and the rows lost (the records read before the damage in it are kept), and reading goes on
        with the next row group; --on-bad-record decides whether that skips (counted, listed) or fails the run.
        Page checksums, where the file has them, are verified: without them a damaged uncompressed page can read
        as wrong text, which nothing can detect."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        full = self.data_folder.resolve_paths(unit.path)
        with self.data_folder.open(unit.path, "rb") as f, pq.ParquetFile(f, page_checksum_verification=True) as pqf:
            first = sum(pqf.metadata.row_group(i).num_rows for i in range(unit.start))
            names = set(pqf.schema_arrow.names)
            cols = [c for c in self.columns if c in names] if self.columns is not None else None
            cols = cols or None  # none of them there: read all, so each record reports what it lacks
            for g in range(unit.start, unit.end if unit.end is not None else pqf.num_row_groups):
                n_rows, row = pqf.metadata.row_group(g).num_rows, first
                batches = pqf.iter_batches(batch_size=self.batch_size, row_groups=[g], columns=cols)
                while True:
                    try:
                        batch = next(batches, None)
                        records = batch.to_pylist() if batch is not None else None
                    except (OSError, pa.ArrowException) as e:
                        why = " ".join(str(e).split())  # pyarrow's messages may span lines
                        yield _doc(f"{full} row group {g}", bad=(
                            "corrupt_row_group", f"rows {row + 1}-{first + n_rows} of the file cannot be read ({why}): "
                            "the file is damaged; re-download or re-export it"))
                        break
                    if records is None:
                        break
                    for rec in records:
                        row += 1
                        yield _doc(f"{full} row {row}", rec)
                first += n_rows


def load_hf_dataset(path_or_id: str, split: str | None = "train", subset: str | None = None,
                    data_dir: str | None = None):
    """A saved dataset directory (save_to_disk), a local data directory, or a hub id -> one split."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    is_saved = os.path.isdir(path_or_id) and any(
        os.path.isfile(os.path.join(path_or_id, f)) for f in ("state.json", "dataset_dict.json"))
    try:
        ds = load_from_disk(path_or_id) if is_saved else load_dataset(
            path_or_id, subset, split=split, data_dir=data_dir)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise InputError(f"{path_or_id}: cannot load this Hugging Face dataset ({e})") from e
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise InputError(f"{path_or_id}: no split {split!r}; it has {', '.join(ds)} (use --hf-split)")
        ds = ds[split]
    return ds


class UnitHFReader(_UnitReaderMixin, HuggingFaceDatasetReader):
    """A Hugging Face dataset; a unit is a row range [start, end) (contiguous, unlike datatrove's shard())."""

    name = "🤗 HuggingFace (units)"

    def __init__(self, dataset: str, units, split: str | None = "train", subset: str | None = None,
                 data_dir: str | None = None, columns: list[str] | None = None, batch_size: int = 1000):
        super().__init__(dataset, batch_size=batch_size)
        self._units_init(units)
        self.split, self.subset, self.data_dir, self.columns = split, subset, data_dir, columns

    def read_unit(self, unit: Unit) -> DocumentsPipeline:
        ds = load_hf_dataset(self.dataset, self.split, self.subset, self.data_dir)
        present = [c for c in (self.columns or []) if c in ds.column_names]
        if present:  # none of them there: keep all, so each record reports what it lacks
            ds = ds.select_columns(present)
        row = unit.start
        for batch in ds.select(range(unit.start, unit.end)).iter(batch_size=self.batch_size):
            keys = list(batch)
            for values in zip(*batch.values()):
                yield _doc(f"{self.dataset}[{row}]", dict(zip(keys, values)))
                row += 1
