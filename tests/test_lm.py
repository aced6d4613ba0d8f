"""Stage 3: the unit n-gram LM (lmplz + build_binary): files, perplexities against KenLM,
the unigram baseline, the device tables, -inf back-offs, atomic failure, the script."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kocall.datadir import Utterance, write_data_dir
from kocall.errors import DataError
from kocall.lang import prepare_lang
from kocall.lm import INF_BACKOFF_FLOOR, floor_infinite_backoffs, train_lm

kenlm = pytest.importorskip("kenlm")
ROOT = Path(__file__).resolve().parent.parent
LMPLZ = ROOT / "tools/kenlm/bin/lmplz"
pytestmark = pytest.mark.skipif(not os.access(LMPLZ, os.X_OK), reason="lmplz not built (utils/build_kenlm.sh)")

SUBJECTS = ["고객님", "카드", "통장", "명동역", "잔액"]
VERBS = ["확인 도와드릴게요", "분실 신고 하려고요", "조회 부탁드려요", "몇 번 출구예요", "재발급 받고 싶어요"]


def sentences(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)}" for _ in range(n)]


def make_data(path: Path, texts: list[str]) -> Path:
    write_data_dir(path, [Utterance(f"u{i:04d}", "s1", f"/dev/null/{i}.wav", t) for i, t in enumerate(texts)])
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("lm")
    rng = np.random.default_rng(0)
    train = make_data(tmp / "train", sentences(rng, 150))
    dev = make_data(tmp / "dev", sentences(rng, 20) + ["카드 뷁 조회"])   # 뷁: an OOV unit
    extra = tmp / "lm_text.txt"
    extra.write_text("\n".join(sentences(rng, 50)) + "\n", encoding="utf-8")
    prepare_lang(train, tmp / "lang")
    return {"tmp": tmp, "train": train, "dev": dev, "extra": extra, "lang": tmp / "lang"}


@pytest.fixture(scope="module")
def trained(corpus) -> tuple[Path, dict]:
    out = corpus["lang"] / "lm"
    report = train_lm(corpus["lang"], corpus["train"] / "text", corpus["dev"] / "text", out, order=4,
                      extra_text=corpus["extra"], conf={"memory": "64M"})
    return out, report


def test_lm_files_and_counts(trained, corpus):
    out, report = trained
    for name in ("lm.arpa", "lm.bin", "lm_tables.npz", "ppl.txt", "ppl.json", "lm_text.txt"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") and p.name != ".kocall-output"]   # no temp leftovers
    assert json.loads((out / "ppl.json").read_text()) == json.loads(json.dumps(report))
    assert report["train_sentences"] == 150 and report["extra_sentences"] == 50
    assert len(report["ngram_counts"]) == 4
    lines = (out / "lm_text.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200 and all("▁" in line for line in lines)
    first_train = (corpus["train"] / "text").read_text(encoding="utf-8").splitlines()[0].split(" ", 1)[1]
    assert lines[0] == " ".join("▁" if ch == " " else ch for ch in first_train)
    assert "perplexity 4-gram" in (out / "ppl.txt").read_text(encoding="utf-8")


def test_dev_perplexity_matches_kenlm_and_beats_unigram(trained, corpus):
    out, report = trained
    model = kenlm.Model(str(out / "lm.bin"))
    dev_texts = (corpus["dev"] / "text").read_text(encoding="utf-8").splitlines()
    words = [" ".join("▁" if ch == " " else ch for ch in line.split(" ", 1)[1]) for line in dev_texts]
    logprob = sum(model.score(w, bos=True, eos=True) for w in words)
    tokens = sum(len(w.split()) + 1 for w in words)
    dev = report["dev"]
    assert dev["logprob"] == pytest.approx(logprob, abs=1e-3)
    assert dev["tokens"] == tokens and dev["oov"] == 1
    assert dev["ppl"] == pytest.approx(10 ** (-logprob / tokens), rel=1e-6)
    assert dev["oov_rate"] == pytest.approx(1 / (tokens - len(words)))
    assert dev["ppl"] < report["unigram_dev"]["ppl"] / 2


def test_unigram_baseline_is_kneser_ney_unigram(trained, corpus):
    # the baseline scores each unit by its unigram log-prob alone: check one sentence by hand
    from kocall.lm import lmplz, perplexity
    from kocall_kernels.ngram.arpa import parse_arpa

    tmp = corpus["tmp"]
    lmplz(trained[0] / "lm_text.txt", tmp / "uni.arpa", 1, "64M", "", True, tmp)
    grams, unk = parse_arpa(tmp / "uni.arpa", progress=False)
    ppl = perplexity(tmp / "uni.arpa", ["카 드 ▁ 뷁"])
    expected = sum(grams[0][(w,)][0] for w in ["카", "드", "▁", "</s>"]) + unk
    assert ppl.logprob == pytest.approx(expected) and ppl.oov == 1 and ppl.tokens == 5


def test_device_tables_agree_with_the_binary(trained, corpus):
    from kocall.lang import Tokenizer
    from kocall_kernels.ngram import NgramTables

    out, _ = trained
    tables = NgramTables.load(out / "lm_tables.npz")
    tok = Tokenizer.from_lang_dir(corpus["lang"])
    model = kenlm.Model(str(out / "lm.bin"))
    for text in ["카드 분실 신고 하려고요", "통장 몇 번 출구예요", "잔액 잔액"]:
        total, _ = tables.score_sentence(tok.encode(text))
        assert total == pytest.approx(model.score(tok.to_lm_words(text)), abs=1e-4)


def test_infinite_backoff_is_floored(tmp_path):
    arpa = tmp_path / "x.arpa"
    arpa.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\t-inf\n-1\t</s>\n\n\\end\\\n", encoding="utf-8")
    assert floor_infinite_backoffs(arpa) == 1
    assert f"-1\t<s>\t{INF_BACKOFF_FLOOR}\n" in arpa.read_text(encoding="utf-8")


def test_bad_prune_fails_atomically(corpus):
    out = corpus["tmp"] / "bad_lm"
    with pytest.raises(DataError, match="prune"):
        train_lm(corpus["lang"], corpus["train"] / "text", corpus["dev"] / "text", out, order=3,
                 conf={"prune": "0 x", "memory": "64M"})
    assert not out.exists()


def test_train_lm_script_as_run_sh_calls_it(corpus):
    out = corpus["tmp"] / "lang_script_lm"
    missing_extra = corpus["tmp"] / "no_such_lm_text.txt"
    run = subprocess.run([str(ROOT / "steps/train_lm.sh"), "--order", "3", "--config", "conf/lm.yaml",
                          str(corpus["lang"]), str(corpus["train"]), str(corpus["dev"]), str(missing_extra), str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "ppl.json").read_text())
    assert report["order"] == 3 and report["extra_sentences"] == 0 and "dev perplexity 3-gram" in run.stdout


def test_jamo_lm_takes_its_order_from_the_conf_and_reports_per_character(corpus, trained, tmp_path):
    from kocall.lang import Tokenizer
    from kocall.lm import load_conf, perplexity
    from kocall_kernels.ngram import NgramTables

    # char units: one token per character, so the per-character perplexity is the perplexity
    dev = trained[1]["dev"]
    assert dev["chars"] == dev["tokens"] and dev["ppl_per_char"] == pytest.approx(dev["ppl"])

    lang = tmp_path / "lang_jamo"
    prepare_lang(corpus["train"], lang, unit="jamo")
    conf = {**load_conf(ROOT / "conf/lm.yaml"), "memory": "64M"}
    report = train_lm(lang, corpus["train"] / "text", corpus["dev"] / "text", lang / "lm",
                      extra_text=corpus["extra"], conf=conf)
    assert report["unit"] == "jamo" and report["order"] == 8 and len(report["ngram_counts"]) == 8
    dev_texts = [line.split(" ", 1)[1] for line in (corpus["dev"] / "text").read_text(encoding="utf-8").splitlines()]
    chars = sum(len(t) + 1 for t in dev_texts)
    assert report["dev"]["chars"] == chars and report["dev"]["tokens"] > 2 * chars
    assert report["dev"]["ppl_per_char"] == pytest.approx(10 ** (-report["dev"]["logprob"] / chars))
    assert "per character" in (lang / "lm" / "ppl.txt").read_text(encoding="utf-8")
    # an 8-gram is beyond the kenlm module (6): the scorer is checked against the device tables'
    # own back-off walk, sentence by sentence
    tok = Tokenizer.from_lang_dir(lang)
    tables = NgramTables.load(lang / "lm" / "lm_tables.npz")
    train_texts = [line.split(" ", 1)[1] for line in (corpus["train"] / "text").read_text(encoding="utf-8").splitlines()]
    for text in train_texts[:10] + ["고객님 잔액 카드"]:
        ours = perplexity(lang / "lm" / "lm.arpa", [tok.to_lm_words(text)])
        assert ours.oov == 0 and ours.logprob == pytest.approx(tables.score_sentence(tok.encode(text))[0], abs=1e-4)
    # a user's order wins over the conf's
    assert train_lm(lang, corpus["train"] / "text", corpus["dev"] / "text", tmp_path / "lm3", order=3,
                    conf=conf)["order"] == 3
