"""Decoding modes with an attention decoder (kocall.joint_decode): Whisper bytes -> our units,
attention rescoring of the CTC N-best, joint CTC/attention beam search on a tiny decoder
overfitted here on a few utterances, and the refusal of bad weights."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kocall.errors import KocallError  # noqa: E402
from kocall.joint_decode import (AttentionSide, JointConfig, RescoreConfig, UnitMapper, complete_prefix,  # noqa: E402
                                 joint_decode_utterance, rescore_utterance)
from kocall.lang import Tokenizer, jamo_symbols  # noqa: E402

TEXTS = ["명동점 몇 시까지 해요", "주문 취소해 주세요", "배송 조회 부탁해요"]


class SyllableTokenizer:
    """A stand-in for Whisper's byte-level BPE: the 256 bytes, one token per syllable of the
    texts except those in `SPLIT`, which stay three byte tokens (so some steps end inside a
    character, as Whisper's do when a syllable is two tokens), then eot and a 3-token sot
    sequence (text tokens come before eot, as in Whisper's vocabulary)."""
    SPLIT = "점요취"

    def __init__(self) -> None:
        syllables = sorted({ch for t in TEXTS for ch in t if ch != " " and ch not in self.SPLIT})
        self.pieces = {256 + i: ch.encode() for i, ch in enumerate(syllables)}
        self.ids = {piece: i for i, piece in self.pieces.items()}
        self.eot = 256 + len(syllables)
        self.n_vocab = self.eot + 4

    def sot_sequence(self, language: str = "ko") -> list[int]:
        return [self.eot + 1, self.eot + 2, self.eot + 3]

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for ch in text:
            piece = ch.encode()
            out += [self.ids[piece]] if piece in self.ids else list(piece)
        return out

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else self.pieces.get(token, b"")


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return Tokenizer(jamo_symbols(TEXTS))


def peaked_ctc(units: list[int], V: int, seed: int, confusion: dict[int, int] | None = None) -> np.ndarray:
    """(T, V) CTC log-posteriors where `units` (each unit two frames then a blank) is likely;
    with `confusion`, a unit u is given to its replacement at nearly even odds."""
    rng = np.random.default_rng(seed)
    path = [x for u in units for x in (u, u, 0)] + [0]
    x = rng.standard_normal((len(path), V)) * 0.5
    for t, u in enumerate(path):
        x[t, u] += 6.0
        if confusion and u in confusion:
            x[t, confusion[u]] += 5.9
    return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def overfitted():
    """A 2-layer Whisper text decoder trained here until it reproduces each text from its own
    random 'audio features' (a few hundred Adam steps, seconds on a CPU)."""
    from kocall.whisper_ctc.decoder import TextDecoder

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model: more threads only contend on a busy CPU
    tok = SyllableTokenizer()
    dims = {"n_vocab": tok.n_vocab, "n_text_ctx": 80, "n_text_state": 48, "n_text_head": 4, "n_text_layer": 2}
    decoder = TextDecoder(dims)
    feats = [torch.randn(1, 12 + 3 * i, 48) for i in range(len(TEXTS))]
    rows = [tok.sot_sequence() + tok.encode(" " + t) + [tok.eot] for t in TEXTS]
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for _ in range(150):
        loss = 0.0
        for f, row in zip(feats, rows):
            x = torch.tensor([row])
            logits = decoder(x[:, :-1], f)
            loss = loss + torch.nn.functional.cross_entropy(logits[0, 2:], x[0, 3:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    decoder.eval()
    torch.set_num_threads(threads)
    assert loss.item() / len(TEXTS) < 0.05, loss.item()
    return AttentionSide(decoder, tok), feats


def test_complete_prefix_waits_for_a_cut_character():
    data = "가나".encode()
    assert complete_prefix(data[:2]) == b""
    assert complete_prefix(data[:4]) == "가".encode()
    assert complete_prefix(data) == data
    assert complete_prefix(b"\xff") is None                 # never UTF-8, whatever follows
    assert complete_prefix(b"\xea\x41") is None


def test_unit_mapper_scores_complete_normalised_characters(ours):
    mapper = UnitMapper(ours, SyllableTokenizer().token_bytes)
    full = " 명동점".encode()
    assert mapper.units(full[:3]) == tuple(ours.encode("명"))[:0] + ()    # space + 2 bytes of 명
    assert mapper.units(full[:4]) == tuple(ours.encode("명"))
    assert mapper.units(full) == tuple(ours.encode("명동점"))
    # the normaliser reads numbers in context: 3 -> 삼, 3명 -> 세 명 (no longer a prefix)
    assert mapper.text(mapper.units("3".encode())) == "삼"
    assert mapper.text(mapper.units("3명".encode())) == "세 명"
    assert mapper.units("명동점!?".encode()) == tuple(ours.encode("명동점"))  # punctuation: nothing
    assert mapper.units("명 Q".encode()) is None            # a letter the units cannot spell


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5, "x"])
def test_bad_ctc_weight_is_one_line(bad):
    with pytest.raises(KocallError) as err:
        JointConfig(ctc_weight=bad)
    assert "CTC weight" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("field,bad", [("lm_weight", float("inf")), ("lm_weight", -1.0), ("char_bonus", float("nan")),
                                       ("beam", 0), ("pre_beam", 2.5), ("max_tokens", True)])
def test_bad_joint_options_are_refused(field, bad):
    with pytest.raises(KocallError):
        JointConfig(**{field: bad})


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), -1.0, 1e9])
def test_bad_attention_weight_is_refused(bad):
    with pytest.raises(KocallError, match="attention weight"):
        RescoreConfig(attention_weight=bad)


