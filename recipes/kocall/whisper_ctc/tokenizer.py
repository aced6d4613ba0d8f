"""Whisper's multilingual byte-level BPE tokenizer (the decoder's units), from a tokenizer.json.

The file is Hugging Face `tokenizers`' serialisation of Whisper's vocabulary: what a
CTranslate2 Whisper folder (faster-whisper's) and Hugging Face's openai/whisper-* ship, and
what a hybrid model dir carries as `whisper_tokenizer.json`. Ids equal openai-whisper's
tiktoken encoding (the tests compare them).

Byte-level BPE: a token is a run of UTF-8 BYTES, so one Hangul syllable (3 bytes) may be split
over two tokens. `token_bytes(id)` gives a token's bytes and `split_complete(ids)` the text of
the complete characters plus the bytes still waiting for the rest of a character: what a
scorer over characters (our CTC and LM) may score so far.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from kocall.errors import KocallError
from kocall.fileio import read_json, read_text

TOKENIZER_FILE = "tokenizer.json"          # the name in a CTranslate2 / Hugging Face folder
MODEL_DIR_TOKENIZER_FILE = "whisper_tokenizer.json"   # the name in a hybrid model dir
TASKS = ("transcribe", "translate")


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character alphabet for bytes (tokenizers' ByteLevel), inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for value in range(256):
        if value not in printable:
            printable.append(value)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class WhisperTokenizer:
    """encode/decode Whisper's text tokens; the special tokens (`eot` and above) by name."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise KocallError("Whisper's tokenizer needs `pip install tokenizers`") from None
        self.path = Path(path)
        text = read_text(self.path, "Whisper tokenizer file")
        try:
            self._tok = Tokenizer.from_str(text)
        except Exception as err:  # noqa: BLE001 - the Rust parser raises plain Exceptions
            raise KocallError(f"file '{self.path}': not a tokenizers tokenizer.json "
                              f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})") from None
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        self.eot = self._special("<|endoftext|>")
        self.sot = self._special("<|startoftranscript|>")
        self.no_timestamps = self._special("<|notimestamps|>")
        self._bytes: list[bytes] | None = None

    @classmethod
    def from_dir(cls, folder: str | os.PathLike) -> "WhisperTokenizer":
        """From a CTranslate2 / Hugging Face folder (tokenizer.json) or a hybrid model dir."""
        folder = Path(folder)
        for name in (MODEL_DIR_TOKENIZER_FILE, TOKENIZER_FILE):
            if (folder / name).is_file():
                tokenizer = cls(folder / name)
                vocabulary = folder / "vocabulary.json"   # CTranslate2's id -> token list, when present
                if vocabulary.is_file():
                    tokenizer.check_vocabulary(read_json(vocabulary, "Whisper vocabulary"), vocabulary)
                return tokenizer
        raise KocallError(f"folder '{folder}': no Whisper tokenizer ({MODEL_DIR_TOKENIZER_FILE} or "
                          f"{TOKENIZER_FILE}) in it")

    def check_vocabulary(self, vocabulary: object, source: Path) -> None:
        """CTranslate2's vocabulary.json must be this tokenizer's id -> token list."""
        if not isinstance(vocabulary, list) or len(vocabulary) != self.n_vocab:
            size = len(vocabulary) if isinstance(vocabulary, list) else type(vocabulary).__name__
            raise KocallError(f"file '{source}': {size} tokens, the tokenizer '{self.path}' has {self.n_vocab}")
        for index in (0, self.eot - 1, self.eot, self.n_vocab - 1):
            if vocabulary[index] != self._tok.id_to_token(index):
                raise KocallError(f"file '{source}': token {index} is {vocabulary[index]!r}, the tokenizer "
                                  f"'{self.path}' says {self._tok.id_to_token(index)!r}")

    def _special(self, name: str) -> int:
        found = self._tok.token_to_id(name)
        if found is None:
            raise KocallError(f"file '{self.path}': no special token {name} (not a Whisper tokenizer)")
        return int(found)

    def encode(self, text: str) -> list[int]:
        """Text tokens only (no special token), as openai-whisper's `tokenizer.encode(text)`.
        Whisper's transcripts start with a space: targets are `encode(" " + text)`."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        """The text of the text tokens (special tokens, `eot` and above, are dropped)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes a token stands for; b"" for a special token (`eot` and above)."""
        if self._bytes is None:
            table = byte_decoder()
            self._bytes = [bytes(table[c] for c in self._tok.id_to_token(i)) for i in range(self.eot)]
        if not 0 <= token_id < self.n_vocab:
            raise KocallError(f"Whisper token id {token_id} is outside [0, {self.n_vocab})")
        return self._bytes[token_id] if token_id < self.eot else b""

    def is_special(self, token_id: int) -> bool:
        return token_id >= self.eot

    def split_complete(self, ids: list[int]) -> tuple[str, bytes]:
        """(text of the complete UTF-8 characters, trailing bytes of an unfinished character).
        Invalid bytes inside the text (not at its end) decode as U+FFFD."""
        data = self.decode_bytes(ids)
        cut = len(data)
        # A character is at most 4 bytes: look back at most 3 for an unfinished lead byte.
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 != 0x80:   # a lead byte (or ASCII)
                need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 \
                    else 4 if byte >> 3 == 0b11110 else 1
                if need > back:
                    cut = len(data) - back
                break
        return data[:cut].decode("utf-8", errors="replace"), data[cut:]

    def language_token(self, language: str) -> int:
        found = self._tok.token_to_id(f"<|{language}|>")
        if found is None or found <= self.sot:
            raise KocallError(f"Whisper tokenizer '{self.path}': no language '{language}'")
        return int(found)

    def sot_sequence(self, language: str = "ko", task: str = "transcribe", timestamps: bool = False) -> list[int]:
        """[<|startoftranscript|>, <|ko|>, <|transcribe|>] (+ <|notimestamps|> unless timestamps)."""
        if task not in TASKS:
            raise KocallError(f"Whisper task '{task}' is not one of {list(TASKS)}")
        sequence = [self.sot, self.language_token(language), self._special(f"<|{task}|>")]
        return sequence if timestamps else sequence + [self.no_timestamps]
