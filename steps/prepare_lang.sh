#!/usr/bin/env bash
# Stage 2: output units of the acoustic model (and the LM's words).
#   unit=char: Korean syllables (+ any other character of the train text) and `▁` for space;
#   unit=jamo: the 67 conjoining jamo (initial and final consonants distinct; kocall.jamo), `▁`
#              and the train text's other characters; decoding composes syllables back;
#   unit=bpe:  a sentencepiece unigram model of --vocab-size pieces ($lang/bpe.model).
# Writes LANG_DIR/tokens.txt (`<blk> 0`, `<unk> 1`, ...) and LANG_DIR/units.json atomically.
# Usage: steps/prepare_lang.sh [--unit char|jamo|bpe] [--vocab-size 500] [--extra-text FILE] TRAIN_DATA_DIR LANG_DIR
set -euo pipefail
unit=char
vocab_size=500
extra_text=
help_message="Usage: $0 [options] TRAIN_DATA_DIR LANG_DIR"
_kocall_option_vars="unit vocab_size extra_text"
. "$(dirname "$0")/../utils/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
train=$1
lang=$2
args=(--unit "$unit" --vocab-size "$vocab_size")
[ -n "$extra_text" ] && args+=(--extra-text "$extra_text")
kocall lang "${args[@]}" "$train" "$lang"
