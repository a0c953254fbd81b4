"""octomega.jsonl: the one JSON-lines reader (blank lines, file:line errors with what to do, objects, on-bad
policies) and its callers' error classes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from octomega.jsonl import JSONLError, iter_jsonl, read_jsonl


def test_reads_values_with_their_line_numbers_and_skips_blank_lines(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"a": 1}\n\n   \n{"a": "é"}\r\n{"a": 3}')  # no newline at the end, a CRLF line, UTF-8
    assert list(iter_jsonl(f)) == [(1, {"a": 1}), (4, {"a": "é"}), (5, {"a": 3})]
    assert read_jsonl(f) == [{"a": 1}, {"a": "é"}, {"a": 3}]
    f.write_text("[1, 2]\n3\n")
    assert read_jsonl(f, objects=False) == [[1, 2], 3]


def test_a_bad_line_names_the_file_the_line_and_what_to_do(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"a": 1}\n{not json\n')
    with pytest.raises(JSONLError, match=r"b\.jsonl, line 2: not valid JSON \(Expecting property name enclosed in "
                                         r"double quotes, column 2\); fix or delete that line$"):
        read_jsonl(f)
    f.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(JSONLError, match=r"b\.jsonl, line 2: expected a JSON object, got list; fix or delete"):
        read_jsonl(f)

    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"line 2: expected a JSON object, got list; use --fix$"):
        read_jsonl(f, error=MyError, hint="use --fix")
    with pytest.raises(JSONLError, match=r"got list$"):
        read_jsonl(f, hint="")


def test_bad_lines_can_be_skipped_or_counted(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"a": 1}\n{torn\n"text"\n{"a": 2}\n')
    assert read_jsonl(f, on_bad="skip") == [{"a": 1}, {"a": 2}]
    seen = []
    assert read_jsonl(f, on_bad=seen.append) == [{"a": 1}, {"a": 2}]
    assert [str(e).split(": ", 1)[0] for e in seen] == [f"{f}, line 2", f"{f}, line 3"]
    assert all(isinstance(e, JSONLError) for e in seen)
    with pytest.raises(ValueError, match="on_bad must be"):
        read_jsonl(f, on_bad="ignore")


def test_imports_nothing_heavy():
    code = "import sys, octomega.jsonl; print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
