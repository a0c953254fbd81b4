"""Rollouts: prompts -> sampled responses (through octomega.generate) -> rewards -> the step's TensorBatch.

The prompt pool renders the template, tokenises every prompt once, filters (and counts) prompts longer than
rollout.max_prompt_tokens, and hands out prompts_per_step prompts per step in a seeded permutation per epoch. An
epoch is len(prompts) // prompts_per_step whole steps, the rest of the permutation left out, as verl's dataloader
(drop_last=True) does; a step never spans two epochs. With easy-prompt removal (the authors' dynamic_remove_easy_sample)
the pool records each prompt's mean reward when it is drawn and, when an epoch ends, removes the prompts whose last
mean reward is above the threshold (their rl_dataset.py: update_prompt_profile after each step, update_dataset
after each epoch).
Prompt token ids are the tokenizer's with its special tokens (BOS), the ids the generation backends feed the
model; a response's ids are the completion's (its stop token included).

Each data-parallel rank generates and grades its share of the step's prompts (model-parallel peers get the same
share: a megatron backend generates collectively), then every rank gathers all of them, in prompt order.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from octomega.config import ConfigError
from octomega.generate import SamplingParams
from octomega.generate.sampling import row_seed
from octomega.jsonl import iter_jsonl
from octomega.rl.batch import TensorBatch, build_batch
from octomega.rl.rewards import get_reward, score_responses
from octomega.rl.templates import get_template


@dataclass(frozen=True)
class Prompt:
    id: str
    question: str
    answer: str
    text: str  # the rendered prompt
    ids: tuple[int, ...]  # its token ids (BOS included)


PROMPT_SET_HINT = "python -m data_prep.rl_prompts writes prompt sets: one JSON object per line"


def read_prompt_rows(path: str | Path) -> list[dict]:
    """Rows of a prompt set: jsonl with `question` (or `problem`) and `answer`; `id` optional."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.prompts: {p} does not exist (python -m data_prep.rl_prompts builds prompt sets; "
                          "the tiny pipeline's is runs/tiny/data/synth/rl/prompts.jsonl)")
    rows = []
    for lineno, r in iter_jsonl(p, error=ConfigError, hint=PROMPT_SET_HINT):
        question = r.get("question", r.get("problem"))
        if question is None or "answer" not in r:
            raise ConfigError(f"{p}, line {lineno}: expected a JSON object with question (or problem) and answer "
                              f"(it has {sorted(r)}); {PROMPT_SET_HINT}")
        rows.append({"id": str(r.get("id", lineno - 1)), "question": question, "answer": str(r["answer"]),
                     "prompt": r.get("prompt")})
    if not rows:
        raise ConfigError(f"data.prompts: {p} holds no prompts")
    return rows


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


class PromptPool:
    """`remove_easy_above`: None = keep every prompt; a number = at each epoch's end, remove the prompts whose mean
    reward, the last time they were drawn, is above it (rollout.easy_reward_max when rollout.remove_easy_prompts)."""

    def __init__(self, path, tokenizer, *, template: str, max_prompt_tokens: int, seed: int, shuffle: bool = True,
                 remove_easy_above: float | None = None):
        tpl = get_template(template)
        self.prompts: list[Prompt] = []
        self.filtered = 0
        for r in read_prompt_rows(path):
            text = r["prompt"] if template == "raw" and r.get("prompt") else tpl.render(r["question"])
            ids = encode(tokenizer, text)
            if len(ids) > max_prompt_tokens:
                self.filtered += 1
                continue
            self.prompts.append(Prompt(r["id"], r["question"], r["answer"], text, tuple(ids)))
        if not self.prompts:
            raise ConfigError(f"every prompt of {path} is longer than rollout.max_prompt_tokens={max_prompt_tokens}")
        self.seed, self.shuffle, self.remove_easy_above = seed, shuffle, remove_easy_above
        self.epoch, self.cursor = 0, 0
        self.dropped: set[str] = set()
        self.last_mean: dict[str, float] = {}  # prompt id -> mean reward of its samples when last drawn
        self.removed_easy = 0  # prompts removed as easy so far
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        """This epoch's order of the prompts still in the set."""
        order = [i for i, p in enumerate(self.prompts) if p.id not in self.dropped]
        if self.shuffle:
            random.Random(f"octomega-rl/{self.seed}/{self.epoch}").shuffle(order)
        return order

    @property
    def active(self) -> int:
        return len(self.prompts) - len(self.dropped)

    def _left_in_epoch(self) -> list[int]:
        return [i for i in self._order[self.cursor:] if self.prompts[i].id not in self.dropped]

    def next_batch(self, n: int) -> list[Prompt]:
        if self.active < n:
            raise RuntimeError(f"only {self.active} prompts left (of {len(self.prompts)}; {len(self.dropped)} removed) "
                               f"for a step of {n}")
        if len(self._left_in_epoch()) < n:  # the epoch's last whole step is done: the rest waits for a new order
            self._end_epoch()
            if self.active < n:
                raise RuntimeError(f"only {self.active} prompts left (of {len(self.prompts)}; {len(self.dropped)} "
                                   f"removed as easy) for a step of {n}")
        out = []
        while len(out) < n:
            p = self.prompts[self._order[self.cursor]]
            self.cursor += 1
            if p.id not in self.dropped:
                out.append(p)
        return out

    def _end_epoch(self) -> None:
        if self.remove_easy_above is not None:
            easy = [p.id for p in self.prompts
                    if p.id not in self.dropped and self.last_mean.get(p.id, 0.0) > self.remove_easy_above]
            self.drop(easy)
            self.removed_easy += len(easy)
        self.epoch, self.cursor = self.epoch + 1, 0
        self._order = self._permutation()

    def record(self, samples: list[dict]) -> None:
        """Each drawn prompt's mean reward over its samples this step (kept only when removal is on)."""
        if self.remove_easy_above is None:
            return
        by: dict[str, list[float]] = {}
        for x in samples:
            by.setdefault(x["prompt_id"], []).append(float(x["reward"]))
        self.last_mean.update({k: sum(v) / len(v) for k, v in by.items()})

    def drop(self, ids) -> None:
        self.dropped.update(ids)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "dropped": sorted(self.dropped),
                "last_mean": dict(self.last_mean), "removed_easy": self.removed_easy}

    def load_state_dict(self, state: dict) -> None:
        """The pool as saved. Removal happens only between epochs, so this epoch's order is that of the prompts
        not dropped."""
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.dropped = set(state.get("dropped", []))
        self.last_mean = {str(k): float(v) for k, v in state.get("last_mean", {}).items()}
        self.removed_easy = int(state.get("removed_easy", 0))
        self._order = self._permutation()


