import os

import pytest

# Tests run on the CPU even where a GPU exists, unless marked gpu.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """The tiny recipes' synthetic corpora (data_prep.synth -> tokenize -> mix), built once per session.
    Returns the root to use as OCTOMEGA_TINY_ROOT (blends under <root>/data/blends)."""
    from recipes.tiny import ensure_data

    root = tmp_path_factory.mktemp("tiny_root")
    ensure_data(root=root)
    return root


@pytest.fixture(scope="session")
def tiny_long_cot_root(tmp_path_factory):
    """The tiny pipeline's decay-long model, trained once per session with octomega's own trainer and the
    unchanged recipes (tiny_stable, 800 steps, then tiny_decay_long, 350 steps; pinned numerics, losses logged
    every 10 steps): the RL learning tests start from it and tests/train/test_golden.py checks both runs' losses
    against the golden numbers. Returns the tiny root (runs under <root>/tiny_stable, <root>/tiny_decay_long)."""
    from octomega.testing import run_pinned

    root = tmp_path_factory.mktemp("tiny_long_cot_root")
    run_pinned(root, "train", "tiny_stable", "logging.wandb=false", "logging.log_interval=10")
    run_pinned(root, "train", "tiny_decay_long", "logging.wandb=false", "logging.log_interval=10")
    return root
