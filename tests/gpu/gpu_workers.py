"""What the GPU tests run, each function in a spawned process on GPU 0 with nccl (gpu_helpers.on_gpu): training,
resume, the collectives, conversion, the loss options, Transformer Engine and FP8, generation, GRPO. Each returns
plain Python (numbers, strings, lists) for the test module to assert on."""

from __future__ import annotations

import json
from pathlib import Path

import gpu_helpers as h
from octomega.testing import hf_greedy

# tests/generate/conftest.py's prompts: different lengths, so the static batch starts decoding at different steps
PROMPTS = [
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer:",
    "Q: hi",
    "Problem:\nFind the domain of the expression $x$ and the value of $y$.\n\nSolution:\n",
    "the",
    "A conversation between User and Assistant. User: 2+3?\nAssistant:",
]
MAX_NEW = 20


# ----------------------------------------------------------------------------------- bf16 training and resume


def collectives() -> dict:
    """octomega's own collectives on tensors it builds, under this process's backend (nccl on the GPU machine)."""
    import torch
    import torch.distributed as dist

    from octomega.checkpoint import all_finite
    from octomega.rl.actor import reduce_metrics
    from octomega.runtime import collective_device
    from octomega.train.loop import _reduce_loss
    from octomega.train.run import any_rank

    return {"backend": str(dist.get_backend()), "device": str(collective_device()),
            "any_rank": any_rank(True, False), "all_finite_nothing": all_finite([]),
            "all_finite_cpu_tensor": all_finite([torch.ones(3)]),
            "all_finite_nan_on_gpu": all_finite([torch.tensor([1.0, float("nan")], device="cuda")]),
            "reduce_loss_nothing": _reduce_loss([]),
            "reduce_loss_cpu_sums": _reduce_loss([{"lm loss": torch.tensor([6.0, 3.0])}]),
            "reduce_metrics_cpu_sums": reduce_metrics([{"x": torch.tensor([1.0, 4.0])}], ("x",))}


def convert_round_trip(root: Path, run: Path, iteration: int) -> dict:
    """The GPU-trained checkpoint -> HF -> Megatron -> HF, each step checked against the one before."""
    import torch

    from octomega.convert import hf_to_mcore, mcore_to_hf, verify
    from octomega.testing import checkpoint_tensors

    hf1 = mcore_to_hf(run, root / "hf1", allow_no_tokenizer=True)
    first = verify(hf1, run, dtype=torch.float32)  # transformers (CPU) vs the checkpoint's model (GPU)
    hf_to_mcore(hf1, root / "mc2")
    second = verify(hf1, root / "mc2", dtype=torch.float32)
    mcore_to_hf(root / "mc2", root / "hf2", allow_no_tokenizer=True)
    a, b = h.safetensors_dir(hf1), h.safetensors_dir(root / "hf2")
    stored = checkpoint_tensors(run / "checkpoints" / f"iter_{iteration:07d}")
    emb = next(t for k, t in stored.items() if k.endswith("embedding.word_embeddings.weight"))
    return {"verify_trained": first, "verify_reimported": second, "names": sorted(a), "names_again": sorted(b),
            "bit_equal_again": all(k in b and torch.equal(a[k], b[k]) for k in a),
            "dtypes": sorted({str(t.dtype) for t in a.values()}),
            "embedding_equals_checkpoint": torch.equal(a["model.embed_tokens.weight"], emb[:h.VOCAB].to(
                a["model.embed_tokens.weight"].dtype))}


