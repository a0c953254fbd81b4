"""`octomega pipeline`: the stage runner (dependencies, skipping, --from, failures, priorities), the tiny stage
graph, the report and its verdict, and the paper-scale sbatch chain (dry run; submission is covered by
tests/slurm against a real Slurm). The runner's stages here are small `python -c` commands, not the real stages:
the real ones run in `make demo` and, piece by piece, in tests/train, tests/rl and tests/eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from octomega.pipeline.report import build_report, verdict
from octomega.pipeline.runner import Runner, Stage, StageFailed, downstream
from octomega.pipeline.tiny import BRANCHES, tiny_stages


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _append(log: Path, name: str, sleep: float = 0.0) -> list[str]:
    return _py(f"import time; time.sleep({sleep}); open({str(log)!r}, 'a').write({name!r} + '\\n')")


def test_runner_respects_dependencies_and_skips_finished_stages(tmp_path):
    log = tmp_path / "order.txt"
    stages = [Stage("a", _append(log, "a")), Stage("b", _append(log, "b"), ["a"]),
              Stage("c", _append(log, "c"), ["a"]), Stage("d", _append(log, "d"), ["b", "c"])]
    out = tmp_path / "run"
    durations = Runner(stages, out, jobs=2).run()
    order = log.read_text().split()
    assert set(durations) == {"a", "b", "c", "d"} and order[0] == "a" and order[-1] == "d"
    assert all((out / "stages" / f"{n}.done").exists() for n in "abcd")
    assert (out / "logs" / "b.log").read_text().startswith("$ ")
    assert Runner(stages, out, jobs=2).run() == {}  # everything done: nothing runs again
    assert log.read_text().split() == order


def test_from_redoes_a_stage_and_everything_after_it(tmp_path):
    log = tmp_path / "order.txt"
    stages = [Stage("a", _append(log, "a")), Stage("b", _append(log, "b"), ["a"]),
              Stage("c", _append(log, "c"), ["b"]), Stage("x", _append(log, "x"), ["a"])]
    runner = Runner(stages, tmp_path / "run")
    runner.run()
    assert downstream(stages, "b") == {"b", "c"}
    assert runner.reset_from("b") == ["b", "c"]
    log.write_text("")
    runner.run()
    assert sorted(log.read_text().split()) == ["b", "c"]
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        runner.reset_from("nope")


def test_a_failed_stage_names_its_log_and_stops_the_others(tmp_path):
    marker = tmp_path / "slow_finished"
    stages = [Stage("slow", _py(f"import time; time.sleep(20); open({str(marker)!r}, 'w')")),
              Stage("bad", _py("import sys; print('something broke here'); sys.exit(3)")),
              Stage("after", _py("pass"), ["bad"])]
    out = tmp_path / "run"
    with pytest.raises(StageFailed, match=r"stage bad failed \(exit 3\)[\s\S]*something broke here"):
        Runner(stages, out, jobs=2).run()
    assert not (out / "stages" / "bad.done").exists() and not (out / "stages" / "after.done").exists()
    assert not marker.exists()  # the running stage was terminated, not left behind


def test_higher_priority_stages_start_first(tmp_path):
    log = tmp_path / "order.txt"
    stages = [Stage("eval", _append(log, "eval"), priority=0), Stage("train", _append(log, "train"), priority=3),
              Stage("rl", _append(log, "rl"), priority=2)]
    Runner(stages, tmp_path / "run", jobs=1).run()
    assert log.read_text().split() == ["train", "rl", "eval"]


def test_missing_dependencies_are_reported(tmp_path):
    with pytest.raises(StageFailed, match="cannot start"):
        Runner([Stage("a", _py("pass"), ["ghost"])], tmp_path / "run").run()


def test_tiny_graph_covers_every_stage_of_the_paper(tmp_path):
    stages = {s.name: s for s in tiny_stages(tmp_path)}
    assert stages["stable"].deps == ["data"] and stages["stable"].threads == 2
    for b in BRANCHES:
        assert stages[f"decay_{b}"].deps == ["stable"]
        assert stages[f"rl_{b}"].deps == [f"decay_{b}"] and f"tiny_rl_grpo_{b}" in stages[f"rl_{b}"].cmd
        for name in (f"eval_before_{b}", f"eval_after_{b}"):  # the same zero-shot prompt before and after RL
            cmd = stages[name].cmd
            assert cmd[cmd.index("--suite") + 1] == "qa-zeroshot"
        assert "base-fewshot" in stages[f"eval_fewshot_{b}"].cmd
        assert stages[f"decay_{b}"].priority > stages[f"rl_{b}"].priority > stages[f"eval_before_{b}"].priority
    assert set(stages["report"].deps) == set(stages) - {"report"}
    assert set(BRANCHES) == {"web", "short", "long", "hybrid"}


def test_tiny_stages_pin_cpu_numerics_unless_told_native(tmp_path):
    from octomega import numerics

    pinned = tiny_stages(tmp_path)
    assert all({k: s.env[k] for k in numerics.PINS} == numerics.PINS for s in pinned)
    assert not any("train.cpu_numerics=native" in s.cmd for s in pinned)
    native = {s.name: s for s in tiny_stages(tmp_path, cpu_numerics="native", rl_overrides=["train.steps=3"])}
    assert not any(k in s.env for s in native.values() for k in numerics.PINS)
    for name in ("stable", "decay_long", "rl_long"):  # the tiny recipes pin unless overridden
        assert "train.cpu_numerics=native" in native[name].cmd
    assert native["rl_long"].cmd[-2:] == ["train.cpu_numerics=native", "train.steps=3"]


def _fake_eval(root: Path, name: str, accuracy: float, n: int = 300) -> None:
    """An `octomega eval` output directory with `accuracy` (results.json + samples.jsonl), written by hand."""
    d = root / "eval" / name
    (d / "tiny_arith").mkdir(parents=True)
    correct = round(accuracy * n)
    (d / "results.json").write_text(json.dumps({"benchmarks": {"tiny_arith": {
        "n": n, "accuracy": correct / n, "levels": {lv: {"accuracy": accuracy} for lv in ("L1", "L2", "L3")}}}}))
    with open(d / "tiny_arith" / "samples.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"sample": 0, "completion": f"x = 1. The answer is \\boxed{{{1 if i < correct else 2}}}."})
                    + "\n")


def _row(branch: str, before: float, after: float, n: int = 300) -> dict:
    return {"branch": branch, "before": {"accuracy": before, "n": n}, "after": {"accuracy": after, "n": n}}


def test_verdict_claims_the_ordering_only_beyond_the_noise():
    clear = verdict([_row("web", 0, 0), _row("short", 0.5, 0.65), _row("long", 0.1, 0.25)])
    assert "The paper's ordering appeared: every branch" in clear
    noise = verdict([_row("web", 0, 0), _row("short", 0.5, 0.52), _row("long", 0.1, 0.11)])
    assert "did NOT clearly appear" in noise
    partly = verdict([_row("web", 0, 0), _row("short", 0.687, 0.637), _row("long", 0.093, 0.2)])
    assert "only partly" in partly and "decay long" in partly.split("only partly")[1].split("gained more")[0]
    assert "decay short gained less" in partly
    assert verdict([_row("short", 0.5, 0.6)]).startswith("Not enough")
    assert "Box rate" not in partly  # no box rates given: no claim about format
    boxed = [_row("web", 0, 0), _row("long", 0.093, 0.2)]
    boxed[1]["before"]["box_rate"], boxed[1]["after"]["box_rate"] = 0.86, 1.0
    boxed[0]["before"]["box_rate"] = boxed[0]["after"]["box_rate"] = 0.01
    assert "Box rate (answers that end with a \\boxed{} inside the token cap) rose: decay long 86% -> 100%" in \
        verdict(boxed) and "stable-only" not in verdict(boxed).split("Box rate")[1]


def test_report_tables_plots_and_verdict(tmp_path):
    for b, (before, after) in {"web": (0.0, 0.0), "short": (0.6, 0.75), "long": (0.1, 0.3),
                               "hybrid": (0.5, 0.62)}.items():
        _fake_eval(tmp_path, f"decay_{b}-zeroshot", before)
        _fake_eval(tmp_path, f"decay_{b}-fewshot", before / 2)
        _fake_eval(tmp_path, f"rl_{b}-zeroshot", after)
    rl = tmp_path / "tiny_rl_grpo_short"
    rl.mkdir()
    (rl / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"kind": "train", "step": i, "reward_mean": -1 + i / 10, "accuracy": i / 20, "response_len_mean": 40})
        for i in range(1, 6)))
    for run, lr in (("tiny_stable", 1e-3), ("tiny_decay_short", 5e-4)):
        (tmp_path / run).mkdir()
        rows = [{"kind": "train", "step": i, "tokens": 4096 * i, "loss": 3 - i / 5, "lr": lr} for i in range(1, 6)]
        rows.append({"kind": "valid", "step": 5, "tokens": 4096 * 5, "valid_loss/web": 2.0, "valid_loss/qa_short": 3.0,
                     "valid_loss/qa_long": 4.0})
        (tmp_path / run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = build_report(tmp_path)
    text = report.read_text()
    assert "| decay short | 60.0 | 100.0 | 75.0 |" in text and "+15.0" in text
    assert "The paper's ordering appeared" in text
    assert (tmp_path / "report" / "rl_curves.png").stat().st_size > 1000
    assert (tmp_path / "report" / "loss_lr.png").stat().st_size > 1000 and "![Loss across stable and decay" in text
    assert (tmp_path / "report" / "accuracy_before_after.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "summary.json").read_text())[1]["branch"] == "short"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "octomega", "pipeline", *args], capture_output=True, text=True,
                          timeout=120)


def test_tiny_dry_run_prints_commands_and_runs_nothing(tmp_path):
    p = _cli("tiny", "--out", str(tmp_path / "t"), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "# rl_long (after decay_long; 1 thread(s))" in p.stdout and "octomega rl tiny_rl_grpo_long" in p.stdout
    assert not (tmp_path / "t").exists()
    p = _cli("tiny", "--out", str(tmp_path / "t"), "--from", "nope")
    assert p.returncode == 2 and "unknown stage 'nope'" in p.stderr


def test_paper_chain_dry_run_has_every_stage_with_dependencies():
    p = _cli("llama32_1b", "--dry-run")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "JOB_STABLE=$(MODEL=llama32_1b sbatch --parsable" in out and "stable.sh llama32_1b_stable" in out
    assert "JOB_EVAL_BASE=$(MODEL=llama32_1b sbatch --parsable /" in out and "eval.sh llama32_1b_eval_base)" in out
    for b in ("long", "short", "hybrid"):
        B = b.upper()
        assert f"JOB_DECAY_{B}=$(MODEL=llama32_1b sbatch --parsable --dependency=afterok:$JOB_STABLE" in out
        assert f"--dependency=afterok:$JOB_DECAY_{B}" in out and f"llama32_1b_rl_grpo_{b}" in out
        # the evaluation recipes, after the HF export of the decay branch and after RL
        assert (f"JOB_EVAL_{B}=$(MODEL=llama32_1b sbatch --parsable --dependency=afterok:$JOB_CONVERT_{B} "
                in out) and f"eval.sh llama32_1b_eval_{b})" in out
        assert (f"JOB_EVAL_RL_{B}=$(MODEL=llama32_1b sbatch --parsable --dependency=afterok:$JOB_RL_{B} " in out
                and f"eval.sh llama32_1b_eval_rl_{b})" in out)
    assert "SUITE=" not in out  # the recipes carry the suite
    bad = _cli("llama32_1b")
    assert bad.returncode == 2 and "--dry-run" in bad.stderr
    assert _cli("llama99", "--dry-run").returncode == 2


def test_paper_chain_evaluates_what_the_jobs_before_it_write(monkeypatch):
    """Each eval job runs an evaluation recipe whose model is the directory its dependency writes: convert_<b>'s
    output, the RL run's RUN/hf, the base model the stable stage starts from."""
    import recipes
    from octomega.pipeline.paper import BRANCHES, chain
    from recipes.evals import EvalRecipe

    monkeypatch.setenv("OCTOMEGA_RUNS", "/cluster/runs")
    monkeypatch.setenv("OCTOMEGA_MODELS", "/cluster/models")
    jobs = {name: (cmd, deps) for name, cmd, deps, _ in chain("llama32_3b")}
    evals = {name: recipes.get(cmd[1]) for name, (cmd, _) in jobs.items() if cmd[0].endswith("/eval.sh")}
    assert set(evals) == {"eval_base", *(f"eval_{b}" for b in BRANCHES), *(f"eval_rl_{b}" for b in BRANCHES)}
    assert all(isinstance(r, EvalRecipe) and len(jobs[n][0]) == 2 for n, r in evals.items())
    assert jobs["eval_base"][1] == [] and evals["eval_base"].model == recipes.get("llama32_3b_stable").init.hf_path
    for b in BRANCHES:
        convert = jobs[f"convert_{b}"][0]
        assert jobs[f"eval_{b}"][1] == [f"convert_{b}"] and evals[f"eval_{b}"].name == f"llama32_3b_eval_{b}"
        assert evals[f"eval_{b}"].model == convert[-1] == f"/cluster/runs/llama32_3b_decay_{b}/hf"
        rl = recipes.get(jobs[f"rl_{b}"][0][1])
        assert jobs[f"eval_rl_{b}"][1] == [f"rl_{b}"] and evals[f"eval_rl_{b}"].name == f"llama32_3b_eval_rl_{b}"
        assert evals[f"eval_rl_{b}"].model == f"{rl.run_dir}/hf" and evals[f"eval_rl_{b}"].suite == "rl-zeroshot"


