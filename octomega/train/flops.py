"""FLOPs, MFU and theoretical memory, by Megatron's own formulas (megatron.training ships in the wheel).

We call `megatron.training.training.num_floating_point_operations` and `megatron.training.
theoretical_memory_usage` with a Megatron-LM style `args` namespace built from our config, rather than copying
the formulas: when Megatron changes them, our numbers follow.

FLOPs per global batch (dense Llama, BSHD): 3 (fwd+bwd) x 2 (FMA) x tokens x [ layers x (QKV/out projections
+ causal-halved attention + SwiGLU MLP) + logits ]. MFU = achieved FLOP/s / peak FLOP/s of the accelerator.
"""

from __future__ import annotations

from types import SimpleNamespace

from octomega.config import ModelConfig, RunConfig
from octomega.model.llama import head_dim, padded_vocab_size

# Dense bf16 peak (no sparsity) of the accelerators we run on, in FLOP/s.
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "B200": 2250e12, "GH200": 989.4e12}


def megatron_args(model: ModelConfig, cfg: RunConfig | None = None, *, seq_length: int | None = None,
                  tp: int = 1, pp: int = 1, dp: int = 1) -> SimpleNamespace:
    """A Megatron-LM `args` namespace with the fields its FLOP and memory formulas read."""
    if cfg is not None:
        seq_length = cfg.train.seq_length
        tp, pp = cfg.parallel.tp, cfg.parallel.pp
        dp = cfg.parallel.dp or 1
    return SimpleNamespace(
        num_layers=model.num_layers, hidden_size=model.hidden_size, ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads, num_query_groups=model.num_query_groups,
        group_query_attention=model.num_query_groups != model.num_attention_heads, kv_channels=head_dim(model),
        seq_length=seq_length, padded_vocab_size=padded_vocab_size(model, tp), swiglu=True,
        untie_embeddings_and_output_weights=not model.tie_embeddings, add_bias_linear=False,
        normalization="RMSNorm",
        # Not used by Llama: MoE, MLA, MTP, hybrid/linear attention.
        num_experts=None, moe_layer_freq=1, moe_router_topk=1, moe_ffn_hidden_size=None,
        moe_shared_expert_intermediate_size=None, moe_latent_size=None, mtp_num_layers=None,
        multi_latent_attention=False, q_lora_rank=None, kv_lora_rank=None, qk_head_dim=None,
        qk_pos_emb_head_dim=None, v_head_dim=None, experimental_attention_variant=None, linear_attention_freq=None,
        hybrid_layer_pattern=None, hybrid_override_pattern=None, is_hybrid_model=False, attention_output_gate=False,
        linear_conv_kernel_dim=None, linear_key_head_dim=None, linear_num_key_heads=None,
        linear_num_value_heads=None, linear_value_head_dim=None, mamba_head_dim=None, mamba_num_groups=None,
        mamba_num_heads=None, mamba_state_dim=None, expert_model_parallel_size=1, expert_tensor_parallel_size=1,
        # Parallel layout and memory policy.
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, data_parallel_size=dp,
        world_size=tp * pp * dp, virtual_pipeline_model_parallel_size=None,
        sequence_parallel=bool(cfg and cfg.parallel.sequence_parallel and tp > 1),
        use_distributed_optimizer=bool(cfg and cfg.parallel.distributed_optimizer),
        recompute_granularity=None if cfg is None or cfg.model.recompute == "none" else cfg.model.recompute,
        micro_batch_size=cfg.train.micro_batch_size if cfg else 1,
    )


def flops_per_batch(model: ModelConfig, seq_length: int, sequences: int) -> float:
    """Model FLOPs (forward + backward) for `sequences` sequences of `seq_length` tokens."""
    from megatron.training.training import num_floating_point_operations

    return float(num_floating_point_operations(megatron_args(model, seq_length=seq_length), sequences))


def mfu(flops_per_second_per_gpu: float, peak: float) -> float:
    return flops_per_second_per_gpu / peak


def detect_peak_flops() -> float | None:
    """Dense bf16 peak of this process's GPU, or None (CPU, unknown GPU): MFU is then not reported."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def theoretical_memory_gb(cfg: RunConfig, num_microbatches: int) -> dict:
    """Megatron's theoretical memory per GPU (weights+optimizer, activations) for this layout, in GiB.

    Megatron's formula assumes bf16 training with fp32 master weights and Adam (18 bytes/param, 6 + 12/dp with
    the distributed optimizer) and counts the most loaded (first) pipeline stage.
    """
    import contextlib
    import io

    from megatron.training import theoretical_memory_usage as tmu

    args = megatron_args(cfg.model, cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        weights = tmu.compute_weight_and_optimizer_memory(args)
        if args.sequence_parallel and args.recompute_granularity == "selective":
            act = tmu.compute_activation_memory(args, num_microbatches=num_microbatches)
        else:
            act = tmu.compute_activation_memory_without_sp(args, num_microbatches=num_microbatches)
    gib = 1024 ** 3
    return {"weights_and_optimizer_gib": weights / gib, "activations_gib": act / gib,
            "total_gib": (weights + act) / gib}
