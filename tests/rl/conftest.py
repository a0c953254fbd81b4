"""Fixtures of the RL tests: verl's core algorithms as an oracle (when installed). The shared ones (`world1`, the
one-process Megatron world; the tiny data) come from tests/conftest.py."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from unittest import mock

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)  # rl_helpers


def load_verl_core_algos():
    """verl.trainer.ppo.core_algos without verl's package __init__ (which starts Ray) and with Ray stubbed.

    verl 0.9.1 pins transformers < 5.11, so it is installed beside octomega with `pip install --no-deps
    verl==0.9.1 omegaconf codetiming tensordict==0.10.0` (pinned torch/megatron untouched); its trainer is
    not used. Returns None when verl is not installed."""
    spec = importlib.util.find_spec("verl")
    if spec is None or spec.origin is None:
        return None
    pkg = types.ModuleType("verl")
    pkg.__path__ = [os.path.dirname(spec.origin)]
    sys.modules["verl"] = pkg
    stubs = ["ray", "ray.util", "ray.actor", "ray.util.placement_group", "ray.util.scheduling_strategies",
             "ray.experimental", "ray.experimental.state", "ray.experimental.state.api", "ray._private",
             "ray.runtime_env"]
    for name in stubs:
        sys.modules.setdefault(name, mock.MagicMock())
    try:
        import verl.trainer.ppo.core_algos as core_algos  # noqa: PLC0415
    except ImportError:
        return None
    finally:
        for name in stubs:
            if isinstance(sys.modules.get(name), mock.MagicMock):
                del sys.modules[name]
    return core_algos


@pytest.fixture(scope="session")
def verl_algos():
    mod = load_verl_core_algos()
    if mod is None:
        pytest.skip("verl is not installed: `pip install --no-deps verl==0.9.1 omegaconf codetiming "
                    "tensordict==0.10.0` enables the verl-oracle tests (its transformers pin excludes a normal "
                    "install)")
    return mod