def train_and_convert(rank: int, root: str) -> dict:
    """20 bf16 steps (local spec), the same run again, the run stopped after 10 steps and resumed, with deterministic
    kernels; then the collectives and the conversion round trip of the straight run's last checkpoint."""
    import warnings

    import torch
    import torch.distributed as dist

    h.deterministic_kernels()
    root = Path(root)
    blend = h.write_corpus(root)
    out: dict = {"status": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["status"]["straight"] = h.train(h.train_cfg(root / "straight", blend))
        out["status"]["twin"] = h.train(h.train_cfg(root / "twin", blend))
        out["status"]["first_part"] = h.train(h.train_cfg(root / "resumed", blend,
                                                          f"train.exit_after_steps={h.STEPS // 2}"))
        out["status"]["resumed"] = h.train(h.train_cfg(root / "resumed", blend))
    out["nondeterministic_ops"] = sorted({str(w.message)[:300] for w in caught
                                          if "deterministic" in str(w.message).lower()})
    out["losses"] = {n: h.losses(root / n) for n in ("straight", "twin", "resumed")}
    out["steps"] = {n: [r["step"] for r in h.metrics(root / n)] for n in ("straight", "twin", "resumed")}
    out["grad_norms"] = [r["grad_norm"] for r in h.metrics(root / "straight")]
    meta = json.loads((root / "straight" / "checkpoints" / f"iter_{h.STEPS:07d}" / "octomega.json").read_text())
    out["param_dtype"] = meta.get("param_dtype")
    out["backend"], out["gpu"] = str(dist.get_backend()), torch.cuda.get_device_name()
    out["collectives"] = collectives()
    out["convert"] = convert_round_trip(root, root / "straight", h.STEPS)
    return out


# ------------------------------------------------------------------------------------ loss options, compile


def loss_options(rank: int, root: str, with_te: bool) -> dict:
    """5 steps of each cross entropy (local spec: megatron, chunked, native; TE spec: megatron, te) and of
    model.compile=layers (inductor), from the same initial weights and batches."""
    import torch

    root = Path(root)
    blend = h.write_corpus(root)
    runs = {"megatron": (), "chunked": ("model.cross_entropy=chunked", "model.ce_chunk_tokens=96"),
            "native": ("model.cross_entropy=native",), "compile": ("model.compile=layers",)}
    if with_te:
        runs.update(te_megatron=("model.layer_spec=te",), te_te=("model.layer_spec=te", "model.cross_entropy=te"))
    out: dict = {"losses": {}, "status": {}}
    for name, overrides in runs.items():
        if name == "compile":
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
        out["status"][name] = h.train(h.train_cfg(root / name, blend, *overrides, "checkpoint.save_interval=0",
                                                  steps=5))
        out["losses"][name] = h.losses(root / name)
        if name == "compile":
            counters = torch._dynamo.utils.counters
            out["graph_breaks"] = sum(counters["graph_break"].values())
            out["unique_graphs"] = counters["stats"]["unique_graphs"]
    return out


# ------------------------------------------------------------------------------ Transformer Engine and FP8


def te_forward(root: Path) -> dict:
    """Logits of the same random HF weights through the TE spec and the local spec (bf16), and transformers (fp32)."""
    import torch
    from transformers import LlamaForCausalLM

    from octomega.config import ModelConfig, ParallelConfig, load_hf_config
    from octomega.convert import load_hf_into_model
    from octomega.convert.random_llama import write_random_llama
    from octomega.model import build_model

    hf_dir = write_random_llama(root / "hf_random", h.small_model(), dtype=torch.float32, seed=3)
    tokens = torch.randint(0, h.VOCAB, (2, 128), generator=torch.Generator().manual_seed(0)).cuda()
    logits = {}
    for spec in ("local", "te"):
        cfg = load_hf_config(ModelConfig(hf_config=str(hf_dir)))
        cfg.layer_spec = spec
        model = build_model(cfg, ParallelConfig(), dtype=torch.bfloat16, on_gpu=True,
                            device=torch.device("cuda", torch.cuda.current_device()), init_weights=False)
        load_hf_into_model(hf_dir, [model])
        logits[spec] = h.forward_logits(model.eval(), tokens, h.VOCAB)
        del model
    hf = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        ref = hf(tokens).logits.float()
    scale = float(ref.abs().max())

    def rel(x, y):
        return float((x - y).abs().max()) / scale

    return {"te_vs_local": rel(logits["te"], logits["local"]), "te_vs_hf": rel(logits["te"], ref),
            "argmax_local_hf": float((logits["local"].argmax(-1) == ref.argmax(-1)).float().mean()),
            "local_vs_hf": rel(logits["local"], ref), "max_abs_logit": scale,
            "argmax_te_local": float((logits["te"].argmax(-1) == logits["local"].argmax(-1)).float().mean())}


def te_and_fp8(rank: int, root: str) -> dict:
    """The TE spec's forward against the local spec's, then 20 steps of TE bf16, FP8 delayed and FP8 tensorwise."""
    import torch

    root = Path(root)
    out: dict = {"forward": te_forward(root), "losses": {}, "status": {}}
    blend = h.write_corpus(root)
    runs = {"bf16": ("model.layer_spec=te",),
            "fp8_delayed": ("model.layer_spec=te", "model.fp8=hybrid", "model.fp8_recipe=delayed"),
            "fp8_tensorwise": ("model.layer_spec=te", "model.fp8=hybrid", "model.fp8_recipe=tensorwise")}
    for name, overrides in runs.items():
        out["status"][name] = h.train(h.train_cfg(root / name, blend, *overrides, "checkpoint.save_interval=0"))
        out["losses"][name] = h.losses(root / name)
    out["capability"] = list(torch.cuda.get_device_capability())
    return out


def fp8_refusals(rank: int, root: str, with_te: bool) -> dict:
    """octomega train's FP8 refusals on a real GPU: each a ConfigError from the Trainer before any step."""
    from octomega.config import ConfigError, RunConfig, from_dict
    from octomega.train.loop import Trainer

    root = Path(root)
    blend = h.write_corpus(root, tokens=50_000)
    cases = {"local_spec": ("model.fp8=hybrid", "model.layer_spec=local"),
             "tokens_not_multiple_of_16": ("model.fp8=hybrid", "model.layer_spec=auto", "train.seq_length=100",
                                           "train.micro_batch_size=1")}
    if not with_te:
        cases["without_te"] = ("model.fp8=hybrid", "model.layer_spec=auto")
    out = {}
    for name, overrides in cases.items():
        try:
            Trainer(from_dict(RunConfig, h.train_cfg(root / name, blend, *overrides)))
            out[name] = None
        except ConfigError as e:
            out[name] = str(e)
        out[name + "_steps"] = len(h.metrics(root / name))
    return out


# --------------------------------------------------------------------------------------------- generation


def generation(rank: int, root: str, with_te: bool) -> dict:
    """Greedy tokens of the megatron backend (fp32; the default spec, and the local spec too when TE is here)
    and of transformers' generate, on the tiny random Llama."""
    import torch

    from octomega.config import ModelConfig, ParallelConfig, load_hf_config
    from octomega.convert import load_hf_into_model
    from octomega.generate import SamplingParams, get_generator
    from octomega.generate.tiny import build_tiny_llama
    from octomega.model import build_model

    model_dir = build_tiny_llama(Path(root) / "tiny")
    params = SamplingParams(max_new_tokens=MAX_NEW)
    gen = get_generator("megatron", str(model_dir), batch_size=8, dtype=torch.float32)
    out = {"specs": {}, "tokens": {}, "finish": {}, "stop_ids": list(gen.stop_token_ids),
           "prompt_lengths": [len(p) for p in gen.encode(PROMPTS)]}
    gens = {"path": gen}
    if with_te:
        cfg = load_hf_config(ModelConfig(hf_config=str(model_dir)))
        cfg.layer_spec = "local"
        model = build_model(cfg, ParallelConfig(), dtype=torch.float32, on_gpu=True,
                            device=torch.device("cuda", torch.cuda.current_device()), init_weights=False)
        load_hf_into_model(model_dir, [model])
        gens["live_local"] = get_generator("megatron", model, tokenizer=str(model_dir), batch_size=8)
    for name, g in gens.items():
        res = g.generate(PROMPTS, params)
        out["specs"][name] = g.model.octomega_layer_spec
        out["tokens"][name] = [o[0].token_ids for o in res]
        out["finish"][name] = [o[0].finish_reason for o in res]
        out["device"] = str(g.device)
    out["transformers"] = hf_greedy(model_dir, PROMPTS, MAX_NEW, out["stop_ids"], device="cuda")
    return out


# -------------------------------------------------------------------------------------------------- GRPO


def _register_parity_reward() -> None:
    """A reward that splits almost every group of a random model's samples: +1 when the CRC-32 of the response text
    is even, else -1. (tests/rl's "contains the digit 1" gives a random model no signal in most groups of 4; here a
    group of 4 different texts is all-equal with probability 1/8, a step of 4 groups with 1/4096.) Every response
    counts as answered (has_box): a random model's responses run to the length cap, and the loop gives a capped
    response without an answer the no-answer reward whatever the reward function says."""
    import zlib

    from octomega.rl.rewards import REWARDS, Score, register_reward

    if "crc_parity" not in REWARDS:
        @register_reward("crc_parity")
        def crc_parity(text, gold, *, timeout_s=0.0):
            ok = zlib.crc32(text.encode()) % 2 == 0
            return Score(reward=1.0 if ok else -1.0, has_box=True, correct=ok)


def grpo_two_steps(rank: int, root: str) -> dict:
    """Two GRPO steps of the tiny RL configuration (tests/rl/rl_helpers.py: 4 prompts x 4 samples) with the megatron
    rollout backend, bf16, the CRC-parity reward, a checkpoint each step and the HF export; then one PPO step."""
    import torch.distributed as dist

    import rl_helpers
    from octomega.generate.tiny import build_tiny_llama
    from octomega.runtime import init_distributed

    _register_parity_reward()
    root = Path(root)
    hf = build_tiny_llama(root / "hf_in")
    prompts, bench = rl_helpers.write_prompts(root / "prompts.jsonl", 40), rl_helpers.write_bench(root)
    cfg = rl_helpers.loop_config(root, "grpo", hf, prompts, bench, "rollout.backend=megatron", "train.steps=2",
                                 "valid.benchmarks=", "checkpoint.save_interval=1", "train.precision=auto",
                                 "reward.name=crc_parity")
    rt = init_distributed(tp=1, pp=1, seed=0)
    out = {"backend": str(dist.get_backend()), "device": str(rt.device)}
    out["status"] = rl_helpers.run_loop(cfg)
    out["rows"] = rl_helpers.metrics(root / "grpo")
    out["config_precision"] = json.loads((root / "grpo" / "config.json").read_text())["train"]["precision"]
    export = root / "grpo" / "hf"
    out["export"] = sorted(p.name for p in export.iterdir()) if export.is_dir() else []
    # one PPO step: the critic (its value head replaces the output layer after the model went to the GPU)
    ppo = rl_helpers.loop_config(root, "ppo", hf, prompts, bench, "rollout.backend=megatron", "train.steps=1",
                                 "valid.benchmarks=", "checkpoint.save_interval=0", "checkpoint.export_hf=false",
                                 "reward.name=crc_parity", "algo.name=ppo")
    out["ppo_status"] = rl_helpers.run_loop(ppo)
    out["ppo_rows"] = rl_helpers.metrics(root / "ppo")
    return out
