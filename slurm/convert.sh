#!/usr/bin/env bash
# slurm/convert.sh: export a Megatron checkpoint to a Hugging Face directory
# (`octomega convert mcore-to-hf CKPT_DIR OUT_DIR`): one process, layer by layer; the output appears only when
# complete, so a job stopped at its time limit is requeued and converts again.
#
#   sbatch [SBATCH OPTIONS] slurm/convert.sh CKPT_DIR [OUT_DIR] [convert options ...]
#   slurm/convert.sh CKPT_DIR [OUT_DIR] [...]       outside a job: submits itself, log in OUT_DIR/../logs/
#   slurm/convert.sh --dry-run CKPT_DIR ...         print what would be submitted / run
#
# Arguments:
#   CKPT_DIR        a run directory, its checkpoints/ or one iter_* directory (the latest complete iteration unless
#                   --iteration N)
#   OUT_DIR         [RUN/hf; RUN/hf-iter_N for an iter_N directory]  the HF directory to create (RL recipes read
#                   runs/<model>_decay_<branch>/hf)
#   convert options passed on: --dtype bf16|fp32, --iteration N, --tokenizer DIR, --max-shard-size 5GB, --overwrite
# Environment: OCTOMEGA_PYTHON, OCTOMEGA_MAX_REQUEUES [20], OCTOMEGA_GRACE and OCTOMEGA_SBATCH_ARGS (submit mode);
#   see slurm/common.sh.
# Example: sbatch --dependency=afterok:$DECAY_JOB slurm/convert.sh runs/llama32_1b_decay_long
#SBATCH --job-name=octomega-convert
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=256G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
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
[ $# -ge 1 ] || om_die "give the checkpoint: slurm/convert.sh CKPT_DIR [OUT_DIR] [convert options]"
ckpt=${1%/}; shift
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then out=${1%/}; shift
else
  case "$(basename "$ckpt")" in  # the run directory may not exist yet (a job submitted with --dependency)
    iter_*) out=$(dirname "$(dirname "$ckpt")")/hf-$(basename "$ckpt") ;;
    checkpoints) out=$(dirname "$ckpt")/hf ;;
    *) out=$ckpt/hf ;;
  esac
fi
om_command_job "${SLURM_JOB_NAME:-om-convert-$(basename "$ckpt")}" "$(dirname "$out")" \
  -m octomega convert mcore-to-hf "$ckpt" "$out" "$@"
