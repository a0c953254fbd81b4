# shellcheck shell=bash
# slurm/common.sh: sourced by the stage scripts of slurm/ (never run by itself). One place for the launcher logic:
#   - where the checkout and its Python are (sbatch runs a *copy* of the script from Slurm's spool directory);
#   - submit mode: a stage script run outside a job submits itself, with its log in the run directory;
#   - the distributed environment: MASTER_ADDR = first node of the job, MASTER_PORT, processes per node;
#   - one job step: srun with one task per GPU (default), or srun with one torchrun per node;
#   - the time-limit flow: USR1 warning -> the training processes checkpoint and exit -> `scontrol requeue`.
# docs/slurm.md explains the flow and the Slurm facts behind each choice.
#
# Environment (all optional; defaults in brackets):
#   OCTOMEGA_HOME           [the checkout holding this file]  code to run (PYTHONPATH) and the slurm/ scripts
#   OCTOMEGA_PYTHON         [$OCTOMEGA_HOME/.venv/bin/python, else python3]
#   OCTOMEGA_LAUNCHER       [srun]  srun: one task per GPU (RANK from SLURM_PROCID); torchrun: one torchrun per
#                                   node with a c10d rendezvous on the first node
#   OCTOMEGA_NPROC_PER_NODE [GPUs on the node, else --ntasks-per-node, else 1]  training processes per node
#   MASTER_ADDR, MASTER_PORT [first node of the job; 20000 + job id % 20000]
#   OCTOMEGA_REQUEUE        [1]     0: on the warning, checkpoint and stop instead of requeueing
#   OCTOMEGA_MAX_REQUEUES   [20]    for commands without a checkpoint to show progress (convert, eval, data_prep)
#   OCTOMEGA_GRACE          [none]  submit mode only: adds --signal=B:USR1@GRACE (seconds before the time limit)
#   OCTOMEGA_SBATCH_ARGS    [none]  submit mode only: extra sbatch options, e.g. "--nodes=4 --time=12:00:00"
#   TORCH_ELASTIC_SHUTDOWN_TIMEOUT [$OCTOMEGA_GRACE or 600]  torchrun: seconds its workers get to save before SIGKILL

om_log() { printf '[octomega-slurm %s] %s\n' "$(date '+%F %T')" "$*"; }
om_die() { om_log "error: $*" >&2; exit "${2:-2}"; }

# The script's header comment (its usage), then its #SBATCH defaults.
om_usage() {
  awk 'NR == 1 { next }
       /^#SBATCH/ { sb = sb "  " $0 "\n"; next }
       /^#/ { sub(/^# ?/, ""); print; next }
       /^$/ { print ""; next }
       { exit }
       END { if (sb) printf "\nSlurm defaults (sbatch options on the command line or SBATCH_* variables override them):\n%s", sb }' \
    "$OM_SCRIPT"
}

# Paths and Python. Called by om_parse before anything else.
om_setup() {
  OM_HOME=${OCTOMEGA_HOME:-$(cd "$OM_SLURM_DIR/.." && pwd)}
  export OCTOMEGA_HOME=$OM_HOME
  # The checkout's packages (octomega, recipes, data_prep) win over whatever is installed.
  export PYTHONPATH="$OM_HOME${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  PY=${OCTOMEGA_PYTHON:-}
  if [ -z "$PY" ]; then
    if [ -x "$OM_HOME/.venv/bin/python" ]; then PY=$OM_HOME/.venv/bin/python; else PY=$(command -v python3 || true); fi
  fi
  [ -n "$PY" ] || om_die "no Python found: set OCTOMEGA_PYTHON"
}

# om_parse "$@": handles --help and --dry-run; leaves the script's own arguments in OM_ARGS.
om_parse() {
  OM_WARNED='' OM_TERMINATED='' OM_SIGNALLED='' OM_STEP_PID=''
  if om_in_job; then  # first thing: the warning may come at any time (bash's default for USR1 is to exit)
    trap om_on_warning USR1
    trap om_on_term TERM
  fi
  om_setup
  OM_DRY_RUN=${OM_DRY_RUN:-}
  OM_ARGS=()
  local a
  for a in "$@"; do
    case "$a" in
      -h|--help) om_usage; exit 0 ;;
      --dry-run) OM_DRY_RUN=1 ;;
      *) OM_ARGS+=("$a") ;;
    esac
  done
}

om_in_job() { [ -n "${SLURM_JOB_ID:-}" ]; }

