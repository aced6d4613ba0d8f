"""Compact int8 export of a model directory, and the one loader for float and int8 dirs.

Format choice (`config.json` "quantized": "int8-dynamic-linear"):

* Every `nn.Linear` weight (feed-forward blocks, the conv module's pointwise layers, the
  front-end projection, the output layer) and both projections of every
  `nn.MultiheadAttention` -- together ~97% of a Conformer's parameters -- are stored as a
  plain int8 tensor `<key>_int8` (out, in) plus a float32 per-output-channel scale
  `<key>_scale` (out,). Symmetric (zero point 0) per-channel quantisation: one badly
  scaled row cannot cost the others their precision, and no zero points need storing.
  Large vocabulary tables (nn.Embedding) and 1-d convolutions (Whisper's front end) of at
  least 65,536 weights are stored the same way, per row / output channel, and used
  dequantised (float layers: only the disk size shrinks). Everything else (biases,
  LayerNorms, small depthwise convolutions, Conformer's 2-d subsampling) stays float32: a few
  percent of the bytes, and the layers where int8 would cost the most accuracy for the least
  speed. A family may change the model before it is quantised (`export_state`, kocall.models:
  whisper_hybrid keeps only the decoder tokens that its decoding can use).
* The file is still a plain state dict of tensors, so `torch.load(weights_only=True)`
  reads it and no pickled code ever runs (a model dir from elsewhere is data, not code).
  Quantised tensor objects and TorchScript were rejected for that reason, and because
  their on-disk format changes across torch releases.
* At load time the model is rebuilt with `build_model(config)` (same code as the float
  model, so the two cannot drift apart), the float tensors are loaded, and each Linear is
  replaced by `torch.ao.nn.quantized.dynamic.Linear` whose packed weights are made from
  the stored int8 values and scales (each attention becomes `Int8SelfAttention`: two
  such Linears around float scaled-dot-product attention). Activations are quantised on the fly per batch
  (dynamic quantisation), so CPU inference really runs int8 matmuls (fbgemm/x86 on x86,
  qnnpack on ARM) -- smaller and faster, with no calibration data needed.
* Dynamic int8 kernels exist only on the CPU: an int8 dir loads with device "cpu" only.
* `quantization.activations` (`kocall export --activations`): "dynamic" (above) or "float":
  the same int8 file, but at load each weight is dequantised (q x scale) into the float
  layer, so only the weights' precision is lost (and only the disk and download size
  shrink). The default is the model family's (`int8_activations`): Conformer-CTC dynamic,
  Whisper-CTC float (Whisper's activations have outlier channels that per-batch int8
  clips). "dynamic-decoder": int8 matmuls in the attention decoder (`decoder.*`) only, float
  elsewhere: the decoder's search steps multiply a few rows by all its weights (memory-bound),
  and int8 weights are read four times faster, while the encoder's outliers stay float
  (whisper_hybrid's default). A dir without the field is "dynamic".

The directory is self-contained: model.pt, config.json, tokens.txt, cmvn.json, fbank.yaml
and any other side file of the float dir (e.g. bpe.model) are copied; a relative LM path
in config.json is rewritten so that it still points at the same file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import torch
import torch.nn.functional as F
from torch import nn

from kocall.errors import KocallError
from kocall.fileio import atomic_dir, check_output_dir, check_replaceable, read_text

QUANT_TAG = "int8-dynamic-linear"
ACTIVATIONS = ("dynamic", "float", "dynamic-decoder")   # quantization.activations of an int8 dir
DECODER_PREFIX = "decoder."   # "dynamic-decoder": the layers of an attention decoder run int8
FORMAT_VERSION = 2   # 2: 1-d convolutions int8 too, pruned decoder vocabularies
REQUIRED_FILES = ("model.pt", "config.json", "tokens.txt", "cmvn.json", "fbank.yaml")
INT8_SUFFIX = "_int8"      # "<float key>_int8": the int8 values of a quantised weight
SCALE_SUFFIX = "_scale"    # "<float key>_scale": its per-output-channel float32 scales

BuildFn = Callable[[dict], nn.Module]


# ---------------------------------------------------------------------------- reading


def _fail(path: Path, problem: str) -> KocallError:
    return KocallError(f"model dir '{path.parent}': file '{path.name}': {problem}")


def check_required_files(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise KocallError(f"model dir '{model_dir}' does not exist or is not a directory")
    for name in REQUIRED_FILES:
        if not (model_dir / name).is_file():
            raise _fail(model_dir / name, "is missing")


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise _fail(path, "is missing")
    try:
        config = json.loads(read_text(path))
    except FileNotFoundError:
        raise _fail(path, "is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise _fail(path, "must hold a JSON object")
    return config


def read_tokens(model_dir: Path) -> list[str]:
    """tokens.txt: `symbol id` lines with ids 0..V-1, each once."""
    path = model_dir / "tokens.txt"
    by_id: dict[int, str] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise _fail(path, f"line {lineno}: expected 'symbol id', got '{line}'")
        idx = int(parts[1])
        if idx in by_id:
            raise _fail(path, f"line {lineno}: id {idx} appears twice")
        by_id[idx] = parts[0]
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
        raise _fail(path, "ids must be 0..V-1 with none missing")
    return [by_id[i] for i in range(len(by_id))]


def check_side_files(model_dir: Path) -> None:
    """cmvn.json must be {"mean": [...], "std": [...]} of equal length; fbank.yaml a mapping."""
    import yaml

    path = model_dir / "cmvn.json"
    try:
        cmvn = json.loads(read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise _fail(path, f"is not valid JSON ({err})") from None
    if not isinstance(cmvn, dict) or not isinstance(cmvn.get("mean"), list) or not isinstance(cmvn.get("std"), list):
        raise _fail(path, "must hold {\"mean\": [...], \"std\": [...]}")
    if len(cmvn["mean"]) != len(cmvn["std"]) or not cmvn["mean"]:
        raise _fail(path, f"mean has {len(cmvn['mean'])} values but std has {len(cmvn['std'])}")
    path = model_dir / "fbank.yaml"
    try:
        fbank = yaml.safe_load(read_text(path))
    except yaml.YAMLError as err:
        raise _fail(path, f"is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(fbank, dict):
        raise _fail(path, "must hold a YAML mapping")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True (no pickled code), errors naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _fail(path, "is missing") from None
    except Exception as err:  # torch raises many kinds for a corrupt or unsafe file
        raise _fail(path, f"cannot be read as a weights-only state dict ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(path, "must hold a dict of tensors (a state dict)")
    return state


def vocab_size_of(model: nn.Module) -> int | None:
    """The output dimension: the CTC head `output` (every family names it so), else out_features of
    the last Linear registered in the model (a hybrid's decoder comes after its head)."""
    if isinstance(getattr(model, "output", None), nn.Linear):
        return model.output.out_features
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return None if last is None else last.out_features


def check_vocab(model: nn.Module, config: dict, tokens: list[str], model_dir: Path) -> None:
    # config.json nests the hyper-parameters under "model" (a bare dict is accepted too).
    declared = (config.get("model") if isinstance(config.get("model"), dict) else config).get("vocab_size")
    if declared is not None and declared != len(tokens):
        raise _fail(model_dir / "config.json",
                    f"vocab_size is {declared} but tokens.txt has {len(tokens)} tokens")
    output = vocab_size_of(model)
    if output is not None and output != len(tokens):
        raise _fail(model_dir / "tokens.txt",
                    f"has {len(tokens)} tokens but the model outputs {output} classes")


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, tuple[torch.Size, str]],
                     path: Path) -> None:
    """Same keys, same shapes; `expected` maps key -> (shape, "int8"|"float"|"other")."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        raise _fail(path, f"missing tensor(s) {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if extra:
        raise _fail(path, f"unexpected tensor(s) {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    for key, (shape, kind) in expected.items():
        tensor = state[key]
        if tensor.shape != shape:
            raise _fail(path, f"tensor '{key}' has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
        if kind == "int8" and tensor.dtype != torch.int8:
            raise _fail(path, f"tensor '{key}' has dtype {tensor.dtype}, expected torch.int8")
        if kind == "float" and not tensor.is_floating_point():
            raise _fail(path, f"tensor '{key}' has dtype {tensor.dtype}, expected a float tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _fail(path, f"tensor '{key}' holds NaN or infinite values")


def _kind(tensor: torch.Tensor) -> str:
    # Integer buffers (e.g. BatchNorm's num_batches_tracked) keep their own dtype: "other".
    return "float" if tensor.is_floating_point() else "other"


# ---------------------------------------------------------------------- quantisation


def quantizable_modules(model: nn.Module) -> dict[str, str]:
    """Module name -> "linear" | "mha" | "embedding" | "conv" for every layer stored as int8.

    A plain nn.Linear becomes a dynamic int8 Linear. nn.MultiheadAttention (its
    in_proj_weight is a bare Parameter and its forward reads out_proj.weight directly,
    which is why torch's own quantize_dynamic leaves it float) becomes `Int8SelfAttention`,
    which runs both projections as int8 matmuls and the attention itself in float.
    """
    found: dict[str, str] = {}
    inside_mha: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and _mha_supported(module):
            found[name] = "mha"
            inside_mha.add(f"{name}.out_proj")
        elif type(module) is nn.Linear and name and name not in inside_mha:
            found[name] = "linear"
        elif type(module) is nn.Embedding and module.weight.numel() >= MIN_INT8_TABLE:
            found[name] = "embedding"   # stored int8 per row, used dequantised (a decoder's tied output)
        elif type(module) is nn.Conv1d and module.weight.numel() >= MIN_INT8_TABLE:
            found[name] = "conv"        # stored int8 per output channel, used dequantised (Whisper's front end)
    return found


MIN_INT8_TABLE = 1 << 16   # elements: a weight-only table worth storing as int8 (Whisper's vocabulary: 26.6 M)
DEQUANTISED_KINDS = ("embedding", "conv")   # int8 on disk, float weights in memory whatever the activations


def _mha_supported(mha: nn.MultiheadAttention) -> bool:
    return (mha.batch_first and mha._qkv_same_embed_dim and mha.in_proj_bias is not None
            and mha.bias_k is None and not mha.add_zero_attn)


def quantized_weight_keys(modules: dict[str, str]) -> list[str]:
    """The float state-dict keys that are stored as `<key>_int8` + `<key>_scale`."""
    keys = []
    for name, kind in modules.items():
        keys += [f"{name}.in_proj_weight", f"{name}.out_proj.weight"] if kind == "mha" else [f"{name}.weight"]
    return keys


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: w ~= q * scale (per dim 0), q in [-127, 127]."""
    weight = weight.detach().float().cpu()
    scale = weight.reshape(weight.shape[0], -1).abs().amax(dim=1) / 127.0
    # An all-zero row would give scale 0 (division by zero); any positive scale is exact for it.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / per_channel(scale, weight.dim())).clamp_(-127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def per_channel(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """scale (out,) shaped to multiply a weight of `ndim` dims channel by channel."""
    return scale.view(-1, *([1] * (ndim - 1)))


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * per_channel(scale, q.dim())


def quantize_state_dict(float_state: dict[str, torch.Tensor], modules: dict[str, str]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    weights = set(quantized_weight_keys(modules))
    for key, tensor in float_state.items():
        if key in weights:
            state[key + INT8_SUFFIX], state[key + SCALE_SUFFIX] = quantize_weight(tensor)
        else:
            state[key] = tensor.detach().cpu().clone()
    return state


def expected_int8_state(model: nn.Module, modules: dict[str, str]) -> dict[str, tuple[torch.Size, str]]:
    expected: dict[str, tuple[torch.Size, str]] = {}
    weights = set(quantized_weight_keys(modules))
    for key, tensor in model.state_dict().items():
        if key in weights:
            expected[key + INT8_SUFFIX] = (tensor.shape, "int8")
            expected[key + SCALE_SUFFIX] = (torch.Size([tensor.shape[0]]), "float")
        else:
            expected[key] = (tensor.shape, _kind(tensor))
    return expected


def choose_engine() -> str:
    """x86 (fbgemm's successor) on x86 CPUs, qnnpack on ARM."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    raise KocallError("this torch build has no quantised CPU engine (x86, fbgemm or qnnpack)")


def int8_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A dynamic-quantised Linear whose packed weight is exactly the stored int8 values."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    out_features, in_features = q.shape
    with warnings.catch_warnings():
        # The quantised tensor constructors warn about a future deprecation; the packed
        # weights they feed are what makes the int8 matmul run today.
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(out_features, dtype=torch.long), 0)
        module = DynamicLinear(in_features, out_features, bias_=bias is not None, dtype=torch.qint8)
        module.set_weight_bias(qweight, None if bias is None else bias.float())
    return module


class Int8SelfAttention(nn.Module):
    """Drop-in for a batch_first nn.MultiheadAttention at inference: int8 projections.

    Same call as the float module (query, key, value, key_padding_mask=..., need_weights=False)
    and the same maths: packed q/k/v projection, scaled dot-product attention with padded
    keys masked, output projection. Attention dropout is not applied (inference only).
    """

    def __init__(self, in_proj: nn.Module, out_proj: nn.Module, num_heads: int, embed_dim: int) -> None:
        super().__init__()
        self.in_proj = in_proj
        self.out_proj = out_proj
        self.num_heads = num_heads
        self.embed_dim = embed_dim

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.embed_dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **_: Any) -> tuple[torch.Tensor, None]:
        if need_weights or attn_mask is not None:
            raise KocallError("int8 attention supports key_padding_mask only (need_weights=False, no attn_mask)")
        d = self.embed_dim
        if query is key and key is value:  # self-attention: one fused projection
            q, k, v = self.in_proj(query).split(d, dim=-1)
        else:
            q = self.in_proj(query)[..., :d]
            k = self.in_proj(key)[..., d:2 * d]
            v = self.in_proj(value)[..., 2 * d:]
        mask = None
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool:
                raise KocallError("int8 attention: key_padding_mask must be boolean (True = padded key)")
            mask = ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), attn_mask=mask)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d)), None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _int8_module(model: nn.Module, name: str, kind: str, state: dict[str, torch.Tensor]) -> nn.Module:
    if kind == "linear":
        key = f"{name}.weight"
        return int8_linear(state[key + INT8_SUFFIX], state[key + SCALE_SUFFIX], state.get(f"{name}.bias"))
    mha = model.get_submodule(name)
    in_key, out_key = f"{name}.in_proj_weight", f"{name}.out_proj.weight"
    in_proj = int8_linear(state[in_key + INT8_SUFFIX], state[in_key + SCALE_SUFFIX], state[f"{name}.in_proj_bias"])
    out_proj = int8_linear(state[out_key + INT8_SUFFIX], state[out_key + SCALE_SUFFIX],
                           state.get(f"{name}.out_proj.bias"))
    return Int8SelfAttention(in_proj, out_proj, mha.num_heads, mha.embed_dim)


def runs_int8(name: str, kind: str, activations: str) -> bool:
    """Whether stored layer `name` runs int8 matmuls (else its weights are dequantised at load)."""
    if kind in DEQUANTISED_KINDS or activations == "float":
        return False
    return activations == "dynamic" or name.startswith(DECODER_PREFIX)


def build_int8_model(model: nn.Module, state: dict[str, torch.Tensor], modules: dict[str, str],
                     activations: str = "dynamic") -> nn.Module:
    """Load the float tensors into `model`, then swap each layer that `runs_int8` for its int8
    twin; the other listed layers get their int8 weights dequantised (q x scale)."""
    dynamic = {name: kind for name, kind in modules.items() if runs_int8(name, kind, activations)}
    if dynamic:
        torch.backends.quantized.engine = choose_engine()
    float_part = {k: v for k, v in state.items() if not k.endswith((INT8_SUFFIX, SCALE_SUFFIX))}
    float_part.update({key: dequantize_weight(state[key + INT8_SUFFIX], state[key + SCALE_SUFFIX])
                       for key in quantized_weight_keys({n: k for n, k in modules.items() if n not in dynamic})})
    result = model.load_state_dict(float_part, strict=False)
    unexpected_missing = set(result.missing_keys) - set(quantized_weight_keys(dynamic))
    if unexpected_missing or result.unexpected_keys:  # check_state_dict ran first; defensive only
        raise KocallError(f"int8 state dict does not fit the model: missing {sorted(unexpected_missing)[:3]}, "
                          f"unexpected {result.unexpected_keys[:3]}")
    for name, kind in dynamic.items():
        _set_submodule(model, name, _int8_module(model, name, kind, state))
    return model.eval()


# ------------------------------------------------------------------------ model dirs


def _default_build() -> BuildFn:
    from kocall.models import build_model   # any family, by config.json "arch"

    return build_model


def _load_tokenizer(model_dir: Path) -> Any:
    from kocall.lang import Tokenizer

    return Tokenizer.from_lang_dir(model_dir)


MAX_PARAMETERS = 2_000_000_000   # far above any model kocall builds (Whisper large: 1.55 G)


def check_model_size(build: BuildFn, config: dict, model_dir: Path) -> None:
    """Before a model is built: count the parameters config.json asks for on the meta device
    (nothing allocated) and refuse more than MAX_PARAMETERS or than model.pt can hold (at least
    a byte each, int8 included): a 2 kB config cannot ask for hundreds of GB."""
    hyper = config.get("model", config) if isinstance(config.get("model", config), dict) else {}
    for key, value in hyper.items():   # the meta build itself loops over layers: bound those first
        limit = 1024 if any(word in key for word in ("layer", "block", "head")) else 1 << 20
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= limit:
            raise _fail(model_dir / "config.json", f"model.{key} {value} is outside 0..{limit}")
    try:
        with torch.device("meta"):
            meta = build(config)
    except KocallError:
        raise
    except Exception:  # noqa: BLE001 - the real build names a config that builds nothing
        return
    count = sum(p.numel() for p in meta.parameters())
    weights = model_dir / "model.pt"
    stored = weights.stat().st_size if weights.is_file() else 0
    if count > MAX_PARAMETERS or count > stored + (1 << 20):
        raise _fail(model_dir / "config.json", f"asks for a model of {count:,} parameters, more than "
                                               f"'{weights.name}' ({stored:,} bytes) can hold; nothing was built")


def _build(build: BuildFn, config: dict, model_dir: Path) -> nn.Module:
    check_model_size(build, config, model_dir)
    try:
        return build(config)
    except KocallError:
        raise
    except Exception as err:  # a config whose hyper-parameters do not make a model
        raise _fail(model_dir / "config.json", f"does not describe a buildable model "
                                               f"({type(err).__name__}: {err})") from None


def validate_model_dir(model_dir: str | os.PathLike, build: BuildFn | None = None
                       ) -> tuple[nn.Module, dict[str, torch.Tensor], dict, list[str]]:
    """Check every file of a float or int8 model dir against the model that config.json builds.

    Returns (freshly built float model, state dict, config, tokens). Raises KocallError
    naming the file and the problem for any missing file, bad JSON/YAML, wrong vocab size,
    missing/extra tensor or wrong tensor shape.
    """
    model_dir = Path(model_dir)
    check_required_files(model_dir)
    config = read_config(model_dir)
    tokens = read_tokens(model_dir)
    check_side_files(model_dir)
    model = _build(build or _default_build(), config, model_dir)
    check_vocab(model, config, tokens, model_dir)
    state = load_state_dict(model_dir / "model.pt")
    kind = config.get("quantized", False)
    if kind in (False, None, "none"):
        expected = {k: (v.shape, _kind(v)) for k, v in model.state_dict().items()}
    elif kind == QUANT_TAG:
        expected = expected_int8_state(model, _stored_modules(config, model, model_dir))
    else:
        raise _fail(model_dir / "config.json", f"unknown \"quantized\" value {kind!r} "
                                               f"(expected false or \"{QUANT_TAG}\")")
    check_state_dict(state, expected, model_dir / "model.pt")
    return model, state, config, tokens


def _stored_modules(config: dict, model: nn.Module, model_dir: Path) -> dict[str, str]:
    info = config.get("quantization")
    if not isinstance(info, dict) or not isinstance(info.get("modules"), dict):
        raise _fail(model_dir / "config.json", "an int8 dir needs \"quantization\": {\"modules\": {...}}")
    known = quantizable_modules(model)
    for name, kind in info["modules"].items():
        if known.get(name) != kind:
            raise _fail(model_dir / "config.json", f"quantised layer '{name}' ({kind}) is not a layer of this model")
    return dict(info["modules"])


def stored_activations(config: dict, model_dir: Path) -> str:
    info = config.get("quantization")
    value = info.get("activations", "dynamic") if isinstance(info, dict) else "dynamic"
    if value not in ACTIVATIONS:
        raise _fail(model_dir / "config.json", f"quantization.activations {value!r} is not one of {ACTIVATIONS}")
    return value


def load_int8_model_dir(model_dir: str | os.PathLike, device: str = "cpu", build: BuildFn | None = None
                        ) -> tuple[nn.Module, Any, dict]:
    """Load an int8 model dir as (model, tokenizer, config); dynamic activations: CPU only."""
    model_dir = Path(model_dir)
    model, state, config, _ = validate_model_dir(model_dir, build)
    if config.get("quantized") != QUANT_TAG:
        raise _fail(model_dir / "config.json", f"\"quantized\" is {config.get('quantized')!r}, not \"{QUANT_TAG}\"")
    activations = stored_activations(config, model_dir)
    if str(device) != "cpu" and activations != "float":
        raise KocallError(f"model dir '{model_dir}' is int8 ({QUANT_TAG}); its kernels run on the CPU only: "
                          f"use --device cpu")
    model = build_int8_model(model, state, _stored_modules(config, model, model_dir), activations)
    return model.to(device), _load_tokenizer(model_dir), config


def load_any_model_dir(model_dir: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Any, dict]:
    """The loader for `kocall decode --model DIR`: dispatches on config.json "quantized".

    int8 dirs load here; float dirs go to kocall.model_dir.load_model_dir, which
    judges them with the same `validate_model_dir` (and itself forwards int8 dirs here).
    """
    model_dir = Path(model_dir)
    check_required_files(model_dir)
    if read_config(model_dir).get("quantized") == QUANT_TAG:
        return load_int8_model_dir(model_dir, device)
    from kocall.model_dir import load_model_dir

    return load_model_dir(model_dir, device)


# ---------------------------------------------------------------------------- export


@dataclass
class ExportSummary:
    out_dir: Path
    float_bytes: int
    int8_bytes: int
    n_layers: int
    quantized_params: int
    total_params: int
    activations: str = "dynamic"
    skipped: bool = False


def dir_size_bytes(path: str | os.PathLike) -> int:
    """Bytes of the regular files under `path` (the LM is referenced, not inside, so not counted)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_fingerprint(src: Path) -> str:
    """Hash of the float dir's files: the export is up to date when this is unchanged."""
    digest = hashlib.sha256()
    for path in sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.name} {file_sha256(path)}\n".encode())
    digest.update(f"format {FORMAT_VERSION}\n".encode())
    return digest.hexdigest()


def _rebase_lm_path(value: Any, src: Path, dst: Path) -> Any:
    # A relative LM path is relative to the model dir; keep it pointing at the same file.
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    return os.path.relpath(os.path.normpath(src.resolve() / value), dst.resolve())


def is_up_to_date(src: Path, dst: Path, activations: str) -> bool:
    try:
        config = read_config(dst)
    except KocallError:
        return False
    info = config.get("quantization") if isinstance(config.get("quantization"), dict) else {}
    return (info.get("source_fingerprint") == _source_fingerprint(src)
            and info.get("activations", "dynamic") == activations
            and all((dst / n).is_file() for n in REQUIRED_FILES))


SCHEMES = {"dynamic": "dynamic int8 activations",
           "float": "float activations (weights dequantised at load)",
           "dynamic-decoder": "dynamic int8 activations in the decoder, float elsewhere (weights dequantised)"}


def default_activations(src: Path) -> str:
    """The model family's int8 activations (kocall.models: `int8_activations`)."""
    from kocall.models import arch_of, family

    return family(arch_of(read_config(src))).int8_activations


def export_int8(src: str | os.PathLike, dst: str | os.PathLike, build: BuildFn | None = None,
                if_stale: bool = False, activations: str | None = None) -> ExportSummary:
    """Write the int8 twin of float model dir `src` to `dst` (atomically, as a whole dir).
    activations: one of ACTIVATIONS (see the module docstring); None: the family's default."""
    src, dst = Path(src), Path(dst)
    check_output_dir(dst, {"--model": src})  # --out may not be, hold or sit inside the float model
    check_replaceable(dst)   # nor a folder kocall did not write: checked before the model loads
    activations = activations or default_activations(src)
    if activations not in ACTIVATIONS:
        raise KocallError(f"int8 activations must be one of {ACTIVATIONS}, not {activations!r}")
    if if_stale and dst.is_dir() and is_up_to_date(src, dst, activations):
        return ExportSummary(dst, dir_size_bytes(src), dir_size_bytes(dst), 0, 0, 0, activations, skipped=True)
    model, state, config, _ = validate_model_dir(src, build)
    if config.get("quantized") not in (False, None, "none"):
        raise _fail(src / "config.json", f"is already quantised ({config.get('quantized')!r}); export a float dir")
    from kocall.models import arch_of, family

    export_state = getattr(family(arch_of(config)), "export_state", None)
    if export_state is not None:   # the family's view of what to quantise (kocall.models)
        changed, state = export_state(config, state, src)
        if changed is not config:   # rebuilt only when the family changed its shapes
            config, model = changed, _build(build or _default_build(), changed, src)
    modules = quantizable_modules(model)
    qstate = quantize_state_dict(state, modules)
    out_config = dict(config)
    out_config["quantized"] = QUANT_TAG
    out_config["quantization"] = {
        "format_version": FORMAT_VERSION,
        "scheme": "per-output-channel symmetric int8 weights, float32 scales; " + SCHEMES[activations],
        "activations": activations,
        "modules": modules,
        "source_fingerprint": _source_fingerprint(src),
    }
    if "lm" in out_config:
        out_config["lm"] = _rebase_lm_path(out_config["lm"], src, dst)
    with atomic_dir(dst, {"--model": src}) as tmp:
        for path in sorted(src.iterdir()):
            if path.is_file() and path.name not in ("model.pt", "config.json") and not path.name.startswith("."):
                shutil.copy2(path, tmp / path.name)
        torch.save(qstate, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(out_config, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    keys = quantized_weight_keys(modules)
    return ExportSummary(
        out_dir=dst, float_bytes=dir_size_bytes(src), int8_bytes=dir_size_bytes(dst), n_layers=len(modules),
        quantized_params=sum(state[k].numel() for k in keys),
        total_params=sum(t.numel() for t in state.values()), activations=activations)


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="float model dir (e.g. exp/.../final)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="int8 model dir to write (e.g. exp/.../final_int8)")
@click.option("--dtype", type=click.Choice(["int8"]), default="int8", show_default=True,
              help="weight type of the exported model")
@click.option("--if-stale", is_flag=True, help="do nothing when --out is already the export of --model")
@click.option("--activations", type=click.Choice(["auto", *ACTIVATIONS]), default="auto", show_default=True,
              help="dynamic: int8 matmuls (CPU); float: int8 weights dequantised at load; dynamic-decoder: "
                   "int8 matmuls in the attention decoder only (CPU); auto: the model family's choice")
def export_cmd(model_dir: str, out_dir: str, dtype: str, if_stale: bool, activations: str) -> None:
    """Export a float model dir as a compact int8 model dir that `kocall decode` loads."""
    summary = export_int8(model_dir, out_dir, if_stale=if_stale,
                          activations=None if activations == "auto" else activations)
    if summary.skipped:
        click.echo(f"{out_dir}: up to date ({summary.int8_bytes / 1e6:.2f} MB)")
        return
    # Load what was written: an export that cannot be loaded must fail here, not at decode time.
    with contextlib.redirect_stdout(None):
        load_int8_model_dir(out_dir)
    click.echo(f"{out_dir}: {summary.n_layers} layers as {dtype} ({summary.activations} activations) "
               f"({summary.quantized_params / max(summary.total_params, 1):.0%} of {summary.total_params:,} "
               f"weights); {summary.float_bytes / 1e6:.2f} MB -> {summary.int8_bytes / 1e6:.2f} MB")
