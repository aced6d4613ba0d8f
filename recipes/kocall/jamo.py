"""Hangul syllables <-> Unicode conjoining jamo (the `jamo` output unit).

Every precomposed syllable U+AC00-U+D7A3 is (initial, vowel, optional final) by Unicode's
arithmetic (The Unicode Standard, 3.12 "Conjoining Jamo Behavior"):

    S = 0xAC00 + (L * 21 + V) * 28 + T,   L < 19, V < 21, 0 <= T < 28 (T = 0: no final)

and decomposes into the conjoining jamo U+1100+L (choseong, initial consonant),
U+1161+V (jungseong, vowel) and, when T > 0, U+11A7+T (jongseong, final consonant).
Initial and final consonants are distinct units (ㄱ as an initial is U+1100, as a final
U+11A8), as are the compound finals (ㄳ ㄵ ...): the inventory is exactly
19 + 21 + 27 = 67 jamo (`JAMO_INVENTORY`, in code-point order). A syllable without an
initial sound is written with the silent initial ㅇ (U+110B), so every syllable starts with
a choseong.

Composition (`compose`), left to right, greedy, deterministic:
- choseong + jungseong [+ jongseong] -> that syllable (a final right after a vowel always
  closes the syllable: 가 + ㄱ-final = 각);
- any other modern conjoining jamo -- an initial not followed by a vowel, a vowel without an
  initial, a final without a syllable to close, two initials in a row -- becomes its
  **compatibility jamo** (U+3131-U+3163: initial and final ㄱ both become ㄱ U+3131), one
  character per unit: readable, stable under NFC (which never composes compatibility jamo),
  and counted by the scorer as one wrong character, as a misrecognised syllable would be;
- everything else (spaces, Latin letters, punctuation) passes through unchanged.
`compose(decompose(text)) == text` for any text without conjoining or compatibility jamo;
normalised text (kocall.text_norm) never holds either.
"""
from __future__ import annotations

import unicodedata

SYLLABLE_FIRST, SYLLABLE_LAST = 0xAC00, 0xD7A3
CHOSEONG_FIRST, NUM_CHOSEONG = 0x1100, 19
JUNGSEONG_FIRST, NUM_JUNGSEONG = 0x1161, 21
JONGSEONG_BEFORE_FIRST, NUM_JONGSEONG = 0x11A7, 28   # T = 0 (no final) has no jamo

CHOSEONG = tuple(chr(CHOSEONG_FIRST + i) for i in range(NUM_CHOSEONG))
JUNGSEONG = tuple(chr(JUNGSEONG_FIRST + i) for i in range(NUM_JUNGSEONG))
JONGSEONG = tuple(chr(JONGSEONG_BEFORE_FIRST + i) for i in range(1, NUM_JONGSEONG))
JAMO_INVENTORY: tuple[str, ...] = CHOSEONG + JUNGSEONG + JONGSEONG

_L_INDEX = {ch: i for i, ch in enumerate(CHOSEONG)}
_V_INDEX = {ch: i for i, ch in enumerate(JUNGSEONG)}
_T_INDEX = {ch: i + 1 for i, ch in enumerate(JONGSEONG)}


def _compatibility(jamo: str) -> str:
    """The compatibility jamo of one conjoining jamo, by Unicode name: CHOSEONG/JUNGSEONG/
    JONGSEONG KIYEOK -> LETTER KIYEOK (U+3131)."""
    name = unicodedata.name(jamo)
    for role in ("CHOSEONG", "JUNGSEONG", "JONGSEONG"):
        name = name.replace(f"HANGUL {role} ", "HANGUL LETTER ")
    return unicodedata.lookup(name)


COMPATIBILITY: dict[str, str] = {jamo: _compatibility(jamo) for jamo in JAMO_INVENTORY}


def is_syllable(ch: str) -> bool:
    return SYLLABLE_FIRST <= ord(ch) <= SYLLABLE_LAST


def decompose_syllable(ch: str) -> str:
    """One precomposed syllable -> its 2 or 3 conjoining jamo."""
    index = ord(ch) - SYLLABLE_FIRST
    if not 0 <= index <= SYLLABLE_LAST - SYLLABLE_FIRST:
        raise ValueError(f"{ch!r} is not a precomposed Hangul syllable")
    lv, t = divmod(index, NUM_JONGSEONG)
    l, v = divmod(lv, NUM_JUNGSEONG)
    return CHOSEONG[l] + JUNGSEONG[v] + (JONGSEONG[t - 1] if t else "")


def decompose(text: str) -> str:
    """Every precomposed syllable of `text` -> conjoining jamo; other characters unchanged."""
    return "".join(decompose_syllable(ch) if is_syllable(ch) else ch for ch in text)


def compose(text: str) -> str:
    """Conjoining jamo -> syllables by the module's rule (stray jamo -> compatibility jamo)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _L_INDEX and i + 1 < n and text[i + 1] in _V_INDEX:
            t = _T_INDEX.get(text[i + 2], 0) if i + 2 < n else 0
            lv = _L_INDEX[ch] * NUM_JUNGSEONG + _V_INDEX[text[i + 1]]
            out.append(chr(SYLLABLE_FIRST + lv * NUM_JONGSEONG + t))
            i += 3 if t else 2
        else:
            out.append(COMPATIBILITY.get(ch, ch))
            i += 1
    return "".join(out)