def test_joint_search_steps_run_on_one_torch_thread(overfitted, ours):
    """The decoder's steps see one intra-op thread (a beam's few rows); the caller's count is back after."""
    side, feats = overfitted
    seen = []
    decoder = side.decoder

    class Recording(torch.nn.Module):
        n_ctx = decoder.n_ctx

        def forward(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return decoder(*args, **kwargs)

        def output_embedding(self, ids):
            return decoder.output_embedding(ids)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        recorded = AttentionSide(Recording(), side.tokenizer)
        lp = peaked_ctc(ours.encode(TEXTS[0]), len(ours), seed=0)
        hyp = joint_decode_utterance(recorded, feats[0], lp, UnitMapper(ours, side.tokenizer.token_bytes),
                                     JointConfig(ctc_weight=0.3, beam=4))[0]
        assert hyp.text == TEXTS[0] and seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_teacher_forced_scores_prefer_the_trained_text(overfitted):
    side, feats = overfitted
    scores = side.teacher_forced(feats[0], TEXTS)
    assert int(np.argmax(scores)) == 0 and scores[0] > -1.0


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_joint_decoding_gives_the_exact_transcripts(overfitted, ours, index):
    side, feats = overfitted
    mapper = UnitMapper(ours, side.tokenizer.token_bytes)
    lp = peaked_ctc(ours.encode(TEXTS[index]), len(ours), seed=index)
    hyps = joint_decode_utterance(side, feats[index], lp, mapper, JointConfig(ctc_weight=0.3, beam=4, pre_beam=6),
                                  blank=0, nbest=4)
    assert hyps[0].text == TEXTS[index]
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    # the parts add up: (1 - 0.3) attention + 0.3 CTC, and the CTC part is the full probability
    from kocall_kernels.ctc_prefix.reference import prefix_log_prob

    best = hyps[0]
    assert best.score == pytest.approx(0.7 * best.att + 0.3 * best.ctc, abs=1e-6)
    assert best.ctc == pytest.approx(prefix_log_prob(lp, ours.encode(TEXTS[index]))[1], abs=1e-4)


def test_ctc_decides_where_the_decoder_is_unsure(overfitted, ours):
    """Audio features that match none of the texts (zeros): attention alone gives the same
    text whatever the CTC posteriors say; jointly, each utterance's CTC picks its own text."""
    side, feats = overfitted
    mapper = UnitMapper(ours, side.tokenizer.token_bytes)
    unsure = torch.zeros(1, 12, 48)
    att_only = set()
    for index, text in enumerate(TEXTS):
        lp = peaked_ctc(ours.encode(text), len(ours), seed=20 + index)
        att_only.add(joint_decode_utterance(side, unsure, lp, mapper, JointConfig(ctc_weight=0.0, beam=4))[0].text)
        joint = joint_decode_utterance(side, unsure, lp, mapper, JointConfig(ctc_weight=0.5, beam=4))
        assert joint[0].text == text
    assert len(att_only) == 1


def test_hotwords_score_on_the_unit_side(overfitted, ours):
    """A list holding a phrase of the transcript: the same words, and the phrase's bonus (laid
    out over our units, kocall.hotwords) added to the score; a phrase not said earns nothing."""
    from kocall.hotwords import unit_bonuses
    from kocall_kernels.ctc_decoder.context_graph import ContextGraph

    side, feats = overfitted
    mapper = UnitMapper(ours, side.tokenizer.token_bytes)
    text = TEXTS[0]
    lp = peaked_ctc(ours.encode(text), len(ours), seed=3)
    said, unsaid = ours.encode("시까지"), ours.encode("배송")
    graph = ContextGraph.build([(said, unit_bonuses(4.5, len(said))), (unsaid, unit_bonuses(3.0, len(unsaid)))],
                               len(ours))
    cfg = JointConfig(ctc_weight=0.5, beam=4, pre_beam=8)
    plain = joint_decode_utterance(side, feats[0], lp, mapper, cfg)[0]
    biased = joint_decode_utterance(side, feats[0], lp, mapper, cfg, context=graph)[0]
    assert plain.text == biased.text == text
    assert plain.context_score == 0.0
    assert biased.context_score == pytest.approx(4.5)
    assert biased.score == pytest.approx(plain.score + 4.5, abs=1e-6)


def test_rescore_never_leaves_the_nbest(overfitted):
    """An N-best whose CTC+LM order puts the reference third: rescored at any weight the answer
    is one of its entries; at weight 0 CTC's first; with the decoder's weight the reference."""
    side, feats = overfitted
    texts = ["배송 조회 부탁해", "배송 주회 부탁해요", TEXTS[2], "배성 조회 부탁해요", "배송 조회"]
    nbest = [(-10.0 - 0.5 * i, t) for i, t in enumerate(texts)]
    for weight in (0.0, 0.05, 0.5, 1.0, 3.0, 50.0):
        chosen, att = rescore_utterance(side, feats[2], nbest, RescoreConfig(attention_weight=weight))
        assert 0 <= chosen < len(nbest) and len(att) == len(nbest)
        assert chosen == (0 if weight == 0.0 else int(np.argmax([c + weight * a for (c, _), a in zip(nbest, att)])))
    assert int(np.argmax(att)) == 2
    # a hypothesis longer than the decoder's positions: no attention score, never chosen over one that has
    too_long = [(-1.0, "가" * 200)] + nbest
    chosen, att = rescore_utterance(side, feats[2], too_long, RescoreConfig(attention_weight=1.0))
    assert att[0] == -np.inf and chosen == 3
    assert rescore_utterance(side, feats[2], too_long, RescoreConfig(attention_weight=0.0))[0] == 0
    assert texts[rescore_utterance(side, feats[2], nbest, RescoreConfig(attention_weight=1.0))[0]] == TEXTS[2]
    assert math.isfinite(float(att.max()))


@pytest.mark.parametrize("option,value,message", [("--ctc-weight", "nan", "CTC weight"), ("--ctc-weight", "1.5", "CTC weight"),
                                                  ("--attention-weight", "inf", "attention weight"),
                                                  ("--char-bonus", "-inf", "character bonus"),
                                                  ("--joint-lm-weight", "-0.5", "LM weight")])
def test_decode_cli_refuses_bad_mode_weights_in_one_line(option, value, message, tmp_path):
    """Checked before anything is loaded: exit 1, one line naming the weight, no output file."""
    from click.testing import CliRunner

    from kocall.cli import main

    out = tmp_path / "hyp.txt"
    result = CliRunner().invoke(main, ["decode", "--model", str(tmp_path / "none"), "--mode", "joint", option, value,
                                       "--out", str(out), str(tmp_path / "a.wav")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_joint_mode_needs_an_attention_decoder(tmp_path):
    from kocall.joint_decode import load_joint_model

    with pytest.raises(KocallError, match="has no Whisper encoder"):
        load_joint_model(object(), {"arch": "conformer_ctc"}, tmp_path)
    with pytest.raises(KocallError, match="--attention-checkpoint"):
        load_joint_model(object(), {"arch": "whisper_ctc"}, tmp_path)


def test_decode_cli_modes_on_a_hybrid_model_dir(tmp_path):
    """A whisper_hybrid model dir (one epoch through the trainer: the wiring, not accuracy):
    `kocall decode --mode joint` gives what the library gives utterance by utterance, and
    `--mode rescore` always answers one of the CTC search's N-best."""
    pytest.importorskip("tokenizers")
    from click.testing import CliRunner

    from kocall.cli import main
    from kocall.decode import FeatureMaker, InputUtt
    from kocall.export import export_int8, load_any_model_dir
    from kocall.fileio import read_table
    from kocall.joint_decode import ModeSettings, decode_one, load_joint_model
    from kocall.model_dir import load_model_dir
    from kocall.trainer import RunOptions, run_training
    from kocall_kernels.ctc_decoder import DecoderConfig
    from tests.test_train import N_MELS, CharTokenizer, make_data_dir, make_lang
    from tests.test_train import TEXTS as TRAIN_TEXTS
    from tests.test_whisper_hybrid import hybrid_conf, tiny_full_checkpoint, tiny_tokenizer

    train = make_data_dir(tmp_path, TRAIN_TEXTS, seed=0)
    lang = make_lang(tmp_path)
    whisper_tok = tiny_tokenizer(tmp_path / "tokenizer.json", TRAIN_TEXTS)
    tiny_full_checkpoint(tmp_path / "tiny.pt", N_MELS, whisper_tok.n_vocab)
    conf = hybrid_conf(tmp_path / "h.yaml", tmp_path / "tiny.pt", tmp_path / "tokenizer.json", epochs=1)
    run_training(RunOptions(model_conf=str(conf), train_dir=str(train), dev_dir=str(train), lang_dir=str(lang),
                            exp_dir=str(tmp_path / "exp"), threads=1, seed=3, progress=False),
                 tokenizer=CharTokenizer.from_lang_dir(lang))
    final = tmp_path / "exp" / "final"
    runner = CliRunner()
    outs = {}
    for mode in ("joint", "rescore", "ctc"):
        out = tmp_path / f"{mode}.txt"
        extra = {"ctc": ["--nbest", "16", "--nbest-out", str(tmp_path / "nbest.txt")],
                 "rescore": ["--rescore-nbest", "16"]}.get(mode, [])
        result = runner.invoke(main, ["decode", "--model", str(final), "--data-dir", str(train), "--mode", mode,
                                      "--beam", "16", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        outs[mode] = read_table(out, allow_empty_value=True)

    model, tok, config = load_model_dir(final)
    jm = load_joint_model(model, config, final)
    settings = ModeSettings("joint", tok, DecoderConfig(beam=16, lm_weight=0.0, word_bonus=1.0))
    make_feats = FeatureMaker(final, config)
    feats_scp = read_table(train / "feats.scp")
    for utt, spec in feats_scp.items():
        assert outs["joint"][utt] == decode_one(jm, model, make_feats(InputUtt(utt, spec, True)), settings)
    nbest = read_table(tmp_path / "nbest.txt", allow_empty_value=True)
    for utt, text in outs["rescore"].items():
        candidates = {" ".join(v.split()[3:]) for k, v in nbest.items() if k.rsplit("-", 1)[0] == utt}
        assert text in candidates

    # The int8 export's pruned vocabulary (the family's export_state: the tokens our units can spell
    # + the prompt) decodes exactly as the whole vocabulary: both modes' softmax runs over those tokens
    import json

    from kocall.models import build_model, family

    pruned_config, pruned_state = family("whisper_hybrid").export_state(config, torch.load(
        final / "model.pt", weights_only=True), final)
    vocab_ids = pruned_config["model"]["vocab_ids"]
    assert 0 < len(vocab_ids) < jm.side.tokenizer.n_vocab and not config["model"].get("vocab_ids")
    pruned = build_model(pruned_config)
    pruned.load_state_dict(pruned_state)
    pruned_jm = load_joint_model(pruned.eval(), pruned_config, final)
    rescore_settings = ModeSettings("rescore", tok, DecoderConfig(beam=16, lm_weight=0.0, word_bonus=1.0))
    for utt, spec in feats_scp.items():
        feats = make_feats(InputUtt(utt, spec, True))
        for mode_settings in (settings, rescore_settings):
            assert (decode_one(pruned_jm, pruned, feats, mode_settings)
                    == decode_one(jm, model, feats, mode_settings)), (utt, mode_settings.mode)
        # a text holding a token the search cannot spell (a lone jamo) scores -inf, pruned or not
        audio = pruned_jm.encode(feats)[0]
        texts = [outs["joint"][utt], "ㅋ" + outs["joint"][utt], ""]
        scores = pruned_jm.side.teacher_forced(audio, texts, UnitMapper(tok, jm.side.tokenizer.token_bytes))
        assert np.isfinite(scores[[0, 2]]).all() and scores[1] == -np.inf
        np.testing.assert_allclose(scores, jm.side.teacher_forced(
            jm.encode(feats)[0], texts, UnitMapper(tok, jm.side.tokenizer.token_bytes)), rtol=1e-5)
    with pytest.raises(KocallError, match="not in this decoder's pruned vocabulary"):
        outside = next(t for t in range(jm.side.tokenizer.n_vocab) if t not in set(vocab_ids))
        pruned.decoder(torch.tensor([[outside]]), torch.zeros(1, 3, pruned.decoder.dims["n_text_state"]))
    export_int8(final, tmp_path / "int8")
    int8_config = json.loads((tmp_path / "int8" / "config.json").read_text(encoding="utf-8"))
    stored = torch.load(tmp_path / "int8" / "model.pt", weights_only=True)
    assert int8_config["model"]["vocab_ids"] == vocab_ids
    assert stored["decoder.token_embedding.weight"].shape[0] == len(vocab_ids)
    int8_model, _, _ = load_any_model_dir(tmp_path / "int8")
    assert load_joint_model(int8_model, int8_config, tmp_path / "int8").side.decoder.vocab_ids.tolist() == vocab_ids

    # The decode stage's joint mode: its grid searched on dev, the best written, every set decoded
    import json
    import yaml

    from kocall.stage_decode import main as stage_main
    from kocall_kernels.ctc_decoder.test_ctc_decoder import write_arpa

    (lang / "lm").mkdir()
    write_arpa(lang / "lm" / "lm.arpa")
    conf = yaml.safe_load((Path(__file__).resolve().parent.parent / "conf" / "decode.yaml").read_text(encoding="utf-8"))
    conf["grid"] = {"beam": 4, "lm_weight": [0.0], "word_bonus": [0.0]}
    conf["joint"] = {"beam": 2, "pre_beam": 4, "ctc_weight": [0.3, 1.0], "lm_weight": [0.0], "char_bonus": [0.0]}
    (tmp_path / "decode.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev").symlink_to(train)
    ids = sorted(feats_scp)   # a data dir's other tables (the features are what the stage reads)
    (train / "wav.scp").write_text("".join(f"{u} {u}.wav\n" for u in ids), encoding="utf-8")
    (train / "utt2spk").write_text("".join(f"{u} {u}\n" for u in ids), encoding="utf-8")
    (train / "spk2utt").write_text("".join(f"{u} {u}\n" for u in ids), encoding="utf-8")
    stage_main(["--config", str(tmp_path / "decode.yaml"), "--mode", "joint", str(tmp_path / "exp"), str(lang),
                str(tmp_path / "data"), "dev"])
    best = json.loads((tmp_path / "exp" / "decode_dev_joint" / "best_weights.json").read_text(encoding="utf-8"))
    assert [t["ctc_weight"] for t in best["trials"]] == [0.3, 1.0]
    assert best["cer"] == min(t["cer"] for t in best["trials"])
    info = json.loads((tmp_path / "exp" / "decode_dev_joint" / "decode_info.json").read_text(encoding="utf-8"))
    assert info["decoder"] == "joint" and info["joint_ctc_weight"] == best["ctc_weight"]
    assert set(read_table(tmp_path / "exp" / "decode_dev_joint" / "hyp.txt", allow_empty_value=True)) == set(feats_scp)

    # A model package keeps the attention modes' tuned settings (rescore's written here, joint's
    # from the stage above), and `kocall decode --mode rescore|joint` takes them unless given.
    from kocall.package import write_package

    amdir = tmp_path / "exp"
    export_int8(final, amdir / "final_int8")
    (amdir / "decode_dev_beam").mkdir(exist_ok=True)
    (amdir / "decode_dev_beam" / "best_weights.json").write_text(json.dumps({"lm_weight": 0.0, "word_bonus": 0.0}))
    (amdir / "decode_dev_rescore").mkdir()
    (amdir / "decode_dev_rescore" / "best_weights.json").write_text(json.dumps(
        {"attention_weight": 3.0, "nbest": 16, "cer": 10.0, "set": "dev"}))
    package = write_package(amdir, lang, tmp_path / "pkg", tmp_path / "decode.yaml")
    card = (package / "MODEL.md").read_text(encoding="utf-8")
    assert "attention_weight 3.0, nbest 16" in card and f"ctc_weight {best['ctc_weight']}" in card

    def package_cli(mode: str, *extra: str) -> dict:
        out = tmp_path / f"pkg_{mode}.txt"
        result = runner.invoke(main, ["decode", "--model", str(package), "--data-dir", str(train), "--mode", mode,
                                      "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return read_table(out, allow_empty_value=True)

    pkg_model, _, pkg_config = load_model_dir(package / "float")
    pkg_jm = load_joint_model(pkg_model, pkg_config, package / "float")

    def reference(mode: str, **weights) -> dict:
        settings = ModeSettings(mode, tok, DecoderConfig(beam=16, lm_weight=0.0, word_bonus=0.0),
                                rescore=RescoreConfig(**weights) if mode == "rescore" else RescoreConfig(),
                                joint=JointConfig(**weights) if mode == "joint" else JointConfig())
        return {utt: decode_one(pkg_jm, pkg_model, make_feats(InputUtt(utt, spec, True)), settings)
                for utt, spec in feats_scp.items()}

    tuned = reference("rescore", attention_weight=3.0, nbest=16)
    assert package_cli("rescore") == tuned
    first_best = reference("rescore", attention_weight=3.0, nbest=1)   # the N-best of one: CTC's choice
    assert tuned != first_best
    assert package_cli("rescore", "--rescore-nbest", "1") == first_best   # an option given here wins
    assert package_cli("joint") == reference("joint", **{k: best[k] for k in ("ctc_weight", "lm_weight", "char_bonus",
                                                                              "beam", "pre_beam")})
    bad = tmp_path / "bad_pkg"
    shutil.copytree(package, bad)
    stored = (package / "joint_weights.json").read_text(encoding="utf-8")
    spoilt = stored.replace(f'"ctc_weight": {best["ctc_weight"]}', '"ctc_weight": 2.0')
    assert spoilt != stored and len(spoilt) == len(stored)   # the manifest's size, a bad value
    (bad / "joint_weights.json").write_text(spoilt, encoding="utf-8")
    result = runner.invoke(main, ["decode", "--model", str(bad), "--data-dir", str(train), "--mode", "joint"])
    assert result.exit_code == 1 and "joint_weights.json" in result.output and "CTC weight" in result.output


def test_search_vocabulary_keeps_what_can_be_spelt(ours):
    """Token bytes a hypothesis may hold: Hangul (whole or cut), numbers, punctuation, letters our
    units have; not letters they lack, nor scripts the normaliser would drop."""
    from kocall.joint_decode import token_can_be_spelt

    mapper = UnitMapper(ours, SyllableTokenizer().token_bytes)
    syllable = "명".encode()
    for ok in (" 명동".encode(), syllable[:2], syllable[2:], syllable[1:], "3".encode(), "!".encode(), " ".encode()):
        assert token_can_be_spelt(ok, mapper), ok
    for bad in ("Q".encode(), " 你好".encode(), "дом".encode(), "ㅋㅋ".encode(), b"\xff", "명".encode() + b"\x80\x80\x80"):
        assert not token_can_be_spelt(bad, mapper), bad
    assert mapper.units("명 你".encode()) is None


@pytest.mark.parametrize("tree_tokens", [1024, 4])
def test_shared_teacher_forcing_is_the_softmax_over_the_search_vocabulary(overfitted, ours, tree_tokens,
                                                                          monkeypatch):
    """Rescoring's batched scores (sot and audio keys computed once, the texts' prefix trie in one
    pass, or in several when it exceeds the tree's bound) equal whole sequences through the
    decoder with the softmax over the search's tokens."""
    import kocall.joint_decode as jd

    monkeypatch.setattr(jd, "MAX_TREE_TOKENS", tree_tokens)
    side, feats = overfitted
    mapper = UnitMapper(ours, side.tokenizer.token_bytes)
    vocab = list(side.search_vocabulary(mapper)[0])
    texts = TEXTS + ["배송", "", "배송 조회", "배송 조회 부탁", "명동점 몇"]   # prefixes shared in the trie
    got = side.teacher_forced(feats[1], texts, mapper)
    for text, score in zip(texts, got):
        ids = side.tokenizer.encode(" " + text) if text else []
        seq = side.sot + ids + [side.eot]
        with torch.no_grad():
            logits = side.decoder(torch.tensor([seq[:-1]]), feats[1])[0, len(side.sot) - 1:]
        lp = torch.log_softmax(logits[:, vocab], dim=-1)
        want = sum(float(lp[j, vocab.index(t)]) for j, t in enumerate(ids + [side.eot]))
        assert score == pytest.approx(want, abs=1e-4)


def test_prefix_trie_shares_prefixes():
    from kocall.joint_decode import prefix_trie, trie_groups

    seqs = [[5, 6, 7], [5, 6, 9], [5], [], [8, 6]]
    tokens, parents, paths = prefix_trie(seqs)
    assert tokens == [5, 6, 7, 9, 8, 6] and parents == [-1, 0, 1, 1, -1, 4]
    assert paths == [[0, 1, 2], [0, 1, 3], [0], [], [4, 5]]
    assert trie_groups(seqs, 6) == [[0, 1, 2, 3, 4]]
    assert trie_groups(seqs, 4) == [[0, 1, 2, 3], [4]]
    assert trie_groups(seqs, 1) == [[0], [1], [2, 3], [4]]   # a longer sequence alone


def test_whisper_ctc_takes_the_decoder_of_the_checkpoint_it_was_built_on(tmp_path):
    """A whisper_ctc model + a full checkpoint: accepted when the encoder is the checkpoint's (the
    float16-rounded positional table aside); one line naming the tensor when a block differs."""
    pytest.importorskip("tokenizers")
    from kocall.joint_decode import load_joint_model
    from kocall.whisper_ctc.checkpoint import init_from_checkpoint, load_whisper_checkpoint
    from kocall.whisper_ctc.model import WhisperCTC, WhisperCTCConfig
    from tests.test_whisper_hybrid import tiny_full_checkpoint, tiny_tokenizer

    whisper_tok = tiny_tokenizer(tmp_path / "tokenizer.json", TEXTS)
    dims = tiny_full_checkpoint(tmp_path / "tiny.pt", 24, whisper_tok.n_vocab)
    _, state = load_whisper_checkpoint(tmp_path / "tiny.pt")
    cfg = WhisperCTCConfig(n_mels=24, vocab_size=10, n_audio_ctx=dims["n_audio_ctx"], n_audio_state=32,
                           n_audio_head=4, n_audio_layer=2, extra_layers=1)
    model = WhisperCTC(cfg)
    init_from_checkpoint(model, {k: v for k, v in state.items() if k.startswith("encoder.")}, tmp_path / "tiny.pt")
    model.eval()
    jm = load_joint_model(model, {"arch": "whisper_ctc"}, tmp_path, tmp_path / "tiny.pt")
    audio, lp = jm.encode(np.random.default_rng(0).standard_normal((40, 24)).astype(np.float32))
    assert audio.shape == (1, 20, 32) and lp.shape == (20, 10)
    with torch.no_grad():
        model.encoder.blocks[1].mlp[0].weight.add_(0.01)
    with pytest.raises(KocallError, match="encoder.blocks.1.mlp.0.weight"):
        load_joint_model(model, {"arch": "whisper_ctc"}, tmp_path, tmp_path / "tiny.pt")
