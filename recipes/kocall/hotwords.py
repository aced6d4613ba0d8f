"""Hotwords: contextual biasing lists for the CTC beam search, and their recall.

A hotwords file holds one phrase per line, with an optional per-phrase weight after a
colon (sherpa-onnx's format):

    명동점 :2.5
    들깨칼국수

Blank lines and lines starting with `#` are skipped. Phrases are normalised by
`kocall.text_norm.normalize_text` (the one policy for targets, LM text and references) and
tokenised into the model's units (`Tokenizer.encode`); a phrase holding a character the
model cannot output is an error naming the phrase, the line and the file. The weight is the
bonus per character of the phrase (natural-log units, the acoustic score's; a space counts as
one), spread evenly over the units that spell it: with syllable units it is the bonus per
unit, with jamo (about 2.4 per syllable) each unit gets its share, so the same list boosts a
name as much whatever the units. A phrase without a weight gets the global `--hotword-weight`.
(Per unit, a jamo list at the syllable weight boosted every 1-2 jamo prefix of a name so hard
that those partial matches crowded the beam: the ordinary test set lost 0.27 CRR at beam 16,
0.04 at beam 32.) The compiled form is `kocall_kernels.ctc_decoder.context_graph.
ContextGraph` (an Aho-Corasick automaton in flat tables; scoring rules in its docstring).

A phrase's first unit earns nothing; the others share the phrase's bonus evenly
(`unit_bonuses`), so a completed phrase keeps the same total. A one-unit match (any word
that starts like a name) is by far the commonest partial match, and boosting it was what
still cost ordinary speech: on the default jamo model the ordinary test set lost 0.16 CRR
with the test_hotwords list loaded (4 utterances; 부대찌개 -> 호백시개 under 호두과자), and
none with the first unit held back, while recall rose from 94.2 % to 95.5 %.

LM compensation (`--hotword-lm-compensation c`, conf/decode.yaml `hotword_lm_compensation`):
a hotword is by definition a phrase the n-gram LM has not seen, so the LM charges it far
more per unit than ordinary text, and a fixed bonus either loses to that charge or, raised
until it wins, biases every other phrase into false alarms. With c > 0 each phrase's bonus
per unit also carries c x (the LM's per-unit cost of the phrase) x the decoder's LM weight:
the phrase costs c less of what the LM charges it, each phrase by its own surprise. The cost
is the phrase's log-probability from the LM's empty context (no `<s>`, no `</s>`), so it does
not depend on where the phrase is said. Being a per-phrase weight, it keeps the automaton's
rules: an abandoned match gives it back.

Scoring (`hotword_counts`): with spaces removed from references, hypotheses and phrases (the
CRR rule), an occurrence of a phrase in a reference counts as recognised when the hypothesis
of that utterance holds it too (per utterance, min of the two counts); every occurrence in a
hypothesis beyond the reference's count is a false alarm. Recall = recognised / occurrences.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from kocall.errors import DataError
from kocall.fileio import atomic_write
from kocall.options import BOUNDS
from kocall.text_norm import normalize_text

HOTWORDS_FILE = "hotwords"  # a data dir's own list: DATA/<set>/hotwords
DEFAULT_WEIGHT = 1.5        # sherpa-onnx's default hotword score per (syllable) unit
# The CLI's default, and the decode stage's without a hotword dev set. It was set by a sweep on
# the synthetic test_hotwords (char model: recall 25 % without compensation, 45 % at 0.25); the
# recipe now tunes weight and compensation on dev_hotwords instead (conf/decode.yaml
# hotword_grid; recipes/kocall/conformer_ctc/RESULTS.md, "Hotword settings tuned on dev_hotwords").
DEFAULT_LM_COMPENSATION = 0.25


@dataclass(frozen=True)
class Hotword:
    phrase: str          # normalised
    weight: float | None  # bonus per character; None: the global weight
    line: int


def read_hotwords(path: str | os.PathLike) -> list[Hotword]:
    """Parse a hotwords file (see the module docstring); one-line errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"hotwords file '{path}' is a folder, not a list (give the file inside it)")
    if not path.is_file():
        raise DataError(f"hotwords file '{path}' is missing" if not path.exists() else
                        f"hotwords file '{path}' is not a regular file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"hotwords file '{path}': not UTF-8 text ({exc.reason})") from None
    out: list[Hotword] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        weight = None
        match = re.fullmatch(r"(.*?)\s*:\s*(\S+)", line)
        if match and match.group(1):
            try:
                weight = float(match.group(2))
            except ValueError:
                raise DataError(f"hotwords file '{path}' line {lineno}: weight '{match.group(2)}' "
                                f"of '{match.group(1)}' is not a number") from None
            low, high, _ = BOUNDS["hotword_weight"]
            if not math.isfinite(weight) or not 0 < weight <= high:
                raise DataError(f"hotwords file '{path}' line {lineno}: weight of '{match.group(1)}' "
                                f"must be a positive number, at most {high:g}, not {match.group(2)}")
            line = match.group(1)
        phrase = normalize_text(line)
        if not phrase:
            raise DataError(f"hotwords file '{path}' line {lineno}: phrase '{line}' is empty after normalisation")
        dropped = dropped_letters(line)
        if dropped:   # 'ㅋㅋ점' would become '점', and boost (and count) every 점
            raise DataError(f"hotwords file '{path}' line {lineno}: phrase '{line}' would be read as '{phrase}': "
                            f"normalisation drops {' '.join(dropped)}; write the phrase as it is spoken")
        out.append(Hotword(phrase, weight, lineno))
    return out


def dropped_letters(text: str) -> list[str]:
    """The letters and symbols of `text` (Unicode L* and So: lone jamo, hanja, emoji) that
    normalisation deletes outright, each once: a phrase losing them is another phrase."""
    import unicodedata

    return list(dict.fromkeys(ch for ch in text if unicodedata.category(ch)[0] == "L" or unicodedata.category(ch) == "So"
                              if not normalize_text(ch).strip()))


def lm_cost(ids: list[int], lm_tables) -> float:
    """The n-gram LM's cost of a phrase, natural log, from the empty context."""
    log10_total, _ = lm_tables.score_sentence(ids, bos=False, eos=False)
    return -log10_total * math.log(10)


def compile_hotwords(path: str | os.PathLike, tokenizer, weight: float, lm_tables=None, lm_weight: float = 0.0,
                     lm_compensation: float = 0.0):
    """ContextGraph of a hotwords file over `tokenizer`'s units; `weight`: bonus per character
    of phrases without their own; with `lm_tables`, `lm_compensation` x `lm_weight` x the
    phrase's LM cost is added to its bonus, which `unit_bonuses` lays out over its units (see
    the module docstring)."""
    from kocall_kernels.ctc_decoder.context_graph import ContextGraph

    for value, name in ((weight, "hotword_weight"), (lm_compensation, "hotword_lm_compensation")):
        low, high, _ = BOUNDS[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high) or \
                (name == "hotword_weight" and value <= 0):
            what = "hotword weight" if name == "hotword_weight" else "hotword LM compensation"
            raise DataError(f"the {what} must be a number in ({low:g}, {high:g}], not {value}" if name == "hotword_weight"
                            else f"the {what} must be a number from {low:g} to {high:g}, not {value}")
    compensate = lm_tables is not None and lm_compensation > 0 and lm_weight > 0
    phrases = []
    for hw in read_hotwords(path):
        ids = tokenizer.encode(hw.phrase)
        if tokenizer.unk_id in ids:
            unknown = list(dict.fromkeys(ch for ch in hw.phrase if not ch.isspace() and tokenizer.unk_count(ch)))
            raise DataError(f"hotwords file '{path}' line {hw.line}: phrase '{hw.phrase}' has characters the "
                            f"model's units cannot spell: {' '.join(unknown) or '(unknown piece)'}")
        total = (hw.weight if hw.weight is not None else weight) * len(hw.phrase)
        if compensate:
            total += lm_compensation * lm_weight * lm_cost(ids, lm_tables)
        phrases.append((ids, unit_bonuses(total, len(ids))))
    return ContextGraph.build(phrases, len(tokenizer))


def unit_bonuses(total: float, length: int) -> list[float]:
    """A phrase's bonus `total` over its `length` units: the first unit earns nothing and the
    others share it evenly (a one-unit phrase earns it all on its unit)."""
    if length == 1:
        return [total]
    return [0.0] + [total / (length - 1)] * (length - 1)


def copy_hotwords(source: str | os.PathLike, data_set_dir: str | os.PathLike) -> bool:
    """Copy a corpus split's hotwords file into its data dir (atomic); False when there is none."""
    source = Path(source)
    if not source.is_file():
        return False
    read_hotwords(source)  # a bad list fails here, not at decoding
    with atomic_write(Path(data_set_dir) / HOTWORDS_FILE) as handle:
        handle.write(source.read_text(encoding="utf-8-sig"))
    return True


# ---------------------------------------------------------------------------- scoring

@dataclass
class HotwordCounts:
    occurrences: int      # phrase occurrences in the references
    recognised: int       # ... also in the hypothesis of the same utterance
    false_alarms: int     # occurrences in hypotheses beyond the reference's count
    phrases: int

    @property
    def recall(self) -> float:
        return 100.0 * self.recognised / self.occurrences if self.occurrences else float("nan")

    def summary(self) -> str:
        recall = f"{self.recall:.2f}" if self.occurrences else "-"
        return (f"hotword recall {recall} ({self.recognised}/{self.occurrences}) | "
                f"false alarms {self.false_alarms} | phrases {self.phrases}")


def hotword_counts(refs: Mapping[str, str], hyps: Mapping[str, str], phrases: list[str]) -> HotwordCounts:
    """Recall and false alarms of `phrases` (see the module docstring); missing hypotheses are empty."""
    keys = sorted({"".join(p.split()) for p in phrases if p.strip()})
    occurrences = recognised = false_alarms = 0
    for utt, ref in refs.items():
        ref_c = "".join(ref.split())
        hyp_c = "".join(hyps.get(utt, "").split())
        for key in keys:
            in_ref, in_hyp = ref_c.count(key), hyp_c.count(key)
            occurrences += in_ref
            recognised += min(in_ref, in_hyp)
            false_alarms += max(0, in_hyp - in_ref)
    return HotwordCounts(occurrences, recognised, false_alarms, len(keys))


def hotword_row(set_dir: Path, info: Mapping, result) -> dict:
    """Hotword fields of a decode's RESULTS row: the list the decode was biased with
    (decode_info.json `hotwords`), else the set's own DATA/<set>/hotwords; {} when neither."""
    list_path = Path(info["hotwords"]) if info.get("hotwords") else set_dir / HOTWORDS_FILE
    if not list_path.is_file():
        return {}
    refs = {s.utt_id: s.ref for s in result.per_utt}
    hyps = {s.utt_id: s.hyp for s in result.per_utt}
    counts = hotword_counts(refs, hyps, [hw.phrase for hw in read_hotwords(list_path)])
    return {"hotwords": str(list_path), "hotword_weight": info.get("hotword_weight"),
            "hotword_phrases": counts.phrases, "hotword_occurrences": counts.occurrences,
            "hotword_recognised": counts.recognised, "hotword_recall": counts.recall,
            "hotword_false_alarms": counts.false_alarms, "hotword_summary": counts.summary()}


def hotword_table(rows: list[dict]) -> str:
    """The RESULTS.md section for rows with hotword fields ('' when none has)."""
    rows = [r for r in rows if r.get("hotwords")]
    if not rows:
        return ""
    lines = ["", "## Hotwords", "",
             "Recall: phrase occurrences in the references that the hypothesis of the same utterance holds "
             "(spaces removed); false alarms: occurrences in hypotheses beyond the reference's.", "",
             "| set | decoder | list | phrases | hotword weight | occurrences | recall | false alarms | CRR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        weight = "-" if r["hotword_weight"] is None else f"{r['hotword_weight']:g}"
        recall = f"{r['hotword_recall']:.2f}" if r["hotword_occurrences"] else "-"
        lines.append(f"| {r['set']} | {r['decoder']} | {r['hotwords']} | {r['hotword_phrases']} | {weight} | "
                     f"{r['hotword_occurrences']} | {recall} | {r['hotword_false_alarms']} | {r['crr']:.2f} |")
    return "\n".join(lines) + "\n"
