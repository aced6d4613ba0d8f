"""`kocall decode`: audio or features -> Conformer-CTC posteriors -> greedy or beam+LM text.

Inputs: WAV files (positional; the utterance id is the file stem), a Kaldi data dir
(--data-dir: feats.scp if present, else wav.scp) or an scp (--scp: a wav.scp, or a
feats.scp when its values are ark specs). Output: Kaldi `utt-id text` lines (--out, default
stdout), optionally the N-best list (--nbest N --nbest-out FILE: `utt-id-rank score am lm
text`). An utterance whose audio or features are unusable is reported by name and file;
the others still decode, and the exit status is 1 at the end.

`decode_posteriors` is the library entry point the decode stage and the benchmark use.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np

from kocall.device import DEVICES
from kocall.errors import DataError, KocallError, where
from kocall.fileio import read_table, write_table
from kocall.hotwords import DEFAULT_LM_COMPENSATION, DEFAULT_WEIGHT, compile_hotwords
from kocall.options import bounded
from kocall.formats import FORMATS
from kocall.rxspec import allow_pipes_option
from kocall_kernels.ctc_decoder import DecoderConfig, Hypothesis

log = logging.getLogger(__name__)
# The encoder's attention is quadratic in length: a one-hour recording would need tens of GB.
# Call-centre queries last seconds; longer audio must be split (e.g. `sox in.wav out.wav trim 0 60`).
MAX_DECODE_SECONDS = 120.0


def load_lm_tables(lm_path: str | Path, tokens_txt: str | Path):
    """NgramTables from an ARPA; given a KenLM binary (lm.bin), the ARPA beside it (lm.arpa)."""
    from kocall_kernels.ngram.tables import NgramTables

    lm_path = Path(lm_path)
    if lm_path.suffix == ".npz":   # a model package's tables (NgramTables.save): loading is a memory copy
        from kocall_kernels.ngram.arpa import read_tokens

        tables = NgramTables.load(lm_path)
        units = len(read_tokens(tokens_txt))
        if tables.vocab_size != units:
            raise DataError(f"file '{lm_path}': n-gram tables over {tables.vocab_size} units, the model has {units}")
        return tables
    if lm_path.suffix != ".arpa":
        arpa = lm_path.with_suffix(".arpa")
        if not arpa.is_file():
            raise DataError(f"file '{lm_path}': the decoder reads ARPA; expected '{arpa}' beside it")
        lm_path = arpa
    if not lm_path.is_file():
        raise DataError(f"file '{lm_path}' is missing (n-gram LM)")
    return NgramTables.from_arpa(lm_path, tokens_txt, progress=False)


def decode_posteriors(log_probs, lens, decoder_cfg: DecoderConfig, lm_tables=None, device: str = "cpu",
                      greedy: bool = False, suppress: Sequence[int] = (), context=None) -> list[list[Hypothesis]]:
    """N-best lists for a (B, T, V) batch of natural-log posteriors (numpy or torch).

    context: hotwords (a ContextGraph, kocall.hotwords.compile_hotwords) biasing the beam search.

    greedy: one hypothesis per utterance from argmax (scores = acoustic best-path log-prob).
    suppress: token ids never emitted (e.g. `<unk>`): their log-probs become -inf."""
    if hasattr(log_probs, "detach"):
        log_probs = log_probs.detach()
        if device == "cpu" or greedy:
            log_probs = log_probs.float().cpu().numpy()
    lens = np.asarray(lens.cpu() if hasattr(lens, "cpu") else lens, dtype=np.int64)
    if suppress:
        log_probs = log_probs.copy() if isinstance(log_probs, np.ndarray) else log_probs.clone()
        log_probs[:, :, list(suppress)] = -np.inf
    if greedy:
        from kocall_kernels.ctc_decoder.greedy import greedy_decode

        best = np.asarray(log_probs).max(axis=-1)
        return [[Hypothesis(tokens, float(best[b, : lens[b]].sum()), float(best[b, : lens[b]].sum()), 0.0)]
                for b, tokens in enumerate(greedy_decode(log_probs, lens, decoder_cfg.blank_id))]
    if device == "cuda":
        from kocall_kernels.ctc_decoder import cuda as ctc_cuda

        if hasattr(log_probs, "is_cuda") and log_probs.is_cuda:
            log_probs = log_probs.float().contiguous()  # handed over through __cuda_array_interface__
        return ctc_cuda.decode_batch(log_probs, lens, decoder_cfg, lm_tables, context=context)
    from kocall_kernels.ctc_decoder import cpu as ctc_cpu

    return ctc_cpu.decode_batch(np.asarray(log_probs, dtype=np.float32), lens, decoder_cfg, lm_tables, context)


# ------------------------------------------------------------------ inputs -> features -> posteriors

@dataclass
class InputUtt:
    utt_id: str
    spec: str     # wav.scp value / WAV path, or a feats rxspec
    is_feats: bool


def _is_feats_spec(value: str) -> bool:
    return ".ark:" in value or value.endswith(".ark") or ".scp:" in value


def collect_inputs(wavs: Sequence[str], data_dir: str | None, scp: str | None) -> list[InputUtt]:
    chosen = sum(bool(x) for x in (wavs, data_dir, scp))
    if chosen != 1:
        raise KocallError("give exactly one input: WAV files, --data-dir or --scp")
    if wavs:
        from kocall.datadir import utt_id_for_file

        utts = [InputUtt(utt_id_for_file(w), w, False) for w in wavs]
        seen: dict[str, str] = {}
        for u in utts:
            if u.utt_id in seen:
                raise DataError(f"{where(u.utt_id, u.spec)}: duplicate utterance id (also '{seen[u.utt_id]}')")
            seen[u.utt_id] = u.spec
        return utts
    if data_dir:
        feats = Path(data_dir) / "feats.scp"
        table_path = feats if feats.is_file() else Path(data_dir) / "wav.scp"
    else:
        table_path = Path(scp)
    table = read_table(table_path)
    is_feats = table_path.name == "feats.scp" or all(_is_feats_spec(v) for v in table.values())
    return [InputUtt(u, table[u], is_feats) for u in sorted(table, key=lambda k: k.encode("utf-8"))]


class FeatureMaker:
    """Model-ready features (global CMVN applied) for WAV or feats inputs."""

    def __init__(self, model_dir: Path, config: dict, max_seconds: float = MAX_DECODE_SECONDS) -> None:
        from kocall.dataset import load_cmvn_stats

        from kocall.models import max_input_seconds

        # The decoder's limit, or the model's when smaller (Whisper's encoder: 30 s of positions).
        model_limit = max_input_seconds(config)
        self.max_seconds = min(max_seconds, model_limit) if model_limit else max_seconds
        self.limit_by = "the model's input limit" if model_limit and model_limit < max_seconds else "--max-seconds"

        self.mean, self.std = load_cmvn_stats(model_dir / "cmvn.json")
        from kocall.features import model_fbank_config

        self.fbank_cfg = model_fbank_config(model_dir)
        self.sample_rate = self.fbank_cfg.sample_rate

    def __call__(self, utt: InputUtt) -> np.ndarray:
        if utt.is_feats:
            from kocall.features import load_feats

            feats = load_feats(utt.spec, utt.utt_id)
            self._check_length(utt, feats.shape[0] * self.fbank_cfg.frame_shift_ms / 1000)
        else:
            from kocall.audio import load_audio
            from kocall.features import wav_to_fbank

            samples, sr = load_audio(utt.spec, utt.utt_id, expected_sr=self.sample_rate, resample=True)
            self._check_length(utt, samples.size / sr)
            feats = np.asarray(wav_to_fbank(samples, sr, self.fbank_cfg), dtype=np.float32)
            if feats.ndim != 2 or feats.shape[0] == 0:
                raise DataError(f"{where(utt.utt_id, utt.spec)}: audio too short for one feature frame")
        if feats.shape[1] != self.mean.shape[0]:
            raise DataError(f"{where(utt.utt_id, utt.spec)}: {feats.shape[1]} feature bins, the model's "
                            f"CMVN has {self.mean.shape[0]}")
        return (feats - self.mean) / self.std

    def _check_length(self, utt: InputUtt, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise DataError(f"{where(utt.utt_id, utt.spec)}: {seconds:.1f} s of audio, longer than the "
                            f"{self.max_seconds:g} s the decoder takes ({self.limit_by}); split it into shorter "
                            "utterances")


def compute_log_probs(model, feats: list[np.ndarray], device: str = "cpu",
                      max_frames: int = 20000) -> list[np.ndarray]:
    """(T_out, V) float32 log-probs per utterance; batched by length, model in eval mode."""
    import torch

    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
    result: list[np.ndarray | None] = [None] * len(feats)
    batch: list[int] = []

    def flush() -> None:
        if not batch:
            return
        longest = max(feats[i].shape[0] for i in batch)
        x = np.zeros((len(batch), longest, feats[batch[0]].shape[1]), np.float32)
        for row, i in enumerate(batch):
            x[row, : feats[i].shape[0]] = feats[i]
        lens = torch.tensor([feats[i].shape[0] for i in batch], dtype=torch.long, device=device)
        with torch.inference_mode():
            lp, out_lens = model(torch.from_numpy(x).to(device), lens)
        lp, out_lens = lp.float().cpu().numpy(), out_lens.cpu().numpy()
        for row, i in enumerate(batch):
            result[i] = lp[row, : int(out_lens[row])]
        batch.clear()

    model.eval()
    for i in order:
        if batch and (len(batch) + 1) * max(feats[i].shape[0], 1) > max_frames:
            flush()
        batch.append(i)
    flush()
    return result  # type: ignore[return-value]


def pad_log_probs(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack (T_i, V) arrays into (B, T_max, V) (padding = blank-certain frames, never read)."""
    lens = np.array([r.shape[0] for r in rows], dtype=np.int64)
    V = rows[0].shape[1] if rows else 1
    out = np.zeros((len(rows), int(lens.max(initial=0)), V), np.float32)
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out, lens


