"""Stage 2 units: tokens.txt layout, the Tokenizer (char and bpe), unseen characters, the script."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kocall.datadir import Utterance, write_data_dir
from kocall.errors import DataError
from kocall.lang import BLANK, SPACE, UNK, Tokenizer, char_symbols, prepare_lang

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [
    "명동역 몇 번 출구로 나가요",
    "예 고객님 무엇을 도와드릴까요",
    "카드 분실 신고 하려고요",
    "네 고객님 본인 확인 도와드리겠습니다",
    "잔액 조회 부탁드려요",
    "몇 시까지 영업하세요",
]


def make_data(path: Path, texts: list[str]) -> Path:
    write_data_dir(path, [Utterance(f"u{i:03d}", "spk1", f"/dev/null/{i}.wav", t) for i, t in enumerate(texts)])
    return path


def read_tokens_txt(path: Path) -> list[tuple[str, int]]:
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text(encoding="utf-8").splitlines()]


def test_char_tokens_layout(tmp_path):
    train = make_data(tmp_path / "train", ["가가가 나나 다", "가 나", "라"])
    tok = prepare_lang(train, tmp_path / "lang")
    rows = read_tokens_txt(tmp_path / "lang" / "tokens.txt")
    # blank, unk, space, then by frequency (가 4, 나 3, 다 1, 라 1: tie by code point)
    assert rows == [(BLANK, 0), (UNK, 1), (SPACE, 2), ("가", 3), ("나", 4), ("다", 5), ("라", 6)]
    assert (tok.blank_id, tok.unk_id, tok.space_id, len(tok)) == (0, 1, 2, 7)
    assert tok.suppressed_ids == [1]


def test_char_encode_decode_roundtrip(tmp_path):
    tok = prepare_lang(make_data(tmp_path / "train", SENTENCES), tmp_path / "lang")
    for text in SENTENCES:
        ids = tok.encode(text)
        assert 0 not in ids and tok.unk_id not in ids
        assert len(ids) == len(text)   # one unit per character, ▁ per space
        assert tok.decode(ids) == text
    assert tok.to_lm_words("명동역 몇 번") == "명 동 역 ▁ 몇 ▁ 번"
    assert [tok.symbols[i] for i in tok.encode("명동역 몇 번")] == "명 동 역 ▁ 몇 ▁ 번".split()
    # decode drops blanks, collapses and strips spaces (it does not merge repeats)
    sp, myeong, dong = tok.space_id, tok.encode("명")[0], tok.encode("동")[0]
    assert tok.decode([0, sp, myeong, 0, sp, sp, dong, dong, sp]) == "명 동동"


def test_unseen_characters_policy(tmp_path):
    tok = prepare_lang(make_data(tmp_path / "train", SENTENCES), tmp_path / "lang")
    ids = tok.encode("몇 번 뷁")
    assert ids[-1] == tok.unk_id and tok.unk_count("몇 번 뷁") == 1 and tok.unk_count("몇 번") == 0
    assert tok.decode(ids) == "몇 번"                 # <unk> is never output
    assert tok.to_lm_words("몇 뷁") == "몇 ▁ 뷁"      # the LM sees the character itself


def test_transcripts_are_renormalised(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    # a text file that skipped normalisation: punctuation and double spaces
    (train / "text").write_text("u1 안녕,  하세요\nu2 네\n", encoding="utf-8")
    tok = prepare_lang(train, tmp_path / "lang")
    assert "," not in tok.symbols and tok.decode(tok.encode("안녕 하세요")) == "안녕 하세요"


def test_bpe_units(tmp_path):
    texts = SENTENCES * 5
    tok = prepare_lang(make_data(tmp_path / "train", texts), tmp_path / "lang", unit="bpe", vocab_size=80)
    lang = tmp_path / "lang"
    assert (lang / "bpe.model").is_file() and tok.unit == "bpe"
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(lang / "bpe.model"))
    rows = read_tokens_txt(lang / "tokens.txt")
    assert rows[0] == (BLANK, 0) and rows[1] == (UNK, 1)
    assert [s for s, _ in rows[1:]] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert "<s>" not in tok.symbols and "</s>" not in tok.symbols
    for text in SENTENCES:
        ids = tok.encode(text)
        assert ids == [i + 1 for i in sp.encode(text)] and 0 not in ids
        assert tok.decode(ids) == text
        assert tok.to_lm_words(text).split() == [tok.symbols[i] for i in ids]
    again = Tokenizer.from_lang_dir(lang)
    assert again.encode(SENTENCES[0]) == tok.encode(SENTENCES[0]) and again.unit == "bpe"
    assert tok.encode("뷁")[-1] == tok.unk_id


def test_prepare_lang_script_and_atomic_failure(tmp_path):
    train = make_data(tmp_path / "train", SENTENCES)
    run = subprocess.run([str(ROOT / "steps/prepare_lang.sh"), "--unit", "char", str(train), str(tmp_path / "lang")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert Tokenizer.from_lang_dir(tmp_path / "lang").decode(Tokenizer.from_lang_dir(tmp_path / "lang")
                                                            .encode(SENTENCES[1])) == SENTENCES[1]
    # too few pieces for the characters: one-line error naming the file, nothing written
    run = subprocess.run([str(ROOT / "steps/prepare_lang.sh"), "--unit", "bpe", "--vocab-size", "10",
                          str(train), str(tmp_path / "lang_bpe")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1 and "train/text" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "lang_bpe").exists()


def test_char_symbols_skip_reserved():
    assert char_symbols(["가 ▁나"]) == [BLANK, UNK, SPACE, "가", "나"]
    with pytest.raises(DataError):
        Tokenizer(["가", "<unk>"])
