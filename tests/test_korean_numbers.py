"""Korean number reading, against hand-checked readings."""
from __future__ import annotations

import pytest

from kocall.korean_numbers import native, read_digits, read_with_counter, sino

SINO_CASES = [
    (0, "영"), (1, "일"), (2, "이"), (6, "육"), (10, "십"), (11, "십일"), (16, "십육"),
    (20, "이십"), (25, "이십오"), (99, "구십구"), (100, "백"), (101, "백일"), (110, "백십"),
    (111, "백십일"), (200, "이백"), (999, "구백구십구"), (1000, "천"), (1001, "천일"),
    (1234, "천이백삼십사"), (2019, "이천십구"), (2026, "이천이십육"), (5000, "오천"),
    (9999, "구천구백구십구"), (10000, "만"), (10001, "만 일"), (12345, "만 이천삼백사십오"),
    (15000, "만 오천"), (20000, "이만"), (35000, "삼만 오천"), (35500, "삼만 오천오백"),
    (100000, "십만"), (110000, "십일만"), (1000000, "백만"), (10000000, "천만"),
    (12000000, "천이백만"), (100000000, "일억"), (100010000, "일억 만"),
    (123456789, "일억 이천삼백사십오만 육천칠백팔십구"), (1000000000000, "일조"),
]


@pytest.mark.parametrize("n,expected", SINO_CASES)
def test_sino(n: int, expected: str) -> None:
    assert sino(n) == expected


NATIVE_ATTR_CASES = [
    (1, "한"), (2, "두"), (3, "세"), (4, "네"), (5, "다섯"), (6, "여섯"), (7, "일곱"),
    (8, "여덟"), (9, "아홉"), (10, "열"), (11, "열한"), (12, "열두"), (13, "열세"), (14, "열네"),
    (19, "열아홉"), (20, "스무"), (21, "스물한"), (22, "스물두"), (30, "서른"), (34, "서른네"),
    (40, "마흔"), (50, "쉰"), (60, "예순"), (70, "일흔"), (80, "여든"), (90, "아흔"), (99, "아흔아홉"),
]


@pytest.mark.parametrize("n,expected", NATIVE_ATTR_CASES)
def test_native_attributive(n: int, expected: str) -> None:
    assert native(n) == expected


@pytest.mark.parametrize("n,expected", [
    (1, "하나"), (2, "둘"), (3, "셋"), (4, "넷"), (10, "열"), (11, "열하나"), (12, "열둘"),
    (20, "스물"), (21, "스물하나"), (33, "서른셋"), (99, "아흔아홉"),
])
def test_native_standalone(n: int, expected: str) -> None:
    assert native(n, attributive=False) == expected


def test_native_falls_back_to_sino() -> None:
    assert native(100) == "백"
    assert native(120) == "백이십"
    assert native(0) == "영"


@pytest.mark.parametrize("n,counter,expected", [
    (2, "명", "두 명"), (1, "명", "한 명"), (4, "명", "네 명"), (20, "명", "스무 명"),
    (120, "명", "백이십 명"), (3, "개", "세 개"), (3, "시", "세 시"), (12, "시", "열두 시"),
    (11, "시", "열한 시"), (20, "살", "스무 살"), (2, "마리", "두 마리"), (1, "잔", "한 잔"),
    (5, "병", "다섯 병"), (2, "달", "두 달"), (2, "시간", "두 시간"), (2, "분(people)", "두 분"),
    (2, "번(times)", "두 번"), (1, "번째", "첫 번째"), (2, "번째", "두 번째"),
    (35000, "원", "삼만 오천 원"), (9900, "원", "구천구백 원"), (30, "분", "삼십 분"),
    (15, "분(minute)", "십오 분"), (3, "층", "삼 층"), (301, "호", "삼백일 호"),
    (5, "번", "오 번"), (7, "번(number)", "칠 번"), (20, "일", "이십 일"), (3, "월", "삼 월"),
    (6, "월", "유 월"), (10, "월", "시 월"), (12, "월", "십이 월"), (2019, "년", "이천십구 년"),
    (2, "인분", "이 인분"), (3, "개월", "삼 개월"), (2, "호선", "이 호선"),
])
def test_read_with_counter(n: int, counter: str, expected: str) -> None:
    assert read_with_counter(n, counter) == expected


def test_read_with_counter_rejects_unknown_counter_and_bad_month() -> None:
    with pytest.raises(ValueError, match="unknown counter"):
        read_with_counter(3, "뭐")
    with pytest.raises(ValueError, match="month"):
        read_with_counter(13, "월")


@pytest.mark.parametrize("s,kwargs,expected", [
    ("010-1234-5678", {}, "공일공 일이삼사 오육칠팔"),
    ("02 555 0101", {}, "공이 오오오 공일공일"),
    ("1004", {"zero": "영"}, "일영영사"),
    ("119", {"sep": " "}, "일 일 구"),
    ("0", {}, "공"),
])
def test_read_digits(s: str, kwargs: dict, expected: str) -> None:
    assert read_digits(s, **kwargs) == expected


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        read_digits("12a4")
    with pytest.raises(ValueError):
        read_digits("--")
    with pytest.raises(ValueError):
        sino(-1)
    with pytest.raises(TypeError):
        sino(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        read_digits("12", zero="O")
