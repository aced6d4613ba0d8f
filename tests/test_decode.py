"""kocall decode and the decode stage, on a tiny real Conformer and a handful of short WAVs.

Every expectation is computed independently of kocall.decode: features with
kocall.features.wav_to_fbank + the model dir's cmvn.json, one forward pass per utterance,
then greedy_decode / the CPU beam search on those log-probs, and kocall.scoring for CER."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from kocall.audio import load_audio, write_wav
from kocall import stage_decode as stage
from kocall.model_dir import load_model_dir
from kocall.datadir import Utterance, write_data_dir
from kocall.decode import decode_cmd
from kocall.features import wav_to_fbank
from kocall.scoring import score_texts
from kocall_kernels.ctc_decoder import DecoderConfig, cpu
from kocall_kernels.ctc_decoder.greedy import greedy_decode
from kocall_kernels.ngram.tables import NgramTables
from tests.test_export import N_MELS, write_float_dir

SR = 8000
FEATURES = {"sample_rate": SR, "n_mels": N_MELS}
UTTS = {"spk-a": (0.50, 1), "spk-b": (0.65, 2), "spk-c": (0.80, 3), "spk-d": (0.95, 4)}
TOPK, MIN_LOGP = 16, -12.0  # the CLI's defaults, used by the direct computations too


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """80 ms segments of random tone + noise, so the posteriors change along the utterance."""
    rng = np.random.default_rng(seed)
    seg = int(0.08 * SR)
    t = np.arange(seg) / SR
    parts = [rng.uniform(500, 8000) * np.sin(2 * np.pi * rng.uniform(100, 3500) * t)
             + rng.uniform(50, 3000) * rng.standard_normal(seg) for _ in range(int(seconds * SR) // seg)]
    return np.concatenate(parts).astype(np.float32)


def write_bigram_arpa(path: Path, words: list[str], seed: int = 0) -> None:
    """A random (non-uniform) bigram ARPA over the unit symbols, so the LM changes the search."""
    rng = np.random.default_rng(seed)
    uni = ["<unk>", "<s>", "</s>"] + words
    bi = [(a, b) for a in ["<s>"] + words for b in words + ["</s>"] if rng.random() < 0.3]
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    for w in uni:
        p = -99.0 if w == "<s>" else -rng.uniform(0.3, 3.0)
        lines.append(f"{p:.4f}\t{w}" + ("" if w == "</s>" else f"\t{-rng.uniform(0.1, 0.8):.4f}"))
    lines += ["", "\\2-grams:"] + [f"{-rng.uniform(0.05, 1.0):.4f}\t{a} {b}" for a, b in bi]
    path.write_text("\n".join(lines + ["", "\\end\\", ""]), encoding="utf-8")


def make_model_dir(path: Path) -> Path:
    """write_float_dir, completed as make_config does (features in config.json = fbank.yaml), with
    a confident output layer (N(0, 1) weights): peaked posteriors, so beam 1 == greedy holds."""
    write_float_dir(path)
    config = json.loads((path / "config.json").read_text())
    config["features"] = dict(FEATURES)
    (path / "config.json").write_text(json.dumps(config))
    (path / "fbank.yaml").write_text(yaml.safe_dump(FEATURES))
    state = torch.load(path / "model.pt", weights_only=True)
    state["output.weight"] = torch.randn(state["output.weight"].shape, generator=torch.Generator().manual_seed(5))
    state["output.bias"].zero_()
    torch.save(state, path / "model.pt")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dec")
    model_dir = make_model_dir(root / "am" / "final")
    model, tokenizer, _ = load_model_dir(model_dir)
    cmvn = json.loads((model_dir / "cmvn.json").read_text())
    mean, std = np.asarray(cmvn["mean"], np.float32), np.asarray(cmvn["std"], np.float32)
    wavs, log_probs = {}, {}
    for utt, (seconds, seed) in UTTS.items():
        wavs[utt] = root / "wav" / f"{utt}.wav"
        write_wav(wavs[utt], speechlike(seconds, seed), SR)
        samples, sr = load_audio(str(wavs[utt]))
        feats = (wav_to_fbank(samples, sr, FEATURES) - mean) / std
        with torch.inference_mode():
            lp, out_len = model(torch.from_numpy(feats)[None], torch.tensor([feats.shape[0]]))
        lp = lp[0, : int(out_len[0])].numpy().copy()
        lp[:, tokenizer.suppressed_ids] = -np.inf  # <unk> is never emitted (lang.py policy)
        log_probs[utt] = lp
    write_data_dir(root / "data" / "test", [Utterance(u, "spk", str(w), "가3 가4", None) for u, w in wavs.items()])
    write_bigram_arpa(root / "lm.arpa", [s for s in tokenizer.symbols[1:] if s != "<unk>"])
    greedy = {u: tokenizer.decode(greedy_decode(lp[None], np.array([lp.shape[0]]))[0]) for u, lp in log_probs.items()}
    assert sum(bool(t) for t in greedy.values()) >= 3 and len(set(greedy.values())) >= 3  # a non-trivial setup
    return {"root": root, "model": model_dir, "tokenizer": tokenizer, "wavs": wavs, "log_probs": log_probs,
            "data": root / "data" / "test", "lm": root / "lm.arpa", "greedy": greedy,
            "tables": NgramTables.from_arpa(root / "lm.arpa", model_dir / "tokens.txt", progress=False)}


def beam_decode(setup: dict, utts: list[str], cfg: DecoderConfig, tables) -> dict[str, list]:
    """The CPU beam search on the directly computed log-probs (one padded batch)."""
    rows = [setup["log_probs"][u] for u in utts]
    lens = np.array([r.shape[0] for r in rows])
    lp = np.zeros((len(rows), lens.max(), rows[0].shape[1]), np.float32)
    for b, r in enumerate(rows):
        lp[b, : r.shape[0]] = r
    return dict(zip(utts, cpu.decode_batch(lp, lens, cfg, tables)))


def read_kaldi_text(path_or_text) -> dict[str, str]:
    """Check the Kaldi text format (one `utt text` line per utterance, sorted) and parse it."""
    text = path_or_text.read_text(encoding="utf-8") if isinstance(path_or_text, Path) else path_or_text
    lines = text.splitlines()
    keys = [line.split(" ", 1)[0] for line in lines]
    assert all(line and line == line.strip() and "  " not in line for line in lines), lines
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8")) and len(set(keys)) == len(keys), keys
    return {line.split(" ", 1)[0]: (line.split(" ", 1) + [""])[1] for line in lines}


def invoke(args: list[str]):
    return CliRunner().invoke(decode_cmd, [str(a) for a in args])


# ------------------------------------------------------------------ 1. greedy: three kinds of input

def test_greedy_matches_direct_computation_for_data_dir_wav_list_and_scp(setup, tmp_path: Path) -> None:
    out = tmp_path / "hyp.txt"
    result = invoke(["--model", setup["model"], "--data-dir", setup["data"], "--greedy", "--out", out])
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(out) == setup["greedy"]

    # WAV files (ids = file stems), given out of order, to stdout: still sorted, same text.
    result = invoke(["--model", setup["model"], "--greedy", *reversed(list(setup["wavs"].values()))])
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(result.stdout) == setup["greedy"]

    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {w}\n" for u, w in reversed(list(setup["wavs"].items()))), encoding="utf-8")
    result = invoke(["--model", setup["model"], "--scp", scp, "--greedy", "--out", out])
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(out) == setup["greedy"]


# ------------------------------------------------------------------ 2. beam + LM, N-best, beam 1

def test_beam_lm_and_nbest_match_cpu_decoder(setup, tmp_path: Path) -> None:
    alpha, beta, n = 1.0, 1.0, 3
    out, nbest_out = tmp_path / "hyp.txt", tmp_path / "nbest.txt"
    result = invoke(["--model", setup["model"], "--data-dir", setup["data"], "--lm", setup["lm"], "--beam", 4,
                     "--lm-weight", alpha, "--word-bonus", beta, "--nbest", n, "--nbest-out", nbest_out, "--out", out])
    assert result.exit_code == 0, result.output
    cfg = DecoderConfig(beam=4, token_topk=TOPK, token_min_logp=MIN_LOGP, lm_weight=alpha, word_bonus=beta, nbest=n)
    want = beam_decode(setup, sorted(UTTS), cfg, setup["tables"])
    tok = setup["tokenizer"]
    got = read_kaldi_text(out)
    assert got == {u: tok.decode(h[0].tokens) for u, h in want.items()}
    assert got != setup["greedy"]  # the LM and the bonus really changed the search

    rows = read_kaldi_text(nbest_out)
    assert len(rows) == n * len(UTTS)
    for utt, hyps in want.items():
        assert len(hyps) == n
        scores = []
        for rank, hyp in enumerate(hyps, 1):
            fields = rows[f"{utt}-{rank}"].split(" ", 3)
            score, am, lm = map(float, fields[:3])
            assert (fields + [""])[3] == tok.decode(hyp.tokens)
            assert (score, am, lm) == pytest.approx((hyp.score, hyp.am_score, hyp.lm_score), abs=2e-4)
            # score = acoustic + alpha * ln(10) * LM(log10) + beta * emitted units
            assert score == pytest.approx(am + alpha * math.log(10) * lm + beta * len(hyp.tokens), abs=1e-3)
            assert lm < 0  # the LM was really applied
            scores.append(score)
        assert scores == sorted(scores, reverse=True)  # best first
        assert rows[f"{utt}-1"].split(" ", 3)[3:] == ([got[utt]] if got[utt] else [])  # rank 1 == the 1-best


def test_beam_one_without_lm_weight_is_greedy(setup, tmp_path: Path) -> None:
    out = tmp_path / "hyp.txt"
    result = invoke(["--model", setup["model"], "--data-dir", setup["data"], "--lm", setup["lm"], "--beam", 1,
                     "--lm-weight", 0, "--word-bonus", 0, "--out", out])
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(out) == setup["greedy"]


# ------------------------------------------------------------------ 3. bad audio

def bad_audio_dir(setup, root: Path) -> tuple[Path, dict[str, Path]]:
    bad = {"spk-corrupt": root / "corrupt.wav", "spk-empty": root / "empty.wav", "spk-zero": root / "zero.wav"}
    bad["spk-corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00garbage, not audio" * 7)
    write_wav(bad["spk-empty"], np.zeros(0, np.float32), SR)  # a valid WAV header, no samples
    bad["spk-zero"].write_bytes(b"")                           # a 0-byte file
    good = {u: setup["wavs"][u] for u in ("spk-a", "spk-c")}
    utts = [Utterance(u, "spk", str(w), "가3", None) for u, w in {**good, **bad}.items()]
    write_data_dir(root / "data", utts)
    return root / "data", bad


def test_bad_audio_is_reported_and_the_rest_decodes(setup, tmp_path: Path) -> None:
    data, bad = bad_audio_dir(setup, tmp_path)
    out = tmp_path / "hyp.txt"
    result = invoke(["--model", setup["model"], "--data-dir", data, "--greedy", "--out", out])
    # Documented: the others still decode, and the exit status is 1 at the end (a KocallError).
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert read_kaldi_text(out) == {u: setup["greedy"][u] for u in ("spk-a", "spk-c")}
    for utt, path in bad.items():
        assert f"utterance '{utt}' file '{path}'" in result.stderr, result.stderr
    assert re.search(r"3 of 5 utterances failed: spk-corrupt spk-empty spk-zero", result.stderr), result.stderr


def test_bad_audio_exit_status_of_the_real_command(setup, tmp_path: Path) -> None:
    """`kocall decode` in a fresh process (the console script's main): exit 1, each bad file named,
    no traceback, the good utterances on stdout."""
    data, bad = bad_audio_dir(setup, tmp_path)
    command = [sys.executable, "-m", "kocall.cli", "decode", "--model", str(setup["model"]), "--data-dir", str(data),
               "--greedy"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_kaldi_text(proc.stdout) == {u: setup["greedy"][u] for u in ("spk-a", "spk-c")}
    for utt, path in bad.items():
        assert f"utterance '{utt}' file '{path}'" in proc.stderr


# ------------------------------------------------------------------ 4. the decode stage

def stage_layout(root: Path, model_dir: Path, lm: Path) -> tuple[Path, Path, Path]:
    """(AMDIR, LANG, DATA) under root as the decode stage reads them: AMDIR/final is a copy of
    model_dir, LANG holds its tokens.txt and lm/lm.arpa; DATA is left to the caller."""
    amdir, lang, data = root / "am", root / "lang", root / "data"
    shutil.copytree(model_dir, amdir / "final")
    (lang / "lm").mkdir(parents=True)
    shutil.copyfile(model_dir / "tokens.txt", lang / "tokens.txt")
    shutil.copyfile(lm, lang / "lm" / "lm.arpa")
    return amdir, lang, data


def test_decode_stage_picks_the_lowest_dev_cer_and_applies_it(setup, tmp_path: Path, caplog) -> None:
    tok, tables = setup["tokenizer"], setup["tables"]
    amdir, lang, data = stage_layout(tmp_path, setup["model"], setup["lm"])
    conf = tmp_path / "decode.yaml"
    conf.write_text(yaml.safe_dump({"beam": 2, "grid": {"beam": 2, "lm_weight": [0.0, 0.5], "word_bonus": [0.0, 1.0]}}))
    dev_ids, test_ids = ["spk-a", "spk-b", "spk-c"], ["spk-b", "spk-d"]

    def decode_with(ids: list[str], lm_weight: float, bonus: float) -> dict[str, str]:
        cfg = DecoderConfig(beam=2, token_topk=TOPK, token_min_logp=MIN_LOGP, lm_weight=lm_weight, word_bonus=bonus)
        return {u: tok.decode(h[0].tokens) for u, h in beam_decode(setup, ids, cfg, tables).items()}

    pairs = [(a, b) for a in (0.0, 0.5) for b in (0.0, 1.0)]
    # Dev references = what the last pair of the grid decodes: that pair alone scores CER 0, so a
    # stage that took the first pair, the last trial or the highest CER would be caught.
    refs = decode_with(dev_ids, 0.5, 1.0)
    assert all(refs.values())
    write_data_dir(data / "dev", [Utterance(u, "spk", str(setup["wavs"][u]), refs[u], None) for u in dev_ids])
    write_data_dir(data / "test", [Utterance(u, "spk", str(setup["wavs"][u]), "가3 가4", None) for u in test_ids])

    caplog.set_level("INFO", logger="kocall.decode_stage")
    stage.main(["--config", str(conf), str(amdir), str(lang), str(data), "dev", "test"])

    logged = {(float(a), float(b)): float(c) for a, b, c in re.findall(
        r"grid dev: lm_weight ([\d.]+) word_bonus ([\d.]+) -> CER ([\d.]+)", caplog.text)}
    best = json.loads((amdir / "decode_dev_beam" / "best_weights.json").read_text())
    assert {(t["lm_weight"], t["word_bonus"]) for t in best["trials"]} == set(pairs) == set(logged)
    recomputed = {p: score_texts(refs, decode_with(dev_ids, *p)).cer for p in pairs}
    for trial in best["trials"]:
        pair = (trial["lm_weight"], trial["word_bonus"])
        assert trial["cer"] == pytest.approx(recomputed[pair])
        assert logged[pair] == pytest.approx(recomputed[pair], abs=0.01)
    argmin = min(pairs, key=lambda p: (recomputed[p], p))
    ranked = sorted(recomputed.values())
    assert ranked[0] < ranked[1]  # a unique minimum
    assert (best["lm_weight"], best["word_bonus"]) == argmin == (0.5, 1.0)
    assert best["cer"] == 0.0 and best["set"] == "dev" and best["grid_beam"] == 2

    for name, ids in (("dev", dev_ids), ("test", test_ids)):
        info = json.loads((amdir / f"decode_{name}_beam" / "decode_info.json").read_text())
        assert (info["decoder"], info["beam"], info["lm_weight"], info["word_bonus"]) == ("beam", 2, 0.5, 1.0)
        assert Path(info["lm"]) == lang / "lm" / "lm.arpa"
        assert read_kaldi_text(amdir / f"decode_{name}_beam" / "hyp.txt") == decode_with(ids, 0.5, 1.0)
        greedy = read_kaldi_text(amdir / f"decode_{name}_greedy" / "hyp.txt")
        assert greedy == {u: setup["greedy"][u] for u in ids}
        assert json.loads((amdir / f"decode_{name}_greedy" / "decode_info.json").read_text())["decoder"] == "greedy"
    # The weights matter on the test set: another pair would have written other hypotheses.
    assert any(decode_with(test_ids, *p) != decode_with(test_ids, 0.5, 1.0) for p in pairs[:3])
