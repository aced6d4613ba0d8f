#!/usr/bin/env bash
# Stage 4: train a Conformer-CTC acoustic model (recipes/kocall/trainer.py).
#   steps/train.sh [--device cpu|cuda] [--threads 2] [--ngpu 1] [--seed 1] [--max-minutes M]
#                  [--config conf/model_small.yaml] TRAIN_DIR DEV_DIR LANG_DIR EXP_DIR
# in:  TRAIN_DIR/{feats.scp,cmvn.json,fbank.yaml,text} (or wav.scp for on-the-fly features),
#      DEV_DIR/{feats.scp,text}, LANG_DIR/tokens.txt, the model config
# out: EXP_DIR/{config.yaml,checkpoints/,train_log.csv,train_curves.png}, EXP_DIR/final/ (model dir)
# Resumable: a rerun continues from the latest checkpoint in EXP_DIR/checkpoints.
# --ngpu N > 1 (with --device cuda) runs N processes under torchrun (DDP over NCCL; with
# --device cpu, N CPU processes over gloo, which tests the same path without GPUs).
# --nodes M > 1 (or --slurm) launches through Slurm: `srun` starts one torchrun agent per node
# (utils/slurm_torchrun.sh), the agents meet at a c10d rendezvous on the first node, and the
# M x N workers train as one DDP group. Inside an sbatch/salloc allocation srun uses it; else
# srun asks for one (--srun-opts "--partition gpu --time 24:00:00" adds flags). A rerun with
# the same --nodes and --ngpu resumes from the latest checkpoint, as on one node.
set -euo pipefail
device=cpu        # cpu | cuda
threads=2         # torch CPU threads of each process
ngpu=1            # processes per node (GPUs per node with --device cuda)
nodes=1           # > 1: several nodes through srun + torchrun (c10d rendezvous)
slurm=false       # launch through srun even for --nodes 1
srun_opts=        # extra srun flags, e.g. "--partition gpu --time 24:00:00 --cpus-per-task 16"
rdzv_port=        # rendezvous port on the first node (default: derived from the Slurm job id)
seed=1            # seed of the initial weights, batch order and augmentation
max_minutes=       # override the config's training time budget
pretrained=        # pretrained checkpoint (whisper_* configs): overrides the config's pretrained.checkpoint
init_model=        # a trained model dir over the same units that starts this model (config's pretrained.init_model)
cache_dir=         # cached frozen-block outputs (default EXP_DIR/cache; files named by their key, shareable)
config=conf/model_small.yaml  # the model config
help_message="Usage: $0 [options] TRAIN_DIR DEV_DIR LANG_DIR EXP_DIR"
_kocall_option_vars="device threads ngpu nodes slurm srun_opts rdzv_port seed max_minutes pretrained init_model cache_dir config"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 4 ]; then echo "$help_message" >&2; exit 1; fi
train=$1; dev=$2; lang=$3; exp_dir=$4
for v in ngpu nodes; do   # used by bash here, so bounded here (kocall train bounds the rest)
  n=${!v}; [[ "$n" =~ ^[0-9]{1,4}$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 1024 ] || {
    echo "$0: --$v must be from 1 to 1024, not '$n'" >&2; exit 1; }
done
[ -z "$rdzv_port" ] || { [[ "$rdzv_port" =~ ^[0-9]{1,5}$ ]] && [ "$rdzv_port" -ge 1 ] && [ "$rdzv_port" -le 65535 ]; } || {
  echo "$0: --rdzv-port must be a port from 1 to 65535, not '$rdzv_port'" >&2; exit 1; }
. "$(dirname "$0")/../path.sh"

args=(--config "$config" --train "$train" --dev "$dev" --lang "$lang" --exp-dir "$exp_dir"
      --device "$device" --threads "$threads" --seed "$seed")
[ -n "$max_minutes" ] && args+=(--max-minutes "$max_minutes")
[ -n "$pretrained" ] && args+=(--pretrained "$pretrained")
[ -n "$init_model" ] && args+=(--init-model "$init_model")
[ -n "$cache_dir" ] && args+=(--cache-dir "$cache_dir")
# tqdm bars only on a terminal: a log file gets the CSV and per-epoch lines instead.
[ -t 2 ] || args+=(--no-progress)
mkdir -p "$exp_dir"
if [ "$nodes" -gt 1 ] || [ "$slurm" = true ]; then
  command -v srun >/dev/null || { echo "$0: --nodes $nodes needs Slurm (srun not found)" >&2; exit 1; }
  gres=(); [ "$device" = cuda ] && gres=(--gres="gpu:$ngpu")
  # shellcheck disable=SC2086  # srun_opts is a list of flags
  exec srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 "${gres[@]}" $srun_opts \
    "$(dirname "$0")/../utils/slurm_torchrun.sh" "$ngpu" "$rdzv_port" -m kocall.cli train "${args[@]}"
fi
if [ "$ngpu" -gt 1 ]; then
  exec torchrun --standalone --nproc_per_node "$ngpu" -m kocall.cli train "${args[@]}"
fi
exec kocall train "${args[@]}"
