#!/usr/bin/env bash
# Stage 0 for --corpus shared-ko: real Korean speech beside the repo (see README "Real speech").
#   local/shared_ko/prepare.sh [--punct P] [--seed S] [--nj N] [--cmd run.pl] [--audio-dir DIR]
#                              [--max-utts-per-corpus N] [--dev-speakers 4] [--test-speakers 4] CORPUS_DIR DATA
# CORPUS_DIR (default in run.sh: ../shared) holds corpora/{emotiontts_ko,deeply_read_ko,kspon_sample}
# and text/*.txt. Writes DATA/{train,dev,test_heldout,test_kspon}, DATA/test_sets and
# DATA/local/lm_text.txt; the telephone-channelled audio goes to DIR (default corpora/shared_ko_tel,
# ignored by git: nothing derived from the shared data may be committed).
set -euo pipefail

punct=strip             # strip | keep-final
seed=1                  # speaker split and per-utterance channel noise
nj=2                    # parallel jobs for the telephone channel
cmd=run.pl              # how they run: run.pl | "slurm.pl [--mem 2G]..." (logs: <audio dir>/log/channel.<n>.log)
audio_dir=              # default: corpora/shared_ko_tel in the repo
max_utts_per_corpus=0   # 0 = all; a small number for quick tests
dev_speakers=4          # emotiontts_ko speakers held out for dev
test_speakers=4         # other emotiontts_ko speakers held out for test_heldout

help_message="Usage: $0 [options] CORPUS_DIR DATA"
_kocall_option_vars="punct seed nj cmd audio_dir max_utts_per_corpus dev_speakers test_speakers"
. "$(dirname "$0")/../../utils/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
corpus_dir=$1
data=$2
. "$(dirname "$0")/../../path.sh"

kocall prep shared-ko --out "$data" --punct "$punct" --seed "$seed" --nj "$nj" --cmd "$cmd" \
  ${audio_dir:+--audio-dir "$audio_dir"} --max-utts-per-corpus "$max_utts_per_corpus" \
  --dev-speakers "$dev_speakers" --test-speakers "$test_speakers" "$corpus_dir"
