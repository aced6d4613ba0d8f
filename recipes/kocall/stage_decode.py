"""Decode stage of a CTC model dir of any family (run.sh stage 5, steps/decode.sh).

    python -m kocall.stage_decode [--config conf/decode.yaml] [--nj N --cmd run.pl] AMDIR LANG DATA DEV [TEST...]

For each set: log-probs computed once (model in eval mode, batched) and kept in memory;
greedy hypotheses to AMDIR/decode_<set>_greedy/hyp.txt; on the first set (dev) a grid search
over lm_weight x word_bonus (conf/decode.yaml) by CER, best pair to
AMDIR/decode_<dev>_beam/best_weights.json; beam + LM hypotheses with that pair for every set
to AMDIR/decode_<set>_beam/hyp.txt. Each decode dir gets decode_info.json
{decoder, beam, lm, lm_weight, word_bonus} (read by steps/score.sh).

Hotwords: every set with a list (`--hotwords FILE` for every set, else DATA/<set>/hotwords,
as the synthetic test_hotwords has) is also decoded with the chosen weights and the list's
contextual biasing (kocall.hotwords), to AMDIR/decode_<set>_beam_hotwords/; its
decode_info.json adds the list, `hotword_weight` and `hotword_lm_compensation`, so that
scoring reports hotword recall and false alarms beside CRR. Those two settings are tuned on
a hotword dev set when the sets hold one (a set named dev_* with a list, as the synthetic
dev_hotwords): every point of conf/decode.yaml `hotword_grid` decodes it with its list, the
lowest CER wins (ties: the smaller weight, then compensation), written with every trial to
AMDIR/decode_<set>_beam_hotwords/best_hotword_weights.json and used for every list. Without
one, the config's `hotword_weight` and `hotword_lm_compensation` are used as they are.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kocall.datadir import load_data_dir
from kocall.decode import FeatureMaker, InputUtt, compute_log_probs, decode_rows, load_lm_tables
from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_write, read_text, write_table
from kocall.hotwords import DEFAULT_LM_COMPENSATION, DEFAULT_WEIGHT, HOTWORDS_FILE, compile_hotwords
from kocall_kernels.ctc_decoder import DecoderConfig

log = logging.getLogger("kocall.decode_stage")


def load_decode_conf(path: str | Path) -> dict:
    from kocall.paths import conf_file

    try:
        conf = yaml.safe_load(read_text(conf_file(path))) or {}
        conf["grid"]["lm_weight"], conf["grid"]["word_bonus"]  # noqa: B018 (presence check)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise DataError(f"file '{path}': not a decode config with grid.lm_weight and grid.word_bonus ({err})") from None
    check_decode_conf(conf, path)
    return conf


# decode.yaml key -> its row of kocall.options.BOUNDS (every numeric value is bounded)
HOTWORD_GRID_KEYS = ("hotword_weight", "hotword_lm_compensation")
CONF_BOUNDS = {"beam": "beam", "token_topk": "token_topk", "token_min_logp": "token_min_logp",
               "batch_size": "batch_size", "hotword_weight": "hotword_weight",
               "hotword_lm_compensation": "hotword_lm_compensation"}


def check_decode_conf(conf: dict, path: str | Path) -> None:
    """Every number of a decode config inside its bound (KocallError naming file and key)."""
    from kocall.options import check_bound

    for key, bound in CONF_BOUNDS.items():
        if key in conf:
            check_bound(bound, conf[key], f"file '{path}': {key}")
    grid = conf["grid"]
    if not isinstance(grid, dict):
        raise DataError(f"file '{path}': grid must be a mapping")
    if "beam" in grid:
        check_bound("beam", grid["beam"], f"file '{path}': grid.beam")
    for key in ("lm_weight", "word_bonus"):
        values = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not values or len(values) > 100:
            raise DataError(f"file '{path}': grid.{key} must list 1 to 100 values")
        for value in values:
            check_bound(key, value, f"file '{path}': grid.{key}")
    hotword_grid = conf.get("hotword_grid")
    if hotword_grid is not None:
        if not isinstance(hotword_grid, dict) or set(hotword_grid) != set(HOTWORD_GRID_KEYS):
            raise DataError(f"file '{path}': hotword_grid must map {' and '.join(HOTWORD_GRID_KEYS)} to lists")
        for key in HOTWORD_GRID_KEYS:
            values = hotword_grid[key] if isinstance(hotword_grid[key], list) else [hotword_grid[key]]
            if not values or len(values) > 20:
                raise DataError(f"file '{path}': hotword_grid.{key} must list 1 to 20 values")
            for value in values:
                if check_bound(key, value, f"file '{path}': hotword_grid.{key}") <= 0 and key == "hotword_weight":
                    raise DataError(f"file '{path}': hotword_grid.hotword_weight values must be above 0")


def set_log_probs(model, data_dir: Path, make_feats: FeatureMaker, device: str, nj: int = 1,
                  job: int = 1) -> tuple[list[str], list[np.ndarray]]:
    """(utterance ids, log-probs) of a set, or of its part `job` of `nj` (contiguous, as every
    split stage cuts); unusable utterances are reported and left out."""
    ids, feats = set_features(data_dir, make_feats, nj, job)
    return ids, compute_log_probs(model, feats, device)


def set_features(data_dir: Path, make_feats: FeatureMaker, nj: int = 1, job: int = 1
                 ) -> tuple[list[str], list[np.ndarray]]:
    """(utterance ids, model-ready features) of a set or of its part `job` of `nj` (set_log_probs)."""
    from kocall.jobs import split_contiguous

    data = load_data_dir(data_dir)
    parts = split_contiguous(data.utt_ids, nj)
    utt_ids = parts[job - 1] if job <= len(parts) else []
    feats_scp = data_dir / "feats.scp"
    specs = {}
    if feats_scp.is_file():
        from kocall.fileio import read_table

        specs = {u: InputUtt(u, s, True) for u, s in read_table(feats_scp).items()}
    ids, feats = [], []
    for utt in utt_ids:
        try:
            feats.append(make_feats(specs.get(utt) or InputUtt(utt, data.wav[utt], False)))
            ids.append(utt)
        except DataError as err:
            log.warning("skipped: %s", err.format_message())
    return ids, feats


def hotword_lists(data: Path, sets: list[str], hotwords: str | None) -> dict[str, Path]:
    """{set: its hotwords list}: `hotwords` for every set, else each set's own DATA/<set>/hotwords."""
    if hotwords:
        if not Path(hotwords).is_file():
            raise DataError(f"hotwords file '{hotwords}' is missing")
        return {name: Path(hotwords) for name in sets}
    return {name: data / name / HOTWORDS_FILE for name in sets if (data / name / HOTWORDS_FILE).is_file()}


