#!/usr/bin/env bash
# kocall: Korean telephone (call-centre) speech recognition, Kaldi style.
#
#   ./run.sh                                   # everything, on the embedded synthetic corpus
#   ./run.sh --stage 4 --stop-stage 4 --force  # retrain only
#   ./run.sh --corpus hackathon --corpus-dir /path/to/hackathon
#   ./run.sh --corpus shared-ko                # real Korean speech beside the repo (see README)
#
# Every stage writes its artifacts atomically and a marker in $data/.done or $exp/.done
# holding a hash of its inputs and config: a rerun skips stages that are up to date.
set -euo pipefail
cd "$(dirname "$0")"

stage=0             # first stage to run (0-7)
stop_stage=100      # last stage to run
nj=2                # parallel jobs of the split stages (features, channel, decoding)
threads=2           # torch CPU threads of each training process
cmd=run.pl          # how the split steps run their --nj jobs: run.pl (here) | "slurm.pl --mem 4G" (docs/recipe.md)
ngpu=1              # training processes per node (GPUs with --device cuda; gloo CPU processes with cpu)
nodes=1             # training nodes (> 1: through Slurm's srun, see steps/train.sh)
force=false         # rerun the chosen stages even when up to date
corpus=synth        # synth | hackathon | clovacall | kspon | tsv | kaldi | shared-ko
corpus_dir=         # default: corpora/synth (synth), ../shared (shared-ko); required otherwise
label_file=         # hackathon only: default <corpus-dir>/hackathon.labels
data=data           # output root of the data dirs, features, units and LM
exp=exp             # output root of the models and their decodes
device=cpu          # cpu | cuda (training and decoding)
model_size=small    # the Conformer-CTC size when --model is not given: conf/model_<size>.yaml
model=              # any model config conf/model_<model>.yaml, e.g. whisper_base_ctc; default: conformer_ctc_<model-size>
pretrained=         # pretrained checkpoint for --model whisper_* (default: the config's; docs/recipe.md)
init_model=         # a trained model dir over the same units that starts stage 4's model (two-phase: whisper_base_ctc -> whisper_base_hybrid)
unit=               # output units: char (syllables + space) | jamo (composed back to syllables) | bpe; default: the config's `unit:`
lm_order=           # n-gram order; empty: conf/lm.yaml's order for the unit (char 6, jamo 8)
punct=strip         # strip | keep-final: sentence-final punctuation as output units
seed=1              # seed of the synthetic corpus, the data split, training and augmentation
hotwords=           # a hotwords list (phrase [:weight] a line) for every set; default: each set's own hotwords file
decode_mode=ctc     # ctc | rescore | joint: stage 5 also decodes with Whisper's decoder (kocall.joint_decode), tuned on dev
attention_checkpoint=  # full Whisper checkpoint for rescore/joint with a whisper_ctc model (a whisper_hybrid has its own)
allow_pipes=$([ "${KOCALL_ALLOW_PIPES:-0}" = 1 ] && echo true || echo false)  # let wav.scp/feats.scp entries be shell pipes (`cmd |`); default: KOCALL_ALLOW_PIPES
setup=true          # bootstrap .venv, packages and KenLM on first use

