"""Typed run configuration: one dataclass per component, `key.sub=value` overrides, validation, dry-run text.

Every field carries its unit. A recipe (recipes/) is a function returning a full `RunConfig`; the command line
edits it with overrides such as `optim.lr=3e-5 parallel.tp=2 train.train_tokens=2e9`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A configuration the run cannot honour. The message names the field and what to do."""


@dataclass(kw_only=True)
class RopeScaling:
    """Llama-3 rope scaling, applied exactly as transformers' `_compute_llama3_parameters` does."""

    factor: float = 32.0  # ratio of the extended to the original context
    low_freq_factor: float = 1.0  # wavelengths longer than original/low_freq_factor are divided by `factor`
    high_freq_factor: float = 4.0  # wavelengths shorter than original/high_freq_factor are kept
    original_max_position_embeddings: int = 8192  # tokens: the context the base model was trained at


@dataclass(kw_only=True)
class ModelConfig:
    """A Llama-family decoder (GQA, SwiGLU, RMSNorm, RoPE) built as Megatron-Core's GPTModel."""

    name: str = "tiny"  # label only
    hf_config: str | None = None  # path to an HF config.json (or its directory); its shape replaces the fields below
    num_layers: int = 4
    hidden_size: int = 128
    ffn_hidden_size: int = 512  # SwiGLU inner width (per gate/up projection)
    num_attention_heads: int = 4
    num_query_groups: int = 2  # key/value heads (GQA); = num_attention_heads for MHA
    head_dim: int | None = None  # channels per head; None = hidden_size / num_attention_heads
    vocab_size: int = 512  # tokenizer vocabulary (ids); padded for TP when the model is built
    make_vocab_size_divisible_by: int = 128  # padding multiple (times TP) of the embedding rows
    max_position_embeddings: int = 8192  # tokens
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None  # None = no Llama-3 scaling
    tie_embeddings: bool = True  # output layer shares the input embedding (Llama-3.2 1B/3B)
    norm_eps: float = 1e-5
    init_std: float = 0.02  # std of the normal init of fresh weights
    layer_spec: Literal["auto", "te", "local"] = "auto"  # auto = Transformer Engine on a GPU when importable, else local
    attention: Literal["sdpa", "unfused"] = "sdpa"  # core attention of the local spec
    fp8: Literal["none", "hybrid", "e4m3"] = "none"  # needs TE, the TE spec and a Hopper-or-newer GPU
    fp8_recipe: Literal["delayed", "tensorwise", "blockwise"] = "delayed"
    recompute: Literal["none", "selective", "full"] = "none"  # activation recomputation policy
    # Pre-training loss (stable and decay stages; RL takes log-probs from the logits). megatron:
    # tensor_parallel.vocab_parallel_cross_entropy (an fp32 copy of the whole [seq, vocab] logits); native: Megatron's
    # fused version of it (GPU, bf16); te: Transformer Engine's parallel cross entropy on the bf16 logits (TE, GPU);
    # chunked: octomega.model.linear_ce, the output layer and the loss in chunks of ce_chunk_tokens tokens (no
    # whole-sequence logits at all). bench/NOTES.md measures them.
    cross_entropy: Literal["megatron", "native", "te", "chunked"] = "megatron"
    ce_chunk_tokens: int = 1024  # tokens per chunk of cross_entropy=chunked
    # layers: torch.compile each transformer layer of the local spec in training (fuses RMSNorm, RoPE, SwiGLU and the
    # residual adds, as inductor does for transformers); none: eager. The TE spec brings its own fused kernels.
    compile: Literal["none", "layers"] = "none"
    compile_backend: str = "inductor"  # torch.compile backend of compile=layers (aot_eager: tests, no code generation)
    # TE's fused RoPE kernel (Megatron's apply_rope_fusion; on by default in Megatron-LM). TE spec only. Off until
    # bench/NOTES.md has measured it.
    rope_fusion: bool = False


