"""Helpers of the RL tests, importable inside spawned gloo ranks (octomega.testing.run_distributed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch


def megatron_from_hf(hf_dir, *, tp: int = 1):
    """This rank's Megatron GPTModel (local spec, fp32, CPU) loaded from an HF Llama directory."""
    from octomega.config import ModelConfig, ParallelConfig
    from octomega.convert import load_hf_into_model
    from octomega.config import load_hf_config
    from octomega.model import build_model

    cfg = load_hf_config(ModelConfig(hf_config=str(hf_dir)))
    model = build_model(cfg, ParallelConfig(tp=tp), dtype=torch.float32, on_gpu=False)
    load_hf_into_model(hf_dir, [model])
    return model, cfg


def rename_to_te(model) -> None:
    """Give a local-spec model the Transformer Engine spec's parameter names: TE fuses each layer norm into the
    next linear layer (self_attention.linear_qkv.layer_norm_weight, mlp.linear_fc1.layer_norm_weight). TE cannot
    be installed on CPU machines, so the TE naming is emulated on the same tensors."""
    for layer in model.decoder.layers:
        for norm, linear in ((layer.input_layernorm, layer.self_attention.linear_qkv),
                             (layer.pre_mlp_layernorm, layer.mlp.linear_fc1)):
            w = norm.weight
            del norm.weight
            linear.register_parameter("layer_norm_weight", w)


class RecordingReceiver:
    """A fake engine: records every bucket it is sent (and the begin/end calls)."""

    def __init__(self):
        self.buckets: list[list[tuple[str, torch.Tensor]]] = []
        self.calls: list[str] = []

    def begin(self):
        self.calls.append("begin")

    def load(self, bucket):
        self.calls.append("load")
        self.buckets.append([(n, t.clone()) for n, t in bucket])

    def end(self):
        self.calls.append("end")

    def sleep(self):
        self.calls.append("sleep")

    @property
    def stream(self) -> list[tuple[str, torch.Tensor]]:
        return [x for b in self.buckets for x in b]


def read_safetensors(d) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def write_prompts(path, n: int = 40) -> Path:
    rows = [{"id": f"p{i}", "question": f"Tom has {i} apples and buys {i + 1} more. How many apples?",
             "answer": str(2 * i + 1)} for i in range(n)]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


# ------------------------------------------------------------------------------ gradient-invariance workers

ROWS, WIDTH = 8, 16  # the synthetic mini-batch: 8 sequences of up to 16 tokens


