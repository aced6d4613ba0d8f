"""The final model directory (CONTRACTS.md): model.pt, config.json, tokens.txt, cmvn.json, fbank.yaml.

It is shared by every model family (kocall.models): config.json's "arch" says which one.
`save_model_dir` writes it atomically (the directory appears complete or not at all).
`load_model_dir` rebuilds the network with `kocall.models.build_model(config)` and loads the state dict
with `torch.load(weights_only=True)`. File-level checks (missing files, bad JSON/YAML,
vocabulary and tensor shape mismatches) are shared with the int8 exporter through
`kocall.export.validate_model_dir`, so float and int8 dirs are judged by one set of rules;
int8 dirs are handed to `kocall.export.load_int8_model_dir`.

config.json layout (`kocall.models.make_config`):
    {"arch": "conformer_ctc" | "whisper_ctc", "model": {...the family's config...}, "vocab_size": V,
     "features": {...fbank.yaml...}, "subsampling": 4, "quantized": false,
     "training": {...how the weights were chosen...}}
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kocall.errors import KocallError
from kocall.fileio import atomic_dir
from kocall.models import FAMILY_MODULES, build_model

SIDE_FILES_FROM_LANG = ("tokens.txt", "bpe.model")


def save_model_dir(path: str | os.PathLike, model: nn.Module, config: dict, lang_dir: str | os.PathLike,
                   cmvn_path: str | os.PathLike, fbank_yaml: str | os.PathLike,
                   side_files: dict[str, Path] | None = None) -> Path:
    """Write a complete float model dir at `path` (replacing any previous one atomically).
    `side_files`: a family's own files, {name in the dir: source} (kocall.models.ModelFamily)."""
    path, lang_dir = Path(path), Path(lang_dir)
    sources = {"cmvn.json": Path(cmvn_path), "fbank.yaml": Path(fbank_yaml), "tokens.txt": lang_dir / "tokens.txt"}
    sources.update({name: Path(source) for name, source in (side_files or {}).items()})
    for name, source in sources.items():
        if not source.is_file():
            raise KocallError(f"model dir '{path}': cannot copy {name}: file '{source}' is missing")
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(path) as tmp:
        torch.save(state, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for name, source in sources.items():
            shutil.copyfile(source, tmp / name)
        if (lang_dir / "bpe.model").is_file():
            shutil.copyfile(lang_dir / "bpe.model", tmp / "bpe.model")
    return path


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, dict]:
    """(model in eval mode on `device`, tokenizer, config) from a float or int8 model dir."""
    from kocall.export import load_int8_model_dir, validate_model_dir

    path = Path(path)
    config_path = path / "config.json"
    if config_path.is_file():
        try:
            declared = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            declared = None  # validate_model_dir reports it with the file name
        if isinstance(declared, dict):
            if declared.get("arch", "conformer_ctc") not in FAMILY_MODULES:
                raise KocallError(f"model dir '{path}': file 'config.json': arch '{declared.get('arch')}' "
                                  f"is not one of {sorted(FAMILY_MODULES)}")
            if declared.get("quantized") not in (False, None, "none"):
                return load_int8_model_dir(path, device=str(device))
    model, state, config, _tokens = validate_model_dir(path, build_model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # validate_model_dir checked keys and shapes; defensive only
        raise KocallError(f"model dir '{path}': file 'model.pt' does not fit the model "
                          f"({str(err).splitlines()[0]})") from None
    from kocall.lang import Tokenizer

    tokenizer = Tokenizer.from_lang_dir(path)
    return model.to(device).eval(), tokenizer, config


def init_from_model_dir(model: nn.Module, path: str | os.PathLike, lang_dir: str | os.PathLike) -> str:
    """Copy into `model` every tensor of the model dir at `path` that has the same name and shape
    (ESPnet's --init_param, icefall's --init-model): a trained whisper_base_ctc starts a hybrid's
    encoder, new blocks and CTC head (two-phase training), a trained model starts a fine-tuning on
    new data. The dir's units must be those of `lang_dir` (the CTC head's rows are units); a name
    both hold with different shapes is one line, as is a dir sharing no tensor with the model."""
    from kocall.lang import Tokenizer

    from kocall.export import check_required_files, read_config

    path = Path(path)
    check_required_files(path)
    if read_config(path).get("quantized") not in (False, None, "none"):   # judged before any weight loads
        raise KocallError(f"init model '{path}': an int8 model dir; start from the float one it was exported from")
    source, tokenizer, _config = load_model_dir(path)
    wanted = Tokenizer.from_lang_dir(lang_dir)
    if list(tokenizer.symbols) != list(wanted.symbols):
        raise KocallError(f"init model '{path}': its units (tokens.txt, {len(tokenizer.symbols)}) differ from "
                          f"those of '{lang_dir}' ({len(wanted.symbols)}): train on the same lang dir")
    given = source.state_dict()
    target = model.state_dict()
    clashes = [name for name in given if name in target and given[name].shape != target[name].shape]
    if clashes:
        name = clashes[0]
        raise KocallError(f"init model '{path}': tensor '{name}' is {tuple(given[name].shape)} there but "
                          f"{tuple(target[name].shape)} in this model ({len(clashes)} such tensors): "
                          f"a model of other dims")
    shared = {name: tensor for name, tensor in given.items() if name in target}
    if not shared:
        raise KocallError(f"init model '{path}': no tensor of its {len(given)} has a name of this model "
                          f"(another architecture)")
    model.load_state_dict(shared, strict=False)
    return f"initialised {len(shared)} of {len(target)} tensors from model dir '{path}'"
