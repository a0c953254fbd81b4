"""Evaluation recipes (recipes/evals.py): `octomega eval RECIPE` takes its settings, options given on the command
line win, `--dry-run` prints the resolution, and the training/RL commands refuse them with the right hint."""

from __future__ import annotations

import json

import pytest

import recipes
from octomega.eval.cli import main as eval_main
from recipes.evals import EvalRecipe

SIZES = ("llama32_1b", "llama32_3b", "llama31_8b")
# The paper's 13 (GAIR-NLP/OctoThinker eval/configs/en_math_cot_few_shot_test_configs.json's 12, plus MATH500)
PAPER_13 = ("gsm8k", "math", "math500", "olympiadbench", "amc23", "sat_math", "ocw", "mmlu_stem", "mathqa", "svamp",
            "tabmwp", "asdiv", "mawps")


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
            # greedy only: the authors' eval script runs temperature=0, n_repeats=1 (docs/recipe.md "Evaluation")
            assert d["recipe"] == r.name and d["backend"] == "vllm" and d["samples"] == 1
            assert d["suite"] == ("rl-zeroshot" if what.startswith("rl") else "base-fewshot")
            # few-shot 1,024 (run_cot_eval.py); RL models: the last cap of their RL stair (Hybrid 4,096, else 8,192)
            want = (4096 if what == "rl_hybrid" else 8192) if what.startswith("rl") else 1024
            assert d["max_new_tokens"] == want, (r.name, d["max_new_tokens"])
            assert d["benchmarks"] == list(PAPER_13) and "aime24" not in d["benchmarks"]
    d = _dry(capsys, "llama32_3b_eval_hybrid")
    assert d["model"] == "/cluster/runs/llama32_3b_decay_hybrid/hf" and d["out"] == "/cluster/runs/eval/llama32_3b_eval_hybrid"
    assert _dry(capsys, "llama31_8b_eval_rl")["model"] == "/cluster/runs/llama31_8b_rl_grpo_long/hf"


def test_rl_eval_length_follows_the_rl_stair(monkeypatch, capsys):
    """The RL eval cap is read from the RL recipes' stairs, not written twice: a changed stair moves it."""
    import recipes.rl
    from recipes.evals import rl_eval_tokens

    assert (rl_eval_tokens("long"), rl_eval_tokens("hybrid")) == (8192, 4096)
    monkeypatch.setitem(recipes.rl.STAIRS, "hybrid", "0:1024,50:3000")
    assert _dry(capsys, "llama32_1b_eval_rl_hybrid")["max_new_tokens"] == 3000
    assert _dry(capsys, "llama32_1b_eval_rl_hybrid", "--max-new-tokens", "512")["max_new_tokens"] == 512


def test_avg_at_k_stays_an_option(capsys):
    d = _dry(capsys, "llama32_3b_eval_rl_long", "--samples", "16")
    assert d["samples"] == 16 and d["samples_on"] == "small" and d["temperature"] == 0.8


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
