"""CTranslate2 Whisper folders -> OpenAI checkpoints (`kocall convert-whisper`) and the full
checkpoint loader (kocall.whisper_ctc.ct2 / checkpoint.load_whisper_checkpoint).

A tiny random Whisper is laid out here as CTranslate2 stores one (fused q/k/v, fused cross
k/v with a zero key bias, gamma/beta norms, num_heads scalars, the projection an alias of the
embeddings) and converted back: every tensor must return exactly; where the `ctranslate2`
package is installed it loads the same tiny folder, and its encoder and greedy decoding must
equal ours. On the real Whisper base folder (tools/whisper-base-ct2, made by
`bash bench/install_peers.sh whisper`) and two real utterances of ../shared/corpora, the
converted model's encoder and greedy decoding equal CTranslate2's; skipped where absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from kocall.cli import main as kocall_main
from kocall.errors import KocallError
from kocall.paths import shared_corpora
from kocall.whisper_ctc.checkpoint import load_whisper_checkpoint, whisper_shapes
from kocall.whisper_ctc.ct2 import convert_ct2_folder, read_ct2_model, write_ct2_model
from kocall.whisper_ctc.decoder import TextDecoder, load_decoder_state, load_text_decoder
from kocall.whisper_ctc.model import AudioEncoder, WhisperCTCConfig, sinusoids

ROOT = Path(__file__).resolve().parents[1]
CT2_DIR = ROOT / "tools" / "whisper-base-ct2"
TINY = {"n_mels": 8, "n_audio_ctx": 16, "n_audio_state": 32, "n_audio_head": 4, "n_audio_layer": 2,
        "n_vocab": 40, "n_text_ctx": 12, "n_text_state": 32, "n_text_head": 4, "n_text_layer": 2}
ENCODER_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of a tiny Whisper, N(0, 0.3) in float16 (what CTranslate2 folders hold)."""
    gen = torch.Generator().manual_seed(seed)
    state = {name: (0.3 * torch.randn(shape, generator=gen)).half() for name, shape in whisper_shapes(TINY).items()}
    # The encoder's positions are Whisper's fixed sinusoids (our encoder computes them itself)
    state["encoder.positional_embedding"] = sinusoids(TINY["n_audio_ctx"], TINY["n_audio_state"]).half()
    return state


def ct2_layout(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """OpenAI names -> CTranslate2's Whisper variables (the layout ctranslate2's converter writes)."""
    a = {k: v.numpy() for k, v in state.items()}
    zeros = np.zeros(TINY["n_audio_state"], np.float16)
    out: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str) -> None:
        out[f"{dst}/weight"], out[f"{dst}/bias"] = a[f"{src}.weight"], a[f"{src}.bias"]

    def ln(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = a[f"{src}.weight"], a[f"{src}.bias"]

    def fused(dst: str, src: str, parts: tuple[str, ...]) -> None:
        out[f"{dst}/weight"] = np.concatenate([a[f"{src}.{p}.weight"] for p in parts])
        out[f"{dst}/bias"] = np.concatenate([zeros if p == "key" else a[f"{src}.{p}.bias"] for p in parts])

    for side in ("encoder", "decoder"):
        out[f"{side}/num_heads"] = np.array(TINY["n_audio_head" if side == "encoder" else "n_text_head"], np.int16)
    for conv in ("conv1", "conv2"):
        lin(f"encoder/{conv}", f"encoder.{conv}")
    out["encoder/position_encodings/encodings"] = a["encoder.positional_embedding"]
    ln("encoder/layer_norm", "encoder.ln_post")
    for i in range(TINY["n_audio_layer"]):
        s, d = f"encoder.blocks.{i}", f"encoder/layer_{i}"
        ln(f"{d}/self_attention/layer_norm", f"{s}.attn_ln")
        fused(f"{d}/self_attention/linear_0", f"{s}.attn", ("query", "key", "value"))
        lin(f"{d}/self_attention/linear_1", f"{s}.attn.out")
        ln(f"{d}/ffn/layer_norm", f"{s}.mlp_ln")
        lin(f"{d}/ffn/linear_0", f"{s}.mlp.0")
        lin(f"{d}/ffn/linear_1", f"{s}.mlp.2")
    for flag in ("alibi", "alibi_use_positive_positions", "scale_alibi", "scale_embeddings"):
        out[f"decoder/{flag}"] = np.array(0, np.int8)
    out["decoder/pre_norm"], out["decoder/start_from_zero_embedding"] = np.array(1, np.int8), np.array(0, np.int8)
    out["decoder/alignment_heads"], out["decoder/alignment_layer"] = np.array(1, np.int16), np.array(-1, np.int16)
    out["decoder/activation"] = np.array(3, np.int8)   # CTranslate2's Activation.GELU
    out["decoder/embeddings/weight"] = a["decoder.token_embedding.weight"]
    out["decoder/position_encodings/encodings"] = a["decoder.positional_embedding"]
    ln("decoder/layer_norm", "decoder.ln")
    for i in range(TINY["n_text_layer"]):
        s, d = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        ln(f"{d}/self_attention/layer_norm", f"{s}.attn_ln")
        fused(f"{d}/self_attention/linear_0", f"{s}.attn", ("query", "key", "value"))
        lin(f"{d}/self_attention/linear_1", f"{s}.attn.out")
        ln(f"{d}/attention/layer_norm", f"{s}.cross_attn_ln")
        lin(f"{d}/attention/linear_0", f"{s}.cross_attn.query")
        fused(f"{d}/attention/linear_1", f"{s}.cross_attn", ("key", "value"))
        lin(f"{d}/attention/linear_2", f"{s}.cross_attn.out")
        ln(f"{d}/ffn/layer_norm", f"{s}.mlp_ln")
        lin(f"{d}/ffn/linear_0", f"{s}.mlp.0")
        lin(f"{d}/ffn/linear_1", f"{s}.mlp.2")
    return dict(sorted(out.items()))


def write_tiny_ct2_folder(folder: Path, state: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_ct2_model(folder / "model.bin", "WhisperSpec", 3, ct2_layout(state),
                    {"decoder/projection/weight": "decoder/embeddings/weight"})
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|ko|>", "<|translate|>", "<|transcribe|>",
                "<|notimestamps|>", "<|0.00|>", "<|0.02|>"]
    vocabulary = [f"t{i}" for i in range(TINY["n_vocab"] - len(specials))] + specials
    (folder / "vocabulary.json").write_text(json.dumps(vocabulary))
    eot = TINY["n_vocab"] - len(specials)
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0]], "lang_ids": [eot + 2], "suppress_ids": [], "suppress_ids_begin": [],
        "layer_norm_epsilon": None, "unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>"}))


