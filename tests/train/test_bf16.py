"""bf16 training, the GPU's default precision, run on the CPU: every parameter is bf16 (the local spec's torch
RMSNorm used to stay fp32), the run saves checkpoints with Megatron's Float16Optimizer (it failed on the fp32 norm
weights: "Param id N does not match any model sharded param") and with the distributed optimizer, and a resumed
run continues from them. A branch in the other precision is refused with what to do unless it takes the weights
only (a bf16 run's optimizer state holds fp32 master weights, an fp32 run's does not)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from octomega.testing import run_distributed
from workers import metrics, tiny_cfg, train

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def _bf16_runs(rank, d):
    from octomega.config import ModelConfig, ParallelConfig
    from octomega.convert.commands import single_process_runtime
    from octomega.model import build_model
    from octomega.runtime import shutdown

    single_process_runtime()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpt = build_model(ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                                      num_query_groups=2, vocab_size=256), ParallelConfig(),
                          dtype=torch.bfloat16, on_gpu=False)
        gpt(torch.zeros(1, 8, dtype=torch.long), torch.arange(8)[None], None)
    dtypes = sorted({str(p.dtype) for p in gpt.parameters()})
    mismatch = [str(w.message) for w in caught if "Mismatch dtype" in str(w.message)]
    out = {"dtypes": dtypes, "mismatch": mismatch}
    shutdown()
    for name, extra in (("f16opt", []), ("distopt", ["parallel.distributed_optimizer=true"])):
        bf16 = ["train.precision=bf16", *extra]
        out[name] = train(tiny_cfg(d / name, *bf16, "train.exit_after_steps=3"))
        out[name + "_resumed"] = train(tiny_cfg(d / name, *bf16))
    branch = ["train.stage=decay", "optim.lr=none", f"init.from_checkpoint={d / 'f16opt'}", "train.train_tokens=512",
              "train.precision=fp32"]
    try:
        train(tiny_cfg(d / "fp32_branch", *branch))
        out["refusal"] = None
    except ValueError as e:
        out["refusal"] = str(e)
    out["fp32_branch"] = train(tiny_cfg(d / "fp32_branch_weights", *branch, "init.reset_optimizer=true"))
    return out


def test_bf16_parameters_checkpoints_and_resume(tmp_path):
    out = run_distributed(_bf16_runs, 1, args=(tmp_path,), timeout=600)[0]
    assert out["dtypes"] == ["torch.bfloat16"] and out["mismatch"] == []
    for name in ("f16opt", "distopt"):
        losses = [r["loss"] for r in metrics(tmp_path / name)]
        steps = [r["step"] for r in metrics(tmp_path / name)]
        assert steps == [1, 2, 3, 4, 5], (name, steps)  # 3 steps, a checkpoint, then resumed for the last 2
        assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], (name, losses)
        assert (tmp_path / name / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "5"
    assert out["refusal"] and "was saved by a bfloat16 run and this run is float32" in out["refusal"]
    assert "train.precision to match (bf16)" in out["refusal"] and "init.reset_optimizer=true" in out["refusal"]
    assert len(metrics(tmp_path / "fp32_branch_weights")) == 2  # the weights alone branch into fp32
