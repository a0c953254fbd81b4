"""The GPU machine's one call (issue 19): the GPU test tier, then the 1B training-throughput bench, in < 8 minutes.

Here, once per checkout (downloads the Megatron-Core wheel into .whl/, which git ignores, and checks what the call
carries against the device's 64 MiB; prints the call):
    python3 bench/device_check.py --prepare
There (`run` with carry [".whl"], timeout_s 540; bench/NOTES.md has the exact calls):
    bash bench/device_check.sh             # the GPU machine's image as it is (no Transformer Engine)
    bash bench/device_check.sh --te        # after bench/device_te.sh append ... build on the same warm machine
Here, without a GPU (tests/bench/test_device_check.py): --simulate runs the same parts in their CPU form.

Parts, in order, each in its own process group under a time box (SIGTERM at the box, SIGKILL 10 s later). A part
that fails or runs out of time is recorded and the next still runs; summary.json is rewritten after every part, so
a call cut short keeps what it finished:
  env      nvidia-smi and the versions of python, torch, transformers          (box 30 s)
  install  the Megatron-Core wheel from .whl/ into --site, skipped when megatron.core imports already; the
           repository itself goes on PYTHONPATH (no pip install of octomega: the device has no build backend
           guarantees and nothing to gain)                                       (box 90 s)
  tests    pytest -m gpu, one pytest per module of tests/gpu (a module cut by the box loses only itself), their
           JUnit XML merged into gpu_tests.xml                                   (box 270 s, leaving the bench 120 s)
  bench    bench/train_throughput.py --shape 1b: transformers SDPA first (the reference), octomega and the options
           of bench/NOTES.md (chunked and native cross entropy, compile=layers), transformers compiled last; with
           --te the TE spec, its fused RoPE, TE's cross entropy, FP8 and the local spec; the JSON is rewritten after
           each implementation                                                   (the rest of the budget)
Files in $OUT (the device tool brings back at most 8): summary.json, setup.log, gpu_tests.xml, gpu_tests.log,
train_throughput_1b[_te].json and .log.
--simulate (CPU): the same parts and bookkeeping with the GPU commands in their CPU form: the GPU tier collects
and skips (no CUDA), the bench is its CPU smoke run (--device cpu --shape tiny); nvidia-smi is absent.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 1024 * 1024  # bytes a device call takes along: working tree + carried paths (device README)
KILL_GRACE_S = 10  # seconds between SIGTERM and SIGKILL at a box
RESERVE_S = 10  # kept back for the summary and the file copies at the end
BENCH_MIN_S = 120  # what the tests leave the bench at least
CAPS = {"env": 30, "install": 90, "tests": 270}  # seconds; the bench gets the rest
# most telling first: training and resume, RL, generation, TE/FP8 (only its refusals spawn without TE), the loss
# options last (compile=layers spends ~1 min in inductor)
MODULES = ("test_gpu_train", "test_gpu_rl", "test_gpu_generate", "test_gpu_te_fp8", "test_gpu_loss_options")
MEGATRON_WHEEL = "megatron-core==0.19.2"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--te", action="store_true", help="use Transformer Engine installed by bench/device_te.sh build "
                   "on this machine ($TE_TMP/ready) and run the TE bench variants")
    p.add_argument("--budget-s", type=float, default=465.0, help="wall-clock budget of the whole call (default 465 "
                   "s: under 8 minutes, with the device tool's 600 s per call as a margin)")
    p.add_argument("--parts", default="env,install,tests,bench", help="comma-separated subset, in this order")
    p.add_argument("--box", action="append", default=[], metavar="PART=SECONDS",
                   help="override a part's time box (tests: the box of the whole tier)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "results" / "device_check"),
                   help="result folder (default $OUT, else bench/results/device_check)")
    p.add_argument("--site", default="/tmp/site", help="where the carried wheels are installed")
    p.add_argument("--simulate", action="store_true", help="CPU form of every part (tests/bench/test_device_check.py)")
    p.add_argument("--part-cmd", action="append", default=[], metavar="PART=COMMAND",
                   help="replace a part's command (tests of the time boxes)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the device call; run nothing")
    p.add_argument("--prepare", action="store_true", help="here: download the Megatron-Core wheel into .whl/ if "
                   "missing, check the carry size, print the device call")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    order = ["env", "install", "tests", "bench"]
    unknown = [x for x in args.parts if x not in order]
    if unknown:
        p.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(order)}")
    args.parts = [x for x in order if x in args.parts]
    args.boxes, args.commands = {}, {}
    for spec, into, conv in ((args.box, args.boxes, float), (args.part_cmd, args.commands, str)):
        for item in spec:
            name, sep, value = item.partition("=")
            if not sep or name not in order:
                p.error(f"{item!r}: expected PART=VALUE with PART one of {', '.join(order)}")
            try:
                into[name] = conv(value)
            except ValueError:
                p.error(f"{item!r}: {value!r} is not a number of seconds")
    if args.budget_s <= RESERVE_S:
        p.error(f"--budget-s {args.budget_s:g}: must be above {RESERVE_S} s")
    return args


# ------------------------------------------------------------------------------------------------ the plan


def te_dir() -> Path:
    return Path(os.environ.get("TE_TMP", "/tmp/te"))


def environment(args) -> dict:
    """The environment of every part: the repository and the installed wheels on PYTHONPATH, unbuffered output."""
    paths = [str(ROOT)]
    if not args.simulate:
        paths.insert(0, args.site)
        if args.te:
            paths[:0] = [str(te_dir() / "site"), str(te_dir() / "site2")]
    old = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])), "PYTHONUNBUFFERED": "1"}
    if args.simulate:
        env["WANDB_MODE"] = "disabled"
    return env


def bench_command(args, out: Path) -> list[str]:
    py = [sys.executable, "bench/train_throughput.py"]
    if args.simulate:  # the CPU smoke run of bench/NOTES.md, two implementations
        return py + ["--device", "cpu", "--shape", "tiny", "--seq", "128", "--global-batch", "4", "--steps", "2",
                     "--warmup", "1", "--impl", "hf_sdpa", "--impl", "octomega", "--timeout-s", "120", "--out",
                     str(out)]
    common = ["--shape", "1b", "--warmup", "2", "--steps", "5", "--profile", "--timeout-s", "150", "--out", str(out)]
    if args.te:
        return py + common + ["--layer-spec", "te", "--impl", "hf_sdpa", "--impl", "octomega",
                              "--octomega-set", "model.rope_fusion=true",
                              "--octomega-set", "model.rope_fusion=true,model.cross_entropy=te",
                              "--octomega-set", "model.rope_fusion=true,model.fp8=hybrid",
                              "--octomega-set", "model.layer_spec=local"]
    return py + common + ["--impl", "hf_sdpa", "--impl", "octomega", "--impl", "hf_sdpa_compile",
                          "--octomega-set", "model.cross_entropy=chunked", "--octomega-set", "model.cross_entropy=native",
                          "--octomega-set", "model.compile=layers"]


def bench_name(args) -> str:
    return "train_throughput_" + ("tiny_cpu" if args.simulate else "1b") + ("_te" if args.te else "")


# ----------------------------------------------------------------------------------------------- running


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # only a process of another user could be there: not ours to kill
        return False


def run_boxed(cmd, *, box_s: float, log: Path, env: dict, shell: bool = False) -> dict:
    """Run `cmd` in its own process group, output appended to `log`. At `box_s` the group gets SIGTERM, and
    SIGKILL KILL_GRACE_S later if anything of it is left; whatever the part leaves behind when it ends is killed
    too (a process that ignores SIGTERM, a worker its parent did not wait for). {rc, seconds, timed_out}."""
    t0 = time.monotonic()
    with open(log, "a") as f:
        f.write(f"$ {cmd if shell else shlex.join(cmd)}   (box {box_s:.0f} s)\n")
        f.flush()
        proc = subprocess.Popen(cmd, shell=shell, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        pgid, timed_out = proc.pid, False
        try:
            proc.wait(timeout=max(box_s, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + KILL_GRACE_S
            while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
                time.sleep(0.2)
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        rc = proc.wait()
        seconds = time.monotonic() - t0
        f.write(f"[exit {rc} after {seconds:.1f} s{', TIME BOX REACHED' if timed_out else ''}]\n")
    return {"rc": rc, "seconds": round(seconds, 1), "timed_out": timed_out}


class Check:
    """The call's bookkeeping: the clock, the boxes, the parts' records and summary.json."""

    def __init__(self, args):
        self.args, self.t0 = args, time.monotonic()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        # per-module JUnit files, merged into one: the device tool brings back at most 8 files from $OUT
        self.scratch = Path(tempfile.mkdtemp(prefix="devcheck"))
        self.env = environment(args)
        self.summary = {"budget_s": args.budget_s, "te": args.te, "simulate": args.simulate, "parts": [],
                        "command": shlex.join(["bash", "bench/device_check.sh", *sys.argv[1:]])}

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def box(self, part: str) -> float:
        """This part's box: its override or cap, within what is left once the parts after it got their share."""
        later = BENCH_MIN_S if part == "tests" and "bench" in self.args.parts else 0
        room = self.left() - RESERVE_S - later
        return max(0.0, min(self.args.boxes.get(part, CAPS.get(part, room)), room))

    def record(self, entry: dict) -> None:
        self.summary["parts"].append(entry)
        self.write()

    def write(self) -> None:
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1) + "\n")

    def run_part(self, name: str, cmd, log: str, shell: bool = False) -> dict:
        if name in self.args.commands:
            cmd, shell = self.args.commands[name], True
        box = self.box(name)
        if box < 1:
            entry = {"part": name, "status": "not run: no time left", "box_s": 0}
        else:
            entry = {"part": name, "box_s": round(box), **run_boxed(cmd, box_s=box, log=self.out / log,
                                                                     env=self.env, shell=shell)}
            entry["status"] = "timed out" if entry["timed_out"] else "ok" if entry["rc"] == 0 else "failed"
        self.record(entry)
        return entry


