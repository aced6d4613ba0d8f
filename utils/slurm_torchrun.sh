#!/usr/bin/env bash
# One torchrun agent per node of a Slurm job step; steps/train.sh --nodes M runs it as
#   srun --nodes M --ntasks-per-node 1 utils/slurm_torchrun.sh NPROC PORT TORCHRUN_ARGS...
# The M agents meet at a c10d rendezvous on the step's first node (port PORT, or one derived
# from the job id when PORT is empty) and start NPROC workers each: one DDP group of M x NPROC
# ranks. Run inside an allocation (sbatch/salloc) or let srun make one.
set -euo pipefail
[ $# -ge 3 ] || { echo "Usage: $0 NPROC PORT TORCHRUN_ARGS..." >&2; exit 2; }
nproc=$1; port=$2; shift 2
: "${SLURM_JOB_ID:?$0 runs under srun}"
nodelist=${SLURM_STEP_NODELIST:-$SLURM_JOB_NODELIST}
nnodes=${SLURM_STEP_NUM_NODES:-${SLURM_NNODES:-1}}
head=$(scontrol show hostnames "$nodelist" | head -n 1)
# The address Slurm reaches that node at (NodeAddr), which need not be a resolvable name.
addr=$(scontrol show node "$head" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1)
addr=${addr:-$head}
port=${port:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
echo "$0: node ${SLURMD_NODENAME:-$(hostname)}: torchrun agent $((${SLURM_NODEID:-0} + 1)) of $nnodes," \
  "$nproc workers, rendezvous $addr:$port" >&2
exec torchrun --nnodes="$nnodes" --nproc_per_node="$nproc" --rdzv_backend=c10d \
  --rdzv_endpoint="$addr:$port" --rdzv_id="kocall-$SLURM_JOB_ID" "$@"
