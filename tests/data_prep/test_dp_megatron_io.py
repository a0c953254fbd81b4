"""data_prep.megatron_io: an index whose pointers or document index do not tile its .bin is refused by name,
when data_prep reads it and when a training run opens its blend."""
from __future__ import annotations

import numpy as np
import pytest

from data_prep.megatron_io import PrefixError, PrefixWriter, read_index, read_tokens


def write_prefix(path, docs, dtype="uint16"):
    w = PrefixWriter(path, dtype)
    w.append(np.concatenate([np.asarray(d, dtype) for d in docs]), np.array([len(d) for d in docs]))
    w.close()
    return str(path)


def corrupt_pointer(prefix, seq, shift):
    idx = prefix + ".idx"
    raw = bytearray(open(idx, "rb").read())
    n_seq = int.from_bytes(raw[18:26], "little")
    at = 34 + 4 * n_seq + 8 * seq
    value = int.from_bytes(raw[at:at + 8], "little", signed=True) + shift
    raw[at:at + 8] = value.to_bytes(8, "little", signed=True)
    open(idx, "wb").write(bytes(raw))


def test_a_whole_prefix_reads_back(tmp_path):
    docs = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    index = read_index(write_prefix(tmp_path / "c", docs))
    assert [list(t) for t in read_tokens(index, 0, 4)] == docs


def test_shifted_pointers_are_refused_naming_file_and_sequence(tmp_path):
    prefix = write_prefix(tmp_path / "c", [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]])
    corrupt_pointer(prefix, 2, 2)  # sequence 2 now starts one uint16 token later: it would read [7]
    with pytest.raises(PrefixError, match=r"c\.idx: sequence 2 starts at byte 12 of the .bin, but the lengths before "
                                          r"it put it at byte 10 \(1 pointer\(s\) wrong\)"):
        read_index(prefix)


def test_training_refuses_a_corrupt_corpus_before_megatron_reads_it(tmp_path):
    from octomega.config import ConfigError
    from octomega.train.data import check_prefix

    prefix = write_prefix(tmp_path / "c", [[1, 2, 3], [4, 5]])
    check_prefix(prefix)
    corrupt_pointer(prefix, 1, -2)
    with pytest.raises(ConfigError, match=r"^data: .*c\.idx: sequence 1 starts at byte 4"):
        check_prefix(prefix)
