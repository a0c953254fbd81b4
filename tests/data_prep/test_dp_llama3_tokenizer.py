"""The real Llama-3 tokenizer built offline (data_prep.llama3_tokenizer): token for token equal to Meta's tiktoken
encoding, Meta's special ids, and data_prep.tokenize writing it as int32 with BOS/EOS around each document."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dp_helpers import quiet, read_prefix, write_jsonl

from data_prep import tokenize
from data_prep.llama3_tokenizer import (BUILD_FILE, FILES, Llama3TokenizerError, Llama3Unavailable,
                                        build_llama3_tokenizer, is_current_build, main, meta_tokenizer)
from data_prep.tokenizer_utils import describe_tokenizer, load_tokenizer, tokenizer_fingerprint

TESTSETS = Path(__file__).resolve().parents[2] / "octomega" / "eval" / "testsets"

# Text that stresses the pre-tokenizer regex and byte-level BPE (no special-token literals: see below).
VARIED = [
    "",
    " ",
    "a",
    "Let $f(x)=\\frac{x^2-4}{x-2}$ for $x\\neq 2$. Then $\\lim_{x\\to 2} f(x) = \\boxed{4}$ and "
    "$\\sum_{k=1}^{n} k^2 = \\frac{n(n+1)(2n+1)}{6}$, \\[ \\int_0^{\\pi} \\sin\\theta \\, d\\theta = 2 \\]",
    "\\begin{align*}\n  a_{n+1} &= 3a_n - 2 \\\\\n"
    "  \\mathbf{v} &\\cdot \\mathbf{w} = \\|v\\|\\|w\\|\\cos\\phi\n\\end{align*}",
    "31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679",
    "1,234,567.890 -0.5 1e-10 0x1F 007 2024-12-03 3/4 ½ ⅔ ² ³ ١٢٣ ४५६",
    "def gcd(a, b):\n\twhile b:\n\t\ta, b = b, a % b\n\treturn a\n\n\nclass Foo:\n    def bar(self):  # note\n"
    "        return {'k': [1, 2, 3]}\n",
    "x" + " " * 17 + "y\n\n\n\n   \n\t\t\n" + "\r\n" * 5 + "  trailing   ",
    "     leading spaces and a lone newline\n",
    "\n",
    "Café naïve résumé Ångström façade coöperate Straße ĳ ǅ",
    "中文字符，日本語のテキスト、한국어 텍스트。数学题：求 x 的值。",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷 ❤️ ✅ and math 𝔽 𝕏 ∀x∃y: x≤y ⇒ ∫∑∏√∞",
    "RTL: שלום עולם مرحبا بالعالم (mixed with English) ‏ ‎",
    "He's here. It's 'S' they'RE we've I'M you'll she'd DON'T can't O'Neil 'quoted' ''",
    "Punctuation!!! ??? ... --- ___ ((( ))) [[[ ]]] {{{ }}} <<< >>> @#$%^&*~`|\\/ ;;; ::: ,,, '''' \"\"\"",
    "Tab\tseparated\tvalues\n1\t2\t3\n",
    "zero\u200bwidth\u00a0nbsp\u2009thin\ufeffbom \x00nul \x7f del \x1b[31m",
    "surrogate-free but odd: \u0301 combining after space, e\u0301 composed",
]
# Special-token literals as they can occur in a document.
LITERALS = [
    "<|end_of_text|>",
    "The model emits <|eot_id|> to end a turn and <|begin_of_text|> starts a document.",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|reserved_special_token_7|>",
    "almost special: <|end_of_text| > <|not_a_token|> <|eot_id",
]


def sample_testset_lines(per_file: int = 40, seed: int = 0) -> list[str]:
    """A fixed sample of the shipped test sets' records, each record's strings joined (real math text)."""
    rng = random.Random(seed)
    out = []
    for f in sorted(TESTSETS.glob("*/test.jsonl")):
        lines = f.read_text(encoding="utf-8").splitlines()
        for line in rng.sample(lines, min(per_file, len(lines))):
            rec = json.loads(line)
            parts = [v for v in rec.values() if isinstance(v, str)]
            parts += [c for v in rec.values() if isinstance(v, list) for c in v if isinstance(c, str)]
            out.append("\n".join(parts))
    return out


@pytest.fixture(scope="module")
def meta():
    return meta_tokenizer()


@pytest.fixture(scope="module")
def tok(llama3_tokenizer_dir):
    return load_tokenizer(llama3_tokenizer_dir)


@pytest.fixture(scope="module")
def hf(llama3_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(llama3_tokenizer_dir))


@pytest.fixture(scope="module")
def real_texts():
    texts = sample_testset_lines()
    assert len(texts) >= 400 and len({t[:50] for t in texts}) > 350
    return texts


def test_ids_equal_metas_tiktoken_on_varied_and_real_math_text(tok, meta, real_texts):
    texts = VARIED + real_texts
    got = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    for text, ids in zip(texts, got):
        assert ids == meta.encode(text, bos=False, eos=False), text[:80]
    assert got[0] == [] and sum(map(len, got)) > 50_000
    assert max(max(g) for g in got if g) < 128_000  # ordinary text never produces a special id


def test_decoding_round_trips(tok, meta, real_texts):
    for text in VARIED + LITERALS + real_texts:
        ids = meta.encode(text, bos=False, eos=False)
        assert tok.decode(ids, skip_special_tokens=False) == text
        assert meta.decode(tok.encode(text, add_special_tokens=False).ids) == text
    assert tok.decode([128000, 9906, 128001], skip_special_tokens=False) == "<|begin_of_text|>Hello<|end_of_text|>"


def test_runs_longer_than_metas_25k_cut_equal_tiktoken_itself(tok, meta):
    """Meta's Tokenizer.encode cuts runs of >25,000 (non-)whitespace characters before tiktoken sees them; the fast
    tokenizer needs no cut, so it equals tiktoken's Encoding on the whole text (the same on shorter runs)."""
    for text in ("7" * 30_001, "x" * 26_000 + " end", " " * 30_000 + "x", "ab" * 20_000):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == meta.model.encode(text, disallowed_special=())
        assert tok.decode(ids) == text


