#!/usr/bin/env bash
# utils/fix_data_dir.sh DIR
# Sorts every table, keeps only utterances present in wav.scp, text (non-empty) and utt2spk
# (and utt2dur/feats.scp/utt2num_frames when present), and rebuilds spk2utt. In place.
set -euo pipefail
help_message="Usage: $0 DATA_DIR"
_kocall_option_vars=""
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
kocall prep fix-data-dir "$1"
