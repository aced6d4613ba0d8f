"""Hybrid CTC/attention Whisper (kocall.whisper_hybrid): a tiny model trained through the shared
trainer on a few synthetic utterances (frozen block cached), both loss terms falling, its model
dir (whisper_tokenizer.json included) loading back, CTC and attention-only greedy decoding both
giving the exact transcripts, int8 export; teacher forcing and bad checkpoints in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kocall.errors import KocallError
from kocall.whisper_ctc.checkpoint import whisper_shapes
from kocall.whisper_ctc.model import sinusoids
from kocall.whisper_ctc.tokenizer import WhisperTokenizer
from kocall.whisper_hybrid.model import IGNORE, attention_greedy, teacher_forcing

pytest.importorskip("tokenizers")


def tiny_tokenizer(path: Path, texts: list[str]) -> WhisperTokenizer:
    from tests.test_whisper_decoder import tiny_bpe_tokenizer

    tiny_bpe_tokenizer(path)
    return WhisperTokenizer(path)


def tiny_full_checkpoint(path: Path, n_mels: int, n_vocab: int, seed: int = 0) -> dict:
    """A random full Whisper (encoder + decoder) in OpenAI's format, tiny dims."""
    dims = {"n_mels": n_mels, "n_audio_ctx": 200, "n_audio_state": 32, "n_audio_head": 4, "n_audio_layer": 2,
            "n_vocab": n_vocab, "n_text_ctx": 32, "n_text_state": 32, "n_text_head": 4, "n_text_layer": 1}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in whisper_shapes(dims).items():
        if name.endswith("ln.weight") or name.endswith("_ln.weight") or name.endswith("ln_post.weight"):
            state[name] = torch.ones(shape)
        elif name.endswith(".bias") or "_ln." in name or name.endswith("ln.bias"):
            state[name] = torch.zeros(shape)
        else:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
    state["encoder.positional_embedding"] = sinusoids(dims["n_audio_ctx"], dims["n_audio_state"])
    torch.save({"dims": dims, "model_state_dict": {k: v.half() for k, v in state.items()}}, path)
    return dims


def hybrid_conf(path: Path, checkpoint: Path, tokenizer: Path, epochs: int) -> Path:
    conf = {
        "arch": "whisper_hybrid",
        "pretrained": {"checkpoint": str(checkpoint), "tokenizer": str(tokenizer)},
        "model": {"extra_layers": 1, "dropout": 0.0, "ctc_weight": 0.3, "label_smoothing": 0.1,
                  "decoder_lr_scale": 1.0},
        "finetune": {"freeze_frontend": True, "freeze_blocks": 1, "layer_lr_decay": 0.8, "cache_frozen": True,
                     "cache_views": 1},
        "optim": {"lr": 3e-3, "weight_decay": 0.0, "grad_clip": 5.0},
        "schedule": {"kind": "cosine", "warmup_steps": 10, "final_lr_ratio": 0.1},
        "batching": {"max_frames": 50, "jitter": 0.0},   # one utterance per step
        "augment": {"spec_augment": {"enabled": False}},
        "training": {"epochs": epochs, "checkpoint_every": 10000, "avg": 2, "log_every": 5},
    }
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    return path


def loss_terms(model, family, feats: dict, texts: dict) -> tuple[float, float]:
    """(CTC per unit, attention CE per token) over the utterances, one at a time, eval mode."""
    from kocall.dataset import Batch

    ctc, att = [], []
    for utt, mat in feats.items():
        x = torch.from_numpy(np.array(mat))[None]
        targets = torch.tensor(family_units[utt])
        batch = Batch([utt], x, torch.tensor([x.size(1)]), targets, torch.tensor([len(targets)]), [texts[utt]])
        with torch.no_grad():
            family.loss(model.eval(), batch, "torch")
        ctc.append(family.last_terms["ctc"])
        att.append(family.last_terms["attention"])
    return float(np.mean(ctc)), float(np.mean(att))


family_units: dict[str, list[int]] = {}


