#!/usr/bin/env bash
# Stage 0: turn a corpus into Kaldi data dirs.
#   local/prepare_corpus.sh [--corpus C] [--label-file F] [--punct P] [--seed S] [--nj N] [--cmd run.pl] CORPUS_DIR DATA
# writes DATA/{train,dev,<test sets>}/{wav.scp,text,utt2spk,spk2utt,utt2dur}, DATA/test_sets and
# DATA/local/lm_text.txt, then validates every data dir it produced.
#   corpus: synth | hackathon (Naver 2019 layout; synth writes the same) | clovacall | kspon |
#           tsv | kaldi | shared-ko (local/shared_ko/prepare.sh)
set -euo pipefail

corpus=hackathon
label_file=        # hackathon/synth only: default CORPUS_DIR/hackathon.labels
punct=strip        # strip | keep-final
seed=1
dev_fraction=0.1   # share of train held out (by speaker) where the corpus has no dev set
nj=2               # parallel jobs (shared-ko: the telephone channel)
cmd=run.pl         # how those jobs run: run.pl | "slurm.pl [--mem 2G]..."

help_message="Usage: $0 [options] CORPUS_DIR DATA"
_kocall_option_vars="corpus label_file punct seed dev_fraction nj cmd"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
corpus_dir=$1
data=$2
. "$(dirname "$0")/../path.sh"

common=(--out "$data" --punct "$punct" --seed "$seed" --dev-fraction "$dev_fraction")
case "$corpus" in
  hackathon|synth)
    kocall prep hackathon ${label_file:+--label-file "$label_file"} "${common[@]}" "$corpus_dir" ;;
  clovacall|kspon|tsv|kaldi)
    kocall prep "$corpus" "${common[@]}" "$corpus_dir" ;;
  shared-ko)
    "$KOCALL_ROOT/local/shared_ko/prepare.sh" --punct "$punct" --seed "$seed" --nj "$nj" --cmd "$cmd" "$corpus_dir" "$data" ;;
  *)
    echo "$0: unknown corpus '$corpus' (synth hackathon clovacall kspon tsv kaldi shared-ko)" >&2; exit 1 ;;
esac

[ -f "$data/test_sets" ] || { echo "$0: $data/test_sets was not written" >&2; exit 1; }
for x in train dev $(cat "$data/test_sets"); do
  "$KOCALL_ROOT/utils/validate_data_dir.sh" "$data/$x"
done
