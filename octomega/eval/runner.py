"""run_eval: generate, grade and report a set of benchmarks with any Generator, resumable after a crash.

Per benchmark: a greedy pass (sample 0, the accuracy of the tables) and, for small sets (AMC23, AIME24; all
benchmarks with samples_on="all") when samples > 1, K sampled completions (samples 1..K, avg@K).
Items are processed in fixed chunks of the item list, so a resumed run generates exactly what an uninterrupted
one would have; every chunk is graded and appended to OUT/<benchmark>/samples.jsonl before the next starts.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from octomega.eval.benchmarks import DEFAULT_SUITE, Benchmark, Item, get_benchmark
from octomega.eval.data import BenchmarkDataError, load_items
from octomega.eval.grader import extract_answer_within, grade_verdict, math_verify_verdict
from octomega.eval.prompts import PromptSpec, prompt_for
from octomega.eval.records import append_records, read_records, write_json
from octomega.eval.report import benchmark_metrics, write_report
from octomega.generate import Generator, SamplingParams
from octomega.generate.sampling import row_seed

log = logging.getLogger("octomega.eval")


@dataclass(kw_only=True)
class EvalSettings:
    suite: str = "base-fewshot"
    max_new_tokens: int | None = None
    """tokens per completion; default 1024 few-shot (GAIR-NLP/OctoThinker eval/infer/run_cot_eval.py: max_tokens=1024),
    2048 zero-shot (assumed; the RL evaluation recipes set their RL stair's last cap, recipes/evals.py)."""
    samples: int = 1
    """K sampled completions per item for avg@K (in addition to the greedy one) when > 1."""
    samples_on: str = "small"
    """which benchmarks get the K samples: "small" (AMC23, AIME24) or "all"."""
    # Temperature of the K samples. Not the authors' setting: their eval script is greedy with one repeat
    # (GAIR-NLP/OctoThinker eval/scripts/en_math_cot_eval_last4dir.sh: temperature=0, n_repeats=1); 0.8 and
    # avg@K come from a third-party fork of that harness. An option here, off in the paper recipes.
    sample_temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0
    chunk_size: int = 64
    """items generated, graded and written together (the crash-loss granularity)."""
    mv_timeout_s: float = 5.0
    grade_timeout_s: float = 15.0
    """grading budgets per completion (math-verify, harness); past them the grader is stopped and the completion
    counts as wrong (counted in grading_timeouts)."""

    def new_tokens(self) -> int:
        return self.max_new_tokens or (1024 if self.suite == "base-fewshot" else 2048)


def _settings_key(settings: EvalSettings, spec: PromptSpec, bench: Benchmark, model: str | None) -> dict:
    k = settings.samples if settings.samples > 1 and (settings.samples_on == "all" or bench.small) else 1
    return {"model": model, "suite": settings.suite, "prompt": spec.tag, "max_new_tokens": settings.new_tokens(),
            "samples": k, "sample_temperature": settings.sample_temperature if k > 1 else None,
            "top_p": settings.top_p if k > 1 else None, "seed": settings.seed}


def _score(bench: Benchmark, item: Item, text: str, settings: EvalSettings) -> dict:
    q = item.question
    h = grade_verdict(text, item.gold, bench, question=q, suite=settings.suite, timeout_s=settings.grade_timeout_s)
    m = math_verify_verdict(text, item.gold, timeout_s=settings.mv_timeout_s, letters=bench.letters)
    extracted, x = extract_answer_within(text, bench, question=q, suite=settings.suite,
                                         timeout_s=settings.grade_timeout_s)
    return {
        "extracted": extracted,
        "verdicts": {"harness": h.correct, "math_verify": m.correct},
        # "timeout": the grader was stopped at its budget and the verdict is "wrong" (extract: display only)
        "grading": {"harness": h.status, "math_verify": m.status, "extract": x},
    }


def _passes(bench: Benchmark, settings: EvalSettings, spec: PromptSpec):
    """(name, sample ids, SamplingParams factory by chunk start) for the greedy and the sampled pass."""
    stop = list(spec.stop)
    yield "greedy", [0], lambda start: SamplingParams(max_new_tokens=settings.new_tokens(), temperature=0.0, stop=stop)
    k = settings.samples
    if k > 1 and (settings.samples_on == "all" or bench.small):
        yield "sampled", list(range(1, k + 1)), lambda start: SamplingParams(
            max_new_tokens=settings.new_tokens(), temperature=settings.sample_temperature, top_p=settings.top_p,
            n=k, stop=stop, seed=row_seed(settings.seed, start, 1) % 2**31)


def eval_benchmark(generator: Generator, bench: Benchmark, items: list[Item], settings: EvalSettings,
                   bench_dir: Path, model: str | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    spec = prompt_for(bench.prompt, settings.suite)
    samples_path, run_path = bench_dir / "samples.jsonl", bench_dir / "run.json"
    key = _settings_key(settings, spec, bench, model)
    if overwrite:
        samples_path.unlink(missing_ok=True)
    elif run_path.exists():
        old = json.loads(run_path.read_text())
        if old != key:
            diff = {k: (old.get(k), v) for k, v in key.items() if old.get(k) != v}
            raise ValueError(f"{bench_dir} holds a run with other settings {diff} (old, new); use another --out "
                             "or --overwrite")
    write_json(run_path, key)
    records = read_records(samples_path)
    done = {(r["id"], r["sample"]) for r in records}
    index = {it.id: i for i, it in enumerate(items)}
    passes = list(_passes(bench, settings, spec))
    total = len(items) * len(passes)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=bench.name, unit="prompt", file=sys.stderr, dynamic_ncols=True)
    for pass_name, sample_ids, make_params in passes:
        for start in range(0, len(items), settings.chunk_size):
            chunk = items[start:start + settings.chunk_size]
            todo = [it for it in chunk if any((it.id, s) not in done for s in sample_ids)]
            if todo and pass_name == "sampled":
                todo = chunk  # sampled streams depend on the chunk's composition: regenerate it whole
            if todo:
                outs = generator.generate([spec.render(it.question) for it in todo], make_params(start))
                new = []
                for it, comps in zip(todo, outs):
                    for s, c in zip(sample_ids, comps):
                        if (it.id, s) in done:
                            continue
                        new.append({"benchmark": bench.name, "id": it.id, "index": index[it.id], "sample": s,
                                    "greedy": pass_name == "greedy", "prompt": spec.render(it.question),
                                    "completion": c.text, "finish_reason": c.finish_reason,
                                    "num_tokens": len(c.token_ids), "gold": it.gold, "meta": it.meta,
                                    **_score(bench, it, c.text, settings)})
                        done.add((it.id, s))
                append_records(samples_path, new)
                records.extend(new)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    wanted = {it.id for it in items}
    return benchmark_metrics(bench, [r for r in records if r["id"] in wanted], spec.tag, len(items))


def run_eval(generator: Generator, benchmarks: Sequence[str] | None, suite: str, out_dir: str | Path,
             limit: int | None = None, samples: int = 1, data_dir: str | Path | None = None, *,
             hub: bool = False, model_name: str | None = None, progress: bool = True, overwrite: bool = False,
             **settings_kw) -> dict:
    """Evaluate ``generator`` on benchmarks (None = the default suite; missing test files are then skipped with
    a warning, while a benchmark named explicitly must have its file). Writes OUT/<benchmark>/samples.jsonl,
    OUT/results.json and OUT/results.md; returns the results dict."""
    settings = EvalSettings(suite=suite, samples=samples, **settings_kw)
    prompt_for("gsm_8shot", suite)  # validates the suite name early
    out = Path(out_dir)
    explicit = benchmarks is not None
    benches = [get_benchmark(b) for b in (benchmarks if explicit else DEFAULT_SUITE)]
    results = {"model": model_name, "suite": suite, "generation": asdict(settings) | {"max_new_tokens": settings.new_tokens()},
               "limit": limit, "benchmarks": {}, "skipped": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    loaded = []
    for bench in benches:
        try:
            loaded.append((bench, load_items(bench, data_dir, hub=hub, limit=limit)))
        except BenchmarkDataError as e:
            if explicit:
                raise
            log.warning("skipping %s: %s", bench.name, e)
            print(f"warning: skipping {bench.name}: {e}", file=sys.stderr)
            results["skipped"][bench.name] = str(e)
    for bench, items in loaded:
        metrics = results["benchmarks"][bench.name] = eval_benchmark(
            generator, bench, items, settings, out / bench.name, model=model_name, progress=progress,
            overwrite=overwrite)
        late = metrics.get("grading_timeouts") or {}
        if any(late.values()):
            print(f"warning: {bench.name}: {late.get('harness', 0)} harness / {late.get('math_verify', 0)} "
                  f"math-verify verdicts ran past the grading time limit ({settings.grade_timeout_s:g} s / "
                  f"{settings.mv_timeout_s:g} s) and count as wrong; see grading_timeouts in results.json",
                  file=sys.stderr)
        write_report(out, results)  # partial results survive a crash in a later benchmark
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(out, results)
    return results
