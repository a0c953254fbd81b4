"""Prompt sets for the RL stage: problems with reference answers -> templated, length-filtered jsonl.

    python -m data_prep.rl_prompts --input math8k.jsonl --out data/rl/math8k.jsonl --tokenizer models/Llama-3.2-3B
    python -m data_prep.rl_prompts --input train.parquet --input more.jsonl --out prompts.jsonl --tokenizer DIR
    python -m data_prep.rl_prompts --input hub:OWNER/NAME --hub-split train --out prompts.jsonl --tokenizer DIR
    python -m data_prep.rl_prompts --preset math8k --input math.8k/train.parquet --out data/rl/math8k.jsonl \
        --tokenizer models/Llama-3.2-3B

Inputs: jsonl (.jsonl/.json, one object a line), parquet, or `hub:OWNER/NAME` (a Hugging Face dataset, through the
optional `datasets` package; network only when asked). Records of the common layouts are understood:
    question   --question-field, else the first of problem | question | query | prompt; a chat `prompt` (a list of
               {role, content}, verl's parquet layout) gives its last user message
    answer     --answer-field, else the first of answer | gt_answer | ground_truth | final_answer |
               reward_model.ground_truth; else the last \\boxed{} of `solution`
    id, level  id | unique_id | idx (else "<file stem>-<row>"); level when present
Presets (--preset NAME) set the fields, template and length limit of a known prompt set; --input names its file
(nothing is downloaded):
    math8k     the OctoThinker RL prompts (docs/recipe.md, "RL"): the authors' rl/data/math.8k/train.parquet
               (GAIR-NLP/OctoThinker), SimpleRL's MATH level 3-5 problems (hkust-nlp/simpleRL-reason: "8K (query,
               final answer) examples from the original MATH dataset"; its "Hard (MATH lv.3-5)" set). The question
               is the parquet's prompt[1].content and the answer reward_model.ground_truth, as the authors' dataset
               code and reward manager read them; orz template; over 380 tokens dropped (their rl_dataset.py keeps
               max_prompt_length - 20 = 400 - 20).

Output rows: {"id", "question", "answer", "level", "prompt", "prompt_tokens", "template"}: `prompt` is the
rendered template (octomega.rl.templates; default orz) and prompts longer than --max-prompt-tokens tokens
(OctoThinker: 400) are dropped and counted. Duplicate questions are dropped (first kept). A summary goes to
stderr and OUT.stats.json. The RL loop re-renders and re-filters from `question` with its own settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from octomega.jsonl import read_jsonl

QUESTION_FIELDS = ("problem", "question", "query", "prompt")


@dataclass(frozen=True)
class Preset:
    question_field: str  # dotted path; a number indexes a list (prompt.1.content)
    answer_field: str
    template: str
    max_prompt_tokens: int  # tokens of the rendered prompt, BOS included
    source: str  # where the input file comes from (the error when --input is missing says it)


PRESETS = {
    "math8k": Preset(
        # The authors' rl_dataset.py renders orz_base with chat[1]['content'] and filters at max_prompt_length - 20;
        # their reward manager (training/rl/verl/workers/reward_manager/naive.py) grades reward_model.ground_truth
        question_field="prompt.1.content", answer_field="reward_model.ground_truth", template="orz",
        max_prompt_tokens=380,
        source="the authors' rl/data/math.8k/train.parquet (GitHub GAIR-NLP/OctoThinker); download it and pass "
               "--input PATH"),
}
ANSWER_FIELDS = ("answer", "gt_answer", "ground_truth", "final_answer", "reward_model.ground_truth")


class PromptSetError(ValueError):
    """Bad input: the message names the file, record and what to do."""


def _get(rec: dict, dotted: str):
    cur = rec
    for part in dotted.split("."):
        if isinstance(cur, (list, tuple)) and part.isdigit():
            if int(part) >= len(cur):
                return None
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _question(rec: dict, field: str | None):
    value = _get(rec, field) if field else next((rec[k] for k in QUESTION_FIELDS if rec.get(k) is not None), None)
    if isinstance(value, list):  # chat messages: the last user turn
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role", "user") == "user"]
        value = users[-1] if users else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _answer(rec: dict, field: str | None):
    if field:
        value = _get(rec, field)
    else:
        value = next((v for v in (_get(rec, k) for k in ANSWER_FIELDS) if v is not None), None)
        if value is None and isinstance(rec.get("solution"), str):
            from octomega.eval.normalize import last_boxed

            value = last_boxed(rec["solution"])
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else ", ".join(map(str, value))
    return str(value).strip() if value is not None and str(value).strip() else None


def _read_parquet(path: Path) -> list[dict]:
    """Every row of a parquet file, row group by row group (page checksums verified where the file has them); a row
    group that cannot be read (a damaged page) is a PromptSetError naming the file and the row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pqf = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        raise PromptSetError(f"{path}: not a readable parquet file ({e})") from None
    rows: list[dict] = []
    for g in range(pqf.num_row_groups):
        try:
            rows += pqf.read_row_group(g).to_pylist()
        except (OSError, pa.ArrowException) as e:
            n = pqf.metadata.row_group(g).num_rows
            why = " ".join(str(e).split())
            raise PromptSetError(f"{path} row group {g}: rows {len(rows) + 1}-{len(rows) + n} of the file cannot be "
                                 f"read ({why}): the file is damaged; re-download or re-export it") from None
    return rows


