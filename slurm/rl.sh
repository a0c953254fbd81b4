#!/usr/bin/env bash
# slurm/rl.sh: the RL stage (`octomega rl RECIPE`, GRPO or PPO) as a Slurm job that checkpoints and requeues itself
# before its time limit and resumes from its last checkpoint (the run writes rl_status.json when it stops).
#
#   sbatch [SBATCH OPTIONS] slurm/rl.sh [RECIPE] [key.sub=value ...]
#   slurm/rl.sh [RECIPE] [key.sub=value ...]        outside a job: submits itself, log in RUN_DIR/logs/
#   slurm/rl.sh --dry-run ...                       print what would be submitted / launched
#
# Arguments:
#   RECIPE          [$RECIPE, else llama32_1b_rl_grpo]  an RL recipe (`octomega recipes`, names with _rl_) or a
#                   saved RL config JSON
#   key.sub=value   config overrides passed to `octomega rl`, e.g. rollout.backend=vllm train.steps=50
# Environment (defaults in brackets; slurm/common.sh lists the rest):
#   RECIPE                  [llama32_1b_rl_grpo]
#   OCTOMEGA_RUNS, OCTOMEGA_MODELS [runs, models]  where RL recipes find the decayed HF exports and base models
#   OCTOMEGA_LAUNCHER       [srun]  srun (one task per GPU) | torchrun (one per node, c10d rendezvous)
#   OCTOMEGA_REQUEUE        [1]     0: checkpoint at the warning and stop instead of requeueing
#   OCTOMEGA_GRACE, OCTOMEGA_SBATCH_ARGS  submit mode: warning time in seconds, extra sbatch options
# Run directory: the recipe's run_dir, with logs/ as in stable.sh. A run that stops at its own time budget
# (status time_budget) is requeued too.
# Example: sbatch --dependency=afterok:$CONVERT_JOB slurm/rl.sh llama32_3b_rl_grpo_long
#SBATCH --job-name=octomega-rl
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
recipe=${RECIPE:-llama32_1b_rl_grpo}
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then recipe=$1; shift; fi
om_train_job rl "$recipe" "$@"
