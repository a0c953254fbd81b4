"""The tiny pipeline's stage graph: every stage of the paper on synthetic arithmetic, on 2 CPU cores.

    data -> stable -> decay_{web,short,long,hybrid} -> hf_<b> -> eval_before_<b> (zero-shot + few-shot)
                                                  \\-> rl_<b> (GRPO) -> eval_after_<b> (zero-shot)
    everything -> report

"web" is the stable-only control: a compute-matched decay on web text only (docs/tiny_science.md), so every model
has seen the same number of tokens before RL. Independent stages run two at a time with one thread each, the
longest kind first (decay, RL, conversion, evaluation), so that the two cores stay busy to the end.
"""

from __future__ import annotations

from pathlib import Path

from octomega import numerics
from octomega.pipeline.runner import Stage, python_m

BRANCHES = ("web", "short", "long", "hybrid")
EVAL_TOKENS = "256"  # tiny answers are < 120 tokens; long CoT < 250


def _eval(model: str, out: Path, suite: str, data: Path, name: str) -> list[str]:
    return python_m("octomega", "eval", model, "--suite", suite, "--benchmarks", "tiny_arith", "--data-dir",
                    str(data / "synth" / "benchmarks"), "--backend", "hf", "--max-new-tokens", EVAL_TOKENS,
                    "--out", str(out), "--name", name, "--no-progress")


def tiny_stages(root: Path, *, rl_overrides: list[str] | None = None, cpu_numerics: str = "pinned") -> list[Stage]:
    """cpu_numerics "pinned": every stage with pinned CPU numerics (octomega/numerics.py; the runner fixes each
    stage's thread count), so that the report's numbers are the same on every x86-64 machine with AVX2; "native":
    this CPU's fastest kernels (the training and RL stages are told so: the tiny recipes pin by default)."""
    data = root / "data"
    env = {"OCTOMEGA_TINY_ROOT": str(root), **(numerics.PINS if cpu_numerics == "pinned" else {})}
    native = [] if cpu_numerics == "pinned" else [f"train.cpu_numerics={cpu_numerics}"]
    rl_overrides = [*native, *(rl_overrides or [])]
    stages = [
        Stage("data", python_m("recipes.tiny", "data"), env=env, what="synthetic corpora, tokenizer, blends"),
        Stage("stable", python_m("octomega", "train", "tiny_stable", *native), ["data"], threads=2, env=env,
              what="stable stage, 800 steps"),
    ]
    for b in BRANCHES:
        run = root / f"tiny_decay_{b}"
        hf = root / "hf" / f"decay_{b}"
        rl = root / f"tiny_rl_grpo_{b}"
        stages += [
            Stage(f"decay_{b}", python_m("octomega", "train", f"tiny_decay_{b}", *native), ["stable"], env=env,
                  what=f"decay branch {b}, 350 steps", priority=3),
            Stage(f"hf_{b}", python_m("octomega", "convert", "mcore-to-hf", str(run), str(hf), "--tokenizer",
                                      str(data / "synth" / "tokenizer"), "--overwrite"), [f"decay_{b}"], env=env,
                  priority=1),
            Stage(f"eval_before_{b}", _eval(str(hf), root / "eval" / f"decay_{b}-zeroshot", "qa-zeroshot", data,
                                            f"decay_{b}"), [f"hf_{b}"], env=env),
            Stage(f"eval_fewshot_{b}", _eval(str(hf), root / "eval" / f"decay_{b}-fewshot", "base-fewshot", data,
                                             f"decay_{b}"), [f"hf_{b}"], env=env),
            Stage(f"rl_{b}", python_m("octomega", "rl", f"tiny_rl_grpo_{b}", *rl_overrides),
                  [f"decay_{b}"], env=env, what=f"GRPO from decay_{b}", priority=2),
            Stage(f"eval_after_{b}", _eval(str(rl / "hf"), root / "eval" / f"rl_{b}-zeroshot", "qa-zeroshot", data,
                                           f"rl_{b}"), [f"rl_{b}"], env=env),
        ]
    stages.append(Stage("report", python_m("octomega.pipeline.report", str(root)),
                        [s.name for s in stages], env=env, what="report.md and plots"))
    return stages