def part_env(check: Check) -> None:
    script = ("nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1; "
              f"{shlex.quote(sys.executable)} -c \"import sys, torch, transformers; print('python', sys.version.split()[0], "
              "'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, "
              "'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)\"")
    check.run_part("env", script, "setup.log", shell=True)


def part_install(check: Check) -> None:
    have = subprocess.run([sys.executable, "-c", "import megatron.core"], env=check.env, capture_output=True)
    if have.returncode == 0 and "install" not in check.args.commands:
        check.record({"part": "install", "status": "skipped: megatron.core imports already", "box_s": 0})
        return
    wheels = sorted(glob.glob(str(ROOT / ".whl" / "*.whl")))
    if not wheels and "install" not in check.args.commands:
        check.record({"part": "install", "status": "failed: no .whl/*.whl carried (carry [\".whl\"]; "
                      "python3 bench/device_check.py --prepare makes it)", "box_s": 0})
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", check.args.site, *wheels]
    check.run_part("install", cmd, "setup.log")


def merge_junit(files: list[Path], into: Path) -> dict:
    """One <testsuites> file of the modules' JUnit files; the counts and the failed and skipped tests."""
    root = ET.Element("testsuites")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], {}
    for f in files:
        try:
            tree = ET.parse(f)
        except (ET.ParseError, OSError):
            continue
        suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else list(tree.getroot())
        for suite in suites:
            root.append(suite)
            for k in counts:
                counts[k] += int(suite.get(k, 0))
            for case in suite.iter("testcase"):
                name = f"{case.get('classname')}::{case.get('name')}"
                for tag in ("failure", "error"):
                    for el in case.iter(tag):
                        failed.append({"test": name, "message": (el.get("message") or "")[:500]})
                for el in case.iter("skipped"):
                    skipped[name] = (el.get("message") or "")[:300]
    ET.ElementTree(root).write(into, encoding="utf-8", xml_declaration=True)
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": failed, "skipped_tests": skipped}


