"""A sentence grammar for Korean call-centre speech (customer and agent turns).

Domains: restaurant reservations, menus and prices, opening hours and parking, directions
and subway exits, deliveries, bookings and cancellations (hotels, clinics, salons,
tickets). A template is a string with slots, `{station}`, `{time|로}`: the part after `|`
is a particle attached with the right allomorph for the filled word's final consonant
(로/으로, 은/는, 이/가, 을/를, 과/와, 이랑/랑). A trailing digit names a second filling of
the same slot kind (`{menu2}`). Every number is written as spoken, via kocall.korean_numbers
(삼만 오천 원, 세 시 반, 두 명, 오 번 출구). Sentences keep their final ? or . as the
hackathon transcripts did.

`SentenceGenerator(seed).sentence()` draws one sentence; `.unique(n, exclude)` draws n
distinct ones. Everything is driven by one `random.Random`, so a seed gives the same list.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Iterable

from kocall.korean_numbers import read_digits, read_with_counter

# ----------------------------------------------------------------------------- particles

_PARTICLES = {  # key -> (after a final consonant, after a vowel)
    "은": ("은", "는"), "는": ("은", "는"),
    "이": ("이", "가"), "가": ("이", "가"),
    "을": ("을", "를"), "를": ("을", "를"),
    "과": ("과", "와"), "와": ("과", "와"),
    "으로": ("으로", "로"), "로": ("으로", "로"),
    "이랑": ("이랑", "랑"), "랑": ("이랑", "랑"),
    "이에요": ("이에요", "예요"), "예요": ("이에요", "예요"),
}
_RIEUL = 8  # index of ㄹ among Hangul final consonants


def final_consonant(word: str) -> int:
    """Index of the last syllable's final consonant (0 = none, 8 = ㄹ); 0 for non-Hangul."""
    last = word.rstrip()[-1:]
    if not last or not "가" <= last <= "힣":
        return 0
    return (ord(last) - 0xAC00) % 28


def attach(word: str, particle: str) -> str:
    """word + the particle's allomorph: 시간+로 -> 시간으로, 출구+로 -> 출구로, 지하철+로 -> 지하철로."""
    if particle not in _PARTICLES:
        return word + particle
    with_coda, without = _PARTICLES[particle]
    coda = final_consonant(word)
    if with_coda == "으로" and coda == _RIEUL:  # ㄹ takes 로: 지하철로
        return word + without
    return word + (with_coda if coda else without)


# ----------------------------------------------------------------------------- vocabularies

STATIONS = (
    "명동역", "강남역", "홍대입구역", "서울역", "잠실역", "신촌역", "종로삼가역", "을지로입구역", "시청역",
    "광화문역", "삼성역", "선릉역", "역삼역", "교대역", "사당역", "건대입구역", "왕십리역", "합정역",
    "이태원역", "압구정역", "신사역", "여의도역", "영등포역", "용산역", "동대문역", "혜화역", "성수역",
    "수원역", "부평역", "해운대역", "서면역", "노원역", "신림역", "구로디지털단지역", "가산디지털단지역",
    "충무로역", "안국역", "경복궁역", "마포역", "공덕역", "당산역", "목동역", "천호역", "수서역",
    "판교역", "정자역", "미금역", "야탑역", "범계역", "인천터미널역",
)
AREAS = (
    "명동", "강남", "홍대", "신촌", "이태원", "여의도", "잠실", "성수동", "연남동", "망원동", "압구정동",
    "청담동", "판교", "분당", "일산", "해운대", "서면", "광안리", "종로", "인사동", "삼청동", "을지로",
    "합정", "상수동", "문래동", "역삼동", "서초동", "목동", "상암동", "노량진", "신림동", "대치동",
    "송파", "마포", "용산", "동탄", "광교", "수원", "부천", "대구 동성로",
)
SHOPS = (
    "명동칼국수", "할매순대국", "진주회관", "한우마을", "바다횟집", "우리집밥상", "청기와타운",
    "소문난감자탕", "토속촌", "하동관", "봉추찜닭", "고향만두", "미가초밥", "행복한베이커리",
    "꽃피는카페", "달빛포차", "산들한정식", "황소곱창", "제주흑돼지", "온천집", "부산밀면", "전주비빔밥",
    "강릉순두부", "시골보쌈", "원조족발", "마포갈매기", "참숯불고기", "옛날통닭", "엄마손김밥",
    "서울치과", "튼튼정형외과", "하늘안과", "미소헤어", "스타일살롱", "그랜드호텔", "바다펜션",
    "한빛서점", "초록약국", "새한정비소", "푸른꽃집",
)
RESTAURANTS = SHOPS[:29]
MENUS = (
    "김치찌개", "된장찌개", "비빔밥", "불고기", "삼겹살", "갈비탕", "물냉면", "비빔냉면", "칼국수",
    "떡볶이", "순두부찌개", "제육볶음", "돈가스", "짜장면", "짬뽕", "탕수육", "모둠초밥", "회덮밥",
    "후라이드 치킨", "양념치킨", "족발", "보쌈", "해물파전", "설렁탕", "감자탕", "닭갈비", "김밥",
    "왕만두", "육개장", "곱창전골", "부대찌개", "콩국수", "잔치국수", "생선구이", "갈비찜", "불낙전골",
    "한정식 코스", "점심 정식", "오늘의 메뉴", "아이 메뉴",
)
DRINKS = ("아메리카노", "카페라떼", "콜라", "사이다", "맥주", "소주", "막걸리", "오렌지 주스", "녹차", "생수")
NAMES = (
    "김민준", "이서연", "박지훈", "최수빈", "정우진", "강하은", "조현우", "윤지아", "장민서", "임도윤",
    "한지민", "오세훈", "서예린", "신동현", "권나연", "황보라", "안재현", "송유진", "류성민", "홍길동",
)
APARTMENTS = ("래미안아파트", "자이아파트", "푸르지오", "힐스테이트", "현대아파트", "주공아파트",
              "롯데캐슬", "아이파크", "삼성쉐르빌", "한신아파트")
