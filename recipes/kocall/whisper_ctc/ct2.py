"""CTranslate2 Whisper folders (what faster-whisper users have) -> OpenAI's checkpoint format.

model.bin is CTranslate2's binary format (version 6, written by ctranslate2.specs.ModelSpec):
    uint32 version, string spec name ("WhisperSpec"), uint32 revision, uint32 n_variables,
    per variable: string name, uint8 rank, uint32 dims[rank], uint8 dtype
                  (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16),
                  uint32 byte count, the bytes (C order),
    uint32 n_aliases, per alias: string alias, string target,
where a string is uint16 length (with the trailing NUL) + UTF-8 + NUL; all little endian.

Layout (CTranslate2's Whisper spec, converted from Hugging Face's): per attention a fused
`linear_0` ([q; k; v] in self-attention, q alone in cross-attention, whose `linear_1` is the
fused [k; v]); `linear_1`/`linear_2` the output projection; `layer_norm/{gamma,beta}`;
`ffn/linear_{0,1}`; `position_encodings/encodings`; the decoder's output projection is an
alias of its embeddings. Whisper's key projection has no bias: CTranslate2 stores zeros
there, and any constant key bias adds q.b to every score of a query, which softmax ignores,
so dropping it is exact. int8 weights (`weight` + per-row `weight_scale`) are dequantised.
"""
from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path

import click
import numpy as np
import torch

from kocall.errors import KocallError
from kocall.fileio import atomic_write, read_json
from kocall.whisper_ctc.checkpoint import check_whisper_dims, check_whisper_state

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
CT2_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
                 np.dtype(np.float16): 4}
BINARY_VERSIONS = (5, 6)
MAX_RANK = 8


class CT2Reader:
    """Bounds-checked little-endian reads over a mapped model.bin; every error names the file."""

    def __init__(self, data: mmap.mmap | bytes, source: Path) -> None:
        self.data, self.source, self.pos = data, source, 0

    def fail(self, what: str) -> KocallError:
        return KocallError(f"file '{self.source}': not a CTranslate2 model.bin ({what} at byte {self.pos})")

    def take(self, size: int) -> int:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail(f"{size} bytes wanted, {len(self.data) - self.pos} left")
        start = self.pos
        self.pos += size
        return start

    def unpack(self, fmt: str) -> int:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self) -> str:
        length = self.unpack("H")
        start = self.take(length)
        raw = bytes(self.data[start:start + length])
        if not raw or raw[-1] != 0:
            raise self.fail("a string without its NUL")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string that is not UTF-8") from None


def read_ct2_model(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, variables as float32/int arrays, aliases) of a CTranslate2 model.bin.

    Every header (rank, dims, dtype, byte count) is checked against the file's size before its
    data is copied, so a corrupt or truncated file is one line, never a huge allocation."""
    path = Path(path)
    if not path.is_file():
        raise KocallError(f"CTranslate2 model '{path}' is missing")
    with open(path, "rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:   # an empty file cannot be mapped
            raise KocallError(f"file '{path}': not a CTranslate2 model.bin (empty)") from None
    with data:
        reader = CT2Reader(data, path)
        version = reader.unpack("I")
        if version not in BINARY_VERSIONS:
            raise reader.fail(f"binary version {version}, expected one of {BINARY_VERSIONS}")
        spec = reader.string()
        reader.unpack("I")   # the spec's revision
        count = reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = reader.string()
            rank = reader.unpack("B")
            if rank > MAX_RANK:
                raise reader.fail(f"variable '{name}' of rank {rank}")
            shape = tuple(reader.unpack("I") for _ in range(rank))
            dtype_id = reader.unpack("B")
            if dtype_id not in CT2_DTYPES:
                raise reader.fail(f"variable '{name}' of unknown dtype {dtype_id}")
            size = reader.unpack("I")
            itemsize = 2 if dtype_id == 5 else np.dtype(CT2_DTYPES[dtype_id]).itemsize
            if size != int(np.prod(shape, dtype=np.int64)) * itemsize:
                raise reader.fail(f"variable '{name}' of shape {shape} with {size} bytes")
            start = reader.take(size)
            if dtype_id == 5:   # bfloat16: the high half of a float32
                raw = np.frombuffer(data, dtype=np.uint16, count=size // 2, offset=start).astype(np.uint32) << 16
                variables[name] = raw.view(np.float32).reshape(shape)
            else:
                variables[name] = np.frombuffer(data, dtype=CT2_DTYPES[dtype_id], count=size // itemsize,
                                                offset=start).reshape(shape).copy()
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    return spec, variables, aliases


def write_ct2_model(path: str | os.PathLike, spec: str, revision: int, variables: dict[str, np.ndarray],
                    aliases: dict[str, str] | None = None) -> None:
    """Write variables in CTranslate2's model.bin format (version 6), atomically."""
    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with atomic_write(path, "wb", encoding=None) as out:
        out.write(struct.pack("<I", 6) + string(spec) + struct.pack("<II", revision, len(variables)))
        for name, value in variables.items():
            value = np.asarray(value, order="C")   # (ascontiguousarray would make a scalar 1-d)
            out.write(string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape))
            out.write(struct.pack("<BI", CT2_DTYPE_IDS[value.dtype], value.nbytes) + value.tobytes())
        out.write(struct.pack("<I", len(aliases or {})))
        for alias, target in (aliases or {}).items():
            out.write(string(alias) + string(target))


