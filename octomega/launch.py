"""The command-line path `octomega train` (octomega/cli.py) and `octomega rl` (octomega/rl/cli.py) share: their
arguments, a recipe or a saved config, --dry-run, the world size to validate against before any process group,
and the run itself with its error handling. Exit statuses: 0 done, 2 bad input, 3 the run diverged (a non-finite
loss or grad norm: stage_exit_status).

Errors (every `octomega` command): input a user can fix raises one of octomega's own error classes (ConfigError,
ConvertError, data_prep's BlendError, ...) and is reported as one line, `PROG: error: MESSAGE`, exit status 2
(`--debug` adds its traceback). Any other exception is a bug: it propagates with its traceback."""

from __future__ import annotations

import argparse
import copy
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from octomega.config import ConfigError, from_dict, read_json_object, to_json


DEBUG_HELP = "on an input error, show its traceback too (other errors always show theirs)"


def add_run_arguments(p: argparse.ArgumentParser, *, recipe_help: str, dry_run_help: str) -> argparse.ArgumentParser:
    """The arguments of both commands: RECIPE [key.sub=value ...] [--dry-run] [--world-size N] [--debug]."""
    p.add_argument("recipe", help=recipe_help)
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("--world-size", type=int, default=None,
                   help="processes to plan for in --dry-run (default: tp x pp x (parallel.dp or 1))")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def load_config(name: str, kind: str, cls: type):
    """A recipe of this kind by name (recipes.get: "train", "rl"), or a saved config JSON (a run's config.json) as
    `cls`."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = read_json_object(path, "a run's config.json", f"config file {path}")
        try:
            return from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"config file {path}: {e}") from None
    import recipes

    return recipes.get(name, kind)


def prepare_recipe(name: str, cfg) -> None:
    """What the recipe `name` builds on first use (its `prepare`: the tiny recipes' data and starting point), before
    the run; nothing for a saved config JSON."""
    if name.endswith(".json"):
        return
    import recipes

    entry = recipes.lookup(name)
    if entry.prepare is not None:
        entry.prepare(cfg)


def save_dry_run(cfg, report: str) -> int:
    """--dry-run: print the report and save the resolved config as run_dir/config.dry_run.json. Returns 0."""
    print(report)
    out = Path(cfg.resolved_run_dir) / "config.dry_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(cfg))
    print(f"\nsaved {out}")
    return 0


def checked_config(args: argparse.Namespace, resolve: Callable, validate: Callable, dry_run_report: Callable):
    """RECIPE with its overrides (`resolve`), validated against the launched world size before any process group
    and before torch loads; None once --dry-run has printed and saved its report instead."""
    cfg = resolve(args.recipe, args.overrides)
    if args.dry_run:
        save_dry_run(cfg, dry_run_report(cfg, args.world_size))
        return None
    validate(copy.deepcopy(cfg), launched_world_size())  # fail fast
    return cfg


def launched_world_size() -> int | None:
    """The number of processes torchrun or srun started (None: neither did), to validate a config against before
    any process group exists."""
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
    return int(world) if world else None


OWN_PACKAGES = ("octomega", "data_prep", "recipes")


def is_input_error(e: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether `e` is input a user can fix: an instance of one of our own error classes (defined in OWN_PACKAGES:
    ConfigError, ConvertError, BlendError, TokenizerError, ...) or of `also`. Anything else is a bug."""
    return isinstance(e, also) or any(c.__module__.split(".")[0] in OWN_PACKAGES for c in type(e).__mro__)


def input_error(prog: str, e: BaseException, debug: bool = False) -> int:
    """Bad input: one line on stderr (after its traceback with --debug). Returns 2."""
    if debug:
        traceback.print_exception(e)
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2


def report_input_errors(prog: str, fn: Callable[[], int], *, debug: bool = False,
                        also: tuple[type[BaseException], ...] = ()) -> int:
    """fn()'s exit status; an input error (is_input_error) is one line on stderr and exit status 2. Other
    exceptions propagate with their traceback."""
    try:
        return fn()
    except Exception as e:
        if not is_input_error(e, also):
            raise
        return input_error(prog, e, debug)


def run_command(prog: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """`octomega train` / `octomega rl`: body()'s exit status, input errors (a missing file too: its message names
    it) as one line and exit status 2."""
    return report_input_errors(prog, body, debug=args.debug, also=(FileNotFoundError,))


def run_stage(run, cfg) -> dict:
    """run(cfg), then the process groups shut down (also when it raised)."""
    try:
        return run(cfg)
    finally:
        from octomega.runtime import shutdown

        shutdown()


DIVERGED = 3  # exit status of a run that stopped on a non-finite loss or grad norm (status "diverged")


def stage_exit_status(prog: str, result: dict) -> int:
    """A finished run's exit status: 0, or DIVERGED after its error line on stderr (rank 0) when the run stopped on
    a non-finite loss or grad norm (octomega/train/run.py)."""
    if result.get("status") != "diverged":
        return 0
    if os.environ.get("RANK", "0") == "0":
        print(f"{prog}: error: {result['error']}", file=sys.stderr, flush=True)
    return DIVERGED
