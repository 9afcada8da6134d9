#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing the job scripts in jobs/:
#   scripts/slurm-local.sh start    install slurm-wlm + munge (apt) if missing, configure
#                                   localhost as one node with one partition, start munged,
#                                   slurmctld and slurmd (restarting those started before,
#                                   with an empty queue); wait until the node is idle
#   scripts/slurm-local.sh stop     stop the daemons started by 'start'
# Needs root (or sudo). Settings from ../shared/docs/slurm-local.md; state lives in
# $SLURM_LOCAL_DIR (default /tmp/parallel_ms-slurm). Exit status != 0 with one line on stderr
# when SLURM cannot be started (tests then skip with that line as the reason).
set -uo pipefail
STATE=${SLURM_LOCAL_DIR:-/tmp/parallel_ms-slurm}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
fail() { echo "slurm-local: $*" >&2; exit 1; }

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    $SUDO apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 && \
           DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
             slurm-wlm munge >/dev/null 2>&1; } \
      || fail "cannot install slurm-wlm and munge with apt (root or sudo and Debian's apt repositories needed)"
  fi
  mkdir -p "$STATE"
  local host cpus mem
  host=$(hostname -s); cpus=$(getconf _NPROCESSORS_ONLN)   # not nproc: it obeys OMP_NUM_THREADS
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))   # stable across restarts
  if [ -f /etc/slurm/slurm.conf ] && ! grep -q "^ClusterName=parallel-ms-local" /etc/slurm/slurm.conf; then
    fail "/etc/slurm/slurm.conf exists and was not written by this script: not touching a real SLURM"
  fi
  # munge: key, runtime directory, daemon as user munge
  if [ ! -s /etc/munge/munge.key ]; then
    $SUDO mkdir -p /etc/munge
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  $SUDO chown munge:munge /etc/munge/munge.key && $SUDO chmod 400 /etc/munge/munge.key
  $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
  $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! pgrep -x munged >/dev/null; then
    if [ "$(id -u)" = 0 ]; then runuser -u munge -- /usr/sbin/munged; else sudo -n -u munge /usr/sbin/munged; fi \
      || fail "munged does not start"
  fi
  $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  $SUDO tee /etc/slurm/slurm.conf >/dev/null <<EOF
ClusterName=parallel-ms-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  $SUDO tee /etc/slurm/cgroup.conf >/dev/null <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
  stop                                           # fresh daemons for this configuration
  $SUDO rm -rf /var/spool/slurmctld/*            # and no jobs left from an earlier session
  $SUDO slurmctld || fail "slurmctld does not start (see /var/log/slurm/slurmctld.log)"
  $SUDO slurmd || fail "slurmd does not start (see /var/log/slurm/slurmd.log)"
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
    case "$state" in idle|mixed|allocated) echo "slurm-local: node $host $state"; return 0 ;; esac
    sleep 1
  done
  fail "the node did not become idle within 60 s (sinfo: '${state:-no answer}')"
}

stop() {
  local pid
  for d in slurmd slurmctld; do
    [ -f "$STATE/$d.pid" ] || continue
    pid=$(cat "$STATE/$d.pid")
    $SUDO kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: scripts/slurm-local.sh start|stop" >&2; exit 2 ;;
esac
