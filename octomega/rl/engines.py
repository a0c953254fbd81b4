"""The rollout engine of each backend, as an octomega.generate Generator plus how it gets new weights.

    megatron  the generator runs the LIVE actor (DDP-wrapped GPTModel) and shares its weights: nothing to sync.
    hf        a transformers LlamaForCausalLM beside the actor, refreshed from the weight stream (small models).
    vllm      a colocated vLLM engine that receives the weight stream, and sleeps while the actor trains where
              the platform supports sleep mode (CUDA GPUs; not vLLM's CPU build).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from octomega.config import ConfigError


@dataclass
class RolloutEngine:
    generator: object  # an octomega.generate.Generator
    sync: object | None = None  # a WeightSync for engines holding their own weights

    def before_generate(self, actor_module, model_cfg) -> dict:
        """Make the engine generate with the actor's current weights."""
        return self.sync.push([actor_module], model_cfg) if self.sync is not None else {}

    def after_generate(self) -> None:
        if self.sync is not None:
            self.sync.receiver.sleep()


def build_hf_llama(model_cfg, tokenizer, dtype: torch.dtype, device: torch.device):
    """A transformers Llama of the actor's shape (random weights: the weight stream overwrites them)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from octomega.convert.hf_io import hf_config_dict

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    d = hf_config_dict(model_cfg, dtype, ids)
    for k in ("architectures", "model_type", "torch_dtype", "transformers_version"):
        d.pop(k, None)
    config = LlamaConfig(**d)
    with torch.random.fork_rng(devices=[]):  # its throw-away random init must not move the run's RNG
        model = LlamaForCausalLM(config)
    return model.to(device=device, dtype=dtype).eval()


def make_engine(cfg, actor_ddp, model_cfg, tokenizer, device: torch.device, init_hf_dir: str | None) -> RolloutEngine:
    from octomega.rl.weight_stream import HFReceiver, VLLMReceiver, WeightSync

    backend = cfg.rollout.backend
    bucket = cfg.rollout.weight_bucket_mb * 2**20
    if backend == "megatron":
        from octomega.generate import get_generator

        try:
            gen = get_generator("megatron", actor_ddp, tokenizer=tokenizer)
        except ValueError as e:
            raise ConfigError(f"rollout.backend=megatron: {e}. Use rollout.backend=hf (small models) until the "
                              "megatron generation backend is installed") from e
        return RolloutEngine(gen)
    if backend == "hf":
        from octomega.generate.hf_backend import HFGenerator

        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        model = build_hf_llama(model_cfg, tokenizer, dtype, device)
        return RolloutEngine(HFGenerator(model, tokenizer=tokenizer, batch_size=cfg.rollout.hf_batch_size),
                             WeightSync(HFReceiver(model), bucket))
    if backend == "vllm":
        from octomega.generate.vllm_backend import VLLMGenerator, build_llm

        if init_hf_dir is None or not (Path(init_hf_dir) / "config.json").exists():
            raise ConfigError("rollout.backend=vllm boots vLLM from a Hugging Face directory: none was found")
        try:
            from vllm import SamplingParams
        except ImportError as e:
            raise ConfigError("rollout.backend=vllm needs vLLM: `make venv` installs its CPU build on machines "
                              "without a CUDA GPU; on GPU nodes pip install -e '.[vllm]'") from e
        r = cfg.rollout
        # One engine per training rank, in this process ("external_launcher": vLLM joins the torch.distributed
        # world the trainer started). Its dtype is the actor's, so that fp32 runs give the trainer's logprobs.
        llm = build_llm(str(init_hf_dir), tensor_parallel_size=r.vllm_tensor_parallel_size or cfg.parallel.tp,
                        dtype="float32" if device.type == "cpu" else "bfloat16", seed=r.seed,
                        gpu_memory_utilization=r.vllm_gpu_memory_utilization, kv_cache_mb=r.vllm_kv_cache_mb,
                        sleep_mode=True, distributed_executor_backend="external_launcher",
                        enable_prefix_caching=True)
        receiver = VLLMReceiver(llm, r.vllm_sleep_level if llm.octomega_sleep_mode else None)
        return RolloutEngine(VLLMGenerator(None, tokenizer=tokenizer, engine=llm, sampling_params_cls=SamplingParams),
                             WeightSync(receiver, bucket))
    raise ConfigError(f"rollout.backend={backend!r}: choose megatron, hf or vllm")
