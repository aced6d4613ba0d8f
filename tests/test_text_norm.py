"""The text normalisation policy (kocall.text_norm): numbers with counters, phone numbers,
decimals, Latin letters, punctuation modes, dropped characters."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from kocall.text_norm import normalize_cmd, normalize_text


@pytest.mark.parametrize("raw, expected", [
    # native numbers before native counters; the counter becomes its own word
    ("3명이서 왔어요", "세 명이서 왔어요"),
    ("사과 2개", "사과 두 개"),
    ("20살", "스무 살"),
    ("2시간", "두 시간"),
    ("맥주 1병", "맥주 한 병"),
    # 번: a number by default, "times" when what follows says so, ordinal with 째
    ("3번 출구로 나와야 되나요", "삼 번 출구로 나와야 되나요"),
    ("2번 했어요", "두 번 했어요"),
    ("1번째", "첫 번째"),
    # Sino-Korean counters and plain numbers
    ("35,000원입니다", "삼만 오천 원입니다"),
    ("6월 10일", "유 월 십 일"),
    ("3층", "삼 층"),
    ("12345", "만 이천삼백사십오"),
    ("3을 더해", "삼을 더해"),
    ("20대 여성", "이십 대 여성"),
    # clock, decimals, percent
    ("오후 3:30에", "오후 세 시 삼십 분에"),
    ("64.5% 찬성", "육십사 점 오 퍼센트 찬성"),
    ("0.05", "영 점 영오"),
    # phone / account numbers: digit by digit, zero as 공
    ("010-1234-5678로 연락 주세요", "공일공 일이삼사 오육칠팔로 연락 주세요"),
    ("02 국번", "공이 국번"),
    # Latin: upper-cased, one unit a letter; accents go; apostrophes join
    ("kt 인터넷 Wi-Fi", "KT 인터넷 WI FI"),
    ("don't café", "DONT CAFE"),
    ("ＡＢＣ １２", "ABC 십이"),
    # dropped: Hanja, emoji, bare jamo; NFD input is composed
    ("韓國 좋아요 ㅋㅋ 😀", "좋아요"),
    ("\u1100\u1161\u11a8", "각"),
    ("  여러   칸\t띄움 ", "여러 칸 띄움"),
])
def test_strip_mode(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw, strip, keep_final", [
    ("명동역 몇 번 출구로 나와야 되나요?", "명동역 몇 번 출구로 나와야 되나요", "명동역 몇 번 출구로 나와야 되나요?"),
    ("아, 저기요. 삼계탕만 파는 식당인데 항상 사람들이 많아요.",
     "아 저기요 삼계탕만 파는 식당인데 항상 사람들이 많아요",
     "아 저기요 삼계탕만 파는 식당인데 항상 사람들이 많아요."),
    ("정말요?!\"", "정말요", "정말요!"),
    ("그래서 (웃음)", "그래서 웃음", "그래서 웃음"),
    ("3.", "삼", "삼."),
    ("?", "", ""),
])
def test_punct_modes(raw: str, strip: str, keep_final: str) -> None:
    assert normalize_text(raw, "strip") == strip
    assert normalize_text(raw, "keep-final") == keep_final


def test_idempotent_and_bad_mode() -> None:
    for raw in ("3명이서 010-1234-5678 KT?", "64.5% 찬성!"):
        for mode in ("strip", "keep-final"):
            once = normalize_text(raw, mode)
            assert normalize_text(once, mode) == once
    with pytest.raises(ValueError, match="punct must be one of"):
        normalize_text("네", "keep")


def test_normalize_cmd_kaldi_lines() -> None:
    result = CliRunner().invoke(normalize_cmd, ["--punct", "keep-final"], input="u1 2명이요?\nu2 네.\n")
    assert result.exit_code == 0
    assert result.output == "u1 두 명이요?\nu2 네.\n"