def _dp():
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 1, 0, None
    return ps.get_data_parallel_world_size(), ps.get_data_parallel_rank(), ps.get_data_parallel_group()


def gather_dp(local: list) -> list:
    """Concatenate every DP rank's list, in DP-rank order (a no-op at DP=1)."""
    dp, _, group = _dp()
    if dp == 1:
        return local
    parts = [None] * dp
    torch.distributed.all_gather_object(parts, local, group=group)
    return [x for p in parts for x in p]


def shard(items: list, dp: int, rank: int) -> list:
    """This DP rank's contiguous share (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // dp:(rank + 1) * n // dp]


@dataclass
class Rollout:
    batch: TensorBatch
    rewards: torch.Tensor  # [rows]
    samples: list[dict]  # one record per row: prompt id, text, reward, has_box, correct, finish_reason, ...
    gen_seconds: float
    grade_seconds: float


def generate_step(generator, prompts: list[Prompt], *, n: int, max_new_tokens: int, temperature: float,
                  top_p: float, stop: list[str], seed: int, step: int, reward_name: str, no_answer: float,
                  timeout_s: float, pad_id: int, keep_stop_tokens: bool = False) -> Rollout:
    """One step's responses, graded. `keep_stop_tokens`: a matched stop string's tokens stay in the trained response
    (the orz template's rule). The reward grades the completion text, which ends before the stop string; the
    authors' reward decodes the kept tokens instead, which only appends the stop string after the last \\boxed{}:
    the same verdict."""
    dp, rank, _ = _dp()
    mine = shard(list(range(len(prompts))), dp, rank)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                            stop=list(stop), seed=row_seed(seed, step, rank) % 2**31, keep_stop_tokens=keep_stop_tokens)
    t0 = time.perf_counter()
    outs = generator.generate([prompts[i].text for i in mine], params) if mine else []
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    flat = [(i, c) for i, comps in zip(mine, outs) for c in comps]
    scores = score_responses(get_reward(reward_name), [c.text for _, c in flat], [prompts[i].answer for i, _ in flat],
                             [c.finish_reason == "length" for _, c in flat], no_answer=no_answer, timeout_s=timeout_s)
    grade_s = time.perf_counter() - t0
    local = [{"prompt_index": i, "prompt_id": prompts[i].id, "sample": c.sample_index, "text": c.text,
              "token_ids": list(c.token_ids), "logprobs": list(c.logprobs), "finish_reason": c.finish_reason,
              "reward": s.reward, "has_box": s.has_box, "correct": s.correct, "gold": prompts[i].answer,
              "grading_timeout": s.timed_out}
             for (i, c), s in zip(flat, scores)]
    gen_s, grade_s = max(gather_dp([gen_s])), max(gather_dp([grade_s]))
    samples = sorted(gather_dp(local), key=lambda r: (r["prompt_index"], r["sample"]))
    if len(samples) != len(prompts) * n:
        raise RuntimeError(f"rollout returned {len(samples)} samples for {len(prompts)} prompts x {n}")
    batch = build_batch([list(prompts[r["prompt_index"]].ids) for r in samples], [r["token_ids"] for r in samples],
                        [r["logprobs"] for r in samples], [r["prompt_index"] for r in samples], pad_id)
    rewards = torch.tensor([r["reward"] for r in samples], dtype=torch.float32)
    return Rollout(batch=batch, rewards=rewards, samples=samples, gen_seconds=gen_s, grade_seconds=grade_s)


def rollout_metrics(r: Rollout, cap: int) -> dict[str, float]:
    s = r.samples
    lens = [len(x["token_ids"]) for x in s]
    gen_tokens = sum(lens)
    return {
        "reward_mean": float(r.rewards.mean()),
        "accuracy": sum(x["correct"] for x in s) / len(s),
        "box_rate": sum(x["has_box"] for x in s) / len(s),
        "response_len_mean": gen_tokens / len(s),
        "response_len_max": float(max(lens)),
        "cap_share": sum(x["finish_reason"] == "length" for x in s) / len(s),
        "response_cap": float(cap),
        "gen_tokens_per_s": gen_tokens / max(r.gen_seconds, 1e-9),
        "time_generate_s": r.gen_seconds,
        "time_grade_s": r.grade_seconds,
        "grading_timeouts": float(sum(x.get("grading_timeout", False) for x in s)),  # counted wrong
    }