def decode_rows(rows: list[np.ndarray], cfg: DecoderConfig, tables, device: str, greedy: bool,
                suppress: Sequence[int], batch_size: int = 64, context=None) -> list[list[Hypothesis]]:
    """Decode per-utterance log-probs in batches of similar length (less padding)."""
    from kocall.progress import progress_bar

    order = sorted(range(len(rows)), key=lambda i: rows[i].shape[0])
    result: list[list[Hypothesis] | None] = [None] * len(rows)
    for start in progress_bar(range(0, len(order), batch_size), desc="decode", unit="batch",
                              disable=len(order) <= batch_size):
        idx = order[start: start + batch_size]
        lp, lens = pad_log_probs([rows[i] for i in idx])
        for i, hyps in zip(idx, decode_posteriors(lp, lens, cfg, tables, device, greedy, suppress, context)):
            result[i] = hyps
    return result  # type: ignore[return-value]


def write_outputs(out: str | None, texts: dict[str, str], nbest_out: str | None,
                  nbest: dict[str, list[tuple[Hypothesis, str]]]) -> None:
    if out and out != "-":
        write_table(out, texts)
    else:
        for utt in sorted(texts, key=lambda k: k.encode("utf-8")):
            click.echo(f"{utt} {texts[utt]}".rstrip())
    if nbest_out:
        rows = {f"{utt}-{rank}": f"{h.score:.4f} {h.am_score:.4f} {h.lm_score:.4f} {text}".rstrip()
                for utt, hyps in nbest.items() for rank, (h, text) in enumerate(hyps, 1)}
        write_table(nbest_out, rows)


