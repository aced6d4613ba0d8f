"""Synthetic speakers: espeak-ng's Korean voice `ko` with voice variants, rates and pitches.

A speaker is (variant, rate in words/min, pitch 0-99, word gap in 10 ms units); `make_speakers` draws them deterministically. Splits hold out whole *variants*
(not just rate/pitch settings), so a test voice really is a voice the model never heard.

`synthesize(text, speaker)` runs `espeak-ng -v ko+VARIANT -s RATE -p PITCH -g GAP --stdout
TEXT` and returns float32 int16-scale samples at espeak's 22.05 kHz.
"""
from __future__ import annotations

import io
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass

import numpy as np

from kocall.errors import AudioError, KocallError

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050

# espeak-ng variants that give an intelligible Korean voice (whisper and novelty variants
# such as Demonic or the robots are left out: nothing like them reaches a call centre).
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "grandma", "grandpa",
    "Alicia", "Andrea", "Annie", "adam", "Alex", "Andy", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "ed", "edward", "Gene", "gustave", "iven", "john",
    "Lee", "linda", "max", "Michael", "michel", "Mike", "norbert", "paul", "quincy", "rob",
    "robert", "sandro", "shelby", "steph", "travis", "victor", "zac", "anika",
)


@dataclass(frozen=True)
class Speaker:
    speaker_id: str
    variant: str
    rate: int          # words per minute (espeak -s)
    pitch: int         # 0-99 (espeak -p)
    word_gap: int      # extra pause between words, 10 ms units (espeak -g)

    @property
    def voice(self) -> str:
        return f"ko+{self.variant}"

    def to_dict(self) -> dict:
        return asdict(self)


def make_speakers(variants: list[str], rng: random.Random, per_variant: int = 1,
                  rate: tuple[int, int] = (140, 200), pitch: tuple[int, int] = (25, 75),
                  first_index: int = 1) -> list[Speaker]:
    """`per_variant` speakers for each variant, with random rate, pitch and word gap."""
    speakers = []
    index = first_index
    for variant in variants:
        for _ in range(per_variant):
            speakers.append(Speaker(
                speaker_id=f"spk{index:03d}", variant=variant, rate=rng.randint(*rate),
                pitch=rng.randint(*pitch), word_gap=rng.randint(0, 3)))
            index += 1
    return speakers


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def espeak_command(text: str, speaker: Speaker) -> list[str]:
    return [ESPEAK, "-v", speaker.voice, "-s", str(speaker.rate), "-p", str(speaker.pitch),
            "-g", str(speaker.word_gap), "--stdout", text]


def synthesize(text: str, speaker: Speaker, utt_id: str | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with `speaker`; (float32 int16-scale samples, sample rate)."""
    import soundfile as sf

    if not espeak_available():
        raise KocallError(f"{ESPEAK} is not installed; the synthetic corpus needs it (apt-get install espeak-ng)")
    proc = subprocess.run(espeak_command(text, speaker), capture_output=True)
    label = f"<{ESPEAK} {speaker.voice}>"
    if proc.returncode != 0 or not proc.stdout:
        raise AudioError(f"utterance '{utt_id}' file '{label}': {ESPEAK} failed "
                         f"({proc.stderr.decode(errors='replace').strip()[-200:]})")
    # espeak streams WAV with an unknown length in the header; libsndfile copes with that.
    with sf.SoundFile(io.BytesIO(proc.stdout)) as snd:
        samples = snd.read(dtype="int16")
        rate = snd.samplerate
    if samples.ndim != 1 or samples.size == 0:
        raise AudioError(f"utterance '{utt_id}' file '{label}': {ESPEAK} produced no mono audio")
    return samples.astype(np.float32), rate
