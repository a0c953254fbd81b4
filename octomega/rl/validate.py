"""Greedy zero-shot validation during RL: benchmark items in the rollout template, scored by the reward function.

Accuracy is the share of correct answers (OctoThinker: the share of +1 rewards); the box rate and the mean
length are reported beside it. With `sampled` (valid.sampled), one more pass draws one completion per item at the
rollout's temperature and top_p, from fixed per-item seeds (the same draws at every validation, so before and
after compare pairwise): `<bench>/sampled_accuracy`, the accuracy of the policy RL actually optimises. Items are
split over the DP ranks and gathered. Every rank of a model-parallel group calls the generator with the same items
(a megatron backend generates collectively).
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


SAMPLED_SEED = 20261202  # validation's own sampling seed: the same draws at every validation of a run


def run_validation(generator, items_by_bench: dict[str, list[tuple[str, str, str]]], *, template: str,
                   stop: list[str], max_new_tokens: int, reward_name: str, no_answer: float, timeout_s: float,
                   samples_path: Path | None = None, step: int = 0,
                   sampled: tuple[float, float] | None = None) -> dict[str, float]:
    """`sampled`: (temperature, top_p) of an extra one-sample-per-item pass, or None (greedy only)."""
    tpl = get_template(template)
    dp, rank, _ = _dp()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    stops = list(tpl.stop) + list(stop)
    modes = [("", SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stops))]
    if sampled is not None:
        modes.append(("sampled_", SamplingParams(max_new_tokens=max_new_tokens, temperature=sampled[0],
                                                 top_p=sampled[1], stop=stops, seed=SAMPLED_SEED + rank)))
    for (name, items), (prefix, params) in ((b, m) for b in items_by_bench.items() for m in modes):
        mine = shard(items, dp, rank)
        comps = [c[0] for c in generator.generate([tpl.render(q) for _, q, _ in mine], params)] if mine else []
        scores = score_responses(get_reward(reward_name), [c.text for c in comps], [g for _, _, g in mine],
                                 [c.finish_reason == "length" for c in comps], no_answer=no_answer,
                                 timeout_s=timeout_s)
        local = [{"id": i, "completion": c.text, "gold": g, "correct": s.correct, "has_box": s.has_box,
                  "tokens": len(c.token_ids), "grading_timeout": s.timed_out}
                 for (i, _, g), c, s in zip(mine, comps, scores)]
        rows = gather_dp(local)
        n = max(len(rows), 1)
        out[f"{name}/{prefix}accuracy"] = sum(r["correct"] for r in rows) / n
        out[f"{name}/{prefix}box_rate"] = sum(r["has_box"] for r in rows) / n
        out[f"{name}/{prefix}response_len_mean"] = sum(r["tokens"] for r in rows) / n
        out[f"{name}/{prefix}grading_timeouts"] = float(sum(r["grading_timeout"] for r in rows))
        if samples_path is not None and rank == 0:
            samples_path.parent.mkdir(parents=True, exist_ok=True)
            with open(samples_path, "a") as f:
                for r in rows:
                    f.write(json.dumps({"step": step, "benchmark": name, "mode": prefix.rstrip("_") or "greedy",
                                        **r}) + "\n")
    out["time_valid_s"] = time.perf_counter() - t0
    return out
