#!/usr/bin/env bash
# Stage bookkeeping for run.sh, sourced after parse_options.sh. Needs: stage, stop_stage, force.
#
#   if in_stage 3 "train the LM"; then
#     if stage_begin "$data/.done/lm" conf/lm.yaml "$data/.done/lang" -- "order=$lm_order"; then
#       ...work...
#       stage_end
#     fi
#   fi
#
# stage_begin hashes the given files/dirs and the option strings after `--`; if the
# marker holds that hash (and --force is not set) it says so and returns 1 (skip).
# Otherwise it removes the marker *before* the work starts, so an interrupted stage
# is never taken for done, and stage_end writes the new hash atomically, followed by a
# run id. Downstream stages hash their upstream markers, run id included, so a stage that
# runs (--force, or changed inputs) invalidates every marker after it.
# A hash that cannot be computed, or a --stage/--stop-stage that is not a number, stops
# the run (exit 1): nothing is skipped silently.
# stage_lock DIR... takes a lock per output root (--data, --exp) for the whole run.

log() { echo "$(date '+%F %T') [$(basename "$0")] $*" >&2; }

for _kocall_v in stage stop_stage; do
  if ! [[ "${!_kocall_v}" =~ ^[0-9]{1,9}$ ]]; then   # 20 digits would overflow bash's test
    echo "$0: --${_kocall_v//_/-} must be a stage number (0, 1, 2, ...), not '${!_kocall_v}'" >&2
    exit 1
  fi
done
unset _kocall_v

in_stage() {  # in_stage N DESCRIPTION
  _kocall_stage_no=$1; shift
  if [ "$stage" -le "$_kocall_stage_no" ] && [ "$stop_stage" -ge "$_kocall_stage_no" ]; then
    log "Stage $_kocall_stage_no: $*"
    return 0
  fi
  return 1
}

stage_begin() {  # stage_begin MARKER INPUT... [-- TEXT...]
  _kocall_marker=$1; shift
  local paths=() texts=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do paths+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  local t; for t in "$@"; do texts+=(--text "$t"); done
  if ! _kocall_hash=$(kocall stamp hash "${texts[@]}" "${paths[@]}"); then
    log "Stage $_kocall_stage_no: cannot hash its inputs (${paths[*]}); stopping"
    exit 1
  fi
  local recorded=""
  [ -f "$_kocall_marker" ] && read -r recorded _ < "$_kocall_marker"
  if [ "$force" != true ] && [ "$recorded" = "$_kocall_hash" ]; then
    log "Stage $_kocall_stage_no: up to date, skipping (inputs and config unchanged; --force reruns)"
    return 1
  fi
  rm -f "$_kocall_marker"
  return 0
}

stage_end() {
  # The run id makes the marker's content new on every run: downstream hashes change with it.
  kocall stamp write "$_kocall_marker" "$_kocall_hash $(date -u +%Y%m%dT%H%M%S.%N)-$$"
  log "Stage $_kocall_stage_no: done"
}

stage_lock() {  # stage_lock DIR...: one run at a time per output root, until this script exits
  local dir real fd seen=" "
  for dir in "$@"; do
    mkdir -p "$dir"
    real=$(cd "$dir" && pwd -P)
    case "$seen" in *" $real "*) continue ;; esac   # --data = --exp: one lock, not two
    seen="$seen$real "
    exec {fd}>>"$dir/.lock"
    if ! flock -n "$fd"; then
      echo "$0: another run is using '$dir' (it holds '$dir/.lock'); wait for it to end, or use another --data/--exp" >&2
      exit 1
    fi
  done
}

stage_workdir() {  # stage_workdir DIR: call after stage_begin, for stages that resume from DIR
  # Resume only work done for the same inputs, config and options: DIR/.inputs_hash holds the
  # stage hash it was started with. A different hash (or --force) clears DIR and starts afresh,
  # so a changed config never resumes from checkpoints of another one.
  local dir=$1
  if [ -d "$dir" ] && { [ "$force" = true ] || [ "$(cat "$dir/.inputs_hash" 2>/dev/null)" != "$_kocall_hash" ]; }; then
    log "Stage $_kocall_stage_no: inputs changed or --force: starting $dir afresh"
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  echo "$_kocall_hash" > "$dir/.inputs_hash"
}
