"""`kocall decode` of recording files through kocall.transcribe: model packages, word times,
--format json|ctm|srt, long and two-channel recordings (the VAD path).

decode_cmd (kocall.decode) sends WAV inputs here when one of these is asked for; data dirs,
feature inputs and N-best lists stay on its utterance path. A file that cannot be decoded is
reported on one line naming it; the others still decode, and the exit status is 1 at the end.
Outputs are written whole or not at all (kocall.fileio.atomic_write).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import click

from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_write, check_output_dir


def explicit_settings(ctx: click.Context, names: Sequence[str]) -> dict[str, Any]:
    """The decoding options given on the command line (not click's defaults): they override a
    package's settings; the others take the package's."""
    from click.core import ParameterSource

    return {name: ctx.params[name] for name in names
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}


def needs_file_path(wavs: Sequence[str], fmt: str, out_dir: str | None, max_seconds: float,
                    segmentation: str = "auto") -> bool:
    """Whether WAV inputs must go through the transcriber: another format than text, one file per
    input, VAD segmentation asked for, or a recording the utterance path refuses (two channels,
    longer than max_seconds)."""
    if not wavs:
        return False
    if fmt != "text" or out_dir or segmentation != "auto":
        return True
    import soundfile as sf

    for wav in wavs:
        try:
            info = sf.info(wav)
        except (RuntimeError, OSError, ValueError):
            continue   # the utterance path reports it, naming the file
        if info.channels > 1 or info.frames / max(info.samplerate, 1) > max_seconds:
            return True
    return False


def check_outputs(fmt: str, out: str | None, out_dir: str | None, n_inputs: int,
                  inputs: dict[str, str | os.PathLike | None]) -> None:
    if out and out != "-" and out_dir:
        raise KocallError("give --out or --out-dir, not both")
    if fmt == "srt" and n_inputs > 1 and not out_dir:
        raise KocallError("--format srt holds one recording: give --out-dir DIR for several (DIR/<id>.srt each)")
    if out_dir:
        check_output_dir(out_dir, inputs)


def decode_files(wavs: Sequence[str], model: str, fmt: str, out: str | None, out_dir: str | None,
                 transcriber_options: dict[str, Any], itn: bool = False) -> None:
    """Transcribe WAV files and write `fmt`; bad files are reported by name and skipped."""
    from kocall.datadir import utt_id_for_file
    from kocall.formats import EXTENSIONS, render
    from kocall.transcribe import Transcriber

    ids = [utt_id_for_file(w) for w in wavs]
    seen: dict[str, str] = {}
    for utt_id, wav in zip(ids, wavs):
        if utt_id in seen:
            raise DataError(f"utterance '{utt_id}' file '{wav}': duplicate utterance id (also '{seen[utt_id]}')")
        seen[utt_id] = wav
    transcriber = Transcriber(model, **transcriber_options)
    results = transcriber.transcribe_batch(list(wavs), errors="return")
    good, failed = [], []
    for utt_id, result in zip(ids, results):
        if isinstance(result, KocallError):
            click.echo(f"kocall decode: skipped: {result.format_message()}", err=True)
            failed.append(utt_id)
        else:
            good.append((utt_id, result))
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for utt_id, result in good:
            with atomic_write(Path(out_dir) / f"{utt_id}.{EXTENSIONS[fmt]}") as handle:
                handle.write(render(fmt, [(utt_id, result)], itn))
    elif out and out != "-":
        with atomic_write(out) as handle:
            handle.write(render(fmt, good, itn))
    else:
        click.echo(render(fmt, good, itn), nl=False)
    if failed:
        raise KocallError(f"{len(failed)} of {len(wavs)} utterances failed: {' '.join(failed)}")
