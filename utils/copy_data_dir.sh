#!/usr/bin/env bash
# utils/copy_data_dir.sh SRC DST
# Kaldi's copy_data_dir: DST gets SRC's tables (wav.scp, text, utt2spk, spk2utt, utt2dur, and any
# other plain file such as hotwords), not its features (feats.scp, utt2num_frames, cmvn.json,
# fbank.yaml, the ark shards), so that another front end can write its own features into DST.
# DST is built beside itself and renamed into place: it appears complete or not at all.
set -euo pipefail
help_message="Usage: $0 SRC_DATA_DIR DST_DATA_DIR"
_kocall_option_vars=""
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
src=$1; dst=$2
[ -f "$src/wav.scp" ] || { echo "$0: '$src' is not a data dir (no wav.scp)" >&2; exit 1; }
src_real=$(realpath "$src"); dst_real=$(realpath -m "$dst")
case "$dst_real/" in "$src_real/"*) echo "$0: '$dst' lies inside '$src'" >&2; exit 1 ;; esac
case "$src_real/" in "$dst_real/"*) echo "$0: '$src' lies inside '$dst'" >&2; exit 1 ;; esac
mkdir -p "$(dirname "$dst")"
tmp=$(mktemp -d "$dst.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for f in "$src"/*; do
  name=$(basename "$f")
  case "$name" in feats.scp|utt2num_frames|cmvn.json|fbank.yaml) continue ;; esac
  [ -f "$f" ] && cp -p "$f" "$tmp/$name"
done
chmod "$(printf '%o' $((0777 & ~$(umask))))" "$tmp"
rm -rf "$dst.old"
[ -e "$dst" ] && mv "$dst" "$dst.old"
mv "$tmp" "$dst"
rm -rf "$dst.old"
trap - EXIT