def our_model(dims: dict[str, int], state: dict[str, torch.Tensor]) -> tuple[AudioEncoder, TextDecoder]:
    encoder = AudioEncoder(WhisperCTCConfig(vocab_size=2, **{k: dims[k] for k in ENCODER_KEYS}))
    encoder.load_state_dict({k.removeprefix("encoder."): v.float() for k, v in state.items()
                             if k.startswith("encoder.") and k != "encoder.positional_embedding"})
    decoder = TextDecoder(dims)
    load_decoder_state(decoder, state, "test")
    return encoder.eval(), decoder.eval()


def encode(encoder: AudioEncoder, mel: np.ndarray) -> torch.Tensor:
    """mel (T, n_mels) -> ln_post output (1, T/2, d)."""
    feats = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None]
    with torch.no_grad():
        x, _ = encoder.front(feats, torch.tensor([feats.size(1)]))
        for block in encoder.blocks:
            x = block(x, None)
        return encoder.ln_post(x)


def greedy(decoder: TextDecoder, audio: torch.Tensor, prefix: list[int], eot: int, limit: int) -> list[int]:
    ids, cache = list(prefix), {}
    with torch.no_grad():
        logits = decoder(torch.tensor([ids]), audio, cache)
        while len(ids) - len(prefix) < limit:
            token = int(logits[0, -1].argmax())
            if token == eot:
                break
            ids.append(token)
            logits = decoder(torch.tensor([[token]]), audio, cache)
    return ids[len(prefix):]


def test_tiny_ct2_folder_round_trips_every_tensor(tmp_path: Path) -> None:
    state = tiny_state()
    write_tiny_ct2_folder(tmp_path / "ct2", state)
    result = CliRunner().invoke(kocall_main, ["convert-whisper", str(tmp_path / "ct2"), str(tmp_path / "tiny.pt")])
    assert result.exit_code == 0, result.output
    dims, loaded = load_whisper_checkpoint(tmp_path / "tiny.pt")
    assert dims == TINY
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor.float()), name
    raw = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["model_state_dict"].values())
    decoder = load_text_decoder(tmp_path / "tiny.pt")   # the zero-shot decoder alone
    assert torch.equal(decoder.blocks[1].cross_attn.value.weight, state["decoder.blocks.1.cross_attn.value.weight"].float())
    assert not decoder.training


def test_tiny_converted_model_equals_ctranslate2(tmp_path: Path) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 (bash bench/install_peers.sh whisper)")
    state = tiny_state(seed=1)
    write_tiny_ct2_folder(tmp_path / "ct2", state)
    convert_ct2_folder(tmp_path / "ct2", tmp_path / "tiny.pt", dtype="float32")
    dims, loaded = load_whisper_checkpoint(tmp_path / "tiny.pt")
    encoder, decoder = our_model(dims, loaded)
    reference = ctranslate2.models.Whisper(str(tmp_path / "ct2"), device="cpu", compute_type="float32")
    mel = np.random.default_rng(0).standard_normal((2 * TINY["n_audio_ctx"], TINY["n_mels"])).astype(np.float32)
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None]))
    expected = np.array(reference.encode(features, to_cpu=True))
    ours = encode(encoder, mel)
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-4, rtol=1e-3)
    eot = TINY["n_vocab"] - 8
    prefix = [eot + 1, eot + 2, eot + 4, eot + 5]   # sot, ko, transcribe, notimestamps
    result = reference.generate(features, [prefix], beam_size=1, suppress_blank=False, suppress_tokens=[],
                                max_length=8)
    assert result[0].sequences_ids[0]   # something to compare
    assert greedy(decoder, ours, prefix, eot, limit=8 - len(prefix)) == result[0].sequences_ids[0]


