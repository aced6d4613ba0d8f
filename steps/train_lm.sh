#!/usr/bin/env bash
# Stage 3: an n-gram LM over the AM's units (KenLM), trained on the train transcripts plus
# the extra LM text, converted to unit strings ('명 동 역 ▁ 몇 ▁ 번'); dev perplexity logged
# (per unit, and per character so that char and jamo LMs compare).
# Writes OUT_DIR/{lm.arpa,lm.bin,lm_tables.npz,ppl.txt,ppl.json,lm_text.txt} atomically.
# Usage: steps/train_lm.sh [--order N] [--config conf/lm.yaml] LANG TRAIN_DATA_DIR DEV_DATA_DIR EXTRA_TEXT OUT_DIR
#   EXTRA_TEXT: normalised sentences, one a line; may be empty or missing.
#   --order: empty (the default) takes the conf's order for the unit (char 6, jamo 8).
set -euo pipefail
order=              # n-gram order; empty: the config's order for the unit
config=conf/lm.yaml  # the LM config
help_message="Usage: $0 [options] LANG TRAIN_DATA_DIR DEV_DATA_DIR EXTRA_TEXT OUT_DIR"
_kocall_option_vars="order config"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 5 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
lang=$1; train=$2; dev=$3; extra=$4; out=$5
args=(--lang "$lang" --train-text "$train/text" --dev-text "$dev/text" --out "$out")
[ -n "$order" ] && args+=(--order "$order")
[ -n "$config" ] && args+=(--config "$config")
[ -f "$extra" ] && args+=(--extra-text "$extra")
kocall lm train "${args[@]}"
