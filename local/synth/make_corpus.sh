#!/usr/bin/env bash
# Generate the embedded default corpus: synthetic Korean call-centre telephone speech
# (espeak-ng Korean voices -> telephone channel), in the Naver AI Hackathon 2019 layout.
#   local/synth/make_corpus.sh [--nj N] [--cmd run.pl] [--seed S] [--hours H] [--force true|false] ROOT
# The audio is rendered by --nj jobs through --cmd (run.pl: local processes, logs in
# ROOT/log/render.<n>.log; slurm.pl: one Slurm job array), the same files either way.
# Skips when ROOT/.done holds the hash of the options and the generator code. Builds into a
# temp dir beside ROOT and renames it into place; writes ROOT/.done last.
set -euo pipefail

nj=2
cmd=run.pl    # run.pl | "slurm.pl [--mem 2G]..." (see conf/slurm.conf)
seed=1
hours=        # training audio in hours (default: conf/synth.yaml, 2 h)
config=conf/synth.yaml
force=false

help_message="Usage: $0 [options] ROOT"
_kocall_option_vars="nj cmd seed hours config force"
. "$(dirname "$0")/../../utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
root=$1
. "$(dirname "$0")/../../path.sh"
cd "$KOCALL_ROOT" 2>/dev/null || true

command -v espeak-ng >/dev/null || { echo "$0: espeak-ng is not installed (apt-get install espeak-ng)" >&2; exit 1; }

# The corpus does not depend on --nj (one random stream per utterance), so nj is not hashed.
src="$KOCALL_ROOT/recipes/kocall"
digest=$(kocall stamp hash --text "seed=$seed" --text "hours=$hours" \
  "$config" "$src/synth" "$src/telephone.py" "$src/korean_numbers.py")
if [ "$force" != true ] && [ -f "$root/.done" ] && [ "$(cat "$root/.done")" = "$digest" ]; then
  echo "$0: $root is up to date (seed $seed); skipping"
  exit 0
fi

echo "$0: generating the synthetic corpus into $root (seed $seed, nj $nj)"
start=$(date +%s)
kocall synth --config "$config" --nj "$nj" --cmd "$cmd" --seed "$seed" ${hours:+--hours "$hours"} "$root"
kocall stamp write "$root/.done" "$digest"
echo "$0: done in $(( $(date +%s) - start )) s; see $root/stats.txt"
