"""The synthetic corpus's test_hotwords split: new names no other sentence holds, a hotwords list
with distractors that are never said, and train/dev/test/LM text unchanged by its presence."""
from __future__ import annotations

import dataclasses

import pytest

from kocall.synth.generate import HOTWORD_SPLIT, SPLITS, SynthConfig, build_labels, plan_corpus
from kocall.synth.grammar import HOTWORD_SLOT_NAMES


@pytest.fixture(scope="module")
def plans():
    cfg = SynthConfig(train_hours=0.4, dev_minutes=3, test_minutes=3, lm_sentences=3000, hotword_minutes=3)
    return plan_corpus(cfg), plan_corpus(dataclasses.replace(cfg, hotword_minutes=0))


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_other_splits_lm_text_and_labels_do_not_change(plans):
    with_split, without = plans
    base = [(j.utt_id, j.split, j.text, j.speaker) for j in with_split.jobs if j.split in SPLITS]
    assert base == [(j.utt_id, j.split, j.text, j.speaker) for j in without.jobs]
    assert with_split.lm_text == without.lm_text
    assert build_labels([j.text for j in with_split.jobs if j.split in SPLITS]) == \
        build_labels([j.text for j in without.jobs])
    assert not without.hotwords and all(j.split != HOTWORD_SPLIT for j in without.jobs)


def test_names_are_new_said_and_spelt_with_training_syllables(plans):
    plan = plans[0]
    said = [squeeze(j.text) for j in plan.jobs if j.split == HOTWORD_SPLIT]
    others = [squeeze(j.text) for j in plan.jobs if j.split != HOTWORD_SPLIT] + [squeeze(t) for t in plan.lm_text]
    train_chars = {ch for j in plan.jobs if j.split == "train" for ch in j.text}
    assert len(said) > 20 and set(plan.hotwords) <= {n for names in HOTWORD_SLOT_NAMES.values() for n in names}
    assert len(set(plan.hotwords)) == len(plan.hotwords)
    for phrase in plan.hotwords:
        assert not any(phrase in text for text in others), phrase       # in no train/dev/test/LM sentence
        assert set(phrase) <= train_chars, phrase                        # the AM's units spell it
    names = {n for kind in plan.hotword_names.values() for n in kind}
    in_split = [p for p in plan.hotwords if any(p in text for text in said)]
    distractors = [p for p in plan.hotwords if p not in in_split]
    assert set(in_split) <= names and len(in_split) >= 10 and distractors  # (the full corpus: 36 and 13)
    # every sentence of the split names at least one listed phrase
    assert all(any(p in text for p in in_split) for text in said)


def test_dev_hotwords_has_its_own_names_dev_voices_and_leaves_test_hotwords_as_it_was():
    from kocall.synth.generate import HOTWORD_DEV_SPLIT

    cfg = SynthConfig(train_hours=0.4, dev_minutes=3, test_minutes=3, lm_sentences=3000, hotword_minutes=3,
                      hotword_dev_minutes=2)
    with_dev, without_dev = plan_corpus(cfg), plan_corpus(dataclasses.replace(cfg, hotword_dev_minutes=0))
    assert [(j.utt_id, j.split, j.text, j.speaker) for j in with_dev.jobs if j.split != HOTWORD_DEV_SPLIT] == \
        [(j.utt_id, j.split, j.text, j.speaker) for j in without_dev.jobs]
    assert with_dev.hotwords == without_dev.hotwords and not without_dev.dev_hotwords
    dev_said = [squeeze(j.text) for j in with_dev.jobs if j.split == HOTWORD_DEV_SPLIT]
    test_said = [squeeze(j.text) for j in with_dev.jobs if j.split == HOTWORD_SPLIT]
    assert len(dev_said) > 10 and len(with_dev.dev_hotwords) >= 4   # (the full corpus: 23)
    assert not set(with_dev.dev_hotwords) & set(with_dev.hotwords)           # disjoint lists
    assert not any(p in text for p in with_dev.dev_hotwords for text in test_said)   # never said in the test split
    assert not any(p in text for p in with_dev.hotwords for text in dev_said)
    dev_voices = {s.speaker_id for s in with_dev.speakers["dev"]}
    assert {j.speaker.speaker_id for j in with_dev.jobs if j.split == HOTWORD_DEV_SPLIT} <= dev_voices
    assert all(any(p in text for p in with_dev.dev_hotwords) for text in dev_said)
