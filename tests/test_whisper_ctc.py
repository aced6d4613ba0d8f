"""Whisper-encoder CTC family: checkpoint loading, the encoder against a reference
computation, padding independence, training through the shared trainer, bad checkpoints.

Tests that need Whisper base's real weights read ../shared/models/whisper-base/encoder.pt
(KOCALL_SHARED moves it) and skip with a message where it is absent; the others build a
tiny randomly initialised encoder and save it in OpenAI's checkpoint format.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from kocall.errors import KocallError
from kocall.whisper_ctc.checkpoint import (hf_to_openai_names, init_from_checkpoint, load_encoder_checkpoint,
                                           resolve_checkpoint)
from kocall.whisper_ctc.model import WhisperCTC, WhisperCTCConfig, sinusoids

SHARED = Path(os.environ.get("KOCALL_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
REAL = SHARED / "models" / "whisper-base" / "encoder.pt"
TINY_DIMS = {"n_mels": 16, "n_audio_ctx": 64, "n_audio_state": 32, "n_audio_head": 4, "n_audio_layer": 2}


def tiny_openai_checkpoint(path: Path, seed: int = 0, dims: dict | None = None, std: float | None = 0.2
                           ) -> dict[str, torch.Tensor]:
    """A random Whisper encoder saved as openai-whisper saves a model: {"dims", "model_state_dict"}.

    std: every tensor drawn from N(0, std) (not the default init: a mapping mistake cannot
    hide behind equal LayerNorm gains); None keeps torch's default initialisation."""
    dims = dict(dims or TINY_DIMS)
    torch.manual_seed(seed)
    model = WhisperCTC(WhisperCTCConfig(vocab_size=5, **dims))
    for param in model.parameters() if std is not None else ():
        torch.nn.init.normal_(param, std=std)
    state = {k: v.clone().half() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    state["encoder.positional_embedding"] = sinusoids(dims["n_audio_ctx"], dims["n_audio_state"]).half()
    # The full model's decoder tensors are in the same file: the loader must skip them.
    state["decoder.token_embedding.weight"] = torch.zeros(7, dims["n_audio_state"]).half()
    full_dims = dict(dims, n_vocab=7, n_text_ctx=8, n_text_state=dims["n_audio_state"], n_text_head=4, n_text_layer=1)
    torch.save({"dims": full_dims, "model_state_dict": state}, path)
    return state


def reference_encoder(state: dict[str, torch.Tensor], n_head: int, mel: torch.Tensor) -> torch.Tensor:
    """Whisper's AudioEncoder.forward written out from OpenAI's code, on raw state-dict tensors.

    mel (n_mels, T) -> (ceil(T/2), d). Attention as Whisper computes it: q and k each scaled by
    d_head ** -0.25, softmax in float32."""
    s = {k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")}
    x = F.gelu(F.conv1d(mel[None], s["conv1.weight"], s["conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, s["conv2.weight"], s["conv2.bias"], stride=2, padding=1))[0].T
    x = x + s["positional_embedding"][: x.shape[0]]
    n_layer = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    d = x.shape[1]
    ln = lambda y, p: F.layer_norm(y, (d,), s[p + ".weight"], s[p + ".bias"])  # noqa: E731
    for i in range(n_layer):
        p = f"blocks.{i}."
        h = ln(x, p + "attn_ln")
        q = h @ s[p + "attn.query.weight"].T + s[p + "attn.query.bias"]
        k = h @ s[p + "attn.key.weight"].T
        v = h @ s[p + "attn.value.weight"].T + s[p + "attn.value.bias"]
        scale = (d // n_head) ** -0.25
        q = q.view(-1, n_head, d // n_head).transpose(0, 1) * scale
        k = k.view(-1, n_head, d // n_head).permute(1, 2, 0) * scale
        v = v.view(-1, n_head, d // n_head).transpose(0, 1)
        w = torch.softmax(q @ k, dim=-1)
        a = (w @ v).transpose(0, 1).reshape(-1, d)
        x = x + a @ s[p + "attn.out.weight"].T + s[p + "attn.out.bias"]
        h = ln(x, p + "mlp_ln")
        h = F.gelu(h @ s[p + "mlp.0.weight"].T + s[p + "mlp.0.bias"])
        x = x + h @ s[p + "mlp.2.weight"].T + s[p + "mlp.2.bias"]
    return ln(x, "ln_post")


def encoder_output(model: WhisperCTC, mel: torch.Tensor) -> torch.Tensor:
    x, lens = model.frozen_front(mel.T[None], torch.tensor([mel.shape[1]]), len(model.encoder.blocks))
    return model.encoder.ln_post(x)[0]


def test_openai_checkpoint_maps_every_tensor(tmp_path: Path) -> None:
    state = tiny_openai_checkpoint(tmp_path / "tiny.pt")
    dims, loaded = load_encoder_checkpoint(tmp_path / "tiny.pt")
    assert dims == TINY_DIMS
    assert "decoder.token_embedding.weight" not in loaded
    model = WhisperCTC(WhisperCTCConfig(vocab_size=9, **dims))
    copied = init_from_checkpoint(model, loaded, tmp_path / "tiny.pt")
    encoder_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert copied == len(encoder_keys) == len(state) - 2   # all but the positions (a buffer) and the decoder
    for key in encoder_keys:
        assert torch.equal(model.state_dict()[key], state[key].float()), key
    # The model computes what Whisper's own encoder computes with those tensors.
    mel = torch.randn(TINY_DIMS["n_mels"], 37)
    with torch.no_grad():
        ours = encoder_output(model.eval(), mel)
        ref = reference_encoder(state, TINY_DIMS["n_audio_head"], mel)
    assert ours.shape == (19, TINY_DIMS["n_audio_state"])
    assert torch.allclose(ours, ref, atol=1e-4), float((ours - ref).abs().max())


def test_hugging_face_names_map_to_openai_names(tmp_path: Path) -> None:
    state = tiny_openai_checkpoint(tmp_path / "tiny.pt")
    inverse = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
               "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
               "mlp_ln": "final_layer_norm"}
    hf = {}
    for key, tensor in state.items():
        if not key.startswith("encoder."):
            hf["model.decoder.x"] = tensor
            continue
        rest = key.removeprefix("encoder.")
        if rest.startswith("blocks."):
            _, layer, tail = rest.split(".", 2)
            for ours, theirs in inverse.items():
                if tail.startswith(ours + "."):
                    tail = theirs + tail[len(ours):]
            hf[f"model.encoder.layers.{layer}.{tail}"] = tensor
        else:
            rest = rest.replace("ln_post", "layer_norm").replace("positional_embedding", "embed_positions.weight")
            hf[f"model.encoder.{rest}"] = tensor
    mapped = hf_to_openai_names(hf)
    assert set(mapped) == {k for k in state if k.startswith("encoder.")}
    assert all(torch.equal(mapped[k], state[k]) for k in mapped)


def test_padding_does_not_change_an_utterance() -> None:
    torch.manual_seed(0)
    model = WhisperCTC(WhisperCTCConfig(vocab_size=7, extra_layers=1, **TINY_DIMS)).eval()
    a, b = torch.randn(23, 16), torch.randn(40, 16)
    batch = torch.zeros(2, 40, 16)
    batch[0, :23], batch[1] = a, b
    with torch.no_grad():
        both, lens = model(batch, torch.tensor([23, 40]))
        alone, alone_lens = model(a[None], torch.tensor([23]))
    assert lens.tolist() == [12, 20] and alone_lens.tolist() == [12]
    assert torch.allclose(both[0, :12], alone[0], atol=1e-5)


def test_input_longer_than_the_positions_is_refused() -> None:
    model = WhisperCTC(WhisperCTCConfig(vocab_size=7, **TINY_DIMS))
    with pytest.raises(KocallError, match="exceed the encoder's 64 positions"):
        model(torch.zeros(1, 129, 16), torch.tensor([129]))


@pytest.mark.parametrize("problem", ["missing", "garbage", "not a checkpoint", "wrong shape", "missing tensor"])
def test_bad_checkpoint_gets_one_line_naming_the_file(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "bad.pt"
    if problem == "garbage":
        path.write_bytes(b"\x80\x02 this is not a checkpoint")
    elif problem == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif problem in ("wrong shape", "missing tensor"):
        state = tiny_openai_checkpoint(path)
        if problem == "wrong shape":
            state["encoder.conv2.weight"] = torch.zeros(32, 32, 5)
        else:
            del state["encoder.blocks.1.mlp.2.bias"]
        torch.save({"dims": TINY_DIMS, "model_state_dict": state}, path)
    with pytest.raises(KocallError) as err:
        dims, state = load_encoder_checkpoint(path)
        init_from_checkpoint(WhisperCTC(WhisperCTCConfig(vocab_size=5, **TINY_DIMS)), state, path)
    message = err.value.format_message()
    assert str(path) in message and "\n" not in message
    if problem == "missing":
        assert "openai-whisper" in message   # says how to get it


def test_missing_default_checkpoint_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KOCALL_SHARED", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KocallError, match=r"no Whisper-tiny checkpoint found \(tried .*whisper-tiny/encoder.pt"):
        resolve_checkpoint(None, "tiny")


@pytest.mark.skipif(not REAL.is_file(), reason=f"Whisper base weights absent ({REAL}); see docs/recipe.md")
def test_real_whisper_base_encoder_matches_the_reference() -> None:
    dims, state = load_encoder_checkpoint(REAL)
    assert dims == {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6}
    model = WhisperCTC(WhisperCTCConfig(vocab_size=11, **dims)).eval()
    assert init_from_checkpoint(model, state, REAL) == 96   # 97 in the file: the positions are a buffer
    raw = torch.load(REAL, weights_only=True)["model_state_dict"]
    mel = torch.randn(80, 301, generator=torch.Generator().manual_seed(1)) * 0.5
    with torch.no_grad():
        ours = encoder_output(model, mel)
        ref = reference_encoder(raw, 8, mel)
    assert ours.shape == (151, 512)
    assert float((ours - ref).abs().max()) < 2e-3 * float(ref.abs().max())


# ------------------------------------------------------------------ training through the shared trainer

def whisper_conf(path: Path, checkpoint: Path, epochs: int = 50, **finetune) -> Path:
    conf = {
        "arch": "whisper_ctc",
        "pretrained": {"checkpoint": str(checkpoint)},
        "model": {"extra_layers": 1, "dropout": 0.0},
        "finetune": {"freeze_frontend": False, "freeze_blocks": 0, "layer_lr_decay": 0.8, **finetune},
        "optim": {"lr": 3e-3, "weight_decay": 0.0, "grad_clip": 5.0},
        "schedule": {"kind": "cosine", "warmup_steps": 10, "final_lr_ratio": 0.1},
        "batching": {"max_frames": 200, "jitter": 0.1},
        "augment": {"spec_augment": {"enabled": False}},
        "training": {"epochs": epochs, "checkpoint_every": 10000, "avg": 2, "log_every": 5},
    }
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


@pytest.mark.parametrize("finetune", [{}, {"freeze_blocks": 1, "cache_frozen": True, "cache_views": 2,
                                          "epochs": 90}],
                         ids=["full", "frozen-block-cached"])
def test_tiny_whisper_ctc_overfits_and_its_model_dir_decodes(tmp_path: Path, finetune: dict) -> None:
    from tests.test_train import N_MELS, TEXTS, CharTokenizer, make_data_dir, make_lang

    from kocall.model_dir import load_model_dir
    from kocall.trainer import RunOptions, run_training
    from kocall_kernels.ctc_decoder.greedy import greedy_decode

    train = make_data_dir(tmp_path, TEXTS, seed=0)
    lang = make_lang(tmp_path)
    ckpt = tmp_path / "tiny.pt"
    tiny_openai_checkpoint(ckpt, dims=dict(TINY_DIMS, n_mels=N_MELS), std=None)
    conf = whisper_conf(tmp_path / "w.yaml", ckpt, **finetune)
    tok = CharTokenizer.from_lang_dir(lang)
    opts = RunOptions(model_conf=str(conf), train_dir=str(train), dev_dir=str(train), lang_dir=str(lang),
                      exp_dir=str(tmp_path / "exp"), threads=1, seed=3, progress=False)
    summary = run_training(opts, tokenizer=tok)
    assert summary["dev_cer"] == 0.0, summary
    rows = [r for r in (tmp_path / "exp" / "train_log.csv").read_text().splitlines()[1:] if r.split(",")[3]]
    losses = [float(r.split(",")[3]) for r in rows]
    assert losses[-1] < 0.1 * losses[0], losses   # the curve falls
    # The model dir is a whisper_ctc dir with an identity CMVN; it loads and transcribes exactly.
    model, _, config = load_model_dir(tmp_path / "exp" / "final")
    assert config["arch"] == "whisper_ctc" and config["model"]["n_audio_state"] == 32
    assert "tiny.pt" in config["training"]["initialised_from"]
    import json
    cmvn = json.loads((tmp_path / "exp" / "final" / "cmvn.json").read_text())
    assert set(cmvn["mean"]) == {0.0} and set(cmvn["std"]) == {1.0}
    import kaldiio
    feats = kaldiio.load_scp(str(train / "feats.scp"))
    texts = dict(line.split(" ", 1) for line in (train / "text").read_text(encoding="utf-8").splitlines())
    from kocall.export import export_int8, load_any_model_dir

    export_int8(tmp_path / "exp" / "final", tmp_path / "exp" / "final_int8")
    int8_model, _, int8_config = load_any_model_dir(tmp_path / "exp" / "final_int8")
    assert int8_config["quantized"] == "int8-dynamic-linear"
    assert "encoder.blocks.0.attn.query" in int8_config["quantization"]["modules"]
    for utt, mat in feats.items():
        for net in (model, int8_model):
            with torch.no_grad():
                log_probs, lens = net(torch.from_numpy(np.array(mat))[None], torch.tensor([mat.shape[0]]))
            assert tok.decode(greedy_decode(log_probs, lens)[0]) == texts[utt]
    if finetune:
        # Frozen means frozen: the cached block and the front end equal the checkpoint's.
        state = torch.load(ckpt, weights_only=True)["model_state_dict"]
        saved = torch.load(tmp_path / "exp" / "final" / "model.pt", weights_only=True)
        for key in ("encoder.conv1.weight", "encoder.blocks.0.mlp.0.weight"):
            assert torch.equal(saved[key], state[key].float()), key
        assert not torch.equal(saved["encoder.blocks.1.mlp.0.weight"], state["encoder.blocks.1.mlp.0.weight"].float())
        names = sorted(p.name for p in (tmp_path / "exp" / "cache").iterdir())
        assert [re.sub(r"-[0-9a-f]{16}-", "-KEY-", n) for n in names] == [
            "dev-KEY-view0.pt", "train-KEY-view0.pt", "train-KEY-view1.pt"], names


def test_kocall_fbank_uses_the_front_end_a_model_declares(tmp_path: Path) -> None:
    import shutil

    from click.testing import CliRunner

    from kocall.audio import write_wav
    from kocall.cli import main
    from kocall.features import load_fbank_config, wav_to_fbank

    repo = Path(__file__).resolve().parents[1]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copyfile(repo / "conf" / "fbank_whisper.yaml", model_dir / "fbank.yaml")
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(8000 * 2) * 2000).astype(np.float32)   # 2 s at 8 kHz
    write_wav(tmp_path / "utt1.wav", samples, 8000)
    result = CliRunner().invoke(main, ["fbank", "--model", str(model_dir), "--out", str(tmp_path / "f.npy"),
                                       str(tmp_path / "utt1.wav")])
    assert result.exit_code == 0, result.output
    feats = np.load(tmp_path / "f.npy")
    from kocall.audio import load_audio

    stored, rate = load_audio(str(tmp_path / "utt1.wav"), "utt1")   # the int16 file as the command reads it
    expected = wav_to_fbank(stored, rate, load_fbank_config(repo / "conf" / "fbank_whisper.yaml"))
    assert feats.shape == (200, 80)                     # 16 kHz after resampling, 10 ms hop
    assert np.allclose(feats, expected, atol=1e-6)
    both = CliRunner().invoke(main, ["fbank", "--model", str(model_dir), "--config", "conf/fbank.yaml",
                                     "--out", str(tmp_path / "g.npy"), str(tmp_path / "utt1.wav")])
    assert both.exit_code != 0 and "not both" in both.output


def test_decode_skips_by_name_what_is_longer_than_the_encoder_takes(tmp_path: Path) -> None:
    """A Whisper-CTC model dir decodes WAVs through `kocall decode`; input beyond its positions
    (here a tiny encoder of 64 positions = 1.28 s) is named and skipped, the rest decoded."""
    import json
    import shutil

    from click.testing import CliRunner

    from kocall.audio import write_wav
    from kocall.cli import main
    from kocall.model_dir import save_model_dir
    from kocall.models import make_config

    repo = Path(__file__).resolve().parents[1]
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(["<blk>", "<unk>", "▁", "가", "나"])),
                                     encoding="utf-8")
    shutil.copyfile(repo / "conf" / "fbank_whisper.yaml", tmp_path / "fbank.yaml")
    (tmp_path / "cmvn.json").write_text(json.dumps({"mean": [0.0] * 80, "std": [1.0] * 80, "frames": 0}))
    model_cfg = WhisperCTCConfig(vocab_size=5, **dict(TINY_DIMS, n_mels=80)).to_dict()
    torch.manual_seed(0)
    features = yaml.safe_load((repo / "conf" / "fbank_whisper.yaml").read_text(encoding="utf-8"))
    save_model_dir(tmp_path / "model", WhisperCTC(WhisperCTCConfig.from_dict(model_cfg)),
                   make_config("whisper_ctc", model_cfg, features, 2), lang, tmp_path / "cmvn.json",
                   tmp_path / "fbank.yaml")
    rng = np.random.default_rng(0)
    write_wav(tmp_path / "short.wav", (rng.standard_normal(8000) * 1000).astype(np.float32), 16000)   # 0.5 s
    write_wav(tmp_path / "long.wav", (rng.standard_normal(32000) * 1000).astype(np.float32), 16000)   # 2 s
    result = CliRunner().invoke(main, ["decode", "--model", str(tmp_path / "model"), "--greedy",
                                       "--out", str(tmp_path / "hyp.txt"),
                                       str(tmp_path / "short.wav"), str(tmp_path / "long.wav")])
    assert result.exit_code == 1, result.output
    assert "utterance 'long'" in result.output and "1.28 s" in result.output
    assert "the model's input limit" in result.output and "Traceback" not in result.output
    lines = (tmp_path / "hyp.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ")[0] for line in lines] == ["short"]


def test_null_checkpoint_means_the_default_places_and_none_means_random(tmp_path: Path, monkeypatch) -> None:
    """`pretrained.checkpoint: null` finds $KOCALL_SHARED/models/whisper-<size>/encoder.pt (a run
    that silently trained from random weights looked like a bad recipe); `none` is random init."""
    from types import SimpleNamespace

    from kocall.trainer import FinetuneConfig, PretrainedConfig
    from kocall.whisper_ctc.family import WhisperFamily

    (tmp_path / "models" / "whisper-tiny").mkdir(parents=True)
    state = tiny_openai_checkpoint(tmp_path / "models" / "whisper-tiny" / "encoder.pt")
    monkeypatch.setenv("KOCALL_SHARED", str(tmp_path))
    family = WhisperFamily()
    cfg = SimpleNamespace(model={"extra_layers": 0}, pretrained=PretrainedConfig(checkpoint=None, size="tiny"),
                          finetune=FinetuneConfig())
    model_cfg = family.model_config(cfg, TINY_DIMS["n_mels"], 7)
    assert model_cfg["n_audio_state"] == TINY_DIMS["n_audio_state"]   # dims from the checkpoint
    model = family.build(model_cfg)
    said = family.initialise(model, cfg)
    assert said is not None and "whisper-tiny/encoder.pt" in said
    assert torch.equal(model.state_dict()["encoder.blocks.1.attn.key.weight"],
                       state["encoder.blocks.1.attn.key.weight"].float())
    for random_init in ("none", False):
        cfg.pretrained = PretrainedConfig(checkpoint=random_init, size="tiny")
        cfg.model = dict(TINY_DIMS, extra_layers=0)
        assert family.initialise(family.build(family.model_config(cfg, TINY_DIMS["n_mels"], 7)), cfg) is None


def test_hidden_cache_is_named_by_its_key_and_shared(tmp_path: Path) -> None:
    """A cache file is reused by anything with the same key (another model's upper layers,
    another unit inventory), and a change of data, augmentation or frozen weights gets its own."""
    from tests.test_train import N_MELS, TEXTS, make_data_dir

    from kocall.augment import AugmentConfig
    from kocall.dataset import SpeechDataset, UttEntry, build_hidden_cache

    train = make_data_dir(tmp_path, TEXTS[:3], seed=0)
    entries = [UttEntry(line.split()[0], line.split(" ", 1)[1], 0, [], "")
               for line in (train / "feats.scp").read_text().splitlines()]
    for e, line in zip(entries, (train / "utt2num_frames").read_text().splitlines()):
        e.num_frames = int(line.split()[1])
    torch.manual_seed(0)
    model = WhisperCTC(WhisperCTCConfig(vocab_size=5, **dict(TINY_DIMS, n_mels=N_MELS)))
    model.encoder.blocks[0].requires_grad_(False)
    spec = {"enabled": True, "num_freq_masks": 1, "max_freq_width": 2, "time_mask_ratio": 0.0}

    def cache(augment: AugmentConfig, net: WhisperCTC = model) -> list[list[torch.Tensor]]:
        source = SpeechDataset(entries, None, augment=augment, seed=1)
        return build_hidden_cache(source, 2, tmp_path / "cache" / "train", net, 1, torch.device("cpu"), seed=1)

    first = cache(AugmentConfig.from_dict({"spec_augment": spec}))
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(names) == 2 and all(re.fullmatch(r"train-[0-9a-f]{16}-view[01]\.pt", n) for n in names)
    # Same key: read back, not recomputed (a model whose frozen part would fail says so).
    original = model.frozen_front
    model.frozen_front = lambda *a: (_ for _ in ()).throw(AssertionError("recomputed"))  # type: ignore
    again = cache(AugmentConfig.from_dict({"spec_augment": spec}))
    assert all(torch.equal(a, b) for va, vb in zip(first, again) for a, b in zip(va, vb))
    model.frozen_front = original  # type: ignore
    # Other augmentation: a new key, its own files beside the first.
    other = cache(AugmentConfig.from_dict({"spec_augment": dict(spec, max_freq_width=4)}))
    assert len(list((tmp_path / "cache").iterdir())) == 4
    assert torch.equal(other[0][0], first[0][0])           # view 0 is clean in both
    # Other frozen weights: another key again.
    with torch.no_grad():
        model.encoder.blocks[0].mlp[0].weight.add_(0.01)
    cache(AugmentConfig.from_dict({"spec_augment": spec}))
    assert len(list((tmp_path / "cache").iterdir())) == 6