LANDMARKS = ("우체국", "은행", "편의점", "주민센터", "교보문고", "스타벅스", "약국", "경찰서", "버스 정류장",
             "공영 주차장", "시청", "백화점")
WEEKDAYS = ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일")
DAY_GROUPS = ("평일", "주말", "공휴일", "토요일", "일요일", "금요일", "명절 연휴")
DIRECTIONS = ("왼쪽", "오른쪽", "앞쪽", "큰길 쪽", "시장 쪽", "횡단보도 쪽")


# ----------------------------------------------------------------------------- slot fillers

Slot = Callable[[random.Random], str]


# Day parts and the clock hours that go with them (저녁 일곱 시, never 아침 한 시).
DAY_PART_HOURS = {
    "오전": range(7, 12), "오후": range(1, 10), "아침": range(6, 11), "점심": (11, 12, 1, 2),
    "저녁": range(5, 10), "밤": range(8, 13), "새벽": range(1, 6),
}


def hour_phrase(rng: random.Random, part: bool | None = None) -> str:
    """A clock time as spoken: '오후 두 시', '세 시 반', '열한 시 삼십 분'."""
    if part is None:
        part = rng.random() < 0.5
    prefix = rng.choice(tuple(DAY_PART_HOURS)) if part else ""
    hour = rng.choice(tuple(DAY_PART_HOURS[prefix])) if prefix else rng.randint(1, 12)
    text = read_with_counter(hour, "시")
    minute_kind = rng.random()
    if minute_kind < 0.25:
        text += " 반"
    elif minute_kind < 0.45:
        text += " " + read_with_counter(rng.choice((10, 15, 20, 40, 45, 50)), "분")
    return f"{prefix} {text}" if prefix else text


def date_phrase(rng: random.Random) -> str:
    """'삼 월 이십 일', '다음 주 화요일', '이번 주 토요일', '내일', '이십오 일'."""
    kind = rng.random()
    if kind < 0.4:
        month = rng.randint(1, 12)
        return f"{read_with_counter(month, '월')} {read_with_counter(rng.randint(1, 28 if month == 2 else 30), '일')}"
    if kind < 0.75:
        return f"{rng.choice(('이번 주', '다음 주', '다다음 주'))} {rng.choice(WEEKDAYS)}"
    if kind < 0.9:
        return rng.choice(("오늘", "내일", "모레", "이번 주말", "다음 주말", "오늘 저녁", "내일 점심", "내일 저녁"))
    return read_with_counter(rng.randint(1, 31), "일")