# kocall decode's option for each attention-mode setting a package may hold (kocall.package.MODE_SETTINGS;
# the joint pre-beam has none: the package's, else JointConfig's).
ATTENTION_OPTIONS: dict[str, dict[str, str]] = {
    "rescore": {"attention_weight": "attention_weight", "nbest": "rescore_nbest"},
    "joint": {"ctc_weight": "ctc_weight", "lm_weight": "joint_lm_weight", "char_bonus": "char_bonus",
              "beam": "joint_beam"}}


@click.command("decode")
@click.argument("wavs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="model dir (final/)")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Kaldi data dir")
@click.option("--scp", default=None, type=click.Path(dir_okay=False), help="wav.scp or feats.scp")
@click.option("--out", default=None, type=click.Path(dir_okay=False, allow_dash=True),
              help="Kaldi text output (default or '-': standard output)")
@click.option("--lm", default=None, type=click.Path(dir_okay=False), help="lm.arpa (or lm.bin: the ARPA beside it)")
@click.option("--beam", type=bounded("beam"), default=16, show_default=True, help="beam width")
@click.option("--lm-weight", type=bounded("lm_weight"), default=0.5, show_default=True, help="alpha (LM log10 -> ln, then x alpha)")
@click.option("--word-bonus", type=bounded("word_bonus"), default=1.0, show_default=True,
              help="beta per emitted unit (per ▁ with --bonus-unit word)")
