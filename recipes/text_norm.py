"""Korean transcript normalisation: ONE policy for AM targets, LM text and scoring.

(First cut: NFC, white space and punctuation. The complete policy -- digits, Latin
letters, noise tags -- is documented in the README's "Text normalisation" section.)
"""
from __future__ import annotations

import re
import unicodedata

import click

PUNCT_MODES = ("strip", "keep-final")
SENTENCE_FINAL = "?.!"
_PUNCT = re.compile(r"[^\w\s]", flags=re.UNICODE)


def normalize_text(text: str, punct: str = "strip") -> str:
    """Normalise one transcript. `punct` is 'strip' or 'keep-final'."""
    if punct not in PUNCT_MODES:
        raise ValueError(f"punct must be one of {PUNCT_MODES}, not {punct!r}")
    text = unicodedata.normalize("NFC", text)
    final = ""
    stripped = text.rstrip()
    if punct == "keep-final" and stripped and stripped[-1] in SENTENCE_FINAL:
        final = stripped[-1]
    text = _PUNCT.sub(" ", text).replace("_", " ")
    text = " ".join(text.split())
    return text + final if text else text


@click.command("normalize")
@click.option("--punct", type=click.Choice(PUNCT_MODES), default="strip", show_default=True)
@click.option("--kaldi/--plain", default=True, show_default=True, help="lines are 'utt_id text' (Kaldi text)")
@click.argument("input_file", type=click.File("r", encoding="utf-8"), default="-")
def normalize_cmd(punct: str, kaldi: bool, input_file) -> None:
    """Normalise transcripts from INPUT_FILE (or stdin) to stdout."""
    for line in input_file:
        line = line.rstrip("\n")
        if kaldi:
            utt, _, text = line.partition(" ")
            click.echo(f"{utt} {normalize_text(text, punct)}")
        else:
            click.echo(normalize_text(line, punct))
