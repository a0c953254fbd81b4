#!/usr/bin/env bash
# slurm/eval.sh: evaluate a model on the OctoThinker math benchmarks (`octomega eval MODEL --suite SUITE --out DIR`).
# The evaluation saves its work in chunks and resumes from --out, so a job stopped at its time limit is requeued
# and continues where it stopped.
#
#   sbatch [SBATCH OPTIONS] slurm/eval.sh MODEL [eval options ...]
#   slurm/eval.sh MODEL [eval options ...]          outside a job: submits itself, log in OUT/logs/
#   slurm/eval.sh --dry-run MODEL ...               print what would be submitted / run
#
# Arguments:
#   MODEL           a Hugging Face model directory (e.g. runs/llama32_1b_decay_long/hf)
#   eval options    passed on (`octomega eval --help`): --benchmarks a,b --limit N --samples K ...; --out or --name
#                   given here replace the defaults below
# Environment (defaults in brackets):
#   SUITE     [base-fewshot]  base-fewshot (base and mid-trained models) | rl-zeroshot (RL models)
#   BACKEND   [vllm]          vllm | hf | megatron
#   OUT       [$OCTOMEGA_RUNS/eval/<label>-<suite>]  label: the model directory's name (its parent's for .../hf)
#   OCTOMEGA_RUNS [runs]; OCTOMEGA_MAX_REQUEUES [20]; OCTOMEGA_GRACE, OCTOMEGA_SBATCH_ARGS (submit mode)
# Example: sbatch --dependency=afterok:$CONVERT_JOB slurm/eval.sh runs/llama32_1b_decay_long/hf
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
[ $# -ge 1 ] || om_die "give the model: slurm/eval.sh MODEL [eval options]"
model=${1%/}; shift
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