@dataclass(kw_only=True)
class ParallelConfig:
    tp: int = 1  # tensor-parallel ranks
    pp: int = 1  # pipeline-parallel ranks
    dp: int | None = None  # data-parallel ranks; None = world_size / (tp * pp)
    distributed_optimizer: bool = False  # shard Adam state and fp32 master weights across DP ranks (ZeRO-1)
    sequence_parallel: bool = False  # split norm/dropout activations along the sequence across TP ranks


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW and its learning-rate schedule. The scheduler counts optimizer steps (one per global batch)."""

    lr: float | None = 1e-3  # peak LR; None (decay branches only) = the LR the stable checkpoint ran at
    min_lr: float | None = None  # decay target; None = min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # decay target as a fraction of the peak when min_lr is None
    warmup_tokens: int = 0  # tokens of linear warm-up from 0 (stable stage); docs/recipe.md: none
    decay_style: Literal["cosine", "linear", "exponential", "minus_sqrt"] = "cosine"  # decay stage shape
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0  # global L2 norm; 0 disables


@dataclass(kw_only=True)
class NonFiniteSteps:
    """What a step whose loss or gradient norm is not finite (NaN, inf) does. Its update is never applied and no
    checkpoint is saved for it (octomega/train/run.py). Pre-training's `train` section and RL's share these fields."""

    # stop: end the run at that step, status "diverged", exit status 3. skip: go on without that step's update (its
    # batch is used up and the LR schedule moves on, as for any step), up to max_skipped_steps, then stop as stop does
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = 5  # skip: non-finite steps a run may skip in all (resumes included)


@dataclass(kw_only=True)
class TrainConfig(NonFiniteSteps):
    stage: Literal["stable", "decay"] = "stable"  # stable = constant LR after warm-up; decay = LR to min over budget
    train_tokens: int = 1_000_000  # token budget of this stage; rounded UP to whole optimizer steps
    seq_length: int = 256  # tokens per sequence
    global_batch_size: int = 16  # sequences per optimizer step (all DP ranks, all micro-batches)
    micro_batch_size: int = 4  # sequences per forward/backward on one DP rank
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 (fp32 master weights) on GPU, fp32 on CPU
    seed: int = 1234
    valid_interval: int = 50  # optimizer steps between validation passes; 0 = only at the end
    valid_batches: int = 4  # micro-batches per validation set per pass
    exit_after_steps: int | None = None  # stop (with a checkpoint) after this many steps of this process
    # CPU runs: "pinned" = the same floating-point results on every x86-64 machine with AVX2 (ATen's AVX2
    # kernels, MKL's vendor-neutral code path; slower), "native" = the fastest kernels this CPU has.
    # octomega/numerics.py; the tiny recipes pin. No effect on GPUs.
    cpu_numerics: Literal["native", "pinned"] = "native"


@dataclass(kw_only=True)
class DataConfig:
    """Megatron .bin/.idx corpora. Sequences are packed across documents, separated by EOD tokens."""

    blend: str | None = None  # blend JSON written by `python -m data_prep.mix`
    valid_blend: str | None = None  # blend whose "valid" sets are used; None = `blend`. Keep one across stages
    tokenizer: str | None = None  # HF tokenizer directory (vocabulary size and EOD id are read from it)
    mock: bool = False  # random tokens instead of a blend (throughput benchmarks)
    eod_mask_loss: bool = False  # no loss on predicting the token after an EOD
    reset_position_ids: bool = False  # restart positions at each document (refused: see octomega/train/data.py)
    reset_attention_mask: bool = False  # block attention across documents (refused: needs a packed THD format)
    num_workers: int = 0  # DataLoader worker processes


@dataclass(kw_only=True)
class InitConfig:
    """Where the weights of a fresh run come from (a resume ignores this and loads its own checkpoint)."""

    from_checkpoint: str | None = None  # a run's checkpoint directory (decay branches: the stable run's)
    iteration: int | None = None  # which iteration of from_checkpoint; None = its latest complete one
    reset_optimizer: bool = False  # False: a branch keeps Adam moments; True: fresh optimizer state
    hf_path: str | None = None  # a Hugging Face Llama directory to start from


@dataclass(kw_only=True)
class CheckpointConfig:
    save_interval: int = 0  # optimizer steps between checkpoints; 0 = only at the end and on SIGTERM/SIGUSR1
    keep_last: int = 2  # complete checkpoints kept; older ones are deleted after a new one completes
    resume: bool = True  # continue from the run directory's latest complete checkpoint when there is one
    allow_changes: list[str] = field(default_factory=list)  # resume despite changes: seq_length, blend, global_batch_size


@dataclass(kw_only=True)
class LoggingConfig:
    log_interval: int = 10  # optimizer steps between console/JSONL lines
    wandb: bool = True  # offline unless WANDB_MODE / WANDB_API_KEY say otherwise
    wandb_project: str = "octomega"
    wandb_mode: Literal["auto", "offline", "online", "disabled"] = "auto"


class NamedRun:
    """What every run config (RunConfig, RLConfig) has: a `name` and a `run_dir` field, and the directory they give."""

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or f"runs/{self.name}"


@dataclass(kw_only=True)
class RunConfig(NamedRun):
    name: str = "run"
    run_dir: str | None = None  # None = runs/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    init: InitConfig = field(default_factory=InitConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------------------------- overrides


def _first_that_fits(members: tuple, parse, path: str) -> Any:
    """parse(member) for the members of a Union other than None, the first that does not raise ConfigError; else
    the first member's error."""
    errors = []
    for member in members:
        if member is type(None):
            continue
        try:
            return parse(member)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{path}: null is not allowed")


