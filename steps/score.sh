#!/usr/bin/env bash
# steps/score.sh AMDIR DATA SET...
# Scores every AMDIR/decode_<set>_*/hyp.txt against DATA/<set>/text (CRR = (1 - CER) x 100
# with spaces removed, CER, WER), writing score.json, score.txt and align.txt in each decode
# dir and the table AMDIR/RESULTS.md; prints the CRR of each test set.
set -euo pipefail
help_message="Usage: $0 AMDIR DATA SET..."
_kocall_option_vars=""
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -lt 3 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
amdir=$1
data=$2
shift 2
kocall score-decodes "$amdir" "$data" "$@"
