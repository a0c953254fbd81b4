"""RL config: OctoThinker's defaults, the units arithmetic, validation errors a user can act on, the stair
schedule, the recipes and `octomega rl --dry-run`."""

from __future__ import annotations

import json

import pytest

from octomega.config import ConfigError, apply_override, from_dict, to_dict
from octomega.rl.cli import main
from octomega.rl.config import RLConfig, batch_sizes, validate_rl


def _cfg(**kw) -> RLConfig:
    cfg = RLConfig()
    cfg.init.hf_path, cfg.data.prompts = "models/x", "p.jsonl"
    for k, v in kw.items():
        apply_override(cfg, f"{k}={v}")
    return cfg


def test_defaults_are_octothinkers_settings():
    c = RLConfig()
    a, r, t, o = c.algo, c.rollout, c.train, c.optim
    assert (a.name, a.clip_low, a.clip_high, a.loss_agg_mode) == ("grpo", 0.2, 0.2, "token-mean")
    assert (a.kl_loss_coef, a.kl_reward_coef, a.entropy_coef, a.gamma, a.lam) == (0.0, 0.0, 0.0, 1.0, 1.0)
    assert a.norm_adv_by_std is True  # Dr.GRPO is the option
    assert (r.prompts_per_step, r.samples_per_prompt, t.mini_batch_prompts) == (128, 16, 64)
    assert (r.temperature, r.top_p, r.max_prompt_tokens, r.template) == (1.0, 1.0, 400, "orz")
    assert (o.lr, o.warmup_steps, o.clip_grad) == (1e-6, 0, 1.0)
    assert (c.critic.lr, c.critic.warmup_steps) == (1e-5, 0)
    assert (c.reward.name, c.reward.no_answer) == ("boxed", -1.0)
    assert r.backend == "megatron"
    assert (r.remove_easy_prompts, r.easy_reward_max, a.clip_ratio_c) == (False, 1.0, 3.0)


def test_batch_sizes_of_a_step():
    u = batch_sizes(validate_rl(_cfg()))
    assert (u.sequences, u.mini_batch_sequences, u.updates_per_step) == (2048, 1024, 2)
    assert u.micro_batches_per_update == 1024 // 4
    u8 = batch_sizes(validate_rl(_cfg(), world_size=8))
    assert u8.dp == 8 and u8.micro_batches_per_update == 1024 // (4 * 8)
    assert batch_sizes(validate_rl(_cfg(**{"algo.ppo_epochs": 2}))).updates_per_step == 4


def _authors_cap(stair: dict[int, int], step: int) -> int:
    """Their StairRolloutParamsManager (vllm_params_manager.py): SortedDict(stair), bisect_right(step) - 1."""
    import bisect

    keys = sorted(stair)
    return stair[keys[bisect.bisect_right(keys, step) - 1]]


def test_stair_schedule_at_every_boundary():
    """Step s (1-based, as logged; 0 = the validation before training) gets the last entry at or below s: the Long
    stair gives 4,096 from step 100 and 8,192 from step 160, as the authors' scheduler does."""
    r = RLConfig().rollout
    long = {0: 2048, 100: 4096, 160: 8192}  # rl/scripts/llama_3b_long.sh
    steps = (0, 1, 2, 98, 99, 100, 101, 159, 160, 161, 300, 10_000)
    assert [r.response_cap(s) for s in steps] == [_authors_cap(long, s) for s in steps]
    assert [r.response_cap(s) for s in (99, 100, 159, 160)] == [2048, 4096, 4096, 8192]
    r.response_stair = "100:4,0:1"  # order does not matter
    assert (r.response_cap(0), r.response_cap(99), r.response_cap(100)) == (1, 1, 4)
    r.response_stair = "0:4096"  # rl/scripts/llama_3b_hybrid.sh
    assert {r.response_cap(s) for s in steps} == {4096}


@pytest.mark.parametrize("overrides, message", [
    ({"train.mini_batch_prompts": 48}, "not a multiple of train.mini_batch_prompts"),
    ({"train.micro_batch_size": 3}, "not divisible by train.micro_batch_size"),
    ({"rollout.samples_per_prompt": 1}, "GRPO needs rollout.samples_per_prompt >= 2"),
    ({"rollout.response_stair": "5:100"}, "first entry must be step 0"),
    ({"rollout.response_stair": "0-100"}, "expected 'step:tokens"),
    ({"rollout.temperature": 0}, "temperature must be > 0"),
    ({"rollout.template": "chatml"}, "unknown; choose one of"),
    ({"reward.name": "nope"}, "unknown reward"),
    ({"init.from_checkpoint": "runs/x"}, "exactly one of init.hf_path"),
    ({"algo.kl_reward_coef": 0.1}, "applies to PPO"),
    ({"algo.clip_ratio_c": 0.5}, "clip_ratio_c > 1"),
    ({"rollout.easy_reward_max": "inf"}, "rollout.easy_reward_max='inf': expected a finite number"),
])
def test_validation_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_rl(_cfg(**overrides))


def test_unknown_and_mistyped_overrides():
    cfg = RLConfig()
    with pytest.raises(ConfigError, match="has no field 'samples'"):
        apply_override(cfg, "rollout.samples=4")
    with pytest.raises(ConfigError, match="expected one of"):
        apply_override(cfg, "algo.loss_agg_mode=seq-mean")