def part_tests(check: Check) -> None:
    """One pytest per module, each boxed by what is left of the tier's box."""
    tier_box = check.box("tests")
    end = time.monotonic() + tier_box
    entries, xmls = [], []
    for module in MODULES:
        left = end - time.monotonic()
        xml = check.scratch / f"{module}.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-v", "-p", "no:cacheprovider",
               f"--junitxml={xml}", f"tests/gpu/{module}.py"]
        if "tests" in check.args.commands:
            cmd = check.args.commands["tests"]
        if left < 1:
            entries.append({"module": module, "status": "not run: the tier's box is spent"})
            continue
        r = run_boxed(cmd, box_s=left, log=check.out / "gpu_tests.log", env=check.env,
                      shell=isinstance(cmd, str))
        # pytest's exit codes: 0 all passed, 1 some failed, 5 none collected (a module all skipped still exits 0)
        status = "timed out" if r["timed_out"] else "ok" if r["rc"] == 0 else f"failed (exit {r['rc']})"
        entries.append({"module": module, **r, "status": status})
        xmls.append(xml)
    junit = merge_junit([x for x in xmls if x.exists()], check.out / "gpu_tests.xml")
    ran = [e for e in entries if "rc" in e]
    status = ("timed out" if any(e["timed_out"] for e in ran) else "not run: no time left" if not ran else
              "ok" if all(e["status"] == "ok" for e in entries) else "failed")
    check.summary["tests"] = junit
    check.record({"part": "tests", "status": status, "box_s": round(tier_box), "modules": entries,
                  "seconds": round(sum(e.get("seconds", 0) for e in entries), 1)})


