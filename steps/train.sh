#!/usr/bin/env bash
# Stage 4: train a Conformer-CTC acoustic model (recipes/conformer_ctc/train.py).
#   steps/train.sh [--device cpu|cuda] [--nj 2] [--ngpu 1] [--seed 1] [--max-minutes M]
#                  [--model-conf conf/model_small.yaml] TRAIN_DIR DEV_DIR LANG_DIR EXP_DIR
# in:  TRAIN_DIR/{feats.scp,cmvn.json,fbank.yaml,text} (or wav.scp for on-the-fly features),
#      DEV_DIR/{feats.scp,text}, LANG_DIR/tokens.txt, the model config
# out: EXP_DIR/{config.yaml,checkpoints/,train_log.csv,train_curves.png}, EXP_DIR/final/ (model dir)
# Resumable: a rerun continues from the latest checkpoint in EXP_DIR/checkpoints.
# --ngpu N > 1 (with --device cuda) runs N processes under torchrun (DDP over NCCL).
set -euo pipefail
device=cpu
nj=2
ngpu=1
seed=1
max_minutes=       # override the config's training time budget
model_conf=conf/model_small.yaml
help_message="Usage: $0 [--device cpu|cuda] [--nj N] [--ngpu N] [--seed S] [--max-minutes M] [--model-conf FILE] TRAIN_DIR DEV_DIR LANG_DIR EXP_DIR"
_kocall_option_vars="device nj ngpu seed max_minutes model_conf"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 4 ]; then echo "$help_message" >&2; exit 1; fi
train=$1; dev=$2; lang=$3; exp_dir=$4
. "$(dirname "$0")/../path.sh"

args=(--model-conf "$model_conf" --train "$train" --dev "$dev" --lang "$lang" --exp-dir "$exp_dir"
      --device "$device" --nj "$nj" --seed "$seed")
[ -n "$max_minutes" ] && args+=(--max-minutes "$max_minutes")
# tqdm bars only on a terminal: a log file gets the CSV and per-epoch lines instead.
[ -t 2 ] || args+=(--no-progress)
mkdir -p "$exp_dir"
if [ "$ngpu" -gt 1 ]; then
  [ "$device" = cuda ] || { echo "$0: --ngpu $ngpu needs --device cuda" >&2; exit 1; }
  exec torchrun --standalone --nproc_per_node "$ngpu" -m kocall.conformer_ctc.train "${args[@]}"
fi
exec kocall train "${args[@]}"
