"""kocall export: int8 model dirs round-trip close to float, are several times smaller, run
int8 kernels, and every kind of damaged model dir fails with a KocallError naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from kocall import export as ex
from kocall.conformer_ctc.model import build_model
from kocall.errors import KocallError

N_MELS = 40
VOCAB = 30
CONFIG = {
    "arch": "conformer_ctc",
    "model": dict(n_mels=N_MELS, vocab_size=VOCAB, d_model=64, num_layers=2, num_heads=4, ff_mult=4,
                  conv_kernel=15, subsampling=4, subsampling_channels=32, dropout=0.0),
    "quantized": False,
    "lm": "../lm/lm.arpa",
}


def write_float_dir(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    path.mkdir(parents=True)
    torch.save(model.state_dict(), path / "model.pt")
    (path / "config.json").write_text(json.dumps(CONFIG))
    (path / "tokens.txt").write_text("<blk> 0\n▁ 1\n<unk> 2\n" + "".join(f"가{i} {i}\n" for i in range(3, VOCAB)))
    (path / "cmvn.json").write_text(json.dumps({"mean": [1.0] * N_MELS, "std": [2.0] * N_MELS, "frames": 9}))
    (path / "fbank.yaml").write_text(f"sample_rate: 16000\nn_mels: {N_MELS}\n")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("exp") / "am"
    src = write_float_dir(root / "final")
    ex.export_int8(src, root / "final_int8")
    return src, root / "final_int8"


def float_model(src: Path) -> nn.Module:
    model = build_model(CONFIG)
    model.load_state_dict(torch.load(src / "model.pt", weights_only=True))
    return model.eval()


def test_round_trip_is_close_to_float_and_runs_int8_kernels(exported) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    src, dst = exported
    qmodel, tokens, config = ex.load_int8_model_dir(dst)
    assert config["quantized"] == ex.QUANT_TAG
    assert not any(type(m) in (nn.Linear, nn.MultiheadAttention) for m in qmodel.modules())
    n_int8 = sum(isinstance(m, DynamicLinear) for m in qmodel.modules())
    assert n_int8 == 2 * (4 + 2 + 2) + 2  # per block: 4 FF, 2 conv pointwise, attention in/out; front end, output

    torch.manual_seed(1)
    feats = torch.randn(2, 300, N_MELS)
    lens = torch.tensor([300, 200])  # padded second utterance: masking must survive the swap
    with torch.no_grad():
        ref, ref_lens = float_model(src)(feats, lens)
        out, out_lens = qmodel(feats, lens)
    assert torch.equal(ref_lens, out_lens)
    for b, n in enumerate(out_lens.tolist()):
        diff = (ref[b, :n] - out[b, :n]).abs()
        spread = ref[b, :n].abs().max()
        assert diff.max() < 0.05 * spread, (diff.max(), spread)
        assert (ref[b, :n].argmax(-1) == out[b, :n].argmax(-1)).float().mean() > 0.9
    # Quantisation must actually change something (the int8 path really ran).
    assert (ref - out).abs().max() > 0


def test_float_activations_load_the_dequantised_weights(exported, tmp_path: Path) -> None:
    # --activations float: the same int8 file; at load every weight is q x scale in a float layer,
    # so the model equals the float model with those weights, and it may run on any device.
    src, dynamic_dst = exported
    dst = tmp_path / "final_int8_wo"
    ex.export_int8(src, dst, activations="float")
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"]["activations"] == "float"
    assert (dst / "model.pt").read_bytes() == (dynamic_dst / "model.pt").read_bytes()
    model, _, _ = ex.load_int8_model_dir(dst)
    assert not any(isinstance(m, ex.Int8SelfAttention) for m in model.modules())
    state = torch.load(dst / "model.pt", weights_only=True)
    want = float_model(src)
    for key in [k[: -len(ex.INT8_SUFFIX)] for k in state if k.endswith(ex.INT8_SUFFIX)]:
        dequantised = state[key + ex.INT8_SUFFIX].float() * state[key + ex.SCALE_SUFFIX][:, None]
        want.get_parameter(key).data.copy_(dequantised)
    torch.manual_seed(2)
    feats, lens = torch.randn(2, 200, N_MELS), torch.tensor([200, 150])
    with torch.no_grad():
        assert torch.equal(model(feats, lens)[0], want(feats, lens)[0])
    # The stage's --if-stale export: a dir of the other kind is not "up to date".
    assert not ex.export_int8(src, dst, if_stale=True, activations="dynamic").skipped
    assert ex.export_int8(src, dst, if_stale=True, activations="dynamic").skipped
    # The family's default: Conformer-CTC dynamic.
    assert ex.default_activations(src) == "dynamic"


def test_int8_dir_is_small_self_contained_and_plain_tensors(exported) -> None:
    src, dst = exported
    assert ex.dir_size_bytes(dst) * 3 < ex.dir_size_bytes(src)
    names = lambda d: sorted(p.name for p in d.iterdir() if p.name != ".kocall-output")  # noqa: E731
    assert names(dst) == names(src)
    state = torch.load(dst / "model.pt", weights_only=True)
    int8 = [k for k, v in state.items() if v.dtype == torch.int8]
    assert int8 and all(k.endswith(ex.INT8_SUFFIX) and k[: -len(ex.INT8_SUFFIX)] + ex.SCALE_SUFFIX in state
                        for k in int8)
    config = json.loads((dst / "config.json").read_text())
    # The relative LM path still points at the same file from the new directory.
    assert (dst / config["lm"]).resolve() == (src / CONFIG["lm"]).resolve()
    assert config["model"] == CONFIG["model"]


def test_quantize_weight_per_channel_error_bound() -> None:
    weight = torch.randn(8, 50) * torch.logspace(-3, 1, 8)[:, None]  # rows of very different scale
    weight[3] = 0.0
    q, scale = ex.quantize_weight(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    recon = q.float() * scale[:, None]
    # Each row's error is within half a step of its OWN scale, however small the row is.
    assert ((recon - weight).abs() <= scale[:, None] / 2 + 1e-7).all()
    assert torch.equal(recon[3], torch.zeros(50))


def test_load_any_dispatches_and_int8_is_cpu_only(exported) -> None:
    src, dst = exported
    model, tokenizer, config = ex.load_any_model_dir(dst, "cpu")
    assert config["quantized"] == ex.QUANT_TAG and len(tokenizer.symbols) == VOCAB
    assert any(isinstance(m, ex.Int8SelfAttention) for m in model.modules())
    model, tokenizer, config = ex.load_any_model_dir(src, "cpu")
    assert config["quantized"] is False and not any(isinstance(m, ex.Int8SelfAttention) for m in model.modules())
    with pytest.raises(KocallError, match="CPU only"):
        ex.load_any_model_dir(dst, "cuda")


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def tamper_shape(d: Path) -> None:
    state = torch.load(d / "model.pt", weights_only=True)
    key = next(k for k in state if k.endswith(ex.INT8_SUFFIX) or k.endswith("norm.weight"))
    state[key] = state[key][:-1]
    torch.save(state, d / "model.pt")


def tamper_missing_key(d: Path) -> None:
    state = torch.load(d / "model.pt", weights_only=True)
    state.pop("norm.bias")
    torch.save(state, d / "model.pt")


def tamper_extra_key(d: Path) -> None:
    state = torch.load(d / "model.pt", weights_only=True)
    state["sneaky.weight"] = torch.zeros(3)
    torch.save(state, d / "model.pt")


def tamper_vocab(d: Path) -> None:
    lines = (d / "tokens.txt").read_text().splitlines()
    (d / "tokens.txt").write_text("\n".join(lines[:-1]) + "\n")


TAMPERS = {
    "wrong shape": (tamper_shape, "model.pt", "shape"),
    "missing key": (tamper_missing_key, "model.pt", "missing tensor"),
    "extra key": (tamper_extra_key, "model.pt", "unexpected tensor"),
    "missing file": (lambda d: (d / "cmvn.json").unlink(), "cmvn.json", "missing"),
    "bad config json": (lambda d: (d / "config.json").write_text('{"arch": "conformer_ctc",'), "config.json",
                        "not valid JSON"),
    "bad cmvn json": (lambda d: (d / "cmvn.json").write_text("[1, 2"), "cmvn.json", "not valid JSON"),
    "wrong vocab": (tamper_vocab, "config.json", "vocab_size is 30 but tokens.txt has 29"),
    "corrupt weights": (lambda d: (d / "model.pt").write_bytes(b"PK\x03\x04 not a zip"), "model.pt",
                        "weights-only state dict"),
    "bad fbank yaml": (lambda d: (d / "fbank.yaml").write_text("n_mels: [40\n"), "fbank.yaml", "YAML"),
}


@pytest.mark.parametrize("kind", ["float", "int8"])
@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_damaged_model_dir_fails_naming_the_file(exported, tmp_path: Path, kind: str, name: str) -> None:
    src, dst = exported
    tamper, filename, problem = TAMPERS[name]
    broken = copy_dir(src if kind == "float" else dst, tmp_path / "broken")
    tamper(broken)
    with pytest.raises(KocallError) as err:
        ex.validate_model_dir(broken)
    message = err.value.message
    assert f"file '{filename}'" in message and problem in message, message
    if kind == "int8":  # the loader the decoder uses reports the same, not a torch traceback
        with pytest.raises(KocallError, match=filename):
            ex.load_any_model_dir(broken, "cpu")


def test_weights_for_another_vocab_name_the_output_layer(exported, tmp_path: Path) -> None:
    src, _ = exported
    broken = copy_dir(src, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["model"]["vocab_size"] = VOCAB + 5  # config and tokens.txt agree; model.pt has 30 outputs
    (broken / "config.json").write_text(json.dumps(config))
    with open(broken / "tokens.txt", "a") as handle:
        handle.write("".join(f"나{i} {i}\n" for i in range(VOCAB, VOCAB + 5)))
    with pytest.raises(KocallError, match=r"file 'model.pt': tensor 'output.weight' has shape \(30, 64\)"):
        ex.validate_model_dir(broken)


def test_export_cli_skips_when_up_to_date_and_rejects_bad_input(tmp_path: Path) -> None:
    src = write_float_dir(tmp_path / "final", seed=3)
    out = tmp_path / "final_int8"
    runner = CliRunner()
    first = runner.invoke(ex.export_cmd, ["--model", str(src), "--out", str(out), "--if-stale"])
    assert first.exit_code == 0, first.output
    assert "MB ->" in first.output
    second = runner.invoke(ex.export_cmd, ["--model", str(src), "--out", str(out), "--if-stale"])
    assert second.exit_code == 0 and "up to date" in second.output
    # A retrained float model makes the export stale again.
    torch.save(build_model(CONFIG).state_dict(), src / "model.pt")
    third = runner.invoke(ex.export_cmd, ["--model", str(src), "--out", str(out), "--if-stale"])
    assert third.exit_code == 0 and "MB ->" in third.output

    (src / "tokens.txt").unlink()
    bad = runner.invoke(ex.export_cmd, ["--model", str(src), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "tokens.txt" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()
    again = runner.invoke(ex.export_cmd, ["--model", str(out), "--out", str(tmp_path / "y")])
    assert again.exit_code == 1  # exporting an int8 dir again is refused
    assert "already quantised" in again.output
