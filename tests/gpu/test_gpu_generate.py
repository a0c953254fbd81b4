"""On the GPU: the megatron generation backend's greedy tokens equal transformers' generate (fp32, the tiny random
Llama, prompts of different lengths, 20 new tokens): from an HF directory with the default layer spec (TE when it
is importable) and, when TE is here, from a live local-spec model too. One spawned process."""

from __future__ import annotations

import pytest

import gpu_helpers as h
import gpu_workers as w

pytestmark = [pytest.mark.gpu]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    from octomega.model import te_available

    return h.on_gpu(w.generation, str(tmp_path_factory.mktemp("gpu_generate")), te_available(), timeout=300)


def test_megatron_greedy_equals_transformers(out):
    assert out["device"].startswith("cuda")
    assert len(set(out["prompt_lengths"])) == len(out["prompt_lengths"])
    want = out["transformers"]
    for name, tokens in out["tokens"].items():
        assert tokens == want, (name, out["specs"][name], tokens, want)
        for row, reason in zip(tokens, out["finish"][name]):
            assert reason == ("stop" if row[-1] in out["stop_ids"] else "length")
    if "live_local" in out["specs"]:
        assert out["specs"] == {"path": "te", "live_local": "local"}