def test_special_token_literals_plain_in_documents_special_on_request(tok, hf, meta):
    for text in LITERALS:
        plain = meta.encode(text, bos=False, eos=False)  # Meta's default: special literals are plain text
        special = meta.encode(text, bos=False, eos=False, allowed_special="all")
        tok.encode_special_tokens = True  # how data_prep.tokenize encodes documents
        try:
            assert tok.encode(text, add_special_tokens=False).ids == plain, text
        finally:
            tok.encode_special_tokens = False
        # the saved tokenizer, like Meta's hub release, maps literals to the special ids (prompts may use them)
        assert tok.encode(text, add_special_tokens=False).ids == special, text
        assert hf(text, add_special_tokens=False)["input_ids"] == special
    assert meta.encode("<|eot_id|>", bos=False, eos=False, allowed_special="all") == [128009]


def test_transformers_adds_bos_never_eos(hf, meta):
    text = "Question: What is $2+2$?\nAnswer:"
    assert hf(text)["input_ids"] == meta.encode(text, bos=True, eos=False)
    assert hf(text, add_special_tokens=False)["input_ids"] == meta.encode(text, bos=False, eos=False)
    assert hf(["a", "b c"])["input_ids"] == [meta.encode(t, bos=True, eos=False) for t in ("a", "b c")]
    assert hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == text
    assert hf.pad_token is None  # as Meta's release; octomega.generate pads with <|finetune_right_pad_id|>


def test_vocabulary_and_all_256_special_ids(tok, hf, meta, llama3_tokenizer_dir):
    assert len(meta.special_tokens) == 256 and meta.model.n_vocab == 128_256
    assert tok.get_vocab_size(with_added_tokens=True) == 128_256 == len(hf)
    for name, i in meta.special_tokens.items():
        assert tok.token_to_id(name) == i and tok.id_to_token(i) == name
    added = {t.content: (i, t.special) for i, t in tok.get_added_tokens_decoder().items()}
    assert added == {name: (i, True) for name, i in meta.special_tokens.items()}
    assert (hf.bos_token, hf.bos_token_id, hf.eos_token, hf.eos_token_id) == (
        "<|begin_of_text|>", meta.bos_id, "<|end_of_text|>", meta.eos_id) == (
        "<|begin_of_text|>", 128_000, "<|end_of_text|>", 128_001)
    assert hf.convert_tokens_to_ids(["<|eot_id|>", "<|eom_id|>", "<|finetune_right_pad_id|>"]) == [
        meta.eot_id, meta.eom_id, meta.pad_id]
    # the 128,000 BPE tokens are tiktoken's byte sequences at tiktoken's ranks (GPT-2's byte-to-character map)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tok.get_vocab(with_added_tokens=False)
    assert len(vocab) == 128_000 and sorted(vocab.values()) == list(range(128_000))
    for piece, i in vocab.items():
        assert bytes(byte_of[c] for c in piece) == meta.model.decode_single_token_bytes(i), i
    info = describe_tokenizer(llama3_tokenizer_dir)
    assert (info.vocab_size, info.dtype, info.bos_id, info.eos_id) == (128_256, "int32", 128_000, 128_001)


