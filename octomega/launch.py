"""The command-line path `octomega train` (octomega/cli.py) and `octomega rl` (octomega/rl/cli.py) share: their
arguments, a recipe or a saved config, --dry-run, the world size to validate against before any process group,
and the run itself with its error handling. Exit statuses: 0 done, 2 bad input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from octomega.config import ConfigError, from_dict, to_json


def add_run_arguments(p: argparse.ArgumentParser, *, recipe_help: str, dry_run_help: str) -> argparse.ArgumentParser:
    """The arguments of both commands: RECIPE [key.sub=value ...] [--dry-run] [--world-size N]."""
    p.add_argument("recipe", help=recipe_help)
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("--world-size", type=int, default=None,
                   help="processes to plan for in --dry-run (default: tp x pp x (parallel.dp or 1))")
    return p


def load_config(name: str, cls: type):
    """A recipe by name (recipes.get: any kind of config), or a saved config JSON (a run's config.json) as `cls`."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return from_dict(cls, json.loads(path.read_text()))
    import recipes

    return recipes.get(name)


def save_dry_run(cfg, report: str) -> int:
    """--dry-run: print the report and save the resolved config as run_dir/config.dry_run.json. Returns 0."""
    print(report)
    out = Path(cfg.resolved_run_dir) / "config.dry_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(cfg))
    print(f"\nsaved {out}")
    return 0


def launched_world_size() -> int | None:
    """The number of processes torchrun or srun started (None: neither did), to validate a config against before
    any process group exists."""
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
    return int(world) if world else None


def input_error(prog: str, e: Exception) -> int:
    """A bad recipe, override or config: one line on stderr. Returns 2."""
    print(f"{prog}: error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2


def run_stage(prog: str, run, cfg, errors: tuple[type[Exception], ...]) -> dict | None:
    """run(cfg), then the process groups shut down. None (after one line on stderr) when it raised one of
    `errors`: input the run found wrong only once it started."""
    try:
        return run(cfg)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None
    finally:
        from octomega.runtime import shutdown

        shutdown()
