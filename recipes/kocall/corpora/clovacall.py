"""ClovaCall JSON: `[{"wav": "x.wav", "text": "...", "speaker_id": "..."}, ...]`.

`wav` is relative to the wav directory, which defaults to the directory holding the JSON
(pass `--wav-dir` when the audio lies elsewhere, e.g. ClovaCall's `wavs_train/`). A record
without `speaker_id` is its own speaker. Utterance ids are `<speaker>-<wav stem>`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kocall.corpora import check_unique, normalized_or_fail, speaker_prefixed
from kocall.datadir import Utterance
from kocall.errors import AudioError, DataError, where
from kocall.fileio import read_json


def read_clovacall(json_path: str | os.PathLike, wav_dir: str | os.PathLike | None = None,
                   punct: str = "strip") -> list[Utterance]:
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(f"ClovaCall manifest '{json_path}' is missing")
    wav_root = Path(wav_dir) if wav_dir else json_path.parent
    try:
        records = read_json(json_path, "ClovaCall manifest")
    except json.JSONDecodeError as exc:
        raise DataError(f"file '{json_path}': not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise DataError(f"file '{json_path}': expected a JSON list of {{wav, text, speaker_id}} records")
    utts = []
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("wav"), str) \
                or not isinstance(record.get("text"), str):
            raise DataError(f"file '{json_path}' record {number}: needs string fields 'wav' and 'text'")
        stem = Path(record["wav"]).stem
        speaker = str(record.get("speaker_id") or "").strip() or stem
        utt_id = speaker_prefixed(speaker.replace(" ", "_"), stem)
        wav = (wav_root / record["wav"]).resolve()
        if not wav.is_file():
            raise AudioError(f"{where(utt_id, str(wav))}: audio file is missing (record {number} of '{json_path}')")
        text = normalized_or_fail(utt_id, json_path, record["text"], punct)
        utts.append(Utterance(utt_id=utt_id, speaker=speaker.replace(" ", "_"), wav=str(wav), text=text))
    if not utts:
        raise DataError(f"file '{json_path}': no records")
    check_unique(utts, json_path)
    return utts