def _coerce(text: str, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        return _first_that_fits(args, lambda member: _coerce(text, member, path), path)
    if origin is Literal:
        if text not in args:
            raise ConfigError(f"{path}={text!r}: expected one of {', '.join(map(str, args))}")
        return text
    if origin is list:
        return [s for s in text.split(",") if s] if text else []
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{path}={text!r}: expected true or false")
    if tp is int:
        try:
            value = float(text) if any(c in text for c in ".eE") else int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{path}={text!r}: expected an integer") from None
        if not math.isfinite(value) or value != int(value):
            raise ConfigError(f"{path}={text!r}: expected an integer")
        return int(value)
    if tp is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{path}={text!r}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{path}={text!r}: expected a finite number")
        return value
    if tp is str:
        return text
    if dataclasses.is_dataclass(tp):
        if text.lower() == "default":
            return tp()
        raise ConfigError(f"{path}: set its fields ({path}.<field>=...), or 'none'/'default'")
    raise ConfigError(f"{path}: cannot parse values of type {tp}")


def apply_override(cfg: Any, override: str) -> None:
    """Apply one `a.b.c=value` override in place; unknown keys and wrong types raise ConfigError."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key.sub=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    obj = cfg
    for i, name in enumerate(parts):
        hints = typing.get_type_hints(type(obj))
        if name not in hints:
            where = ".".join(parts[:i]) or "the run config"
            known = ", ".join(f.name for f in dataclasses.fields(obj))
            raise ConfigError(f"unknown key {key!r}: {where} has no field {name!r} (fields: {known})")
        if i == len(parts) - 1:
            setattr(obj, name, _coerce(text.strip(), hints[name], key))
            return
        child = getattr(obj, name)
        if child is None:  # e.g. model.rope_scaling.factor=8 when scaling was off: start from its defaults
            tp = next(a for a in typing.get_args(hints[name]) if a is not type(None))
            child = tp()
            setattr(obj, name, child)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"unknown key {key!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        obj = child


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    for o in overrides:
        apply_override(cfg, o)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


_JSON_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, tp: Any, path: str) -> Any:
    """`value` read from a saved config JSON, checked against the field's type as strictly as an override is
    (a string is not an integer: "50" for an int field is an error), and converted where JSON has no such type
    (a list for a tuple field)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _first_that_fits(args, lambda member: _typed(value, member, path), path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}={value!r}: expected one of {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r}: expected a list")
        items = [_typed(v, args[0] if origin is list or (len(args) == 2 and args[1] is Ellipsis) else args[i],
                        f"{path}[{i}]") if args else v for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected an object")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected an object with the fields of {tp.__name__}")
        return from_dict(tp, value, f"{path}.")
    if tp in _JSON_KIND:
        ok = (isinstance(value, bool) if tp is bool else
              isinstance(value, str) if tp is str else
              isinstance(value, (int, float)) and not isinstance(value, bool) and (
                  tp is float or float(value).is_integer()))
        if not ok:
            got = f"{type(value).__name__} {value!r}" if not isinstance(value, str) else f"the string {value!r}"
            raise ConfigError(f"{path}: expected {_JSON_KIND[tp]}, got {got}")
        return int(value) if tp is int else float(value) if tp is float else value
    return value


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Rebuild a config dataclass from `to_dict` output (a saved config.json, a checkpoint's config), with every
    value checked against its field's type (ConfigError naming the field otherwise)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path.rstrip('.') or 'the config'}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        if k not in hints:
            raise ConfigError(f"unknown key {path + k!r} in saved config")
        kwargs[k] = _typed(v, hints[k], path + k)
    return cls(**kwargs)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


# ---------------------------------------------------------------------------------------- HF config.json


def read_json_object(path: Path, what: str, where: str | None = None) -> dict:
    """The JSON object in file `path`, which should be `what` (for the messages); `where` names the file in them
    (default: its path). A ConfigError naming the file for an empty file, text that is not UTF-8 or not JSON (with
    line and column), or JSON that is not an object."""
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}); expected {what}") from None
    if not text.strip():
        raise ConfigError(f"{where} is empty: expected {what}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object ({what}), got {type(data).__name__}")
    return data


