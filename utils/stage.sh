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
# is never taken for done, and stage_end writes the new hash atomically.

log() { echo "$(date '+%F %T') [$(basename "$0")] $*" >&2; }

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
  _kocall_hash=$(kocall stamp hash "${texts[@]}" "${paths[@]}") || return 2
  if [ "$force" != true ] && [ -f "$_kocall_marker" ] && [ "$(cat "$_kocall_marker")" = "$_kocall_hash" ]; then
    log "Stage $_kocall_stage_no: up to date, skipping (inputs and config unchanged; --force reruns)"
    return 1
  fi
  rm -f "$_kocall_marker"
  return 0
}

stage_end() {
  kocall stamp write "$_kocall_marker" "$_kocall_hash"
  log "Stage $_kocall_stage_no: done"
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