def test_build_is_idempotent_and_refuses_foreign_directories(llama3_tokenizer_dir, tmp_path):
    before = {f: (llama3_tokenizer_dir / f).stat().st_mtime_ns for f in FILES}
    said = []
    assert build_llama3_tokenizer(llama3_tokenizer_dir, log=said.append) == llama3_tokenizer_dir
    assert "reused" in said[-1] and {f: (llama3_tokenizer_dir / f).stat().st_mtime_ns for f in FILES} == before
    assert is_current_build(llama3_tokenizer_dir)
    copy = tmp_path / "edited"
    copy.mkdir()
    for f in (*FILES, BUILD_FILE):
        (copy / f).write_bytes((llama3_tokenizer_dir / f).read_bytes())
    assert is_current_build(copy)
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg | {"model_max_length": 8}))
    assert not is_current_build(copy)  # an edited file is not reused (a build would redo it)
    assert not is_current_build(tmp_path / "missing")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "tokenizer.json").write_text("{}")
    with pytest.raises(Llama3TokenizerError, match="did not write.*--force"):
        build_llama3_tokenizer(foreign)
    assert (foreign / "tokenizer.json").read_text() == "{}"


def test_cli_builds_the_same_files_with_a_summary(llama3_tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "128,256 ids" in printed and "<|begin_of_text|>=128000" in printed and "<|end_of_text|>=128001" in printed
    assert f"wrote {out}" in printed
    for f in FILES:  # deterministic: byte for byte the fixture's build
        assert (out / f).read_bytes() == (llama3_tokenizer_dir / f).read_bytes(), f
    assert tokenizer_fingerprint(out) == tokenizer_fingerprint(llama3_tokenizer_dir)
    assert main([str(out)]) == 0 and "reused" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "data_prep.llama3_tokenizer", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "OUT_DIR" in r.stdout and "tiktoken" in r.stdout and "--force" in r.stdout


def test_missing_llama_models_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "llama_models.llama3.tokenizer", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "llama_models.llama3", None)
    with pytest.raises(Llama3Unavailable, match=r"pip install 'octomega\[llama3\]'"):
        build_llama3_tokenizer(tmp_path / "x")
    assert main([str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llama3_tokenizer: error:") and "octomega[llama3]" in err[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # ~10 s on a quiet machine, 30 s under other jobs' load (datatrove workers, Megatron import)
def test_tokenize_writes_int32_bos_text_eos_equal_to_tiktoken(llama3_tokenizer_dir, meta, real_texts, tmp_path):
    docs = real_texts[:300] + [t for t in VARIED + LITERALS if t.strip()]
    random.Random(2).shuffle(docs)
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"text": t} for t in docs[:200]])
    write_jsonl(tmp_path / "raw" / "b.jsonl", [{"text": t} for t in docs[200:]])
    stats = tokenize.run(tmp_path / "raw", tmp_path / "out", "math", llama3_tokenizer_dir, workers=1, tasks=2,
                         log=quiet)
    got = read_prefix(tmp_path / "out" / "math")
    want = [[meta.bos_id] + meta.encode(t, bos=False, eos=False) + [meta.eos_id] for t in docs]
    assert got == want  # every document once, in input order; special literals inside stayed plain text
    assert (stats["documents"], stats["dtype"], stats["vocab_size"]) == (len(docs), "int32", 128_256)
    assert stats["tokens"] == sum(map(len, want))
    assert stats["tokenizer_fingerprint"] == tokenizer_fingerprint(llama3_tokenizer_dir)
    raw = np.fromfile(tmp_path / "out" / "math.bin", dtype=np.int32)  # int32 on disk: 4 bytes per token
    assert raw.size == stats["tokens"] and raw[0] == 128_000 and raw[-1] == 128_001
    assert (raw == 128_001).sum() == len(docs) and raw.max() == 128_001 and raw.min() >= 0
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert IndexedDataset(str(tmp_path / "out" / "math")).index.dtype == np.int32
