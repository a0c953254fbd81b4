#!/usr/bin/env bash
# slurm/decay.sh: one decay branch of mid-training (`octomega train <model>_decay_<BRANCH>`): starts from the stable
# run's latest checkpoint, checkpoints and requeues itself before its time limit, resumes from its own checkpoints.
#
#   sbatch [SBATCH OPTIONS] slurm/decay.sh BRANCH [key.sub=value ...]
#   slurm/decay.sh BRANCH [key.sub=value ...]       outside a job: submits itself, log in RUN_DIR/logs/
#   slurm/decay.sh --dry-run BRANCH ...             print what would be submitted / launched
#
# Arguments:
#   BRANCH          [$BRANCH]  long | short | hybrid (the tiny model also has web, the no-QA control)
#   key.sub=value   config overrides passed to `octomega train`
# Environment (defaults in brackets; slurm/common.sh lists the rest):
#   MODEL                   [llama32_1b]  llama32_1b | llama32_3b | llama31_8b | tiny: the recipe is MODEL_decay_BRANCH
#   RECIPE                  [MODEL_decay_BRANCH]  any recipe or config JSON instead
#   OCTOMEGA_RUNS, OCTOMEGA_DATA [runs, data]  the stable run is found at OCTOMEGA_RUNS/MODEL_stable
#   OCTOMEGA_LAUNCHER       [srun]  srun (one task per GPU) | torchrun (one per node, c10d rendezvous)
#   OCTOMEGA_REQUEUE        [1]     0: checkpoint at the warning and stop instead of requeueing
#   OCTOMEGA_GRACE, OCTOMEGA_SBATCH_ARGS  submit mode: warning time in seconds, extra sbatch options
# Run directory: the recipe's run_dir (runs/MODEL_decay_BRANCH), with logs/ as in stable.sh.
# Examples:
#   sbatch --dependency=afterok:$STABLE_JOB slurm/decay.sh long      (afterok waits through the stable job's requeues)
#   for b in long short hybrid; do MODEL=llama32_3b slurm/decay.sh $b; done
#SBATCH --job-name=octomega-decay
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
branch=${BRANCH:-}
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then branch=$1; shift; fi
if [ -z "${RECIPE:-}" ]; then
  case "$branch" in
    long|short|hybrid|web) ;;
    *) om_die "give the branch: slurm/decay.sh long|short|hybrid [key=value ...] (got '$branch')" ;;
  esac
fi
recipe=${RECIPE:-${MODEL:-llama32_1b}_decay_$branch}
om_train_job train "$recipe" "$@"
