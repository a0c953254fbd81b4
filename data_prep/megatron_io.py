"""Megatron indexed datasets (.bin/.idx) without torch: read, merge shards, hold out validation documents.

The .idx layout (megatron/core/datasets/indexed_dataset.py, version 1), which datatrove's
MegatronDocumentTokenizer writes too:
    b"MMIDIDX\\x00\\x00", <Q version=1, <B dtype code, <Q sequence count S, <Q document count D (= docs + 1),
    int32 sequence_lengths[S], int64 sequence_pointers[S] (byte offsets in .bin), int64 document_indices[D].
data_prep writes one sequence per document (document_indices = 0..S), as datatrove does.
megatron-core's IndexedDataset reads what this module writes (tests check it).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
COPY_CHUNK = 64 << 20  # bytes per write when copying token runs


class PrefixError(ValueError):
    """A missing, truncated or inconsistent .bin/.idx pair."""


@dataclass
class Index:
    prefix: str
    dtype: np.dtype
    lengths: np.ndarray  # int32, tokens per sequence
    pointers: np.ndarray  # int64, byte offset of each sequence in .bin
    doc_idx: np.ndarray  # int64, sequence index where each document starts (+ the end)

    @property
    def n_docs(self) -> int:
        return len(self.doc_idx) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))


def read_index(prefix: str | os.PathLike) -> Index:
    """Parse PREFIX.idx and check PREFIX.bin has exactly the bytes it describes."""
    prefix = str(prefix)
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    for p in (idx_path, bin_path):
        if not os.path.isfile(p):
            raise PrefixError(f"{p}: missing (a Megatron prefix needs both {prefix}.bin and {prefix}.idx)")
    with open(idx_path, "rb") as f:
        head = f.read(34)
    if len(head) < 34 or head[:9] != HEADER:
        raise PrefixError(f"{idx_path}: not a Megatron index file (bad header)")
    (version,) = struct.unpack("<Q", head[9:17])
    code = head[17]
    n_seq, n_doc = struct.unpack("<QQ", head[18:34])
    if version != 1 or code not in CODE_DTYPES:
        raise PrefixError(f"{idx_path}: unsupported index version {version} or dtype code {code}")
    expect = 34 + 4 * n_seq + 8 * n_seq + 8 * n_doc
    if os.path.getsize(idx_path) != expect:
        raise PrefixError(f"{idx_path}: {os.path.getsize(idx_path)} bytes, expected {expect} (truncated?)")
    raw = np.memmap(idx_path, dtype=np.uint8, mode="r")
    lengths = np.frombuffer(raw, np.int32, n_seq, 34)
    pointers = np.frombuffer(raw, np.int64, n_seq, 34 + 4 * n_seq)
    doc_idx = np.frombuffer(raw, np.int64, n_doc, 34 + 12 * n_seq) if n_doc else np.zeros(1, np.int64)
    dtype = np.dtype(CODE_DTYPES[code])
    index = Index(prefix, dtype, lengths, pointers, doc_idx)
    if os.path.getsize(bin_path) != index.n_tokens * dtype.itemsize:
        raise PrefixError(f"{bin_path}: {os.path.getsize(bin_path)} bytes, but {idx_path} describes "
                          f"{index.n_tokens} {dtype.name} tokens ({index.n_tokens * dtype.itemsize} bytes)")
    check_pointers(index)
    return index


def check_pointers(index: Index) -> None:
    """The sequences of an index must tile its .bin in order: pointer i = the bytes of sequences 0..i-1, and the
    document index runs from 0 to the sequence count without going back. One cumulative sum; a shifted or
    corrupted pointer would otherwise make Megatron read other documents' tokens without any error."""
    idx_path = index.prefix + ".idx"
    if (index.lengths < 0).any():
        raise PrefixError(f"{idx_path}: negative sequence length at sequence {int(np.argmax(index.lengths < 0))}")
    expected = np.zeros(len(index.lengths), np.int64)
    np.cumsum(index.lengths[:-1], dtype=np.int64, out=expected[1:])
    expected *= index.dtype.itemsize
    bad = np.flatnonzero(index.pointers != expected)
    if len(bad):
        i = int(bad[0])
        raise PrefixError(f"{idx_path}: sequence {i} starts at byte {int(index.pointers[i])} of the .bin, but the "
                          f"lengths before it put it at byte {int(expected[i])} ({len(bad)} pointer(s) wrong): the "
                          "index is corrupt; re-run data_prep.tokenize for this corpus")
    d = index.doc_idx
    if len(d) and (d[0] != 0 or d[-1] != len(index.lengths) or (np.diff(d) < 0).any()):
        raise PrefixError(f"{idx_path}: the document index must run from 0 to {len(index.lengths)} in order: the "
                          "index is corrupt; re-run data_prep.tokenize for this corpus")


def read_tokens(index: Index, first: int, count: int = 1) -> list[np.ndarray]:
    """Tokens of documents first .. first+count-1 (one sequence per document)."""
    if index.n_tokens == 0:
        return []
    data = np.memmap(index.prefix + ".bin", dtype=index.dtype, mode="r")
    out = []
    for i in range(first, min(first + count, index.n_docs)):
        start = int(index.pointers[i]) // index.dtype.itemsize
        out.append(np.array(data[start:start + int(index.lengths[i])]))
    return out


