"""Scoring: CRR, CER and WER of hypotheses against reference transcripts (Kaldi `text` files).

The hackathon's metric, exactly as it scored:

    CER = sum over utterances of EditDistance(ref_chars, hyp_chars)
          / sum over utterances of len(ref_chars)
    CRR = (1 - CER) x 100

where ref_chars and hyp_chars are the transcripts with ALL spaces removed, and the edit
distance is the Levenshtein distance over characters (substitution, insertion and deletion
each cost 1). Because the sums are taken over the whole set before dividing, long utterances
weigh more than short ones; CER can exceed 100 % (many insertions), so CRR can be negative.
Whatever punctuation the transcripts hold counts as characters: with `--punct keep-final`
data, a missing final "?" is one error, as it was in the hackathon.

WER is the same formula over words (the space-separated tokens). A reference utterance with
no hypothesis is reported by name and scored as an empty hypothesis (every character a
deletion); a hypothesis with no reference is reported and ignored.

Summary line: `CRR 95.12 | CER 4.88 | WER 12.34 | utts 100 | ref chars 1234 | S 10 I 5 D 3`
(S/I/D: character substitutions, insertions, deletions of one minimal alignment).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
from rapidfuzz.distance import Levenshtein

from kocall.errors import DataError
from kocall.fileio import atomic_write, read_table
from kocall.hotwords import hotword_row, hotword_table


@dataclass
class UttScore:
    utt_id: str
    ref: str
    hyp: str
    ref_chars: int
    char_errors: int
    subs: int
    ins: int
    dels: int
    ref_words: int
    word_errors: int


@dataclass
class ScoreResult:
    crr: float
    cer: float
    wer: float
    utts: int
    ref_chars: int
    char_errors: int
    ref_words: int
    word_errors: int
    subs: int
    ins: int
    dels: int
    missing: list[str] = field(default_factory=list)   # reference ids with no hypothesis
    extra: list[str] = field(default_factory=list)     # hypothesis ids with no reference
    per_utt: list[UttScore] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        return (f"CRR {self.crr:.2f} | CER {self.cer:.2f} | WER {self.wer:.2f} | utts {self.utts} | "
                f"ref chars {self.ref_chars} | S {self.subs} I {self.ins} D {self.dels}")

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("per_utt")
        return data


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def score_utterance(utt_id: str, ref: str, hyp: str) -> UttScore:
    ref_c, hyp_c = _no_space(ref), _no_space(hyp)
    counts = {"replace": 0, "insert": 0, "delete": 0}
    for op in Levenshtein.editops(ref_c, hyp_c):
        counts[op.tag] += 1
    ref_w, hyp_w = ref.split(), hyp.split()
    return UttScore(utt_id=utt_id, ref=ref, hyp=hyp, ref_chars=len(ref_c),
                    char_errors=Levenshtein.distance(ref_c, hyp_c),
                    subs=counts["replace"], ins=counts["insert"], dels=counts["delete"],
                    ref_words=len(ref_w), word_errors=Levenshtein.distance(ref_w, hyp_w))


def score_texts(ref: dict[str, str], hyp: dict[str, str]) -> ScoreResult:
    """Score hypotheses against references (both utt_id -> transcript); see the module doc."""
    if not ref:
        raise DataError("no reference utterances to score against")
    ids = sorted(ref, key=lambda u: u.encode("utf-8"))
    missing = [u for u in ids if u not in hyp]
    extra = sorted((u for u in hyp if u not in ref), key=lambda u: u.encode("utf-8"))
    per_utt = [score_utterance(u, ref[u], hyp.get(u, "")) for u in ids]
    ref_chars = sum(s.ref_chars for s in per_utt)
    ref_words = sum(s.ref_words for s in per_utt)
    if ref_chars == 0:
        raise DataError("every reference transcript is empty; nothing to score")
    char_errors = sum(s.char_errors for s in per_utt)
    word_errors = sum(s.word_errors for s in per_utt)
    cer = 100.0 * char_errors / ref_chars
    return ScoreResult(crr=100.0 - cer, cer=cer, wer=100.0 * word_errors / max(ref_words, 1),
                       utts=len(per_utt), ref_chars=ref_chars, char_errors=char_errors,
                       ref_words=ref_words, word_errors=word_errors,
                       subs=sum(s.subs for s in per_utt), ins=sum(s.ins for s in per_utt),
                       dels=sum(s.dels for s in per_utt), missing=missing, extra=extra, per_utt=per_utt)


def align_lines(score: UttScore) -> list[str]:
    """sclite-style REF/HYP/EVAL lines over the space-free characters (*** marks a gap)."""
    ref_c, hyp_c = _no_space(score.ref), _no_space(score.hyp)
    ref_row: list[str] = []
    hyp_row: list[str] = []
    eval_row: list[str] = []
    for op in Levenshtein.opcodes(ref_c, hyp_c):
        r, h = ref_c[op.src_start:op.src_end], hyp_c[op.dest_start:op.dest_end]
        width = max(len(r), len(h))
        ref_row.extend(r if r else "*" * width)
        hyp_row.extend(h if h else "*" * width)
        eval_row.extend({"equal": " ", "replace": "S", "delete": "D", "insert": "I"}[op.tag] * width)
    correct = score.ref_chars - score.subs - score.dels
    return [f"id: ({score.utt_id})",
            f"Scores: (#C #S #D #I) {correct} {score.subs} {score.dels} {score.ins}",
            "REF:  " + " ".join(ref_row),
            "HYP:  " + " ".join(hyp_row),
            "EVAL: " + " ".join(eval_row),
            ""]


def write_alignment(path: str | os.PathLike, result: ScoreResult) -> None:
    with atomic_write(path) as handle:
        for score in result.per_utt:
            handle.write("\n".join(align_lines(score)) + "\n")
        handle.write(f"TOTAL: {result.summary()}\n")
        if result.missing:
            handle.write(f"MISSING HYPOTHESES ({len(result.missing)}, scored as empty): "
                         + " ".join(result.missing) + "\n")
        if result.extra:
            handle.write(f"EXTRA HYPOTHESES ({len(result.extra)}, ignored): " + " ".join(result.extra) + "\n")


def score_files(ref_path: str | os.PathLike, hyp_path: str | os.PathLike) -> ScoreResult:
    ref = read_table(ref_path, allow_empty_value=True)
    hyp = read_table(hyp_path, allow_empty_value=True)
    return score_texts(ref, hyp)


def _report_mismatches(result: ScoreResult, hyp_path: str) -> None:
    def names(ids: list[str]) -> str:
        return " ".join(ids[:10]) + (f" ... (+{len(ids) - 10})" if len(ids) > 10 else "")
    if result.missing:
        click.echo(f"warning: {len(result.missing)} reference utterance(s) have no hypothesis in '{hyp_path}' "
                   f"(scored as empty): {names(result.missing)}", err=True)
    if result.extra:
        click.echo(f"warning: {len(result.extra)} hypothesis utterance(s) in '{hyp_path}' have no reference "
                   f"(ignored): {names(result.extra)}", err=True)


@click.command("score")
@click.option("--ref", "ref_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="reference Kaldi text ('-': standard input)")
@click.option("--hyp", "hyp_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="hypothesis Kaldi text ('-': standard input, e.g. piped from `kocall decode`)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of the summary line")
@click.option("--align", "align_path", type=click.Path(dir_okay=False), help="write an sclite-style alignment")
@click.option("--json-out", type=click.Path(dir_okay=False), help="also write the JSON object to this file")
@click.option("--summary-out", type=click.Path(dir_okay=False), help="also write the summary line to this file")
@click.option("--hotwords", "hotwords_path", type=click.Path(dir_okay=False),
              help="a hotwords list: also print its recall and false alarms (kocall.hotwords)")
def score_cmd(ref_path: str, hyp_path: str, as_json: bool, align_path: str | None,
              json_out: str | None, summary_out: str | None, hotwords_path: str | None) -> None:
    """Score HYP against REF: CRR and CER (spaces removed), WER; with --hotwords, their recall."""
    from kocall.fileio import STDIN, check_output_files

    if ref_path == STDIN and hyp_path == STDIN:
        raise click.UsageError("--ref and --hyp cannot both be '-' (standard input)")
    # `--json-out ref.txt` would overwrite the reference: every output checked before any is written
    check_output_files({"--align": align_path, "--json-out": json_out, "--summary-out": summary_out},
                       {"--ref": ref_path, "--hyp": hyp_path, "--hotwords": hotwords_path})
    result = score_files(ref_path, hyp_path)
    _report_mismatches(result, hyp_path)
    phrases = None
    if hotwords_path:   # validated before anything is written
        from kocall.hotwords import hotword_counts, read_hotwords

        phrases = [hw.phrase for hw in read_hotwords(hotwords_path)]
    if align_path:
        write_alignment(align_path, result)
    payload = json.dumps(result.to_json(), ensure_ascii=False, indent=1)
    if json_out:
        with atomic_write(json_out) as handle:
            handle.write(payload + "\n")
    if summary_out:
        with atomic_write(summary_out) as handle:
            handle.write(result.summary() + "\n")
    click.echo(payload if as_json else result.summary())
    if phrases is not None:
        counts = hotword_counts({u.utt_id: u.ref for u in result.per_utt}, {u.utt_id: u.hyp for u in result.per_utt},
                                phrases)
        click.echo(counts.summary())


# ---------------------------------------------------------------- RESULTS.md (steps/score.sh)

def decode_dirs(amdir: Path, sets: list[str]) -> list[tuple[str, str, Path]]:
    """(set, decoder suffix, dir) for every AMDIR/decode_<set>_<suffix>/hyp.txt.

    A directory belongs to the longest matching set name, so that with sets `dev` and
    `dev_other`, decode_dev_other_beam is dev_other's, not dev's decoder `other_beam`.
    """
    found = []
    for path in sorted(amdir.glob("decode_*")):
        if not (path / "hyp.txt").is_file():
            continue
        rest = path.name[len("decode_"):]
        owners = [s for s in sets if rest.startswith(s + "_")]
        if owners:
            owner = max(owners, key=len)
            found.append((owner, rest[len(owner) + 1:], path))
    return found


def _decode_info(path: Path) -> dict:
    info_file = path / "decode_info.json"
    if not info_file.is_file():
        return {}
    from kocall.fileio import read_json

    return read_json(info_file)


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def score_decodes(amdir: str | os.PathLike, data: str | os.PathLike, sets: list[str]) -> list[dict]:
    """Score every decode dir of `sets`, write its score files, and AMDIR/RESULTS.md."""
    amdir, data = Path(amdir), Path(data)
    rows = []
    for set_name, decoder, path in decode_dirs(amdir, sets):
        result = score_files(data / set_name / "text", path / "hyp.txt")
        _report_mismatches(result, str(path / "hyp.txt"))
        write_alignment(path / "align.txt", result)
        with atomic_write(path / "score.json") as handle:
            handle.write(json.dumps(result.to_json(), ensure_ascii=False, indent=1) + "\n")
        with atomic_write(path / "score.txt") as handle:
            handle.write(result.summary() + "\n")
        info = _decode_info(path)
        rows.append({"set": set_name, "decoder": decoder, "crr": result.crr, "cer": result.cer,
                     "wer": result.wer, "utts": result.utts, **{k: info.get(k) for k in
                                                                 ("beam", "lm", "lm_weight", "word_bonus")}})
        rows[-1].update(hotword_row(data / set_name, info, result))
    if not rows:
        raise DataError(f"no decode_<set>_*/hyp.txt under '{amdir}' for sets {' '.join(sets)}")
    lines = ["| set | decoder | CRR | CER | WER | utts | beam | LM | lm_weight | word_bonus |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['set']} | {row['decoder']} | {row['crr']:.2f} | {row['cer']:.2f} | "
                     f"{row['wer']:.2f} | {row['utts']} | {_cell(row['beam'])} | {_cell(row['lm'])} | "
                     f"{_cell(row['lm_weight'])} | {_cell(row['word_bonus'])} |")
    with atomic_write(amdir / "RESULTS.md") as handle:
        handle.write(f"# Results: {amdir.name}\n\nCRR = (1 - CER) x 100, spaces removed; "
                     "CER and WER in %.\n\n" + "\n".join(lines) + "\n" + hotword_table(rows))
    return rows


@click.command("score-decodes")
@click.argument("amdir", type=click.Path(file_okay=False, exists=True))
@click.argument("data", type=click.Path(file_okay=False, exists=True))
@click.argument("sets", nargs=-1, required=True)
def score_decodes_cmd(amdir: str, data: str, sets: tuple[str, ...]) -> None:
    """Score AMDIR/decode_<set>_*/hyp.txt against DATA/<set>/text; write AMDIR/RESULTS.md."""
    for row in score_decodes(amdir, data, list(sets)):
        click.echo(f"{row['set']:>13} {row['decoder']:<13} CRR {row['crr']:.2f} | CER {row['cer']:.2f} | "
                   f"WER {row['wer']:.2f}" + (f" | {row['hotword_summary']}" if row.get("hotwords") else ""))