def test_config_round_trips_through_json():
    cfg = _cfg(**{"algo.name": "ppo", "valid.benchmarks": "math500,gsm8k"})
    back = from_dict(RLConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and back.valid.benchmarks == ["math500", "gsm8k"]


def test_recipes_registered():
    import recipes

    names = {r.name for r in recipes.entries("rl")}
    for size in ("llama32_1b", "llama32_3b", "llama31_8b"):
        assert {f"{size}_rl_grpo", f"{size}_rl_ppo", f"{size}_rl_grpo_long", f"{size}_rl_grpo_hybrid",
                f"{size}_rl_grpo_short", f"{size}_rl_grpo_base"} <= names
    assert {"tiny_rl_grpo_short", "tiny_rl_grpo_long", "tiny_rl_grpo_hybrid", "tiny_rl_grpo_web",
            "tiny_rl_ppo_short", "tiny_rl_ppo_long"} <= names
    hybrid = recipes.get("llama32_3b_rl_grpo_hybrid")
    assert hybrid.rollout.response_stair == "0:4096" and hybrid.init.hf_path.endswith("llama32_3b_decay_hybrid/hf")
    tiny = validate_rl(recipes.get("tiny_rl_grpo_short"))
    u = batch_sizes(tiny)
    assert (u.prompts, u.samples, u.updates_per_step) == (16, 8, 2)  # docs/tiny_science.md's GRPO settings
    assert (tiny.optim.lr, tiny.rollout.response_cap(0), tiny.train.time_budget_s) == (5e-5, 256, None)
    assert tiny.train.steps == 10  # a fixed length: the same report on any machine
    assert recipes.get("tiny_rl_ppo_short").algo.name == recipes.get("tiny_rl_ppo_long").algo.name == "ppo"
    assert (tiny.reward.name, tiny.algo.clip_ratio_c, tiny.rollout.remove_easy_prompts) == ("boxed", 3.0, False)


# The RL steps of each logged run: the last step of the authors' plot/data/octothinker/{3b,1b}/acc_math500.csv
# (plot/data/motivation/acc_math500.csv for Llama-3.2-3B itself); 8B and 1B base: the 3B's (assumed).
@pytest.mark.parametrize("name, steps", [
    ("llama32_3b_rl_grpo_long", 300), ("llama32_3b_rl_grpo_short", 604), ("llama32_3b_rl_grpo_hybrid", 668),
    ("llama32_1b_rl_grpo_long", 196), ("llama32_1b_rl_grpo_short", 876), ("llama32_1b_rl_grpo_hybrid", 692),
    ("llama32_3b_rl_grpo_base", 224), ("llama32_3b_rl_grpo", 300), ("llama32_3b_rl_ppo", 300),
    ("llama31_8b_rl_grpo_long", 300), ("llama31_8b_rl_grpo_hybrid", 668), ("llama32_1b_rl_grpo_base", 224),
])
def test_paper_recipes_follow_the_authors_runs(name, steps):
    import recipes

    cfg = validate_rl(recipes.get(name))
    assert cfg.train.steps == steps
    assert (cfg.valid.benchmarks, cfg.valid.interval, cfg.valid.max_new_tokens) == (
        ["math500", "gsm8k", "olympiadbench", "amc23"], 4, None)  # greedy, at the stair's cap of the step
    assert (cfg.reward.name, cfg.algo.clip_ratio_c, cfg.rollout.template) == ("octothinker", 0.0, "orz")
    assert (cfg.rollout.remove_easy_prompts, cfg.rollout.easy_reward_max, cfg.rollout.max_prompt_tokens) == (
        True, 1.0, 380)


def test_cli_dry_run(tmp_path, capsys):
    rc = main(["llama32_3b_rl_grpo", f"run_dir={tmp_path / 'r'}", "--dry-run", "--world-size", "16"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "128 prompts x 16 responses = 2,048 sequences" in out
    assert "= 2 updates per step" in out and "(dp 16 x micro-batch 2) = 32 micro-batches" in out
    assert "from step   160: 8,192 new tokens" in out
    saved = json.loads((tmp_path / "r" / "config.dry_run.json").read_text())
    assert saved["rollout"]["prompts_per_step"] == 128 and saved["kind"] == "rl"


def test_cli_flags_before_overrides(tmp_path, capsys):
    assert main(["llama32_3b_rl_grpo", "--dry-run", f"run_dir={tmp_path / 'r'}", "optim.lr=2e-6"]) == 0
    assert json.loads((tmp_path / "r" / "config.dry_run.json").read_text())["optim"]["lr"] == 2e-6
    capsys.readouterr()


def test_optimizer_ranges_are_checked_for_actor_and_critic(capsys):
    assert main(["llama32_3b_rl_ppo", "critic.lr=-1", "--dry-run"]) == 2
    assert "critic.lr=-1.0: must be > 0" in capsys.readouterr().err
    assert main(["llama32_3b_rl_grpo", "optim.weight_decay=-0.5", "--dry-run"]) == 2
    assert "optim.weight_decay=-0.5: must be >= 0" in capsys.readouterr().err


def test_cli_errors(capsys):
    assert main(["tiny_stable", "--dry-run"]) == 2
    assert "not an RL recipe" in capsys.readouterr().err
    assert main(["llama32_3b_rl_grpo", "rollout.prompts_per_step=100", "--dry-run"]) == 2
    assert "not a multiple of train.mini_batch_prompts" in capsys.readouterr().err
    assert main(["llama32_3b_rl_grpo", "model.hidden_size=8", "--dry-run"]) == 2
    assert "comes from the starting checkpoint" in capsys.readouterr().err
    assert main(["tiny_rl_grpo_nope", "--dry-run"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
