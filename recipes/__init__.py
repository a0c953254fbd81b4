"""Experiments as Python functions returning a full config (torchtitan / OLMo-core style), and their registry.

Every recipe is registered under its literal name, so `grep -rn NAME recipes/` finds it: a `def NAME` (recipes/
tiny.py) or a row of a name table (recipes/paper.py, rl.py, evals.py). The registry says what kind each one is:

    train   a RunConfig,   run by `octomega train NAME`   (recipes/paper.py, recipes/tiny.py)
    rl      an RLConfig,   run by `octomega rl NAME`      (recipes/rl.py)
    eval    an EvalRecipe, run by `octomega eval NAME`    (recipes/evals.py)

Names say what a recipe is: `<model>_<stage>[_<branch>]`, e.g. `llama32_3b_decay_long`, `tiny_stable`.
Decay branches derive from their stable recipe by copy-and-edit, so a change to the stable recipe reaches them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Literal

from octomega.config import ConfigError

Kind = Literal["train", "rl", "eval"]
KIND_NAMES = {"train": "a training", "rl": "an RL", "eval": "an evaluation"}  # "... recipe" in messages


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: Kind  # which command runs it: `octomega train | rl | eval NAME`
    build: Callable[[], Any]  # a fresh config per call: RunConfig (train), RLConfig (rl), EvalRecipe (eval)
    doc: str  # one line for `octomega recipes`
    prepare: Callable[[Any], None] | None = None  # before a run: what the recipe builds on first use (tiny data)


class UnknownRecipe(ConfigError):
    """No recipe has this name; the message suggests close ones."""


REGISTRY: dict[str, Recipe] = {}

# Where the paper-scale recipes find and put things, from the environment so the same recipe runs anywhere.
ENV_DIRS = {"OCTOMEGA_DATA": "data", "OCTOMEGA_MODELS": "models", "OCTOMEGA_RUNS": "runs",
            "OCTOMEGA_TINY_ROOT": "runs/tiny"}  # the tiny recipes' data and runs (recipes.tiny, octomega pipeline tiny)


def env_dir(name: str) -> str:
    """$name, else its default in ENV_DIRS. Read at each call: a recipe resolves where the environment points now."""
    if name not in ENV_DIRS:
        raise KeyError(f"env_dir({name!r}): not one of {', '.join(ENV_DIRS)}")
    return os.environ.get(name, ENV_DIRS[name])


def register(name: str, kind: Kind, build: Callable[[], Any], doc: str,
             prepare: Callable[[Any], None] | None = None) -> Recipe:
    if kind not in KIND_NAMES:
        raise ValueError(f"recipe {name!r}: kind {kind!r} is not one of {', '.join(KIND_NAMES)}")
    if name in REGISTRY:
        raise ValueError(f"recipe {name!r} is registered twice")
    REGISTRY[name] = entry = Recipe(name, kind, build, doc, prepare)
    return entry


def recipe(kind: Kind, *, prepare: Callable[[Any], None] | None = None):
    """Decorator: register a `def` under its own name, its docstring's first line as the description."""
    def register_fn(fn: Callable[[], Any]) -> Callable[[], Any]:
        register(fn.__name__, kind, fn, (fn.__doc__ or "").strip().split("\n")[0], prepare)
        return fn

    return register_fn


def _load_all() -> None:
    from recipes import evals, paper, rl, tiny  # noqa: F401  (registers)


def lookup(name: str, kind: Kind | None = None) -> Recipe:
    """The registry entry `name`; with `kind`, one of that kind (else a ConfigError naming the command to use)."""
    _load_all()
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownRecipe(f"unknown recipe {name!r}.{hint} `octomega recipes` lists them.")
    entry = REGISTRY[name]
    if kind is not None and entry.kind != kind:
        raise ConfigError(f"{name!r} is not {KIND_NAMES[kind]} recipe (it is {KIND_NAMES[entry.kind]} recipe): run "
                          f"`octomega {entry.kind} {name}`; `octomega recipes` lists every recipe with its kind")
    return entry


def get(name: str, kind: Kind | None = None) -> Any:
    """A fresh config of the recipe `name` (of that `kind`, when given)."""
    return lookup(name, kind).build()


def entries(kind: Kind | None = None) -> list[Recipe]:
    """Every recipe (of one kind), sorted by name."""
    _load_all()
    return [r for _, r in sorted(REGISTRY.items()) if kind is None or r.kind == kind]
