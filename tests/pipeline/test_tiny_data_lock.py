"""recipes.tiny.ensure_data under a multi-process launch: every rank calls it before the process group exists, so
the ranks must not build the tiny corpora at the same time (two datatrove tokenizations in one work directory
clash). The build steps are replaced by a stand-in that records when it runs and writes the files a step would,
in two real processes: this tests the lock, not datatrove (tests/data_prep and the conftest's tiny_data_root run
the real build)."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path


def _rank(root: str, log: str, barrier) -> None:
    import recipes.tiny as tiny

    def fake_run(args: list[str]) -> None:
        with open(log, "a") as f:
            f.write(json.dumps({"step": args[0], "start": time.time()}) + "\n")
        time.sleep(0.2)  # long enough that two unlocked builders would overlap
        out = Path(args[args.index("--out") + 1]) if "--out" in args else None
        if args[0] == "data_prep.synth":
            (out / "tokenizer").mkdir(parents=True)
        elif args[0] == "data_prep.tokenize":
            d = Path(args[args.index("--output-dir") + 1])
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{args[args.index('--name') + 1]}.stats.json").write_text("{}")
        else:
            out.write_text("{}")
        with open(log, "a") as f:
            f.write(json.dumps({"step": args[0], "end": time.time()}) + "\n")

    tiny._run = fake_run
    barrier.wait()  # both ranks start together
    tiny.ensure_data(root=Path(root))


def test_ranks_build_the_tiny_data_once_one_at_a_time(tmp_path):
    log = tmp_path / "log.jsonl"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_rank, args=(str(tmp_path / "root"), str(log), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [e["step"] for e in events if "start" in e]
    from recipes.tiny import TINY_MIXTURES
    assert steps == ["data_prep.synth"] + ["data_prep.tokenize"] * 3 + ["data_prep.mix"] * len(TINY_MIXTURES)
    # never two steps at once: starts and ends alternate
    assert [("start" in e) for e in events] == [True, False] * len(steps)
    assert all((tmp_path / "root" / "data" / "blends" / f"{m}.json").exists() for m in TINY_MIXTURES)
