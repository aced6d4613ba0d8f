#!/usr/bin/env bash
# Stage 1a: fused log-mel filterbank features (kernels/kocall_kernels/fbank) of one data dir.
#   Every wav.scp entry is loaded, resampled to the config's rate (8 kHz for conf/fbank.yaml)
#   and turned into float32 (frames, n_mels) features, --nj jobs in parallel, one ark shard each.
# Writes DATA_DIR/{feats.scp,utt2num_frames,fbank.yaml} and DATA_DIR/data/feats.<n>.ark
# atomically: a bad utterance stops the stage naming it and its file, leaving no feats.scp.
# The --nj jobs (one shard each) run through --cmd (Kaldi style: run.pl locally, slurm.pl as
# one Slurm job array), logs in DATA_DIR/log/make_fbank.<n>.log.
# Usage: steps/make_fbank.sh [--nj 2] [--cmd run.pl] [--config conf/fbank.yaml] [--device cpu|cuda] DATA_DIR
set -euo pipefail
nj=2                # parallel jobs (= ark shards)
cmd=run.pl          # run.pl | "slurm.pl [--mem 4G] [--partition P]..." (see conf/slurm.conf)
config=conf/fbank.yaml   # the front end's config
device=cpu          # cpu | cuda (the same features within 1e-4)
help_message="Usage: $0 [options] DATA_DIR"
_kocall_option_vars="nj cmd config device"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
data=$1
kocall make-feats --nj "$nj" --cmd "$cmd" --config "$config" --device "$device" "$data"
