#!/usr/bin/env bash
# slurm/task.sh CMD [ARG ...]: one task of a Slurm job step, started by srun from slurm/common.sh (not by hand).
#
# Runs CMD as its child and, on SIGURG, sends $OM_TASK_SIGNAL to that child alone.
# Why: a signal sent to a step (`scancel --signal=SIG JOBID`) reaches every process of the step: DataLoader workers
# and checkpoint writer processes too, and those die of SIGTERM (DataLoader workers install a handler that
# re-raises it), after which the trainer crashes instead of saving. SIGURG is ignored by default, so every other
# process shrugs it off and only this wrapper acts on it: the trainer (or torchrun, which passes the signal on to
# its workers) decides when to stop.
# A signal that arrives while the trainer is still starting (imports, model build, checkpoint load) would kill it
# before it can save, so with OM_TASK_WAIT the wrapper holds the signal until the process has a handler for it
# (SigCgt in /proc/PID/status), polling twice a second; Slurm's time limit bounds the wait.
#
# Environment:
#   OM_TASK_SIGNAL [TERM]  what the child gets; common.sh sets USR1 for torchrun, which handles it
#                          (TORCHELASTIC_SIGNALS_TO_HANDLE) and passes USR1 on to its workers' process groups
#   OM_TASK_WAIT   [none]  none: signal at once (commands that redo or resume their work: convert, eval);
#                          self: once the child catches the signal (a trainer);
#                          workers: once the child and its child processes catch it (torchrun and its workers)
# Exit status: the child's.
set -uo pipefail

if [ $# -eq 0 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  [ $# -eq 0 ] && exit 2 || exit 0
fi

# shellcheck source=slurm/common.sh
source "$(dirname "$0")/common.sh"  # om_wait

sig=${OM_TASK_SIGNAL:-TERM}
signum=$(kill -l "$sig" 2>/dev/null) || { echo "task.sh: unknown OM_TASK_SIGNAL=$sig" >&2; exit 2; }

# shellcheck disable=SC2317  # runs from hand_on
catches() {  # catches PID: does process PID have a handler for $signum?
  local mask
  mask=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
  [ -n "$mask" ] && (( (16#$mask >> (signum - 1)) & 1 ))
}

# shellcheck disable=SC2317  # runs from hand_on
ready() {  # may the child be signalled now?
  case "${OM_TASK_WAIT:-none}" in
    self) catches "$child" ;;
    workers)
      catches "$child" || return 1
      local kids k
      kids=$(ps -o pid= --ppid "$child" 2>/dev/null)
      [ -n "$kids" ] || return 1  # torchrun before its workers exist
      for k in $kids; do catches "$k" || return 1; done ;;
    *) return 0 ;;
  esac
}

# shellcheck disable=SC2317  # om_wait runs it (its poll)
hand_on() {  # om_wait's poll: a SIGURG is pending: hand it on once the child can take it, napping until then
  [ -n "$pending" ] && [ -z "$forwarded" ] || return 1
  if ready; then
    forwarded=1
    kill -s "$sig" "$child" 2>/dev/null || true
    return 1
  fi
  kill -0 "$child" 2>/dev/null || return 1
  sleep 0.5 & wait $! 2>/dev/null
  return 0
}

"$@" &
child=$!
pending='' forwarded=''
trap 'pending=1' URG
# Slurm's own signals (scancel, preemption, the time limit) reach the child directly: stay to report its status.
trap ':' TERM INT HUP USR1 USR2

om_wait "$child" hand_on
exit "$OM_WAIT_RC"
