"""Greedy zero-shot validation during RL: benchmark items in the rollout template, scored by the reward function.

Accuracy is the share of correct answers (OctoThinker: the share of +1 rewards); the box rate and the mean
length are reported beside it. Items are split over the DP ranks and gathered. Every rank of a model-parallel
group calls the generator with the same items (a megatron backend generates collectively).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from octomega.generate import SamplingParams
from octomega.rl.rewards import get_reward, score_responses
from octomega.rl.rollout import _dp, gather_dp, shard
from octomega.rl.templates import get_template


def load_benchmark(name: str, data_dir: str | None, limit: int | None) -> list[tuple[str, str, str]]:
    """(id, question, gold text) of a benchmark's first `limit` items."""
    from octomega.eval.benchmarks import get_benchmark
    from octomega.eval.data import load_items
    from octomega.eval.grader import gold_text

    return [(it.id, it.question, gold_text(it.gold)) for it in load_items(get_benchmark(name), data_dir, limit=limit)]


def run_validation(generator, items_by_bench: dict[str, list[tuple[str, str, str]]], *, template: str,
                   stop: list[str], max_new_tokens: int, reward_name: str, no_answer: float, timeout_s: float,
                   samples_path: Path | None = None, step: int = 0) -> dict[str, float]:
    tpl = get_template(template)
    dp, rank, _ = _dp()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=list(tpl.stop) + list(stop))
    for name, items in items_by_bench.items():
        mine = shard(items, dp, rank)
        comps = [c[0] for c in generator.generate([tpl.render(q) for _, q, _ in mine], params)] if mine else []
        scores = score_responses(get_reward(reward_name), [c.text for c in comps], [g for _, _, g in mine],
                                 [c.finish_reason == "length" for c in comps], no_answer=no_answer,
                                 timeout_s=timeout_s)
        local = [{"id": i, "completion": c.text, "gold": g, "correct": s.correct, "has_box": s.has_box,
                  "tokens": len(c.token_ids)} for (i, _, g), c, s in zip(mine, comps, scores)]
        rows = gather_dp(local)
        n = max(len(rows), 1)
        out[f"{name}/accuracy"] = sum(r["correct"] for r in rows) / n
        out[f"{name}/box_rate"] = sum(r["has_box"] for r in rows) / n
        out[f"{name}/response_len_mean"] = sum(r["tokens"] for r in rows) / n
        if samples_path is not None and rank == 0:
            samples_path.parent.mkdir(parents=True, exist_ok=True)
            with open(samples_path, "a") as f:
                for r in rows:
                    f.write(json.dumps({"step": step, "benchmark": name, **r}) + "\n")
    out["time_valid_s"] = time.perf_counter() - t0
    return out
