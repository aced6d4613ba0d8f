"""Decode stage, hotwords part (run.sh stage 5 after kocall.conformer_ctc.decode; steps/decode.sh).

For every set with a hotwords list, beam search + LM with the weights the stage chose on dev
(AMDIR/decode_<dev>_beam/best_weights.json) and the list's contextual biasing, to
AMDIR/decode_<set>_beam_hotwords/{hyp.txt,decode_info.json}. The list is `--hotwords FILE`
for every set when given, else DATA/<set>/hotwords where the set has one (the synthetic
test_hotwords does); sets without a list are skipped. decode_info.json records the list and
`hotword_weight` (conf/decode.yaml, the per-unit bonus of phrases without their own), so
that scoring (kocall.scoring) reports hotword recall and false alarms beside CRR.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from kocall.conformer_ctc.decode import StageDecoder, write_decode
from kocall.errors import DataError, KocallError
from kocall.hotwords import DEFAULT_LM_COMPENSATION, DEFAULT_WEIGHT, HOTWORDS_FILE, compile_hotwords

log = logging.getLogger("kocall.decode_stage")


def hotword_lists(data: Path, sets: list[str], hotwords: str | None) -> dict[str, Path]:
    """{set: its hotwords list}: `hotwords` for every set, else each set's own DATA/<set>/hotwords."""
    if hotwords:
        if not Path(hotwords).is_file():
            raise DataError(f"hotwords file '{hotwords}' is missing")
        return {name: Path(hotwords) for name in sets}
    return {name: data / name / HOTWORDS_FILE for name in sets if (data / name / HOTWORDS_FILE).is_file()}


def run_hotwords(amdir: Path, lang: Path, data: Path, sets: list[str], device: str, decode_conf: str,
                 hotwords: str | None = None) -> list[str]:
    """Decode the sets that have a list (see the module docstring); returns their names."""
    lists = hotword_lists(data, sets, hotwords)
    if not lists:
        log.info("no set has a hotwords list: nothing to bias")
        return []
    dec = StageDecoder.load(amdir, lang, device, decode_conf)
    cfg = dec.best_config(dec.chosen_weights(sets[0]))
    weight = float(dec.conf.get("hotword_weight", DEFAULT_WEIGHT))
    compensation = float(dec.conf.get("hotword_lm_compensation", DEFAULT_LM_COMPENSATION))
    graphs = {path: compile_hotwords(path, dec.tokenizer, weight, dec.tables, cfg.lm_weight * math.log(10),
                                     compensation)
              for path in set(lists.values())}  # all checked first
    for name, path in lists.items():
        ids, rows = dec.log_probs(data / name)
        write_decode(amdir / f"decode_{name}_beam_hotwords", ids, dec.texts(rows, cfg, graphs[path]),
                     {"decoder": "beam_hotwords", "beam": cfg.beam, "lm": str(dec.lm_path), "lm_weight": cfg.lm_weight,
                      "word_bonus": cfg.word_bonus, "bonus_unit": dec.conf.get("bonus_unit", "token"),
                      "hotwords": str(path), "hotword_weight": weight,
                      "hotword_lm_compensation": compensation, "hotword_phrases": graphs[path].num_phrases})
        log.info("%s: beam + LM + hotwords (%s, %d phrases) done", name, path, graphs[path].num_phrases)
    return list(lists)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--decode-conf", default="conf/decode.yaml")
    parser.add_argument("--hotwords", default=None, help="one list for every set (default: DATA/<set>/hotwords)")
    parser.add_argument("amdir")
    parser.add_argument("lang")
    parser.add_argument("data")
    parser.add_argument("sets", nargs="+", help="the decode stage's sets, dev first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run_hotwords(Path(args.amdir), Path(args.lang), Path(args.data), args.sets, args.device, args.decode_conf,
                     args.hotwords or None)
    except KocallError as err:
        raise SystemExit(f"decode: {err.format_message()}")


if __name__ == "__main__":
    main()
