"""On the GPU: two GRPO steps on nccl (a world of one) with the megatron rollout backend, which generates from the
live actor: bf16, 4 prompts x 4 samples, a reward on the parity of the response's CRC-32 (a random model's groups
almost always hold both), a checkpoint after each step and the HF export at the end; then one PPO step (the
critic's value head on the GPU). One spawned process (gpu_workers.grpo_two_steps)."""

from __future__ import annotations

import math

import pytest

import gpu_helpers as h
import gpu_workers as w

pytestmark = [pytest.mark.gpu]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return h.on_gpu(w.grpo_two_steps, str(tmp_path_factory.mktemp("gpu_rl")), timeout=420)


def test_two_grpo_steps_with_the_megatron_backend(out):
    assert out["backend"] == "nccl" and out["device"].startswith("cuda")
    assert out["status"]["status"] == "complete" and out["status"]["step"] == 2
    rows = out["rows"]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("pg_loss", "grad_norm", "entropy", "reward_mean", "logprob_gap_mean"):
            assert math.isfinite(r[key]), (key, r)
        assert "sync_tensors" not in r  # nothing streamed: the generator runs the actor's own weights
        # bf16: the KV-cache decode and the trainer's full forward round differently, by far less than a wrong
        # weight or temperature would (several nats)
        assert r["logprob_gap_mean"] < 0.1, r
        assert r.get("skipped", 0.0) == 0.0
    assert all(r["zero_adv_share"] < 1.0 for r in rows) and all(r["grad_norm"] > 0 for r in rows)


def test_the_rl_run_exports_hugging_face_weights(out):
    assert "config.json" in out["export"] and any(n.endswith(".safetensors") for n in out["export"]), out["export"]


def test_a_ppo_step_with_its_critic(out):
    assert out["ppo_status"]["status"] == "complete" and len(out["ppo_rows"]) == 1
    r = out["ppo_rows"][0]
    for key in ("vf_loss", "critic_grad_norm", "pg_loss", "grad_norm"):
        assert math.isfinite(r[key]) and (key.endswith("loss") or r[key] > 0), (key, r)
