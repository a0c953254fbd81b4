"""Config overrides, validation errors, token-budget arithmetic, the dry run and the FLOP formula."""

from __future__ import annotations

import json
import re

import pytest

from octomega.cli import dry_run_report, main, resolve_config
from octomega.config import (ConfigError, ModelConfig, RunConfig, apply_overrides, from_dict, load_hf_config, to_dict,
                             validate)
from octomega.train.flops import flops_per_batch
from octomega.train.schedule import budget, lr_at
from recipes.paper import llama_model


def test_overrides_coerce_types_and_nested_sections():
    cfg = apply_overrides(RunConfig(), ["optim.lr=3e-5", "train.train_tokens=2e9", "parallel.tp=2",
                                        "model.rope_scaling.factor=8", "checkpoint.allow_changes=blend,seq_length",
                                        "logging.wandb=false", "optim.min_lr=none"])
    assert cfg.optim.lr == 3e-5 and cfg.train.train_tokens == 2_000_000_000 and cfg.parallel.tp == 2
    assert cfg.model.rope_scaling.factor == 8.0 and cfg.model.rope_scaling.low_freq_factor == 1.0
    assert cfg.checkpoint.allow_changes == ["blend", "seq_length"] and cfg.logging.wandb is False
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "no field 'lrr'"),
    ("nosuch.x=1", "no field 'nosuch'"),
    ("train.global_batch_size=abc", "expected an integer"),
    ("train.global_batch_size=1.5", "expected an integer"),
    ("model.fp8=fp4", "expected one of none, hybrid, e4m3"),
    ("logging.wandb=maybe", "expected true or false"),
    ("optim.lr", "expected key.sub=value"),
    ("optim.lr.x=1", "is a value, not a section"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [override])


@pytest.mark.parametrize("overrides, world, message", [
    (["train.global_batch_size=10", "train.micro_batch_size=4"], 1, "not divisible by train.micro_batch_size x dp"),
    (["train.global_batch_size=16", "train.micro_batch_size=4"], 8, r"micro_batch_size x dp = 4 x 8"),
    (["parallel.tp=3"], 3, "does not divide model.num_attention_heads"),
    (["parallel.tp=4", "model.num_attention_heads=8", "model.num_query_groups=2"], 4, "num_query_groups"),
    (["parallel.pp=3"], 3, "does not divide model.num_layers"),
    (["parallel.tp=2"], 3, "world size 3 is not divisible"),
    (["parallel.dp=4"], 2, "parallel.dp=4 but 2 processes"),
    (["train.seq_length=100000"], 1, "exceeds model.max_position_embeddings"),
    (["optim.warmup_tokens=1e9"], 1, "warmup_tokens covers"),
    (["train.stage=decay", "optim.lr=none"], 1, "reads the LR from init.from_checkpoint"),
    (["data.reset_attention_mask=true"], 1, "THD packed format"),
    (["data.reset_position_ids=true"], 1, "ignores position_ids"),
    (["checkpoint.allow_changes=vocab"], 1, "unknown item 'vocab'"),
    (["model.fp8=hybrid", "train.seq_length=100", "train.micro_batch_size=1"], 1,
     r"FP8 matmuls need multiples of 16, and train.seq_length x train.micro_batch_size \(tokens of a micro-batch\) "
     "= 100"),
    (["model.fp8=e4m3", "model.hidden_size=120", "model.ffn_hidden_size=200"], 1,
     "model.hidden_size = 120; model.ffn_hidden_size / parallel.tp = 200; "
     "model.num_attention_heads x head_dim / parallel.tp = 120; model.num_query_groups x head_dim / parallel.tp = "
     "60. Change the shape or batch, or set model.fp8=none"),
])
def test_inconsistent_layouts_fail_before_any_work(overrides, world, message):
    with pytest.raises(ConfigError, match=message):
        validate(apply_overrides(RunConfig(), overrides), world)


def test_paper_budget_rounds_up_to_whole_steps():
    cfg = resolve_config("llama32_3b_stable", [])
    b = budget(validate(cfg, 64))
    assert b.tokens_per_step == 512 * 8192 == 4_194_304
    assert b.steps == 47_684  # 200e9 / 4,194,304 = 47,683.7
    assert b.tokens == 47_684 * 4_194_304 > 200_000_000_000
    report = dry_run_report(resolve_config("llama32_3b_stable", []), 64)
    assert "47,683.7 steps -> 47,684 steps" in report and "200,001,191,936" in report
    assert "theoretical memory per GPU" in report and "GiB" in report