def load_hf_config(model: ModelConfig) -> ModelConfig:
    """Return a copy of `model` whose shape comes from `model.hf_config` (an HF Llama config.json or its dir)."""
    if not model.hf_config:
        return model
    path = Path(model.hf_config)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ConfigError(f"model.hf_config: {path} does not exist")
    hf = read_json_object(path, "a Hugging Face config.json")
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "llama" or (archs and "LlamaForCausalLM" not in archs):
        raise ConfigError(f"{path}: model_type {hf.get('model_type')!r}, architectures {archs} is not a Llama "
                          "causal LM (octomega builds and converts LlamaForCausalLM only)")
    # Features LlamaConfig has but octomega's GPTModel does not build: refuse rather than convert wrongly.
    unsupported = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu"}
    for key, ok in unsupported.items():
        if key in hf and hf[key] not in (ok, None):
            raise ConfigError(f"{path}: {key}={hf[key]!r} is not supported (octomega's Llama needs {key}={ok!r})")

    def need(key: str):
        if hf.get(key) is None:
            raise ConfigError(f"{path}: field {key!r} is missing; a Llama config.json needs num_hidden_layers, "
                              "hidden_size, intermediate_size, num_attention_heads and vocab_size")
        return hf[key]

    m = copy.deepcopy(model)
    m.num_layers = need("num_hidden_layers")
    m.hidden_size = need("hidden_size")
    m.ffn_hidden_size = need("intermediate_size")
    m.num_attention_heads = need("num_attention_heads")
    m.num_query_groups = hf.get("num_key_value_heads") or m.num_attention_heads
    m.head_dim = hf.get("head_dim")
    m.vocab_size = need("vocab_size")
    # Keys a config.json may omit take LlamaConfig's defaults (not octomega's): 2048, 1e-6, 10000, untied.
    m.max_position_embeddings = hf.get("max_position_embeddings", 2048)
    m.norm_eps = hf.get("rms_norm_eps", 1e-6)
    m.tie_embeddings = bool(hf.get("tie_word_embeddings", False))
    m.init_std = hf.get("initializer_range", m.init_std)
    rope_params = hf.get("rope_parameters") or {}  # transformers >= 5 folds theta and scaling in here
    m.rope_theta = float(hf.get("rope_theta") or rope_params.get("rope_theta") or 10000.0)
    # transformers 5 lets a top-level rope_scaling override rope_parameters; do the same.
    scaling = hf.get("rope_scaling") or rope_params or None
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if (scaling or {}).get("partial_rotary_factor", 1.0) != 1.0 or hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"{path}: partial_rotary_factor != 1 is not supported")
    if kind not in (None, "default", "llama3"):
        raise ConfigError(f"{path}: rope_scaling type {kind!r} unsupported (llama3 or none)")
    if kind == "llama3":
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                   if k not in scaling]
        if missing:
            raise ConfigError(f"{path}: llama3 rope_scaling lacks {missing}")
        m.rope_scaling = RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    else:
        m.rope_scaling = None
    m.hf_config = None
    return m


# ---------------------------------------------------------------------------------------------- validation


