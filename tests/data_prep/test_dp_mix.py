"""data_prep.mix: blend weights for known mixtures, epochs, refusals, and load_blend's checks."""

from __future__ import annotations

import json
import os

import pytest
from dp_helpers import quiet, sample_texts, write_jsonl

from data_prep import mix, tokenize
from data_prep.mix import BlendError, compute_blend, load_blend, load_stats


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, synth_dir, tokenizer_dir):
    """The synth corpora tokenized (10 held-out documents each), plus a second short-CoT corpus."""
    out = tmp_path_factory.mktemp("prepared")
    raw = synth_dir / "raw"
    tokenize.run(raw / "web.jsonl", out, "web", tokenizer_dir, valid_docs=10, log=quiet)
    tokenize.run(raw / "qa_short.jsonl", out, "qa_short", tokenizer_dir, qa_style="short", valid_docs=10, log=quiet)
    tokenize.run(raw / "qa_long.jsonl", out, "qa_long", tokenizer_dir, qa_style="long", valid_docs=10, log=quiet)
    write_jsonl(out / "omi.jsonl", [{"problem": t, "generated_solution": "42"} for t in sample_texts(100, seed=9)])
    tokenize.run(out / "omi.jsonl", out, "omi2", tokenizer_dir, qa_style="short", question_key="problem",
                 answer_key="generated_solution", role="qa_short", log=quiet)
    return out


def stats(out, *names):
    return [load_stats(out / f"{n}.stats.json") for n in names]


def test_decay_hybrid_weights_epochs_and_data_path(corpora):
    s = stats(corpora, "web", "qa_short", "qa_long")
    blend = compute_blend(s, "decay_hybrid", 1_000_000, warn=quiet)
    w = {c["name"]: c["weight"] for c in blend["corpora"]}
    assert w == pytest.approx({"web": 0.70, "qa_short": 0.15, "qa_long": 0.15}, abs=1e-12)
    web = next(c for c in blend["corpora"] if c["name"] == "web")
    assert web["epochs"] == pytest.approx(0.7 * 1_000_000 / s[0]["tokens"], rel=1e-3)
    assert blend["data_path"] == " ".join(f"{c['weight']:.12g} {c['prefix']}" for c in blend["corpora"])
    assert blend["data_path"] == f"0.7 {corpora / 'web'} 0.15 {corpora / 'qa_long'} 0.15 {corpora / 'qa_short'}"
    assert [v["name"] for v in blend["valid"]] == ["web", "qa_long", "qa_short"]
    assert blend["dtype"] == "uint16" and blend["tokenizer_fingerprint"] == s[0]["tokenizer_fingerprint"]
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes, weights = get_blend_from_list(blend["data_path"].split())
    assert prefixes == [c["prefix"] for c in blend["corpora"]] and sum(weights) == pytest.approx(1.0)


def test_corpora_sharing_a_role_split_it_by_tokens_and_custom_weights(corpora):
    s = stats(corpora, "web", "qa_short", "omi2")
    blend = compute_blend(s, "decay_short", 10_000, warn=quiet)
    w = {c["name"]: c["weight"] for c in blend["corpora"]}
    share = s[1]["tokens"] / (s[1]["tokens"] + s[2]["tokens"])
    assert w["qa_short"] == pytest.approx(0.3 * share) and w["omi2"] == pytest.approx(0.3 * (1 - share))
    custom = compute_blend(s, "custom", 10_000, weights={"web": 3, "omi2": 1}, warn=quiet)
    assert {c["name"]: c["weight"] for c in custom["corpora"]} == pytest.approx({"web": 0.75, "omi2": 0.25})


def test_missing_roles_error_or_are_dropped_and_epochs_warn(corpora, tmp_path, capsys):
    s = stats(corpora, "web", "qa_short")
    with pytest.raises(BlendError, match=r"needs roles \['dclm', 'web_broad', 'qa', 'code'\].*--drop-missing-roles"):
        compute_blend(s, "stable", 10_000, warn=quiet)
    warnings = []
    blend = compute_blend(s[:1], "stable", 10_000_000, corpus_roles={"qa": s[1:]}, drop_missing=True,
                          max_epochs=4, warn=warnings.append)
    assert {c["role"]: c["weight"] for c in blend["corpora"]} == pytest.approx({"web": 0.7 / 0.75, "qa": 0.05 / 0.75})
    assert any("epochs" in m and "web" in m for m in warnings) and any("dclm" in m for m in warnings)
    code = mix.main(["--stats", str(corpora / "web.stats.json"), "--mixture", "tiny_stable", "--train-tokens", "2B",
                     "--out", str(tmp_path / "b.json"), "--max-epochs", "3"])
    assert code == 0 and "over --max-epochs 3" in capsys.readouterr().err