class PrefixWriter:
    """Writes PREFIX.bin/.idx through temporary names, renamed into place by close(): no half-written prefix."""

    def __init__(self, prefix: str | os.PathLike, dtype: str):
        self.prefix, self.dtype = str(prefix), np.dtype(dtype)
        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._bin = open(self.prefix + ".bin.tmp", "wb")
        self._lengths: list[np.ndarray] = []

    def append(self, data, lengths: np.ndarray) -> None:
        """Append raw token bytes holding whole documents of the given lengths."""
        view = memoryview(data).cast("B")
        for lo in range(0, len(view), COPY_CHUNK):
            self._bin.write(view[lo:lo + COPY_CHUNK])
        self._lengths.append(np.asarray(lengths, dtype=np.int32))

    @property
    def n_docs(self) -> int:
        return sum(len(x) for x in self._lengths)

    def close(self) -> np.ndarray:
        """Finish both files; returns the document lengths."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), np.int64)
        if len(lengths) > 1:
            pointers[1:] = np.cumsum(lengths[:-1], dtype=np.int64) * self.dtype.itemsize
        with open(self.prefix + ".idx.tmp", "wb") as f:
            f.write(HEADER + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[self.dtype.name]))
            f.write(struct.pack("<QQ", len(lengths), len(lengths) + 1))
            f.write(lengths.tobytes() + pointers.tobytes() + np.arange(len(lengths) + 1, dtype=np.int64).tobytes())
        os.replace(self.prefix + ".bin.tmp", self.prefix + ".bin")
        os.replace(self.prefix + ".idx.tmp", self.prefix + ".idx")
        return lengths


def copy_docs(index: Index, data: np.ndarray, lo: int, hi: int, writer: PrefixWriter) -> None:
    """Copy documents [lo, hi) of `index` (one sequence each) to `writer`."""
    if hi <= lo:
        return
    start = int(index.pointers[lo])
    end = int(index.pointers[hi - 1]) + int(index.lengths[hi - 1]) * index.dtype.itemsize
    writer.append(data[start:end], index.lengths[lo:hi])


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64: a fixed, platform-independent scramble of document numbers (numpy wraps uint64 overflow)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def select_heldout(counts: list[int], n: int, seed: int = 0) -> list[np.ndarray]:
    """Choose n documents out of shards with `counts` documents: the n smallest splitmix64(global number + seed).
    Deterministic, spread over the whole corpus, independent of how it was cut into shards. Returns, per shard,
    the sorted local indices chosen."""
    total = sum(counts)
    if n > total:
        raise PrefixError(f"--valid-docs {n} but the corpus has only {total} valid documents; ask for fewer")
    picks, off = [], 0
    for c in counts:
        scores = _mix64(np.arange(off, off + c, dtype=np.uint64) + np.uint64(seed * 1_000_003))
        k = min(n, c)
        local = np.argpartition(scores, k - 1)[:k] if 0 < k < c else np.arange(k)
        picks.append((scores[local], local))
        off += c
    all_scores = np.concatenate([s for s, _ in picks]) if picks else np.zeros(0, np.uint64)
    cut = np.sort(all_scores)[n - 1] if n > 0 else None
    return [np.sort(local[scores <= cut]) if cut is not None else np.zeros(0, np.int64) for scores, local in picks]


def split_shards(shards: list[str], train_prefixes: list[str], valid_prefix: str | None, n_valid: int, dtype: str,
                 seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Copy shard documents in order into the train prefix(es), holding out n_valid documents for valid_prefix.

    train_prefixes: one prefix (everything merged) or one per shard (listed). Returns (train lengths per
    train prefix, valid lengths)."""
    indexes = [read_index(s) for s in shards]
    for ix in indexes:
        if ix.dtype != np.dtype(dtype):
            raise PrefixError(f"{ix.prefix}.idx holds {ix.dtype.name} tokens, expected {dtype}")
        if not np.array_equal(ix.doc_idx, np.arange(ix.n_docs + 1)):
            raise PrefixError(f"{ix.prefix}.idx: documents with several sequences are not supported")
    held = select_heldout([ix.n_docs for ix in indexes], n_valid, seed)
    valid = PrefixWriter(valid_prefix, dtype) if valid_prefix and n_valid > 0 else None
    merged = len(train_prefixes) == 1
    writers = [PrefixWriter(p, dtype) for p in train_prefixes]
    train_lengths = []
    for s, ix in enumerate(indexes):
        w = writers[0] if merged else writers[s]
        data = np.memmap(ix.prefix + ".bin", dtype=np.uint8, mode="r") if ix.n_tokens else None
        prev = 0
        for j in held[s].tolist():
            copy_docs(ix, data, prev, j, w)
            copy_docs(ix, data, j, j + 1, valid)
            prev = j + 1
        copy_docs(ix, data, prev, ix.n_docs, w)
        del data
        if not merged:
            train_lengths.append(w.close())
    if merged:
        train_lengths.append(writers[0].close())
    return train_lengths, (valid.close() if valid else np.zeros(0, np.int32))


PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def length_summary(lengths: np.ndarray) -> dict:
    """min / p1 ... p99 / max / mean of document lengths in tokens."""
    if len(lengths) == 0:
        return {}
    out = {"min": int(lengths.min())}
    out.update({f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(lengths, PERCENTILES))})
    out.update({"max": int(lengths.max()), "mean": float(lengths.mean())})
    return out
