"""Word n-gram overlap, the test behind data_prep.decontaminate (and the synth's own exclusion of test problems).

Text is NFKC-normalised, lower-cased and split into words (runs of letters, digits and underscore); punctuation
and spacing do not matter, digits do (numbers are what tell two arithmetic problems apart). An item shares an
n-gram with a document when n consecutive words of the item appear consecutively in the document. Items shorter
than n words (but at least min_words) must appear whole. Hashes are Python's: build and query in one process.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


class NGramIndex:
    """n-grams of labelled items (benchmark problems); `find` tells which items a text overlaps."""

    def __init__(self, n: int = 13, min_words: int = 8):
        if n < 1 or min_words < 1:
            raise ValueError("n and min_words must be >= 1")
        self.n, self.min_words = n, min_words
        self.labels: list = []  # item id -> label
        self._grams: dict[int, int | list[int]] = {}  # hash of (length, words) -> item id(s)
        self._lengths: set[int] = set()  # window lengths to try (n, plus lengths of short items)

    def __len__(self) -> int:
        return len(self.labels)

    def _put(self, key: int, item: int) -> None:
        old = self._grams.get(key)
        if old is None:
            self._grams[key] = item
        elif isinstance(old, list):
            if old[-1] != item:
                old.append(item)
        elif old != item:
            self._grams[key] = [old, item]

    def add(self, text: str, label) -> bool:
        """Index one item; False (not indexed) when it has fewer than min_words words."""
        w = words(text)
        k = min(len(w), self.n)
        if k < self.min_words:
            return False
        item = len(self.labels)
        self.labels.append(label)
        self._lengths.add(k)
        for i in range(len(w) - k + 1):
            self._put(hash((k, *w[i:i + k])), item)
        return True

    def find(self, text: str, first_only: bool = False) -> dict[int, str]:
        """{item id: the first shared n-gram (as words joined by spaces)} for every item the text overlaps."""
        w = words(text)
        hits: dict[int, str] = {}
        grams = self._grams
        for k in self._lengths:
            for i in range(len(w) - k + 1):
                found = grams.get(hash((k, *w[i:i + k])))
                if found is None:
                    continue
                for item in (found if isinstance(found, list) else (found,)):
                    if item not in hits:
                        hits[item] = " ".join(w[i:i + k])
                if first_only:
                    return hits
        return hits