def check_layout(p: ParallelConfig, world_size: int | None = None) -> int:
    """Check tp x pp x dp against the world size (None or 0: tp x pp x (parallel.dp or 1)); fills and returns
    parallel.dp. Pre-training (validate) and RL (octomega.rl.config.validate_rl) both check their layout here."""
    for name in ("tp", "pp"):
        if getattr(p, name) < 1:
            raise ConfigError(f"parallel.{name}={getattr(p, name)}: must be >= 1")
    if not world_size:
        world_size = p.tp * p.pp * (p.dp or 1)
    if world_size % (p.tp * p.pp):
        raise ConfigError(f"world size {world_size} is not divisible by parallel.tp x parallel.pp = {p.tp} x {p.pp}")
    dp = world_size // (p.tp * p.pp)
    if p.dp is not None and p.dp != dp:
        raise ConfigError(f"parallel.dp={p.dp} but {world_size} processes / (tp {p.tp} x pp {p.pp}) = {dp}; "
                          "leave parallel.dp unset or launch tp*pp*dp processes")
    p.dp = dp
    return dp


def check_document_policy(data: DataConfig) -> None:
    """Refuse per-document attention and positions: octomega trains on packed sequences without them
    (octomega/train/data.py says why)."""
    if data.reset_attention_mask:
        raise ConfigError("data.reset_attention_mask=true: the causal attention kernels (SDPA is_causal, TE causal) "
                          "cannot block attention across packed documents without a THD packed format, which "
                          "octomega does not build. Set data.reset_attention_mask=false.")
    if data.reset_position_ids:
        raise ConfigError("data.reset_position_ids=true: GPTModel's rotary embedding ignores position_ids, so "
                          "positions cannot restart per document. Set data.reset_position_ids=false.")


def _check_finite(section: Any, path: str = "") -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{path}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}{f.name}={value}: must be a finite number")


def check_numbers(cfg: Any) -> None:
    """Every float of a run config (RunConfig, RLConfig; every section) is finite: NaN and inf are refused, naming
    the field (a recipe or a saved config JSON may hold them; overrides are refused when parsed). And the non-finite
    step policy's count (NonFiniteSteps) is >= 0. Pre-training's validate and RL's validate_rl call it."""
    _check_finite(cfg)
    if cfg.train.max_skipped_steps < 0:
        raise ConfigError(f"train.max_skipped_steps={cfg.train.max_skipped_steps}: must be >= 0")


def check_optimizer(section: Any, path: str) -> None:
    """The ranges an AdamW section must keep (pre-training's optim, RL's optim and critic): a positive LR, a
    non-negative weight decay and clip, betas in [0, 1), a positive epsilon. One ConfigError naming the field."""
    def need(name: str, ok, what: str) -> None:
        value = getattr(section, name, None)
        if value is not None and not ok(value):
            raise ConfigError(f"{path}.{name}={value!r}: must be {what}")

    need("lr", lambda v: v > 0, "> 0")
    need("min_lr", lambda v: v >= 0, ">= 0")
    need("min_lr_ratio", lambda v: 0 <= v <= 1, "between 0 and 1")
    need("weight_decay", lambda v: v >= 0, ">= 0")
    need("adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)")
    need("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)")
    need("adam_eps", lambda v: v > 0, "> 0")
    need("clip_grad", lambda v: v >= 0, ">= 0 (0 turns clipping off)")
    need("warmup_tokens", lambda v: v >= 0, ">= 0")
    need("warmup_steps", lambda v: v >= 0, ">= 0")
    lr, min_lr = getattr(section, "lr", None), getattr(section, "min_lr", None)
    if lr is not None and min_lr is not None and min_lr > lr:
        raise ConfigError(f"{path}.min_lr={min_lr!r} is above {path}.lr={lr!r}: a decay ends below its peak")