def read_records(spec: str, hub_split: str = "train") -> tuple[str, list[dict]]:
    """(source name, records) of one --input."""
    if spec.startswith("hub:"):
        try:
            from data_prep.readers import load_hf_dataset
        except ImportError as e:  # datatrove missing
            raise PromptSetError(f"{spec}: reading hub datasets needs data_prep's dependencies ({e})") from e
        try:
            ds = load_hf_dataset(spec[4:], hub_split)
        except Exception as e:  # noqa: BLE001  (network, missing package, unknown id)
            raise PromptSetError(f"{spec}: cannot load ({type(e).__name__}: {e}); `pip install datasets` and check "
                                 "the id, or download the file and pass its path") from e
        return spec[4:].replace("/", "_"), [dict(r) for r in ds]
    path = Path(spec)
    if not path.is_file():
        raise PromptSetError(f"--input {spec}: no such file (jsonl, parquet, or hub:OWNER/NAME)")
    if path.suffix == ".parquet":
        return path.stem, _read_parquet(path)
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):  # a JSON array (SimpleRL ships one)
            return path.stem, [r for r in json.loads(text) if isinstance(r, dict)]
    return path.stem, read_jsonl(path, error=PromptSetError,
                                 hint="a prompt set is one JSON object per line (or a .json array, or .parquet)")


def build(inputs: list[str], out: str | Path, tokenizer, *, template: str = "orz", max_prompt_tokens: int = 400,
          question_field: str | None = None, answer_field: str | None = None, hub_split: str = "train",
          limit: int | None = None, log=print) -> dict:
    from octomega.rl.templates import get_template

    tpl = get_template(template)
    stats = {"read": 0, "written": 0, "too_long": 0, "duplicate": 0, "no_question": 0, "no_answer": 0,
             "template": template, "max_prompt_tokens": max_prompt_tokens, "inputs": list(inputs)}
    seen: set[str] = set()
    rows, lengths = [], []
    for spec in inputs:
        stem, records = read_records(spec, hub_split)
        for i, rec in enumerate(records):
            stats["read"] += 1
            q, a = _question(rec, question_field), _answer(rec, answer_field)
            if q is None:
                stats["no_question"] += 1
                if stats["no_question"] == 1:
                    log(f"rl_prompts: {spec} record {i + 1} has no question (fields: {sorted(rec)}); "
                        "use --question-field")
                continue
            if a is None:
                stats["no_answer"] += 1
                if stats["no_answer"] == 1:
                    log(f"rl_prompts: {spec} record {i + 1} has no answer (fields: {sorted(rec)}); use --answer-field")
                continue
            if q in seen:
                stats["duplicate"] += 1
                continue
            seen.add(q)
            prompt = tpl.render(q)
            n = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
            if n > max_prompt_tokens:
                stats["too_long"] += 1
                continue
            rid = next((str(rec[k]) for k in ("id", "unique_id", "idx") if rec.get(k) is not None), f"{stem}-{i}")
            rows.append({"id": rid, "question": q, "answer": a, "level": rec.get("level"), "prompt": prompt,
                         "prompt_tokens": n, "template": template})
            lengths.append(n)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise PromptSetError(f"no prompts left from {inputs}: {stats}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    lengths.sort()
    stats.update(written=len(rows), prompt_tokens_median=lengths[len(lengths) // 2], prompt_tokens_max=lengths[-1])
    Path(str(out) + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"rl_prompts: read {stats['read']:,}, wrote {stats['written']:,} to {out}; dropped {stats['too_long']:,} "
        f"longer than {max_prompt_tokens} tokens, {stats['duplicate']:,} duplicates, {stats['no_question']:,} "
        f"without question, {stats['no_answer']:,} without answer (prompt tokens: median "
        f"{stats['prompt_tokens_median']}, max {stats['prompt_tokens_max']})")
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_prep.rl_prompts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", help="jsonl / parquet file or hub:OWNER/NAME "
                    "(repeatable; concatenated in order)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a known prompt set's fields, template and length "
                    "limit (explicit flags win); math8k = the authors' math.8k parquet")
    ap.add_argument("--out", required=True, help="output jsonl (OUT.stats.json is written beside it)")
    ap.add_argument("--tokenizer", required=True, help="HF tokenizer directory of the model to be trained")
    ap.add_argument("--template", help="prompt template: orz (default) | qa | raw")
    ap.add_argument("--max-prompt-tokens", type=int, help="longer prompts are dropped (default 400)")
    ap.add_argument("--question-field", help="field holding the problem (dotted for nested)")
    ap.add_argument("--answer-field", help="field holding the reference answer (dotted for nested, e.g. "
                    "reward_model.ground_truth)")
    ap.add_argument("--hub-split", default="train", help="split of hub inputs (default train)")
    ap.add_argument("--limit", type=int, help="stop after N prompts")
    args = ap.parse_args(argv)
    preset = PRESETS.get(args.preset)
    if not args.input:
        where = f"--preset {args.preset} reads {preset.source}" if preset else "give the prompt file"
        print(f"rl_prompts: error: --input is missing: {where}", file=sys.stderr)
        return 2
    if preset:
        args.question_field = args.question_field or preset.question_field
        args.answer_field = args.answer_field or preset.answer_field
        args.template = args.template or preset.template
        args.max_prompt_tokens = args.max_prompt_tokens or preset.max_prompt_tokens
    args.template = args.template or "orz"
    args.max_prompt_tokens = args.max_prompt_tokens or 400
    try:
        from transformers import AutoTokenizer

        if not Path(args.tokenizer).exists():
            raise PromptSetError(f"--tokenizer {args.tokenizer}: no such directory")
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        build(args.input, args.out, tok, template=args.template, max_prompt_tokens=args.max_prompt_tokens,
              question_field=args.question_field, answer_field=args.answer_field, hub_split=args.hub_split,
              limit=args.limit, log=lambda m: print(m, file=sys.stderr))
    except (PromptSetError, ValueError, OSError) as e:
        print(f"rl_prompts: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