help_message="Usage: $0 [options]   (stages 0-7; see the stage comments in this file)"
_kocall_option_vars="stage stop_stage nj threads cmd ngpu nodes force corpus corpus_dir label_file data exp device model_size model pretrained init_model unit lm_order punct seed allow_pipes setup hotwords decode_mode attention_checkpoint"
recipe_command="$0"   # the model card (stage 7) says how its model was made
if [ $# -gt 0 ]; then recipe_command+="$(printf ' %q' "$@")"; fi
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 1; }
. utils/stage.sh   # checks --stage/--stop-stage
[ -z "$lm_order" ] || [[ "$lm_order" =~ ^[0-9]+$ ]] || { echo "$0: --lm-order must be a whole number, not '$lm_order'" >&2; exit 1; }
for v in nj threads ngpu nodes seed; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$0: --${v//_/-} must be a whole number, not '${!v}'" >&2; exit 1; }
done
for v in nj threads ngpu nodes; do   # the bounds of kocall.options (nj, threads: 1..1024)
  n=${!v}; { [ "${#n}" -le 4 ] && [ "$n" -ge 1 ] && [ "$n" -le 1024 ]; } || {
    echo "$0: --$v must be from 1 to 1024, not '$n'" >&2; exit 1; }
done
[ "${#seed}" -le 9 ] || { echo "$0: --seed must be below 10^9, not '$seed'" >&2; exit 1; }
for v in data exp model_size; do
  [ -n "${!v}" ] || { echo "$0: --${v//_/-} must not be empty" >&2; exit 1; }
done
for v in model_size model unit; do  # they name files and dirs ($exp/<model>_<unit> is removed by --force)
  [[ "${!v}" =~ ^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$ ]] || {
    echo "$0: --${v//_/-} must be a plain name (letters, digits, '_', '-', '.'), not '${!v}'" >&2; exit 1; }
done

if [ "$setup" = true ]; then utils/setup_env.sh; fi
. ./path.sh
export KOCALL_ALLOW_PIPES=$([ "$allow_pipes" = true ] && echo 1 || echo 0)

case "$corpus" in
  synth) corpus_dir=${corpus_dir:-corpora/synth} ;;
  shared-ko) corpus_dir=${corpus_dir:-../shared}
             export KOCALL_SHARED=${KOCALL_SHARED:-$corpus_dir} ;;  # its models/ too (Whisper's weights)
  *) [ -n "$corpus_dir" ] || { echo "$0: --corpus $corpus needs --corpus-dir" >&2; exit 1; } ;;
esac
for v in data exp; do  # the corpus is an input: an output root on it would replace it
  [ "$(realpath -m "$corpus_dir")" != "$(realpath -m "${!v}")" ] || {
    echo "$0: --corpus-dir '$corpus_dir' and --$v '${!v}' are the same directory; choose another --$v" >&2; exit 1; }
done
if [ -n "$model" ]; then model_conf=conf/model_$model.yaml; model_name=$model
else model_conf=conf/model_$model_size.yaml; model_name=conformer_ctc_$model_size; fi
[ -f "$model_conf" ] || { echo "$0: no model config '$model_conf' (see conf/model_*.yaml)" >&2; exit 1; }
if [ -z "$unit" ]; then  # the model's own choice (`unit:` in its config), else char
  unit=$(sed -n 's/^unit:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$model_conf"); unit=${unit:-char}
  case "$unit" in char|jamo|bpe) ;; *) echo "$0: '$model_conf' says unit '$unit' (char, jamo or bpe)" >&2; exit 1 ;; esac