def ct2_weight(variables: dict[str, np.ndarray], name: str, source: Path) -> torch.Tensor:
    """A variable as a float tensor (int8 weights dequantised by their per-row weight_scale)."""
    if name not in variables:
        raise KocallError(f"file '{source}': variable '{name}' missing (not a CTranslate2 Whisper model)")
    value = variables[name]
    if value.dtype == np.int8:
        scale = variables.get(name + "_scale")
        if scale is None:
            raise KocallError(f"file '{source}': int8 variable '{name}' without its '{name}_scale'")
        value = value.astype(np.float32) / np.asarray(scale, dtype=np.float32).reshape(-1, *([1] * (value.ndim - 1)))
    elif not np.issubdtype(value.dtype, np.floating):
        raise KocallError(f"file '{source}': variable '{name}' is {value.dtype}, not a float tensor")
    return torch.from_numpy(np.ascontiguousarray(value))


def scalar(variables: dict[str, np.ndarray], name: str, source: Path) -> int:
    value = variables.get(name)
    if value is None or value.size != 1:
        raise KocallError(f"file '{source}': variable '{name}' missing (not a CTranslate2 Whisper model)")
    return int(value.reshape(-1)[0])


def ct2_to_openai(variables: dict[str, np.ndarray], source: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """CTranslate2 Whisper variables -> (OpenAI dims, OpenAI state dict), shapes checked."""
    def get(name: str) -> torch.Tensor:
        return ct2_weight(variables, name, source)

    def layer_count(side: str) -> int:
        return len({k.split("/")[1] for k in variables if re.match(rf"{side}/layer_\d+/", k)})

    def linear(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/weight"), get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def split(dst: str, src: str, parts: tuple[str, ...]) -> None:
        """A fused projection [q; k; v] (or [k; v]) into OpenAI's separate Linears."""
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape[0] % len(parts) or bias.shape[0] != weight.shape[0]:
            raise KocallError(f"file '{source}': fused '{src}' of shape {tuple(weight.shape)} does not split "
                              f"into {len(parts)} projections")
        for part, w, b in zip(parts, weight.chunk(len(parts)), bias.chunk(len(parts))):
            state[f"{dst}.{part}.weight"] = w.clone()
            if part != "key":   # see the module docstring: a key bias is softmax-invariant
                state[f"{dst}.{part}.bias"] = b.clone()

    state: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    state["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    norm("encoder.ln_post", "encoder/layer_norm")
    def self_attention_and_mlp(dst: str, src: str) -> None:
        """What every encoder and decoder block holds: self-attention (fused q/k/v) and the MLP."""
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    for i in range(layer_count("encoder")):
        self_attention_and_mlp(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    state["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    norm("decoder.ln", "decoder/layer_norm")
    for i in range(layer_count("decoder")):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention_and_mlp(dst, src)
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
    conv1 = state["encoder.conv1.weight"]
    embedding = state["decoder.token_embedding.weight"]
    dims = {"n_mels": int(conv1.shape[1]), "n_audio_ctx": int(state["encoder.positional_embedding"].shape[0]),
            "n_audio_state": int(conv1.shape[0]), "n_audio_head": scalar(variables, "encoder/num_heads", source),
            "n_audio_layer": layer_count("encoder"), "n_vocab": int(embedding.shape[0]),
            "n_text_ctx": int(state["decoder.positional_embedding"].shape[0]), "n_text_state": int(embedding.shape[1]),
            "n_text_head": scalar(variables, "decoder/num_heads", source), "n_text_layer": layer_count("decoder")}
    dims = check_whisper_dims(dims, source)
    check_whisper_state(dims, state, source)
    return dims, state


def convert_ct2_folder(folder: str | os.PathLike, out: str | os.PathLike, dtype: str = "float16") -> dict[str, int]:
    """A CTranslate2 Whisper folder -> an OpenAI checkpoint file {"dims", "model_state_dict"} at `out`
    (atomic; refuses to write over any file of the folder). Returns the dims."""
    folder, out = Path(folder), Path(out)
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        raise KocallError(f"folder '{folder}': no model.bin (not a CTranslate2 model folder)")
    if out.exists() and any(out.resolve() == p.resolve() for p in folder.iterdir()):
        raise KocallError(f"output '{out}' is a file of the input folder '{folder}'; choose another path")
    if out.is_dir():
        raise KocallError(f"output '{out}' is a directory; give a file name (e.g. whisper-base.pt)")
    if dtype not in ("float16", "float32"):
        raise KocallError(f"--dtype '{dtype}' is not float16 or float32")
    spec, variables, _ = read_ct2_model(model_bin)
    if spec != "WhisperSpec":
        raise KocallError(f"file '{model_bin}': a CTranslate2 '{spec}' model, not Whisper (WhisperSpec)")
    config = folder / "config.json"
    if config.is_file():
        read_json(config, "CTranslate2 config")   # a broken config is a broken folder
    dims, state = ct2_to_openai(variables, model_bin)
    target = torch.float16 if dtype == "float16" else torch.float32
    with atomic_write(out, "wb", encoding=None) as handle:
        torch.save({"dims": dims, "model_state_dict": {k: v.to(target) for k, v in state.items()}}, handle)
    return dims



@click.command("convert-whisper")
@click.argument("ct2_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="tensor type of the written checkpoint (OpenAI's own files are float16)")
def convert_whisper_cmd(ct2_dir: str, out: str, dtype: str) -> None:
    """Convert a CTranslate2 Whisper folder (faster-whisper's) to an OpenAI checkpoint (.pt)."""
    dims = convert_ct2_folder(ct2_dir, out, dtype)
    print(f"{out}: Whisper ({dims['n_audio_layer']}+{dims['n_text_layer']} layers, width {dims['n_audio_state']}, "
          f"{dims['n_vocab']} tokens) in OpenAI's format, {dtype}")