def test_tiny_hybrid_trains_both_terms_and_its_model_dir_decodes(tmp_path: Path) -> None:
    from tests.test_train import N_MELS, TEXTS, CharTokenizer, make_data_dir, make_lang

    from kocall.export import export_int8, load_any_model_dir
    from kocall.model_dir import load_model_dir
    from kocall.models import build_model, family
    from kocall.trainer import RunOptions, load_train_config, run_training
    from kocall_kernels.ctc_decoder.greedy import greedy_decode
    import kaldiio

    train = make_data_dir(tmp_path, TEXTS, seed=0)
    lang = make_lang(tmp_path)
    tok_path = tmp_path / "tokenizer.json"
    whisper_tok = tiny_tokenizer(tok_path, TEXTS)
    ckpt = tmp_path / "tiny.pt"
    tiny_full_checkpoint(ckpt, N_MELS, whisper_tok.n_vocab)
    conf = hybrid_conf(tmp_path / "h.yaml", ckpt, tok_path, epochs=40)
    tok = CharTokenizer.from_lang_dir(lang)
    opts = RunOptions(model_conf=str(conf), train_dir=str(train), dev_dir=str(train), lang_dir=str(lang),
                      exp_dir=str(tmp_path / "exp"), threads=1, seed=3, progress=False)
    summary = run_training(opts, tokenizer=tok)
    final = tmp_path / "exp" / "final"
    # The final weights are the candidate of least dev loss, CTC + attention (the CTC greedy CER
    # does not see the decoder); the logged dev loss is that loss.
    assert summary["selected_by"] == "dev_loss"
    assert summary["candidates"][summary["source"]] == min(summary["candidates"].values())
    assert summary["candidates"][summary["source"]] == pytest.approx(summary["dev_loss"], abs=1e-5)
    assert (final / "whisper_tokenizer.json").read_bytes() == tok_path.read_bytes()
    model, _, config = load_model_dir(final)
    assert config["arch"] == "whisper_hybrid" and config["model"]["sot_sequence"] == whisper_tok.sot_sequence()
    saved = torch.load(final / "model.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())   # the round trip
    feats = kaldiio.load_scp(str(train / "feats.scp"))
    texts = dict(line.split(" ", 1) for line in (train / "text").read_text(encoding="utf-8").splitlines())
    family_units.update({utt: tok.encode(texts[utt]) for utt in texts})

    # Both terms fell: the trained model against the same network as initialised
    hybrid = family("whisper_hybrid")
    cfg, _ = load_train_config(conf)
    initial = build_model(config)
    hybrid.initialise(initial, cfg)
    ctc0, att0 = loss_terms(initial, hybrid, feats, texts)
    ctc1, att1 = loss_terms(model, hybrid, feats, texts)
    assert ctc1 < 0.2 * ctc0 and att1 < 0.5 * att0, (ctc0, ctc1, att0, att1, summary)

    # CTC greedy and the decoder alone both give the exact transcripts; so does the int8 dir's CTC
    export_int8(final, tmp_path / "exp" / "final_int8")
    int8_model, _, int8_config = load_any_model_dir(tmp_path / "exp" / "final_int8")
    assert (tmp_path / "exp" / "final_int8" / "whisper_tokenizer.json").is_file()
    model_tok = WhisperTokenizer.from_dir(final)
    for utt, mat in feats.items():
        x, lens = torch.from_numpy(np.array(mat))[None], torch.tensor([mat.shape[0]])
        with torch.no_grad():
            audio, mask, log_probs, out_lens = model.encode(x, lens)
            assert tok.decode(greedy_decode(log_probs, out_lens)[0]) == texts[utt]
            ids = attention_greedy(model.decoder, audio, mask, config["model"]["sot_sequence"],
                                   config["model"]["eot"], max_tokens=20)[0]
            assert model_tok.decode(ids).strip() == texts[utt]
            log_probs, out_lens = int8_model(x, lens)
            assert tok.decode(greedy_decode(log_probs, out_lens)[0]) == texts[utt]


def test_teacher_forcing_scores_text_and_eot_only() -> None:
    inputs, targets = teacher_forcing([[5, 6], [7]], [1, 2, 3], 9, 16, ["a", "b"], torch.device("cpu"))
    assert inputs.tolist() == [[1, 2, 3, 5, 6], [1, 2, 3, 7, 9]]
    assert targets.tolist() == [[IGNORE, IGNORE, 5, 6, 9], [IGNORE, IGNORE, 7, 9, IGNORE]]
    with pytest.raises(KocallError, match="utterance 'b': its transcript is 14 Whisper tokens"):
        teacher_forcing([[5], list(range(14))], [1, 2, 3], 9, 16, ["a", "b"], torch.device("cpu"))


def test_encoder_only_checkpoint_is_one_line(tmp_path: Path) -> None:
    from kocall.models import family
    from kocall.trainer import load_train_config

    from tests.test_whisper_ctc import tiny_openai_checkpoint

    ckpt = tmp_path / "encoder.pt"
    tiny_openai_checkpoint(ckpt)
    tok_path = tmp_path / "tokenizer.json"
    tiny_tokenizer(tok_path, ["가나"])
    cfg, _ = load_train_config(hybrid_conf(tmp_path / "h.yaml", ckpt, tok_path, epochs=1))
    with pytest.raises(KocallError) as err:
        family("whisper_hybrid").model_config(cfg, 16, 10)
    message = err.value.format_message()
    assert str(ckpt) in message and "convert-whisper" in message and "\n" not in message


@pytest.mark.parametrize("activations", ["float", "dynamic", "dynamic-decoder"])
def test_int8_export_stores_the_vocabulary_table_as_int8(tmp_path: Path, activations: str) -> None:
    import json

    from kocall.export import export_int8, load_any_model_dir
    from kocall.model_dir import save_model_dir
    from kocall.models import make_config
    from kocall.whisper_hybrid.model import WhisperHybrid, WhisperHybridConfig
    from tests.test_train import make_lang

    torch.manual_seed(0)
    cfg = WhisperHybridConfig(vocab_size=9, n_mels=16, n_audio_ctx=64, n_audio_state=32, n_audio_head=4,
                              n_audio_layer=1, n_vocab=4096, n_text_ctx=16, n_text_state=32, n_text_head=4,
                              n_text_layer=1, sot_sequence=[4001, 4002], eot=4000,
                              vocab_ids=list(range(4096)))   # chosen already: the export keeps every row
    model = WhisperHybrid(cfg).eval()
    (tmp_path / "cmvn.json").write_text(json.dumps({"mean": [0.0] * 16, "std": [1.0] * 16, "frames": 1}))
    (tmp_path / "fbank.yaml").write_text("flavour: whisper\nn_mels: 16\n")
    (tmp_path / "whisper_tokenizer.json").write_text("{}")
    config = make_config("whisper_hybrid", cfg.to_dict(), {"n_mels": 16}, 2)
    save_model_dir(tmp_path / "final", model, config, make_lang(tmp_path), tmp_path / "cmvn.json",
                   tmp_path / "fbank.yaml", {"whisper_tokenizer.json": tmp_path / "whisper_tokenizer.json"})
    export_int8(tmp_path / "final", tmp_path / "int8", activations=activations)
    stored = torch.load(tmp_path / "int8" / "model.pt", weights_only=True)
    assert stored["decoder.token_embedding.weight_int8"].dtype == torch.int8
    assert "decoder.token_embedding.weight" not in stored
    int8_model, _, _ = load_any_model_dir(tmp_path / "int8")
    # which layers run int8 matmuls: all, none, or the decoder's alone
    dynamic = {name for name, module in int8_model.named_modules() if "quantized" in type(module).__module__}
    decoder = {name for name in dynamic if name.startswith("decoder.")}
    assert {"float": not dynamic, "dynamic": decoder and dynamic - decoder,
            "dynamic-decoder": decoder and dynamic == decoder}[activations], sorted(dynamic)
    feats, lens = torch.randn(1, 20, 16), torch.tensor([20])
    tokens = torch.tensor([[4001, 4002, 7, 8]])
    with torch.no_grad():
        expected = model(feats, lens, decoder_tokens=tokens)
        got = int8_model(feats, lens, decoder_tokens=tokens)
    for index in (0, 2):   # CTC log-probs, decoder logits: within int8's per-row rounding
        error = (got[index] - expected[index]).abs().max()
        assert 0 < error < 0.05 * expected[index].abs().max(), (index, error)


def test_cross_attention_training_keeps_the_decoder_text_model(tmp_path: Path) -> None:
    # decoder_train: cross_attention: an update moves the decoder's cross-attention layers and
    # the CTC branch, never its embeddings, self-attention or MLPs; another value is one line.
    from kocall.dataset import Batch
    from kocall.models import family
    from kocall.trainer import load_train_config

    from tests.test_train import N_MELS

    tok_path = tmp_path / "tokenizer.json"
    whisper_tok = tiny_tokenizer(tok_path, ["가나"])
    ckpt = tmp_path / "tiny.pt"
    tiny_full_checkpoint(ckpt, N_MELS, whisper_tok.n_vocab)
    conf = hybrid_conf(tmp_path / "h.yaml", ckpt, tok_path, epochs=1)
    values = yaml.safe_load(conf.read_text(encoding="utf-8"))
    values["model"]["decoder_train"] = "cross_attention"
    conf.write_text(yaml.safe_dump(values), encoding="utf-8")
    cfg, _ = load_train_config(conf)
    hybrid = family("whisper_hybrid")
    model = hybrid.build(hybrid.model_config(cfg, N_MELS, 9))
    hybrid.initialise(model, cfg)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    ctc_before = model.output.weight.clone()
    optimizer = torch.optim.AdamW(hybrid.param_groups(model, cfg), lr=1e-2)
    torch.manual_seed(0)
    batch = Batch(["u1"], torch.randn(1, 40, N_MELS), torch.tensor([40]), torch.tensor([3, 4, 5]),
                  torch.tensor([3]), ["가나"])
    loss, units = hybrid.loss(model.train(), batch, "torch")
    (loss / units).backward()
    optimizer.step()
    after = model.decoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".cross_attn" in k for k in moved), sorted(moved)
    assert any(k.endswith("cross_attn.query.weight") for k in moved)
    assert not torch.equal(ctc_before, model.output.weight)

    # The frozen decoder layers are no part of the cached encoder frames: the cache is shared
    # with a model that trains the whole decoder (same encoder weights).
    from kocall.dataset import _frozen_fingerprint

    values["model"]["decoder_train"] = "all"
    conf.write_text(yaml.safe_dump(values), encoding="utf-8")
    cfg_all, _ = load_train_config(conf)
    whole = hybrid.build(hybrid.model_config(cfg_all, N_MELS, 9))
    hybrid.initialise(whole, cfg_all)
    hybrid.param_groups(whole, cfg_all)
    assert _frozen_fingerprint(whole, 1) == _frozen_fingerprint(model, 1)

    values["model"]["decoder_train"] = "everything"
    conf.write_text(yaml.safe_dump(values), encoding="utf-8")
    cfg, _ = load_train_config(conf)
    with pytest.raises(KocallError, match="decoder_train 'everything' is not one of all, cross_attention"):
        hybrid.build(hybrid.model_config(cfg, N_MELS, 9))