# Print a command as one copy-pasteable line.
om_show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[][A-Za-z0-9_./:=@%,+-]+$ ]]; then out+="$a "; else out+="$(printf '%q' "$a") "; fi
  done
  printf '%s\n' "${out% }"
}

# om_submit JOB_NAME LOG_DIR: outside a job, submit this script with the same arguments; its log goes to
# LOG_DIR/slurm-<jobid>.out (appended across requeues).
om_submit() {
  local name=$1 logdir=$2
  logdir=$(realpath -m "$logdir")
  local cmd=(sbatch --parsable --job-name="$name" --output="$logdir/slurm-%j.out" --export="ALL,OCTOMEGA_HOME=$OM_HOME")
  [ -n "${OCTOMEGA_GRACE:-}" ] && cmd+=(--signal="B:USR1@$OCTOMEGA_GRACE")
  local extra=()
  read -r -a extra <<< "${OCTOMEGA_SBATCH_ARGS:-}"
  cmd+=("${extra[@]}" "$OM_SCRIPT" "${OM_ARGS[@]}")
  if [ -n "$OM_DRY_RUN" ]; then echo "would submit: $(om_show "${cmd[@]}")"; return 0; fi
  command -v sbatch >/dev/null || om_die "sbatch not found: run this on a Slurm login node (or inside a job)"
  mkdir -p "$logdir"
  local out jobid
  out=$("${cmd[@]}") || om_die "sbatch failed: $(om_show "${cmd[@]}")" 1
  jobid=${out%%;*}
  echo "submitted job $jobid ($name); log: $logdir/slurm-$jobid.out"
}

# ---- inside a job -------------------------------------------------------------------------------------------

# Distributed environment of the job: NNODES, NPROC_PER_NODE, MASTER_ADDR, MASTER_PORT.
om_dist_env() {
  NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  if [ -z "${MASTER_ADDR:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    [ -n "$MASTER_ADDR" ] || om_die "could not read the first node of SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST:-}"
  fi
  export MASTER_ADDR
  export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
  local gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
  gpus=${gpus##*:}  # "h100:8" -> 8
  [[ "$gpus" =~ ^[0-9]+$ ]] || gpus=0
  if [ "$gpus" -gt 0 ]; then NPROC_PER_NODE=${OCTOMEGA_NPROC_PER_NODE:-$gpus}
  else NPROC_PER_NODE=${OCTOMEGA_NPROC_PER_NODE:-${SLURM_NTASKS_PER_NODE:-1}}; fi
  NPROC_PER_NODE=${NPROC_PER_NODE%%(*}  # "8(x2)" -> 8
  OM_LAUNCHER=${OCTOMEGA_LAUNCHER:-srun}
}

# om_step_cmd dist|single PYTHON_ARGS...: the srun command of one job step into OM_STEP_CMD.
#   dist:   NNODES x NPROC_PER_NODE training processes (srun), or one torchrun per node (torchrun)
#   single: one process on the first node with all its CPUs (convert, eval, mix)
om_step_cmd() {
  local kind=$1; shift
  local cpn=${SLURM_CPUS_ON_NODE:-1}
  OM_TASK_SIGNAL=TERM OM_TASK_WAIT=self  # see slurm/task.sh
  if [ "$kind" = single ]; then
    OM_TASK_WAIT=none
    OM_STEP_CMD=(srun --nodes=1 --ntasks=1 --cpus-per-task="$cpn" --kill-on-bad-exit=1
                 bash "$OM_SLURM_DIR/task.sh" "$PY" "$@")
  elif [ "$OM_LAUNCHER" = srun ]; then
    local cpt=${SLURM_CPUS_PER_TASK:-$(( cpn / NPROC_PER_NODE > 0 ? cpn / NPROC_PER_NODE : 1 ))}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpt}
    OM_STEP_CMD=(srun --nodes="$NNODES" --ntasks-per-node="$NPROC_PER_NODE" --cpus-per-task="$cpt"
                 --kill-on-bad-exit=1 bash "$OM_SLURM_DIR/task.sh" "$PY" "$@")
  elif [ "$OM_LAUNCHER" = torchrun ]; then
    local per=$(( cpn / NPROC_PER_NODE > 0 ? cpn / NPROC_PER_NODE : 1 ))
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$per}
    # torchrun passes on only the signals it handles (default TERM, INT, HUP, QUIT) and kills each worker's whole
    # process group with it: USR1 leaves DataLoader workers alive (they inherit the trainer's USR1 handler) where
    # TERM kills them. It SIGKILLs workers that have not exited after the shutdown timeout: give them the grace.
    # (torchrun reads --signals-to-handle from PET_SIGNALS_TO_HANDLE and exports it to its agent as
    # TORCHELASTIC_SIGNALS_TO_HANDLE, overwriting any value of that; older torch has no such option: TERM it is.)
    if om_torchrun_handles_usr1; then
      export PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
      OM_TASK_SIGNAL=USR1 OM_TASK_WAIT=workers
    else
      om_log "warning: this torch's torchrun cannot pass on USR1: it gets TERM, which also kills DataLoader workers" \
             "(use data.num_workers=0 or OCTOMEGA_LAUNCHER=srun)"
      OM_TASK_WAIT=workers
    fi
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-${OCTOMEGA_GRACE:-600}}
    OM_STEP_CMD=(srun --nodes="$NNODES" --ntasks-per-node=1 --cpus-per-task="$cpn" --kill-on-bad-exit=1
                 bash "$OM_SLURM_DIR/task.sh" "$PY" -m torch.distributed.run --nnodes="$NNODES"
                 --nproc-per-node="$NPROC_PER_NODE" --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"
                 --rdzv-id="${SLURM_JOB_ID:-0}" --max-restarts=0 "$@")
  else
    om_die "OCTOMEGA_LAUNCHER=$OM_LAUNCHER: use srun or torchrun"
  fi
}

