#!/usr/bin/env bash
# The finals triple: export AMDIR/final as int8 (AMDIR/final_int8, skipped when up to date),
# then measure CRR, size, speed and memory of both into one report, and print it; last, the
# self-contained model package AMDIR/package (kocall package: both networks, units, front end,
# LM tables, dev-tuned weights, MODEL.md).
#   steps/report.sh [--device cpu|cuda] [--max-utts N] [--threads 1,2] [--corpus NAME] [--command CMD] AMDIR LANG DATA SET...
# in:  AMDIR/final, LANG/lm/lm.arpa (optional: without it, greedy only), DATA/<set>,
#      AMDIR/decode_dev_beam/best_weights.json (optional: LM weight/bonus tuned on dev)
# out: AMDIR/final_int8/, AMDIR/report.md, AMDIR/report.json, AMDIR/package/
set -euo pipefail
device=cpu
max_utts=0          # per set; 0 = every utterance
threads=1,2         # CPU thread counts to time
corpus=             # the training corpus (the model card's data and licence lines)
command=            # the recipe command that made the model (model card)
decode_config=conf/decode.yaml  # the decode stage's search settings, shipped in the package
help_message="Usage: $0 [--device cpu|cuda] [--max-utts N] [--threads 1,2] AMDIR LANG DATA SET..."
_kocall_option_vars="device max_utts threads corpus command decode_config"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -lt 4 ]; then echo "$help_message" >&2; exit 1; fi
amdir=$1; lang=$2; data=$3; shift 3
. "$(dirname "$0")/../path.sh"

kocall export --if-stale --model "$amdir/final" --out "$amdir/final_int8"

lm_opt=()
if [ -f "$lang/lm/lm.arpa" ]; then lm_opt=(--lm "$lang/lm/lm.arpa"); else
  echo "$0: no $lang/lm/lm.arpa: reporting greedy decoding only" >&2
fi
sets=$(IFS=,; echo "$*")
kocall report --model "$amdir/final" --model "$amdir/final_int8" --data "$data" --sets "$sets" \
  "${lm_opt[@]}" --device "$device" --max-utts "$max_utts" --threads "$threads" \
  --out-md "$amdir/report.md" --out-json "$amdir/report.json"
cat "$amdir/report.md"
kocall package --amdir "$amdir" --lang "$lang" --config "$decode_config" --corpus "$corpus" \
  --command "$command" --out "$amdir/package"
