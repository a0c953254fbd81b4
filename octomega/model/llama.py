"""The Llama family (GQA, SwiGLU, RMSNorm, RoPE with Llama-3 scaling) as Megatron-Core GPTModels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig

from octomega.config import ConfigError, ModelConfig, ParallelConfig, RopeScaling, load_hf_config
from octomega.model.attention import SDPAttention


def te_available() -> bool:
    try:
        import transformer_engine  # noqa: F401

        return True
    except Exception:  # ImportError, or a broken CUDA install that fails at import
        return False


def head_dim(model: ModelConfig) -> int:
    return model.head_dim or model.hidden_size // model.num_attention_heads


def padded_vocab_size(model: ModelConfig, tp: int) -> int:
    multiple = model.make_vocab_size_divisible_by * tp
    return int(math.ceil(model.vocab_size / multiple) * multiple)


def resolve_layer_spec(model: ModelConfig, on_gpu: bool) -> str:
    """'te' or 'local'. FP8 requests that cannot be honoured are errors, never a silent bf16 run."""
    spec = model.layer_spec
    if spec == "auto":
        spec = "te" if on_gpu and te_available() else "local"
    if spec == "te" and not te_available():
        raise ConfigError("model.layer_spec=te: transformer_engine is not importable (pip install octomega[gpu])")
    if spec == "te" and not on_gpu:
        raise ConfigError("model.layer_spec=te needs a GPU; use model.layer_spec=local on CPU")
    if model.fp8 != "none":
        if spec != "te":
            raise ConfigError(f"model.fp8={model.fp8} needs the Transformer Engine layer spec (now: {spec}); "
                              "install transformer-engine and set model.layer_spec=te or auto, or model.fp8=none")
        major, _ = torch.cuda.get_device_capability()
        if major < 9:
            raise ConfigError(f"model.fp8={model.fp8} needs a Hopper-or-newer GPU (compute capability >= 9.0, "
                              f"found {major}.x); set model.fp8=none")
    if model.rope_fusion and spec != "te":
        raise ConfigError(f"model.rope_fusion needs the Transformer Engine layer spec (now: {spec}): its fused RoPE is "
                          "TE's kernel; set model.rope_fusion=false, or model.compile=layers to fuse RoPE on the local "
                          "spec")
    if model.attention == "unfused" and spec == "te":
        raise ConfigError("model.attention=unfused applies to the local spec only")
    if model.cross_entropy == "te" and spec != "te":
        raise ConfigError(f"model.cross_entropy=te needs Transformer Engine and its layer spec (now: {spec}); "
                          "use model.cross_entropy=chunked or megatron")
    if model.cross_entropy == "native" and not on_gpu:
        raise ConfigError("model.cross_entropy=native is Megatron's GPU kernel path; on CPU use megatron or chunked")
    return spec


def transformer_config(model: ModelConfig, parallel: ParallelConfig, *, dtype: torch.dtype,
                       on_gpu: bool) -> TransformerConfig:
    bf16 = dtype == torch.bfloat16
    kwargs = {"cross_entropy_loss_fusion": False}
    if model.recompute == "selective":
        kwargs.update(recompute_granularity="selective")
    elif model.recompute == "full":
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if model.fp8 != "none":
        kwargs.update(fp8=model.fp8, fp8_recipe="tensorwise" if model.fp8_recipe == "tensorwise" else model.fp8_recipe)
    if model.cross_entropy in ("native", "te"):
        if model.cross_entropy == "native" and not bf16:
            # Its backward casts the logits' gradient to bf16 whatever the logits' dtype.
            raise ConfigError("model.cross_entropy=native works in bf16 only (train.precision=bf16), "
                              "use megatron or chunked")
        kwargs.update(cross_entropy_loss_fusion=True, cross_entropy_fusion_impl=model.cross_entropy)
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=head_dim(model),
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_eps,
        gated_linear_unit=True,  # SwiGLU: linear_fc1 holds [gate; up]
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=model.init_std,
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        sequence_parallel=parallel.sequence_parallel and parallel.tp > 1,
        bf16=bf16,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        autocast_dtype=dtype,
        # CPU: initialise full tensors on the CPU generator, then shard, so TP shards equal the TP=1 weights.
        use_cpu_initialization=not on_gpu,
        # Fused kernels exist only on GPUs (and some only with TE/Apex).
        masked_softmax_fusion=False,
        bias_activation_fusion=on_gpu,
        bias_dropout_fusion=on_gpu,
        gradient_accumulation_fusion=False,
        apply_rope_fusion=model.rope_fusion,  # resolve_layer_spec refused it without the TE spec
        persist_layer_norm=False,
        **kwargs,
    )


def loss_processor(model: ModelConfig):
    """The GPTModel `output_processor` that computes the training loss, or None for Megatron's own
    (model.cross_entropy megatron, native, te: chosen in transformer_config)."""
    if model.cross_entropy != "chunked":
        return None
    from octomega.model.linear_ce import ChunkedLossProcessor

    return ChunkedLossProcessor(model.vocab_size, model.ce_chunk_tokens)


def compile_layers(gpt: GPTModel, model: ModelConfig) -> None:
    """model.compile=layers: torch.compile every transformer layer of this pipeline stage in place (parameter names,
    checkpoints and Megatron DDP's gradient hooks are unchanged). One graph serves all layers: dynamo guards on
    the code, and layers differ only in their parameters. Training shapes are fixed (seq_length, micro-batch), so
    nothing recompiles after the first micro-batch. Selective recompute (Megatron's CheckpointFunction) splits each
    layer's graph around core attention: it still runs, with the attention eager."""
    if model.compile == "none":
        return
    if gpt.octomega_layer_spec == "te":
        raise ConfigError("model.compile=layers is for the local spec; the Transformer Engine spec has fused "
                          "norm/RoPE/SwiGLU kernels of its own: set model.compile=none or model.layer_spec=local")
    for layer in gpt.decoder.layers:
        layer.compile(backend=model.compile_backend)


def layer_spec(model: ModelConfig, spec: str):
    if spec == "te":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    s = get_gpt_layer_local_spec(normalization="RMSNorm")
    if model.attention == "sdpa":
        s.submodules.self_attention.submodules.core_attention = SDPAttention
    return s


def llama3_inv_freq(dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Inverse RoPE frequencies exactly as transformers computes them (all four Llama-3 scaling values)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if scaling is None:
        return inv_freq
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


# Logit of the vocabulary padding rows. Finite (unlike -inf) so that entropies and log-probabilities stay finite;
# exp(-1e4 - max logit) underflows to exactly 0 in fp32 and bf16, so the padding never takes probability mass.
PAD_LOGIT = -1.0e4


def _padded_logits_hook(vocab: int, padded: int):
    """A forward hook on the output layer that sets the logits of padded vocabulary ids to PAD_LOGIT.

    Without it the zero padding rows give logits of 0, which add (padded - vocab) * e^0 to the softmax
    denominator: the loss would differ from transformers' and samplers could draw ids the tokenizer lacks.
    The output is vocabulary-parallel ([s, b, padded / TP] on TP rank r covers ids r * padded / TP ...) unless
    it was gathered ([..., padded]). In place on the padded columns only: matmul's backward does not need its
    output, and the filled entries get zero gradient."""

    def hook(module, args, output):
        logits = output[0] if isinstance(output, tuple) else output
        n = logits.shape[-1]
        start = 0 if n == padded else parallel_state.get_tensor_model_parallel_rank() * n
        first = max(vocab - start, 0)
        if first < n:
            logits[..., first:].fill_(PAD_LOGIT)
        return output

    return hook


def build_model(model: ModelConfig, parallel: ParallelConfig, *, dtype: torch.dtype, on_gpu: bool,
                device: torch.device | None = None, init_weights: bool = True) -> GPTModel:
    """Build this rank's pipeline stage of the model (no virtual pipeline stages).

    init_weights=False leaves the parameters uninitialised (torch.empty): for callers that load every weight
    right after (checkpoint conversion), which skips minutes of random init at 8B.
    Logits of the padding rows Megatron adds to the vocabulary (a multiple of 128 x TP) are set to PAD_LOGIT,
    so the loss and sampling see exactly the tokenizer's vocabulary, as transformers does.
    """
    model = load_hf_config(model)
    spec_name = resolve_layer_spec(model, on_gpu)
    if parallel.sequence_parallel and parallel.tp > 1 and spec_name != "te":
        # Megatron's torch-norm fallback of the local spec asserts on it ("not supported by torch LayerNorm").
        raise ConfigError("parallel.sequence_parallel needs the Transformer Engine layer spec (model.layer_spec=te "
                          "on a GPU with transformer-engine installed); the local spec's RMSNorm cannot split the "
                          "sequence: set parallel.sequence_parallel=false")
    config = transformer_config(model, parallel, dtype=dtype, on_gpu=on_gpu)
    config.perform_initialization = init_weights
    gpt = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(model, spec_name),
        vocab_size=padded_vocab_size(model, parallel.tp),
        max_sequence_length=model.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=model.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(model.rope_theta),
        rope_scaling=False,
    )
    # Megatron-Core's RotaryEmbedding takes only the scaling factor and hard-codes the other three Llama-3
    # values; its inv_freq is a plain attribute (not in the state dict), so set the exact frequencies here.
    if hasattr(gpt, "rotary_pos_emb"):
        gpt.rotary_pos_emb.inv_freq = llama3_inv_freq(head_dim(model), model.rope_theta, model.rope_scaling)
    if gpt.post_process and padded_vocab_size(model, parallel.tp) > model.vocab_size:
        gpt.output_layer.register_forward_hook(_padded_logits_hook(model.vocab_size,
                                                                   padded_vocab_size(model, parallel.tp)))
    # Megatron's layers take params_dtype, but the local spec's norm (WrappedTorchNorm = torch.nn.RMSNorm) is built in
    # fp32. In bf16 that left fp32 norm weights beside bf16 activations: torch's RMSNorm then falls back from its
    # fused kernel ("Mismatch dtype between input and weight"), and Megatron's Float16Optimizer keeps such params
    # outside its bf16 groups, so saving its state failed ("Param id N does not match any model sharded param").
    # Megatron-LM's Float16Module casts the whole model; cast what was built in another dtype.
    for param in gpt.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    gpt.octomega_layer_spec = spec_name
    gpt.octomega_model_config = model
    if device is not None and device.type == "cuda":
        gpt = gpt.to(device)
    return gpt
