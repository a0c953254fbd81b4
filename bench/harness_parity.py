"""How often octomega's harness verdicts differ from the authors' own harness code, run unmodified.

octomega re-implements the scoring rules of GAIR-NLP/OctoThinker's eval harness (octomega/eval/harness.py) with
one deliberate change that can move verdicts: LaTeX is parsed by latex2sympy2_extended (math-verify's parser,
antlr 4.13) instead of sympy's parse_latex (antlr 4.11, which cannot be installed beside math-verify's). This
measures the effect on a fixed case set, in three steps and two Python environments:

    # 1. octomega's environment: write the cases with octomega's verdict ("ours": the grader with its loaders)
    #    and the port's verdict on the authors' gold ("port": goldecho.authors_verdict)
    .venv/bin/python bench/harness_parity.py cases OUT/cases.jsonl
    # 2. an environment with the authors' eval requirements (their eval/requirements.txt: sympy==1.12,
    #    antlr4-python3-runtime==4.11.1, regex, numpy, math-verify) and a checkout of their repository:
    #    their extraction and eval functions, imported from AUTHORS/eval, grade every case
    ENV/bin/python bench/harness_parity.py authors OUT/cases.jsonl OUT/authors.jsonl --eval-dir AUTHORS/eval
    # 3. either environment: the table
    python bench/harness_parity.py compare OUT/cases.jsonl OUT/authors.jsonl

Case sets (every shipped test set; step 1 takes ~15 min on 2 cores, step 2 about as long):
- echo: each item answered with its own gold in the exemplar format (octomega/eval/goldecho.py);
- solution: the file's worked solution as the completion, where the file has one (octomega/eval/selfcheck.py);
- wrong: the echo with the last digit of the answer changed (d -> d+1 mod 10), a wrong answer;
- rewritten: MATH-style and OCW echoes with \\frac written \\dfrac and a space after each comma (same value);
- cases: the base-fewshot cases of tests/eval/grader_cases.jsonl.
Step 2 imports only the standard library and the authors' modules (it runs where octomega is not installed).
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path

SETS = ("echo", "solution", "wrong", "rewritten", "cases")


# ---------------------------------------------------------------- step 1 (octomega's environment)
def _perturb_digit(text: str) -> str | None:
    m = list(re.finditer(r"\d", text))
    if not m:
        return None
    i = m[-1].start()
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]


def _rewrite(answer):
    if isinstance(answer, list):
        return [_rewrite(a) for a in answer]
    return re.sub(r",(?! )", ", ", answer.replace("\\frac", "\\dfrac"))


def write_cases(out: Path, names: list[str] | None, every: int = 1, with_cases: bool = True) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from octomega.eval.benchmarks import BENCHMARKS, get_benchmark
    from octomega.eval.data import SHIPPED_DIR, load_items
    from octomega.eval.goldecho import _POOL, _math_rule, authors_gold, authors_verdict, echo_completion, model_answer
    from octomega.eval.grader import grade_verdict
    from octomega.eval.selfcheck import solution_completion
    from octomega.jsonl import read_jsonl

    cases = []
    for name in names if names is not None else [n for n in BENCHMARKS if (SHIPPED_DIR / n / "test.jsonl").is_file()]:
        bench = get_benchmark(name)
        records = read_jsonl(SHIPPED_DIR / name / "test.jsonl")
        for k, (item, rec) in enumerate(zip(load_items(bench), records)):
            if k % every:
                continue
            answer, gold = model_answer(bench, rec), authors_gold(bench, rec)
            base = {"benchmark": name, "scheme": bench.scheme, "id": item.id, "question": item.question,
                    "gold": item.gold, "authors_gold": gold}
            texts = {"echo": echo_completion(bench, answer), "solution": solution_completion(bench, item)}
            flat = ", ".join(answer) if isinstance(answer, list) else answer
            wrong = _perturb_digit(flat)
            if wrong is not None and bench.scheme not in ("choice", "mmlu"):
                texts["wrong"] = echo_completion(bench, wrong)
            if bench.scheme in ("math", "ocw") and _rewrite(answer) != answer:
                texts["rewritten"] = echo_completion(bench, _rewrite(answer))
            cases += [dict(base, set=k, completion=t) for k, t in texts.items() if t is not None]
    for c in (json.loads(x) for x in (Path(__file__).parents[1] / "tests/eval/grader_cases.jsonl").open() if x.strip()):
        bench = get_benchmark(c["benchmark"])
        if not with_cases or c.get("suite", "base-fewshot") != "base-fewshot":
            continue
        q = c.get("question", "")
        golds = c["gold"] if isinstance(c["gold"], list) else [c["gold"]]
        gold = _math_rule(q, golds) if bench.scheme == "math" else c["gold"]
        cases.append({"set": "cases", "benchmark": bench.name, "scheme": bench.scheme, "id": c["id"], "question": q,
                      "gold": c["gold"], "authors_gold": gold, "completion": c["prediction"]})

    def grade(c: dict) -> dict:
        bench = get_benchmark(c["benchmark"])
        ours = grade_verdict(c["completion"], c["gold"], bench, question=c["question"])
        port, status = _POOL.run(authors_verdict, c["completion"], c["authors_gold"], c["scheme"], c["question"],
                                 timeout_s=15.0, default=False)
        return dict(c, ours=ours.correct, port=bool(port), status=[ours.status, status])

    with ThreadPoolExecutor(max_workers=2) as pool, out.open("w") as f:
        for row in pool.map(grade, cases):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


# ---------------------------------------------------------------- step 2 (the authors' environment)
class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def authors_verdicts(cases_path: Path, out: Path, eval_dir: Path) -> None:
    sys.path.insert(0, str(eval_dir))
    from data_processing import answer_extraction as ae  # noqa: E402 - the authors' module, from --eval-dir
    from eval import eval_script as es  # noqa: E402

    extract = {"math": ae.extract_math_few_shot_cot_answer, "gsm": ae.extract_gsm_few_shot_cot_answer,
               "olympiad": ae.extract_olympiad_math_answer, "choice": ae.extract_sat_few_shot_answer,
               "mmlu": ae.extract_mmlu_stem, "ocw": ae.extract_ocwcourses_few_shot_answer}
    evaluate = {"math": es.eval_math, "gsm": es.eval_last_single_answer, "olympiad": es.eval_olympiad_math,
                "choice": es.eval_math_sat, "mmlu": es.eval_mmlu_stem, "ocw": es.eval_ocwcourses}
    signal.signal(signal.SIGALRM, _alarm)
    n = 0
    with cases_path.open() as f, out.open("w") as w:
        for line in f:
            c = json.loads(line)
            status = "ok"
            signal.alarm(15)  # the harness gives an item 15 s (run_cot_eval.py's pebble pool)
            try:
                pred = extract[c["scheme"]](c["question"], c["completion"], "cot")
                verdict = bool(evaluate[c["scheme"]]({"prediction": pred, "answer": c["authors_gold"]}))
            except _Timeout:
                verdict, status = False, "timeout"
            except Exception:  # noqa: BLE001 - the harness counts an error as wrong
                verdict, status = False, "error"
            finally:
                signal.alarm(0)
            w.write(json.dumps({"set": c["set"], "benchmark": c["benchmark"], "id": c["id"], "authors": verdict,
                                "status": status}) + "\n")
            n += 1
    print(f"graded {n} cases with the authors' code into {out}")


# ---------------------------------------------------------------- step 3
def compare(cases_path: Path, authors_path: Path) -> None:
    ours = {(c["set"], c["benchmark"], c["id"]): c for c in map(json.loads, cases_path.open())}
    rows: dict[tuple[str, str], list[int]] = {}
    examples = []
    for a in map(json.loads, authors_path.open()):
        c = ours[(a["set"], a["benchmark"], a["id"])]
        r = rows.setdefault((a["set"], a["benchmark"]), [0] * 6)
        r[0] += 1
        r[1] += a["authors"]
        r[2] += c["ours"] and not a["authors"]
        r[3] += a["authors"] and not c["ours"]
        r[4] += c["port"] and not a["authors"]
        r[5] += a["authors"] and not c["port"]
        if c["port"] != a["authors"] and len(examples) < 40:
            examples.append((a["set"], a["benchmark"], a["id"], c["port"], a["authors"], c["completion"][-160:]))
    print("| set | benchmark | n | authors' code: correct | ours right, theirs wrong | theirs right, ours wrong "
          "| port right, theirs wrong | theirs right, port wrong |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for (s, b), r in sorted(rows.items(), key=lambda kv: (SETS.index(kv[0][0]), kv[0][1])):
        print(f"| {s} | {b} | " + " | ".join(str(x) for x in r) + " |")
    tot = [sum(r[i] for r in rows.values()) for i in range(6)]
    print("| all | all | " + " | ".join(str(x) for x in tot) + " |")
    for e in examples:
        print(e)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cases")
    c.add_argument("out", type=Path)
    c.add_argument("--benchmarks", help="comma-separated (default: every shipped test set; '' for none)")
    c.add_argument("--every", type=int, default=1, help="only every N-th item of each set (a systematic sample)")
    c.add_argument("--no-grader-cases", action="store_true", help="leave out tests/eval/grader_cases.jsonl")
    a = sub.add_parser("authors")
    a.add_argument("cases", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--eval-dir", type=Path, required=True, help="the eval/ directory of GAIR-NLP/OctoThinker")
    m = sub.add_parser("compare")
    m.add_argument("cases", type=Path)
    m.add_argument("authors", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "cases":
        names = None if args.benchmarks is None else [n for n in args.benchmarks.split(",") if n]
        write_cases(args.out, names, args.every,
                    not args.no_grader_cases)
    elif args.cmd == "authors":
        authors_verdicts(args.cases, args.out, args.eval_dir)
    else:
        compare(args.cases, args.authors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
