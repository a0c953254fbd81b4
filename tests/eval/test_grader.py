"""The RL reward, answer extraction, and our timeouts working in threads and worker processes."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from octomega.eval.grader import boxed_reward, extract_answer, grade, math_verify_grade
from octomega.eval.normalize import boxed_contents, harness_strip, last_boxed, minerva_normalize
from octomega.eval.timeouts import run_with_timeout


@pytest.mark.parametrize("response,gold,expected", [
    ("so the answer is \\boxed{14}.", "14", (1.0, True)),
    ("\\boxed{3} wait, actually \\boxed{14}", "14", (1.0, True)),  # the last box counts
    ("\\boxed{14} no, \\boxed{15}", "14", (-1.0, True)),
    ("The answer is 14.", "14", (-1.0, False)),  # no box: -1 and the flag says so
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", (1.0, True)),
    ("\\boxed{0.5}", "\\frac12", (1.0, True)),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", (1.0, True)),
    ("\\boxed{\\text{(B)}}", "\\text{(B)}", (1.0, True)),
    ("\\boxed{x=5}", "5", (1.0, True)),
    ("\\boxed{10^\\circ}", "10", (1.0, True)),
    ("\\boxed{1,000}", "1000", (1.0, True)),
    ("\\boxed{[2,5)}", "[2,5]", (-1.0, True)),
    ("\\boxed{}", "3", (-1.0, True)),
    ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}", (-1.0, False)),  # unclosed box
])
def test_boxed_reward(response, gold, expected):
    assert boxed_reward(response, gold) == expected


def test_box_extraction_handles_nesting():
    text = "a $\\boxed{\\frac{\\sqrt{\\frac{1}{2}}}{2}}$ and \\boxed{x^{2^{3}}}"
    assert boxed_contents(text) == ["\\frac{\\sqrt{\\frac{1}{2}}}{2}", "x^{2^{3}}"]
    assert last_boxed(text) == "x^{2^{3}}" and last_boxed("none") is None
    assert last_boxed("\\fbox{7}") == "7"


def test_normalisers():
    assert harness_strip("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert harness_strip("5\\text{ cm}") == "5" and harness_strip("90^\\circ") == "90"
    assert harness_strip("2.000") == "2" and harness_strip("\\$18") == "18"
    assert minerva_normalize("x = \\boxed{12}") == "12" and minerva_normalize("100,000") == "100000"


def test_extract_answer_contract():
    assert extract_answer("3 + 4 = 7. The answer is 7.\n\nQ: Ann has 9 pens", "gsm8k") == "7."  # cut at the next Q:
    assert extract_answer("no numbers here", "gsm8k") is None
    assert extract_answer("$\\boxed{\\dfrac{1}{2}}$", "math500") == "\\frac{1}{2}"
    assert extract_answer("Final Answer: The final answer is (C). I hope it is correct.", "sat_math") == "C"
    assert extract_answer("... \\boxed{(B)}", "mmlu_stem", suite="rl-zeroshot") == "B"
    assert extract_answer("... \\boxed{42}", "gsm8k", suite="rl-zeroshot") == "42"
    assert extract_answer("no box", "gsm8k", suite="rl-zeroshot") is None
    with pytest.raises(ValueError, match="unknown benchmark"):
        extract_answer("x", "nope")


def test_timeout_interrupts_a_busy_grader_in_a_worker_thread():
    stop_seen = threading.Event()

    def spin():
        try:
            while True:
                pass
        finally:
            stop_seen.set()

    def call():
        t0 = time.monotonic()
        value, status = run_with_timeout(spin, timeout_s=0.3, default="fallback")
        return value, status, time.monotonic() - t0

    with ThreadPoolExecutor(2) as pool:  # from a non-main thread: signal.alarm would not work here
        value, status, elapsed = pool.submit(call).result()
    # the busy loop never ends: any prompt return proves the caller stopped waiting (bound loose for busy machines)
    assert (value, status) == ("fallback", "timeout") and elapsed < 10.0
    assert stop_seen.wait(30), "the helper thread should be stopped by the asynchronous exception"
    assert run_with_timeout(lambda: 1 / 0, timeout_s=1)[1] == "error"
    assert run_with_timeout(lambda x: x + 1, 1, timeout_s=None) == (2, "ok")


def test_math_verify_grade_in_threads():
    texts = ["The answer is $\\frac{1}{2}$.", "So $\\boxed{0.5}$.", "It is 0.25.", "\\boxed{2/4}"] * 4
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(lambda t: math_verify_grade(t, "\\frac{1}{2}"), texts))
    assert verdicts == [True, True, False, True] * 4
    with ThreadPoolExecutor(2) as pool:
        assert pool.submit(grade, "$\\boxed{0.5}$", "\\frac12", "math500").result() is True


def _grade_in_worker(args):
    text, gold = args
    return math_verify_grade(text, gold, timeout_s=5.0), boxed_reward(text, gold)


def test_graders_in_daemonic_worker_processes():
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:  # pool workers are daemonic: they may not start child processes
        out = pool.map(_grade_in_worker, [("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{3}", "4")])
    assert out == [(True, (1.0, True)), (False, (-1.0, True))]
