"""Errors on the command line: input a user can fix (octomega's own error classes) is one line and exit status 2,
`--debug` adds its traceback; an error octomega does not expect keeps its traceback (it is a bug to report)."""

from __future__ import annotations

import sys
import types

import pytest

from octomega.config import ConfigError
from octomega.launch import is_input_error


@pytest.fixture
def fake_runs(monkeypatch):
    """The training and RL loops and the process-group shutdown replaced (no torch): each loop raises what the
    test puts in `raised`; `calls` records the shutdowns."""
    state = types.SimpleNamespace(raised=None, shutdowns=0)

    def run(cfg):
        raise state.raised

    def shutdown():
        state.shutdowns += 1

    monkeypatch.setitem(sys.modules, "octomega.train.loop", types.SimpleNamespace(run_training=run))
    monkeypatch.setitem(sys.modules, "octomega.rl.loop", types.SimpleNamespace(run_rl=run))
    monkeypatch.setitem(sys.modules, "octomega.runtime", types.SimpleNamespace(shutdown=shutdown))
    return state


def _command(kind: str, *extra: str) -> int:
    from octomega.cli import main

    recipe = {"train": "llama32_1b_stable", "rl": "llama32_3b_rl_grpo"}[kind]  # no `prepare`: nothing to build
    return main([kind, recipe, *extra])


@pytest.mark.parametrize("kind", ["train", "rl"])
def test_an_input_error_of_a_run_is_one_line(fake_runs, capsys, kind):
    fake_runs.raised = ConfigError("refusing to resume: train.seq_length 256 -> 512. Either restore ...")
    assert _command(kind) == 2
    err = capsys.readouterr().err
    assert err == f"octomega {kind}: error: refusing to resume: train.seq_length 256 -> 512. Either restore ...\n"
    assert fake_runs.shutdowns == 1


@pytest.mark.parametrize("kind", ["train", "rl"])
def test_debug_adds_the_traceback(fake_runs, capsys, kind):
    fake_runs.raised = FileNotFoundError("checkpoint runs/x does not exist")
    assert _command(kind, "--debug") == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in run\n" in err
    assert err.endswith(f"FileNotFoundError: checkpoint runs/x does not exist\n"
                        f"octomega {kind}: error: checkpoint runs/x does not exist\n")


@pytest.mark.parametrize("kind", ["train", "rl"])
@pytest.mark.parametrize("bug", [ValueError("math domain error"), KeyError("lr"), RuntimeError("boom")])
def test_an_unexpected_error_keeps_its_traceback(fake_runs, kind, bug):
    fake_runs.raised = bug
    with pytest.raises(type(bug)):
        _command(kind)
    assert fake_runs.shutdowns == 1


def test_an_unexpected_error_in_validation_keeps_its_traceback(monkeypatch):
    """Before: `except (ConfigError, KeyError)` turned any KeyError of the validation into one line."""
    import octomega.cli

    def broken(cfg, world_size=None):
        raise KeyError("num_layers")

    monkeypatch.setattr(octomega.cli, "validate", broken)
    with pytest.raises(KeyError):
        octomega.cli.main(["train", "llama32_1b_stable"])


def test_eval_debug_and_unexpected_errors(capsys, monkeypatch):
    from octomega.eval import cli

    assert cli.main(["tiny_stable", "--debug", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(
        "octomega eval: error: 'tiny_stable' is not an evaluation recipe (it is a training recipe): run `octomega "
        "train tiny_stable`; `octomega recipes` lists every recipe with its kind\n")

    def boom(argv):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_eval", boom)
    with pytest.raises(ZeroDivisionError):
        cli.main(["some_model"])


def test_convert_input_error_and_debug(tmp_path, capsys):
    from octomega.convert.cli import main

    args = ["hf-to-mcore", str(tmp_path / "no_such_model"), str(tmp_path / "ck")]
    assert main(args) == 2
    err = capsys.readouterr().err  # may start with torch's and Megatron's import warnings
    assert err.endswith(f"octomega convert hf-to-mcore: error: {tmp_path / 'no_such_model'}: no config.json (expected "
                        "a Hugging Face model directory)\n") and "Traceback" not in err
    assert main([*args, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "ConvertError: " in err


def test_what_counts_as_input():
    from data_prep.mix import BlendError
    from octomega.jsonl import JSONLError

    assert all(is_input_error(e) for e in (ConfigError("x"), BlendError("x"), JSONLError("x")))
    assert not any(is_input_error(e) for e in (ValueError("x"), KeyError("x"), FileNotFoundError("x")))
    assert is_input_error(FileNotFoundError("x"), (FileNotFoundError,))
