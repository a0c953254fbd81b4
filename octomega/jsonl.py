"""Reading JSON-lines files: the one reader of the small jsonl inputs of octomega and data_prep (prompt sets,
benchmark test sets, run metrics, decontamination matches).

Blank lines are skipped. A line that is not valid JSON, or (by default) not a JSON object, is an error whose
message names the file and the line and says what to do; the caller chooses the exception class (its own, so its
command line reports it like its other input errors) and may skip bad lines instead. Standard library only: any
layer may import it.

Not read here: corpora (data_prep.readers reads them in datatrove units, with --on-bad-record), and a run's
samples file (octomega.eval.records repairs a torn last line by byte offset).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator, Union

OnBad = Union[str, Callable[[Exception], None]]


class JSONLError(ValueError):
    """A line of a JSON-lines file that is not what its reader expects."""


def iter_jsonl(path: str | os.PathLike, *, objects: bool = True, on_bad: OnBad = "raise",
               error: Callable[[str], Exception] = JSONLError,
               hint: str = "fix or delete that line") -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of the UTF-8 file ``path``, lines numbered from 1.

    objects: each value must be a JSON object (a dict).
    on_bad: a line that is not valid JSON (or not an object): "raise" ``error(message)``; "skip" it; or a callable,
        given that error (to count or log it), after which the line is skipped.
    error: the exception class raised, called with the message, e.g. the caller's own ``ConfigError``.
    hint: what to do, after the message: "<path>, line <n>: not valid JSON (<reason>, column <c>); <hint>" or
        "<path>, line <n>: expected a JSON object, got <type>; <hint>".
    """
    if on_bad not in ("raise", "skip") and not callable(on_bad):
        raise ValueError(f"on_bad must be 'raise', 'skip' or a callable, not {on_bad!r}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"not valid JSON ({e.msg}, column {e.colno})"
            else:
                if not objects or isinstance(value, dict):
                    yield lineno, value
                    continue
                problem = f"expected a JSON object, got {type(value).__name__}"
            err = error(f"{path}, line {lineno}: {problem}" + (f"; {hint}" if hint else ""))
            if on_bad == "raise":
                raise err
            if callable(on_bad):
                on_bad(err)


def read_jsonl(path: str | os.PathLike, **options) -> list:
    """The values of ``path``'s non-blank lines, in order (``iter_jsonl``'s options)."""
    return [value for _, value in iter_jsonl(path, **options)]
