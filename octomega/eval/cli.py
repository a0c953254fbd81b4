"""`octomega eval`: evaluate a model, compare runs, check the graders.

    octomega eval MODEL [--suite base-fewshot|rl-zeroshot] [--benchmarks a,b] [--limit N] [--samples K]
                        [--backend hf|vllm|megatron] [--data-dir DIR] [--out DIR] ...
    octomega eval compare RUN_DIR... [--out DIR] [--verdict harness|math_verify]
    octomega eval selfcheck [--benchmarks a,b] [--limit N] [--data-dir DIR]
    octomega eval list [--data-dir DIR]
Also ``python -m octomega.eval ...``. Exit status: 0 done, 2 bad input (the message says what to fix; --debug adds
its traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from octomega.eval.benchmarks import BENCHMARKS, DEFAULT_SUITE, get_benchmark
from octomega.eval.data import BenchmarkDataError, default_data_dir, load_items, test_file
from octomega.eval.prompts import SUITES, prompt_for
from octomega.launch import DEBUG_HELP, report_input_errors


def _benchmarks(arg: str | None) -> list[str] | None:
    if not arg:
        return None
    names = [b.strip() for b in arg.split(",") if b.strip()]
    return [get_benchmark(n).name for n in names]  # unknown names fail here, before any model is loaded


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="octomega eval", description="Evaluate a model on the OctoThinker math benchmarks.",
                                epilog="Subcommands: `octomega eval compare RUN_DIR...`, `octomega eval selfcheck`, "
                                       "`octomega eval list`.")
    p.add_argument("model", help="Hugging Face model directory (hf, vllm), Megatron checkpoint (megatron), or an "
                                 "evaluation recipe (`octomega recipes --kind eval`), whose settings the options "
                                 "given here override")
    p.add_argument("--suite", choices=SUITES, default="base-fewshot",
                   help="base-fewshot: the harness's few-shot prompts (base models); rl-zeroshot: the RL stage's "
                        "orz template, last \\boxed{} graded (RL models); qa-zeroshot: the mid-training "
                        "'Question: ...\\nAnswer:' format, last \\boxed{} graded (the tiny pipeline)")
    p.add_argument("--benchmarks", help=f"comma-separated (default: {','.join(DEFAULT_SUITE)}; also "
                                        f"{','.join(b for b in BENCHMARKS if b not in DEFAULT_SUITE)})")
    p.add_argument("--limit", type=int, help="first N items of each benchmark")
    p.add_argument("--samples", type=int, default=1, help="K sampled completions for avg@K besides the greedy one "
                                                          "(small sets unless --samples-on all). Not in the authors' "
                                                          "eval (greedy, one repeat); off in the paper recipes")
    p.add_argument("--samples-on", choices=("small", "all"), default="small")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="temperature of the K samples (greedy pass: 0); 0.8 is a third-party fork's setting, "
                        "not the authors'")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, help="default 1024 (base-fewshot), 2048 (zero-shot suites); the RL "
                                                     "evaluation recipes: their RL stair's last cap")
    p.add_argument("--backend", default="hf", help="hf | vllm | megatron")
    p.add_argument("--batch-size", type=int, help="rows per forward pass (hf; megatron if it accepts it)")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", help="hf backend device (default cuda if available)")
    p.add_argument("--tensor-parallel-size", type=int, help="vllm tensor parallelism (megatron: from torchrun)")
    p.add_argument("--data-dir", help="DIR/<benchmark>/test.jsonl (default: $OCTOMEGA_BENCHMARKS, else the "
                                      "test sets shipped in octomega/eval/testsets)")
    p.add_argument("--hub", action="store_true", help="download test sets from the Hugging Face hub (needs datasets)")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP + " (any `octomega eval` command)")
    p.add_argument("--out", help="output directory (default runs/eval/<model>-<suite>)")
    p.add_argument("--name", help="model label in reports (default: the model directory's name)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out instead of resuming it")
    p.add_argument("--chunk-size", type=int, default=64, help="items generated and saved together")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit (nothing loaded)")
    return p


def _eval_recipe(name: str):
    """The EvalRecipe registered under `name`, or None when `name` is a path (or no recipe has that name)."""
    if Path(name).exists() or "/" in name:
        return None
    import recipes

    try:
        return recipes.get(name, "eval")  # another kind of recipe: a ConfigError naming the command that runs it
    except recipes.UnknownRecipe:
        return None


def parse_eval_args(argv: list[str]) -> argparse.Namespace:
    """Parse; when MODEL names an evaluation recipe, its settings become the defaults and the options given win."""
    p = eval_parser()
    args = p.parse_args(argv)
    r = _eval_recipe(args.model)
    if r is not None:
        defaults = r.cli_defaults()
        model = defaults.pop("model")
        p.set_defaults(**defaults)
        args = p.parse_args(argv)
        args.recipe, args.model = r.name, model
    else:
        args.recipe = None
    return args


def _name_and_out(args) -> tuple[str, Path]:
    name = args.name or Path(args.model).resolve().name
    return name, Path(args.out) if args.out else Path("runs") / "eval" / f"{name}-{args.suite}"


def _resolved(args) -> dict:
    from octomega.eval.runner import EvalSettings

    name, out = _name_and_out(args)
    return {"recipe": args.recipe, "model": args.model, "name": name, "out": str(out), "suite": args.suite,
            "benchmarks": _benchmarks(args.benchmarks) or list(DEFAULT_SUITE), "backend": args.backend,
            "max_new_tokens": EvalSettings(suite=args.suite, max_new_tokens=args.max_new_tokens).new_tokens(),
            "samples": args.samples, "samples_on": args.samples_on, "temperature": args.temperature,
            "limit": args.limit, "generator": _generator_kwargs(args), "data_dir": args.data_dir}


def _generator_kwargs(args) -> dict:
    if args.backend == "hf":
        kw = {"batch_size": args.batch_size, "dtype": args.dtype, "device": args.device}
    elif args.backend == "vllm":
        kw = {"tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype, "seed": args.seed}
    else:  # megatron (or a user-registered backend): only what the user set explicitly. Megatron's tensor
        # parallelism comes from its parallel state (torchrun + octomega.runtime), not from a keyword.
        kw = {"batch_size": args.batch_size, "dtype": args.dtype}
    return {k: v for k, v in kw.items() if v is not None}


def cmd_eval(argv: list[str]) -> int:
    args = parse_eval_args(argv)
    if args.dry_run:
        import json

        print(json.dumps(_resolved(args), indent=2))
        return 0
    from octomega.eval.runner import run_eval
    from octomega.generate import get_generator
    from octomega.generate.hf_backend import check_hf_model_dir

    benchmarks = _benchmarks(args.benchmarks)
    prompt_for("gsm_8shot", args.suite)
    for b in benchmarks or []:  # bad data fails before the model loads
        load_items(get_benchmark(b), args.data_dir, hub=args.hub, limit=1)
    if args.backend in ("hf", "vllm"):
        check_hf_model_dir(args.model)
    name, out = _name_and_out(args)
    generator = get_generator(args.backend, args.model, **_generator_kwargs(args))
    try:
        results = run_eval(generator, benchmarks, args.suite, out, limit=args.limit, samples=args.samples,
                           data_dir=args.data_dir, hub=args.hub, model_name=name, progress=not args.no_progress,
                           overwrite=args.overwrite, samples_on=args.samples_on, sample_temperature=args.temperature,
                           top_p=args.top_p, seed=args.seed, max_new_tokens=args.max_new_tokens,
                           chunk_size=args.chunk_size)
    finally:
        generator.close()
    print((out / "results.md").read_text())
    print(f"per-sample records: {out}/<benchmark>/samples.jsonl; summary: {out}/results.json")
    return 0 if results["benchmarks"] else 2


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="octomega eval compare", description="One table and one bar chart across runs.")
    p.add_argument("runs", nargs="+", help="output directories of `octomega eval`")
    p.add_argument("--out", default=None, help="where compare.md and compare.png go (default: the first run's parent)")
    p.add_argument("--verdict", choices=("harness", "math_verify"), default="harness")
    args = p.parse_args(argv)
    from octomega.eval.report import compare_runs

    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent
    md, png = compare_runs(args.runs, out, verdict=args.verdict)
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


def cmd_selfcheck(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="octomega eval selfcheck",
                                description="Grade each benchmark's own solutions / gold answers (grader sanity).")
    p.add_argument("--benchmarks")
    p.add_argument("--limit", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--json", help="also write the rates to this file")
    args = p.parse_args(argv)
    from octomega.eval.selfcheck import self_agreement

    rows = []
    print("| benchmark | mode | suite | n | harness | math-verify |\n|---|---|---|---:|---:|---:|")
    for name in _benchmarks(args.benchmarks) or list(BENCHMARKS):
        bench = get_benchmark(name)
        try:
            items = load_items(bench, args.data_dir, limit=args.limit)
        except BenchmarkDataError as e:
            print(f"| {name} | skipped: {e} | | | | |")
            continue
        for mode, suite in (("solution", "base-fewshot"), ("format", "base-fewshot"), ("format", "rl-zeroshot")):
            r = self_agreement(bench, items, mode, suite)
            if r["n"]:
                rows.append(r)
                print(f"| {name} | {mode} | {suite} | {r['n']} | {100 * r['harness']:.1f} | {100 * r['math_verify']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


def cmd_list(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="octomega eval list")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    print("| benchmark | items (paper) | scheme | few-shot prompt | suite | test file |\n|---|---:|---|---|---|---|")
    for b in BENCHMARKS.values():
        f = test_file(b, data_dir) if data_dir else None
        where = str(f) if f and f.is_file() else f"missing (hub: {b.hub.path})" if b.hub else "missing"
        print(f"| {b.name} | {b.size or '–'} | {b.scheme} | {prompt_for(b.prompt, 'base-fewshot').tag} | "
              f"{'default' if b.suite else 'extra'} | {where} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    commands = {"compare": cmd_compare, "selfcheck": cmd_selfcheck, "list": cmd_list}

    def run() -> int:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return cmd_eval(argv)

    # Besides octomega's own error classes (BenchmarkDataError, RecordFileError, ConfigError, ...), the generate and
    # eval APIs report bad input as ValueError (an unknown benchmark or backend, a path that is no model directory)
    # and FileNotFoundError: one line as well; --debug shows where it came from.
    return report_input_errors("octomega eval", run, debug=debug, also=(ValueError, FileNotFoundError))
