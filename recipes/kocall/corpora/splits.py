"""Held-out-speaker dev split, for corpora that ship only a training set."""
from __future__ import annotations

import random

from kocall.datadir import Utterance
from kocall.errors import DataError


def split_by_speaker(utts: list[Utterance], dev_fraction: float, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """Split into (train, dev) with no speaker in both; deterministic for (utterances, seed).

    Speakers are shuffled (sorted first, so input order does not matter) and moved to dev until
    dev holds at least `dev_fraction` of the utterances. At least one speaker goes to each side.
    Where every utterance is its own speaker this is a plain random utterance split.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise DataError(f"dev fraction must be between 0 and 1, got {dev_fraction}")
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utts:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise DataError(f"cannot hold out speakers for a dev set: only {len(speakers)} speaker(s) "
                        f"({', '.join(speakers) or 'none'}); provide a dev set")
    random.Random(seed).shuffle(speakers)
    target = dev_fraction * len(utts)
    dev_speakers: set[str] = set()
    dev_count = 0
    for speaker in speakers[:-1]:  # the last one always stays in train
        if dev_count >= target:
            break
        dev_speakers.add(speaker)
        dev_count += len(by_speaker[speaker])
    train = [u for u in utts if u.speaker not in dev_speakers]
    dev = [u for u in utts if u.speaker in dev_speakers]
    return train, dev
