"""CTC prefix scores equal brute-force sums over every alignment (and torch's CTC loss for
whole sequences); the numba twin and the simulated CUDA kernel equal the numpy reference."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from kocall_kernels.ctc_prefix import cpu, reference
from kocall_kernels.testing import cuda_subprocess_env


def random_log_probs(B: int, T: int, V: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, V)) * 1.5
    return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for v in path:
        if v != blank and v != prev:
            out.append(v)
        prev = v
    return tuple(out)


def brute_force(lp: np.ndarray, prefix: tuple[int, ...]) -> tuple[float, float]:
    """(log P(output starts with prefix), log P(output == prefix)) by enumerating all V^T paths."""
    T, V = lp.shape
    starts, equal = [], []
    for path in itertools.product(range(V), repeat=T):
        out = collapse(path)
        logp = float(sum(lp[t, v] for t, v in enumerate(path)))
        if out[: len(prefix)] == prefix:
            starts.append(logp)
            if out == prefix:
                equal.append(logp)
    as_log = lambda xs: float(np.logaddexp.reduce(xs)) if xs else float("-inf")  # noqa: E731
    return as_log(starts), as_log(equal)


PREFIXES = [(1,), (2,), (1, 2), (1, 1), (2, 1, 2), (1, 1, 1), (2, 2, 1, 3), (3, 1, 3, 1, 3)]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_reference_equals_brute_force(prefix):
    lp = random_log_probs(1, 6, 4, seed=len(prefix) * 7 + prefix[0])[0].astype(np.float64)
    want_prefix, want_full = brute_force(lp, prefix)
    got_prefix, got_full = reference.prefix_log_prob(lp, list(prefix))
    assert got_prefix == pytest.approx(want_prefix, abs=1e-7)
    assert got_full == pytest.approx(want_full, abs=1e-7)


def test_prefix_too_long_for_the_frames_scores_minus_infinity():
    lp = random_log_probs(1, 3, 4, seed=1)[0]
    assert reference.prefix_log_prob(lp, [1, 1, 2])[0] == float("-inf")  # the repeat needs a blank: 4 frames
    assert np.isfinite(reference.prefix_log_prob(lp, [1, 2, 3])[0])


def test_full_probability_equals_torch_ctc_loss():
    torch = pytest.importorskip("torch")
    lp = random_log_probs(1, 30, 6, seed=3)[0]
    for target in ([1, 2, 3], [4, 4, 1, 5, 5, 5], [2]):
        loss = torch.nn.functional.ctc_loss(torch.from_numpy(lp)[:, None], torch.tensor([target]),
                                            torch.tensor([30]), torch.tensor([len(target)]), reduction="sum")
        assert reference.prefix_log_prob(lp, target)[1] == pytest.approx(-float(loss), abs=1e-4)


def test_prefix_scores_of_all_continuations_sum_to_the_prefix():
    """P(starts with g) = P(== g) + sum over c of P(starts with g + c): the scores are a distribution."""
    lp = random_log_probs(1, 12, 5, seed=9)[0].astype(np.float64)
    lp -= np.logaddexp.reduce(lp, axis=-1, keepdims=True)  # rows sum to 1 in float64, not just float32
    g = [3, 1]
    psi_g, full_g = reference.prefix_log_prob(lp, g)
    children = [reference.prefix_log_prob(lp, g + [c])[0] for c in range(1, 5)]
    assert np.logaddexp.reduce([full_g] + children) == pytest.approx(psi_g, abs=1e-9)


def batch_case(seed: int):
    """Rows from three utterances of different lengths, each a random prefix plus a unit
    (repeats included): the inputs of one `extend` call, built with the reference."""
    rng = np.random.default_rng(seed)
    lp = random_log_probs(3, 15, 6, seed)
    lens = np.array([15, 9, 4])
    rows, states, lasts, plens, units = [], [], [], [], []
    for n in range(10):
        u = int(rng.integers(0, 3))
        prefix = list(rng.integers(1, 6, size=int(rng.integers(0, 4))))
        if prefix and rng.random() < 0.4:
            unit = prefix[-1]  # a repeat
        else:
            unit = int(rng.integers(1, 6))
        r = reference.initial_state(lp, lens, np.array([u]))
        for i, c in enumerate(prefix):
            _, r = reference.extend(lp, lens, np.array([u]), r, np.array([prefix[i - 1] if i else -1]),
                                    np.array([i]), np.array([c]))
        rows.append(u)
        states.append(r[0])
        lasts.append(prefix[-1] if prefix else -1)
        plens.append(len(prefix))
        units.append(unit)
    return lp, lens, np.array(rows), np.stack(states), np.array(lasts), np.array(plens), np.array(units)


@pytest.mark.parametrize("seed", range(3))
def test_cpu_twin_matches_reference(seed):
    lp, lens, rows, states, lasts, plens, units = batch_case(seed)
    want_psi, want_r = reference.extend(lp, lens, rows, states, lasts, plens, units)
    got_psi, got_r = cpu.extend(lp, lens, rows, states, lasts, plens, units)
    np.testing.assert_allclose(got_psi, want_psi, atol=1e-9)
    np.testing.assert_allclose(got_r, want_r, atol=1e-9)
    np.testing.assert_allclose(cpu.full_log_prob(got_r, lens, rows), reference.full_log_prob(want_r, lens, rows),
                               atol=1e-9)
    np.testing.assert_allclose(cpu.initial_state(lp, lens, rows), reference.initial_state(lp, lens, rows))


def test_bad_rows_are_refused():
    lp = random_log_probs(2, 5, 4, 0)
    with pytest.raises(ValueError, match="row_utt"):
        cpu.initial_state(lp, np.array([5, 3]), np.array([0, 2]))
    with pytest.raises(ValueError, match="lens"):
        cpu.initial_state(lp, np.array([5, 0]), np.array([0]))
    r = cpu.initial_state(lp, np.array([5, 3]), np.array([0]))
    with pytest.raises(ValueError, match="units"):
        cpu.extend(lp, np.array([5, 3]), np.array([0]), r, np.array([-1]), np.array([0]), np.array([4]))


CUDASIM_SCRIPT = r"""
import sys
import numpy as np
from kocall_kernels.ctc_prefix import cuda as prefix_cuda

d = np.load(sys.argv[1])
psi, r = prefix_cuda.extend(d["lp"], d["lens"], d["rows"], d["states"], d["lasts"], d["plens"], d["units"],
                            threads_per_block=int(sys.argv[3]))
np.savez(sys.argv[2], psi=psi, r=r)
"""


@pytest.mark.parametrize("threads", [4, 32])
def test_simulated_cuda_kernel_matches_cpu_twin(threads, tmp_path):
    """The CUDA kernel under NUMBA_ENABLE_CUDASIM=1 (a subprocess: the switch must precede
    importing numba); 4 threads per block: several blocks, the last one partly idle."""
    lp, lens, rows, states, lasts, plens, units = batch_case(5)
    np.savez(tmp_path / "in.npz", lp=lp, lens=lens, rows=rows, states=states, lasts=lasts, plens=plens, units=units)
    run = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                          str(threads)], env=cuda_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    want_psi, want_r = cpu.extend(lp, lens, rows, states, lasts, plens, units)
    np.testing.assert_allclose(got["psi"], want_psi, atol=1e-9)
    np.testing.assert_allclose(got["r"], want_r, atol=1e-9)
