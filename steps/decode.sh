#!/usr/bin/env bash
# Decode dev and test sets with a Conformer-CTC model: greedy, then CTC prefix beam search
# with the n-gram LM, LM weight and bonus grid-searched on the first set (dev).
#   steps/decode.sh [--device cpu|cuda] [--nj N] [--cmd run.pl] [--config conf/decode.yaml] AMDIR LANG DATA DEV [TEST...]
# Each set is split into --nj parts decoded as jobs through --cmd (run.pl locally, slurm.pl as
# one Slurm job array per round): round 1 decodes dev at every grid point, round 2 every set
# with the chosen weights; logs in AMDIR/log/decode_{grid,final}.<n>.log. --cmd '' decodes
# everything in one process instead (the same bytes).
# out: AMDIR/decode_<set>_{greedy,beam}/{hyp.txt,decode_info.json},
#      AMDIR/decode_<dev>_beam/best_weights.json; then, for every set with a hotwords list
#      (--hotwords FILE for all sets, else DATA/<set>/hotwords), beam + LM + that list's
#      contextual biasing, in the same jobs: AMDIR/decode_<set>_beam_hotwords/
set -euo pipefail
device=cpu          # cpu | cuda
nj=2                # jobs per set (numba threads in one process with --cmd '')
cmd=run.pl          # run.pl | "slurm.pl [--gpu 1] [--mem 8G]..." (see conf/slurm.conf) | '' (one process)
config=conf/decode.yaml  # beam, LM weight grid
hotwords=           # a hotwords list for every set (default: DATA/<set>/hotwords where present)
mode=ctc            # ctc | rescore | joint: after the CTC decodes, also this attention mode, tuned on DEV
                    # (in this process; kocall.joint_decode): AMDIR/decode_<set>_<mode>/
attention_checkpoint=  # full Whisper checkpoint for a whisper_ctc model's rescore/joint modes
help_message="Usage: $0 [options] AMDIR LANG DATA DEV [TEST...]"
_kocall_option_vars="device nj cmd config hotwords mode attention_checkpoint"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -lt 4 ]; then echo "$help_message" >&2; exit 1; fi
amdir=$1; lang=$2; data=$3; shift 3
. "$(dirname "$0")/../path.sh"
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-$nj}
python -m kocall.stage_decode --device "$device" --config "$config" --nj "$nj" --cmd "$cmd" \
  ${hotwords:+--hotwords "$hotwords"} --mode "$mode" ${attention_checkpoint:+--attention-checkpoint "$attention_checkpoint"} \
  "$amdir" "$lang" "$data" "$@"