def test_empty_corpus_and_mixed_tokenizers_are_refused(corpora, tmp_path, other_tokenizer_dir):
    empty = json.loads((corpora / "qa_long.stats.json").read_text()) | {"tokens": 0, "documents": 0}
    (tmp_path / "empty.stats.json").write_text(json.dumps(empty))
    with pytest.raises(BlendError, match="is empty"):
        compute_blend(stats(corpora, "web") + [load_stats(tmp_path / "empty.stats.json")], "tiny_decay_long", 10,
                      warn=quiet)
    write_jsonl(tmp_path / "x.jsonl", [{"text": t} for t in sample_texts(20)])
    tokenize.run(tmp_path / "x.jsonl", tmp_path, "other", other_tokenizer_dir, role="qa_long", log=quiet)
    with pytest.raises(BlendError, match="must share a tokenizer"):
        compute_blend(stats(corpora, "web") + [load_stats(tmp_path / "other.stats.json")], "tiny_decay_long", 10,
                      warn=quiet)


def test_cli_writes_a_blend_that_load_blend_accepts_and_bad_files_are_named(corpora, tmp_path, capsys):
    out = tmp_path / "blend.json"
    code = mix.main(["--stats", str(corpora / "web.stats.json"),
                     "--corpus", f"qa_long={corpora / 'qa_long.stats.json'}",
                     "--mixture", "tiny_decay_long", "--train-tokens", "1.5M", "--out", str(out)])
    assert code == 0 and "--data-path 0.4 " in capsys.readouterr().out
    blend = load_blend(out)
    assert blend["train_tokens"] == 1_500_000 and blend["stage"] == "tiny_decay_long"

    def broken(edit, name):
        b = json.loads(out.read_text())
        edit(b)
        (tmp_path / name).write_text(json.dumps(b))
        return tmp_path / name

    with pytest.raises(BlendError, match=r"weights sum to 1\.1"):
        load_blend(broken(lambda b: b["corpora"][0].update(weight=b["corpora"][0]["weight"] + 0.1), "w.json"))
    with pytest.raises(BlendError, match="field 'format'"):
        load_blend(broken(lambda b: b.update(format="other"), "f.json"))
    with pytest.raises(BlendError, match=r"corpora\[1\]\.prefix: .*nope\.idx: missing"):
        load_blend(broken(lambda b: b["corpora"][1].update(prefix=str(tmp_path / "nope")), "p.json"))
    with pytest.raises(BlendError, match="blend says dtype 'int32'"):
        load_blend(broken(lambda b: b.update(dtype="int32"), "d.json"))
    with pytest.raises(BlendError, match="different tokenizers"):
        load_blend(broken(lambda b: b.update(tokenizer_fingerprint="0123456789abcdef"), "t.json"))
    os.remove(blend["valid"][0]["prefix"] + ".bin")
    with pytest.raises(BlendError, match=r"valid\[0\]\.prefix"):
        load_blend(out)


def test_a_corpus_with_two_roles_fills_both(corpora, tmp_path):
    qa = json.loads((corpora / "omi2.stats.json").read_text()) | {"name": "megamath-qa", "role": "qa",
                                                                    "roles": ["qa", "qa_short"]}
    (tmp_path / "mqa.stats.json").write_text(json.dumps(qa))
    s = stats(corpora, "web", "qa_short") + [load_stats(tmp_path / "mqa.stats.json")]
    short = compute_blend(s, "decay_short", 10_000, warn=quiet)
    w = {c["name"]: c["weight"] for c in short["corpora"]}
    share = s[1]["tokens"] / (s[1]["tokens"] + qa["tokens"])
    assert w == pytest.approx({"web": 0.7, "qa_short": 0.3 * share, "megamath-qa": 0.3 * (1 - share)})
    stable = compute_blend(s, "stable", 10_000, drop_missing=True, warn=quiet)
    assert {c["name"]: c["role"] for c in stable["corpora"]} == {"web": "web", "megamath-qa": "qa"}