def test_decay_lr_curve_from_the_real_scheduler():
    cfg = apply_overrides(RunConfig(), ["train.stage=decay", "optim.lr=1e-3", "optim.min_lr_ratio=0.1",
                                        "train.train_tokens=40960", "train.global_batch_size=16",
                                        "train.micro_batch_size=16"])
    steps = budget(validate(cfg, 1)).steps
    assert steps == 10
    import math

    got = lr_at(cfg, list(range(steps + 1)), 1e-3, 1e-4)
    want = [1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * k / steps)) for k in range(steps + 1)]
    assert got == pytest.approx(want, rel=1e-12)
    cfg.optim.decay_style = "linear"
    assert lr_at(cfg, [5], 1e-3, 1e-4)[0] == pytest.approx(1e-4 + 0.9e-3 * 0.5)


def test_megatron_flop_formula_reproduces_published_llama3_8b_figure():
    """Llama-3-8B at seq 8192, 14,451 tokens/s per GPU is 744 TFLOP/s per GPU (Megatron's formula)."""
    f = flops_per_batch(llama_model("8b"), 8192, 1)
    assert f / 8192 * 14451 / 1e12 == pytest.approx(744, abs=0.5)


def test_flags_and_overrides_in_any_order(capsys, tmp_path):
    """`--dry-run` before the overrides (argparse's plain parse_args refused the overrides after a flag)."""
    for n, argv in enumerate((["train", "tiny_stable", "--dry-run", f"run_dir={tmp_path / 'a'}", "optim.lr=1e-3"],
                              ["train", "--dry-run", "tiny_stable", f"run_dir={tmp_path / 'b'}", "--world-size", "1",
                               "optim.lr=1e-3"])):
        assert main(argv) == 0, argv
        saved = json.loads((tmp_path / "ab"[n] / "config.dry_run.json").read_text())
        assert saved["optim"]["lr"] == 1e-3
    capsys.readouterr()


def test_every_paper_recipe_dry_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OCTOMEGA_RUNS", str(tmp_path))
    for size in ("llama32_1b", "llama32_3b", "llama31_8b"):
        for stage in ("stable", "decay_long", "decay_short", "decay_hybrid"):
            assert main(["train", f"{size}_{stage}", "--dry-run", "--world-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "4,769 steps" in out and "47,684 steps" in out
    assert "peak = the LR of" in out  # decay branches read their LR from the stable checkpoint


def test_cli_reports_config_errors(capsys):
    assert main(["train", "tiny_stable", "parallel.tp=3", "--dry-run"]) == 2
    assert "does not divide model.num_attention_heads" in capsys.readouterr().err
    assert main(["train", "no_such_recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_readme_recipe_table_is_the_estimate_scripts_output():
    """The README's paper-recipe table (tokens, steps, GPU-hours) is regenerated by `python -m recipes.estimate`:
    a recipe change that is not carried into the README fails here."""
    from pathlib import Path

    from recipes.estimate import MEASURED_MFU, estimate, table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table() in readme, "README recipe table is stale: paste `python -m recipes.estimate` into it"
    e = estimate("llama32_1b_stable")
    # 6 N D with N ~ 1.24B parameters and D = 200B tokens is ~1.5e21 FLOPs; attention and logits add to it.
    assert 1.4e21 < e["flops"] < 2.2e21 and e["steps"] == 47_684
    assert e["gpu_hours"] == pytest.approx(e["flops"] / (MEASURED_MFU * 989.4e12) / 3600)


# ------------------------------------------------------------------------------------------- HF configs


def write_config(tmp_path, **overrides):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300}
    cfg.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return ModelConfig(hf_config=str(tmp_path))


def test_hf_config_defaults_are_transformers_defaults(tmp_path):
    m = load_hf_config(write_config(tmp_path))
    assert (m.rope_theta, m.norm_eps, m.max_position_embeddings, m.tie_embeddings) == (10000.0, 1e-6, 2048, False)
    assert m.rope_scaling is None and m.num_query_groups == 2 and m.vocab_size == 300


def test_hf_config_rope_both_formats(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 6.0,
               "original_max_position_embeddings": 1024}
    old = load_hf_config(write_config(tmp_path, rope_theta=123.0, rope_scaling=scaling))
    new = load_hf_config(write_config(tmp_path, rope_parameters={**scaling, "rope_theta": 123.0}))
    for m in (old, new):
        assert m.rope_theta == 123.0
        assert (m.rope_scaling.factor, m.rope_scaling.low_freq_factor, m.rope_scaling.high_freq_factor,
                m.rope_scaling.original_max_position_embeddings) == (8.0, 2.0, 6.0, 1024)
    plain = load_hf_config(write_config(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 5.0}))
    assert plain.rope_scaling is None and plain.rope_theta == 5.0


@pytest.mark.parametrize("overrides,match", [
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "not a Llama"),
    ({"architectures": ["LlamaForSequenceClassification"]}, "not a Llama"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 4.0}}, "lacks"),
])
def test_hf_config_refusals(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_hf_config(write_config(tmp_path, **overrides))


@pytest.mark.parametrize("field", ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                   "vocab_size"])
def test_hf_config_missing_field_names_the_file_and_the_field(tmp_path, field):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'config.json'}: field '{field}' is missing")):
        load_hf_config(write_config(tmp_path, **{field: None}))


