"""Prompt sets, templates, rewards and the rollout's bookkeeping (a fake generator; no model)."""

from __future__ import annotations

import json

import pytest
import torch

from octomega.config import ConfigError
from octomega.generate import Completion, Generator
from octomega.generate.tiny import build_tokenizer
from octomega.rl.batch import build_batch, micro_batches
from octomega.rl.rewards import Score, get_reward, register_reward, score_responses
from octomega.rl.rollout import PromptPool, generate_step, rollout_metrics
from octomega.rl.templates import ORZ_STOP, get_template
from rl_helpers import write_prompts


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_templates():
    from octomega.eval.prompts import orz_prompt

    assert get_template("orz").render("1+1?") == orz_prompt("1+1?")
    assert "put your answer inside \\boxed{}" in get_template("orz").render("1+1?")
    assert get_template("qa").render("1+1?") == "Question: 1+1?\nAnswer:"
    assert get_template("qa").stop == ("\nQuestion:",) and not get_template("qa").keep_stop_tokens
    # the authors' rollout (vllm_rollout_spmd.py): these four stop strings, their tokens kept in the response
    assert get_template("orz").stop == ORZ_STOP == ("User:", "Assistant:", "Question:", "Answer:")
    assert get_template("orz").keep_stop_tokens
    with pytest.raises(ConfigError, match="unknown"):
        get_template("alpaca")


def test_boxed_reward_reports_box_apart_from_correctness():
    boxed = get_reward("boxed")
    assert boxed("so \\boxed{14}.", "14") == Score(1.0, True, True)
    assert boxed("so \\boxed{15}.", "14") == Score(-1.0, True, False)
    assert boxed("the answer is 14", "14") == Score(-1.0, False, False)  # right number, no box: -1
    assert boxed("\\boxed{\\frac{1}{2}}", "0.5").correct  # math-verify in the cascade
    assert get_reward("boxed_01")("\\boxed{3}", "4") == Score(0.0, True, False)


def test_truncated_response_without_a_box_gets_the_no_answer_reward():
    @register_reward("always_one_for_test")
    def always(text, gold, *, timeout_s=0):
        return Score(1.0, "\\boxed" in text, True)

    fn = get_reward("always_one_for_test")
    s = score_responses(fn, ["no box", "no box", "\\boxed{1} and more"], ["1"] * 3, [False, True, True],
                        no_answer=-0.5, timeout_s=1)
    assert [x.reward for x in s] == [1.0, -0.5, 1.0]  # cut without a box -> no-answer; a boxed cut answer counts


def test_prompt_pool_filters_permutes_and_resumes(tmp_path, tok):
    path = write_prompts(tmp_path / "p.jsonl", 10)
    long_q = {"id": "long", "question": "word " * 300, "answer": "1"}
    with open(path, "a") as f:
        f.write(json.dumps(long_q) + "\n")
    pool = PromptPool(path, tok, template="qa", max_prompt_tokens=100, seed=3)
    assert (len(pool.prompts), pool.filtered) == (10, 1)
    p = pool.prompts[0]
    assert p.text.startswith("Question: ") and list(p.ids) == tok(p.text)["input_ids"]
    assert p.ids[0] == tok.bos_token_id
    first = [x.id for x in pool.next_batch(4)] + [x.id for x in pool.next_batch(4)]
    state = pool.state_dict()
    rest = [x.id for x in pool.next_batch(4)]  # 2 left in epoch 0: a step never spans epochs (verl's drop_last)
    assert len(set(first)) == 8 and pool.epoch == 1 and pool.cursor == 4
    again = PromptPool(path, tok, template="qa", max_prompt_tokens=100, seed=3)
    again.load_state_dict(state)
    assert [x.id for x in again.next_batch(4)] == rest  # a resumed pool continues exactly
    again.drop(["p0", "p1", "p2", "p3", "p4", "p5", "p6"])
    assert again.active == 3 and {x.id for x in again.next_batch(3)} <= {"p7", "p8", "p9"}
    with pytest.raises(RuntimeError, match="only 3 prompts left"):
        again.next_batch(4)
    with pytest.raises(ConfigError, match="longer than"):
        PromptPool(path, tok, template="qa", max_prompt_tokens=2, seed=3)


