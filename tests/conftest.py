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
