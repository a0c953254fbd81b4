#!/usr/bin/env bash
# slurm/data_prep.sh: tokenize OctoThinker's corpora with datatrove on Slurm and write the stage blends.
#
#   slurm/data_prep.sh [all] [tokenize options ...]  tokenize every corpus (a datatrove job array + a merge job each),
#                                                   then submit `mix` to run when all merge jobs have succeeded
#   slurm/data_prep.sh tokenize [tokenize options]  only submit the tokenization (`python -m data_prep.tokenize
#                                                   --corpus C ... --executor slurm` for each corpus)
#   slurm/data_prep.sh mix                          write the blends now (`python -m data_prep.mix`), here or in a job
#   sbatch slurm/data_prep.sh [all|mix]             the same from inside a small job (compute nodes must be
#                                                   allowed to call sbatch for `all`)
#   slurm/data_prep.sh --dry-run [all|tokenize|mix] print the commands; submit and write nothing
#
# Run it where sbatch works: datatrove's SlurmPipelineExecutor submits the arrays itself. A corpus whose output is
# up to date is skipped; resubmitting reruns only the datatrove tasks without a completion marker.
# Environment (defaults in brackets):
#   OCTOMEGA_DATA  [data]                  blends go to OCTOMEGA_DATA/blends/<mixture>.json (what recipes/paper.py reads)
#   TOKENIZER      [$OCTOMEGA_DATA/tokenizer]  tokenizer directory (Llama 3's), shared by every corpus
#   TOKENS_DIR     [$OCTOMEGA_DATA/tokens]     .bin/.idx prefixes and <corpus>.stats.json
#   CORPORA        [megamath-web-pro-max megamath-web-pro megamath-web megamath-code megamath-qa dclm-baseline
#                   openr1-math openmathinstruct-2]  registry names (`python -m data_prep.mix --list-corpora`)
#   MIXTURES       [stable decay_long decay_short decay_hybrid valid]  valid: every corpus at equal weight (training
#                   reads only its held-out documents)
#   STABLE_TOKENS  [200B]   DECAY_TOKENS [20B]   token budgets of the stable stage and of each decay branch
#   PARTITION      [the job's partition, else the cluster's default]  for the datatrove arrays
#   TASK_TIME      [24:00:00]   VALID_DOCS [2000]   datatrove task time limit; held-out documents per corpus
# The small job that runs `mix` uses the #SBATCH defaults below.
#SBATCH --job-name=octomega-data-mix
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@60
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
action=all
case "${1:-}" in all|tokenize|mix) action=$1; shift ;; esac

data=${OCTOMEGA_DATA:-data}
tokenizer=${TOKENIZER:-$data/tokenizer}
tokens=${TOKENS_DIR:-$data/tokens}
read -r -a corpora <<< "${CORPORA:-megamath-web-pro-max megamath-web-pro megamath-web megamath-code megamath-qa dclm-baseline openr1-math openmathinstruct-2}"
read -r -a mixtures <<< "${MIXTURES:-stable decay_long decay_short decay_hybrid valid}"

run() {  # print, then run unless --dry-run
  om_log "$(om_show "$@")"
  [ -n "$OM_DRY_RUN" ] || "$@"
}

tokenize() {  # submits; the merge job ids go to MERGE_JOBS
  local partition=${PARTITION:-${SLURM_JOB_PARTITION:-}}
  if [ -z "$partition" ] && [ -z "$OM_DRY_RUN" ]; then
    partition=$(sinfo -h -o '%P' 2>/dev/null | sed -n 's/\*$//p' | head -n 1)
  fi
  [ -n "$partition" ] || partition=${OM_DRY_RUN:+PARTITION}
  [ -n "$partition" ] || om_die "no partition for the datatrove jobs: set PARTITION"
  MERGE_JOBS=()
  local c out
  for c in "${corpora[@]}"; do
    local cmd=("$PY" -m data_prep.tokenize --corpus "$c" --tokenizer "$tokenizer" --output-dir "$tokens"
               --executor slurm --partition "$partition" --time "${TASK_TIME:-24:00:00}" --valid-docs "${VALID_DOCS:-2000}" "$@")
    om_log "$(om_show "${cmd[@]}")"
    [ -n "$OM_DRY_RUN" ] && continue
    out=$("${cmd[@]}" 2>&1) || { printf '%s\n' "$out"; om_die "tokenize $c failed" 1; }
    printf '%s\n' "$out"
    # "tokenize: submitted Slurm jobs <array> (tokenize, N tasks) and <merge> (merge); ..."
    local id
    id=$(printf '%s\n' "$out" | sed -n 's/.*submitted Slurm jobs [0-9]* (tokenize.*) and \([0-9][0-9]*\) (merge).*/\1/p' | tail -n 1)
    [ -n "$id" ] && MERGE_JOBS+=("$id")
  done
}

mix() {
  local m
  for m in "${mixtures[@]}"; do
    case "$m" in
      stable) run "$PY" -m data_prep.mix --stats "$tokens" --mixture stable --train-tokens "${STABLE_TOKENS:-200B}" --out "$data/blends/stable.json" ;;
      valid)
        local w="" c
        for c in "${corpora[@]}"; do w+="${w:+,}$c=1"; done
        run "$PY" -m data_prep.mix --stats "$tokens" --mixture custom --weights "$w" --train-tokens 1B --out "$data/blends/valid.json" ;;
      *) run "$PY" -m data_prep.mix --stats "$tokens" --mixture "$m" --train-tokens "${DECAY_TOKENS:-20B}" --out "$data/blends/$m.json" ;;
    esac
  done
}

case "$action" in
  mix) mix ;;
  tokenize) tokenize "$@" ;;
  all)
    tokenize "$@"
    if [ -n "$OM_DRY_RUN" ]; then
      om_log "then: sbatch --dependency=afterok:<merge jobs> $OM_SCRIPT mix"
    elif [ ${#MERGE_JOBS[@]} -eq 0 ]; then
      om_log "nothing was submitted (every corpus up to date): writing the blends now"
      mix
    else
      dep=$(IFS=:; echo "${MERGE_JOBS[*]}")
      mkdir -p "$data/logs"
      run sbatch --parsable --dependency="afterok:$dep" --kill-on-invalid-dep=yes \
        --output="$(realpath -m "$data/logs")/slurm-%x-%j.out" --export="ALL,OCTOMEGA_HOME=$OM_HOME" "$OM_SCRIPT" mix
    fi ;;
esac
