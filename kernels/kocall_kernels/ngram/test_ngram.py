"""The flat n-gram tables against KenLM: sentence scores, per-token scores, next states,
the batched CPU twin and the (simulated) CUDA kernel.

Two models: a hand-written trigram ARPA (runs without lmplz) and a 4-gram trained here
with lmplz (skipped when the binary is absent). Random sentences hit back-off, tokens the
ARPA lacks, `<s>` contexts and `</s>`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

kenlm = pytest.importorskip("kenlm")

from kocall.errors import DataError  # noqa: E402
from kocall_kernels.ngram import NgramTables, next_token_scores  # noqa: E402
from kocall_kernels.ngram.cpu import lm_score  # noqa: E402
from kocall_kernels.testing import cuda_subprocess_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TOL = 1e-4
# 라 and 마 are units the ARPA never saw: they score as <unk>.
SYMBOLS = ["<blk>", "<unk>", "▁", "가", "나", "다", "라", "마"]

HAND_ARPA = """\\data\\
ngram 1=7
ngram 2=6
ngram 3=3

\\1-grams:
-1.5\t<unk>\t0
-99\t<s>\t-0.5
-1.0\t</s>
-0.8\t▁\t-0.3
-0.9\t가\t-0.4
-1.1\t나\t-0.2
-1.3\t다\t-0.1

\\2-grams:
-0.4\t<s> 가\t-0.25
-0.5\t가 나\t-0.15
-0.6\t나 다\t0
-0.7\t다 </s>
-0.3\t가 ▁\t-0.05
-0.45\t▁ 나\t-0.2

\\3-grams:
-0.2\t<s> 가 나
-0.1\t가 나 다
-0.35\t가 ▁ 나

