#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and trying out `--cmd slurm.pl`.
#   utils/local_slurm.sh start DIR   # munged + slurmctld + slurmd, all state under DIR;
#                                    # prints `export SLURM_CONF=DIR/slurm.conf` on stdout
#   utils/local_slurm.sh stop DIR    # stops the three daemons started for DIR
# Needs root and Debian's slurm-wlm and munge (utils/setup_env.sh installs them as root).
# The node is this host with all its cores and 90% of its memory, in one partition `local`;
# ports are picked free at start; jobs keep the submitter's nice value (a shared machine).
# Nothing outside DIR is written or started: no systemd units, no /etc/slurm, a private munge
# key and socket.
set -euo pipefail

usage() { echo "Usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

stop_daemons() {
  local name pid
  for name in slurmd slurmctld munged; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$action" in
  stop) stop_daemons; exit 0 ;;
  start) ;;
  *) usage ;;
esac

[ "$(id -u)" = 0 ] || { echo "$0: needs root (slurmd runs jobs as their users)" >&2; exit 1; }
for bin in munged mungekey slurmctld slurmd sbatch srun sinfo; do
  command -v "$bin" >/dev/null || { echo "$0: $bin not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"
trap 'stop_daemons' ERR

# munge: a private key and socket, so the host's munge (if any) is left alone.
[ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile "$dir/munge/munge.key" >/dev/null 2>&1
chmod 600 "$dir/munge/munge.key"
munged --key-file "$dir/munge/munge.key" --socket "$dir/munge/munge.socket" \
  --pid-file "$dir/munged.pid" --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munge.seed" --force

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))
cat > "$dir/slurm.conf" <<CONF
# Written by utils/local_slurm.sh: a one-node cluster for tests.
ClusterName=kocall-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
MinJobAge=30
PropagatePrioProcess=1
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( mem_mb / cpus ))
CONF
export SLURM_CONF=$dir/slurm.conf

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
# Ready when the node is idle (jobs would otherwise wait for it).
for _ in $(seq 100); do
  if state=$(sinfo -h -n "$host" -o %t 2>/dev/null) && [[ "$state" == idle* || "$state" == mix* ]]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "$0: the node did not come up within 20 s; see $dir/log/" >&2
stop_daemons
exit 1
