"""Benchmark: the three decoding modes (ctc, rescore, joint; kocall.joint_decode) of one CTC
model with an attention decoder beside it, against Whisper base zero-shot (the peer).

    python bench/bench_joint_decode.py --data data_ko --model exp_ko/whisper_base_ctc_jamo/final \\
        --lang data_ko/lang_jamo --attention-checkpoint tools/whisper-base.pt \\
        --dev dev --sets test_heldout test_kspon --threads 1 --json bench/out/joint.json

* Weights are tuned on --dev only: the CTC search's LM weight and bonus come from
  AMDIR/decode_dev_beam/best_weights.json (the decode stage's grid), else --lm-weight and
  --word-bonus; rescore's attention weight over --attention-weights (the N-best and the
  decoder's scores are computed once, the weights only recombine them); joint's CTC weight,
  LM weight and character bonus over the product of --ctc-weights, --joint-lm-weights,
  --char-bonuses (a full joint decode of dev per point). Ties: the earlier point.
* Each test set is decoded once per mode, one utterance at a time from audio in memory:
  features + network(s) + search, after an untimed warm-up on the first --warmup utterances.
  RTF = wall seconds / audio seconds; CPU-RTF = the process's CPU seconds / audio seconds
  (other jobs on a shared machine inflate it much less than the wall time).
* CRR by kocall.scoring (spaces removed) and, beside it, by the registry's independent Korean
  scorer `nlptutti` (its get_cer; corpus CRR = 1 - total errors / total reference characters),
  when it is installed. The peer's hypotheses and timings come from bench_whisper_peer.py's
  cache (bench/out/whisper_peer/<data>/<set>.json), normalised by kocall.text_norm as there.

OMP_WAIT_POLICY=PASSIVE is set before torch loads: numba's parallel kernels (features, CTC
search) and torch share libgomp, and spinning idle workers otherwise slowed the decoder's many
small torch calls about fivefold in CPU time (see the RESULTS file beside the joint decoder).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_common import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER_CACHE = ROOT / "bench" / "out" / "whisper_peer"


def nlptutti_crr(refs: dict[str, str], hyps: dict[str, str]) -> float | None:
    """Corpus CRR by nlptutti (None when it is not installed)."""
    try:
        import nlptutti
    except ImportError:
        return None
    errors = chars = 0
    for utt, ref in refs.items():
        result = nlptutti.get_cer(ref, hyps.get(utt, ""))
        n_ref = len(ref.replace(" ", ""))
        errors += result["substitutions"] + result["deletions"] + result["insertions"]
        chars += n_ref
    return 100.0 * (1.0 - errors / chars) if chars else None


def attention_only(args):
    """(model, tokenizer, config, a stand-in model dir) for Whisper's decoder alone: a WhisperCTC
    holding the checkpoint's encoder and an untrained CTC head whose output is never used."""
    from kocall.lang import Tokenizer
    from kocall.whisper_ctc.checkpoint import init_from_checkpoint, load_whisper_checkpoint
    from kocall.whisper_ctc.model import WhisperCTC, WhisperCTCConfig

    if args.attention_checkpoint is None:
        raise SystemExit("--attention-checkpoint is needed without --model")
    dims, state = load_whisper_checkpoint(args.attention_checkpoint)
    tok = Tokenizer.from_lang_dir(args.lang)
    cfg = WhisperCTCConfig(n_mels=dims["n_mels"], vocab_size=len(tok), n_audio_ctx=dims["n_audio_ctx"],
                           n_audio_state=dims["n_audio_state"], n_audio_head=dims["n_audio_head"],
                           n_audio_layer=dims["n_audio_layer"], extra_layers=0)
    model = WhisperCTC(cfg)
    init_from_checkpoint(model, {k: v for k, v in state.items() if k.startswith("encoder.")},
                         Path(args.attention_checkpoint))
    return model.eval(), tok, {"arch": "whisper_ctc"}, Path(args.attention_checkpoint).parent / "whisper-decoder-alone"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None, type=Path,
                        help="model dir (AMDIR/final); absent: Whisper's decoder alone on the checkpoint's own "
                             "encoder (mode 'attention': joint search at CTC weight 0, no LM; no tuning)")
    parser.add_argument("--lang", required=True, type=Path)
    parser.add_argument("--attention-checkpoint", default=None, help="full Whisper checkpoint (whisper_ctc models)")
    parser.add_argument("--dev", default="dev")
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=16)
    parser.add_argument("--lm-weight", type=float, default=1.5)
    parser.add_argument("--word-bonus", type=float, default=2.5)
    parser.add_argument("--rescore-nbest", type=int, default=32)
    parser.add_argument("--attention-weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--ctc-weights", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--joint-lm-weights", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--char-bonuses", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--joint-beam", type=int, default=4)
    parser.add_argument("--pre-beam", type=int, default=8)
    parser.add_argument("--dev-max-utts", type=int, default=0, help="0 = all")
    parser.add_argument("--max-utts", type=int, default=0, help="per test set; 0 = all")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["ctc", "rescore", "joint"])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    import numpy as np

    from kocall.decode import load_lm_tables
    from kocall.features import model_fbank_config, wav_to_fbank
    from kocall.dataset import load_cmvn_stats
    from kocall.joint_decode import (JointConfig, ModeSettings, RescoreConfig, UnitMapper, decode_one, joint_texts,
                                     load_joint_model, rescore_lists, rescored_texts)
    from kocall.model_dir import load_model_dir
    from kocall.report import ReportConfig, load_utts, set_threads
    from kocall.scoring import score_texts
    from kocall.text_norm import normalize_text
    from kocall_kernels.ctc_decoder import DecoderConfig

    set_threads(args.threads)
    if args.model is None:
        model, tok, config, args.model = attention_only(args)
        args.modes = ["attention"]
    else:
        model, tok, config = load_model_dir(args.model)
    jm = load_joint_model(model, config, args.model, args.attention_checkpoint)
    tables = None if args.modes == ["attention"] else load_lm_tables(args.lang / "lm" / "lm.arpa",
                                                                     args.lang / "tokens.txt")
    best_path = args.model.parent / f"decode_{args.dev}_beam" / "best_weights.json"
    ctc_w = json.loads(best_path.read_text()) if best_path.is_file() else {"lm_weight": args.lm_weight,
                                                                           "word_bonus": args.word_bonus}
    ctc_cfg = DecoderConfig(beam=args.beam, lm_weight=float(ctc_w["lm_weight"]), word_bonus=float(ctc_w["word_bonus"]),
                            blank_id=tok.blank_id)
    if args.modes == ["attention"]:
        from kocall_kernels.fbank import FbankConfig

        fbank_cfg = FbankConfig.whisper(n_mels=int(model.encoder.conv1.in_channels))
        mean, std = np.zeros(fbank_cfg.n_mels, np.float32), np.ones(fbank_cfg.n_mels, np.float32)
    else:
        mean, std = load_cmvn_stats(args.model / "cmvn.json")
        fbank_cfg = model_fbank_config(args.model)
    mapper = UnitMapper(tok, jm.side.tokenizer.token_bytes)

    def feats_of(samples):
        return ((np.asarray(wav_to_fbank(samples, fbank_cfg.sample_rate, fbank_cfg), np.float32) - mean) / std)

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_name(),
                     "threads": args.threads, "command": " ".join(sys.argv), "ctc_weights": ctc_w, "tuning": {},
                     "rows": []}

    # ---- dev: tune rescore and joint weights
    dev = [] if args.modes == ["attention"] else load_utts(ReportConfig(data=args.data, sets=[args.dev], max_utts=args.dev_max_utts), fbank_cfg.sample_rate)
    refs = {u.utt_id: u.text for u in dev}
    encoded = [jm.encode(feats_of(u.samples)) for u in dev]
    log(f"dev: {len(dev)} utterances encoded")
    if "rescore" in args.modes:
        lists = rescore_lists(jm, encoded, tok, ctc_cfg, tables, args.rescore_nbest, mapper=mapper)
        trials = []
        for w in args.attention_weights:
            hyps = dict(zip(refs, rescored_texts(lists, RescoreConfig(attention_weight=w, nbest=args.rescore_nbest))))
            trials.append({"attention_weight": w, "crr": score_texts(refs, hyps).crr})
            log(f"dev rescore w={w}: CRR {trials[-1]['crr']:.2f}")
        oracle = {u.utt_id: max((t for _, t in nb), key=lambda t: score_texts({"u": u.text}, {"u": t}).crr)
                  for u, (nb, _) in zip(dev, lists)}
        results["tuning"]["rescore_oracle_crr"] = score_texts(refs, oracle).crr
        best_r = max(trials, key=lambda t: (t["crr"], -trials.index(t)))
        results["tuning"]["rescore"] = {"trials": trials, "best": best_r}
    if "joint" in args.modes:
        trials = []
        for lam, lmw, bonus in itertools.product(args.ctc_weights, args.joint_lm_weights, args.char_bonuses):
            cfg_j = JointConfig(ctc_weight=lam, lm_weight=lmw, char_bonus=bonus, beam=args.joint_beam,
                                pre_beam=args.pre_beam)
            hyps = dict(zip(refs, joint_texts(jm, encoded, tok, cfg_j, tables, mapper)))
            trials.append({"ctc_weight": lam, "lm_weight": lmw, "char_bonus": bonus, "crr": score_texts(refs, hyps).crr})
            log(f"dev joint {trials[-1]}")
        best_j = max(trials, key=lambda t: (t["crr"], -trials.index(t)))
        results["tuning"]["joint"] = {"trials": trials, "best": best_j}
    del encoded

    # ---- test sets: each mode timed, one utterance at a time
    settings = {
        "ctc": ModeSettings("ctc", tok, ctc_cfg, tables),
        "rescore": ModeSettings("rescore", tok, ctc_cfg, tables, rescore=RescoreConfig(
            attention_weight=results["tuning"].get("rescore", {}).get("best", {}).get("attention_weight", 1.0),
            nbest=args.rescore_nbest)),
        "joint": ModeSettings("joint", tok, ctc_cfg, tables, joint=JointConfig(**{
            **{k: v for k, v in results["tuning"].get("joint", {}).get("best", {}).items() if k != "crr"},
            "beam": args.joint_beam, "pre_beam": args.pre_beam})),
        "attention": ModeSettings("joint", tok, ctc_cfg, None, joint=JointConfig(
            ctc_weight=0.0, beam=args.joint_beam, pre_beam=args.pre_beam)),
    }
    for set_name in args.sets:
        utts = load_utts(ReportConfig(data=args.data, sets=[set_name], max_utts=args.max_utts), fbank_cfg.sample_rate)
        refs = {u.utt_id: u.text for u in utts}
        seconds = sum(u.seconds for u in utts)
        for mode in args.modes:
            st = settings[mode]
            for u in utts[: args.warmup]:
                decode_one(jm, model, feats_of(u.samples), st, mapper)
            hyps = {}
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i, u in enumerate(utts, 1):
                hyps[u.utt_id] = decode_one(jm, model, feats_of(u.samples), st, mapper)
                if i % 25 == 0:
                    log(f"  {set_name} {mode}: {i}/{len(utts)}")
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            row = {"system": f"ours {args.model.parent.name}/{args.model.name} {mode}", "mode": mode, "set": set_name,
                   "utts": len(utts), "crr": score_texts(refs, hyps).crr, "crr_nlptutti": nlptutti_crr(refs, hyps),
                   "rtf": wall / seconds, "cpu_rtf": cpu / seconds, "loadavg": os.getloadavg()[0], "hyps": hyps}
            results["rows"].append(row)
            log(f"{set_name} {mode}: { {k: v for k, v in row.items() if k != 'hyps'} }")
        peer = PEER_CACHE / Path(args.data).resolve().name / f"{set_name}.json"
        if peer.is_file():
            entry = json.loads(peer.read_text(encoding="utf-8"))
            hyps = {u: normalize_text(t) for u, t in entry["hyps"].items() if u in refs}
            timing = entry["timing"].get(str(args.threads), {})
            results["rows"].append({"system": "Whisper base zero-shot (faster-whisper int8, beam 5)", "mode": "peer",
                                    "set": set_name, "utts": len(hyps), "crr": score_texts(refs, hyps).crr,
                                    "crr_nlptutti": nlptutti_crr(refs, hyps), "rtf": timing.get("rtf"),
                                    "cpu_rtf": (timing["cpu_seconds"] / entry["audio_seconds"]) if timing else None,
                                    "loadavg": timing.get("loadavg")})
        with open(args.json, "w", encoding="utf-8") as handle:   # after every set: a long run keeps what it has
            json.dump(results, handle, ensure_ascii=False, indent=1)
    for r in results["rows"]:
        nl = "-" if r["crr_nlptutti"] is None else f"{r['crr_nlptutti']:.2f}"
        rtf = "-" if r["rtf"] is None else f"{r['rtf']:.4f}"
        cpu = "-" if r["cpu_rtf"] is None else f"{r['cpu_rtf']:.4f}"
        print(f"| {r['system']} | {r['set']} | {r['utts']} | {r['crr']:.2f} | {nl} | {rtf} | {cpu} |")


if __name__ == "__main__":
    main()
