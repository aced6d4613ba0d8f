"""The feature stage (kocall.features): ark/scp shards, utt2num_frames, CMVN, errors, CLI."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import kocall.features as features
from kocall.audio import resample_audio, write_wav
from kocall.datadir import Utterance, write_data_dir
from kocall.errors import DataError, KocallError
from kocall.features import compute_cmvn, fbank_cmd, make_feats, wav_to_fbank
from kocall_kernels.fbank import FbankConfig, compute_fbank, utterance_seed
from tests.conftest import tone

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "fbank.yaml"
CFG = FbankConfig.from_yaml(CONF)

# (utt id, seconds, sample rate, tone Hz): 16 kHz files are resampled to the 8 kHz config.
UTTS = [("spk1-a", 0.9, 16000, 300.0), ("spk1-b", 1.3, 8000, 700.0), ("spk2-c", 0.5, 16000, 1500.0),
        ("spk2-d", 1.1, 8000, 2500.0), ("spk3-e", 0.7, 16000, 3300.0)]


def make_dir(root: Path, utts=UTTS) -> Path:
    wavs = root / "wavs"
    rows = []
    for i, (utt_id, seconds, sr, freq) in enumerate(utts):
        path = wavs / f"{utt_id}.wav"
        write_wav(path, tone(seconds, sr, freq, seed=i), sr)
        rows.append(Utterance(utt_id, utt_id.split("-")[0], str(path), "가 나 다", seconds))
    write_data_dir(root / "data" / "train", rows)
    return root / "data" / "train"


def reference_feats(path: str, cfg: FbankConfig = CFG, utt_id: str | None = None) -> np.ndarray:
    """Independent of the stage: soundfile + resample_audio + compute_fbank on one utterance."""
    samples, sr = sf.read(path, dtype="int16")
    x = resample_audio(samples.astype(np.float32), sr, cfg.sample_rate)
    seeds = None if utt_id is None else np.array([utterance_seed(cfg, utt_id)], np.uint64)
    feats, frames = compute_fbank(x[None], [x.size], cfg, seeds=seeds)
    return feats[0, : frames[0]]


def read_scp(data: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(data / "feats.scp")).items()}


def test_stage_writes_features_equal_to_compute_fbank(tmp_path: Path) -> None:
    data = make_dir(tmp_path)
    frames = make_feats(data, CONF, nj=2, show_progress=False)
    feats = read_scp(data)
    assert list(feats) == sorted(u for u, *_ in UTTS)
    for utt_id, seconds, sr, _ in UTTS:
        ref = reference_feats(str(tmp_path / "wavs" / f"{utt_id}.wav"))
        assert feats[utt_id].dtype == np.float32 and feats[utt_id].shape == (CFG.num_frames(int(seconds * 8000)), 80)
        np.testing.assert_array_equal(feats[utt_id], ref, err_msg=utt_id)
        assert frames[utt_id] == ref.shape[0]
    assert (data / "utt2num_frames").read_text() == "".join(f"{u} {feats[u].shape[0]}\n" for u in feats)
    assert (data / "fbank.yaml").read_text() == CONF.read_text()
    # One shard per job, absolute paths, nothing temporary left behind.
    arks = {line.split()[1].rsplit(":", 1)[0] for line in (data / "feats.scp").read_text().splitlines()}
    assert arks == {str((data / "data" / f"feats.{n}.ark").resolve()) for n in (1, 2)}
    assert sorted(p.name for p in (data / "data").iterdir()) == ["feats.1.ark", "feats.2.ark"]


def test_cmvn_equals_numpy_over_all_frames(tmp_path: Path) -> None:
    data = make_dir(tmp_path)
    make_feats(data, CONF, nj=1, show_progress=False)
    stats = compute_cmvn(data, show_progress=False)
    stacked = np.concatenate(list(read_scp(data).values())).astype(np.float64)
    assert json.loads((data / "cmvn.json").read_text()) == stats
    assert stats["frames"] == stacked.shape[0]
    np.testing.assert_allclose(stats["mean"], stacked.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["std"], np.maximum(stacked.std(0), features.CMVN_STD_FLOOR), rtol=1e-7)


def test_cmvn_large_offset_and_constant_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mats = {f"u{i}": (1000.0 + rng.standard_normal((50 + 7 * i, 4))).astype(np.float32) for i in range(5)}
    for mat in mats.values():
        mat[:, 2] = -15.9  # a band stuck at the log floor
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'f.ark'},{tmp_path / 'feats.scp'}") as writer:
        for key, mat in mats.items():
            writer(key, mat)
    stats = compute_cmvn(tmp_path, std_floor=0.05, show_progress=False)
    stacked = np.concatenate(list(mats.values())).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], stacked.mean(0), rtol=1e-12)
    expected = stacked.std(0)
    expected[2] = 0.05
    np.testing.assert_allclose(stats["std"], expected, rtol=1e-6)


def test_nj2_process_pool_equals_nj1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the process pool on this small dir; dither on, so per-utterance seeding is tested too.
    monkeypatch.setattr(features, "POOL_MIN_UTTS", 0)
    conf = tmp_path / "fbank_dither.yaml"
    conf.write_text(CONF.read_text().replace("dither: 0.0", "dither: 1.0"))
    data = make_dir(tmp_path)
    make_feats(data, conf, nj=2, show_progress=False)
    two = read_scp(data)
    assert sorted(p.name for p in (data / "data").iterdir()) == ["feats.1.ark", "feats.2.ark"]
    make_feats(data, conf, nj=1, show_progress=False)
    one = read_scp(data)
    assert sorted(p.name for p in (data / "data").iterdir()) == ["feats.1.ark"]  # stale shard removed
    assert list(one) == list(two)
    for utt_id in one:
        np.testing.assert_array_equal(one[utt_id], two[utt_id], err_msg=utt_id)
    wav = str(tmp_path / "wavs" / "spk1-b.wav")
    dithered = FbankConfig.from_yaml(conf)
    np.testing.assert_array_equal(one["spk1-b"], reference_feats(wav, dithered, "spk1-b"))
    assert np.abs(one["spk1-b"] - reference_feats(wav)).max() > 0  # the dither did act


BAD = {
    "corrupt": lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk"),
    "empty": lambda p: p.write_bytes(b""),
    "short": lambda p: write_wav(p, tone(0.01, 8000), 8000),
}


@pytest.mark.parametrize("kind, pool", [("corrupt", False), ("empty", True), ("short", False)])
def test_bad_audio_names_utterance_and_file_and_leaves_no_feats(tmp_path: Path, kind: str, pool: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if pool:
        monkeypatch.setattr(features, "POOL_MIN_UTTS", 0)
    data = make_dir(tmp_path)
    make_feats(data, CONF, nj=2, show_progress=False)
    (data / "cmvn.json").write_text("{}")
    bad = tmp_path / "wavs" / "spk2-d.wav"
    BAD[kind](bad)
    with pytest.raises(DataError) as err:
        make_feats(data, CONF, nj=2, show_progress=False)
    assert "utterance 'spk2-d'" in str(err.value) and str(bad) in str(err.value), str(err.value)
    for stale in ("feats.scp", "utt2num_frames", "cmvn.json"):
        assert not (data / stale).exists(), stale
    assert not [p.name for p in (data / "data").iterdir() if p.name.endswith(".tmp")]


def test_wav_to_fbank_resamples_to_the_config_rate() -> None:
    x = tone(1.234, 16000, 900.0)
    ref_x = resample_audio(x, 16000, 8000)
    ref, n = compute_fbank(ref_x[None], [ref_x.size], CFG)
    for cfg in (CONF, str(CONF), CFG, CFG.to_dict()):
        feats = wav_to_fbank(x, 16000, cfg)
        assert feats.shape == (CFG.num_frames(ref_x.size), 80) == (n[0], 80)
        np.testing.assert_array_equal(feats, ref[0, : n[0]])
    # At the config's own rate there is no resampling.
    np.testing.assert_array_equal(wav_to_fbank(ref_x, 8000, CFG), ref[0, : n[0]])
    assert wav_to_fbank(x[:100], 16000, CFG).shape == (0, 80)
    with pytest.raises(KocallError, match="num_bins"):
        wav_to_fbank(x, 16000, dict(CFG.to_dict(), num_bins=40))


def test_fbank_cli_ark_scp_and_npy(tmp_path: Path) -> None:
    wavs = []
    for i, (sr, secs) in enumerate(((16000, 0.8), (8000, 0.6))):
        path = tmp_path / f"utt{i}.wav"
        write_wav(path, tone(secs, sr, 500.0 + 400 * i, seed=i), sr)
        wavs.append(str(path))
    runner = CliRunner()
    result = runner.invoke(fbank_cmd, ["--config", str(CONF), "--out", str(tmp_path / "out" / "f.scp"), *wavs])
    assert result.exit_code == 0, result.output
    feats = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(tmp_path / "out" / "f.scp")).items()}
    assert list(feats) == ["utt0", "utt1"]
    for key, wav in zip(feats, wavs):
        np.testing.assert_array_equal(feats[key], reference_feats(wav))

    result = runner.invoke(fbank_cmd, ["--config", str(CONF), "--out", str(tmp_path / "npy"), *wavs])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == ["utt0.npy", "utt1.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "utt1.npy"), feats["utt1"])

    missing = str(tmp_path / "nope.wav")
    result = runner.invoke(fbank_cmd, ["--config", str(CONF), "--out", str(tmp_path / "bad.scp"), wavs[0], missing])
    assert result.exit_code == 1
    assert "utterance 'nope'" in result.output and missing in result.output
    assert not (tmp_path / "bad.scp").exists() and not (tmp_path / "bad.ark").exists()


def test_step_scripts_make_feats_and_cmvn(tmp_path: Path) -> None:
    data = make_dir(tmp_path, UTTS[:2])
    for cmd in (["steps/make_fbank.sh", "--nj", "2", "--config", "conf/fbank.yaml", str(data)],
                ["steps/compute_cmvn.sh", str(data)]):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
    feats = read_scp(data)
    assert sorted(feats) == ["spk1-a", "spk1-b"]
    stacked = np.concatenate(list(feats.values())).astype(np.float64)
    stats = json.loads((data / "cmvn.json").read_text())
    assert stats["frames"] == stacked.shape[0]
    np.testing.assert_allclose(stats["mean"], stacked.mean(0), rtol=1e-9, atol=1e-9)


def test_decoder_features_from_wav_match_the_stage(tmp_path: Path) -> None:
    """decode's FeatureMaker (the model dir's fbank.yaml + cmvn.json) on a 16 kHz WAV gives the
    stage's features normalised by the stage's CMVN: one feature pipeline for training and decoding."""
    import shutil

    import yaml

    from kocall.dataset import load_cmvn_stats
    from kocall.decode import FeatureMaker, InputUtt

    data = make_dir(tmp_path)
    make_feats(data, CONF, nj=1, show_progress=False)
    compute_cmvn(data, show_progress=False)
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(data / "cmvn.json", model / "cmvn.json")
    shutil.copy(data / "fbank.yaml", model / "fbank.yaml")  # as save_model_dir copies it
    mean, std = load_cmvn_stats(model / "cmvn.json")
    maker = FeatureMaker(model, {"features": yaml.safe_load((data / "fbank.yaml").read_text())})
    stage = read_scp(data)
    for utt_id in ("spk1-a", "spk1-b"):  # 16 kHz and 8 kHz files
        got = maker(InputUtt(utt_id, str(tmp_path / "wavs" / f"{utt_id}.wav"), False))
        np.testing.assert_allclose(got, (stage[utt_id] - mean) / std, rtol=1e-6, atol=1e-6)


def test_whisper_front_end_through_the_stage_the_cli_and_a_model_dir(tmp_path: Path) -> None:
    """conf/fbank_whisper.yaml flows through make_fbank.sh, `kocall fbank` and a model dir's
    fbank.yaml: 8 and 16 kHz files become 16 kHz Whisper log-mels (T = samples_16k // 160)."""
    import shutil

    from kocall.features import model_fbank_config

    conf = REPO / "conf" / "fbank_whisper.yaml"
    whisper = FbankConfig.from_yaml(conf)
    data = make_dir(tmp_path, UTTS[:2])   # one 16 kHz and one 8 kHz file
    proc = subprocess.run(["steps/make_fbank.sh", "--nj", "1", "--config", str(conf), str(data)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    feats = read_scp(data)
    for utt_id, seconds, _, _ in UTTS[:2]:
        assert feats[utt_id].shape == (int(round(seconds * 16000)) // 160, 80), utt_id
        np.testing.assert_array_equal(feats[utt_id], reference_feats(str(tmp_path / "wavs" / f"{utt_id}.wav"),
                                                                     whisper), err_msg=utt_id)
        assert feats[utt_id].min() >= feats[utt_id].max() - 2.0   # Whisper's 8 log10 units, / 4
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(data / "fbank.yaml", model / "fbank.yaml")   # as save_model_dir copies it
    assert model_fbank_config(model) == whisper and whisper.flavour == "whisper"
    wav = str(tmp_path / "wavs" / "spk1-b.wav")
    result = CliRunner().invoke(fbank_cmd, ["--config", str(conf), "--out", str(tmp_path / "b.npy"), wav])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), feats["spk1-b"])
    short = tmp_path / "short.wav"
    write_wav(short, tone(0.015, 8000, 500.0), 8000)   # 120 samples = 240 at 16 kHz: one frame
    assert wav_to_fbank(sf.read(short, dtype="int16")[0], 8000, conf).shape == (1, 80)
