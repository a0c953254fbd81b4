"""Few-shot prompts are fixed and versioned: rendered texts keep the harness's shapes, and the fingerprints of
the exemplar files are pinned here (edit a prompt => bump its version and update this table)."""
from __future__ import annotations

import json

import pytest

from octomega.eval.benchmarks import BENCHMARKS
from octomega.eval.prompts import PROMPT_DIR, load_prompt, orz_prompt, prompt_for

PINNED = {
    "gsm_8shot": "gsm_8shot@v1#56058ad4",
    "amc_0shot": "amc_0shot@v1#33d4dd2c",
    "minerva_math_4shot": "minerva_math_4shot@v1#b6776af8",
    "mmlu_stem_4shot": "mmlu_stem_4shot@v1#60193713",
    "sat_math_4shot": "sat_math_4shot@v1#60193713",
    "ocw_4shot": "ocw_4shot@v1#a04e41fc",
    "mathqa_4shot": "mathqa_4shot@v1#0411e3fe",
    "tiny_arith_3shot": "tiny_arith_3shot@v1#5db1599c",
    "orz_zeroshot": "orz_zeroshot@v1#0d12e026",
    "qa_zeroshot": "qa_zeroshot@v1#ffac84ae",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_prompt_files_are_pinned_and_sourced(name):
    spec = load_prompt(name)
    assert spec.tag == PINNED[name]
    raw = json.loads((PROMPT_DIR / f"{name}.json").read_text())
    assert raw["source"] and raw["used_by"]


def test_every_benchmark_has_a_prompt_and_all_files_are_pinned():
    assert {p.stem for p in PROMPT_DIR.glob("*.json")} == set(PINNED)
    for b in BENCHMARKS.values():
        assert prompt_for(b.prompt, "base-fewshot").name == b.prompt
        assert prompt_for(b.prompt, "rl-zeroshot").name == "orz_zeroshot"
        assert prompt_for(b.prompt, "qa-zeroshot").name == "qa_zeroshot"
    with pytest.raises(ValueError, match="unknown suite"):
        prompt_for("gsm_8shot", "chat")


def test_shot_counts():
    counts = {"gsm_8shot": 8, "minerva_math_4shot": 4, "mmlu_stem_4shot": 4, "sat_math_4shot": 4, "ocw_4shot": 4,
              "mathqa_4shot": 4, "amc_0shot": 0, "orz_zeroshot": 0, "qa_zeroshot": 0, "tiny_arith_3shot": 3}
    for name, n in counts.items():
        assert len(load_prompt(name).exemplars) == n


def test_rendered_shapes_follow_the_harness():
    gsm = load_prompt("gsm_8shot").render("How many?")
    assert gsm.startswith("Q: There are 15 trees") and gsm.endswith("\n\nQ: How many?\nA:")
    assert gsm.count("The answer is") == 8
    assert load_prompt("amc_0shot").render("What is 2+2?") == "Q: What is 2+2?\nA: "
    minerva = load_prompt("minerva_math_4shot").render("Find $x$.")
    assert minerva.startswith("Problem:\nFind the domain") and minerva.endswith(
        "I hope it is correct.\n\n\nProblem:\nFind $x$.\n\nSolution:")
    assert load_prompt("mathqa_4shot").render("Q?").endswith("Final Answer: The final answer is (B).\n\n\nProblem:\nQ?\nSolution:")
    assert load_prompt("tiny_arith_3shot").render("Ann has 3 pens.").endswith("\n\nQuestion: Ann has 3 pens.\nAnswer:")
    assert load_prompt("gsm_8shot").stop == ("\nQ:",) and load_prompt("minerva_math_4shot").stop == ("\nProblem:",)


def test_orz_template_is_the_rl_stage_prompt():
    assert orz_prompt("What is $1+\\{2\\}$?") == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "User: You must put your answer inside \\boxed{} and Your final answer will be extracted automatically by "
        "the \\boxed{} tag.\nWhat is $1+\\{2\\}$?\nAssistant:")


def test_qa_zeroshot_is_the_rl_qa_template_and_grades_the_box():
    from octomega.eval.grader import extract_answer, grade
    from octomega.rl.templates import get_template

    q = "Ann has 3 pens. She buys 4 more. How many pens does Ann have?"
    assert load_prompt("qa_zeroshot").render(q) == f"Question: {q}\nAnswer:" == get_template("qa").render(q)
    assert load_prompt("qa_zeroshot").stop == get_template("qa").stop == ("\nQuestion:",)
    assert extract_answer(" 3 + 4 = 7. The answer is 7.", "tiny_arith", suite="qa-zeroshot") is None
    assert grade(" 3 + 4 = 7. The answer is \\boxed{7}.", "7", "tiny_arith", suite="qa-zeroshot")
    assert not grade(" 3 + 4 = 7. The answer is 7.", "7", "tiny_arith", suite="qa-zeroshot")