def test_easy_prompts_leave_at_the_epochs_end_by_their_last_mean_reward(tmp_path, tok):
    """The authors' dynamic_remove_easy_sample: a prompt's mean reward is recorded when it is drawn; when the epoch
    ends (here after 3 steps of 2 of the 6 prompts), prompts whose last mean is above the threshold leave. Their
    threshold, 1.0, keeps a prompt that every sample solved (mean 1.0 <= 1.0)."""

    def run(threshold):
        pool = PromptPool(write_prompts(tmp_path / "p.jsonl", 6), tok, template="qa", max_prompt_tokens=100, seed=5,
                          remove_easy_above=threshold)
        seen = []
        for _ in range(3):  # epoch 0: every prompt once
            batch = pool.next_batch(2)
            seen += [p.id for p in batch]
            solved = {"p0": [1.0, 1.0], "p1": [1.0, -1.0]}  # p0 always solved, p1 half, the others never
            pool.record([{"prompt_id": p.id, "reward": r} for p in batch for r in solved.get(p.id, [-1.0, -1.0])])
            assert pool.epoch == 0 and pool.active == 6  # nothing leaves within an epoch
        return pool, seen

    pool, seen = run(1.0)
    assert sorted(seen) == [f"p{i}" for i in range(6)] and pool.last_mean == pytest.approx(
        {"p0": 1.0, "p1": 0.0, **{f"p{i}": -1.0 for i in range(2, 6)}})
    pool.next_batch(2)
    assert pool.epoch == 1 and pool.active == 6 and pool.removed_easy == 0  # their rule: none is easy
    pool, _ = run(0.5)
    state = pool.state_dict()
    nxt = [p.id for p in pool.next_batch(2)]
    assert pool.epoch == 1 and pool.active == 5 and pool.removed_easy == 1 and "p0" in pool.dropped
    assert "p0" not in nxt
    again = PromptPool(write_prompts(tmp_path / "p.jsonl", 6), tok, template="qa", max_prompt_tokens=100, seed=5,
                       remove_easy_above=0.5)
    again.load_state_dict(state)  # saved before the epoch ended: the resumed pool removes the same prompt
    assert [p.id for p in again.next_batch(2)] == nxt and again.dropped == {"p0"}
    pool, _ = run(-2.0)  # everything drawn is "easy": the set runs out, with a message
    with pytest.raises(RuntimeError, match="only 0 prompts left"):
        pool.next_batch(2)
    off = PromptPool(write_prompts(tmp_path / "p.jsonl", 6), tok, template="qa", max_prompt_tokens=100, seed=5)
    off.record([{"prompt_id": "p0", "reward": 1.0}])
    assert off.last_mean == {}  # removal off: nothing is kept


def test_prompt_file_errors(tmp_path, tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ConfigError, match="line 1: expected a JSON object with question"):
        PromptPool(bad, tok, template="qa", max_prompt_tokens=100, seed=0)
    with pytest.raises(ConfigError, match="does not exist"):
        PromptPool(tmp_path / "missing.jsonl", tok, template="qa", max_prompt_tokens=100, seed=0)


def test_build_batch_alignment():
    b = build_batch([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], [[-0.1, -0.2], None], [0, 0], pad_id=0)
    assert b["tokens"].tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert b["mask"].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 0]]
    assert torch.allclose(b["engine_logp"][0, 3:], torch.tensor([-0.1, -0.2]))
    assert torch.isnan(b["engine_logp"][1]).all()  # an engine without logprobs
    mbs = micro_batches(b, 1, 8)
    assert len(mbs) == 2 and mbs[1]["tokens"].shape == mbs[1]["position_ids"].shape == mbs[1]["mask"].shape == (1, 8)
    assert mbs[0]["position_ids"].tolist() == [list(range(8))] and mbs[1]["mask"][0, 5:].sum() == 0
    assert micro_batches(b, 2, 3)[0]["tokens"].shape == (2, 3)  # cut when narrower


class ScriptedGenerator(Generator):
    """Answers prompt i's sample j with a scripted text; records the SamplingParams."""

    def __init__(self, tok):
        self.tok, self.params = tok, []

    def generate(self, prompts, params):
        self.params.append(params)
        out = []
        for i, p in enumerate(prompts):
            comps = []
            for j in range(params.n):
                text = ["x = \\boxed{%s}" % (2 * int(p.split("Tom has ")[1].split()[0]) + 1), "no idea",
                        "\\boxed{0}", "\\boxed{1"][j % 4]
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
                reason = "length" if j % 4 == 3 else "stop"
                comps.append(Completion(prompt_index=i, sample_index=j, text=text, token_ids=ids,
                                        logprobs=[-0.5] * len(ids), finish_reason=reason))
            out.append(comps)
        return out


def test_generate_step(tmp_path, tok):
    pool = PromptPool(write_prompts(tmp_path / "p.jsonl", 6), tok, template="qa", max_prompt_tokens=100, seed=0)
    prompts = pool.next_batch(3)
    gen = ScriptedGenerator(tok)
    ro = generate_step(gen, prompts, n=4, max_new_tokens=7, temperature=1.0, top_p=1.0, stop=["\nQuestion:"],
                       seed=1, step=2, reward_name="boxed", no_answer=-1.0, timeout_s=5, pad_id=0,
                       keep_stop_tokens=True)
    p = gen.params[0]
    assert (p.n, p.max_new_tokens, p.temperature, p.stop, p.keep_stop_tokens) == (4, 7, 1.0, ["\nQuestion:"], True)
    assert ro.batch.num_rows == 12 and ro.batch["group"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ro.rewards.tolist() == [1.0, -1.0, -1.0, -1.0] * 3
    m = rollout_metrics(ro, 7)
    assert m["accuracy"] == pytest.approx(0.25) and m["box_rate"] == pytest.approx(0.5)
    assert m["cap_share"] == pytest.approx(0.25) and m["reward_mean"] == pytest.approx(-0.5)
    row = ro.batch["tokens"][0]
    plen = len(prompts[0].ids)
    assert row[:plen].tolist() == list(prompts[0].ids)  # the trainer sees the generator's prompt ids
