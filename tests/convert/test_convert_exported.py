"""The exported directory works in transformers (same greedy tokens), and a run started with init.hf_path reports
transformers' loss at its first step."""

import json

import pytest
import torch

from octomega.config import ModelConfig, ParallelConfig
from octomega.convert.random_llama import tiny_shapes, write_random_llama
from octomega.testing import run_distributed

SHAPES = tiny_shapes()


def test_exported_model_generates_the_same_greedy_tokens(tmp_path, world1):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from octomega.convert import load_hf_into_model
    from octomega.convert.commands import hf_to_mcore, mcore_to_hf
    from octomega.model import build_model

    src = write_random_llama(tmp_path / "src", SHAPES["gqa2_untied_scaled"], dtype=torch.bfloat16, seed=8)
    hf_to_mcore(src, tmp_path / "ck", tp=2)
    out = mcore_to_hf(tmp_path / "ck", tmp_path / "out")

    tok = AutoTokenizer.from_pretrained(str(out))
    prompt = tok("t5 t17 t230 t42 t7", return_tensors="pt").input_ids
    assert prompt.tolist() == [[5, 17, 230, 42, 7]]
    generated = {}
    for name, d in (("source", src), ("exported", out)):
        model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
        assert model.config.rope_parameters["low_freq_factor"] == 2.0
        generated[name] = model.generate(prompt, max_new_tokens=24, do_sample=False, min_new_tokens=24)
    assert torch.equal(generated["source"], generated["exported"])
    assert len(set(generated["source"][0, 5:].tolist())) > 3  # not a degenerate repetition

    # Megatron's greedy continuation (full forward per token, no KV cache) gives the same tokens
    model = build_model(ModelConfig(hf_config=str(src)), ParallelConfig(), dtype=torch.float32, on_gpu=False).eval()
    load_hf_into_model(src, [model])
    ids = prompt
    with torch.no_grad():
        for _ in range(24):
            logits = model(ids, torch.arange(ids.shape[1]).unsqueeze(0), None)
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(ids, generated["source"])


def _train_step0(rank, hf_dir, run_dir, tp):
    from octomega.config import RunConfig
    from octomega.train.loop import run_training

    cfg = RunConfig(name="init_hf", run_dir=run_dir)
    cfg.model = ModelConfig(hf_config=hf_dir)
    cfg.parallel.tp = tp
    cfg.init.hf_path = hf_dir
    cfg.data.mock = True  # seeded random tokens: the batch is reproducible outside the run
    cfg.train.seq_length, cfg.train.global_batch_size, cfg.train.micro_batch_size = 32, 4, 2
    cfg.train.train_tokens = 32 * 4  # one optimizer step
    cfg.train.precision = "fp32"
    cfg.train.valid_interval, cfg.train.valid_batches = 0, 1
    cfg.optim.warmup_tokens = 0
    cfg.logging.wandb, cfg.logging.log_interval = False, 1
    cfg.checkpoint.save_interval = 0
    return run_training(cfg)


@pytest.mark.slow
@pytest.mark.dist
def test_training_from_hf_path_starts_at_transformers_loss(tmp_path):
    """`init.hf_path` in a recipe: the first logged loss (before any update) is transformers' loss on that batch.
    TP=2 and a vocabulary padded from 300 to 512 rows."""
    from transformers import LlamaForCausalLM

    from octomega.train.data import MockDataset

    cfg = SHAPES["gqa2_untied_scaled"]
    src = write_random_llama(tmp_path / "src", cfg, seed=6)
    run_dir = tmp_path / "run"
    result = run_distributed(_train_step0, world_size=2, args=(str(src), str(run_dir), 2), timeout=280)
    assert result[0]["status"] == "complete" and result[0]["step"] == 1
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step1 = next(r for r in logged if r["kind"] == "train" and r["step"] == 1)

    data = MockDataset(32, cfg.vocab_size, 1234, 4)  # the run's seed (train.seed default) and global batch
    tokens = torch.stack([data[i]["tokens"] for i in range(4)])
    labels = torch.stack([data[i]["labels"] for i in range(4)])
    hf = LlamaForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        logits = hf(tokens).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), labels.reshape(-1))
    assert abs(step1["loss"] - ref.item()) < 1e-5, (step1["loss"], ref.item())
