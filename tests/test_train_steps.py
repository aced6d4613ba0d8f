"""Fixed-length training (training.max_steps) and determinism: the same seed and thread count
give the same weights, bit for bit, with dropout and SpecAugment on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kocall.trainer import RunOptions, run_training
from tests.test_train import TEXTS, make_data_dir, make_lang, write_conf

SPEC_AUGMENT = {"enabled": True, "num_freq_masks": 2, "max_freq_width": 4, "time_mask_ratio": 0.05,
                "max_time_masks": 2, "max_time_width_ratio": 0.1, "max_time_width": 10, "time_warp": 0}


@pytest.fixture
def corpus(tmp_path: Path) -> dict:
    return {"train": make_data_dir(tmp_path, TEXTS, seed=0), "lang": make_lang(tmp_path), "root": tmp_path}


def train(corpus: dict, conf: Path, exp: str, seed: int = 3, threads: int = 2) -> Path:
    run_training(RunOptions(model_conf=str(conf), train_dir=str(corpus["train"]), dev_dir=str(corpus["train"]),
                            lang_dir=str(corpus["lang"]), exp_dir=str(corpus["root"] / exp), threads=threads,
                            seed=seed, progress=False))
    return corpus["root"] / exp


def test_max_steps_fixes_the_run_and_the_schedule_spans_it(corpus: dict) -> None:
    from kocall.dataset import make_batches

    lengths = [int(line.split()[1]) for line in (corpus["train"] / "utt2num_frames").read_text().splitlines()]
    per_epoch = len(make_batches(lengths, 200, 3, 0, jitter=0.0))
    assert per_epoch >= 2
    steps = 2 * per_epoch + 1   # ends one step into the third epoch, whatever `epochs` says
    conf = write_conf(corpus["root"] / "steps.yaml", batching={"max_frames": 200, "jitter": 0.0},
                      schedule={"warmup_steps": 2, "final_lr_ratio": 0.1},
                      training={"epochs": 1, "max_steps": steps, "log_every": 1, "avg": 2})
    exp = train(corpus, conf, "steps")
    final = json.loads((exp / "final" / "config.json").read_text())["training"]
    assert final["steps"] == steps and final["epochs_completed"] == 2
    assert f"last-step-{steps}" in final["candidates"]   # the partial third epoch is a candidate
    rows = [line.split(",") for line in (exp / "train_log.csv").read_text().splitlines()]
    lr = {int(r[rows[0].index("step")]): float(r[rows[0].index("lr")]) for r in rows[1:] if r[rows[0].index("lr")]}
    assert lr[steps] == pytest.approx(4e-3 * 0.1)      # the cosine ends at the last step
    assert lr[steps - 3] > lr[steps - 2] > lr[steps]


def test_max_steps_out_of_range_is_one_line(corpus: dict) -> None:
    from kocall.errors import KocallError

    conf = write_conf(corpus["root"] / "bad.yaml", training={"max_steps": -1})
    with pytest.raises(KocallError, match="max_steps"):
        train(corpus, conf, "bad")


def test_same_seed_and_threads_give_identical_weights(corpus: dict) -> None:
    conf = write_conf(corpus["root"] / "det.yaml", model={"dropout": 0.1}, augment={"spec_augment": SPEC_AUGMENT},
                      batching={"max_frames": 200, "jitter": 0.1}, training={"epochs": 1, "max_steps": 5, "avg": 1})

    def weights(exp: Path) -> dict:
        return torch.load(exp / "final" / "model.pt", weights_only=True)

    first, second = weights(train(corpus, conf, "a")), weights(train(corpus, conf, "b"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = weights(train(corpus, conf, "c", seed=4))   # the comparison can fail
    assert not all(torch.equal(first[k], other[k]) for k in first)
