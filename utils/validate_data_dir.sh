#!/usr/bin/env bash
# utils/validate_data_dir.sh [--check-audio] DIR
# Checks a Kaldi data dir (sorted, no duplicates, no empty transcripts, consistent files);
# exits 1 naming the first bad utterance and file.
set -euo pipefail
check_audio=false
help_message="Usage: $0 [--check-audio] DATA_DIR"
_kocall_option_vars="check_audio"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
if [ "$check_audio" = true ]; then
  kocall validate-data-dir --check-audio "$1"
else
  kocall validate-data-dir "$1"
fi
