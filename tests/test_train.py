"""Training: a tiny model learns, a killed and resumed run equals an uninterrupted one,
the final model dir loads, the batching is deterministic and resumable, bad input is reported.

The data are synthetic features: every unit has its own random spectral pattern held for
a few frames, so the mapping is learnable in seconds on a CPU.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kocall.trainer import RunOptions, Trainer, latest_checkpoint, load_checkpoint, run_training
from kocall.dataset import ctc_min_frames, make_batches, shard_batches
from kocall.errors import DataError, KocallError

SYMBOLS = ["<blk>", "<unk>", "▁", "가", "나", "다", "라", "마", "바"]
N_MELS = 24
TEXTS = ["가나 다", "라마 바", "다가 나라", "마바 가", "나 다라 마", "바가 다"]


class CharTokenizer:
    """Test-only stand-in for kocall.lang.Tokenizer: one unit per syllable, ▁ for a space."""

    blank_id = 0

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.ids = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def from_lang_dir(cls, lang_dir: Path) -> "CharTokenizer":
        lines = (Path(lang_dir) / "tokens.txt").read_text(encoding="utf-8").split("\n")
        pairs = sorted((int(i), s) for s, i in (line.split() for line in lines if line.strip()))
        return cls([s for _, s in pairs])

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get("▁" if ch == " " else ch, 1) for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(" " if self.symbols[i] == "▁" else self.symbols[i] for i in ids).strip()


def synth_feats(text: str, rng: np.random.Generator, patterns: np.ndarray) -> np.ndarray:
    """Each unit holds its pattern for 5-8 frames (plus noise), with a little silence at each end."""
    ids = CharTokenizer(SYMBOLS).encode(text)
    parts = [patterns[0][None].repeat(4, 0)]
    for i in ids:
        parts.append(patterns[i][None].repeat(int(rng.integers(5, 9)), 0))
    parts.append(patterns[0][None].repeat(4, 0))
    feats = np.concatenate(parts)
    return (feats + 0.3 * rng.standard_normal(feats.shape)).astype(np.float32)


def make_data_dir(root: Path, texts: list[str], seed: int = 0, name: str = "train") -> Path:
    import kaldiio

    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(123).standard_normal((len(SYMBOLS), N_MELS)) * 2.0
    data = root / name
    data.mkdir(parents=True)
    utts = {f"utt{i:03d}": t for i, t in enumerate(texts)}
    mats = {u: synth_feats(t, rng, patterns) for u, t in utts.items()}
    with kaldiio.WriteHelper(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}") as writer:
        for utt, mat in mats.items():
            writer(utt, mat)
    (data / "text").write_text("".join(f"{u} {t}\n" for u, t in utts.items()), encoding="utf-8")
    (data / "utt2num_frames").write_text("".join(f"{u} {m.shape[0]}\n" for u, m in mats.items()))
    stacked = np.concatenate(list(mats.values()))
    (data / "cmvn.json").write_text(json.dumps({"mean": stacked.mean(0).tolist(), "std": stacked.std(0).tolist(),
                                                "frames": int(stacked.shape[0])}))
    (data / "fbank.yaml").write_text(f"sample_rate: 8000\nn_mels: {N_MELS}\nframe_shift_ms: 10.0\n"
                                     "frame_length_ms: 25.0\n")
    return data


def make_lang(root: Path) -> Path:
    lang = root / "lang"
    lang.mkdir()
    (lang / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)), encoding="utf-8")
    return lang


def write_conf(path: Path, **overrides: dict) -> Path:
    conf = {
        "model": {"d_model": 48, "num_layers": 2, "num_heads": 4, "ff_mult": 2, "conv_kernel": 7,
                  "subsampling": 4, "subsampling_channels": 8, "dropout": 0.0},
        "optim": {"lr": 4e-3, "weight_decay": 0.0, "grad_clip": 5.0},
        "schedule": {"kind": "cosine", "warmup_steps": 10, "final_lr_ratio": 0.1},
        "batching": {"max_frames": 200, "jitter": 0.1},
        "augment": {"spec_augment": {"enabled": False}},
        "training": {"epochs": 1, "checkpoint_every": 1000, "avg": 2, "log_every": 5},
    }
    for section, values in overrides.items():
        conf[section].update(values)
    path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> dict:
    return {"train": make_data_dir(tmp_path, TEXTS, seed=0), "lang": make_lang(tmp_path), "root": tmp_path}


def options(corpus: dict, conf: Path, exp: str, **kw) -> RunOptions:
    return RunOptions(model_conf=str(conf), train_dir=str(corpus["train"]), dev_dir=str(corpus["train"]),
                      lang_dir=str(corpus["lang"]), exp_dir=str(corpus["root"] / exp), threads=1, seed=3,
                      progress=False, **kw)


def test_tiny_model_overfits_to_exact_transcripts(corpus: dict) -> None:
    conf = write_conf(corpus["root"] / "overfit.yaml", training={"epochs": 60, "checkpoint_every": 10000})
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    summary = run_training(options(corpus, conf, "exp_overfit"), tokenizer=tok)

    from kocall.trainer import ctc_loss_sum
    from kocall_kernels.ctc_decoder.greedy import greedy_decode

    exp = corpus["root"] / "exp_overfit"
    trainer = Trainer(options(corpus, conf, "exp_overfit_eval"), tokenizer=tok)
    state = torch.load(exp / "final" / "model.pt", weights_only=True)
    trainer.model.load_state_dict(state)
    trainer.model.eval()
    batch = trainer.train_set.collate(list(range(len(TEXTS))), rng=None)
    with torch.no_grad():
        log_probs, out_lens = trainer.model(batch.feats, batch.feat_lens)
        loss = ctc_loss_sum(log_probs, out_lens, batch.targets, batch.target_lens) / batch.target_lens.sum()
    hyps = [tok.decode(ids) for ids in greedy_decode(log_probs, out_lens)]
    assert hyps == batch.texts
    assert float(loss) < 0.05, f"CTC loss per unit {float(loss):.4f} after overfitting"
    assert summary["dev_cer"] == 0.0
    # The log shows the learning: the first logged train loss is far above the last.
    rows = list(csv.DictReader(open(exp / "train_log.csv", encoding="utf-8")))
    losses = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    assert losses[0] > 10 * losses[-1]
    assert (exp / "train_curves.png").stat().st_size > 1000


def _final_state(exp: Path) -> dict:
    return load_checkpoint(latest_checkpoint(exp))


def test_killed_and_resumed_run_equals_uninterrupted(corpus: dict) -> None:
    # Dropout, SpecAugment and batch shuffling all draw random numbers: resume must restore them all.
    conf = write_conf(corpus["root"] / "resume.yaml",
                      model={"dropout": 0.1},
                      augment={"spec_augment": {"enabled": True, "max_freq_width": 4, "time_mask_ratio": 0.05,
                                                "max_time_width_ratio": 0.1, "time_warp": 3}},
                      batching={"max_frames": 80},  # 4 batches an epoch: checkpoints at 3, 4 (epoch end), 6 (mid-epoch)
                      training={"epochs": 3, "checkpoint_every": 3})
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    full_run = run_training(options(corpus, conf, "exp_full"), tokenizer=tok)
    assert full_run["steps"] > 7, "the uninterrupted run must outlast the kill"

    stopped = run_training(options(corpus, conf, "exp_killed", stop_after_steps=7), tokenizer=tok)
    assert stopped == {"stopped_at_step": 7}
    resumed_from = load_checkpoint(latest_checkpoint(corpus["root"] / "exp_killed"))
    assert resumed_from["state"]["step"] < 7          # steps after the last checkpoint are lost and redone
    assert 0 < resumed_from["state"]["batch_in_epoch"]  # ... from a mid-epoch sampler position
    run_training(options(corpus, conf, "exp_killed"), tokenizer=tok)

    full, resumed = _final_state(corpus["root"] / "exp_full"), _final_state(corpus["root"] / "exp_killed")
    assert full["state"]["step"] == resumed["state"]["step"] > 7
    assert full["model"].keys() == resumed["model"].keys()
    for key in full["model"]:
        assert torch.equal(full["model"][key], resumed["model"][key]), key
    for a, b in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # Both final model dirs hold the same weights.
    final_a = torch.load(corpus["root"] / "exp_full" / "final" / "model.pt", weights_only=True)
    final_b = torch.load(corpus["root"] / "exp_killed" / "final" / "model.pt", weights_only=True)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_time_budget_stops_and_still_writes_final_model(corpus: dict) -> None:
    conf = write_conf(corpus["root"] / "budget.yaml", training={"epochs": 1000})
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    summary = run_training(options(corpus, conf, "exp_budget", max_minutes=0.05), tokenizer=tok)
    assert summary["epochs"] < 1000
    assert 2.5 < summary["train_seconds"] < 30
    config = json.loads((corpus["root"] / "exp_budget" / "final" / "config.json").read_text())
    assert config["quantized"] is False and config["vocab_size"] == len(SYMBOLS)
    assert config["training"]["source"] in config["training"]["candidates"]


class StepClock:
    """A stand-in for the trainer's `time` module: every reading advances a fixed tick, so a
    budget run plans and stops at the same step however busy the machine is."""

    def __init__(self, tick_s: float) -> None:
        self.now, self.tick_s = 0.0, tick_s

    def time(self) -> float:
        self.now += self.tick_s
        return self.now


def test_budget_schedule_decays_over_what_the_budget_allows(corpus: dict, monkeypatch) -> None:
    # schedule.span budget: after the probe, the cosine is planned to end with the time budget,
    # the plan is kept in the checkpoint, and the lr logged at the end is the final ratio's.
    import kocall.trainer

    monkeypatch.setattr(kocall.trainer, "time", StepClock(0.01))
    conf = write_conf(corpus["root"] / "span.yaml", training={"epochs": 1000, "log_every": 1},
                      schedule={"kind": "cosine", "warmup_steps": 2, "final_lr_ratio": 0.05, "span": "budget",
                                "probe_steps": 8})
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    summary = run_training(options(corpus, conf, "exp_span", max_minutes=0.05), tokenizer=tok)
    state = load_checkpoint(latest_checkpoint(corpus["root"] / "exp_span"))["state"]
    planned = state["planned_steps"]
    assert 8 < planned < 1000 * 4, planned   # far fewer than 1000 epochs' worth
    rows = list(csv.DictReader(open(corpus["root"] / "exp_span" / "train_log.csv", encoding="utf-8")))
    lrs = {int(r["step"]): float(r["lr"]) for r in rows if r.get("lr")}
    peak = max(lrs.values())
    past_plan = [lr for step, lr in lrs.items() if step >= planned]
    assert all(lr == pytest.approx(0.05 * peak, rel=1e-3) for lr in past_plan), (planned, summary)
    # Re-planned at each epoch end, the cosine is near its end when the budget is: the last lr is low.
    assert lrs[max(lrs)] < 0.3 * peak and planned - summary["steps"] < 0.3 * planned, (lrs, planned, summary)


def test_plan_steps_spans_the_remaining_budget() -> None:
    from kocall.trainer import plan_steps

    assert plan_steps(step=50, seconds_per_step=2.0, remaining_s=2000.0, total_steps=10**6, warmup_steps=100) == 1000
    assert plan_steps(50, 2.0, 2000.0, total_steps=600, warmup_steps=100) == 600      # never past the epochs
    assert plan_steps(50, 2.0, 0.0, total_steps=600, warmup_steps=100) == 101        # never inside the warm-up


def test_batches_are_bounded_deterministic_and_sharded() -> None:
    lengths = np.random.default_rng(0).integers(50, 400, size=300)
    batches = make_batches(lengths, max_frames=2000, seed=5, epoch=2)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(len(b) == 1 or len(b) * max(lengths[b]) <= 2000 for b in batches)
    assert batches == make_batches(lengths, max_frames=2000, seed=5, epoch=2)
    assert batches != make_batches(lengths, max_frames=2000, seed=5, epoch=3)
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen))


def test_ctc_min_frames_counts_repeats() -> None:
    assert ctc_min_frames([3, 4, 5]) == 3
    assert ctc_min_frames([3, 3, 4, 4, 4]) == 8


def test_too_long_transcripts_are_skipped_with_count(corpus: dict, caplog) -> None:
    root = corpus["root"] / "long"
    data = make_data_dir(root, TEXTS, seed=1)
    # Give one utterance a transcript far longer than its frames allow after 4x subsampling.
    lines = (data / "text").read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].split()[0] + " " + "가나" * 40
    (data / "text").write_text("\n".join(lines) + "\n", encoding="utf-8")
    conf = write_conf(corpus["root"] / "skip.yaml")
    opts = options(corpus, conf, "exp_skip")
    opts.train_dir = str(data)
    with caplog.at_level("WARNING"):
        trainer = Trainer(opts, tokenizer=CharTokenizer.from_lang_dir(corpus["lang"]))
    assert len(trainer.train_entries) == len(TEXTS) - 1
    assert "skipped 1 of 6" in caplog.text


def test_bad_input_names_utterance_and_file(corpus: dict) -> None:
    conf = write_conf(corpus["root"] / "bad.yaml")
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    data = make_data_dir(corpus["root"] / "bad", TEXTS, seed=2)
    scp = (data / "feats.scp").read_text().splitlines()
    scp[1] = scp[1].split()[0] + " " + str(data / "missing.ark") + ":10"
    (data / "feats.scp").write_text("\n".join(scp) + "\n")
    opts = options(corpus, conf, "exp_bad")
    opts.train_dir = str(data)
    trainer = Trainer(opts, tokenizer=tok)
    with pytest.raises(DataError, match=r"utterance 'utt001' file '.*missing\.ark:10'"):
        trainer.run()
    (data / "cmvn.json").unlink()
    with pytest.raises(DataError, match="cmvn.json' is missing"):
        Trainer(opts, tokenizer=tok)
    (corpus["root"] / "broken.yaml").write_text("model: {d_model: 48}\nbatching: {max_framez: 3}\n")
    opts.model_conf = str(corpus["root"] / "broken.yaml")
    with pytest.raises(KocallError, match="max_framez"):
        Trainer(opts, tokenizer=tok)


def test_init_model_starts_from_a_trained_model_dir(corpus: dict) -> None:
    """--init-model (two-phase training; fine-tuning a trained model on new data): a run started
    from a trained model dir at a learning rate too small to move it keeps that model's dev CER,
    where the same run from random weights is far from it; config.json says where it started.
    Units or dims that differ are one line naming the dir."""
    tok = CharTokenizer.from_lang_dir(corpus["lang"])
    trained = run_training(options(corpus, write_conf(corpus["root"] / "a.yaml", training={"epochs": 60}),
                                   "exp_a"), tokenizer=tok)
    assert trained["dev_cer"] == 0.0
    source = corpus["root"] / "exp_a" / "final"
    still = write_conf(corpus["root"] / "b.yaml", optim={"lr": 1e-9})
    started = run_training(options(corpus, still, "exp_b", init_model=str(source)), tokenizer=tok)
    scratch = run_training(options(corpus, still, "exp_c"), tokenizer=tok)
    assert started["dev_cer"] == 0.0 and scratch["dev_cer"] > 50.0, (started, scratch)
    card = json.loads((corpus["root"] / "exp_b" / "final" / "config.json").read_text(encoding="utf-8"))
    assert str(source) in card["training"]["initialised_from"]

    other_units = corpus["root"] / "other_lang"
    other_units.mkdir()
    (other_units / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS[:-1] + ["사"])),
                                            encoding="utf-8")
    opts = options(corpus, still, "exp_d", init_model=str(source))
    opts.lang_dir = str(other_units)
    with pytest.raises(KocallError, match=r"init model '.*exp_a/final': its units .* differ"):
        run_training(opts, tokenizer=CharTokenizer.from_lang_dir(other_units))
    wider = write_conf(corpus["root"] / "e.yaml", model={"d_model": 64})
    with pytest.raises(KocallError, match=r"init model '.*exp_a/final': tensor '.*' is \(.*48.*\) there"):
        run_training(options(corpus, wider, "exp_e", init_model=str(source)), tokenizer=tok)
    from kocall.export import export_int8

    export_int8(source, corpus["root"] / "a_int8")
    with pytest.raises(KocallError, match="an int8 model dir; start from the float one"):
        run_training(options(corpus, still, "exp_g", init_model=str(corpus["root"] / "a_int8")), tokenizer=tok)
    with pytest.raises(KocallError, match="missing-dir"):
        run_training(options(corpus, still, "exp_f", init_model=str(corpus["root"] / "missing-dir")), tokenizer=tok)


def test_model_config_may_name_its_units(tmp_path: Path) -> None:
    # `unit:` is run.sh's default --unit for the model; the shipped Whisper config and the default
    # small one name jamo, medium and large none (run.sh: char).
    from kocall.trainer import load_train_config

    repo = Path(__file__).resolve().parents[1]
    assert load_train_config(repo / "conf" / "model_whisper_base_ctc.yaml")[0].unit == "jamo"
    small = load_train_config(repo / "conf" / "model_small.yaml")[0]
    assert small.unit == "jamo" and small.model["subsampling"] == 4   # jamo need 4x (2.5 per syllable)
    assert load_train_config(repo / "conf" / "model_medium.yaml")[0].unit == ""
    bad = write_conf(tmp_path / "bad.yaml")
    bad.write_text(bad.read_text(encoding="utf-8") + "unit: syllable\n", encoding="utf-8")
    with pytest.raises(KocallError, match="unit must be char, jamo or bpe"):
        load_train_config(bad)
