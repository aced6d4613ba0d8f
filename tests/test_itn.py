"""Inverse normalisation (kocall.itn) against the normaliser (kocall.text_norm) it inverts."""
from __future__ import annotations

import re

import pytest

from kocall.itn import inverse_normalize
from kocall.synth.grammar import SentenceGenerator
from kocall.text_norm import normalize_text

CASES = [
    ("삼만 오천 원 입니다", "35,000원 입니다"),
    ("최소 주문 금액은 만 칠천 원입니다", "최소 주문 금액은 17,000원입니다"),
    ("세 명 예약", "3명 예약"),
    ("삼 월 이십 일 오후 세 시 삼십 분", "3월 20일 오후 3시 30분"),
    ("이천이십육 년 유 월 칠 일", "2026년 6월 7일"),
    ("이 점 오 킬로", "2.5킬로"),
    ("오십 퍼센트", "50%"),
    ("공일공 일이삼사 오육칠팔 로 전화 주세요", "010-1234-5678 로 전화 주세요"),
    ("백이십 번 버스", "120번 버스"),
    ("여섯 시에서 두 시로", "6시에서 2시로"),
    ("세 시 반", "3시 반"),
    ("이십 대", "20대"),
    # left alone: words that are not numbers here, and readings that would not read back
    ("이 사람 오 늘", "이 사람 오 늘"),
    ("지난번에 세 번 예약을 바꿨는데", "지난번에 세 번 예약을 바꿨는데"),   # 3번 예약 reads 삼 번
    ("영일이삼사오육칠", "영일이삼사오육칠"),                            # 0 reads back as 공
]


@pytest.mark.parametrize("spoken,written", CASES)
def test_written_forms(spoken: str, written: str) -> None:
    assert inverse_normalize(spoken) == written
    assert normalize_text(written) == normalize_text(spoken)


def test_round_trip_on_corpus_sentences() -> None:
    """Every sentence of the synthetic corpus's grammar reads back to itself, and most number
    phrases (prices, dates, times, counts, phone numbers) come out written."""
    sentences = [normalize_text(s) for s in SentenceGenerator(7).unique(1500)]
    written = [inverse_normalize(s) for s in sentences]
    assert [normalize_text(w) for w in written] == sentences
    with_price = [w for s, w in zip(sentences, written) if re.search(r"[만천백] 원", s) or " 원" in s]
    assert with_price and sum(bool(re.search(r"\d원", w)) for w in with_price) >= 0.9 * len(with_price)
    phones = [w for s, w in zip(sentences, written) if s.startswith("공일공 ") or " 공일공 " in s]
    assert phones and all(re.search(r"010-\d{4}-\d{4}", w) for w in phones)
    assert sum(bool(re.search(r"\d", w)) for w in written) >= 0.5 * len(written)