def check_fp8_shapes(m: ModelConfig, p: ParallelConfig, t: TrainConfig) -> None:
    """model.fp8: Transformer Engine runs a linear layer in FP8 only on 2-D operands whose rows are a multiple of 8
    and columns a multiple of 16 (transformer_engine/pytorch/utils.py, assert_dim_for_fp8_exec), and the backward
    multiplies their transposes: so the tokens of a micro-batch and every linear layer's widths on a TP rank must be
    multiples of 16. TE would stop at an assertion inside the first forward; refuse before any work instead."""
    if m.fp8 == "none":
        return
    hd = m.head_dim or m.hidden_size // max(m.num_attention_heads, 1)
    sizes = {"train.seq_length x train.micro_batch_size (tokens of a micro-batch)": t.seq_length * t.micro_batch_size,
             "model.hidden_size": m.hidden_size, "model.ffn_hidden_size / parallel.tp": m.ffn_hidden_size / p.tp,
             "model.num_attention_heads x head_dim / parallel.tp": m.num_attention_heads * hd / p.tp,
             "model.num_query_groups x head_dim / parallel.tp": m.num_query_groups * hd / p.tp}
    bad = [f"{name} = {value:g}" for name, value in sizes.items() if value % 16]
    if bad:
        raise ConfigError(f"model.fp8={m.fp8}: Transformer Engine's FP8 matmuls need multiples of 16, and "
                          f"{'; '.join(bad)}. Change the shape or batch, or set model.fp8=none")


def validate(cfg: RunConfig, world_size: int | None = None) -> RunConfig:
    """Check the run before any work: layout, batch arithmetic, budgets. Fills parallel.dp. Returns cfg.
    Standard library only (no torch, no Megatron-Core): a recipe validates in a fraction of a second."""
    cfg.model = load_hf_config(cfg.model)
    check_numbers(cfg)
    check_optimizer(cfg.optim, "optim")
    m, p, t = cfg.model, cfg.parallel, cfg.train
    if t.seq_length < 1:
        raise ConfigError(f"train.seq_length={t.seq_length}: must be >= 1")
    dp = check_layout(p, world_size)
    if m.num_attention_heads % p.tp:
        raise ConfigError(f"parallel.tp={p.tp} does not divide model.num_attention_heads={m.num_attention_heads}")
    if m.num_query_groups % p.tp:
        raise ConfigError(f"parallel.tp={p.tp} does not divide model.num_query_groups (kv heads)={m.num_query_groups}")
    if m.num_attention_heads % m.num_query_groups:
        raise ConfigError(f"model.num_query_groups={m.num_query_groups} must divide "
                          f"model.num_attention_heads={m.num_attention_heads}")
    if m.num_layers % p.pp:
        raise ConfigError(f"parallel.pp={p.pp} does not divide model.num_layers={m.num_layers}")
    if t.micro_batch_size < 1 or t.global_batch_size < 1:
        raise ConfigError("train.micro_batch_size and train.global_batch_size must be >= 1")
    if t.global_batch_size % (t.micro_batch_size * dp):
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is not divisible by "
                          f"train.micro_batch_size x dp = {t.micro_batch_size} x {dp}")
    if t.seq_length > m.max_position_embeddings:
        raise ConfigError(f"train.seq_length={t.seq_length} exceeds model.max_position_embeddings="
                          f"{m.max_position_embeddings}")
    if t.train_tokens <= 0:
        raise ConfigError("train.train_tokens must be > 0")
    steps = -(-t.train_tokens // (t.global_batch_size * t.seq_length))
    warm = -(-cfg.optim.warmup_tokens // (t.global_batch_size * t.seq_length))
    if warm >= steps:
        raise ConfigError(f"optim.warmup_tokens covers {warm} steps but the stage has only {steps}")
    if t.stage == "decay" and cfg.optim.lr is None and not cfg.init.from_checkpoint:
        raise ConfigError("train.stage=decay with optim.lr=None reads the LR from init.from_checkpoint: set one")
    if t.stage == "stable" and cfg.optim.lr is None:
        raise ConfigError("optim.lr must be set for a stable stage")
    if cfg.init.from_checkpoint and cfg.init.hf_path:
        raise ConfigError("init.from_checkpoint and init.hf_path are exclusive: start from one of them")
    if m.ce_chunk_tokens < 1:
        raise ConfigError(f"model.ce_chunk_tokens={m.ce_chunk_tokens}: must be >= 1")
    if p.sequence_parallel and p.tp == 1:
        raise ConfigError("parallel.sequence_parallel needs parallel.tp > 1")
    check_fp8_shapes(m, p, t)
    check_document_policy(cfg.data)
    for key in cfg.checkpoint.allow_changes:
        if key not in ("seq_length", "blend", "global_batch_size"):
            raise ConfigError(f"checkpoint.allow_changes: unknown item {key!r} (seq_length, blend, global_batch_size)")
    return cfg