om_torchrun_handles_usr1() {  # does this torch's torchrun have --signals-to-handle? (read without importing torch)
  local run
  run=$("$PY" -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])' 2>/dev/null)
  grep -q -- "--signals-to-handle" "$run/distributed/run.py" 2>/dev/null
}

# Ask the running step's processes to stop: every process of the step gets SIGURG (ignored by default); the
# slurm/task.sh wrappers turn it into $OM_TASK_SIGNAL for the trainer (or torchrun) alone. Sent again every 10 s
# until the step ends: a step that srun is still creating, or a wrapper not yet trapping SIGURG, misses it.
om_signal_step() {
  [ -n "${OM_STEP_PID:-}" ] && kill -0 "$OM_STEP_PID" 2>/dev/null || return 0
  if [ -z "${OM_SIGNALLED:-}" ]; then
    om_log "asking the step to checkpoint and exit (SIGURG to the step; the trainer gets SIG$OM_TASK_SIGNAL)"
  fi
  OM_SIGNALLED=$SECONDS
  scancel --signal=URG "$SLURM_JOB_ID" || om_log "warning: scancel --signal=URG $SLURM_JOB_ID failed"
}

om_on_warning() {
  OM_WARNED=1
  om_log "received USR1: the job is near its time limit (or was asked to requeue)"
  om_signal_step
}
om_on_term() { OM_TERMINATED=1; om_log "received TERM: Slurm is ending the job (scancel, preemption or the time limit)"; }

