"""Decode stage for Conformer-CTC (run.sh stage 5, steps/decode.sh).

For each set: log-probs computed once (model in eval mode, batched) and kept in memory;
greedy hypotheses to AMDIR/decode_<set>_greedy/hyp.txt; on the first set (dev) a grid search
over lm_weight x word_bonus (conf/decode.yaml) by CER, best pair to
AMDIR/decode_<dev>_beam/best_weights.json; beam + LM hypotheses with that pair for every set
to AMDIR/decode_<set>_beam/hyp.txt. Each decode dir gets decode_info.json
{decoder, beam, lm, lm_weight, word_bonus} (read by steps/score.sh).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import yaml

from kocall.datadir import load_data_dir
from kocall.decode import FeatureMaker, InputUtt, compute_log_probs, decode_rows, load_lm_tables
from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_write, read_text, write_table
from kocall_kernels.ctc_decoder import DecoderConfig

log = logging.getLogger("kocall.decode_stage")


def load_decode_conf(path: str | Path) -> dict:
    try:
        conf = yaml.safe_load(read_text(path)) or {}
        conf["grid"]["lm_weight"], conf["grid"]["word_bonus"]  # noqa: B018 (presence check)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise DataError(f"file '{path}': not a decode config with grid.lm_weight and grid.word_bonus ({err})") from None
    return conf


def set_log_probs(model, data_dir: Path, make_feats: FeatureMaker, device: str) -> tuple[list[str], list[np.ndarray]]:
    """(utterance ids, log-probs) of a set; unusable utterances are reported and left out."""
    data = load_data_dir(data_dir)
    feats_scp = data_dir / "feats.scp"
    specs = {}
    if feats_scp.is_file():
        from kocall.fileio import read_table

        specs = {u: InputUtt(u, s, True) for u, s in read_table(feats_scp).items()}
    ids, feats = [], []
    for utt in data.utt_ids:
        try:
            feats.append(make_feats(specs.get(utt) or InputUtt(utt, data.wav[utt], False)))
            ids.append(utt)
        except DataError as err:
            log.warning("skipped: %s", err.format_message())
    return ids, compute_log_probs(model, feats, device)


def write_decode(dirname: Path, ids: list[str], texts: list[str], info: dict) -> None:
    write_table(dirname / "hyp.txt", dict(zip(ids, texts)))
    with atomic_write(dirname / "decode_info.json") as handle:
        handle.write(json.dumps(info, ensure_ascii=False, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--decode-conf", default="conf/decode.yaml")
    parser.add_argument("amdir")
    parser.add_argument("lang")
    parser.add_argument("data")
    parser.add_argument("sets", nargs="+", help="dev set first (the grid search runs on it), then test sets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_stage(Path(args.amdir), Path(args.lang), Path(args.data), args.sets, args.device, args.decode_conf)
    except KocallError as err:
        raise SystemExit(f"decode: {err.format_message()}")


def run_stage(amdir: Path, lang: Path, data: Path, sets: list[str], device: str, decode_conf: str) -> dict:
    from kocall.conformer_ctc.model_dir import load_model_dir
    from kocall.device import require_device
    from kocall.scoring import score_texts

    require_device(device)
    conf = load_decode_conf(decode_conf)
    model, tokenizer, config = load_model_dir(amdir / "final", device)
    lm_path = lang / "lm" / "lm.arpa"
    tables = load_lm_tables(lm_path, lang / "tokens.txt")
    make_feats = FeatureMaker(amdir / "final", config)
    bonus_token = -1 if conf.get("bonus_unit", "token") == "token" else (tokenizer.space_id or -1)
    base = DecoderConfig(beam=int(conf.get("beam", 16)), token_topk=int(conf.get("token_topk", 16)),
                         token_min_logp=float(conf.get("token_min_logp", -12.0)), bonus_token=bonus_token,
                         blank_id=tokenizer.blank_id)
    batch = int(conf.get("batch_size", 64))
    suppress = tokenizer.suppressed_ids
    posteriors = {}
    for name in sets:
        ids, rows = set_log_probs(model, data / name, make_feats, device)
        posteriors[name] = (ids, rows)
        hyps = decode_rows(rows, base, None, device, True, suppress, batch)
        write_decode(amdir / f"decode_{name}_greedy", ids, [tokenizer.decode(h[0].tokens) for h in hyps],
                     {"decoder": "greedy", "beam": None, "lm": None, "lm_weight": None, "word_bonus": None})
        log.info("%s: greedy done (%d utterances)", name, len(ids))

    dev = sets[0]
    dev_ids, dev_rows = posteriors[dev]
    refs = {u: t for u, t in load_data_dir(data / dev).text.items() if u in set(dev_ids)}
    grid_beam = int(conf["grid"].get("beam", base.beam))
    trials = []
    for lm_weight in conf["grid"]["lm_weight"]:
        for bonus in conf["grid"]["word_bonus"]:
            cfg = DecoderConfig(**{**base.__dict__, "beam": grid_beam, "lm_weight": float(lm_weight),
                                   "word_bonus": float(bonus)})
            hyps = decode_rows(dev_rows, cfg, tables, device, False, suppress, batch)
            cer = score_texts(refs, {u: tokenizer.decode(h[0].tokens) if h else "" for u, h in zip(dev_ids, hyps)}).cer
            trials.append({"lm_weight": float(lm_weight), "word_bonus": float(bonus), "cer": cer})
            log.info("grid %s: lm_weight %.2f word_bonus %.2f -> CER %.2f", dev, lm_weight, bonus, cer)
    best = min(trials, key=lambda r: (r["cer"], r["lm_weight"], r["word_bonus"]))
    with atomic_write(amdir / f"decode_{dev}_beam" / "best_weights.json") as handle:
        handle.write(json.dumps({**best, "grid_beam": grid_beam, "set": dev, "trials": trials}, indent=1) + "\n")
    cfg = DecoderConfig(**{**base.__dict__, "lm_weight": best["lm_weight"], "word_bonus": best["word_bonus"]})
    for name in sets:
        ids, rows = posteriors[name]
        hyps = decode_rows(rows, cfg, tables, device, False, suppress, batch)
        write_decode(amdir / f"decode_{name}_beam", ids, [tokenizer.decode(h[0].tokens) if h else "" for h in hyps],
                     {"decoder": "beam", "beam": cfg.beam, "lm": str(lm_path), "lm_weight": cfg.lm_weight,
                      "word_bonus": cfg.word_bonus, "bonus_unit": conf.get("bonus_unit", "token")})
        log.info("%s: beam + LM done", name)
    return best


if __name__ == "__main__":
    main()
