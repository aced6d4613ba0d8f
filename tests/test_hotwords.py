"""Hotwords end to end: the list format, compiling over the model's units, `kocall decode
--hotwords`, the decode stage's biased decodes, and hotword recall / false alarms in scoring.

Decoding expectations are computed independently of kocall.decode: the CPU beam search on
log-probs computed directly (tests/test_decode.py's setup) with a ContextGraph built from
hand-written unit ids."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kocall import stage_decode as stage
from kocall.datadir import Utterance, write_data_dir
from kocall.errors import DataError
from kocall.hotwords import (DEFAULT_LM_COMPENSATION, compile_hotwords, hotword_counts, read_hotwords,
                             unit_bonuses)
from kocall.lang import Tokenizer
from kocall.scoring import score_decodes
from kocall_kernels.ctc_decoder import DecoderConfig
from kocall_kernels.ctc_decoder.context_graph import ContextGraph
from kocall_kernels.ngram.tables import NgramTables
from tests.test_decode import (MIN_LOGP, TOPK, UTTS, invoke, read_kaldi_text, setup,  # noqa: F401
                               stage_layout, write_bigram_arpa)
from tests.test_export import VOCAB

REPO = Path(__file__).resolve().parents[1]

# Single-character units for the tiny model of tests/test_decode.py (its weights do not care
# what the units are called), so that text phrases tokenise into them.
CHARS = "가나다라마바사아자차카타파하거너더러머버서어저처커터퍼허"[: VOCAB - 3]


@pytest.fixture(scope="module")
def char_model(setup, tmp_path_factory) -> dict:  # noqa: F811 (the fixture is imported)
    model = tmp_path_factory.mktemp("hw") / "final"
    shutil.copytree(setup["model"], model)
    (model / "tokens.txt").write_text("<blk> 0\n▁ 1\n<unk> 2\n" + "".join(f"{c} {i}\n" for i, c in enumerate(CHARS, 3)),
                                      encoding="utf-8")
    tokenizer = Tokenizer.from_lang_dir(model)
    assert tokenizer.encode("가나") == [3, 4]
    write_bigram_arpa(model.parent / "lm.arpa", ["▁", *CHARS])
    tables = NgramTables.from_arpa(model.parent / "lm.arpa", model / "tokens.txt", progress=False)
    return {"model": model, "tokenizer": tokenizer, "lm": model.parent / "lm.arpa", "tables": tables}


def best_texts(setup: dict, tokenizer, cfg: DecoderConfig, tables, context=None,  # noqa: F811
               rank: int = 0) -> dict[str, str]:
    from kocall_kernels.ctc_decoder import cpu
    import numpy as np

    utts = sorted(UTTS)
    rows = [setup["log_probs"][u] for u in utts]
    lens = np.array([r.shape[0] for r in rows])
    lp = np.zeros((len(rows), lens.max(), rows[0].shape[1]), np.float32)
    for b, r in enumerate(rows):
        lp[b, : r.shape[0]] = r
    return {u: tokenizer.decode(h[rank].tokens) for u, h in zip(utts, cpu.decode_batch(lp, lens, cfg, tables, context))}


def winning_hotword(setup: dict, tokenizer, cfg: DecoderConfig, tables, weight: float):  # noqa: F811
    """(utt, piece, context, plain 1-best, biased 1-best): a piece of a lower-ranked hypothesis
    that no plain 1-best holds and that the search biased towards it (at `weight`, in
    compile_hotwords' layout, beside the never-said 타파 at 2.0) outputs in utterance utt."""
    plain = best_texts(setup, tokenizer, cfg, tables)
    nbest = DecoderConfig(**{**cfg.__dict__, "beam": 8, "nbest": 8})
    for rank in range(1, 8):
        for utt, text in best_texts(setup, tokenizer, nbest, tables, rank=rank).items():
            chars = text.replace(" ", "")
            for piece in (chars[i:i + n] for n in (2, 3) for i in range(len(chars) - n + 1)):
                if any(piece in t.replace(" ", "") for t in plain.values()):
                    continue
                context = ContextGraph.build([(tokenizer.encode(p), unit_bonuses(w * len(p), len(p)))
                                              for p, w in ((piece, weight), ("타파", 2.0))], VOCAB)
                biased = best_texts(setup, tokenizer, cfg, tables, context)
                if piece in biased[utt].replace(" ", ""):
                    return utt, piece, context, plain, biased
    raise AssertionError("no hotword the biased search can win")


# ------------------------------------------------------------------ 1. the list format

def test_read_hotwords_weights_comments_and_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "hotwords"
    path.write_text("# branches\n명동점 :2.5\n\n  사당역점  \n3번 출구:1\nkt 매장 : 0.5\n", encoding="utf-8")
    got = [(h.phrase, h.weight, h.line) for h in read_hotwords(path)]
    assert got == [("명동점", 2.5, 2), ("사당역점", None, 4), ("삼 번 출구", 1.0, 5), ("KT 매장", 0.5, 6)]


@pytest.mark.parametrize("line,message", [
    ("명동점 :abc", "line 1: weight 'abc' of '명동점' is not a number"),
    ("명동점 :-1", "line 1: weight of '명동점' must be a positive number"),
    ("?! :2", "line 1: phrase '?!' is empty after normalisation"),
])
def test_bad_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "hotwords"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_hotwords(path)
    assert str(path) in err.value.format_message() and "\n" not in err.value.format_message()


def test_compile_over_the_model_units(char_model, tmp_path: Path) -> None:
    path = tmp_path / "hotwords"
    path.write_text("가나다 :2\n나다\n가 나\n", encoding="utf-8")
    graph = compile_hotwords(path, char_model["tokenizer"], 0.5)
    # each phrase's bonus (weight x characters) on all but its first unit
    want = ContextGraph.build([([3, 4, 5], [0.0, 3.0, 3.0]), ([4, 5], [0.0, 1.0]), ([3, 1, 4], [0.0, 0.75, 0.75])],
                              VOCAB)
    for name in ("state_arc_start", "arc_token", "arc_next_state", "state_fail", "state_score", "state_chain_mask",
                 "state_output", "root_next"):
        assert (getattr(graph, name) == getattr(want, name)).all(), name


def test_weight_is_per_character_spread_over_the_units(tmp_path: Path) -> None:
    # A phrase's bonus is the weight x its characters, whatever the units: 생강차 is 3 syllable
    # units or 8 jamo. The first unit earns nothing (a one-unit prefix is the commonest partial
    # match); the others share the bonus evenly.
    from kocall import jamo
    from kocall.lang import BLANK, SPACE, UNK

    path = tmp_path / "hotwords"
    path.write_text("생강차 :2\n김밥\n", encoding="utf-8")
    jamo_tok = Tokenizer([BLANK, UNK, SPACE, *jamo.JAMO_INVENTORY])
    char_tok = Tokenizer([BLANK, UNK, SPACE, *"생강차김밥"])
    for tok in (jamo_tok, char_tok):
        graph = compile_hotwords(path, tok, 1.5)
        for phrase, per_char in (("생강차", 2.0), ("김밥", 1.5)):
            ids = tok.encode(phrase)
            state, bonuses = 0, []
            for unit in ids:
                bonus, state = graph.step(state, unit)
                bonuses.append(bonus)
            # units 2.. earn an even share; what the completed phrase keeps (after the
            # end-of-utterance give-back of the state's held score) is the weight x its characters
            share = per_char * len(phrase) / (len(ids) - 1)
            assert bonuses[:-1] == pytest.approx([0.0] + [share] * (len(ids) - 2)), phrase
            assert sum(bonuses) - float(graph.state_score[state]) == pytest.approx(per_char * len(phrase)), phrase
    assert len(jamo_tok.encode("생강차")) == 8 and len(char_tok.encode("생강차")) == 3


def test_lm_compensation_adds_each_phrase_its_own_lm_cost(char_model, tmp_path: Path) -> None:
    # Bonus per unit = weight + c x lm_weight x (the phrase's LM cost per unit, ln, empty context):
    # compared with the plain graph, a completed phrase keeps exactly c x lm_weight x its LM cost more.
    import math

    path = tmp_path / "hotwords"
    path.write_text("가나다 :2\n다가\n", encoding="utf-8")
    tok, tables = char_model["tokenizer"], char_model["tables"]
    plain = compile_hotwords(path, tok, 0.5)
    boosted = compile_hotwords(path, tok, 0.5, tables, lm_weight=0.8, lm_compensation=0.5)
    for phrase in ("가나다", "다가"):
        ids = tok.encode(phrase)
        log10_total, _ = tables.score_sentence(ids, bos=False, eos=False)
        kept = []
        for graph in (plain, boosted):
            state, total = 0, 0.0
            for unit in ids:
                bonus, state = graph.step(state, unit)
                total += bonus
            kept.append(total - float(graph.state_score[state]))   # what stays after the end-of-utterance give-back
        assert kept[1] - kept[0] == pytest.approx(0.5 * 0.8 * -log10_total * math.log(10), rel=1e-5), phrase
        assert log10_total < 0
    # No LM, or c = 0: the plain graph.
    for graph in (compile_hotwords(path, tok, 0.5, None, 0.8, 1.0), compile_hotwords(path, tok, 0.5, tables, 0.8, 0.0)):
        assert (graph.state_output == plain.state_output).all()
    with pytest.raises(DataError, match="LM compensation"):
        compile_hotwords(path, tok, 0.5, tables, 0.8, -1.0)


def test_unknown_characters_are_one_line_naming_the_phrase(char_model, tmp_path: Path) -> None:
    path = tmp_path / "hotwords"
    path.write_text("가나\n가락점 :2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        compile_hotwords(path, char_model["tokenizer"], 1.0)
    message = err.value.format_message()
    assert message == (f"hotwords file '{path}' line 2: phrase '가락점' has characters the model's units cannot "
                       "spell: 락 점")


def test_cli_unknown_hotword_fails_before_writing(setup, char_model, tmp_path: Path) -> None:  # noqa: F811
    hot = tmp_path / "hotwords"
    hot.write_text("명동점\n", encoding="utf-8")
    out = tmp_path / "hyp.txt"
    proc = subprocess.run([sys.executable, "-m", "kocall.cli", "decode", "--model", str(char_model["model"]),
                           "--data-dir", str(setup["data"]), "--lm", str(char_model["lm"]), "--hotwords", str(hot),
                           "--out", str(out)], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and not out.exists()
    assert f"hotwords file '{hot}' line 1: phrase '명동점' has characters" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ------------------------------------------------------------------ 2. kocall decode --hotwords

def test_cli_hotwords_match_the_cpu_decoder(setup, char_model, tmp_path: Path) -> None:  # noqa: F811
    tok = char_model["tokenizer"]
    cfg = DecoderConfig(beam=4, token_topk=TOPK, token_min_logp=MIN_LOGP, lm_weight=0.5, word_bonus=0.5)
    # a phrase the biased search outputs, on a line with its own weight; 타파 takes --hotword-weight
    _, piece, context, plain, want = winning_hotword(setup, tok, cfg, char_model["tables"], 3.0)
    hot = tmp_path / "hotwords"
    hot.write_text(f"{piece} :3\n타파\n", encoding="utf-8")
    assert want != plain  # the phrases really changed the search
    out = tmp_path / "hyp.txt"
    args = ["--model", char_model["model"], "--data-dir", setup["data"], "--lm", char_model["lm"], "--beam", 4,
            "--lm-weight", 0.5, "--word-bonus", 0.5, "--hotwords", hot, "--hotword-weight", 2.0, "--out", out]
    result = invoke(args + ["--hotword-lm-compensation", 0])
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(out) == want
    # By default the CLI adds the LM compensation at its own LM weight (kocall.hotwords).
    import math

    plain_context = context
    context = compile_hotwords(hot, tok, 2.0, char_model["tables"], 0.5 * math.log(10), DEFAULT_LM_COMPENSATION)
    assert DEFAULT_LM_COMPENSATION > 0 and not np.array_equal(
        context.state_output, plain_context.state_output)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert read_kaldi_text(out) == best_texts(setup, tok, cfg, char_model["tables"], context)
    greedy = invoke(["--model", char_model["model"], "--data-dir", setup["data"], "--greedy", "--hotwords", hot])
    assert greedy.exit_code == 1 and "cannot be used with --greedy" in greedy.output


# ------------------------------------------------------------------ 3. the decode stage and scoring

def test_stage_biases_sets_with_a_list_and_scores_recall(setup, char_model, tmp_path: Path) -> None:  # noqa: F811
    tok = char_model["tokenizer"]
    amdir, lang, data = stage_layout(tmp_path, char_model["model"], char_model["lm"])
    conf = tmp_path / "decode.yaml"
    conf.write_text(yaml.safe_dump({"beam": 3, "hotword_weight": 2.0, "hotword_lm_compensation": 0.0,
                                    "grid": {"beam": 3, "lm_weight": [0.5], "word_bonus": [0.5]}}))
    cfg = DecoderConfig(beam=3, token_topk=TOPK, token_min_logp=MIN_LOGP, lm_weight=0.5, word_bonus=0.5)
    # that utterance's reference says the hotword; the list also holds a phrase no reference says
    utt, piece, _, plain, biased = winning_hotword(setup, tok, cfg, char_model["tables"], 2.0)
    refs = {**plain, utt: biased[utt]}
    wavs = setup["wavs"]
    write_data_dir(data / "dev", [Utterance(u, "spk", str(wavs[u]), refs[u] or "가", None) for u in sorted(UTTS)])
    write_data_dir(data / "test", [Utterance(u, "spk", str(wavs[u]), refs[u] or "가", None) for u in sorted(UTTS)])
    (data / "test" / "hotwords").write_text(f"{piece}\n타파\n", encoding="utf-8")

    stage.main(["--config", str(conf), str(amdir), str(lang), str(data), "dev", "test"])
    assert not (amdir / "decode_dev_beam_hotwords").exists()  # dev has no list
    got = read_kaldi_text(amdir / "decode_test_beam_hotwords" / "hyp.txt")
    assert got == biased and read_kaldi_text(amdir / "decode_test_beam" / "hyp.txt") == plain
    info = json.loads((amdir / "decode_test_beam_hotwords" / "decode_info.json").read_text())
    assert info["hotwords"] == str(data / "test" / "hotwords") and info["hotword_weight"] == 2.0
    # the stage as two run.pl jobs (--cmd) writes the same biased decode, byte for byte
    jobs = tmp_path / "jobs"
    shutil.copytree(amdir / "final", jobs / "final")
    stage.main(["--config", str(conf), "--nj", "2", "--cmd", str(REPO / "utils" / "run.pl"), str(jobs),
                str(lang), str(data), "dev", "test"])
    for name in ("hyp.txt", "decode_info.json"):
        assert (jobs / "decode_test_beam_hotwords" / name).read_bytes() == \
            (amdir / "decode_test_beam_hotwords" / name).read_bytes()

    rows = {(r["set"], r["decoder"]): r for r in score_decodes(amdir, data, ["dev", "test"])}
    phrases = [piece, "타파"]
    for decoder, hyps in (("beam_hotwords", biased), ("beam", plain)):
        counts = hotword_counts({u: refs[u] or "가" for u in UTTS}, hyps, phrases)
        row = rows[("test", decoder)]
        assert (row["hotword_occurrences"], row["hotword_recognised"], row["hotword_false_alarms"]) == \
            (counts.occurrences, counts.recognised, counts.false_alarms)
    assert rows[("test", "beam_hotwords")]["hotword_recall"] > rows[("test", "beam")]["hotword_recall"]
    assert "hotwords" not in rows[("dev", "beam")]
    results = (amdir / "RESULTS.md").read_text(encoding="utf-8")
    assert "## Hotwords" in results and "| test | beam_hotwords |" in results

    # --hotwords: one list for every set, dev included
    stage.main(["--config", str(conf), "--hotwords", str(data / "test" / "hotwords"),
                str(amdir), str(lang), str(data), "dev", "test"])
    assert read_kaldi_text(amdir / "decode_dev_beam_hotwords" / "hyp.txt") == biased

    # a list the units cannot spell stops the stage, in one process or as jobs, before any decoding
    bad = tmp_path / "bad_hotwords"
    bad.write_text(f"{piece}\n명동점\n", encoding="utf-8")
    for extra in ([], ["--nj", "2", "--cmd", str(REPO / "utils" / "run.pl")]):
        fresh = tmp_path / f"bad{len(extra)}"
        shutil.copytree(amdir / "final", fresh / "final")
        with pytest.raises(SystemExit, match=f"hotwords file '{bad}' line 2: phrase '명동점'"):
            stage.main(["--config", str(conf), "--hotwords", str(bad), *extra, str(fresh), str(lang), str(data),
                        "dev", "test"])
        assert sorted(p.name for p in fresh.iterdir()) == ["final"]


def test_hotword_counts_by_hand() -> None:
    refs = {"u1": "명동점 예약 명동점", "u2": "사당역점 위치", "u3": "네"}
    hyps = {"u1": "명동 점 예약", "u2": "사당역 위치 명동점", "u3": "네 명동점 명동점"}
    counts = hotword_counts(refs, hyps, ["명동점", "사당역점", "강남점"])
    # u1: 2 said, 1 recognised (spaces ignored); u2: 사당역점 missed, 명동점 a false alarm;
    # u3: two false alarms
    assert (counts.occurrences, counts.recognised, counts.false_alarms, counts.phrases) == (3, 1, 3, 3)
    assert counts.recall == pytest.approx(100 / 3)


def test_no_occurrences_reads_as_no_recall() -> None:
    counts = hotword_counts({"u1": "네"}, {"u1": "명동점"}, ["명동점"])
    assert (counts.occurrences, counts.false_alarms) == (0, 1)
    assert counts.summary() == "hotword recall - (0/0) | false alarms 1 | phrases 1"


def test_stage_tunes_the_hotword_settings_on_a_hotword_dev_set(setup, char_model, tmp_path: Path) -> None:  # noqa: F811
    """With a dev_* set holding a list, the hotword_grid point with the lowest CER there is used
    for every list (the config's own weight would not win the phrase), in one process and as jobs."""
    tok = char_model["tokenizer"]
    amdir, lang, data = stage_layout(tmp_path, char_model["model"], char_model["lm"])
    conf = tmp_path / "decode.yaml"
    conf.write_text(yaml.safe_dump({"beam": 3, "hotword_weight": 0.01, "hotword_lm_compensation": 0.0,
                                    "hotword_grid": {"hotword_weight": [0.01, 2.0], "hotword_lm_compensation": [0.0]},
                                    "grid": {"beam": 3, "lm_weight": [0.5], "word_bonus": [0.5]}}))
    cfg = DecoderConfig(beam=3, token_topk=TOPK, token_min_logp=MIN_LOGP, lm_weight=0.5, word_bonus=0.5)
    utt, piece, _, plain, biased = winning_hotword(setup, tok, cfg, char_model["tables"], 2.0)
    refs = biased   # what the speakers said: the biased search gets all of it right
    wavs = setup["wavs"]
    for name in ("dev", "dev_hw", "test"):
        write_data_dir(data / name, [Utterance(u, "spk", str(wavs[u]), refs[u] or "가", None) for u in sorted(UTTS)])
    for name in ("dev_hw", "test"):
        (data / name / "hotwords").write_text(f"{piece}\n타파\n", encoding="utf-8")

    stage.main(["--config", str(conf), str(amdir), str(lang), str(data), "dev", "dev_hw", "test"])
    chosen = json.loads((amdir / "decode_dev_hw_beam_hotwords" / "best_hotword_weights.json").read_text())
    assert (chosen["hotword_weight"], chosen["set"]) == (2.0, "dev_hw") and len(chosen["trials"]) == 2
    assert chosen["trials"][0]["cer"] > chosen["trials"][1]["cer"]
    info = json.loads((amdir / "decode_test_beam_hotwords" / "decode_info.json").read_text())
    assert info["hotword_weight"] == 2.0
    assert read_kaldi_text(amdir / "decode_test_beam_hotwords" / "hyp.txt") == biased
    jobs = tmp_path / "jobs"
    shutil.copytree(amdir / "final", jobs / "final")
    stage.main(["--config", str(conf), "--nj", "2", "--cmd", str(REPO / "utils" / "run.pl"), str(jobs),
                str(lang), str(data), "dev", "dev_hw", "test"])
    for name in ("decode_test_beam_hotwords/hyp.txt", "decode_test_beam_hotwords/decode_info.json",
                 "decode_dev_hw_beam_hotwords/best_hotword_weights.json"):
        assert (jobs / name).read_bytes() == (amdir / name).read_bytes(), name
