"""The two boxed rewards side by side: `octothinker` (the authors' reward, rl/verl/utils/reward_score/math_verifier.py
in GAIR-NLP/OctoThinker) and `boxed` (ours: any step of the eval grader's cascade may match). The same cases are
graded by both; where they differ is printed, and the differences must be exactly the known ones: the authors' box
regex (nesting <= 3, no \\fbox) and math-verify's "not equal" being final for them.

math-verify is the real library (the installed version, not the authors' 0.5.2: its verdicts on bare LaTeX are
what these cases pin)."""

from __future__ import annotations

import pytest

from octomega.rl.rewards import authors_box, authors_equivalent, authors_strip, get_reward

DEEP = "\\frac{1}{\\sqrt{\\frac{1}{x^{2}}}}"  # braces 4 deep inside a box: beyond the authors' regex

# (response, gold): graded by both rewards
CASES = [
    ("so \\boxed{14}.", "14"), ("\\boxed{15}", "14"), ("the answer is 14", "14"),
    ("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{0.5}", "\\frac{1}{2}"), ("\\boxed{\\dfrac{3}{4}}", "\\frac34"),
    ("\\boxed{3/4}", "\\frac{3}{4}"), ("\\boxed{ East }", "east"), ("\\boxed{\\text{(C)}}", "C"),
    ("\\fbox{7}", "7"), ("\\boxed 7", "7"), (f"\\boxed{{1}} then \\boxed{{{DEEP}}}", "1"),
    (f"\\boxed{{{DEEP}}}", DEEP), ("\\boxed{\\frac{a}{\\sqrt{b^{2}}}}", "\\frac{a}{\\sqrt{b^{2}}}"),
    ("\\boxed{5\\text{ cm}}", "5"), ("\\boxed{10\\%}", "10"), ("\\boxed{90^\\circ}", "90"), ("\\boxed{x = 3}", "3"),
    ("\\boxed{(1,2)}", "(1, 2)"), ("\\boxed{x \\in [-2,7]}", "[-2,7]"), ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{2\\sqrt{3}}", "2\\sqrt3"), ("\\boxed{10{,}000}", "10000"), ("\\boxed{1,000}", "1000"),
    ("\\boxed{\\pi}", "\\pi"), ("\\boxed{3.14}", "\\pi"), ("\\boxed{\\text{yes}}", "yes"), ("\\boxed{Yes}", "yes"),
    ("\\boxed{}", "0"), ("\\boxed{\\infty}", "\\infty"), ("\\boxed{\\$5}", "5"), ("\\boxed{5 \\text{ dollars}}", "5"),
    ("\\boxed{-\\frac{\\sqrt{3}}{2}}", "-\\frac{\\sqrt3}{2}"), ("\\boxed{2} and \\boxed{3}", "2"),
    ("\\boxed{.5}", "\\frac12"), ("\\boxed{0.5}", "1/2"), ("\\boxed{\\text{Monday}}", "\\text{Monday}"),
]

# response, gold -> (ours, theirs) as (reward, has_box), and why they differ
KNOWN_DIFFERENCES = {
    ("\\boxed{\\dfrac{3}{4}}", "\\frac34"): ((1.0, True), (-1.0, True)),  # math-verify: not equal (final for them);
    ("\\boxed{(1,2)}", "(1, 2)"): ((1.0, True), (-1.0, True)),  # ours: the Hendrycks strings match
    ("\\boxed{-\\frac{\\sqrt{3}}{2}}", "-\\frac{\\sqrt3}{2}"): ((1.0, True), (-1.0, True)),
    ("\\fbox{7}", "7"): ((1.0, True), (-1.0, False)),  # their regex has no \fbox
    (f"\\boxed{{1}} then \\boxed{{{DEEP}}}", "1"): ((-1.0, True), (1.0, True)),  # theirs: the last box it can match
    (f"\\boxed{{{DEEP}}}", DEEP): ((1.0, True), (-1.0, False)),  # too deep for their regex: no box
}


def test_both_rewards_on_the_same_cases_differ_exactly_where_known(capsys):
    ours, theirs = get_reward("boxed"), get_reward("octothinker")
    assert len(CASES) >= 30
    diffs = {}
    for response, gold in CASES:
        o, t = ours(response, gold), theirs(response, gold)
        assert not (o.timed_out or t.timed_out), (response, gold)
        assert o.correct == (o.reward > 0) and t.correct == (t.reward > 0)
        if (o.reward, o.has_box) != (t.reward, t.has_box):
            diffs[(response, gold)] = ((o.reward, o.has_box), (t.reward, t.has_box))
    with capsys.disabled():
        print(f"\n{len(diffs)} of {len(CASES)} cases graded differently (ours boxed vs the authors' octothinker):")
        for (response, gold), (o, t) in diffs.items():
            print(f"  {response!r} vs gold {gold!r}: boxed {o[0]:+.0f} (box {o[1]}), octothinker {t[0]:+.0f} "
                  f"(box {t[1]})")
    assert diffs == KNOWN_DIFFERENCES


def test_authors_box_regex():
    assert authors_box("a \\boxed{1} b \\boxed{2}") == "2"
    assert authors_box("\\boxed{\\frac{a}{\\sqrt{b^{2}}}}") == "\\frac{a}{\\sqrt{b^{2}}}"  # 3 deep: matches
    assert authors_box(f"\\boxed{{{DEEP}}}") is None and authors_box("\\fbox{3}") is None
    assert authors_box("\\boxed 3") is None and authors_box("\\boxed{3") is None
    assert authors_box("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"  # escaped braces
    assert authors_box("\\boxed{50}%") == "50"


def test_authors_hendrycks_strip_and_where_it_raises():
    assert authors_strip("\\dfrac{3}{4}") == authors_strip("\\frac34") == "\\frac{3}{4}"
    assert authors_strip("k = \\left( 3 \\right)") == "(3)"
    assert authors_strip("5\\text{ cm}") == "5" and authors_strip("0.5") == "\\frac{1}{2}"
    assert authors_strip(".5") == "\\frac{1}{2}" and authors_strip(".25") == "0.25"
    assert authors_strip("3/4") == "\\frac{3}{4}" and authors_strip("+3/4") == "+3/4"
    assert authors_strip("\\sqrt3") == "\\sqrt{3}" and authors_strip("\\frac1") == "\\frac1"
    for bad in ("a/b", "1\\text{ m}\\text{ s}", "\\sqrt", "2\\frac"):  # their strip_string raises on these
        with pytest.raises((ValueError, IndexError)):
            authors_strip(bad)


def test_the_hendrycks_fallback_runs_only_when_math_verify_raises(monkeypatch):
    """math-verify's own errors are caught inside it, so this fakes one (parse raising) to reach the authors'
    fallback: with it, "(1,2)" and "(1, 2)" match by Hendrycks' strings; without it math-verify's False stands."""
    import math_verify

    assert authors_equivalent("(1,2)", "(1, 2)") is False  # math-verify's verdict is final
    assert authors_equivalent(" East ", "east") is True  # the case-insensitive string step comes first
    monkeypatch.setattr(math_verify, "parse", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("parse failed")))
    assert authors_equivalent("(1,2)", "(1, 2)") is True
    assert authors_equivalent("x/y", "x / y") is True  # Hendrycks raises too: the Minerva-normalised strings
    assert authors_equivalent("x/y", "u/v") is False