fi
amdir=$exp/${model_name}_${unit}
lang=$data/lang_${unit}
# The front end is the model's (`fbank:` in its config; default conf/fbank.yaml). Features of
# another front end live in a Kaldi-style copy of the data dirs, $data/<front end>/<set>, so
# models with different front ends can share one --data.
fbank_conf=$(sed -n 's/^fbank:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$model_conf"); fbank_conf=${fbank_conf:-conf/fbank.yaml}
[ -f "$fbank_conf" ] || { echo "$0: '$model_conf' names front end '$fbank_conf', which is missing" >&2; exit 1; }
frontend=$(basename "$fbank_conf" .yaml)
if [ "$frontend" = fbank ]; then fdata=$data; else fdata=$data/$frontend; fi
test_sets() { cat "$data/test_sets"; }
# dev_* sets (the synthetic dev_hotwords) are extra dev sets: featurised, decoded (the hotword
# settings are tuned on one with a list) and scored, never reported as test sets.
dev_sets() { local d; for d in "$data"/dev_*/; do [ -f "$d/wav.scp" ] && basename "$d"; done; return 0; }
stage_lock "$data" "$exp"   # a second run on the same --data/--exp stops with a message

# Stage 0: data preparation.
#   in:  the corpus (synth: generated first into $corpus_dir, deterministic for --seed)
#   out: $data/{train,dev,<test sets>}/{wav.scp,text,utt2spk,spk2utt,utt2dur},
#        $data/test_sets (names of the test sets), $data/local/lm_text.txt (extra LM text)
if in_stage 0 "data preparation ($corpus from $corpus_dir)"; then
  if [ "$corpus" = synth ]; then
    local/synth/make_corpus.sh --nj "$nj" --cmd "$cmd" --seed "$seed" --force "$force" "$corpus_dir"
  fi
  # What identifies the corpus: the generator's marker (synth), the transcripts and the
  # corpus-specific scripts (large audio files are hashed by size and mtime, see kocall.stamp).
  corpus_inputs=(local/prepare_corpus.sh)
  case "$corpus" in
    synth) corpus_inputs+=("$corpus_dir/.done") ;;
    shared-ko) corpus_inputs+=(local/shared_ko "$corpus_dir"/corpora/*/transcripts.tsv "$corpus_dir/text") ;;
    *) corpus_inputs+=("$corpus_dir") ;;   # transcripts and labels by content, audio by size and mtime
  esac
  [ -n "$label_file" ] && corpus_inputs+=("$label_file")
  if stage_begin "$data/.done/prep" "${corpus_inputs[@]}" \
       -- "corpus=$corpus" "dir=$corpus_dir" "labels=$label_file" "punct=$punct" "seed=$seed"; then
    local/prepare_corpus.sh --corpus "$corpus" --label-file "$label_file" --punct "$punct" \
      --seed "$seed" --nj "$nj" --cmd "$cmd" "$corpus_dir" "$data"
    stage_end
  fi
fi

# Stage 1: fused log-mel features (kernels/kocall_kernels/fbank) by the model's front end, and global CMVN.
#   in:  $data/<set>/wav.scp, $fbank_conf (conf/fbank.yaml, or e.g. conf/fbank_whisper.yaml)
#   out: $fdata/<set>/feats.scp (+ ark shards, utt2num_frames), $fdata/train/cmvn.json
#        ($fdata = $data for conf/fbank.yaml, else $data/<front end>: copies of the data dirs)
if in_stage 1 "log-mel features ($frontend)"; then
  # The features do not depend on the device (the CUDA kernel equals the CPU twin within 1e-4),
  # so --device is not part of the hash.
  if stage_begin "$data/.done/feats_$frontend" "$data/.done/prep" "$fbank_conf" steps/make_fbank.sh \
       $(for x in train dev $(dev_sets) $(test_sets); do echo "$data/$x/wav.scp"; done); then
    for x in train dev $(dev_sets) $(test_sets); do
      [ "$fdata" = "$data" ] || utils/copy_data_dir.sh "$data/$x" "$fdata/$x"
      steps/make_fbank.sh --nj "$nj" --cmd "$cmd" --device "$device" --config "$fbank_conf" "$fdata/$x"
    done
    steps/compute_cmvn.sh "$fdata/train"
    stage_end
  fi
fi

# Stage 2: output units.
#   in:  $data/train/text
#   out: $lang/tokens.txt (blank = 0), $lang/bpe.model (unit=bpe)
if in_stage 2 "units ($unit)"; then
  if stage_begin "$data/.done/lang_$unit" "$data/.done/prep" steps/prepare_lang.sh "$data/train/text" \
       -- "unit=$unit"; then
    steps/prepare_lang.sh --unit "$unit" "$data/train" "$lang"
    stage_end
  fi
fi

# Stage 3: n-gram LM over the units (KenLM lmplz/build_binary).
#   in:  $lang/tokens.txt, $data/train/text, $data/local/lm_text.txt, $data/dev/text
#   out: $lang/lm/lm.arpa, $lang/lm/lm.bin, $lang/lm/ppl.txt
if in_stage 3 "n-gram LM (order ${lm_order:-of conf/lm.yaml})"; then
  if stage_begin "$data/.done/lm_$unit" "$data/.done/lang_$unit" conf/lm.yaml steps/train_lm.sh \
       "$data/train/text" "$data/dev/text" "$data/local/lm_text.txt" -- "order=$lm_order"; then
    steps/train_lm.sh --order "$lm_order" --config conf/lm.yaml "$lang" "$data/train" "$data/dev" \
      "$data/local/lm_text.txt" "$lang/lm"
    stage_end
  fi
fi

# Stage 4: the acoustic model (resumable; kill and rerun to continue): Conformer-CTC from
#   scratch, or a pretrained Whisper encoder + CTC (--model whisper_base_ctc).
#   in:  $fdata/{train,dev}/feats.scp, $fdata/train/cmvn.json, $lang/tokens.txt, $model_conf
#   out: $amdir/{config.yaml,checkpoints/,train_log.csv,train_curves.png}, $amdir/final/ (model dir)
if in_stage 4 "train $model_name on $device"; then
  if stage_begin "$exp/.done/$(basename "$amdir").train" "$data/.done/feats_$frontend" "$data/.done/lang_$unit" \
       "$model_conf" steps/train.sh ${pretrained:+"$pretrained"} ${init_model:+"$init_model/model.pt"} \
       -- "device=$device" "seed=$seed" ${init_model:+"init_model=$init_model"} \
       "processes=$((ngpu * nodes))"; then
    stage_workdir "$amdir"   # an interrupted run of the same inputs resumes; anything else restarts
    steps/train.sh --device "$device" --threads "$threads" --ngpu "$ngpu" --nodes "$nodes" --seed "$seed" --config "$model_conf" \
      --pretrained "$pretrained" --init-model "$init_model" --cache-dir "$exp/cache" "$fdata/train" "$fdata/dev" "$lang" "$amdir"
    stage_end
  fi
fi

# Stage 5: decoding: greedy, and CTC prefix beam search with the n-gram LM (kernels/kocall_kernels/ctc_decoder);
#   LM weight and bonus are grid-searched on dev and applied to the test sets; the hotword
#   settings (conf/decode.yaml hotword_grid) on dev_hotwords when the corpus has it.
#   in:  $amdir/final, $lang/lm/lm.arpa, $data/{dev,<test sets>}
#   out: $amdir/decode_<set>_{greedy,beam}/hyp.txt, $amdir/decode_dev_beam/best_weights.json,
#        and with hotwords (--hotwords, or $data/<set>/hotwords) $amdir/decode_<set>_beam_hotwords/hyp.txt;
#        with --decode-mode rescore|joint also $amdir/decode_<set>_<mode>/ (weights: decode_dev_<mode>/best_weights.json)
if in_stage 5 "decoding"; then
  if stage_begin "$exp/.done/$(basename "$amdir").decode" "$exp/.done/$(basename "$amdir").train" \
       "$data/.done/lm_$unit" conf/decode.yaml steps/decode.sh ${hotwords:+"$hotwords"} \
       ${attention_checkpoint:+"$attention_checkpoint"} -- "device=$device" ${hotwords:+"hotwords=$hotwords"} \
       $([ "$decode_mode" = ctc ] || echo "decode_mode=$decode_mode"); then
    steps/decode.sh --device "$device" --nj "$nj" --cmd "$cmd" --config conf/decode.yaml --hotwords "$hotwords" \
      --mode "$decode_mode" --attention-checkpoint "$attention_checkpoint" \
      "$amdir" "$lang" "$fdata" dev $(dev_sets) $(test_sets)
    stage_end
  fi
fi

# Stage 6: scoring (CRR = (1 - CER) x 100 with spaces removed, plus CER and WER; for sets
#   decoded with or holding a hotwords list, hotword recall and false alarms beside CRR).
#   in:  $amdir/decode_*/hyp.txt, $data/<set>/text
#   out: $amdir/decode_*/{score.json,score.txt,align.txt}, $amdir/RESULTS.md
if in_stage 6 "scoring"; then
  if stage_begin "$exp/.done/$(basename "$amdir").score" "$exp/.done/$(basename "$amdir").decode" \
       steps/score.sh $(for x in dev $(dev_sets) $(test_sets); do echo "$data/$x/text"; done) -- "punct=$punct"; then
    steps/score.sh "$amdir" "$fdata" dev $(dev_sets) $(test_sets)
    stage_end
  fi
fi

# Stage 7: the finals triple: int8 export, then CRR, size and speed in one report; then the
#   self-contained model package (both networks, units, front end, LM tables, tuned weights, MODEL.md).
#   in:  $amdir/final, $lang/lm, $data/<test sets>, $amdir/decode_dev_beam/best_weights.json
#   out: $amdir/final_int8/, $amdir/report.md, $amdir/report.json, $amdir/package/
if in_stage 7 "export and report"; then
  if stage_begin "$exp/.done/$(basename "$amdir").report" "$exp/.done/$(basename "$amdir").score" \
       steps/report.sh -- "device=$device"; then
    report_sets=$(test_sets)
    if [ -z "$report_sets" ]; then
      log "Stage 7: $data/test_sets lists no test set; the report measures dev instead"
      report_sets=dev
    fi
    steps/report.sh --device "$device" --corpus "$corpus" --command "$recipe_command" \
      "$amdir" "$lang" "$fdata" $report_sets
    stage_end
  fi
fi

# End with the CRR table when this run reached scoring.
if [ "$stop_stage" -ge 6 ] && [ -f "$amdir/RESULTS.md" ]; then cat "$amdir/RESULTS.md"; fi
