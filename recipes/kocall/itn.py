"""Inverse text normalisation: spelled-out Hangul numbers back to their written form, the
inverse of kocall.text_norm.verbalize_numbers (numbers as kocall.korean_numbers reads them).

    삼만 오천 원 -> 35,000원        세 명 -> 3명          삼 월 이십 일 -> 3월 20일
    세 시 삼십 분 -> 3시 30분       이 점 오 킬로 -> 2.5킬로   오십 퍼센트 -> 50%
    공일공 일이삼사 오륙칠팔 -> 010-1234-5678              이천이십육 년 -> 2026년

What is rewritten: a Sino-Korean number before a Sino-Korean counter (원, 월, 일, 년, 분, 층,
번, 호 ...; money with thousands separators), or standing alone when it holds a unit
(십 백 천 만 ...) and is at least 10; a native number before a native counter (명, 개, 시, 살 ...);
a decimal (N 점 digits); digit-by-digit strings of three or more digits (phone, order
numbers; groups joined by '-'). Everything else is left as it is: a lone 이 or 오 is a word.

Every rewrite is checked by reading it back (verbalize_numbers, with the next word as context,
which decides 번 and 분): one that would not read back to the same words is not made, so
`normalize_text(inverse_normalize(s)) == s` for every normalised sentence s.
"""
from __future__ import annotations

import functools
import re

from kocall.korean_numbers import NATIVE_COUNTERS, SINO_COUNTERS, SINO_DIGITS, native, sino

_DIGIT_WORD = {"공": 0, "영": 0, **{ch: i for i, ch in enumerate(SINO_DIGITS) if i}}
_SINO_WORD = re.compile(r"^[일이삼사오육칠팔구십백천만억조]+$|^영$")
_UNITS = set("십백천만억조")
_SINO_COUNTERS = {c.split("(", 1)[0] for c in SINO_COUNTERS} | {"퍼센트"}
_NATIVE_COUNTERS = {c.split("(", 1)[0] for c in NATIVE_COUNTERS} - {"번째"}
_COUNTERS_LONGEST_FIRST = sorted(_SINO_COUNTERS | _NATIVE_COUNTERS, key=len, reverse=True)
_MONTH_WORDS = {"유": 6, "시": 10}
_MAX_NUMBER_WORDS = 5   # 만-groups: 조, 억, 만, the rest, and slack


@functools.lru_cache(maxsize=1)
def _native_values() -> dict[str, int]:
    values = {}
    for n in range(1, 100):
        for attributive in (True, False):
            values.setdefault(native(n, attributive), n)
    return values


def _sino_value(words: list[str]) -> int | None:
    """The number these words read as Sino-Korean, if they are exactly its reading."""
    if not all(_SINO_WORD.match(w) for w in words):
        return None
    text = "".join(words)
    total, group, digit = 0, 0, None
    for ch in text:
        if ch == "영":
            digit = 0
        elif ch in "일이삼사오육칠팔구":
            if digit is not None:
                return None
            digit = SINO_DIGITS.index(ch)
        elif ch in "십백천":
            group += (1 if digit is None else digit) * {"십": 10, "백": 100, "천": 1000}[ch]
            digit = None
        else:   # 만 억 조
            total += (group + (digit or 0) or 1) * {"만": 10**4, "억": 10**8, "조": 10**12}[ch]
            group, digit = 0, None
    value = total + group + (digit or 0)
    return value if sino(value) == " ".join(words) else None


def _digits(word: str) -> str | None:
    return "".join(str(_DIGIT_WORD[ch]) for ch in word) if word and all(ch in _DIGIT_WORD for ch in word) else None


def _counter(word: str) -> str | None:
    """The counter a word starts with (the longest), the rest being a particle: 원입니다 -> 원."""
    for counter in _COUNTERS_LONGEST_FIRST:
        if word.startswith(counter) and all("\uac00" <= ch <= "\ud7a3" for ch in word[len(counter):]):
            return counter
    return None


def _reads_back(candidate: str, words: list[str], context: str) -> bool:
    from kocall.text_norm import verbalize_numbers

    spoken = verbalize_numbers(f"{candidate} {context}".strip()).split()
    want = (" ".join(words) + (" " + context if context else "")).split()
    return spoken == want


def _match(words: list[str], i: int) -> tuple[str, int] | None:
    """(written form, words used) of the number phrase starting at words[i], if any."""
    context = words[i + 1] if i + 1 < len(words) else ""
    # digit by digit: phone and order numbers (groups of >= 3 digits, or one of >= 4)
    run, particle = [], ""
    while i + len(run) < len(words) and (d := _digits(words[i + len(run)])) is not None and len(d) >= 3:
        run.append(d)
    if run and i + len(run) < len(words):   # the last group may carry a particle: 이공이팔로
        word = words[i + len(run)]
        head = next((k for k in range(len(word) - 1, 2, -1) if _digits(word[:k]) is not None), None)
        if head is not None and all("\uac00" <= ch <= "\ud7a3" for ch in word[head:]):
            run.append(_digits(word[:head]))
            particle = word[head:]
    if run and (len(run) > 1 or len(run[0]) >= 4):
        used = len(run)
        candidate = "-".join(run) + particle
        after = words[i + used] if i + used < len(words) else ""
        if _reads_back(candidate, words[i:i + used], after):
            return candidate, used
    # month names 유 월, 시 월
    if words[i] in _MONTH_WORDS and context == "월":
        return f"{_MONTH_WORDS[words[i]]}월", 2
    # native number + native counter
    native_value = _native_values().get(words[i])
    if native_value is not None and _counter(context) in _NATIVE_COUNTERS:
        after = words[i + 2] if i + 2 < len(words) else ""
        candidate = f"{native_value}{context}"
        if _reads_back(candidate, words[i:i + 2], after):
            return candidate, 2
    if words[i] == "첫" and context == "번째":
        return "1번째", 2
    # Sino-Korean: the longest run of words that reads as one number
    for n in range(min(_MAX_NUMBER_WORDS, len(words) - i), 0, -1):
        value = _sino_value(words[i:i + n])
        if value is None:
            continue
        used, written = n, str(value)
        if words[i + used:i + used + 1] == ["점"] and i + used + 1 < len(words):
            fraction = _digits(words[i + used + 1])
            if fraction is not None and "공" not in words[i + used + 1]:
                written, used = f"{value}.{fraction}", used + 2
        counter = words[i + used] if i + used < len(words) else ""
        unit = _counter(counter)
        if unit is not None:   # 백 명, 이십 대 too: the read-back decides
            after = words[i + used + 1] if i + used + 1 < len(words) else ""
            if unit == "원" and "." not in written:
                candidate = f"{value:,}{counter}"
            elif unit == "퍼센트":
                candidate = f"{written}%{counter[len(unit):]}"
            else:
                candidate = f"{written}{counter}"
            if _reads_back(candidate, words[i:i + used + 1], after):
                return candidate, used + 1
        standalone = "." in written or (value >= 10 and any(ch in _UNITS for ch in "".join(words[i:i + n])))
        if standalone and _reads_back(written, words[i:i + used], counter):
            return written, used
        break
    return None


def inverse_normalize(text: str) -> str:
    """Written numbers for the spelled-out ones of a normalised transcript (see the module doc)."""
    words = text.split()
    out, i = [], 0
    while i < len(words):
        found = _match(words, i)
        if found is None:
            out.append(words[i])
            i += 1
        else:
            out.append(found[0])
            i += found[1]
    return " ".join(out)