# om_wait PID [POLL]: wait for PID, a child of this shell, to end; its exit status goes to OM_WAIT_RC. Bash runs a
# trap only between commands, so the child runs in the background while the shell waits, and a trapped signal
# ends `wait` early (status > 128) while the child runs on: then it waits again. POLL, a command run before each
# wait: while it succeeds (it did its work and napped), it runs again instead of the wait. Used by om_run_step and
# slurm/task.sh.
om_wait() {
  local pid=$1 poll=${2:-} again
  OM_WAIT_RC=0
  while :; do
    if [ -n "$poll" ] && "$poll"; then continue; fi
    if wait "$pid"; then OM_WAIT_RC=0; break; else OM_WAIT_RC=$?; fi
    # > 128: a trapped signal interrupted `wait` while the child runs on (or the child died of a signal)
    if [ "$OM_WAIT_RC" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  if [ "$OM_WAIT_RC" -gt 128 ]; then  # interrupted just as the child ended: its status is still there to collect
    again=0
    wait "$pid" 2>/dev/null || again=$?
    [ "$again" -ne 127 ] && OM_WAIT_RC=$again
  fi
  return 0
}

# om_run_step dist|single PYTHON_ARGS...: run one step and wait for it; its exit status goes to OM_STEP_RC.
om_run_step() {
  om_step_cmd "$@"
  if [ "$1" = single ]; then om_log "launch: $(om_show "${OM_STEP_CMD[@]}")"
  else om_log "launch ($OM_LAUNCHER, $NNODES node(s) x $NPROC_PER_NODE): $(om_show "${OM_STEP_CMD[@]}")"; fi
  if [ -n "$OM_DRY_RUN" ]; then OM_STEP_RC=0; return 0; fi
  export OM_TASK_SIGNAL OM_TASK_WAIT
  "${OM_STEP_CMD[@]}" &
  OM_STEP_PID=$! OM_SIGNALLED=''
  om_wait "$OM_STEP_PID" om_stop_pending
  OM_STEP_RC=$OM_WAIT_RC OM_STEP_PID=
  om_log "step exited with status $OM_STEP_RC"
}

# om_wait's poll in om_run_step: while a stop is pending and the step runs, ask it again every 10 s; nap a second.
om_stop_pending() {
  [ -n "${OM_WARNED:-}" ] && kill -0 "$OM_STEP_PID" 2>/dev/null || return 1
  if [ -z "$OM_SIGNALLED" ] || [ $((SECONDS - OM_SIGNALLED)) -ge 10 ]; then om_signal_step; fi
  sleep 1 & wait $! 2>/dev/null || true
}

# om_job_start RUN_DIR: traps, distributed environment, the run's logs/ folder (a link to this job's Slurm log and
# a line per event in logs/jobs.log).
om_job_start() {
  RUN_DIR=$1
  om_dist_env
  [ -n "$OM_DRY_RUN" ] && return 0
  mkdir -p "$RUN_DIR/logs"
  local out
  out=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *StdOut=//p' | head -n 1)
  if [ -n "$out" ] && [ -e "$out" ] && [ "$(dirname "$out")" != "$(cd "$RUN_DIR/logs" && pwd)" ]; then
    ln -sfn "$out" "$RUN_DIR/logs/slurm-$SLURM_JOB_ID.out"
  fi
  om_event "start on ${SLURM_JOB_NODELIST:-?} ($NNODES node(s) x $NPROC_PER_NODE, $OM_LAUNCHER); log ${out:-?}"
}

om_event() {
  om_log "$*"
  [ -n "$OM_DRY_RUN" ] && return 0
  printf '%s job %s restart %s: %s\n' "$(date '+%F %T')" "$SLURM_JOB_ID" "${SLURM_RESTART_COUNT:-0}" "$*" \
    >> "$RUN_DIR/logs/jobs.log"
}

om_requeue() {
  if [ "${OCTOMEGA_REQUEUE:-1}" = 0 ]; then
    om_event "stopped before the time limit (OCTOMEGA_REQUEUE=0): sbatch the same command to continue"
    exit 0
  fi
  om_event "requeue: $*"
  local term_before=$OM_TERMINATED
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    # Slurm ends this allocation as it requeues the job: scontrol itself may get that TERM before it returns.
    [ -z "$term_before" ] && [ -n "$OM_TERMINATED" ] && exit 0
    om_die "scontrol requeue $SLURM_JOB_ID failed: sbatch the same command to continue" 1
  fi
  exit 0
}

om_latest_iter() { cat "$RUN_DIR/checkpoints/latest_checkpointed_iteration.txt" 2>/dev/null || echo none; }

om_read_status() {  # the "status" of a JSON status file, or nothing
  [ -f "$1" ] || return 0
  sed -n 's/^ *"status": *"\([a-z_]*\)".*/\1/p' "$1" | head -n 1
}

# om_train_job train|rl RECIPE [key=value ...]: the body of stable.sh, decay.sh and rl.sh.
om_train_job() {
  local sub=$1 recipe=$2; shift 2
  local status_name=train_status.json
  [ "$sub" = rl ] && status_name=rl_status.json
  RUN_DIR=$(om_run_dir "$sub" "$recipe" "$@") || exit 2
  if ! om_in_job; then
    om_submit "${OM_JOB_NAME:-om-$recipe}" "$RUN_DIR/logs"
    [ -n "$OM_DRY_RUN" ] && echo "the job runs: $(om_show "$PY" -m octomega "$sub" "$recipe" "$@")"
    return 0
  fi
  om_job_start "$RUN_DIR"
  local status_file=$RUN_DIR/$status_name before after status
  before=$(om_latest_iter)
  [ -n "$OM_DRY_RUN" ] || rm -f "$status_file"  # written by rank 0 when the run ends; a stale one would mislead
  om_run_step dist -m octomega "$sub" "$recipe" "$@"
  [ -n "$OM_DRY_RUN" ] && return 0
  status=$(om_read_status "$status_file")
  after=$(om_latest_iter)
  case "$status" in
    complete|stopped) om_event "finished: $status (checkpoint $after)"; exit 0 ;;
    time_budget) om_requeue "the run stopped at its time budget (checkpoint $after)" ;;
    # a non-finite loss or grad norm: a requeue would resume and diverge again (the error is in the step's log)
    diverged) om_event "failed: the run diverged (checkpoint $after), not requeued: see $status_name"; exit 3 ;;
  esac
  if [ -n "$OM_WARNED" ]; then
    if [ "$status" = interrupted ] || [ "$after" != "$before" ]; then
      om_requeue "checkpoint $after (was $before when this allocation started)"
    fi
    om_event "failed: the warning came before this allocation saved a checkpoint (still $before; step status $OM_STEP_RC)"
    om_die "not requeueing, the next allocation would end the same way: give the job more time (--time) or warn it later (--signal=B:USR1@SECONDS)" 1
  fi
  if [ -n "$OM_TERMINATED" ]; then
    om_event "terminated by Slurm with checkpoint $after: sbatch the same command to continue"
    exit 143
  fi
  if [ "$status" = interrupted ]; then  # a signal to the step without the warning (scancel --signal=URG JOBID)
    om_event "stopped with checkpoint $after, not requeued (no time-limit warning): sbatch the same command to continue"
    exit 0
  fi
  if [ "$OM_STEP_RC" -eq 0 ]; then
    om_event "failed: the step exited 0 but wrote no $status_name"
    exit 1
  fi
  om_event "failed: step exit status $OM_STEP_RC, run status '${status:-none}' (checkpoint $after)"
  exit "$OM_STEP_RC"
}

