"""The recipe registry: every recipe is findable by its name in recipes/, says its kind (train, rl, eval), builds a
config of that kind, and each command refuses another kind by naming the command that runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import recipes
from octomega.config import RunConfig
from octomega.rl.config import RLConfig
from recipes.evals import EvalRecipe

SOURCE = "\n".join(p.read_text() for p in sorted((Path(recipes.__file__).parent).glob("*.py")))
TYPES = {"train": RunConfig, "rl": RLConfig, "eval": EvalRecipe}


def test_every_recipe_is_found_by_its_name_in_the_source():
    missing = [r.name for r in recipes.entries()
               if not re.search(rf'^def {r.name}\(|"{r.name}"', SOURCE, re.M)]
    assert not missing, f"recipes registered under a name the source does not spell out: {missing}"


def test_every_recipe_builds_a_config_of_its_kind():
    counts = {}
    for r in recipes.entries():
        cfg = r.build()
        assert isinstance(cfg, TYPES[r.kind]), (r.name, r.kind, type(cfg).__name__)
        assert cfg.name == r.name and r.doc, r.name
        counts[r.kind] = counts.get(r.kind, 0) + 1
    assert counts == {"train": 17, "rl": 24, "eval": 24}
    assert {r.name for r in recipes.entries("eval")} == {n for n in recipes.REGISTRY if "_eval_" in n}


def test_only_the_tiny_recipes_prepare_something_before_a_run():
    """The tiny recipes build their data (and check their RL starting point) on first use: their `prepare`, which the
    commands run instead of testing the recipe's name."""
    assert {r.name for r in recipes.entries() if r.prepare} == {
        r.name for r in recipes.entries() if r.kind in ("train", "rl") and r.name.startswith("tiny_")}


def test_recipes_command_shows_the_kind(capsys):
    from octomega.cli import main

    assert main(["recipes"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(recipes.entries())
    assert re.match(r"tiny_stable +train +tiny Llama \(1M params\), stable stage", next(r for r in rows if
                                                                                       r.startswith("tiny_stable ")))
    assert main(["recipes", "--kind", "eval"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 24 and all(r.split()[1] == "eval" for r in rows)


@pytest.mark.parametrize("command, name, kind", [
    ("train", "llama32_1b_eval_long", "an evaluation"),
    ("train", "tiny_rl_grpo_short", "an RL"),
    ("rl", "tiny_stable", "a training"),
    ("eval", "tiny_rl_ppo_long", "an RL"),
])
def test_another_kind_of_recipe_names_its_command(capsys, command, name, kind):
    from octomega.cli import main

    assert main([command, name, "--dry-run"]) == 2
    err = capsys.readouterr().err
    what = {"train": "a training", "rl": "an RL", "eval": "an evaluation"}[command]
    assert f"octomega {command}: error: '{name}' is not {what} recipe (it is {kind} recipe): run `octomega " in err
    assert f" {name}`" in err and err.count("\n") == 1


def test_unknown_and_duplicate_names():
    with pytest.raises(recipes.UnknownRecipe, match="Did you mean tiny_stable"):
        recipes.get("tiny_stabel")
    with pytest.raises(ValueError, match="registered twice"):
        recipes.register("tiny_stable", "train", RunConfig, "again")
    with pytest.raises(ValueError, match="kind 'pretrain'"):
        recipes.register("tiny_other", "pretrain", RunConfig, "a typo")