\\end\\
"""


def write_tokens(path: Path, symbols: list[str]) -> Path:
    path.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return path


def random_sentences(rng: np.random.Generator, n: int, vocab: list[str], max_len: int = 12) -> list[list[str]]:
    # Biased to frequent units so that long n-grams match, plus rare/unseen ones for back-off.
    weights = np.linspace(3.0, 1.0, len(vocab))
    weights /= weights.sum()
    return [list(rng.choice(vocab, size=int(rng.integers(0, max_len)), p=weights)) for _ in range(n)]


def lmplz_corpus(rng: np.random.Generator, n: int) -> list[str]:
    # Frequent words give long n-grams; random syllables keep every context open (no -inf back-off).
    words = ["가나", "다라", "가다", "나", "마가나", "다"]
    chars = ["가", "나", "다", "라", "마"]

    def word() -> str:
        if rng.random() < 0.7:
            return " ".join(rng.choice(words))
        return " ".join(rng.choice(chars, size=int(rng.integers(1, 4))))
    return [" ▁ ".join(word() for _ in range(int(rng.integers(1, 6)))) for _ in range(n)]


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("hand")
    (tmp / "lm.arpa").write_text(HAND_ARPA, encoding="utf-8")
    return tmp / "lm.arpa", write_tokens(tmp / "tokens.txt", SYMBOLS)


@pytest.fixture(scope="module")
def lmplz_model(tmp_path_factory) -> tuple[Path, Path]:
    lmplz = shutil.which("lmplz") or str(ROOT / "tools/kenlm/bin/lmplz")
    if not os.access(lmplz, os.X_OK):
        pytest.skip("lmplz not built (utils/build_kenlm.sh tools/kenlm)")
    tmp = tmp_path_factory.mktemp("lmplz")
    text = "\n".join(lmplz_corpus(np.random.default_rng(0), 300)) + "\n"
    arpa = tmp / "lm.arpa"
    subprocess.run([lmplz, "-o", "4", "--discount_fallback", "-S", "64M", "-T", str(tmp), "--arpa", str(arpa)],
                   input=text.encode(), check=True, capture_output=True)
    # 바 is a unit the LM text never had
    return arpa, write_tokens(tmp / "tokens.txt", SYMBOLS + ["바"])


def check_against_kenlm(arpa: Path, tokens: Path, n_sentences: int = 200) -> NgramTables:
    tables = NgramTables.from_arpa(arpa, tokens, progress=False)
    model = kenlm.Model(str(arpa))
    symbols = [line.split()[0] for line in tokens.read_text(encoding="utf-8").splitlines()]
    ids = {s: i for i, s in enumerate(symbols)}
    rng = np.random.default_rng(1)
    for words in random_sentences(rng, n_sentences, symbols[2:]) + [[], ["라"], ["<unk>", "가"]]:
        sentence = " ".join(words)
        for bos, eos in ((True, True), (False, True), (True, False)):
            total, per_token = tables.score_sentence([ids[w] for w in words], bos=bos, eos=eos)
            expected = [p for p, _, _ in model.full_scores(sentence, bos=bos, eos=eos)]
            assert per_token == pytest.approx(expected, abs=TOL), (sentence, bos, eos)
            assert total == pytest.approx(model.score(sentence, bos=bos, eos=eos), abs=TOL), sentence
    return tables


def test_hand_arpa_matches_kenlm(hand_model):
    tables = check_against_kenlm(*hand_model)
    assert tables.order == 3 and tables.vocab_size == len(SYMBOLS)
    # states: root + 6 unigram contexts (not </s>) + 5 bigram contexts (not "다 </s>")
    assert tables.num_states == 1 + 6 + 5
    # arcs: 6 unigrams (not <s>) + 2 filled (라, 마) + 6 bigrams + 3 trigrams
    assert tables.num_arcs == 6 + 2 + 6 + 3


def test_hand_arpa_known_values(hand_model):
    tables = NgramTables.from_arpa(*hand_model, progress=False)
    ids = {s: i for i, s in enumerate(SYMBOLS)}
    # P(나 | <s> 가) is the trigram itself
    _, after_ga = tables.score(tables.bos_state, ids["가"])
    assert tables.score(after_ga, ids["나"])[0] == pytest.approx(-0.2, abs=1e-6)
    # P(다 | <s> 가): no trigram, no bigram "가 다": bo(<s> 가) + bo(가) + p(다)
    assert tables.score(after_ga, ids["다"])[0] == pytest.approx(-0.25 - 0.4 - 1.3, abs=1e-6)
    # an unseen unit scores as <unk>, backing off through the whole context
    logprob, state = tables.score(after_ga, ids["마"])
    assert logprob == pytest.approx(-0.25 - 0.4 - 1.5, abs=1e-6) and state == 0


def test_lmplz_model_matches_kenlm(lmplz_model):
    tables = check_against_kenlm(*lmplz_model, n_sentences=300)
    assert tables.order == 4


def test_njit_query_equals_python(hand_model):
    from kocall_kernels.ngram.cpu import lm_score_py

    tables = NgramTables.from_arpa(*hand_model, progress=False)
    for state in range(tables.num_states):
        for token in range(1, tables.vocab_size + 1):
            fast = lm_score(*tables.arrays(), np.int32(state), np.int32(token))
            slow = lm_score_py(*tables.arrays(), state, token)
            assert float(fast[0]) == float(slow[0]) and int(fast[1]) == int(slow[1])


def test_batched_cpu_equals_single_queries(lmplz_model):
    tables = NgramTables.from_arpa(*lmplz_model, progress=False)
    states = np.arange(tables.num_states, dtype=np.int32)
    scores, nxt = next_token_scores(tables, states, backend="cpu")
    assert scores.shape == nxt.shape == (tables.num_states, tables.vocab_size + 1)
    assert np.all(scores[:, 0] == 0) and np.array_equal(nxt[:, 0], states)
    for s in states:
        for t in range(1, tables.vocab_size + 1):
            logprob, state = lm_score(*tables.arrays(), s, np.int32(t))
            assert scores[s, t] == logprob and nxt[s, t] == state
    # a distribution: sum over tokens 1..V of P is 1 only for a normalised LM; lmplz gives
    # one over the words it saw, so at the root (unigram) it is 1 up to <unk> and float error
    root = 10.0 ** scores[0, 1:].astype(np.float64)
    seen = [i for i in range(1, tables.vocab_size + 1) if i not in (1, tables.vocab_size - 1)]
    assert root[[i - 1 for i in seen]].sum() + root[0] == pytest.approx(1.0, abs=1e-3)


def test_save_load_roundtrip(hand_model, tmp_path):
    tables = NgramTables.from_arpa(*hand_model, progress=False)
    tables.save(tmp_path / "lm.npz")
    loaded = NgramTables.load(tmp_path / "lm.npz")
    for a, b in zip(tables.arrays(), loaded.arrays()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert (loaded.bos_state, loaded.vocab_size, loaded.order) == (tables.bos_state, tables.vocab_size, 3)
    broken = NgramTables(**{**tables.__dict__, "arc_token": tables.arc_token[::-1].copy()})
    broken.save(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="bad.npz"):
        NgramTables.load(tmp_path / "bad.npz")


def test_bad_arpa_names_file_and_line(tmp_path, hand_model):
    bad = tmp_path / "bad.arpa"
    bad.write_text(HAND_ARPA.replace("-0.6\t나 다\t0", "-0.6\t나 다\tx"),
                   encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.arpa', line \d+"):
        NgramTables.from_arpa(bad, hand_model[1], progress=False)
    short = tmp_path / "short.arpa"
    short.write_text(HAND_ARPA.replace("-0.6\t나 다\t0", "-0.6\t나"), encoding="utf-8")
    with pytest.raises(DataError, match=r"short.arpa', line 18"):
        NgramTables.from_arpa(short, hand_model[1], progress=False)
    truncated = tmp_path / "cut.arpa"
    truncated.write_text(HAND_ARPA.split("\\3-grams:")[0], encoding="utf-8")
    with pytest.raises(DataError, match="cut.arpa"):
        NgramTables.from_arpa(truncated, hand_model[1], progress=False)


CUDASIM_SCRIPT = r"""
import json, sys
import numpy as np
from numba import cuda
from kocall_kernels.ngram import NgramTables, next_token_scores
from kocall_kernels.ngram.cuda import lm_score_device

