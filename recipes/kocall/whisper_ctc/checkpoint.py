"""Pretrained Whisper encoder weights: OpenAI's checkpoint format (and Hugging Face's).

OpenAI's format is what `openai-whisper` caches (`~/.cache/whisper/base.pt`): a dict
`{"dims": {...ModelDimensions...}, "model_state_dict": {name: tensor}}` whose encoder
tensors are named `encoder.*` (an encoder-only file carries just those). It is read with
`torch.load(weights_only=True)`: a checkpoint from elsewhere is data, never code.

Hugging Face's `openai/whisper-*` `model.safetensors` uses other names
(`model.encoder.layers.N.self_attn.q_proj.weight`, ...); `hf_to_openai_names` maps them,
and the dims are inferred from the tensor shapes.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from kocall.errors import KocallError

HOW_TO_GET = ("get Whisper's weights in OpenAI's format (openai-whisper caches them as "
              "~/.cache/whisper/<size>.pt; `python -c \"import whisper; whisper.load_model('base')\"`) "
              "or Hugging Face's openai/whisper-<size> model.safetensors, and give its path")
DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def default_checkpoint_candidates(size: str) -> list[Path]:
    """Where a checkpoint of `size` is looked for when the config names none that exists."""
    from kocall.paths import shared_root

    return [shared_root() / "models" / f"whisper-{size}" / "encoder.pt",
            Path.home() / ".cache" / "whisper" / f"{size}.pt"]


def resolve_checkpoint(path: str | None, size: str) -> Path:
    """The checkpoint file to initialise from; one clear line when there is none."""
    if path:
        found = Path(path).expanduser()
        if not found.is_file():
            raise KocallError(f"pretrained checkpoint '{found}' is missing: {HOW_TO_GET}")
        return found
    for candidate in default_checkpoint_candidates(size):
        if candidate.is_file():
            return candidate
    tried = ", ".join(f"'{c}'" for c in default_checkpoint_candidates(size))
    raise KocallError(f"no Whisper-{size} checkpoint found (tried {tried}): {HOW_TO_GET}")


def hf_to_openai_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face WhisperModel encoder names -> OpenAI's (`encoder.*`)."""
    fixed = {"model.encoder.conv1": "encoder.conv1", "model.encoder.conv2": "encoder.conv2",
             "model.encoder.layer_norm": "encoder.ln_post",
             "model.encoder.embed_positions.weight": "encoder.positional_embedding"}
    in_block = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
                "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0",
                "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
    mapped = {}
    for key, tensor in state.items():
        key = key.removeprefix("model.") if key.startswith("model.model.") else key
        if not key.startswith("model.encoder."):
            continue
        for old, new in fixed.items():
            if key == old or key.startswith(old + "."):
                mapped[new + key[len(old):]] = tensor
                break
        else:
            layer, _, rest = key.removeprefix("model.encoder.layers.").partition(".")
            for old, new in in_block.items():
                if rest.startswith(old + "."):
                    mapped[f"encoder.blocks.{layer}.{new}{rest[len(old):]}"] = tensor
                    break
    return mapped