def test_hf_config_that_is_not_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'config.json'}: not valid JSON")):
        load_hf_config(ModelConfig(hf_config=str(tmp_path)))


def test_train_command_names_the_config_file_and_field(tmp_path, capsys):
    write_config(tmp_path, num_hidden_layers=None)
    assert main(["train", "tiny_stable", f"model.hf_config={tmp_path}", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"octomega train: error: {tmp_path / 'config.json'}: field 'num_hidden_layers' is missing; a Llama "
                   "config.json needs num_hidden_layers, hidden_size, intermediate_size, num_attention_heads and "
                   "vocab_size"), err



@pytest.mark.parametrize("content,message", [
    (None, "checkpoint.save_interval: expected an integer, got the string '50'"),
    ("", "is empty"), ("[1, 2]", "expected a JSON object (a run's config.json), got list"),
    ('{"name": ', "not valid JSON (Expecting value at line 1, column 10)"),
    ('{"optim": {"lr": "3e-4"}}', "optim.lr: expected a number, got the string '3e-4'"),
    ('{"train": {"stage": "warmup"}}', "train.stage='warmup': expected one of"),
    ('{"optim": 5}', "optim=5: expected an object"), ('{"nmae": "x"}', "unknown key 'nmae'")])
def test_a_saved_config_is_checked_like_overrides(tmp_path, capsys, content, message):
    """A saved config JSON gets the same type and value checks as overrides, and a malformed, empty or non-object
    file is one line naming the file (it used to pass --dry-run and fail after step 1, or give a traceback)."""
    from octomega.config import RunConfig, from_dict, to_dict

    path = tmp_path / "cfg.json"
    if content is None:
        data = to_dict(resolve_config("tiny_stable", [f"run_dir={tmp_path / 'r'}"]))
        data["checkpoint"]["save_interval"] = "50"
        content = json.dumps(data)
    path.write_text(content)
    assert main(["train", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"octomega train: error: config file {path}") and message in err[0]
    good = to_dict(resolve_config("tiny_stable", []))
    assert from_dict(RunConfig, json.loads(json.dumps(good))) == resolve_config("tiny_stable", [])  # round trip


@pytest.mark.parametrize("override,message", [
    ("optim.lr=0", "optim.lr=0.0: must be > 0"), ("optim.lr=-1e-3", "optim.lr=-0.001: must be > 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1: must be >= 0"),
    ("train.seq_length=0", "train.seq_length=0: must be >= 1"), ("optim.min_lr=-1", "optim.min_lr=-1.0: must be >= 0"),
    ("optim.adam_beta2=1", "optim.adam_beta2=1.0: must be in [0, 1)"),
    ("optim.min_lr=1", "optim.min_lr=1.0 is above optim.lr=0.0015")])
def test_out_of_range_optimizer_values_are_one_line_errors_in_dry_run(capsys, tmp_path, override, message):
    """They used to pass as an AssertionError or ZeroDivisionError traceback from deep inside the dry run."""
    assert main(["train", "tiny_stable", "--dry-run", override, f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"octomega train: error: {message}"] or (len(err) == 1 and message in err[0]), err


def test_fp8_shapes_that_fit_pass():
    """The refusal above is about shapes alone: the default tiny shape and the paper's 1B pass (TE, the layer spec
    and the GPU are checked when the model is built: octomega.model.llama.resolve_layer_spec)."""
    validate(apply_overrides(RunConfig(), ["model.fp8=hybrid"]), 1)
    cfg = apply_overrides(RunConfig(model=llama_model("1b")), ["model.fp8=hybrid", "train.seq_length=4096",
                                                               "train.micro_batch_size=1"])
    assert validate(cfg, 8).model.fp8 == "hybrid"