tables = NgramTables.load(sys.argv[1])
states = np.array(json.loads(sys.argv[2]), dtype=np.int32)
scores, nxt = next_token_scores(tables, states, backend="cuda")

@cuda.jit
def query(a0, a1, a2, a3, a4, a5, states, out_p, out_s):
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x + 1
    if t < out_p.shape[1]:
        p, s = lm_score_device(a0, a1, a2, a3, a4, a5, states[b], t)
        out_p[b, t] = p
        out_s[b, t] = s

out_p = np.zeros_like(scores)
out_s = np.zeros_like(nxt)
query[len(states), tables.vocab_size + 1](*tables.arrays(), states, out_p, out_s)
print(json.dumps({"scores": scores.tolist(), "next": nxt.tolist(),
                  "dev_scores": out_p.tolist(), "dev_next": out_s.tolist()}))
"""


def test_cuda_simulator_matches_cpu(hand_model, tmp_path):
    tables = NgramTables.from_arpa(*hand_model, progress=False)
    tables.save(tmp_path / "lm.npz")
    states = list(range(tables.num_states))
    env = cuda_subprocess_env()
    run = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, str(tmp_path / "lm.npz"), json.dumps(states)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    scores, nxt = next_token_scores(tables, np.array(states, dtype=np.int32), backend="cpu")
    np.testing.assert_allclose(np.array(got["scores"]), scores, atol=1e-6)
    np.testing.assert_array_equal(np.array(got["next"]), nxt)
    np.testing.assert_allclose(np.array(got["dev_scores"])[:, 1:], scores[:, 1:], atol=1e-6)
    np.testing.assert_array_equal(np.array(got["dev_next"])[:, 1:], nxt[:, 1:])