def dims_from_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, int]:
    """Encoder dims from tensor shapes (for files without a `dims` entry)."""
    try:
        n_state, n_mels, _ = state["encoder.conv1.weight"].shape
        layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")}
    except (KeyError, ValueError):
        raise KocallError(f"file '{source}': no Whisper encoder tensors (encoder.conv1.weight ...) in it") from None
    head_dim = 64  # every Whisper size uses 64-dimensional heads
    return {"n_mels": int(n_mels), "n_audio_ctx": 1500, "n_audio_state": int(n_state),
            "n_audio_head": int(n_state) // head_dim, "n_audio_layer": len(layers)}


def read_openai_checkpoint(path: Path) -> tuple[dict, object]:
    """(model_state_dict, dims as stored) of an OpenAI-format .pt, loaded weights-only; anything
    else is one line naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KocallError(f"file '{path}': not a weights-only torch checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state_dict"), dict):
        raise KocallError(f"file '{path}': not an OpenAI Whisper checkpoint "
                          f"(expected {{'dims': ..., 'model_state_dict': ...}})")
    return ckpt["model_state_dict"], ckpt.get("dims")


def load_encoder_checkpoint(path: str | os.PathLike) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """(encoder dims, `encoder.*` tensors as float32) from an OpenAI .pt or a HF .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise KocallError(f"pretrained checkpoint '{path}' is missing: {HOW_TO_GET}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise KocallError(f"file '{path}': reading .safetensors needs `pip install safetensors`") from None
        try:
            state = hf_to_openai_names(load_file(str(path)))
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file, said in one line
            raise KocallError(f"file '{path}': not a readable safetensors file ({type(err).__name__})") from None
        dims = dims_from_state(state, path)
    else:
        state, dims = read_openai_checkpoint(path)
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
        dims = dims if isinstance(dims, dict) else dims_from_state(state, path)
    missing = [k for k in DIM_KEYS if not isinstance(dims.get(k), int) or isinstance(dims.get(k), bool)]
    if missing:
        raise KocallError(f"file '{path}': dims lack {missing}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor) or not v.is_floating_point()]
    if bad or not state:
        raise KocallError(f"file '{path}': no encoder tensors" if not state else
                          f"file '{path}': '{bad[0]}' is not a floating-point tensor")
    dims = check_encoder_dims({k: int(dims[k]) for k in DIM_KEYS}, state, path)
    return dims, {k: v.float() for k, v in state.items()}


def check_encoder_dims(dims: dict[str, int], state: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """Before a model is built from `dims`: each in 1..DIM_LIMITS, heads dividing the width, and
    every tensor the dims call for present in `state` with that shape and finite. A file of a
    few kB claiming huge dims (hundreds of GB of model) or 0 heads is one line, not an
    allocation or a ZeroDivisionError; NaN weights would train a model whose loss is NaN."""
    bad = {k: v for k, v in dims.items() if not 1 <= v <= DIM_LIMITS[k]}
    if bad:
        raise KocallError(f"file '{path}': dims {bad} outside 1..{({k: DIM_LIMITS[k] for k in bad})}")
    d = dims["n_audio_state"]
    if d % dims["n_audio_head"]:
        raise KocallError(f"file '{path}': n_audio_state {d} is not divisible by n_audio_head {dims['n_audio_head']}")
    wanted = {"encoder.conv1.weight": (d, dims["n_mels"], 3), "encoder.conv1.bias": (d,),
              "encoder.conv2.weight": (d, d, 3), "encoder.conv2.bias": (d,),
              "encoder.ln_post.weight": (d,), "encoder.ln_post.bias": (d,)}
    for layer in range(dims["n_audio_layer"]):
        wanted.update(block_shapes(f"encoder.blocks.{layer}", d, cross=False))
    absent = [k for k in wanted if k not in state]
    if absent:
        raise KocallError(f"file '{path}': {len(absent)} encoder tensor(s) missing, e.g. '{absent[0]}' "
                          f"(the dims {dims} call for them)")
    for key, shape in wanted.items():
        if tuple(state[key].shape) != shape:
            raise KocallError(f"file '{path}': tensor '{key}' has shape {tuple(state[key].shape)}, the dims call "
                              f"for {shape}")
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            raise KocallError(f"file '{path}': tensor '{key}' holds NaN or infinite values")
    return dims


def init_from_checkpoint(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> int:
    """Copy every encoder tensor of `state` into `model`; every encoder parameter must be covered.

    Returns the number of tensors copied. The positional table is a fixed function of the
    dims: a checkpoint whose table differs (not Whisper's sinusoids) is refused.
    """
    own = model.state_dict()
    pos_key = "encoder.positional_embedding"
    if pos_key in state:
        ours = model.encoder.positional_embedding
        theirs = state[pos_key]
        if theirs.shape != ours.shape or not torch.allclose(theirs, ours, atol=2e-3):
            raise KocallError(f"file '{source}': its positional embedding is not Whisper's sinusoids "
                              f"of shape {tuple(ours.shape)}")
    wanted = sorted(k for k in own if k.startswith("encoder."))
    missing = [k for k in wanted if k not in state]
    if missing:
        raise KocallError(f"file '{source}': {len(missing)} encoder tensor(s) missing, e.g. '{missing[0]}'")
    unknown = sorted(set(state) - set(own) - {pos_key})
    if unknown:
        raise KocallError(f"file '{source}': tensor '{unknown[0]}' is not part of the Whisper encoder")
    for key in wanted:
        if state[key].shape != own[key].shape:
            raise KocallError(f"file '{source}': tensor '{key}' has shape {tuple(state[key].shape)}, "
                              f"the model expects {tuple(own[key].shape)}")
    with torch.no_grad():
        for key in wanted:
            own[key].copy_(state[key])
    return len(wanted)


# ---- The full model (encoder + decoder): what the hybrid CTC/attention family starts from ----

TEXT_DIM_KEYS = ("n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")
ALL_DIM_KEYS = DIM_KEYS + TEXT_DIM_KEYS
# Far above any Whisper (large: 128 mels, 1280 wide, 32 layers, 51866 tokens): a file claiming
# more is refused before anything of that size is allocated.
DIM_LIMITS = {"n_mels": 512, "n_audio_ctx": 65536, "n_audio_state": 16384, "n_audio_head": 1024,
              "n_audio_layer": 256, "n_vocab": 1 << 20, "n_text_ctx": 65536, "n_text_state": 16384,
              "n_text_head": 1024, "n_text_layer": 256}


def block_shapes(prefix: str, d: int, cross: bool) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of one Whisper residual block (OpenAI names)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for attn in ("attn", "cross_attn") if cross else ("attn",):
        for part in ("query", "key", "value", "out"):
            shapes[f"{prefix}.{attn}.{part}.weight"] = (d, d)
            if part != "key":   # Whisper's key projection has no bias
                shapes[f"{prefix}.{attn}.{part}.bias"] = (d,)
        shapes[f"{prefix}.{attn}_ln.weight"] = shapes[f"{prefix}.{attn}_ln.bias"] = (d,)
    shapes.update({f"{prefix}.mlp.0.weight": (4 * d, d), f"{prefix}.mlp.0.bias": (4 * d,),
                   f"{prefix}.mlp.2.weight": (d, 4 * d), f"{prefix}.mlp.2.bias": (d,),
                   f"{prefix}.mlp_ln.weight": (d,), f"{prefix}.mlp_ln.bias": (d,)})
    return shapes


def whisper_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every tensor of an OpenAI Whisper checkpoint and its shape, from the dims alone."""
    d, dt = dims["n_audio_state"], dims["n_text_state"]
    shapes = {"encoder.conv1.weight": (d, dims["n_mels"], 3), "encoder.conv1.bias": (d,),
              "encoder.conv2.weight": (d, d, 3), "encoder.conv2.bias": (d,),
              "encoder.positional_embedding": (dims["n_audio_ctx"], d),
              "encoder.ln_post.weight": (d,), "encoder.ln_post.bias": (d,),
              "decoder.token_embedding.weight": (dims["n_vocab"], dt),
              "decoder.positional_embedding": (dims["n_text_ctx"], dt),
              "decoder.ln.weight": (dt,), "decoder.ln.bias": (dt,)}
    for layer in range(dims["n_audio_layer"]):
        shapes.update(block_shapes(f"encoder.blocks.{layer}", d, cross=False))
    for layer in range(dims["n_text_layer"]):
        shapes.update(block_shapes(f"decoder.blocks.{layer}", dt, cross=True))
    return shapes


def check_whisper_dims(dims: object, source: Path) -> dict[str, int]:
    """The ten dims as ints, each in its limit, heads dividing widths; one line naming the file."""
    if not isinstance(dims, dict):
        raise KocallError(f"file '{source}': no 'dims' entry (n_mels ... n_text_layer)")
    missing = [k for k in ALL_DIM_KEYS if not isinstance(dims.get(k), int) or isinstance(dims.get(k), bool)]
    if missing:
        raise KocallError(f"file '{source}': dims lack integer {missing}")
    out = {k: int(dims[k]) for k in ALL_DIM_KEYS}
    bad = {k: v for k, v in out.items() if not 1 <= v <= DIM_LIMITS[k]}
    if bad:
        raise KocallError(f"file '{source}': dims {bad} outside the limits {({k: DIM_LIMITS[k] for k in bad})}")
    if out["n_audio_state"] % out["n_audio_head"] or out["n_text_state"] % out["n_text_head"]:
        raise KocallError(f"file '{source}': a width is not divisible by its number of heads ({out})")
    if out["n_text_state"] != out["n_audio_state"]:
        raise KocallError(f"file '{source}': n_text_state {out['n_text_state']} differs from n_audio_state "
                          f"{out['n_audio_state']} (the decoder attends to the encoder's output)")
    return out


def check_whisper_state(dims: dict[str, int], state: dict[str, torch.Tensor], source: Path) -> None:
    """Every tensor the dims call for, with its shape, and nothing else (the positional table of
    the encoder may be absent: it is a fixed function of the dims)."""
    wanted = whisper_shapes(dims)
    for key, value in state.items():
        if key not in wanted:
            raise KocallError(f"file '{source}': tensor '{key}' is not part of a Whisper model with dims {dims}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise KocallError(f"file '{source}': '{key}' is not a floating-point tensor")
        if tuple(value.shape) != wanted[key]:
            raise KocallError(f"file '{source}': tensor '{key}' has shape {tuple(value.shape)}, the dims "
                              f"call for {wanted[key]}")
    missing = [k for k in wanted if k not in state and k != "encoder.positional_embedding"]
    if missing:
        what = "decoder" if all(k.startswith("decoder.") for k in missing) else "model"
        raise KocallError(f"file '{source}': {len(missing)} {what} tensor(s) missing, e.g. '{missing[0]}'"
                          + ("; an encoder-only checkpoint cannot start a decoder: give the full model "
                             "(`kocall convert-whisper` makes one from a CTranslate2 folder)" if what == "decoder" else ""))


def hf_decoder_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face WhisperModel decoder names -> OpenAI's (`decoder.*`)."""
    fixed = {"model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
             "model.decoder.embed_positions.weight": "decoder.positional_embedding",
             "model.decoder.layer_norm.weight": "decoder.ln.weight", "model.decoder.layer_norm.bias": "decoder.ln.bias"}
    in_block = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
                "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
                "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
                "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
                "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
    mapped = {}
    for key, tensor in state.items():
        key = key.removeprefix("model.") if key.startswith("model.model.") else key
        if key in fixed:
            mapped[fixed[key]] = tensor
        elif key.startswith("model.decoder.layers."):
            layer, _, rest = key.removeprefix("model.decoder.layers.").partition(".")
            for old, new in in_block.items():
                if rest.startswith(old + "."):
                    mapped[f"decoder.blocks.{layer}.{new}{rest[len(old):]}"] = tensor
                    break
    return mapped


def load_whisper_checkpoint(path: str | os.PathLike) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """(all ten dims, `encoder.*` + `decoder.*` tensors as float32) of a FULL Whisper checkpoint:
    OpenAI's .pt (`dims` + `model_state_dict`, what `kocall convert-whisper` writes) or a Hugging
    Face .safetensors. Dims and every tensor's shape are checked before any model is built."""
    path = Path(path)
    if not path.is_file():
        raise KocallError(f"pretrained checkpoint '{path}' is missing: {HOW_TO_GET}")
    if path.suffix == ".safetensors":
        _, encoder = load_encoder_checkpoint(path)
        from safetensors.torch import load_file

        raw = load_file(str(path))
        state = dict(encoder, **hf_decoder_names(raw))
        dims = dict(dims_from_state(state, path))
        embedding = state.get("decoder.token_embedding.weight")
        if embedding is None:
            raise KocallError(f"file '{path}': no Whisper decoder tensors (model.decoder.*) in it")
        dims.update(n_vocab=int(embedding.shape[0]), n_text_state=int(embedding.shape[1]),
                    n_text_ctx=int(state["decoder.positional_embedding"].shape[0])
                    if "decoder.positional_embedding" in state else 448,
                    n_text_layer=len({k.split(".")[2] for k in state if k.startswith("decoder.blocks.")}),
                    n_text_head=int(embedding.shape[1]) // 64)
    else:
        state, dims = read_openai_checkpoint(path)
    dims = check_whisper_dims(dims, path)
    check_whisper_state(dims, state, path)
    return dims, {k: v.float() for k, v in state.items()}