def test_paper_chain_submits_without_the_shells_eval_overrides(tmp_path):
    """--submit against a fake sbatch (no Slurm here) that records each job's SUITE/BACKEND/OUT/MODEL and its
    dependency: an OUT or BACKEND left in the shell must not reach the eval jobs, whose recipes set them."""
    import os
    bin_dir, record = tmp_path / "bin", tmp_path / "jobs.txt"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nn=$(($(wc -l < %s 2>/dev/null || echo 0) + 1))\n"
        'echo "$n suite=${SUITE-unset} backend=${BACKEND-unset} out=${OUT-unset} model=$MODEL $*" >> %s\n'
        'echo "$n;cluster"\n' % (record, record))
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": "/tmp/stray", "BACKEND": "hf"}
    env.pop("SUITE", None)
    p = subprocess.run([sys.executable, "-m", "octomega", "pipeline", "llama32_1b", "--submit"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "# not passed to the jobs: BACKEND=hf, OUT=/tmp/stray" in p.stdout, p.stdout
    lines = record.read_text().splitlines()
    assert len(lines) == 2 + 5 * 3  # stable, eval_base, and five jobs per branch
    assert all("suite=unset backend=unset out=unset model=llama32_1b" in line for line in lines), lines
    # job ids come from sbatch's --parsable output: decay_long (job 3) waits on stable (job 1)
    assert "--dependency=afterok:1 " in lines[2] and "decay.sh long" in lines[2]
    assert "submitted: stable=1, eval_base=2, decay_long=3" in p.stdout


def _progress_line(k: int, n: int, loss: float, eta: str) -> str:
    """A console line of octomega train (octomega/train/callbacks.py)."""
    return (f"step {k}/{n} | tokens {4096 * k:.3g} | loss {loss:.4f} | lr 1.000e-03 | grad_norm 0.500 | tok/s 1,000 "
            f"| TFLOP/s/gpu 0.00 | ETA {eta}")


def test_stage_progress_reads_the_last_progress_line_of_a_log(tmp_path):
    from octomega.pipeline.runner import stage_progress

    log = tmp_path / "stage.log"
    assert stage_progress(log) is None  # not started yet
    log.write_text("$ python -m octomega train tiny_stable\nbuilding the model\n")
    assert stage_progress(log) is None  # nothing to show yet
    log.write_text("$ cmd\n" + _progress_line(10, 800, 3.25, "4:10") + "\n[valid] step 10/800 valid_loss/web 3.1\n"
                   + _progress_line(20, 800, 3.125, "4:02") + "\nsaved checkpoint runs/x/iter_20\nstep 30/8")
    assert stage_progress(log) == "step 20/800 (2%) | loss 3.1250 | ETA 4:02"  # the torn last line is not read
    rl = "step 3/40 | reward -0.250 | acc 0.375 | box 0.500 | len 42 | gnorm 0.812 | gen 3.1s | ETA 1:07\n"
    log.write_text("x" * 50_000 + "\n" + rl)  # only the end of a long log is read
    assert stage_progress(log) == "step 3/40 (7%) | reward -0.250 | acc 0.375 | ETA 1:07"


def test_runner_shows_the_progress_of_running_stages(tmp_path, capsys):
    """A stage that prints training console lines: while it runs the console shows its step, loss and ETA, one line
    each time they moved (not at every look); a stage without such lines stays quiet until it is done."""
    code = ("import time\n"
            "for k in range(1, 5):\n"
            "    print(f'step {k}/4 | tokens 1e+04 | loss {3 - k / 10:.4f} | lr 1.000e-03 | ETA 0:0{4 - k}', flush=True)\n"
            "    time.sleep(1.0)\n")
    stages = [Stage("train", _py(code), what="fake training"), Stage("quiet", _py("import time; time.sleep(2)"))]
    Runner(stages, tmp_path / "run", jobs=2, progress_every=0.2).run()
    out = capsys.readouterr().out.splitlines()
    shown = [line.removeprefix("[pipeline] train: ") for line in out if line.startswith("[pipeline] train: ")]
    expected = [f"step {k}/4 ({25 * k}%) | loss {3 - k / 10:.4f} | ETA 0:0{4 - k}" for k in range(1, 5)]
    assert shown and all(s in expected for s in shown), out
    assert shown == sorted(set(shown), key=expected.index), shown  # in order, each once
    assert len(shown) >= 2, shown  # it moved while it ran: shown again
    assert not any(line.startswith("[pipeline] quiet:") for line in out)
    start, done = out.index("[pipeline] start train: fake training"), \
        next(i for i, line in enumerate(out) if line.startswith("[pipeline] done  train"))
    assert start < out.index("[pipeline] train: " + shown[0]) < done


def _artist_colour(artist) -> str:
    from matplotlib.collections import Collection
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        colour = artist.get_color()
    elif isinstance(artist, Collection):  # validation markers: hollow ones have only an edge
        colour = artist.get_edgecolor()[0]
    else:  # a bar
        colour = artist.get_facecolor()
    return to_hex(colour, keep_alpha=False)


def test_each_branch_has_one_colour_in_every_plot_of_the_report(tmp_path, monkeypatch):
    """Every artist the report draws for a branch (loss and LR lines, validation markers, RL curves, accuracy bars)
    has that branch's colour, the same in every figure, and no two branches share a colour."""
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from octomega.pipeline.report import COLOR

    for i, b in enumerate(BRANCHES):
        _fake_eval(tmp_path, f"decay_{b}-zeroshot", 0.1 * i)
        _fake_eval(tmp_path, f"rl_{b}-zeroshot", 0.1 * i + 0.05)
        (tmp_path / f"tiny_rl_grpo_{b}").mkdir()
        (tmp_path / f"tiny_rl_grpo_{b}" / "metrics.jsonl").write_text("\n".join(json.dumps(
            {"kind": "train", "step": k, "reward_mean": -1 + k / 10, "accuracy": k / 20, "response_len_mean": 40})
            for k in range(1, 4)))
    for run in ("tiny_stable", *(f"tiny_decay_{b}" for b in BRANCHES)):
        (tmp_path / run).mkdir()
        rows = [{"kind": "train", "step": k, "tokens": 4096 * k, "loss": 3 - k / 5, "lr": 1e-3} for k in range(1, 4)]
        rows.append({"kind": "valid", "step": 3, "tokens": 4096 * 3, "valid_loss/web": 2.0, "valid_loss/qa_short": 3.0,
                     "valid_loss/qa_long": 4.0})
        (tmp_path / run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    build_report(tmp_path)
    assert len(figures) == 3  # losses, RL curves, accuracy before and after
    colours: dict[str, set[str]] = {b: set() for b in BRANCHES}
    for fig in figures:
        drawn = {b: {_artist_colour(a) for a in fig.findobj(lambda a, b=b: a.get_gid() == b)} for b in BRANCHES}
        assert all(drawn.values()), f"{fig.axes[0].get_title()}: a branch is missing: {drawn}"
        for b, found in drawn.items():
            colours[b] |= found
    assert colours == {b: {to_hex(COLOR[b])} for b in BRANCHES}, colours
    assert len({COLOR[b] for b in BRANCHES}) == len(BRANCHES)
