#!/usr/bin/env bash
# slurm/eval.sh: evaluate on the OctoThinker math benchmarks: an evaluation recipe (`octomega eval RECIPE`, the
# paper's settings from recipes/evals.py) or a model directory (`octomega eval MODEL --suite SUITE --out DIR`).
# The evaluation saves its work in chunks and resumes from its output directory, so a job stopped at its time
# limit is requeued and continues where it stopped.
#
#   sbatch [SBATCH OPTIONS] slurm/eval.sh RECIPE|MODEL [eval options ...]
#   slurm/eval.sh RECIPE|MODEL [eval options ...]   outside a job: submits itself, log in <output dir>/logs/
#   slurm/eval.sh --dry-run RECIPE|MODEL ...        print what would be submitted / run
#
# Arguments:
#   RECIPE|MODEL    an existing path, or one with a '/' (an earlier job may write it): a Hugging Face model directory
#                   (e.g. runs/llama32_1b_decay_long/hf). Otherwise an evaluation recipe, e.g. llama32_1b_eval_long
#                   (`python -m octomega recipes` lists them: <size>_eval_base, _eval_<branch>, _eval_rl_<branch>)
#   eval options    passed on (`octomega eval --help`): --benchmarks a,b --limit N --samples K ...; they override the
#                   recipe's settings, or MODEL's defaults below (--out, --name)
# Environment (defaults in brackets):
#   SUITE     [base-fewshot]  base-fewshot (base and mid-trained models) | rl-zeroshot (RL models)
#   BACKEND   [vllm]          vllm | hf | megatron
#   OUT       [$OCTOMEGA_RUNS/eval/<label>-<suite>]  label: the model directory's name (its parent's for .../hf)
#   With a RECIPE these defaults do not apply (the recipe sets suite, backend, output directory and name); SUITE,
#   BACKEND and OUT, when set, still override the recipe (passed as --suite, --backend, --out before the eval
#   options). The log goes to the output directory `octomega eval RECIPE ... --dry-run` resolves
#   ($OCTOMEGA_RUNS/eval/RECIPE unless --out or OUT say otherwise).
#   OCTOMEGA_RUNS [runs]; OCTOMEGA_MAX_REQUEUES [20]; OCTOMEGA_GRACE, OCTOMEGA_SBATCH_ARGS (submit mode)
# Examples: sbatch --dependency=afterok:$CONVERT_JOB slurm/eval.sh llama32_1b_eval_long
#           sbatch --dependency=afterok:$CONVERT_JOB slurm/eval.sh runs/llama32_1b_decay_long/hf --limit 100
#SBATCH --job-name=octomega-eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=128G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# sbatch runs a copy of this file: find the checkout from the job's Command (or OCTOMEGA_HOME, or the submit dir).
OM_SCRIPT=$(readlink -f "$0")
OM_SLURM_DIR=${OCTOMEGA_HOME:+$OCTOMEGA_HOME/slurm}
[ -n "$OM_SLURM_DIR" ] || OM_SLURM_DIR=$(dirname "$OM_SCRIPT")
if [ ! -f "$OM_SLURM_DIR/common.sh" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  OM_SCRIPT=$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
  OM_SLURM_DIR=$(dirname "$OM_SCRIPT")
  [ -f "$OM_SLURM_DIR/common.sh" ] || OM_SLURM_DIR=${SLURM_SUBMIT_DIR:-.}/slurm
fi
[ -f "$OM_SLURM_DIR/common.sh" ] || { echo "$0: cannot find slurm/common.sh: set OCTOMEGA_HOME to the checkout" >&2; exit 2; }
# shellcheck source=slurm/common.sh
source "$OM_SLURM_DIR/common.sh"
om_parse "$@"
set -- "${OM_ARGS[@]+"${OM_ARGS[@]}"}"
[ $# -ge 1 ] || om_die "give the recipe or the model: slurm/eval.sh RECIPE|MODEL [eval options]"
target=${1%/}; shift
if [ -e "$target" ] || [[ "$target" == */* ]]; then  # a model directory
  model=$target
  suite=${SUITE:-base-fewshot}
  label=$(basename "$model")
  [ "$label" = hf ] && label=$(basename "$(dirname "$model")")
  out=${OUT:-${OCTOMEGA_RUNS:-runs}/eval/$label-$suite}
  extra=(--suite "$suite" --backend "${BACKEND:-vllm}")
  user_out='' user_name='' prev=''
  for a in "$@"; do
    case "$a" in
      --out=*) out=${a#--out=}; user_out=1 ;;
      --name|--name=*) user_name=1 ;;
    esac
    [ "$prev" = --out ] && { out=$a; user_out=1; }
    prev=$a
  done
  [ -n "$user_out" ] || extra+=(--out "$out")
  [ -n "$user_name" ] || extra+=(--name "$label")
  om_command_job "${SLURM_JOB_NAME:-om-eval-$label}" "$out" \
    -m octomega eval "$model" "${extra[@]}" "$@"
else  # an evaluation recipe: it sets suite, backend, out and name; SUITE, BACKEND, OUT set explicitly override it
  extra=()
  if [ -n "${SUITE:-}" ]; then extra+=(--suite "$SUITE"); fi
  if [ -n "${BACKEND:-}" ]; then extra+=(--backend "$BACKEND"); fi
  if [ -n "${OUT:-}" ]; then extra+=(--out "$OUT"); fi
  set -- "${extra[@]+"${extra[@]}"}" "$@"
  rc=0
  out=$(om_eval_out "$target" "$@") || rc=$?  # the recipe's output directory, from octomega eval itself
  if [ "$rc" -eq 3 ]; then
    om_die "$target is neither a directory nor an evaluation recipe${out:+ (did you mean $out?)}: give a model \
directory (e.g. runs/llama32_1b_decay_long/hf) or a recipe (\`python -m octomega recipes\` lists them: *_eval_*)"
  fi
  [ "$rc" -eq 0 ] || exit "$rc"  # octomega eval said what is wrong (a recipe of another kind, a bad option)
  om_command_job "${SLURM_JOB_NAME:-om-$target}" "$out" -m octomega eval "$target" "$@"
fi
