#!/usr/bin/env bash
# Stage 1b: global CMVN (mean and std of every feature bin over every frame) of a data dir.
# Reads DATA_DIR/feats.scp; writes DATA_DIR/cmvn.json = {"mean": [...], "std": [...], "frames": N}
# atomically (std floored at --std-floor nats, so a constant band is not blown up).
# Usage: steps/compute_cmvn.sh [--std-floor 0.01] DATA_DIR
set -euo pipefail
std_floor=0.01
help_message="Usage: $0 [--std-floor F] DATA_DIR"
_kocall_option_vars="std_floor"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
kocall compute-cmvn --std-floor "$std_floor" "$1"