def hotword_dev_set(sets: list[str], lists: dict[str, Path]) -> str | None:
    """The set the hotword settings are tuned on: the first dev_* set (after dev) with a list."""
    return next((name for name in sets[1:] if name.startswith("dev_") and name in lists), None)


def write_decode(dirname: Path, ids: list[str], texts: list[str], info: dict) -> None:
    write_table(dirname / "hyp.txt", dict(zip(ids, texts)))
    with atomic_write(dirname / "decode_info.json") as handle:
        handle.write(json.dumps(info, ensure_ascii=False, indent=1) + "\n")


def _one_line_usage_error(message: str) -> None:
    raise SystemExit(f"decode: {message} (--help lists the options)")


def main(argv: list[str] | None = None) -> None:
    from kocall.options import argparse_type

    parser = argparse.ArgumentParser(prog="python -m kocall.stage_decode", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default: %(default)s)")
    parser.add_argument("--config", dest="decode_conf", default="conf/decode.yaml",
                        help="decode config: beam, LM weight grid (default: %(default)s)")
    parser.add_argument("--nj", type=argparse_type("nj", "--nj"), default=1, help="jobs per set (with --cmd or --job)")
    parser.add_argument("--cmd", default="", help="run the jobs through run.pl, 'slurm.pl --gpu 1'... "
                        "(default: everything in this process)")
    # What --cmd runs; not for users.
    parser.add_argument("--job", type=argparse_type("job", "--job"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--round", choices=ROUNDS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hotwords", default=None, help="one hotwords list for every set (default: DATA/<set>/hotwords)")
    parser.add_argument("--mode", default="ctc", choices=["ctc", "rescore", "joint"],
                        help="after the CTC decodes, also this attention mode, tuned on dev in this process "
                             "(kocall.joint_decode; default: %(default)s)")
    parser.add_argument("--attention-checkpoint", default=None,
                        help="full Whisper checkpoint for a whisper_ctc model's rescore/joint modes "
                             "(default: the config's attention_checkpoint)")
    parser.add_argument("amdir", help="the model's experiment dir (AMDIR/final is the model dir)")
    parser.add_argument("lang", help="lang dir (tokens.txt, lm/lm.arpa)")
    parser.add_argument("data", help="the folder of the data dirs of the sets")
    parser.add_argument("sets", nargs="+", help="dev set first (the grid search runs on it), then test sets")
    parser.error = _one_line_usage_error   # type: ignore[method-assign]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    amdir, lang, data = Path(args.amdir), Path(args.lang), Path(args.data)
    try:
        if args.mode != "ctc" and args.job is None:   # the mode's grid checked before any decoding
            from kocall.joint_decode import mode_grid, quiet_openmp

            quiet_openmp()
            mode_grid(load_decode_conf(args.decode_conf), args.mode)
        if args.job is not None:
            if args.round is None:
                raise KocallError("--job needs --round grid|final")
            run_job(args.round, args.job, args.nj, amdir, lang, data, args.sets, args.device, args.decode_conf,
                    args.hotwords)
        elif args.cmd:
            run_stage_jobs(args.cmd, args.nj, amdir, lang, data, args.sets, args.device, args.decode_conf,
                           args.hotwords)
        else:
            run_stage(amdir, lang, data, args.sets, args.device, args.decode_conf, args.hotwords)
        if args.mode != "ctc" and args.job is None:
            from kocall.joint_decode import run_attention_mode

            best = run_attention_mode(StageDecoder.load(amdir, lang, args.device, args.decode_conf), args.mode, data,
                                      args.sets, args.attention_checkpoint)
            log.info("%s mode: dev CER %.2f with %s", args.mode, best["cer"], best)
    except KocallError as err:
        raise SystemExit(f"decode: {err.format_message()}")
    except OSError as err:   # a read-only or full filesystem under AMDIR
        from kocall.cli import os_error_line

        raise SystemExit(f"decode: {os_error_line(err)}")


@dataclass
class StageDecoder:
    """What every decode of the stage needs, loaded once per process (the stage, or one job)."""
    amdir: Path
    lang: Path
    model: Any
    tokenizer: Any
    make_feats: FeatureMaker
    base: DecoderConfig
    conf: dict
    lm_path: Path
    device: str

    @classmethod
    def load(cls, amdir: Path, lang: Path, device: str, decode_conf: str) -> "StageDecoder":
        from kocall.model_dir import load_model_dir
        from kocall.device import require_device

        require_device(device)
        conf = load_decode_conf(decode_conf)
        model, tokenizer, config = load_model_dir(amdir / "final", device)
        lm_path = lang / "lm" / "lm.arpa"
        if not lm_path.is_file():   # checked now; loaded only where a beam search runs (see tables)
            raise DataError(f"file '{lm_path}' is missing (n-gram LM)")
        bonus_token = -1 if conf.get("bonus_unit", "token") == "token" else (tokenizer.space_id or -1)
        base = DecoderConfig(beam=int(conf.get("beam", 16)), token_topk=int(conf.get("token_topk", 16)),
                             token_min_logp=float(conf.get("token_min_logp", -12.0)), bonus_token=bonus_token,
                             blank_id=tokenizer.blank_id)
        return cls(amdir, lang, model, tokenizer, FeatureMaker(amdir / "final", config), base, conf, lm_path, device)

    @functools.cached_property
    def tables(self) -> Any:
        """The LM's device tables, loaded on first use: the --cmd stage process never needs them."""
        return load_lm_tables(self.lm_path, self.lang / "tokens.txt")

    def log_probs(self, data_dir: Path, nj: int = 1, job: int = 1) -> tuple[list[str], list[np.ndarray]]:
        return set_log_probs(self.model, data_dir, self.make_feats, self.device, nj, job)

    def texts(self, rows: list[np.ndarray], cfg: DecoderConfig | None, context=None) -> list[str]:
        """Best hypothesis per row: greedy when cfg is None, else beam search + LM with cfg (and
        the hotwords' context graph `context`)."""
        hyps = decode_rows(rows, cfg or self.base, None if cfg is None else self.tables, self.device, cfg is None,
                           self.tokenizer.suppressed_ids, int(self.conf.get("batch_size", 64)), context)
        return [self.tokenizer.decode(h[0].tokens) if h else "" for h in hyps]

    def grid(self) -> list[tuple[float, float, DecoderConfig]]:
        """(lm_weight, word_bonus, decoder config) of every grid point, in the config's order."""
        grid_beam = int(self.conf["grid"].get("beam", self.base.beam))
        return [(float(w), float(b), DecoderConfig(**{**self.base.__dict__, "beam": grid_beam, "lm_weight": float(w),
                                                      "word_bonus": float(b)}))
                for w in self.conf["grid"]["lm_weight"] for b in self.conf["grid"]["word_bonus"]]

    def best_config(self, best: dict) -> DecoderConfig:
        return DecoderConfig(**{**self.base.__dict__, "lm_weight": best["lm_weight"], "word_bonus": best["word_bonus"]})

    def chosen_weights(self, dev: str) -> dict:
        """What choose_weights wrote for `dev`."""
        path = self.amdir / f"decode_{dev}_beam" / "best_weights.json"
        if not path.is_file():
            raise DataError(f"file '{path}' is missing: run the decode stage's weight search first")
        return json.loads(path.read_text(encoding="utf-8"))

    def write_greedy(self, name: str, hyps: dict[str, str]) -> None:
        write_decode(self.amdir / f"decode_{name}_greedy", list(hyps), list(hyps.values()),
                     {"decoder": "greedy", "beam": None, "lm": None, "lm_weight": None, "word_bonus": None})

    def write_beam(self, name: str, hyps: dict[str, str], cfg: DecoderConfig) -> None:
        write_decode(self.amdir / f"decode_{name}_beam", list(hyps), list(hyps.values()),
                     {"decoder": "beam", "beam": cfg.beam, "lm": str(self.lm_path), "lm_weight": cfg.lm_weight,
                      "word_bonus": cfg.word_bonus, "bonus_unit": self.conf.get("bonus_unit", "token")})

    @property
    def hotword_weight(self) -> float:
        return float(self.conf.get("hotword_weight", DEFAULT_WEIGHT))

    @property
    def hotword_compensation(self) -> float:
        return float(self.conf.get("hotword_lm_compensation", DEFAULT_LM_COMPENSATION))

    def check_hotwords(self, lists: dict[str, Path]) -> dict[Path, int]:
        """{list: its number of phrases}; a list the units cannot spell stops the stage here,
        before any decoding (no LM needed: the --cmd stage process never loads it)."""
        return {path: compile_hotwords(path, self.tokenizer, self.hotword_weight).num_phrases
                for path in sorted(set(lists.values()))}

    def hotword_graphs(self, lists: dict[str, Path], cfg: DecoderConfig,
                       settings: tuple[float, float] | None = None) -> dict[Path, Any]:
        """{list: its context graph} for the chosen LM weight and hotword `settings` (weight,
        LM compensation; default the config's)."""
        weight, compensation = settings or (self.hotword_weight, self.hotword_compensation)
        return {path: compile_hotwords(path, self.tokenizer, weight, self.tables, cfg.lm_weight * math.log(10),
                                       compensation)
                for path in sorted(set(lists.values()))}

    def hotword_grid(self) -> list[tuple[float, float]]:
        """(weight, LM compensation) points tried on a hotword dev set, in the config's order."""
        grid = self.conf.get("hotword_grid")
        if not grid:
            return [(self.hotword_weight, self.hotword_compensation)]
        as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
        return [(float(w), float(c)) for w in as_list(grid["hotword_weight"])
                for c in as_list(grid["hotword_lm_compensation"])]

    def grid_hotword_texts(self, rows: list[np.ndarray], cfg: DecoderConfig, path: Path) -> list[list[str]]:
        """The hotword dev set's texts at every hotword_grid point (its list `path`)."""
        return [self.texts(rows, cfg, self.hotword_graphs({"_": path}, cfg, point)[path])
                for point in self.hotword_grid()]

    def choose_hotword_settings(self, name: str, data: Path, path: Path, point_hyps: list[dict[str, str]]
                                ) -> tuple[float, float]:
        """The hotword_grid point with the lowest CER on the hotword dev set `name` (ties: the
        smaller weight, then compensation), written with every trial beside its decode."""
        from kocall.hotwords import hotword_counts, read_hotwords
        from kocall.scoring import score_texts

        refs_all = load_data_dir(data / name).text
        phrases = [hw.phrase for hw in read_hotwords(path)]
        trials = []
        for (weight, compensation), hyps in zip(self.hotword_grid(), point_hyps):
            refs = {u: t for u, t in refs_all.items() if u in hyps}
            counts = hotword_counts(refs, hyps, phrases)
            trials.append({"hotword_weight": weight, "hotword_lm_compensation": compensation,
                           "cer": score_texts(refs, hyps).cer,
                           "recall": round(counts.recall, 2) if counts.occurrences else None,
                           "false_alarms": counts.false_alarms})
            log.info("hotword grid %s: weight %.2f compensation %.2f -> CER %.2f, %s", name, weight, compensation,
                     trials[-1]["cer"], counts.summary())
        best = min(trials, key=lambda r: (r["cer"], r["hotword_weight"], r["hotword_lm_compensation"]))
        with atomic_write(self.amdir / f"decode_{name}_beam_hotwords" / "best_hotword_weights.json") as handle:
            handle.write(json.dumps({**best, "set": name, "hotwords": str(path), "trials": trials}, indent=1) + "\n")
        return best["hotword_weight"], best["hotword_lm_compensation"]

    def hotword_settings(self, hotword_dev: str | None) -> tuple[float, float]:
        """What choose_hotword_settings wrote for `hotword_dev`; the config's without one."""
        if hotword_dev is None:
            return self.hotword_weight, self.hotword_compensation
        path = self.amdir / f"decode_{hotword_dev}_beam_hotwords" / "best_hotword_weights.json"
        if not path.is_file():
            raise DataError(f"file '{path}' is missing: run the hotword settings search first")
        best = json.loads(path.read_text(encoding="utf-8"))
        return float(best["hotword_weight"]), float(best["hotword_lm_compensation"])

    def write_hotwords(self, name: str, hyps: dict[str, str], cfg: DecoderConfig, path: Path, phrases: int,
                       settings: tuple[float, float] | None = None) -> None:
        weight, compensation = settings or (self.hotword_weight, self.hotword_compensation)
        write_decode(self.amdir / f"decode_{name}_beam_hotwords", list(hyps), list(hyps.values()),
                     {"decoder": "beam_hotwords", "beam": cfg.beam, "lm": str(self.lm_path), "lm_weight": cfg.lm_weight,
                      "word_bonus": cfg.word_bonus, "bonus_unit": self.conf.get("bonus_unit", "token"),
                      "hotwords": str(path), "hotword_weight": weight,
                      "hotword_lm_compensation": compensation, "hotword_phrases": phrases})
        log.info("%s: beam + LM + hotwords (%s, %d phrases) done", name, path, phrases)

    def choose_weights(self, dev: str, data: Path, grid_hyps: list[dict[str, str]]) -> dict:
        """The grid point with the lowest dev CER (ties: smaller weight, then bonus), written to
        decode_<dev>_beam/best_weights.json with every trial."""
        from kocall.scoring import score_texts

        refs_all = load_data_dir(data / dev).text
        trials = []
        for (lm_weight, bonus, _), hyps in zip(self.grid(), grid_hyps):
            refs = {u: t for u, t in refs_all.items() if u in hyps}
            cer = score_texts(refs, hyps).cer
            trials.append({"lm_weight": lm_weight, "word_bonus": bonus, "cer": cer})
            log.info("grid %s: lm_weight %.2f word_bonus %.2f -> CER %.2f", dev, lm_weight, bonus, cer)
        best = min(trials, key=lambda r: (r["cer"], r["lm_weight"], r["word_bonus"]))
        grid_beam = int(self.conf["grid"].get("beam", self.base.beam))
        with atomic_write(self.amdir / f"decode_{dev}_beam" / "best_weights.json") as handle:
            handle.write(json.dumps({**best, "grid_beam": grid_beam, "set": dev, "trials": trials}, indent=1) + "\n")
        return best


def run_stage(amdir: Path, lang: Path, data: Path, sets: list[str], device: str, decode_conf: str,
              hotwords: str | None = None) -> dict:
    """The whole stage in this process."""
    lists = hotword_lists(data, sets, hotwords)
    dec = StageDecoder.load(amdir, lang, device, decode_conf)
    phrases = dec.check_hotwords(lists)
    posteriors = {}
    for name in sets:
        ids, rows = dec.log_probs(data / name)
        posteriors[name] = (ids, rows)
        dec.write_greedy(name, dict(zip(ids, dec.texts(rows, None))))
        log.info("%s: greedy done (%d utterances)", name, len(ids))
    dev_ids, dev_rows = posteriors[sets[0]]
    best = dec.choose_weights(sets[0], data, [dict(zip(dev_ids, dec.texts(dev_rows, cfg))) for *_, cfg in dec.grid()])
    cfg = dec.best_config(best)
    for name in sets:
        ids, rows = posteriors[name]
        dec.write_beam(name, dict(zip(ids, dec.texts(rows, cfg))), cfg)
        log.info("%s: beam + LM done", name)
    settings = None
    tuning = hotword_dev_set(sets, lists)
    if tuning is not None:
        ids, rows = posteriors[tuning]
        point_texts = dec.grid_hotword_texts(rows, cfg, lists[tuning])
        settings = dec.choose_hotword_settings(tuning, data, lists[tuning], [dict(zip(ids, t)) for t in point_texts])
    graphs = dec.hotword_graphs(lists, cfg, settings)
    for name, path in lists.items():
        ids, rows = posteriors[name]
        dec.write_hotwords(name, dict(zip(ids, dec.texts(rows, cfg, graphs[path]))), cfg, path, phrases[path],
                           settings)
    return best


# ------------------------------------------------------------------ the stage as --nj jobs (--cmd)
# Round "grid": job J decodes its part of dev at every grid point; the stage then picks the
# weights. Round "hotword_grid" (only with a hotword dev set): job J decodes its part of that
# set at every hotword_grid point; the stage picks the hotword settings. Round "final": job J
# decodes its part of every set, greedy and with those weights
# (and with its hotwords list where it has one); the stage then writes each hyp.txt. Jobs write JSON under AMDIR/.decode_jobs (removed after);
# the outputs equal run_stage's byte for byte.
ROUNDS = ("grid", "hotword_grid", "final")


def _job_file(amdir: Path, round_name: str, job: int) -> Path:
    return amdir / ".decode_jobs" / f"{round_name}.{job}.json"


def run_job(round_name: str, job: int, nj: int, amdir: Path, lang: Path, data: Path, sets: list[str],
            device: str, decode_conf: str, hotwords: str | None = None) -> None:
    dec = StageDecoder.load(amdir, lang, device, decode_conf)
    if round_name == "grid":
        ids, rows = dec.log_probs(data / sets[0], nj, job)
        out: dict = {"ids": ids, "grid": [dec.texts(rows, cfg) for *_, cfg in dec.grid()]}
    elif round_name == "hotword_grid":
        cfg = dec.best_config(dec.chosen_weights(sets[0]))
        lists = hotword_lists(data, sets, hotwords)
        tuning = hotword_dev_set(sets, lists)
        if tuning is None:
            raise KocallError("--round hotword_grid: the sets hold no dev_* set with a hotwords list")
        ids, rows = dec.log_probs(data / tuning, nj, job)
        out = {"ids": ids, "grid": dec.grid_hotword_texts(rows, cfg, lists[tuning])}
    else:
        cfg = dec.best_config(dec.chosen_weights(sets[0]))
        lists = hotword_lists(data, sets, hotwords)
        graphs = dec.hotword_graphs(lists, cfg, dec.hotword_settings(hotword_dev_set(sets, lists)))
        out = {}
        for name in sets:
            ids, rows = dec.log_probs(data / name, nj, job)
            out[name] = {"ids": ids, "greedy": dec.texts(rows, None), "beam": dec.texts(rows, cfg)}
            if name in lists:
                out[name]["hotwords"] = dec.texts(rows, cfg, graphs[lists[name]])
            log.info("%s: job %d of %d: %d utterances", name, job, nj, len(ids))
    with atomic_write(_job_file(amdir, round_name, job)) as handle:
        json.dump(out, handle, ensure_ascii=False)


def _job_outputs(amdir: Path, round_name: str, nj: int) -> list[dict]:
    outputs = []
    for job in range(1, nj + 1):
        path = _job_file(amdir, round_name, job)
        if not path.is_file():
            raise KocallError(f"decode: job {job} of {nj} ({round_name}) reported success but left no '{path}' "
                              f"(log: {amdir / 'log' / f'decode_{round_name}.{job}.log'})")
        outputs.append(json.loads(path.read_text(encoding="utf-8")))
    return outputs


def run_stage_jobs(cmd: str, nj: int, amdir: Path, lang: Path, data: Path, sets: list[str], device: str,
                   decode_conf: str, hotwords: str | None = None) -> dict:
    """The stage as two rounds of nj jobs through `cmd` (run.pl, slurm.pl ...); logs in
    AMDIR/log/decode_{grid,final}.<n>.log."""
    import shutil
    import sys

    from kocall.jobs import dispatch

    if nj < 1:
        raise KocallError(f"--nj must be >= 1, not {nj}")
    # No job without utterances: each would load the model and the LM for nothing.
    nj = min(nj, max(len(load_data_dir(data / name).utt_ids) for name in sets))
    work = amdir / ".decode_jobs"
    shutil.rmtree(work, ignore_errors=True)
    argv = [sys.executable, "-m", "kocall.stage_decode", "--device", device, "--config", decode_conf,
            "--nj", str(nj), "--job", "JOB", *(["--hotwords", hotwords] if hotwords else [])]
    tail = [str(amdir), str(lang), str(data), *sets]
    lists = hotword_lists(data, sets, hotwords)                 # checks the inputs before any job starts
    dec = StageDecoder.load(amdir, lang, device, decode_conf)
    phrases = dec.check_hotwords(lists)
    try:
        dispatch(cmd, nj, amdir / "log" / "decode_grid.JOB.log", argv + ["--round", "grid", *tail], "decode (grid)")
        grid_outputs = _job_outputs(amdir, "grid", nj)
        grid_hyps = [{u: t for out in grid_outputs for u, t in zip(out["ids"], out["grid"][point])}
                     for point in range(len(dec.grid()))]
        best = dec.choose_weights(sets[0], data, grid_hyps)
        settings = None
        tuning = hotword_dev_set(sets, lists)
        if tuning is not None:
            dispatch(cmd, nj, amdir / "log" / "decode_hotword_grid.JOB.log", argv + ["--round", "hotword_grid", *tail],
                     "decode (hotword grid)")
            outputs = _job_outputs(amdir, "hotword_grid", nj)
            point_hyps = [{u: t for out in outputs for u, t in zip(out["ids"], out["grid"][point])}
                          for point in range(len(dec.hotword_grid()))]
            settings = dec.choose_hotword_settings(tuning, data, lists[tuning], point_hyps)
        dispatch(cmd, nj, amdir / "log" / "decode_final.JOB.log", argv + ["--round", "final", *tail], "decode")
        final_outputs = _job_outputs(amdir, "final", nj)
        cfg = dec.best_config(best)
        for name in sets:
            parts = [out[name] for out in final_outputs]
            dec.write_greedy(name, {u: t for p in parts for u, t in zip(p["ids"], p["greedy"])})
            dec.write_beam(name, {u: t for p in parts for u, t in zip(p["ids"], p["beam"])}, cfg)
        for name, path in lists.items():
            parts = [out[name] for out in final_outputs]
            dec.write_hotwords(name, {u: t for p in parts for u, t in zip(p["ids"], p["hotwords"])}, cfg, path,
                               phrases[path], settings)
        return best
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