@click.option("--bonus-unit", type=click.Choice(["token", "word"]), default="token", show_default=True,
              help="what --word-bonus is paid for: every unit, or every word (▁)")
@click.option("--token-topk", type=bounded("token_topk"), default=16, show_default=True,
              help="units tried per frame (the most likely)")
@click.option("--token-min-logp", type=bounded("token_min_logp"), default=-12.0, show_default=True,
              help="units below this log-probability in a frame are not tried")
@click.option("--nbest", type=bounded("nbest"), default=1, show_default=True,
              help="hypotheses kept per utterance for --nbest-out")
@click.option("--nbest-out", default=None, type=click.Path(dir_okay=False),
              help="write the N-best list: 'utt-rank score am lm text' lines")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="where the model and the beam search run")
@click.option("--greedy", is_flag=True, help="argmax decoding (no beam, no LM)")
@click.option("--batch-size", type=bounded("batch_size"), default=32, show_default=True,
              help="utterances per forward pass")
@click.option("--hotwords", default=None, type=click.Path(dir_okay=False),
              help="phrases to boost, one per line, optional weight per character: '명동점 :2.5' (kocall.hotwords)")
@click.option("--hotword-weight", type=bounded("hotword_weight"), default=DEFAULT_WEIGHT, show_default=True,
              help="bonus per character of a matched hotword (ln; spread over its units) for phrases without their own weight")
@click.option("--hotword-lm-compensation", type=bounded("hotword_lm_compensation"), default=DEFAULT_LM_COMPENSATION,
              show_default=True,
              help="add this share of each hotword's per-unit LM cost (x --lm-weight) to its bonus (kocall.hotwords)")
@click.option("--max-seconds", type=bounded("max_seconds"), default=MAX_DECODE_SECONDS,
              show_default=True, help="longest utterance decoded; longer ones are reported and skipped")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text (Kaldi 'utt text'), json (JSON Lines with segments and word times), ctm, srt")
@click.option("--out-dir", default=None, type=click.Path(file_okay=False),
              help="one output per input file: DIR/<id>.<txt|json|ctm|srt>")
@click.option("--precision", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="which network of a model package")
@click.option("--no-lm", is_flag=True, help="decode without the model package's LM")
@click.option("--threads", type=bounded("threads"), default=None,
              help="CPU threads of the network (torch) and the search (numba) [default: theirs]")
@click.option("--itn", is_flag=True, help="numbers, money, dates, times and phone numbers in written form "
              "(35,000원, 3월 20일, 010-1234-5678) in text, json and srt (kocall.itn)")
@click.option("--channel-labels", default="agent,customer", show_default=True,
              help="labels of a two-channel recording's first and second channel")
@click.option("--segmentation", type=click.Choice(["auto", "vad"]), default="auto", show_default=True,
              help="auto: a mono file up to --max-seconds whole, longer or two-channel ones cut by the VAD; "
                   "vad: always cut")
@click.option("--mode", type=click.Choice(["ctc", "rescore", "joint"]), default="ctc", show_default=True,
              help="ctc: CTC beam search + LM (fastest); rescore: its N-best rescored by the attention decoder; "
                   "joint: the decoder's beam search with CTC prefix + LM scores (kocall.joint_decode)")
@click.option("--attention-checkpoint", default=None, type=click.Path(dir_okay=False),
              help="full Whisper checkpoint whose decoder a whisper_ctc model uses in rescore/joint modes")
@click.option("--attention-weight", type=float, default=1.0, show_default=True,
              help="rescore: x the decoder's log-prob, added to the CTC+LM score (a package's tuned value "
                   "unless given)")
