"""Evaluation recipes (recipes/evals.py): `octomega eval RECIPE` takes its settings, options given on the command
line win, `--dry-run` prints the resolution, and the training/RL commands refuse them with the right hint."""

from __future__ import annotations

import json

import pytest

import recipes
from octomega.eval.cli import main as eval_main
from recipes.evals import EvalRecipe

SIZES = ("llama32_1b", "llama32_3b", "llama31_8b")


def _dry(capsys, *argv: str) -> dict:
    assert eval_main([*argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_paper_eval_recipe_resolves(capsys, monkeypatch):
    monkeypatch.setenv("OCTOMEGA_RUNS", "/cluster/runs")
    names = [r.name for r in recipes.entries("eval")]
    assert len(names) == 3 * 8
    for size in SIZES:
        for what in ("base", "long", "short", "hybrid", "rl", "rl_long", "rl_short", "rl_hybrid"):
            r = recipes.get(f"{size}_eval_{what}")
            assert isinstance(r, EvalRecipe)
            d = _dry(capsys, r.name)
            assert d["recipe"] == r.name and d["backend"] == "vllm" and d["samples"] == 16
            assert d["suite"] == ("rl-zeroshot" if what.startswith("rl") else "base-fewshot")
            assert d["max_new_tokens"] == (2048 if what.startswith("rl") else 1024)  # docs/recipe.md: base 1,024
            assert len(d["benchmarks"]) >= 13 and {"gsm8k", "math500", "olympiadbench", "amc23"} <= set(d["benchmarks"])
    d = _dry(capsys, "llama32_3b_eval_hybrid")
    assert d["model"] == "/cluster/runs/llama32_3b_decay_hybrid/hf" and d["out"] == "/cluster/runs/eval/llama32_3b_eval_hybrid"
    assert _dry(capsys, "llama31_8b_eval_rl")["model"] == "/cluster/runs/llama31_8b_rl_grpo_long/hf"


def test_command_line_options_override_the_recipe(capsys):
    d = _dry(capsys, "llama32_1b_eval_long", "--backend", "hf", "--limit", "20", "--benchmarks", "gsm8k,math500",
             "--samples", "1", "--out", "/tmp/x")
    assert (d["backend"], d["limit"], d["benchmarks"], d["samples"], d["out"]) == ("hf", 20, ["gsm8k", "math500"], 1,
                                                                                   "/tmp/x")
    assert d["suite"] == "base-fewshot"  # not given: the recipe's


def test_a_model_directory_still_works_without_a_recipe(capsys, tmp_path):
    d = _dry(capsys, str(tmp_path), "--suite", "qa-zeroshot", "--backend", "hf")
    assert d["recipe"] is None and d["model"] == str(tmp_path) and d["suite"] == "qa-zeroshot"


def test_wrong_kind_of_recipe_is_a_clear_error(capsys):
    from octomega.cli import main as octomega_main

    assert eval_main(["tiny_stable", "--dry-run"]) == 2
    assert "not an evaluation recipe" in capsys.readouterr().err
    assert octomega_main(["train", "llama32_1b_eval_long", "--dry-run"]) != 0
    assert "octomega eval llama32_1b_eval_long" in capsys.readouterr().err
    assert octomega_main(["train", "tiny_rl_grpo_short", "--dry-run"]) != 0
    assert "octomega rl tiny_rl_grpo_short" in capsys.readouterr().err