@pytest.mark.parametrize("weights,named", [
    ("web=1.2,qa_short=-0.2", "qa_short=-0.2"),  # used to write a blend without qa_short, exit 0
    ("web=0.3,qa_short=-0.5", "qa_short=-0.5"),  # used to say "all weights are zero"
    ("web=nan,qa_short=0.3", "web=nan"),  # used to end in a traceback
    ("web=0.7,qa_short=inf", "qa_short=inf"),
    ("web=1e400,qa_short=0.3", "web=1e400"),  # overflows to inf
    ("web=abc,qa_short=0.3", "web=abc"),
    ("web=0,qa_short=0", "web=0, qa_short=0"),
    ("web=0.5,qa_short", "'qa_short'"),
    ("web=0.5,web=0.2", "web"),
])
def test_bad_custom_weights_are_one_line_errors_and_write_nothing(corpora, tmp_path, capsys, weights, named):
    out = tmp_path / "blend.json"
    code = mix.main(["--stats", str(corpora / "web.stats.json"), str(corpora / "qa_short.stats.json"),
                     "--mixture", "custom", "--weights", weights, "--train-tokens", "1M", "--out", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("mix: error: --weights") and named in lines[0], lines[0]
    assert "Traceback" not in captured.err and not out.exists() and not captured.out


def test_weights_with_a_named_mixture_are_refused(corpora, tmp_path, capsys):
    out = tmp_path / "blend.json"
    code = mix.main(["--stats", str(corpora / "web.stats.json"), str(corpora / "qa_short.stats.json"),
                     "--mixture", "decay_short", "--weights", "web=0.5,qa_short=0.5", "--train-tokens", "1M",
                     "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "mix: error: --weights applies to --mixture custom only (got --mixture decay_short); drop --weights or use "
        "--mixture custom"] and not out.exists()


@pytest.mark.parametrize("weights", [{"web": -0.2, "qa_short": 1.2}, {"web": float("nan")}, {"web": float("inf")},
                                     {"web": 0.0, "qa_short": 0}])
def test_compute_blend_refuses_bad_weights(corpora, weights):
    with pytest.raises(BlendError, match="--weights"):
        compute_blend(stats(corpora, "web", "qa_short"), "custom", 10_000, weights=weights, warn=quiet)


def test_every_mixture_names_roles_or_registry_corpora_and_sums_to_one():
    from data_prep.registry import CORPORA, MIXTURES, ROLES

    for name, shares in MIXTURES.items():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12), name
        assert all(k in ROLES or k in CORPORA for k in shares), (name, shares)
    # the ablations the authors' run names publish (registry.py cites them)
    assert MIXTURES["ablate_synqa_ins_89101"] == {"megamath-web-pro": 0.89, "megamath-qa": 0.10, "instruct": 0.01}
    assert [MIXTURES[f"decay_omi2_{p:03d}"]["openmathinstruct-2"] for p in (10, 20, 30, 40)] == [0.1, 0.2, 0.3, 0.4]
    assert MIXTURES["decay_openr1_010_omi2_020"] == pytest.approx(
        {"web": 0.7, "openr1-math": 0.1, "openmathinstruct-2": 0.2})
    assert CORPORA["tulu-3-sft-mixture"].roles == ("instruct",)


def test_ablation_mixtures_take_named_corpora_and_instruction_data(corpora, tmp_path, tokenizer_dir):
    """An instruction corpus (chat messages) tokenized with the instruct role joins the 89/10/1 mixture; mixtures
    that name OpenR1 and OMI2 take those corpora and leave the others of their roles out, with a warning."""
    write_jsonl(tmp_path / "ins.jsonl", [{"messages": [{"role": "user", "content": t},
                                                        {"role": "assistant", "content": "Sure, here it is."}]}
                                         for t in sample_texts(40, seed=3)])
    tokenize.run(tmp_path / "ins.jsonl", tmp_path, "instr", tokenizer_dir, messages_key="messages", role="instruct",
                 log=quiet)
    assert load_stats(tmp_path / "instr.stats.json")["roles"] == ["instruct"]

    def renamed(src: str, name: str, roles: list[str]):
        st = json.loads((corpora / f"{src}.stats.json").read_text()) | {"name": name, "role": roles[0],
                                                                          "roles": roles}
        (tmp_path / f"{name}.stats.json").write_text(json.dumps(st))
        return load_stats(tmp_path / f"{name}.stats.json")

    pro, mqa = renamed("web", "megamath-web-pro", ["web"]), renamed("qa_short", "megamath-qa", ["qa", "qa_short"])
    blend = compute_blend([pro, mqa, load_stats(tmp_path / "instr.stats.json")], "ablate_synqa_ins_89101", 10_000,
                          warn=quiet)
    assert {c["name"]: c["weight"] for c in blend["corpora"]} == pytest.approx(
        {"megamath-web-pro": 0.89, "megamath-qa": 0.10, "instr": 0.01})
    assert blend["roles"] == pytest.approx({"web": 0.89, "qa": 0.10, "instruct": 0.01})
    with pytest.raises(BlendError, match=r"needs roles \['instruct'\]"):
        compute_blend([pro, mqa], "ablate_synqa_ins_89101", 10_000, warn=quiet)
    r1, omi = renamed("qa_long", "openr1-math", ["qa_long"]), renamed("omi2", "openmathinstruct-2", ["qa_short"])
    am = renamed("qa_long", "am-deepseek-r1-distilled", ["qa_long"])
    warnings: list[str] = []
    blend = compute_blend(stats(corpora, "web") + [r1, omi, am], "decay_openr1_015_omi2_015", 10_000,
                          warn=warnings.append)
    assert {c["name"]: c["weight"] for c in blend["corpora"]} == pytest.approx(
        {"web": 0.70, "openr1-math": 0.15, "openmathinstruct-2": 0.15})
    assert any("am-deepseek-r1-distilled left out" in m for m in warnings), warnings