@pytest.mark.parametrize("problem", ["missing", "empty", "truncated", "not whisper", "output is input"])
def test_bad_ct2_folders_are_one_line(tmp_path: Path, problem: str) -> None:
    folder = tmp_path / "ct2"
    out = tmp_path / "out.pt"
    if problem != "missing":
        write_tiny_ct2_folder(folder, tiny_state())
    model_bin = folder / "model.bin"
    if problem == "empty":
        model_bin.write_bytes(b"")
    elif problem == "truncated":
        model_bin.write_bytes(model_bin.read_bytes()[:5000])
    elif problem == "not whisper":
        spec, variables, _ = read_ct2_model(model_bin)
        write_ct2_model(model_bin, "TransformerSpec", 1, variables)
    elif problem == "output is input":
        out = model_bin
    before = model_bin.read_bytes() if model_bin.is_file() else None
    with pytest.raises(KocallError) as err:
        convert_ct2_folder(folder, out)
    message = err.value.format_message()
    assert "\n" not in message and (str(folder) in message)
    assert not (tmp_path / "out.pt").exists()
    if before is not None:
        assert model_bin.read_bytes() == before   # the input is never touched


@pytest.mark.parametrize("problem", ["missing", "garbage", "huge dims", "wrong shape", "encoder only", "bool dims"])
def test_bad_full_checkpoints_are_one_line_naming_the_file(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "bad.pt"
    state = tiny_state()
    dims = dict(TINY)
    if problem == "garbage":
        path.write_bytes(b"\x80\x02 not a checkpoint")
    elif problem != "missing":
        if problem == "huge dims":   # a tiny file claiming a 10^9-token vocabulary: refused unbuilt
            dims["n_vocab"] = 10 ** 9
        elif problem == "wrong shape":
            state["decoder.blocks.1.mlp.0.weight"] = torch.zeros(7, 32).half()
        elif problem == "encoder only":
            state = {k: v for k, v in state.items() if k.startswith("encoder.")}
        elif problem == "bool dims":
            dims["n_text_layer"] = True
        torch.save({"dims": dims, "model_state_dict": state}, path)
    with pytest.raises(KocallError) as err:
        load_whisper_checkpoint(path)
    message = err.value.format_message()
    assert str(path) in message and "\n" not in message
    if problem == "encoder only":
        assert "convert-whisper" in message


def test_real_whisper_base_conversion_equals_ctranslate2(tmp_path: Path) -> None:
    if not (CT2_DIR / "model.bin").is_file():
        pytest.skip(f"no {CT2_DIR}/model.bin (bash bench/install_peers.sh whisper assembles it)")
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 (bash bench/install_peers.sh whisper)")
    corpus = shared_corpora() / "kspon_sample"
    if not corpus.is_dir():
        pytest.skip(f"shared corpora not present ({corpus}); this test needs real speech")
    from kocall.audio import load_audio
    from kocall.features import wav_to_fbank
    from kocall.whisper_ctc.tokenizer import WhisperTokenizer
    from kocall_kernels.fbank.config import FbankConfig

    dims = convert_ct2_folder(CT2_DIR, tmp_path / "base.pt")
    dims, state = load_whisper_checkpoint(tmp_path / "base.pt")
    encoder, decoder = our_model(dims, state)
    tokenizer = WhisperTokenizer.from_dir(CT2_DIR)
    reference = ctranslate2.models.Whisper(str(CT2_DIR), device="cpu", compute_type="float32", intra_threads=2)
    for utt in ("KaiSpeech_000001", "KaiSpeech_000002"):
        samples, rate = load_audio(str(corpus / "audio" / f"{utt}.flac"), utt, expected_sr=16000)
        window = np.zeros(30 * rate, np.float32)   # CTranslate2 takes Whisper's 30-s window
        window[:len(samples)] = samples[:len(window)]
        mel = wav_to_fbank(window, rate, FbankConfig.whisper())
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None]))
        expected = np.array(reference.encode(features, to_cpu=True))
        ours = encode(encoder, mel)
        diff = np.abs(ours.numpy() - expected)
        cosine = float(np.sum(ours.numpy() * expected) / np.linalg.norm(ours.numpy()) / np.linalg.norm(expected))
        assert diff.mean() < 2e-3 and cosine > 0.9999, (utt, diff.mean(), cosine)
        prefix = tokenizer.sot_sequence()
        result = reference.generate(features, [prefix], beam_size=1, suppress_blank=False, suppress_tokens=[],
                                    max_length=120)
        ids = greedy(decoder, ours, prefix, tokenizer.eot, limit=120 - len(prefix))
        assert ids == result[0].sequences_ids[0], (utt, tokenizer.decode(ids))
        assert len(tokenizer.decode(ids).strip()) > 3
