"""The tiny pipeline's report: tables and plots from the run directories, and an honest verdict.

    python -m octomega.pipeline.report ROOT      -> ROOT/report/report.md + PNG plots

Reads ROOT/tiny_stable and ROOT/tiny_decay_<b>/metrics.jsonl (loss, LR, validation on the fixed held-out sets),
ROOT/tiny_rl_grpo_<b>/metrics.jsonl (RL curves) and ROOT/eval/<model>-<suite>/ (accuracy, box rate).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from octomega.jsonl import read_jsonl

BRANCHES = ("web", "short", "long", "hybrid")
LABEL = {"web": "stable-only (web decay)", "short": "decay short", "long": "decay long", "hybrid": "decay hybrid"}
# One colour per branch in every plot of the report (the stable stage is black). Each artist drawn for a branch
# carries the branch as its gid (tests/pipeline checks the colours through it).
COLOR = {"web": "tab:gray", "short": "tab:blue", "long": "tab:red", "hybrid": "tab:green"}


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def _first(row: dict, *keys):
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return None


def eval_summary(run: Path, bench: str = "tiny_arith") -> dict | None:
    """Accuracy (greedy, harness verdict), per level, and the share of completions with a \\boxed answer."""
    res = run / "results.json"
    if not res.exists():
        return None
    b = json.loads(res.read_text())["benchmarks"].get(bench)
    if b is None:
        return None
    samples = [r for r in _jsonl(run / bench / "samples.jsonl") if r.get("sample", 0) == 0]
    boxed = sum("\\boxed" in (r.get("completion") or "") for r in samples) / len(samples) if samples else None
    return {"accuracy": b["accuracy"], "ci95": b.get("ci95"), "n": b["n"], "box_rate": boxed,
            "levels": {k: v["accuracy"] for k, v in (b.get("levels") or {}).items()},
            "mean_tokens": b.get("mean_tokens")}


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def plot_losses(root: Path, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stable = _jsonl(root / "tiny_stable" / "metrics.jsonl")
    if not stable:
        return None
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    train = [r for r in stable if r["kind"] == "train"]
    offset = train[-1]["tokens"] if train else 0
    ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], color="black", label="stable (train)")
    ax_lr.plot([r["tokens"] for r in train], [r["lr"] for r in train], color="black")
    markers = {"web": "o", "qa_short": "x", "qa_long": "^"}  # one marker per fixed validation set

    def scatter(x, y, color, valid_set, **kw):
        m = markers.get(valid_set, "s")
        ax.scatter(x, y, s=14, color=color, marker=m, facecolors="none" if m in ("o", "^") else None, **kw)

    def scatter_valid(rows, color, shift, **kw):
        for r in (r for r in rows if r["kind"] == "valid"):
            for k, v in r.items():
                if k.startswith("valid_loss/"):
                    scatter([shift + r["tokens"]], [v], color, k.removeprefix("valid_loss/"), **kw)

    scatter_valid(stable, "black", 0)
    for b in BRANCHES:
        rows = [r for r in _jsonl(root / f"tiny_decay_{b}" / "metrics.jsonl") if r["kind"] == "train"]
        if not rows:
            continue
        xs = [offset + r["tokens"] for r in rows]
        ax.plot(xs, [r["loss"] for r in rows], color=COLOR[b], label=f"{LABEL[b]} (train)", gid=b)
        ax_lr.plot(xs, [r["lr"] for r in rows], color=COLOR[b], gid=b)
        scatter_valid(_jsonl(root / f"tiny_decay_{b}" / "metrics.jsonl"), COLOR[b], offset, gid=b)
    for name in markers:  # legend entries for the validation sets' markers
        scatter([], [], "black", name, label=f"validation: {name}")
    ax.set_ylabel("loss")
    ax.set_title("Stable then decay: training loss (lines) and validation loss on fixed held-out sets (markers)")
    ax.legend(fontsize=8, ncol=2)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("tokens")
    fig.tight_layout()
    path = out / "loss_lr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_rl(root: Path, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {b: [r for r in _jsonl(root / f"tiny_rl_grpo_{b}" / "metrics.jsonl") if r.get("kind", "train") == "train"]
              for b in BRANCHES}
    if not any(series.values()):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for b, rows in series.items():
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        style = {"color": COLOR[b], "label": LABEL[b], "gid": b}
        axes[0].plot(steps, [_first(r, "reward_mean", "reward") for r in rows], **style)
        axes[1].plot(steps, [_first(r, "accuracy", "acc") for r in rows], **style)
        axes[2].plot(steps, [_first(r, "response_length_mean", "response_len_mean", "length_mean") for r in rows],
                     **style)
    for ax, title in zip(axes, ("reward (+1 correct / -1 otherwise)", "training accuracy", "response length (tokens)")):
        ax.set_title(title)
        ax.set_xlabel("RL step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "rl_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_before_after(rows: list[dict], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["before"] and r["after"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    before = {"alpha": 0.4, "hatch": "//"}  # the branch's colour, light and hatched before RL, solid after
    for x, r in enumerate(rows):
        b = r["branch"]
        ax.bar(x - 0.2, 100 * r["before"]["accuracy"], width=0.4, color=COLOR[b], gid=b, **before)
        ax.bar(x + 0.2, 100 * r["after"]["accuracy"], width=0.4, color=COLOR[b], gid=b)
    ax.set_xticks(range(len(rows)), [LABEL[r["branch"]] for r in rows], fontsize=8)
    ax.set_ylabel("greedy zero-shot accuracy (%)")
    ax.set_title("tiny_arith (300 problems): same zero-shot prompt before and after GRPO")
    ax.legend(handles=[Patch(facecolor="gray", label="before RL", **before), Patch(facecolor="gray", label="after RL")])
    fig.tight_layout()
    path = out / "accuracy_before_after.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def gain_se(before: dict, after: dict) -> float:
    """Standard error of an accuracy change (after - before) on n problems, treating the two runs as independent
    (conservative: the same problems are scored twice, which correlates them)."""
    n = max(before.get("n") or 1, 1)
    return math.sqrt(sum(p * (1 - p) for p in (before["accuracy"], after["accuracy"])) / n)


def verdict(rows: list[dict]) -> str:
    """Did the paper's ordering appear: QA branches gain more from RL than the stable-only model? A branch counts
    as gaining more only when its gain exceeds the stable-only model's by two standard errors."""
    done = {r["branch"]: r for r in rows if r["before"] and r["after"]}
    if "web" not in done or len(done) < 2:
        return "Not enough finished runs to compare RL gains."
    gains = {b: r["after"]["accuracy"] - r["before"]["accuracy"] for b, r in done.items()}
    ses = {b: gain_se(r["before"], r["after"]) for b, r in done.items()}
    base = gains["web"]
    others = [b for b in gains if b != "web"]
    better = [b for b in others if gains[b] - base > 2 * math.hypot(ses[b], ses["web"])]
    level = [b for b in others if b not in better and gains[b] >= base]
    worse = [b for b in others if gains[b] < base]
    text = ["RL gain (zero-shot accuracy after - before, +- one standard error): " +
            ", ".join(f"{LABEL[b]} {100 * g:+.1f} +- {100 * ses[b]:.1f} points" for b, g in gains.items()) + "."]
    if better and not (level or worse):
        text.append("The paper's ordering appeared: every branch with QA data in its decay gained more from RL than "
                    "the stable-only model, each by more than two standard errors.")
    elif better:
        rest = [f"{', '.join(LABEL[b] for b in level)} not by more than the noise" if level else "",
                f"{', '.join(LABEL[b] for b in worse)} gained less" if worse else ""]
        text.append(f"The paper's ordering appeared only partly: {', '.join(LABEL[b] for b in better)} gained more "
                    f"than the stable-only model (beyond two standard errors); " + "; ".join(r for r in rest if r)
                    + ".")
    else:
        text.append("The paper's ordering did NOT clearly appear in this run: no QA branch gained more from RL than "
                    "the stable-only model by more than two standard errors.")
    text.append("Seeds vary more than this noise (docs/tiny_science.md). At this scale a stable-only model that never "
                "answers in the Question/Answer format gets no reward to learn from: a format gap, not a reasoning "
                "gap.")
    boxes = {b: (r["before"].get("box_rate"), r["after"].get("box_rate")) for b, r in done.items()}
    moved = [f"{LABEL[b]} {100 * b0:.0f}% -> {100 * b1:.0f}%" for b, (b0, b1) in boxes.items()
             if b0 is not None and b1 is not None and b1 - b0 >= 0.05]
    if moved:  # a gain that is (partly) learning to answer in a box, within the response cap
        text.append("Box rate (answers that end with a \\boxed{} inside the token cap) rose: " + ", ".join(moved)
                    + "; part of those gains is format, not arithmetic.")
    return " ".join(text)