@click.option("--rescore-nbest", type=int, default=32, show_default=True, help="rescore: hypotheses rescored")
@click.option("--ctc-weight", type=float, default=0.3, show_default=True,
              help="joint: (1 - w) x attention + w x CTC prefix log-prob (with --joint-lm-weight, --char-bonus "
                   "and --joint-beam: a package's tuned values unless given)")
@click.option("--joint-lm-weight", type=float, default=0.0, show_default=True, help="joint: x the LM's ln score")
@click.option("--char-bonus", type=float, default=0.0, show_default=True, help="joint: bonus per output character")
@click.option("--joint-beam", type=int, default=4, show_default=True, help="joint: beam width")
@allow_pipes_option
def decode_cmd(wavs, model_dir, data_dir, scp, out, lm, beam, lm_weight, word_bonus, bonus_unit, token_topk,
               token_min_logp, nbest, nbest_out, device, greedy, batch_size, hotwords, hotword_weight, hotword_lm_compensation, max_seconds,
               fmt="text", out_dir=None, precision="float", no_lm=False, channel_labels="agent,customer",
               segmentation="auto", itn=False, mode="ctc", attention_checkpoint=None, attention_weight=1.0,
               rescore_nbest=32, ctc_weight=0.3, joint_lm_weight=0.0, char_bonus=0.0, joint_beam=4,
               threads=None) -> None:
    """Decode WAV files, a data dir or an scp with a model dir or package (Conformer, Whisper-CTC, hybrid)."""
    from kocall.progress import progress_bar

    from kocall.model_dir import load_model_dir

    from kocall.device import require_device

    require_device(device)
    from kocall.fileio import check_output_files

    # An output may not overwrite an input (the hotword list too) nor write into the model dir.
    check_output_files({"--out": out, "--nbest-out": nbest_out},
                       {"--model": model_dir, "--scp": scp, "--data-dir": data_dir, "--lm": lm, "--hotwords": hotwords,
                        **{f"input '{w}'": w for w in wavs}})
    from kocall.decode_files import check_outputs, decode_files, explicit_settings, needs_file_path
    from kocall.package import decoding_setup

    if no_lm and lm:
        raise KocallError("give --lm or --no-lm, not both")
    if threads is not None:
        from kocall.transcribe import set_threads

        set_threads(threads)
    # A model package's LM and dev-tuned settings apply unless given here.
    given = explicit_settings(click.get_current_context(),
                              ("beam", "lm_weight", "word_bonus", "bonus_unit", "token_topk", "token_min_logp"))
    check_outputs(fmt, out, out_dir, len(wavs), {"--model": model_dir, "--lm": lm, "--hotwords": hotwords,
                                                 **{f"input '{w}'": w for w in wavs}})
    if mode != "ctc":   # weights checked before any model loads (one line each)
        from kocall.joint_decode import JointConfig, RescoreConfig, quiet_openmp

        quiet_openmp()
        from kocall.package import mode_settings

        # A package's dev-tuned settings for this mode, unless given here (as the CTC search's).
        tuned = mode_settings(model_dir, mode)
        given_here = explicit_settings(click.get_current_context(), ATTENTION_OPTIONS[mode].values())

        def setting(key: str, value: Any) -> Any:
            option = ATTENTION_OPTIONS[mode].get(key)
            return value if option in given_here or key not in tuned else tuned[key]

        rescore_cfg = RescoreConfig(attention_weight=setting("attention_weight", attention_weight),
                                    nbest=setting("nbest", rescore_nbest))
        joint_cfg = JointConfig(ctc_weight=setting("ctc_weight", ctc_weight),
                                lm_weight=setting("lm_weight", joint_lm_weight),
                                char_bonus=setting("char_bonus", char_bonus), beam=setting("beam", joint_beam),
                                pre_beam=setting("pre_beam", JointConfig.pre_beam))
        if greedy or nbest_out or itn:
            raise KocallError(f"--mode {mode} gives one text per utterance: not with --greedy, --nbest-out or --itn")
    if needs_file_path(wavs, fmt, out_dir, max_seconds, segmentation):
        if mode != "ctc":
            raise KocallError(f"--mode {mode} decodes whole utterances as text (--data-dir, --scp or short WAV files)")
        if nbest_out:
            raise KocallError("--nbest-out lists whole-utterance hypotheses: not with --format, --out-dir, or "
                              "two-channel or long recordings")
        decode_files(wavs, model_dir, fmt, out, out_dir, dict(
            device=device, precision=precision, lm=False if no_lm else lm, greedy=greedy, hotwords=hotwords,
            hotword_weight=hotword_weight, hotword_lm_compensation=hotword_lm_compensation,
            channel_labels=channel_labels.split(","), segmentation=segmentation, max_seconds=max_seconds,
            batch_size=batch_size, **given), itn)
        return
    if fmt != "text" or out_dir:
        raise KocallError("--format json|ctm|srt and --out-dir take WAV files (not --data-dir or --scp)")
    model_dir, lm, settings = decoding_setup(model_dir, precision, False if no_lm else lm, **given)
    beam, lm_weight, word_bonus, bonus_unit, token_topk, token_min_logp = (
        settings[k] for k in ("beam", "lm_weight", "word_bonus", "bonus_unit", "token_topk", "token_min_logp"))
    utts = collect_inputs(wavs, data_dir, scp)
    model, tokenizer, config = load_model_dir(model_dir, device)
    bonus_token = -1 if bonus_unit == "token" else (tokenizer.space_id if tokenizer.space_id is not None else -1)
    cfg = DecoderConfig(beam=beam, token_topk=token_topk, token_min_logp=token_min_logp,
                        lm_weight=lm_weight if lm else 0.0, word_bonus=word_bonus, bonus_token=bonus_token,
                        nbest=min(nbest, beam), blank_id=tokenizer.blank_id)
    if hotwords and greedy:
        raise KocallError("--hotwords biases the beam search; it cannot be used with --greedy")
    tables = load_lm_tables(lm, Path(model_dir) / "tokens.txt") if lm and not greedy else None
    context = (compile_hotwords(hotwords, tokenizer, hotword_weight, tables, cfg.lm_weight * math.log(10),
                                hotword_lm_compensation) if hotwords else None)
    make_feats = FeatureMaker(Path(model_dir), config, max_seconds)
    feats, good, failed = [], [], []
    for utt in progress_bar(utts, desc="features", unit="utt", disable=len(utts) < 20):
        try:
            feats.append(make_feats(utt))
            good.append(utt)
        except DataError as err:  # report by name, keep going with the rest
            click.echo(f"kocall decode: skipped: {err.format_message()}", err=True)
            failed.append(utt.utt_id)
    if mode != "ctc":
        from kocall.joint_decode import ModeSettings, UnitMapper, decode_one, load_joint_model

        joint_model = load_joint_model(model, config, model_dir, attention_checkpoint)
        settings = ModeSettings(mode, tokenizer, cfg, tables, context, rescore_cfg, joint_cfg, device)
        mapper = UnitMapper(tokenizer, joint_model.side.tokenizer.token_bytes)
        texts = {u.utt_id: decode_one(joint_model, model, f, settings, mapper)
                 for u, f in progress_bar(list(zip(good, feats)), desc=mode, unit="utt", disable=len(good) < 20)}
        write_outputs(out, texts, None, {})
        if failed:
            raise KocallError(f"{len(failed)} of {len(utts)} utterances failed: {' '.join(failed)}")
        return
    rows = compute_log_probs(model, feats, device) if feats else []
    hyps = decode_rows(rows, cfg, tables, device, greedy, tokenizer.suppressed_ids, batch_size, context)
    texts = {u.utt_id: tokenizer.decode(h[0].tokens) if h else "" for u, h in zip(good, hyps)}
    if itn:
        from kocall.itn import inverse_normalize

        texts = {u: inverse_normalize(t) for u, t in texts.items()}
    nbest_lists = {u.utt_id: [(x, tokenizer.decode(x.tokens)) for x in h] for u, h in zip(good, hyps)}
    write_outputs(out, texts, nbest_out, nbest_lists)
    if failed:
        raise KocallError(f"{len(failed)} of {len(utts)} utterances failed: {' '.join(failed)}")
