"""Megatron's GPTDataset, with every sample's token ids checked against the vocabulary.

A token id at or beyond the vocabulary (a corpus tokenized with another tokenizer, a corrupt .bin) would reach the
embedding: an IndexError naming nothing on the CPU, a device-side assert that ends the process on a GPU, and, with
TP > 1, no error at all (Megatron's vocab-parallel embedding and loss mask ids outside each rank's slice, so the
model silently trains on zeros). The check is one max and one min over the sample's tokens, as the DataLoader reads
it (microseconds against a training step), so it costs nothing at any corpus size, and a bad id is a TokenIdError
naming the .bin file, the document and the position, before the batch leaves the data loader.
"""

from __future__ import annotations

import numpy as np
from megatron.core.datasets.gpt_dataset import GPTDataset


class TokenIdError(ValueError):
    """A corpus holds a token id outside the vocabulary; the message names the file and the document.

    Raised in a DataLoader worker, it reaches the training process re-made from "Caught TokenIdError in DataLoader
    worker process N.\\nOriginal Traceback ...", the worker's traceback as its message: that message is cut back
    to the one line this error was raised with."""

    def __init__(self, message: str):
        lines = message.rstrip().splitlines()
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and len(lines) > 1 and lines[-1].startswith(prefix):
            message = lines[-1][len(prefix):]
        super().__init__(message)


class VocabCheckedGPTDataset(GPTDataset):
    """GPTDataset whose samples hold only ids in [0, tokenizer.vocab_size) (TokenIdError otherwise)."""

    def _query_document_sample_shuffle_indices(self, idx):
        text, document_ids, lengths = super()._query_document_sample_shuffle_indices(idx)
        real = text[:sum(lengths)]  # what follows is padding (id -1), added to the last sample of a split only
        vocab = self.config.tokenizer.vocab_size
        if len(real) and (real.max() >= vocab or real.min() < 0):
            raise TokenIdError(self._describe(idx, real, document_ids, lengths, vocab))
        return text, document_ids, lengths

    def _describe(self, idx, real: np.ndarray, document_ids, lengths, vocab: int) -> str:
        bad = int(np.flatnonzero((real >= vocab) | (real < 0))[0])
        part = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
        offset = bad - sum(lengths[:part])
        if part == 0:  # the sample's first document is read from an offset into it
            offset += int(self.sample_index[self.shuffle_index[idx]][1])
        # data_prep (and datatrove) write one sequence per document, so Megatron's sequence id is the document's
        return (f"{self.dataset.path_prefix}.bin, document {int(document_ids[part])} (0-based), token {offset}: id "
                f"{int(real[bad])} is outside the vocabulary of {vocab} ids (data.tokenizer, else model.vocab_size). "
                "The corpus was tokenized with another tokenizer or is corrupt: `python -m data_prep.inspect --blend "
                "BLEND --tokenizer DIR --full` checks every token; re-tokenize it with the model's tokenizer")
