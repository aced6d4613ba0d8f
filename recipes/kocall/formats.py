"""Output formats of `kocall decode --format`: text, json, ctm, srt (from kocall.transcribe.Transcript).

* text: Kaldi `utt text`, one line per recording (a two-channel one: `utt-<label>` per channel).
* json: one JSON object per recording and line (JSON Lines): source, duration, channels, text,
  segments with their words (word, start, end, confidence).
* ctm: NIST/Kaldi CTM, one word per line: `utt channel start duration word confidence`; the
  channel is `1` for mono, `A`/`B` for the two channels (Switchboard's convention).
* srt: SubRip cues of at most CUE_SECONDS and CUE_CHARS, cut at pauses over CUE_GAP_S; a
  two-channel recording's cues start with `[label]`. One recording per file.

With `itn` (kocall.itn), the texts of text, json and srt are in written form (35,000원);
a CTM, and the words of json, stay as recognised (one line per recognised word).
"""
from __future__ import annotations

import json

from kocall.transcribe import Transcript, Word

FORMATS = ("text", "json", "ctm", "srt")
EXTENSIONS = {"text": "txt", "json": "json", "ctm": "ctm", "srt": "srt"}
CUE_SECONDS = 7.0
CUE_CHARS = 42
CUE_GAP_S = 0.8


def _written(text: str, itn: bool) -> str:
    if not itn:
        return text
    from kocall.itn import inverse_normalize

    return inverse_normalize(text)


def text_lines(utt_id: str, transcript: Transcript, itn: bool = False) -> list[tuple[str, str]]:
    """(key, text) rows of the Kaldi text format."""
    if len(transcript.channels) == 1:
        return [(utt_id, _written(transcript.text, itn))]
    return [(f"{utt_id}-{label}", _written(transcript.channel_text(label), itn)) for label in transcript.channels]


def json_line(utt_id: str, transcript: Transcript, itn: bool = False) -> str:
    row = {"id": utt_id, **transcript.to_dict()}
    if itn:
        row["text"] = _written(row["text"], itn)
        for segment in row["segments"]:
            segment["text"] = _written(segment["text"], itn)
    return json.dumps(row, ensure_ascii=False)


def ctm_lines(utt_id: str, transcript: Transcript) -> list[str]:
    names = ["1"] if len(transcript.channels) == 1 else ["A", "B"]
    rows = []
    for segment in transcript.segments:
        channel = names[transcript.channels.index(segment.channel)]
        for w in segment.words:
            rows.append((w.start, channel, f"{utt_id} {channel} {w.start:.2f} {max(w.end - w.start, 0.01):.2f} "
                                           f"{w.word} {w.confidence:.2f}"))
    return [line for *_, line in sorted(rows, key=lambda r: (r[0], r[1]))]


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt_cues(transcript: Transcript, itn: bool = False) -> list[tuple[float, float, str]]:
    """(start, end, text) cues: a segment's words grouped up to CUE_SECONDS / CUE_CHARS, cut at pauses."""
    cues = []
    two = len(transcript.channels) > 1
    for segment in transcript.segments:
        group: list[Word] = []
        for w in segment.words + [None]:
            if group and (w is None or w.end - group[0].start > CUE_SECONDS or w.start - group[-1].end > CUE_GAP_S
                          or len(" ".join(x.word for x in group)) + 1 + len(w.word) > CUE_CHARS):
                text = _written(" ".join(x.word for x in group), itn)
                cues.append((group[0].start, group[-1].end, f"[{segment.channel}] {text}" if two else text))
                group = []
            if w is not None:
                group.append(w)
    return sorted(cues)


def srt_text(transcript: Transcript, itn: bool = False) -> str:
    blocks = [f"{i}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n" for i, (a, b, text) in
              enumerate(srt_cues(transcript, itn), 1)]
    return "\n".join(blocks)


def render(fmt: str, results: list[tuple[str, Transcript]], itn: bool = False) -> str:
    """The whole output of `fmt` for (utt_id, transcript) pairs (text: sorted by id, as Kaldi wants)."""
    if fmt == "text":
        rows = sorted((row for utt, t in results for row in text_lines(utt, t, itn)),
                      key=lambda r: r[0].encode("utf-8"))
        return "".join(f"{key} {text}".rstrip() + "\n" for key, text in rows)
    if fmt == "json":
        return "".join(json_line(utt, t, itn) + "\n" for utt, t in results)
    if fmt == "ctm":
        return "".join(line + "\n" for utt, t in results for line in ctm_lines(utt, t))
    if fmt == "srt":
        return "\n".join(srt_text(t, itn) for _, t in results)
    raise ValueError(f"unknown format '{fmt}'")