def bench_summary(path: Path) -> dict:
    """What the bench JSON says, per implementation: tokens/s, MFU, peak memory, or its error."""
    if not path.exists():
        return {"written": False}
    report = json.loads(path.read_text())
    runs = {}
    for name, r in report.get("results", {}).items():
        runs[name] = {k: r.get(k) for k in ("status", "tokens_per_s", "mfu", "peak_memory_gib", "layer_spec",
                                            "wall_s")}
        if r.get("status") != "ok":
            runs[name]["error"] = (r.get("error") or "")[:500]
    return {"written": True, "complete": report.get("complete"), "gpu": report.get("gpu"), "runs": runs,
            "best_hf": report.get("best_hf"), "best_octomega": report.get("best_octomega"),
            "octomega_over_best_hf": report.get("octomega_runs_over_best_hf_tokens_per_s")}


def part_bench(check: Check) -> None:
    out = check.out / f"{bench_name(check.args)}.json"
    check.run_part("bench", bench_command(check.args, out), f"{bench_name(check.args)}.log")
    check.summary["bench"] = bench_summary(out)
    check.write()


# ------------------------------------------------------------------------------------------- here: the carry


def carry_report(root: Path, carry: list[str]) -> dict:
    """Bytes a device call takes: the working tree that travels (tracked and untracked-not-ignored files) and the
    carried paths (ignored folders named in `carry`)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((root / n).stat().st_size for n in names if n and (root / n).is_file())
    paths = {}
    for c in carry:
        p = root / c
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()] if p.exists() else []
        paths[c] = sum(q.stat().st_size for q in files)
    total = tree + sum(paths.values())
    return {"tree_bytes": tree, "carry_bytes": paths, "total_bytes": total, "limit_bytes": CARRY_LIMIT,
            "fits": total <= CARRY_LIMIT}


def device_call(args) -> dict:
    flag = " --te" if args.te else ""
    return {"command": f"bash bench/device_check.sh{flag}", "carry": [] if args.te else [".whl"],
            "timeout_s": int(args.budget_s) + 75}


def prepare(args) -> int:
    if not glob.glob(str(ROOT / ".whl" / "megatron_core-0.19.2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_24_x86_64", "-d", str(ROOT / ".whl"), MEGATRON_WHEEL], check=True)
    call = device_call(args)
    report = carry_report(ROOT, call["carry"])
    print(json.dumps({"device_call": call, "carry": report}, indent=1))
    if not report["fits"]:
        print(f"device_check: the call would carry {report['total_bytes'] / 2**20:.1f} MiB, over the "
              f"{CARRY_LIMIT / 2**20:.0f} MiB a call takes", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.prepare:
        return prepare(args)
    if args.dry_run:
        plan = {"parts": args.parts, "caps_s": {k: args.boxes.get(k, v) for k, v in CAPS.items()},
                "budget_s": args.budget_s, "modules": list(MODULES), "bench": shlex.join(bench_command(
                    args, Path(args.out) / f"{bench_name(args)}.json")), "device_call": device_call(args)}
        print(json.dumps(plan, indent=1))
        return 0
    if args.te and not args.simulate and not (te_dir() / "ready").exists():
        print(f"device_check: --te needs Transformer Engine installed on this machine by bench/device_te.sh build "
              f"({te_dir() / 'ready'} is missing); the machine goes back after 30 s idle", file=sys.stderr)
        return 2
    check = Check(args)
    for part in args.parts:
        {"env": part_env, "install": part_install, "tests": part_tests, "bench": part_bench}[part](check)
    shutil.rmtree(check.scratch, ignore_errors=True)
    check.write()
    s = check.summary
    print("\n== device_check summary (summary.json) ==")
    for e in s["parts"]:
        print(f"{e['part']:8} {e['status']:<40} {e.get('seconds', 0):>6.1f} s (box {e.get('box_s', 0)} s)")
    if "tests" in s:
        t = s["tests"]
        print(f"gpu tests: {t['passed']} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped")
        for f in t["failed"]:
            print(f"  FAILED {f['test']}: {f['message'][:200]}")
    for name, r in (s.get("bench", {}).get("runs") or {}).items():
        print(f"  {name}: {r['status']}" + (f", {r['tokens_per_s']:,.0f} tokens/s" if r.get("tokens_per_s") else "")
              + (f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""))
    print(f"elapsed {s['elapsed_s']} s of {args.budget_s:g}")
    return 0 if all(e["status"] in ("ok",) or e["status"].startswith("skipped") for e in s["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