# om_run_dir train|rl RECIPE [key=value ...]: the run directory the recipe resolves to (checks recipe and overrides).
om_run_dir() {
  "$PY" - "$@" <<'EOF'
import sys

sub, recipe, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    if sub == "rl":
        from octomega.rl.cli import resolve

        cfg = resolve(recipe, overrides)
    else:
        from octomega.cli import resolve_config

        cfg = resolve_config(recipe, overrides)
except (KeyError, ValueError) as e:  # unknown recipe, bad override (ConfigError is a ValueError)
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    sys.exit(2)
print(cfg.resolved_run_dir)
EOF
}

# om_eval_out RECIPE [eval options ...]: the output directory of `octomega eval RECIPE [options]` (the recipe's, or
# the --out given), as octomega eval itself resolves it, checking the recipe and the options. Exit status 3, with
# the closest evaluation recipe names on stdout, when RECIPE is no recipe at all.
om_eval_out() {
  "$PY" - "$@" <<'EOF'
import contextlib
import difflib
import io
import json
import sys

import recipes
from octomega.eval.cli import main

name, options = sys.argv[1], sys.argv[2:]
names = [r.name for r in recipes.entries()]
if name not in names:
    print(", ".join(difflib.get_close_matches(name, [r.name for r in recipes.entries("eval")], n=3)))
    sys.exit(3)
resolved = io.StringIO()
with contextlib.redirect_stdout(resolved):
    rc = main([name, *options, "--dry-run"])
if rc:
    sys.exit(rc)
print(json.loads(resolved.getvalue())["out"])
EOF
}

# om_command_job NAME RUN_DIR PYTHON_ARGS...: the body of convert.sh and eval.sh: one process;
# on the warning it is stopped and the job requeued (at most OCTOMEGA_MAX_REQUEUES times: these commands redo or
# resume their work, they have no checkpoint to show progress).
om_command_job() {
  local name=$1 run_dir=$2; shift 2
  if ! om_in_job; then
    om_submit "$name" "$run_dir/logs"
    [ -n "$OM_DRY_RUN" ] && echo "the job runs: $(om_show "$PY" "$@")"
    return 0
  fi
  om_job_start "$run_dir"
  om_run_step single "$@"
  [ -n "$OM_DRY_RUN" ] && return 0
  if [ "$OM_STEP_RC" -eq 0 ]; then om_event "finished"; exit 0; fi
  if [ -n "$OM_WARNED" ]; then
    local max=${OCTOMEGA_MAX_REQUEUES:-20}
    if [ "${SLURM_RESTART_COUNT:-0}" -lt "$max" ]; then om_requeue "stopped near the time limit (status $OM_STEP_RC)"; fi
    om_die "stopped near the time limit after $max requeues: not requeueing again (OCTOMEGA_MAX_REQUEUES)" 1
  fi
  om_event "failed: step exit status $OM_STEP_RC"
  exit "$OM_STEP_RC"
}