def synthetic_batch(vocab: int, seed: int = 0):
    """A mini-batch of 8 rows: prompts of 3-5 tokens, responses of 2-9 tokens, old log-probs and advantages
    chosen so that some ratios are clipped, values and returns for the critic."""
    from octomega.rl.batch import build_batch

    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for _ in range(ROWS):
        p = int(torch.randint(3, 6, (1,), generator=g))
        r = int(torch.randint(2, 10, (1,), generator=g))
        ids = torch.randint(0, vocab, (p + r,), generator=g).tolist()
        prompts.append(ids[:p])
        responses.append(ids[p:])
    batch = build_batch(prompts, responses, [None] * ROWS, [i // 4 for i in range(ROWS)], pad_id=0)
    shape = batch["tokens"].shape
    batch["old_logp"] = -torch.rand(shape, generator=g) * 6
    batch["adv"] = torch.randn(shape, generator=g) * batch["mask"]
    batch["values"] = torch.randn(shape, generator=g) * 0.1
    batch["returns"] = torch.randn(shape, generator=g)
    batch["ref_logp"] = -torch.rand(shape, generator=g) * 6
    return batch


def _np(t: torch.Tensor):
    """Results cross process boundaries as numpy arrays: torch tensors would travel as shared-memory handles
    that vanish with the worker process."""
    return t.detach().cpu().numpy().copy()


def _grads(module):
    return _np(torch.cat([(p.main_grad if getattr(p, "main_grad", None) is not None else p.grad).detach().flatten()
                      .clone() for _, p in sorted(module.named_parameters())]))


def _build_runner(hf_dir, cfg_rl, kind: str):
    from octomega.config import ModelConfig
    from octomega.convert import load_hf_into_model
    from octomega.config import load_hf_config
    from octomega.rl.actor import ModelRunner, constant_scheduler, optim_config
    from octomega.rl.critic import attach_value_head, copy_body, critic_model_config
    from octomega.train.setup import build_ddp_model_and_optimizer

    model_cfg = load_hf_config(ModelConfig(hf_config=str(hf_dir)))
    dev = torch.device("cpu")
    if kind == "actor":
        ddp, opt = build_ddp_model_and_optimizer(model_cfg, cfg_rl.parallel, optim_config(cfg_rl.optim),
                                                 dtype=torch.float32, on_gpu=False, device=dev)
        load_hf_into_model(hf_dir, [ddp.module])
    else:
        actor, _ = build_ddp_model_and_optimizer(model_cfg, cfg_rl.parallel, optim_config(cfg_rl.optim),
                                                 dtype=torch.float32, on_gpu=False, device=dev)
        load_hf_into_model(hf_dir, [actor.module])
        ddp, opt = build_ddp_model_and_optimizer(critic_model_config(model_cfg), cfg_rl.parallel,
                                                 optim_config(cfg_rl.critic), dtype=torch.float32, on_gpu=False,
                                                 device=dev, post_process_hook=attach_value_head(0.5))
        copy_body(actor.module, ddp.module)
    sched = constant_scheduler(opt, 1e-3, 0.0, 0)
    return ModelRunner(kind, ddp, opt, sched, micro_batch_size=1, device=dev), model_cfg


def _loss_fn(kind, mode, kl: bool):
    from octomega.rl.actor import policy_loss_fn
    from octomega.rl.config import AlgoConfig
    from octomega.rl.critic import value_loss_fn

    algo = AlgoConfig(loss_agg_mode=mode, entropy_coef=0.01, kl_loss_coef=0.1 if kl else 0.0)
    return policy_loss_fn(algo, 0.7) if kind == "actor" else value_loss_fn(algo, 0.05)


def _reference_grads(runner, batch, kind, mode):
    """Plain autograd on the whole mini-batch in one forward (no schedule, no DP): the loss the update
    should follow, aggregated over all 8 rows at once."""
    from octomega.rl.batch import micro_batches

    runner.model.zero_grad_buffer()
    mb = micro_batches(batch, ROWS, runner.width(batch))[0]
    out = runner.model(mb["tokens"], mb["position_ids"], None)
    num, den, _ = _loss_fn(kind, mode, True)(mb, out)
    (num / den.float()).backward()
    return _grads(runner.module)


def grads_worker(rank, hf_dir, micro_sizes):
    """{(kind, mode, micro): gradient} after Megatron's schedule + finalize (DP all-reduce, 1/total scaling),
    plus the plain-autograd reference. World size = DP."""
    from octomega.rl import algos
    from octomega.rl.config import RLConfig
    from octomega.runtime import init_distributed

    init_distributed(tp=1, pp=1, seed=0)
    cfg = RLConfig()
    out = {}
    for kind in ("actor", "critic"):
        runner, model_cfg = _build_runner(hf_dir, cfg, kind)
        batch = synthetic_batch(model_cfg.vocab_size)
        for mode in algos.AGG_MODES:
            out[(kind, mode, "reference")] = _reference_grads(runner, batch, kind, mode)
            for micro in micro_sizes:
                runner.micro_batch_size = micro
                runner.model.zero_grad_buffer()
                results = runner._run(_micro(runner, batch, micro), _loss_fn(kind, mode, True), forward_only=False,
                                    width=runner.width(batch))
                out[(kind, mode, micro)] = _grads(runner.module)
                out[(kind, mode, micro, "n_micro")] = len(results)
    return out


def _micro(runner, batch, micro):
    from octomega.rl.batch import micro_batches

    return micro_batches(runner._dp_rows(batch), micro, runner.width(batch))


def dist2_worker(rank, hf_dir, micro_sizes):
    """Both 2-rank checks in one launch: DP=2 gradients, then TP=2 log-probs and stream."""
    return grads_worker(rank, hf_dir, micro_sizes), tp_worker(rank, hf_dir)


def tp_worker(rank, hf_dir):
    """TP=2: per-token log-probs and entropies equal TP=1's; the weight stream is gathered across TP."""
    from octomega.rl.actor import next_token_logprobs
    from octomega.rl.batch import micro_batches
    from octomega.rl.weight_stream import WeightSync
    from octomega.runtime import init_distributed

    out = {}
    for tp in (1, 2):
        init_distributed(tp=tp, pp=1, seed=0)
        model, cfg = megatron_from_hf(hf_dir, tp=tp)
        batch = synthetic_batch(cfg.vocab_size)
        mb = micro_batches(batch, ROWS, 16)[0]
        logits = model(mb["tokens"], mb["position_ids"], None)
        logp, ent = next_token_logprobs(logits, mb["tokens"], 0.7, entropy=True)
        (logp * mb["mask"]).sum().backward()  # gradients flow through the TP reductions
        out[tp] = {"logp": _np(logp * mb["mask"]), "entropy": _np(ent * mb["mask"]),
                   "norm_grad": _np(model.decoder.final_layernorm.weight.grad)}
        rec = RecordingReceiver()
        WeightSync(rec, bucket_bytes=20_000).push([model], cfg)
        out[tp]["stream"] = [(n, _np(t)) for n, t in rec.stream]
    return out


# ------------------------------------------------------------------------------------ end-to-end loop workers

def _register_test_rewards():
    import os
    import signal

    from octomega.rl.rewards import REWARDS, Score, register_reward

    if "digit" in REWARDS:
        return

    @register_reward("digit")
    def digit(text, gold, *, timeout_s=0.0):
        """A reward a random model earns sometimes: the response contains the digit 1."""
        ok = "1" in text
        return Score(1.0 if ok else -1.0, ok, ok)

    calls = {"n": 0}

    @register_reward("digit_then_sigterm")
    def digit_then_sigterm(text, gold, *, timeout_s=0.0):
        """The digit reward, and a SIGTERM to this process while grading step 2 (as Slurm would send)."""
        calls["n"] += 1
        if calls["n"] == 16 + 1:  # first response of the second step (16 per step)
            os.kill(os.getpid(), signal.SIGTERM)
        return digit(text, gold)


_register_test_rewards()


def loop_config(root, name: str, hf_dir, prompts, bench_dir, *overrides: str) -> dict:
    from octomega.config import apply_overrides, to_dict
    from octomega.rl.config import RLConfig

    cfg = RLConfig(name=name, run_dir=str(Path(root) / name))
    cfg.init.hf_path, cfg.data.prompts = str(hf_dir), str(prompts)
    apply_overrides(cfg, [
        "rollout.backend=hf", "rollout.template=qa", "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4",
        "rollout.response_stair=0:12,2:16", "train.mini_batch_prompts=2", "train.micro_batch_size=2",
        "train.steps=3", "reward.name=digit", "optim.lr=1e-3", "valid.benchmarks=tiny_arith",
        f"valid.data_dir={bench_dir}", "valid.interval=2", "checkpoint.save_interval=1", "logging.wandb=false",
        "checkpoint.keep_last=5", *overrides])
    return to_dict(cfg)


def run_loop(cfg_dict: dict) -> dict:
    from octomega.config import from_dict
    from octomega.rl.config import RLConfig
    from octomega.rl.loop import run_rl

    return run_rl(from_dict(RLConfig, json.loads(json.dumps(cfg_dict))))


def loop_worker(rank, cfgs: list[dict]) -> list[dict]:
    return [run_loop(c) for c in cfgs]


def metrics(run_dir, kind: str = "train") -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def write_bench(root) -> Path:
    d = Path(root) / "bench"
    (d / "tiny_arith").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"t{i}", "question": f"Ann has {i} pens and gets {i} more. How many pens?", "answer": str(2 * i),
             "level": "L1"} for i in range(6)]
    (d / "tiny_arith" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def vllm_loop_worker(rank, cfgs: list[dict], skip_later_syncs: list[bool]) -> list[dict]:
    """run_loop for each config; where skip_later_syncs says so, every weight push after the first is skipped (a
    deliberately broken sync, to show the drift metric sees it)."""
    from octomega.rl import weight_stream

    push, out = weight_stream.WeightSync.push, []
    for cfg, skip in zip(cfgs, skip_later_syncs):
        pushes = {"n": 0}

        def maybe_push(self, model_chunks, model_cfg=None, _skip=skip, _pushes=pushes):
            _pushes["n"] += 1
            return {} if _skip and _pushes["n"] > 1 else push(self, model_chunks, model_cfg)

        weight_stream.WeightSync.push = maybe_push
        try:
            out.append(run_loop(cfg))
        finally:
            weight_stream.WeightSync.push = push
    return out
