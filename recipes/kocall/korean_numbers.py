"""Korean number reading: numbers written out in Hangul as a transcriber would write them.

Two number systems are in use:

* **Sino-Korean** (일 이 삼 ... 십 백 천 만 억 조): prices, minutes, dates, floors, room and
  exit numbers, years. `sino(35000) == "삼만 오천"`.
* **Native Korean** (하나 둘 셋 ... 아흔아홉): counts of people and things, hours of the
  clock, ages, times. Before a counter the attributive forms are used: 한/두/세/네/스무
  ("두 명", "스무 살"); standing alone, 하나/둘/셋/넷/스물. Native numbers exist for 1-99;
  above that (and for 0) the Sino-Korean reading is used ("백 명").

Spacing follows the Korean orthography rule for numbers written in Hangul (한글 맞춤법
제44항): a space after every 만-group (만, 억, 조), none inside a group:
`sino(12345) == "만 이천삼백사십오"`, `sino(35000) == "삼만 오천"`. A leading 일 is dropped
before 십, 백, 천 and 만 ("십", "백", "천", "만") but kept before 억 and 조 ("일억"), as spoken.
A counter is always a separate word ("삼만 오천 원", "세 시 반", "삼 월 이십 일"); this is
how the call-centre transcripts write them, and the CRR metric ignores spaces anyway.

`read_with_counter(n, counter)` picks the system from the counter (see NATIVE_COUNTERS and
SINO_COUNTERS). Two counters are ambiguous: 분 (minute: sino; people, honorific: native) and
번 (number, as in exit 3: sino; times: native). Plain "분" and "번" mean minute and number;
write "분(people)" / "번(times)" for the native senses ("두 분", "두 번"). The month names
6 and 10 are irregular: 유 월, 시 월 (spoken 유월, 시월, not 육월, 십월).

`read_digits("010-1234")` reads a digit string digit by digit with 공 for zero ("공일공
일이삼사"), as phone numbers, account and order numbers are read aloud; 영 is the other
choice (`zero="영"`).
"""
from __future__ import annotations

SINO_DIGITS = ("영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")
_SMALL_UNITS = ((1000, "천"), (100, "백"), (10, "십"))
_BIG_UNITS = ((10**12, "조"), (10**8, "억"), (10**4, "만"))

_NATIVE_ONES = ("", "하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_ONES_ATTR = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")

# Counters read with native numbers (attributive form): counts and the hour of the clock.
NATIVE_COUNTERS = frozenset({
    "명", "개", "시", "살", "마리", "잔", "병", "권", "장", "가지", "달", "곳", "대", "그릇",
    "벌", "켤레", "채", "통", "시간", "군데", "번째", "분(people)", "번(times)",
})
# Counters read with Sino-Korean numbers: money, minutes/seconds, calendar, floors, numbering.
SINO_COUNTERS = frozenset({
    "원", "분", "분(minute)", "초", "층", "호", "번", "번(number)", "일", "월", "년", "인분",
    "개월", "주", "주일", "박", "퍼센트", "킬로", "미터", "세", "호선", "동", "번지", "도",
})
# Irregular month names (the final consonant of 육 and 십 drops before 월).
_MONTHS = {6: "유", 10: "시"}


def _check_int(n: int, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")


def _sino_below_10000(n: int, drop_leading_one: bool = True) -> str:
    """0 < n < 10000, no spaces: 1234 -> 천이백삼십사."""
    out = []
    for value, unit in _SMALL_UNITS:
        digit, n = divmod(n, value)
        if digit:
            out.append(("" if digit == 1 and drop_leading_one else SINO_DIGITS[digit]) + unit)
    if n:
        out.append(SINO_DIGITS[n])
    return "".join(out)


def sino(n: int) -> str:
    """Sino-Korean reading of n >= 0, with a space after each 만-group: 35000 -> 삼만 오천."""
    _check_int(n)
    if n == 0:
        return "영"
    if n >= 10**16:
        raise ValueError(f"number too large to read: {n}")
    words = []
    for value, unit in _BIG_UNITS:
        group, n = divmod(n, value)
        if group:
            # 만 alone is "만", not "일만"; 억 and 조 keep their 일 ("일억").
            head = "" if group == 1 and unit == "만" else _sino_below_10000(group)
            words.append(head + unit)
    if n:
        words.append(_sino_below_10000(n))
    return " ".join(words)


def native(n: int, attributive: bool = True) -> str:
    """Native Korean reading of 1-99 (한/두/세/네/스무 when `attributive`); sino otherwise."""
    _check_int(n)
    if n == 0 or n >= 100:
        return sino(n)
    tens, ones = divmod(n, 10)
    if attributive and n == 20:
        return "스무"
    ones_word = (_NATIVE_ONES_ATTR if attributive else _NATIVE_ONES)[ones]
    return _NATIVE_TENS[tens] + ones_word


def counter_word(counter: str) -> str:
    """The written counter without its sense tag: '분(people)' -> '분'."""
    return counter.split("(", 1)[0]


def read_with_counter(n: int, counter: str) -> str:
    """Read n before `counter`, picking the number system the counter takes: 3,'명' -> 세 명."""
    _check_int(n)
    word = counter_word(counter)
    if counter in NATIVE_COUNTERS:
        if counter == "번째" and n == 1:
            return "첫 번째"
        return f"{native(n, attributive=True)} {word}"
    if counter in SINO_COUNTERS:
        if counter == "월":
            if not 1 <= n <= 12:
                raise ValueError(f"month must be 1-12, got {n}")
            return f"{_MONTHS.get(n, sino(n))} 월"
        return f"{sino(n)} {word}"
    raise ValueError(f"unknown counter {counter!r}; add it to NATIVE_COUNTERS or SINO_COUNTERS")


def read_digits(s: str, zero: str = "공", sep: str = "") -> str:
    """Read a digit string digit by digit: '010-1234' -> '공일공 일이삼사'.

    Digits in one group are joined by `sep` (none by default: the group is read as one
    phrase); '-' and white space split groups, which are separated by one space. Zero is
    공 by default, as in phone numbers; pass zero='영' for the other reading.
    """
    if zero not in ("공", "영"):
        raise ValueError(f"zero must be '공' or '영', not {zero!r}")
    names = (zero,) + SINO_DIGITS[1:]
    groups = []
    for group in s.replace("-", " ").split():
        if not group.isascii() or not group.isdigit():
            raise ValueError(f"not a digit string: {s!r}")
        groups.append(sep.join(names[int(ch)] for ch in group))
    if not groups:
        raise ValueError(f"no digits in {s!r}")
    return " ".join(groups)
