"""Metrics (accuracy with a 95% Wilson interval, avg@K, per-level accuracy), run reports and cross-run comparison."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from octomega.eval.records import write_json

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0%, 100% and small n, unlike p +- z*se)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def mean_ci(values: Sequence[float], z: float = Z95) -> tuple[float, tuple[float, float]]:
    """Mean of per-item scores in [0, 1] with a normal-approximation interval (for avg@K)."""
    n = len(values)
    if n == 0:
        return 0.0, (0.0, 1.0)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return m, (max(0.0, m - half), min(1.0, m + half))


def _acc(records: list[dict], verdict: str) -> dict:
    hits = sum(bool(r["verdicts"][verdict]) for r in records)
    return {"accuracy": hits / len(records) if records else None, "ci95": list(wilson(hits, len(records)))}


def benchmark_metrics(bench, records: list[dict], prompt_tag: str, n_items: int) -> dict:
    greedy = sorted((r for r in records if r["sample"] == 0), key=lambda r: r["index"])
    sampled = [r for r in records if r["sample"] > 0]
    out = {"title": bench.title, "n": len(greedy), "n_expected": n_items, "prompt": prompt_tag,
           **_acc(greedy, "harness"), "math_verify": _acc(greedy, "math_verify"),
           "truncated": sum(r["finish_reason"] == "length" for r in greedy) / len(greedy) if greedy else None,
           "mean_tokens": sum(r["num_tokens"] for r in greedy) / len(greedy) if greedy else None}
    levels = defaultdict(list)
    for r in greedy:
        if (r.get("meta") or {}).get("level") is not None:
            levels[str(r["meta"]["level"])].append(r)
    out["levels"] = {lv: {"n": len(rs), **_acc(rs, "harness")} for lv, rs in sorted(levels.items())}
    # completions (greedy and sampled) whose grader was stopped at its time limit: counted wrong above
    out["grading_timeouts"] = {v: sum((r.get("grading") or {}).get(v) == "timeout" for r in records)
                               for v in ("harness", "math_verify")}
    if sampled:
        per_item: dict[str, list[dict]] = defaultdict(list)
        for r in sampled:
            per_item[r["id"]].append(r)
        k = max(len(v) for v in per_item.values())
        avg = {}
        for verdict in ("harness", "math_verify"):
            m, ci = mean_ci([sum(bool(r["verdicts"][verdict]) for r in rs) / len(rs) for rs in per_item.values()])
            avg[verdict] = {"accuracy": m, "ci95": list(ci)}
        out["avg_at_k"] = {"k": k, **avg}
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown_table(results: dict) -> str:
    name = results.get("model") or "model"
    lines = [f"# {name}: {results['suite']}", "",
             "| Benchmark | n | Accuracy (harness) | 95% CI | math-verify | avg@K (harness) | truncated |",
             "|---|---:|---:|---|---:|---:|---:|"]
    accs = []
    for b in results["benchmarks"].values():
        lo, hi = b["ci95"]
        avg = b.get("avg_at_k")
        avg_s = f"{_pct(avg['harness']['accuracy'])} (K={avg['k']})" if avg else "–"
        lines.append(f"| {b['title']} | {b['n']} | {_pct(b['accuracy'])} | [{_pct(lo)}, {_pct(hi)}] | "
                     f"{_pct(b['math_verify']['accuracy'])} | {avg_s} | {_pct(b['truncated'])}% |")
        if b["accuracy"] is not None:
            accs.append(b["accuracy"])
    if len(accs) > 1:
        lines.append(f"| **Average** ({len(accs)}) | | {_pct(sum(accs) / len(accs))} | | | | |")
    level_rows = [(b["title"], lv, v) for b in results["benchmarks"].values() for lv, v in b["levels"].items()]
    if level_rows:
        lines += ["", "Accuracy by level (greedy, harness verdict):", "", "| Benchmark | level | n | accuracy | 95% CI |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| {t} | {lv} | {v['n']} | {_pct(v['accuracy'])} | [{_pct(v['ci95'][0])}, {_pct(v['ci95'][1])}] |"
                  for t, lv, v in level_rows]
    if results.get("skipped"):
        lines += ["", "Skipped: " + ", ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    late = [(b["title"], b["grading_timeouts"]) for b in results["benchmarks"].values()
            if any((b.get("grading_timeouts") or {}).values())]
    if late:
        lines += ["", "Verdicts stopped at the grading time limit (counted wrong; harness / math-verify): " +
                  ", ".join(f"{t} {g['harness']} / {g['math_verify']}" for t, g in late)]
    gen = results.get("generation", {})
    lines += ["", f"Greedy decoding, max {gen.get('max_new_tokens')} new tokens; accuracy = share of greedy "
              "completions the harness grades correct; CI = Wilson 95%; avg@K = mean accuracy of K samples "
              f"at temperature {gen.get('sample_temperature')}."]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, results: dict) -> None:
    write_json(out_dir / "results.json", results)
    (out_dir / "results.md").write_text(markdown_table(results), encoding="utf-8")


# ---------------------------------------------------------------- comparison across runs
def load_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no results.json (is it an `octomega eval` output directory?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from e


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, verdict: str = "harness") -> tuple[Path, Path]:
    """One markdown table and one PNG bar chart (95% CI error bars) across runs. Returns their paths."""
    runs = [load_run(d) for d in run_dirs]
    labels = [r.get("model") or Path(d).name for r, d in zip(runs, run_dirs)]
    if len(set(labels)) < len(labels):
        labels = [Path(d).name for d in run_dirs]
    benches: list[str] = []
    for r in runs:
        benches += [b for b in r["benchmarks"] if b not in benches]
    titles = {b: next(r["benchmarks"][b]["title"] for r in runs if b in r["benchmarks"]) for b in benches}

    def metric(run: dict, b: str):
        m = run["benchmarks"].get(b)
        if m is None:
            return None
        m = m if verdict == "harness" else m["math_verify"]
        return m["accuracy"], m["ci95"]

    common = [b for b in benches if all(metric(r, b) and metric(r, b)[0] is not None for r in runs)]
    lines = [f"# Comparison ({verdict} verdict, {runs[0]['suite']})", "",
             "| Benchmark | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for b in benches:
        cells = []
        for r in runs:
            m = metric(r, b)
            cells.append("–" if m is None or m[0] is None else f"{_pct(m[0])} ± {_pct((m[1][1] - m[1][0]) / 2)}")
        lines.append(f"| {titles[b]} | " + " | ".join(cells) + " |")
    averages = [sum(metric(r, b)[0] for b in common) / len(common) if common else None for r in runs]
    if len(common) > 1:
        lines.append(f"| **Average** ({len(common)}) | " + " | ".join(_pct(a) for a in averages) + " |")
    lines += ["", "Cells: accuracy (%) ± half the 95% Wilson interval; Average over the benchmarks every run has."]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "compare.md", out / "compare.png"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(png, runs, labels, benches, titles, metric, common, averages, verdict)
    return md, png


def _plot(path, runs, labels, benches, titles, metric, common, averages, verdict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = benches + (["__avg__"] if len(common) > 1 else [])
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.5))
    for k, (run, label) in enumerate(zip(runs, labels)):
        xs, ys, lo, hi = [], [], [], []
        for g, b in enumerate(groups):
            if b == "__avg__":
                xs.append(g), ys.append(100 * averages[k]), lo.append(0), hi.append(0)
                continue
            m = metric(run, b)
            if m is None or m[0] is None:
                continue
            xs.append(g), ys.append(100 * m[0])
            lo.append(max(0.0, 100 * (m[0] - m[1][0]))), hi.append(max(0.0, 100 * (m[1][1] - m[0])))
        pos = [x - 0.4 + width * (k + 0.5) for x in xs]
        bars = ax.bar(pos, ys, width, yerr=[lo, hi], capsize=2, label=label, error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([("Average" if b == "__avg__" else titles[b]) for b in groups], rotation=30, ha="right")
    ax.set_ylabel(f"accuracy (%), {verdict} verdict")
    ax.set_ylim(0, 105)
    ax.set_title(f"{runs[0]['suite']}: greedy accuracy with 95% intervals")
    ax.grid(axis="y", linestyle="--", alpha=0.4)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
