#!/usr/bin/env bash
# slurm/stable.sh: the stable stage of mid-training (`octomega train RECIPE`) as a Slurm job that checkpoints and
# requeues itself before its time limit, and resumes from its last complete checkpoint.
#
#   sbatch [SBATCH OPTIONS] slurm/stable.sh [RECIPE] [key.sub=value ...]
#   slurm/stable.sh [RECIPE] [key.sub=value ...]    outside a job: submits itself, log in RUN_DIR/logs/
#   slurm/stable.sh --dry-run ...                   print what would be submitted / launched
#
# Arguments:
#   RECIPE          [$RECIPE, else llama32_1b_stable]  a recipe (`octomega recipes`) or a config JSON
#   key.sub=value   config overrides passed to `octomega train`, e.g. train.train_tokens=2e9 parallel.tp=2
# Environment (defaults in brackets; slurm/common.sh lists the rest):
#   RECIPE                  [llama32_1b_stable]
#   OCTOMEGA_RUNS, OCTOMEGA_DATA, OCTOMEGA_MODELS [runs, data, models]  where the paper recipes put and find things
#   OCTOMEGA_LAUNCHER       [srun]  srun (one task per GPU) | torchrun (one per node, c10d rendezvous)
#   OCTOMEGA_REQUEUE        [1]     0: checkpoint at the warning and stop instead of requeueing
#   OCTOMEGA_GRACE, OCTOMEGA_SBATCH_ARGS  submit mode: warning time in seconds, extra sbatch options
# Run directory: the recipe's run_dir (runs/<recipe>); logs/slurm-<jobid>.out (a link when sbatch chose the log
# file) and logs/jobs.log (one line per start, requeue and end) are written there.
# Examples:
#   sbatch --nodes=4 slurm/stable.sh llama32_3b_stable
#   OCTOMEGA_SBATCH_ARGS="--nodes=2 --time=12:00:00" slurm/stable.sh llama31_8b_stable
#   sbatch --gpus-per-node=0 --ntasks-per-node=1 --cpus-per-task=2 slurm/stable.sh tiny_stable data.mock=true
#SBATCH --job-name=octomega-stable
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --mem=0
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@600
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
recipe=${RECIPE:-llama32_1b_stable}
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then recipe=$1; shift; fi
OM_JOB_NAME=${SLURM_JOB_NAME:-om-$recipe}
om_train_job train "$recipe" "$@"
