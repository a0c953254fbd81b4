"""`octomega convert`: Hugging Face <-> Megatron-Core checkpoints of Llama models, and a logits check.

    octomega convert hf-to-mcore HF_DIR OUT_DIR [--tp N --pp M] [--dtype bf16|fp32]
    octomega convert mcore-to-hf CKPT_DIR OUT_DIR [--dtype bf16|fp32] [--tokenizer DIR] [--max-shard-size 5GB]
    octomega convert verify HF_DIR CKPT_DIR [--dtype fp32|bf16] [--atol X]

Exit status: 0 done; 1 verify found logits beyond the tolerance; 2 bad input (the message says what and where).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from octomega.launch import DEBUG_HELP, report_input_errors

DTYPES = ("bf16", "fp32")


def _dtype(name: str | None):
    import torch

    return None if name is None else {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="octomega convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Every conversion runs in one process, layer by layer; outputs appear only "
                                       "when complete (written to a hidden sibling directory, then renamed).")
    sub = p.add_subparsers(dest="command", required=True, metavar="{hf-to-mcore,mcore-to-hf,verify}")

    a = sub.add_parser("hf-to-mcore", help="HF Llama directory -> Megatron dist checkpoint to start training from",
                       description="Write OUT_DIR/iter_0000000 (torch_dist, reshardable to any TP/PP on load, with "
                                   "octomega.json and the COMPLETE marker) from an HF Llama directory. Start a run "
                                   "from it with init.from_checkpoint=OUT_DIR (or skip this step: init.hf_path=HF_DIR "
                                   "does the same in-process).")
    a.add_argument("hf_dir", metavar="HF_DIR", help="HF model directory: config.json + safetensors (+ tokenizer)")
    a.add_argument("out_dir", metavar="OUT_DIR", help="checkpoint directory to create")
    a.add_argument("--tp", type=int, default=1, help="tensor-parallel size the run will use: sets the vocabulary "
                                                    "padding (multiple of 128 x TP) and is checked against the shape")
    a.add_argument("--pp", type=int, default=1, help="pipeline-parallel size the run will use (checked, recorded)")
    a.add_argument("--dtype", choices=DTYPES, default=None, help="stored dtype (default: the HF config's)")
    a.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")

    b = sub.add_parser("mcore-to-hf", help="Megatron checkpoint (any TP/PP) -> HF directory for transformers/vLLM",
                       description="Export a complete checkpoint (a run dir, its checkpoints/ dir or one iter_* dir; "
                                   "the latest complete iteration unless --iteration) as an HF Llama directory: "
                                   "safetensors shards + index, config.json, generation_config.json, tokenizer.")
    b.add_argument("ckpt_dir", metavar="CKPT_DIR")
    b.add_argument("out_dir", metavar="OUT_DIR", help="HF directory to create")
    b.add_argument("--dtype", choices=DTYPES, default=None, help="output dtype (default: the stored one)")
    b.add_argument("--iteration", type=int, default=None, help="which iteration of a run (default: latest complete)")
    b.add_argument("--tokenizer", default=None, help="HF tokenizer directory to copy (default: the checkpoint's "
                                                     "hf_assets/, else its config's init.hf_path or data.tokenizer)")
    b.add_argument("--no-tokenizer", action="store_true", help="write weights and config only if none is found")
    b.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB, as transformers)")
    b.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")

    c = sub.add_parser("verify", help="compare transformers' and Megatron's logits on the same random tokens",
                       description="Run transformers' LlamaForCausalLM (HF_DIR) and the Megatron checkpoint "
                                   "(CKPT_DIR) on the same seeded random tokens, one model in memory at a time; print "
                                   "the largest absolute logit difference; exit 1 beyond the tolerance.")
    c.add_argument("hf_dir", metavar="HF_DIR")
    c.add_argument("ckpt_dir", metavar="CKPT_DIR")
    c.add_argument("--iteration", type=int, default=None)
    c.add_argument("--dtype", choices=DTYPES, default="fp32", help="compute dtype of both models (default fp32)")
    c.add_argument("--atol", type=float, default=None, help="tolerance on the max |logit difference| (default "
                                                            "1e-3 in fp32; in bf16 3%% of the largest |logit|)")
    c.add_argument("--batch", type=int, default=2)
    c.add_argument("--seq-len", type=int, default=64)
    c.add_argument("--seed", type=int, default=0)
    for command in (a, b, c):
        command.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def _log(msg: str) -> None:
    print(f"[convert {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return report_input_errors(f"octomega convert {args.command}", lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    from octomega.convert import commands

    if args.command == "hf-to-mcore":
        commands.hf_to_mcore(args.hf_dir, args.out_dir, tp=args.tp, pp=args.pp, dtype=_dtype(args.dtype),
                             overwrite=args.overwrite, log=_log)
    elif args.command == "mcore-to-hf":
        commands.mcore_to_hf(args.ckpt_dir, args.out_dir, dtype=_dtype(args.dtype), iteration=args.iteration,
                             tokenizer=args.tokenizer, max_shard_size=args.max_shard_size,
                             allow_no_tokenizer=args.no_tokenizer, overwrite=args.overwrite, log=_log)
    else:
        r = commands.verify(args.hf_dir, args.ckpt_dir, iteration=args.iteration, dtype=_dtype(args.dtype),
                            batch=args.batch, seq_len=args.seq_len, seed=args.seed, atol=args.atol, log=_log)
        print(f"max |logit difference| = {r['max_abs_diff']:.3e} (tolerance {r['tolerance']:.1e}, "
              f"{r['dtype']}); mean {r['mean_abs_diff']:.3e}; argmax agreement {r['argmax_agreement']:.4f}; "
              f"largest |logit| {r['max_abs_logit']:.2f}")
        print(json.dumps(r), flush=True)
        if not r["ok"]:
            print("octomega convert verify: FAILED: the logits differ beyond the tolerance", file=sys.stderr)
            return 1
        print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