def build_report(root: Path) -> Path:
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for b in BRANCHES:
        rows.append({"branch": b, "before": eval_summary(root / "eval" / f"decay_{b}-zeroshot"),
                     "fewshot": eval_summary(root / "eval" / f"decay_{b}-fewshot"),
                     "after": eval_summary(root / "eval" / f"rl_{b}-zeroshot")})
    lines = ["# octomega tiny pipeline report", "",
             "A 1M-parameter Llama on Megatron-Core, 2 CPU cores: stable stage on synthetic math-web text, four "
             "compute-matched decay branches, GRPO from each, greedy evaluation on 300 held-out arithmetic word "
             "problems (100 per level) with the same zero-shot prompt before and after RL.", "",
             "## Accuracy before and after RL", "",
             "| model | zero-shot before | box rate before | zero-shot after RL | box rate after | change | few-shot before | L1 / L2 / L3 after |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        bef, aft, few = r["before"], r["after"], r["fewshot"]
        change = f"{100 * (aft['accuracy'] - bef['accuracy']):+.1f}" if bef and aft else "–"
        levels = " / ".join(_pct(v) for v in aft["levels"].values()) if aft else "–"
        lines.append(f"| {LABEL[r['branch']]} | {_pct(bef and bef['accuracy'])} | {_pct(bef and bef['box_rate'])} | "
                     f"{_pct(aft and aft['accuracy'])} | {_pct(aft and aft['box_rate'])} | {change} | "
                     f"{_pct(few and few['accuracy'])} | {levels} |")
    lines += ["", "Accuracy in %, greedy, harness verdict (math-verify agrees on this integer-answer set). Box rate: "
              "share of completions with a \\boxed{} answer (reported apart from correctness).", "",
              "## Verdict", "", verdict(rows), ""]
    for title, name in (("Loss across stable and decay, with the LR schedule", plot_losses(root, out)),
                        ("RL curves per branch", plot_rl(root, out)),
                        ("Accuracy before and after RL", plot_before_after(rows, out))):
        if name:
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    durations = []
    for marker in sorted((root / "stages").glob("*.done")):
        durations.append((marker.stem, json.loads(marker.read_text()).get("seconds", 0)))
    if durations:
        lines += ["## Stage times", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {n} | {s:.0f} |" for n, s in durations]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    return out / "report.md"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m octomega.pipeline.report ROOT")
    print(f"wrote {build_report(Path(sys.argv[1]))}")
