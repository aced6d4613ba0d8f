"""The jamo unit: decomposition and composition (kocall.jamo), the jamo Tokenizer, its lang dir."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from kocall import jamo
from kocall.datadir import Utterance, write_data_dir
from kocall.errors import DataError
from kocall.lang import BLANK, SPACE, UNK, Tokenizer, prepare_lang

ALL_SYLLABLES = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
L_GA, V_A, T_G = "\u1100", "\u1161", "\u11a8"     # choseong kiyeok, jungseong a, jongseong kiyeok


def make_data(path: Path, texts: list[str]) -> Path:
    write_data_dir(path, [Utterance(f"u{i:03d}", "spk1", f"/dev/null/{i}.wav", t) for i, t in enumerate(texts)])
    return path


def jamo_tokenizer(*others: str) -> Tokenizer:
    return Tokenizer([BLANK, UNK, SPACE, *jamo.JAMO_INVENTORY, *others])


def test_inventory_is_the_67_modern_jamo():
    assert len(jamo.JAMO_INVENTORY) == len(set(jamo.JAMO_INVENTORY)) == 19 + 21 + 27
    names = [unicodedata.name(ch) for ch in jamo.JAMO_INVENTORY]
    assert all(n.startswith("HANGUL CHOSEONG") for n in names[:19])
    assert all(n.startswith("HANGUL JUNGSEONG") for n in names[19:40])
    assert all(n.startswith("HANGUL JONGSEONG") for n in names[40:])
    # initial and final consonants are distinct units with the same compatibility letter
    assert L_GA != T_G and jamo.COMPATIBILITY[L_GA] == jamo.COMPATIBILITY[T_G] == "\u3131"
    assert set(jamo.COMPATIBILITY.values()) <= {chr(c) for c in range(0x3131, 0x3164)}


def test_every_syllable_decomposes_as_unicode_nfd_and_round_trips():
    decomposed = jamo.decompose(ALL_SYLLABLES)
    # the reference: Unicode's canonical decomposition (NFD) of each syllable
    assert decomposed == unicodedata.normalize("NFD", ALL_SYLLABLES)
    assert set(decomposed) == set(jamo.JAMO_INVENTORY)
    assert jamo.compose(decomposed) == ALL_SYLLABLES
    assert unicodedata.normalize("NFC", decomposed) == ALL_SYLLABLES
    # no separator is needed: a final always closes the syllable before it
    assert jamo.compose(jamo.decompose("각아 가가")) == "각아 가가"


def test_every_syllable_round_trips_through_the_tokenizer():
    tok = jamo_tokenizer()
    assert tok.unit == "jamo" and len(tok) == 70
    ids = tok.encode(ALL_SYLLABLES)
    assert tok.unk_id not in ids and 0 not in ids and len(ids) == len(jamo.decompose(ALL_SYLLABLES))
    assert tok.decode(ids) == ALL_SYLLABLES
    for syllable in ALL_SYLLABLES[::97]:          # and one by one (no context to lean on)
        assert tok.decode(tok.encode(syllable)) == syllable


def test_jamo_lang_dir_layout_and_mixed_round_trip(tmp_path):
    texts = ["KT 고객센터 몇 번이에요?", "안녕 하세요.", "A B C 가나다!", "ARS 일 번 눌러 주세요"]
    tok = prepare_lang(make_data(tmp_path / "train", texts), tmp_path / "lang", unit="jamo")
    rows = [line.split() for line in (tmp_path / "lang" / "tokens.txt").read_text(encoding="utf-8").splitlines()]
    symbols = [s for s, _ in rows]
    assert [int(i) for _, i in rows] == list(range(len(rows)))
    # fixed part: blank, unk, space, the 67 jamo in code-point order; then the other characters
    # by frequency (A twice, then the others once each, by code point): no syllable is a unit
    assert symbols[:70] == [BLANK, UNK, SPACE, *jamo.JAMO_INVENTORY]
    assert symbols[70:] == ["A", "!", ".", "?", "B", "C", "K", "R", "S", "T"]
    again = Tokenizer.from_lang_dir(tmp_path / "lang")
    assert tok.unit == again.unit == "jamo"
    for text in texts:
        ids = again.encode(text)
        assert tok.unk_id not in ids and again.decode(ids) == text
    assert again.to_lm_words("몇 번") == f"\u1106 \u1167 \u11be {SPACE} \u1107 \u1165 \u11ab"
    # a syllable never seen in training is still spelt (char units would need <unk>)
    assert again.unk_count("뷁") == 0 and again.decode(again.encode("뷁 KT")) == "뷁 KT"
    assert again.unk_count("Q") == 1


def test_malformed_sequences_compose_deterministically():
    tok = jamo_tokenizer()
    ids = {ch: tok.symbols.index(ch) for ch in jamo.JAMO_INVENTORY}
    sp = tok.space_id

    def dec(*units: str) -> str:
        return tok.decode([sp if u == " " else ids[u] for u in units])

    L_N, V_O, T_N = "\u1102", "\u1169", "\u11ab"     # ㄴ initial, ㅗ, ㄴ final
    assert dec(L_GA, V_A, T_G) == "각"
    assert dec(L_GA) == "ㄱ"                          # an initial with no vowel
    assert dec(V_A) == "ㅏ"                           # a vowel with no initial
    assert dec(T_G) == "ㄱ"                           # a final with no syllable
    assert dec(L_GA, L_N, V_O) == "ㄱ노"              # two initials: the first is stray
    assert dec(L_GA, V_A, V_O) == "가ㅗ"              # two vowels: the second is stray
    assert dec(L_GA, V_A, T_G, T_N) == "각ㄴ"          # two finals: the second is stray
    assert dec(L_GA, V_A, T_G, V_O) == "각ㅗ"          # a final is never re-read as an initial
    assert dec(L_GA, " ", V_A) == "ㄱ ㅏ"             # a space separates, never joins
    assert dec(L_GA, V_A, " ", T_G) == "가 ㄱ"
    # compound final and double initial map to their compatibility letters
    assert dec("\u11aa") == "ㄳ" and dec("\u1101") == "ㄲ"
    # the result is stable under NFC: what is scored is what was composed
    for text in (dec(L_GA, L_N, V_O), dec(T_G, V_A), dec(L_GA, V_A, T_G, T_N)):
        assert unicodedata.normalize("NFC", text) == text
    # the same input always gives the same output, whatever came before
    assert dec(V_O, L_GA, V_A) == "ㅗ가" and dec(L_N, V_O, L_GA, V_A) == "노가"


def test_inventory_detection():
    assert Tokenizer([BLANK, UNK, SPACE, "가"]).unit == "char"
    with pytest.raises(DataError, match="3 of the 67 jamo"):
        Tokenizer([BLANK, UNK, SPACE, *jamo.JAMO_INVENTORY[:3]])
    with pytest.raises(ValueError):
        jamo.decompose_syllable("A")


def test_prepare_lang_script_builds_jamo_units(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parent.parent
    train = make_data(tmp_path / "train", ["명동역 몇 번 출구로 나가요", "카드 분실 신고 하려고요"])
    run = subprocess.run([str(root / "steps/prepare_lang.sh"), "--unit", "jamo", str(train), str(tmp_path / "lang")],
                         capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr
    assert "70 units (jamo)" in run.stdout
    tok = Tokenizer.from_lang_dir(tmp_path / "lang")
    assert tok.unit == "jamo" and tok.decode(tok.encode("뷁 명동역")) == "뷁 명동역"
