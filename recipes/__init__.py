"""Experiments as Python functions returning a full RunConfig (torchtitan / OLMo-core style).

Names say what a recipe is: `<model>_<stage>[_<branch>]`, e.g. `llama32_3b_decay_long`, `tiny_stable`.
Decay branches derive from their stable recipe by copy-and-edit, so a change to the stable recipe reaches them.
"""

from __future__ import annotations

import os
from typing import Callable

from octomega.config import RunConfig

REGISTRY: dict[str, Callable[[], RunConfig]] = {}

# Where the paper-scale recipes find and put things, from the environment so the same recipe runs anywhere.
ENV_DIRS = {"OCTOMEGA_DATA": "data", "OCTOMEGA_MODELS": "models", "OCTOMEGA_RUNS": "runs",
            "OCTOMEGA_TINY_ROOT": "runs/tiny"}  # the tiny recipes' data and runs (recipes.tiny, octomega pipeline tiny)


def env_dir(name: str) -> str:
    """$name, else its default in ENV_DIRS. Read at each call: a recipe resolves where the environment points now."""
    if name not in ENV_DIRS:
        raise KeyError(f"env_dir({name!r}): not one of {', '.join(ENV_DIRS)}")
    return os.environ.get(name, ENV_DIRS[name])


def recipe(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
    REGISTRY[fn.__name__] = fn
    return fn


def _load_all() -> None:
    from recipes import evals, paper, rl, tiny  # noqa: F401  (registers)


def get(name: str) -> RunConfig:
    _load_all()
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown recipe {name!r}.{hint} `octomega recipes` lists them.")
    return REGISTRY[name]()


def describe() -> list[tuple[str, str]]:
    _load_all()
    return [(n, (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else "") for n, f in sorted(REGISTRY.items())]