def price_phrase(rng: random.Random) -> str:
    """A price in won as spoken: '삼만 오천 원', '구천 원', '만 이천 원'."""
    kind = rng.random()
    if kind < 0.5:
        won = rng.randint(6, 40) * 500             # 3,000 .. 20,000 in steps of 500
    elif kind < 0.85:
        won = rng.randint(10, 100) * 1000          # 10,000 .. 100,000
    else:
        won = rng.randint(10, 60) * 5000           # 50,000 .. 300,000
    return read_with_counter(won, "원")


def people_phrase(rng: random.Random) -> str:
    n = rng.choice((1, 2, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 10, 12, 15, 20))
    return read_with_counter(n, rng.choice(("명", "명", "명", "분(people)")))


def food_count(rng: random.Random) -> str:
    return read_with_counter(rng.randint(1, 6), rng.choice(("개", "그릇", "인분", "인분", "개")))


def minutes_phrase(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return read_with_counter(rng.randint(1, 3), "시간")
    return read_with_counter(rng.choice((5, 10, 15, 20, 25, 30, 40, 50)), "분")


def exit_phrase(rng: random.Random) -> str:
    return f"{read_with_counter(rng.randint(1, 12), '번')} 출구"


def phone_phrase(rng: random.Random) -> str:
    if rng.random() < 0.7:
        digits = f"010-{rng.randint(0, 9999):04d}-{rng.randint(0, 9999):04d}"
    else:
        digits = f"0{rng.randint(2, 6)}{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
    return read_digits(digits)


SLOTS: dict[str, Slot] = {
    "station": lambda r: r.choice(STATIONS),
    "area": lambda r: r.choice(AREAS),
    "shop": lambda r: r.choice(SHOPS),
    "restaurant": lambda r: r.choice(RESTAURANTS),
    "menu": lambda r: r.choice(MENUS),
    "drink": lambda r: r.choice(DRINKS),
    "name": lambda r: r.choice(NAMES),
    "landmark": lambda r: r.choice(LANDMARKS),
    "weekday": lambda r: r.choice(WEEKDAYS),
    "days": lambda r: r.choice(DAY_GROUPS),
    "direction": lambda r: r.choice(DIRECTIONS),
    "time": hour_phrase,
    "clock": lambda r: hour_phrase(r, part=False),
    "date": date_phrase,
    "price": price_phrase,
    "people": people_phrase,
    "count": food_count,
    "cups": lambda r: read_with_counter(r.randint(1, 5), r.choice(("잔", "병"))),
    "minutes": minutes_phrase,
    "hours": lambda r: read_with_counter(r.randint(1, 4), "시간"),
    "exit": exit_phrase,
    "line": lambda r: read_with_counter(r.randint(1, 9), "호선"),
    "bus": lambda r: read_with_counter(r.choice((r.randint(100, 799), r.randint(1000, 9800) // 10 * 10)), "번"),
    "meters": lambda r: read_with_counter(r.randint(1, 10) * 50, "미터"),
    "floor": lambda r: ("지하 " if r.random() < 0.25 else "") + read_with_counter(r.randint(1, 12), "층"),
    "chairs": lambda r: read_with_counter(r.randint(1, 4), "개"),
    "cars": lambda r: read_with_counter(r.choice((5, 10, 15, 20, 30, 50, 100)), "대"),
    "apartment": lambda r: r.choice(APARTMENTS),
    "dong": lambda r: read_with_counter(r.randint(101, 125), "동"),
    "ho": lambda r: read_with_counter(r.randint(1, 25) * 100 + r.randint(1, 8), "호"),
    "phone": phone_phrase,
    "order": lambda r: read_digits(f"{r.randint(0, 99999999):08d}", zero=r.choice(("공", "영"))),
    "nights": lambda r: r.choice(("일 박", "이 박", "삼 박", "일 박 이 일", "이 박 삼 일")),
    "ndays": lambda r: read_with_counter(r.randint(1, 7), "일"),
    "tickets": lambda r: read_with_counter(r.randint(1, 6), "장"),
    "times": lambda r: read_with_counter(r.randint(2, 5), "번(times)"),
    "percent": lambda r: read_with_counter(r.choice((5, 10, 15, 20, 30, 50)), "퍼센트"),
    "months": lambda r: read_with_counter(r.randint(1, 12), "개월"),
    "age": lambda r: read_with_counter(r.randint(3, 12), "살"),
}

# ----------------------------------------------------------------------------- templates

TEMPLATES: dict[str, tuple[str, ...]] = {
    "directions": (
        "{station} 몇 번 출구로 나와야 되나요?",
        "{station}에서 {shop}까지 어떻게 가나요?",
        "{station} {exit|로} 나오셔서 {minutes} 정도 걸어오시면 됩니다.",
        "{station}에서 내려서 {exit|로} 나오시면 바로 보입니다.",
        "{shop|을} 가려면 {station}에서 내리는 게 제일 가깝나요?",
        "{station}에서 걸어서 몇 분 정도 걸리나요?",
        "{station}에서 걸어서 {minutes} 정도 걸립니다.",
        "{area}에 있는 {shop} 맞나요?",
        "{line} {station}에서 내리시면 됩니다.",
        "{station} {exit} 앞에서 {direction|으로} {meters} 오시면 됩니다.",
        "{landmark} 건너편 건물 {floor}에 있습니다.",
        "{landmark} 옆 건물 {floor|으로} 올라오시면 됩니다.",
        "{bus} 버스 타시고 {station} 앞에서 내리시면 돼요.",
        "{area} 지점이랑 {area2} 지점 중에 어디가 더 가까워요?",
        "{station|이랑} {station2} 중에 어디서 내리는 게 빨라요?",
        "{area}에서 {shop}까지 택시로 얼마나 걸려요?",
        "{shop} 근처에 {landmark} 있나요?",
        "{station} {exit}에서 {landmark} 쪽으로 오시면 됩니다.",
        "네비게이션에 {shop|을} 치면 나오나요?",
        "{area} {shop} 위치가 정확히 어디예요?",
        "지금 {station}인데 여기서 어느 쪽으로 가야 돼요?",
    ),
    "reservation": (
        "{date} {time}에 {people} 예약 가능한가요?",
        "{date} {time}에 {people} 자리 있나요?",
        "{date} {time}에 {people} 예약하고 싶은데요.",
        "{people}인데 룸으로 예약할 수 있을까요?",
        "{name|으로} 예약했는데 확인 좀 해 주세요.",
        "{date} {time|으로} {people} 예약 도와드리겠습니다.",
        "{date} 예약을 {date2|로} 변경하고 싶은데요.",
        "{date} {time} 예약 취소하려고 전화했어요.",
        "예약 시간을 {clock}에서 {clock2|로} 바꿀 수 있을까요?",
        "혹시 인원을 {people|으로} 늘려도 괜찮을까요?",
        "{people} 창가 자리로 부탁드려도 될까요?",
        "예약금은 {price}입니다.",
        "노쇼 방지를 위해 예약금 {price|을} 받고 있습니다.",
        "{date|은} 예약이 모두 찼습니다.",
        "{date} {time|은} 자리가 없고 {clock2}에는 가능합니다.",
        "{restaurant} {area}점 {date} 예약 되나요?",
        "{people} {menu} 코스로 예약하면 얼마예요?",
        "예약자 성함이랑 연락처 말씀해 주시겠어요?",
        "예약자 성함은 {name}이고 연락처는 {phone}입니다.",
        "{date} {time}에 {name} 님 {people} 예약 확인되었습니다.",
        "단체 {people} 예약은 며칠 전에 해야 되나요?",
        "{date}에 돌잔치로 {people} 예약 가능할까요?",
        "유아 의자 {chairs} 준비해 주실 수 있나요?",
    ),
    "menu": (
        "{menu} 얼마예요?",
        "{menu|은} {price}입니다.",
        "{menu} {count|이랑} {menu2} {count2} 포장 돼요?",
        "{menu} 맵기 조절 가능한가요?",
        "{menu} 세트 메뉴는 얼마인가요?",
        "점심 특선 {menu|은} 몇 시까지 주문할 수 있나요?",
        "{menu} {count} 주문하면 총 얼마인가요?",
        "총 {price} 나왔습니다.",
        "{drink} {cups} 추가해 주세요.",
        "{menu}에 들어가는 재료가 뭐예요?",
        "오늘 {menu} 되나요?",
        "{menu|은} 재료 소진으로 오늘 안 됩니다.",
        "{menu|이랑} {menu2} 중에 뭐가 더 잘 나가요?",
        "{restaurant} 대표 메뉴가 뭐예요?",
        "{restaurant}에서 제일 인기 있는 메뉴는 {menu}입니다.",
        "{menu} {count}에 {price}이고 {drink|은} 무료입니다.",
        "{price} 이상 주문하시면 {drink} 한 병 서비스로 드립니다.",
        "{menu} 가격이 {price|으로} 올랐나요?",
        "{menu|을} {price}에 할인하고 있습니다.",
        "포장하면 {percent} 할인되나요?",
        "{menu} 양은 {people|이} 먹기에 충분한가요?",
        "{menu} 아이들이 먹기에 많이 매운가요?",
        "카드 결제 되나요?",
    ),
    "hours_parking": (
        "평일에는 보통 몇 시까지 주차가 가능한가요?",
        "{days}에도 영업하나요?",
        "{days}에는 몇 시에 문 열어요?",
        "{days}에는 {time}부터 {clock2}까지 영업합니다.",
        "브레이크 타임은 {clock}부터 {clock2}까지입니다.",
        "라스트 오더는 {time}입니다.",
        "주차는 {hours} 무료입니다.",
        "주차 공간이 몇 대 정도 있나요?",
        "주차는 {cars}까지 가능합니다.",
        "{days}에는 주차가 어려우니 대중교통을 이용해 주세요.",
        "건물 지하 주차장에 {hours} 무료 주차 가능합니다.",
        "{date}도 정상 영업하나요?",
        "매주 {weekday|은} 정기 휴무입니다.",
        "{days}에는 몇 시까지 하세요?",
        "{shop} {days} 영업시간이 어떻게 되나요?",
        "{shop|은} {time}에 문을 닫습니다.",
        "주차 요금은 {minutes}에 {price}입니다.",
        "{area} 근처에 주차할 만한 곳이 있나요?",
        "발렛 파킹 되나요?",
        "{landmark} 공영 주차장에 주차하시면 {hours} 지원해 드립니다.",
        "{date|은} {time}까지만 영업합니다.",
        "{days} 점심시간이 몇 시부터 몇 시까지예요?",
    ),
    "delivery": (
        "배달 주문하려고 하는데요.",
        "{area}까지 배달 되나요?",
        "배달은 {minutes} 정도 걸립니다.",
        "주소는 {area} {apartment} {dong} {ho}입니다.",
        "주문한 지 {minutes|이} 지났는데 아직 안 왔어요.",
        "최소 주문 금액이 얼마예요?",
        "최소 주문 금액은 {price}입니다.",
        "배달비는 {price}입니다.",
        "연락처는 {phone}입니다.",
        "주문 번호 {order} 맞으신가요?",
        "{menu} {count} 배달 부탁드립니다.",
        "{menu} {count|이랑} {drink} {cups} 배달해 주세요.",
        "문 앞에 두고 벨 눌러 주세요.",
        "{apartment} {dong} {ho|으로} 보내 주세요.",
        "배달 기사님이 {minutes} 뒤에 도착합니다.",
        "{menu|이} 빠져서 왔는데 어떻게 하죠?",
        "주문한 {menu|가} 다 식어서 왔어요.",
        "{price} 이상이면 배달비가 무료인가요?",
        "결제는 현장에서 카드로 할게요.",
        "{time|으로} 예약 배달 가능한가요?",
        "주문 취소하면 {price} 환불되나요?",
    ),
    "booking": (
        "{date}에 {nights} 예약하고 싶은데요.",
        "{date} 체크인인데 {clock}에 얼리 체크인 가능한가요?",
        "예약 번호 {order|으로} 조회해 주세요.",
        "취소 수수료가 있나요?",
        "{ndays} 전까지는 취소 수수료가 없습니다.",
        "환불은 영업일 기준 {ndays} 안에 처리됩니다.",
        "{date} {time} 진료 예약 가능한가요?",
        "{date} {time}에 커트 예약했는데 {minutes} 정도 늦을 것 같아요.",
        "기차표 {tickets} 예매했는데 취소하고 싶어요.",
        "{date|로} 날짜 변경 가능할까요?",
        "{shop} {date} {time} 예약 취소해 주세요.",
        "{date} {time|로} 예약 변경해 드렸습니다.",
        "예약하신 분 성함이 {name} 님 맞으세요?",
        "{nights}에 {price}이고 조식이 포함되어 있습니다.",
        "{age} 아이도 추가 요금이 있나요?",
        "{people} 방 하나로 예약 가능한가요?",
        "{date|은} 이미 예약이 꽉 찼습니다.",
        "예약 확인 문자를 {phone|으로} 보내 드렸습니다.",
        "지난번에 {times} 예약을 바꿨는데 또 바꿔도 되나요?",
        "회원 가입하면 {percent} 할인해 드립니다.",
        "{months} 할부로 결제 가능한가요?",
        "공연 표 {tickets} {date} {time|으로} 예매해 주세요.",
        "{date} {time} 이후로 가능한 시간 있나요?",
    ),
}


def template_slots(template: str, slots: dict[str, Slot] | None = None) -> list[tuple[str, str, str]]:
    """(placeholder, slot kind, particle) for each `{kind[digit]|particle}` in a template."""
    out = []
    for match in re.finditer(r"\{([a-z]+)(\d?)(?:\|([^}]+))?\}", template):
        kind = match.group(1)
        if kind not in (SLOTS if slots is None else slots):
            raise ValueError(f"template {template!r}: unknown slot {kind!r}")
        out.append((match.group(0), kind, match.group(3) or ""))
    return out


def fill(template: str, rng: random.Random, slots: dict[str, Slot] | None = None) -> str:
    """Fill every slot of `template`; the same placeholder twice gets the same filling."""
    slots = SLOTS if slots is None else slots
    values: dict[str, str] = {}
    text = template
    for placeholder, kind, particle in template_slots(template, slots):
        name = placeholder.split("|")[0]
        if name not in values:
            values[name] = slots[kind](rng)
        text = text.replace(placeholder, attach(values[name], particle) if particle else values[name], 1)
    return " ".join(text.split())


class SentenceGenerator:
    """Deterministic sampler of call-centre sentences (domain chosen uniformly, then a template)."""

    def __init__(self, seed: int, domains: Iterable[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.domains = sorted(domains or TEMPLATES)
        for domain in self.domains:
            if domain not in TEMPLATES:
                raise ValueError(f"unknown domain {domain!r}; known: {sorted(TEMPLATES)}")

    def sentence(self) -> str:
        templates = TEMPLATES[self.rng.choice(self.domains)]
        return fill(self.rng.choice(templates), self.rng)

    def unique(self, n: int, exclude: set[str] | frozenset[str] = frozenset(), max_tries: int | None = None) -> list[str]:
        """n distinct sentences, none in `exclude`, in draw order."""
        seen: set[str] = set()
        out: list[str] = []
        tries = 0
        limit = max_tries if max_tries is not None else 50 * n + 1000
        while len(out) < n:
            tries += 1
            if tries > limit:
                raise RuntimeError(f"grammar gave only {len(out)} unique sentences of {n} asked for")
            s = self.sentence()
            if s not in seen and s not in exclude:
                seen.add(s)
                out.append(s)
        return out


# ----------------------------------------------------------------------------- hotword test set
# Names a call centre hears but no training or LM sentence holds: new branches, menu items and
# products. They fill the slots of HOTWORD_TEMPLATES only (never the training grammar above),
# and generate.py keeps just those whose syllables the training sentences cover (the AM can
# spell them) and that occur in no training, dev, test or LM sentence.

NEW_BRANCHES = (
    "신당점", "보문점", "석촌점", "방이점", "미아점", "창동점", "등촌점", "개포점", "도곡점", "양재점",
    "방배점", "이수점", "대림점", "구의점", "군자점", "상도점", "봉천점", "신정점", "오금점", "가락점",
    "문정점", "장지점", "고덕점", "명일점", "길동점", "둔촌점", "암사점", "중계점", "상계점", "수유점",
    "번동점", "정릉점", "길음점", "홍제점", "불광점", "응암점", "수색점", "가좌점", "성산점", "면목점",
    "중화점", "신내점", "묵동점", "화정점", "행신점", "백석점", "주엽점", "대화점", "송도점", "청라점",
)
NEW_MENUS = (
    "들깨칼국수", "차돌된장찌개", "매운갈비찜", "낙지볶음밥", "고추잡채", "우렁쌈밥", "황태해장국",
    "코다리찜", "닭한마리", "꼬막비빔밥", "굴국밥", "주꾸미볶음", "버섯전골", "오징어덮밥", "새우볶음밥",
    "동태찌개", "청국장", "김치볶음밥", "쟁반국수", "들기름막국수", "육회비빔밥", "뚝배기불고기",
    "해물순두부", "차돌짬뽕", "고기만두", "치즈돈가스", "마라탕", "소고기국밥", "가지볶음", "매운족발",
    "냉모밀", "알밥", "수육국밥", "전복죽", "호박죽", "삼계탕", "오리구이", "장어덮밥", "갈치조림", "고등어구이",
)
NEW_PRODUCTS = (
    "홍삼정", "비타민젤리", "유기농두유", "곤약젤리", "현미누룽지", "수제쿠키", "생강차", "대추차", "유자차",
    "오미자청", "레몬청", "녹차라떼", "흑임자라떼", "고구마라떼", "치즈케이크", "호두과자", "약과", "팥빙수",
    "망고빙수", "꿀떡", "찹쌀떡", "단팥빵", "소금빵", "마늘빵", "한우세트", "과일세트", "견과세트", "김세트",
    "참기름세트", "햄세트", "한과세트", "떡국떡", "도시락세트", "샐러드팩", "주스세트", "커피원두", "보리차",
    "옥수수차", "누룽지사탕", "쌀과자",
)

HOTWORD_SLOT_NAMES = {"newbranch": NEW_BRANCHES, "newmenu": NEW_MENUS, "newproduct": NEW_PRODUCTS}
# More names for dev_hotwords only (after those test_hotwords left): test_hotwords draws from the
# lists above alone, so adding here never changes it.
DEV_HOTWORD_EXTRA_NAMES = {
    "newbranch": ("사당점", "신림점", "노원점", "도봉점", "마포점", "합정점", "망원점", "연남점", "서교점", "상암점",
                  "목동점", "신월점", "화곡점", "발산점", "마곡점", "공항점", "김포점", "부천점", "일산점", "파주점"),
    "newmenu": ("감자전", "김치전", "해물파전", "비빔국수", "잔치국수", "떡만둣국", "순댓국", "감자탕", "부대찌개",
                "제육덮밥", "오므라이스", "카레라이스", "돈가스덮밥", "라면정식", "김밥세트", "떡볶이세트", "순대국밥",
                "곰탕", "설렁탕", "갈비탕"),
    "newproduct": ("식혜", "수정과", "매실청", "자몽차", "레몬차", "인삼차", "밀크티", "감자칩", "치즈볼",
                   "우유식빵", "모카빵", "크림빵", "카스텔라", "계란빵", "불고기세트", "된장세트", "고추장세트",
                   "간장세트", "사과주스", "포도주스"),
}

HOTWORD_TEMPLATES: tuple[str, ...] = (
    "{restaurant} {newbranch} {date} 예약 되나요?",
    "{newbranch|은} {days}에도 영업하나요?",
    "{newbranch|은} 몇 시까지 하세요?",
    "{newbranch} 위치가 정확히 어디예요?",
    "{newbranch} 가려면 {station}에서 내리는 게 제일 가깝나요?",
    "{date} {time}에 {newbranch} {people} 예약 가능한가요?",
    "{newbranch} 근처에 {landmark} 있나요?",
    "{newbranch}에서 {newmenu} 포장 되나요?",
    "{newmenu} 얼마예요?",
    "{newmenu|은} {price}입니다.",
    "{newmenu} {count} 포장 돼요?",
    "오늘 {newmenu} 되나요?",
    "{newmenu|이랑} {menu} 중에 뭐가 더 잘 나가요?",
    "{newmenu} {count} 배달 부탁드립니다.",
    "{newmenu} 맵기 조절 가능한가요?",
    "{newproduct} 얼마예요?",
    "{newproduct|은} {price}입니다.",
    "{newproduct} {count} 주문하면 총 얼마인가요?",
    "{newproduct} 오늘 되나요?",
    "{newproduct|을} {price}에 할인하고 있습니다.",
    "{newbranch}에서 {newproduct|을} {price}에 할인하고 있습니다.",
)


def hotword_slots(names: dict[str, list[str]]) -> dict[str, Slot]:
    """The training grammar's slots plus `newbranch`/`newmenu`/`newproduct` drawn from `names`."""
    slots = dict(SLOTS)
    for kind, choices in names.items():
        slots[kind] = (lambda options: lambda r: r.choice(options))(tuple(choices))
    return slots
