#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and for trying the slurm/ scripts.
#
#   scripts/slurm_local.sh start     install slurm-wlm + munge if missing (apt-get, needs root), write a slurm.conf
#                                    for this host, start munged (if not running), slurmctld and slurmd; wait until
#                                    the node is idle; print `export SLURM_CONF=...` (eval it in your shell)
#   scripts/slurm_local.sh stop      stop the slurmd and slurmctld started here (and munged, if started here)
#   scripts/slurm_local.sh status    say whether the cluster answers; exit 0 if it does
#   scripts/slurm_local.sh env       print `export SLURM_CONF=...`
#   scripts/slurm_local.sh check     exit 0 if a cluster can be started here (root, and slurm installed or apt-get
#                                    to install it), else print why not and exit 3
# Exit status: 0 done; 3 Slurm cannot be installed or started here (not root, no apt-get, apt-get failed);
# 1 anything else (the message says what, and where the daemons' logs are).
#
# Environment (defaults in brackets):
#   OCTOMEGA_SLURM_DIR   [${TMPDIR:-/tmp}/octomega-slurm]  conf, state, spool, logs and pid files of this cluster
#   SLURM_LOCAL_CPUS     [nproc]        CPUs the node offers
#   SLURM_LOCAL_MEM_MB   [90% of RAM]   RealMemory of the node
#   SLURMCTLD_PORT       [6817]         SLURMD_PORT [6818]
#   SLURM_LOCAL_PARTITION [debug]       the default partition's name
#
# Facts this follows (docs/slurm.md, "A real Slurm on this machine"): Debian's slurm-wlm 22.05 + munge; a munge
# key owned by the munge user; auth/munge, proctrack/linuxproc, task/none, select/cons_tres, SlurmUser=root; state,
# spool, log and pid paths in a writable folder; slurmd's "Cannot create context for mpi/pmix_v4" is harmless.
set -euo pipefail

DIR=${OCTOMEGA_SLURM_DIR:-${TMPDIR:-/tmp}/octomega-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

have_slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
               && command -v munged >/dev/null; }

can_start() {  # why a cluster cannot be started here, on stdout; empty if it can
  if [ "$(id -u)" != 0 ]; then
    echo "not root (apt-get, munged and slurmd need root)"
  elif ! have_slurm && ! command -v apt-get >/dev/null; then
    echo "slurm-wlm/munge are not installed and there is no apt-get to install them"
  fi
}

install() {
  have_slurm && return 0
  mkdir -p "$DIR"
  local aptlog=$DIR/apt.log
  log "installing slurm-wlm and munge with apt-get (10-30 s; output in $aptlog)"
  export DEBIAN_FRONTEND=noninteractive
  # An update first only when the package lists are empty (a fresh container).
  if ! apt-cache show slurm-wlm >/dev/null 2>&1; then
    apt-get update -qq >"$aptlog" 2>&1 || { tail -n 20 "$aptlog" >&2; die "apt-get update failed: cannot install slurm-wlm and munge" 3; }
  fi
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$aptlog" 2>&1 \
    || { tail -n 20 "$aptlog" >&2; die "apt-get install slurm-wlm munge failed: cannot install them" 3; }
  have_slurm || die "slurm-wlm installed but slurmctld/slurmd/sbatch/munged are not on PATH"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then return 0; fi
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    log "creating $key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force >&2
    else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
  fi
  chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 "$key"
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged >&2 || die "munged did not start (see /var/log/munge/munged.log)"
  touch "$DIR/munged.started-here"
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
  die "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  mem=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
  mkdir -p "$DIR"/{state,spool,log}
  cat > "$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on $host for tests.
ClusterName=octomega-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire + 1 s before it may start again (Slurm default 120 s); short for tests.
AuthInfo=cred_expire=${SLURM_LOCAL_CRED_EXPIRE:-10}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Schedule every few seconds (default 60 s main / 30 s backfill) so a requeued test job restarts promptly.
SchedulerParameters=sched_interval=3,bf_interval=3
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Finished jobs stay visible to scontrol for 10 minutes (tests read their state and restart count).
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_ok() { SLURM_CONF=$CONF timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

start() {
  local why
  why=$(can_start)
  [ -z "$why" ] || die "cannot start a local Slurm here: $why" 3
  mkdir -p "$DIR"
  if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && cluster_ok; then
    log "already running (SLURM_CONF=$CONF)"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  install
  start_munge
  stop_daemons  # leftovers of an earlier start
  write_conf
  export SLURM_CONF=$CONF
  # -c: a cold start (forget jobs of an earlier cluster in this folder). Both daemonise.
  slurmctld -c -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  for _ in $(seq 100); do
    if cluster_ok; then
      log "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.3
  done
  tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  die "the node did not become idle within 30 s"
}

stop_one() {  # stop_one NAME PIDFILE
  local pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$1 ($pid) ignored SIGTERM for 5 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

stop_daemons() {
  stop_one slurmd "$DIR/slurmd.pid"
  stop_one slurmctld "$DIR/slurmctld.pid"
}

stop() {
  stop_daemons
  if [ -e "$DIR/munged.started-here" ]; then
    stop_one munged /run/munge/munged.pid
    rm -f "$DIR/munged.started-here"
  fi
  log "stopped (state and logs kept in $DIR)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if cluster_ok; then echo "running: SLURM_CONF=$CONF"; SLURM_CONF=$CONF sinfo; else echo "not running ($CONF)"; exit 1; fi ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  check)
    why=$(can_start)
    if [ -n "$why" ]; then echo "$why"; exit 3; fi ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
