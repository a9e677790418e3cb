"""FSS maths against independent references and invariance properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group

from knowledge_retention import InputError
from knowledge_retention.similarity import (
    CosineAccumulator,
    CrossLayerCKAAccumulator,
    LinearCKAAccumulator,
    cross_layer_cka,
    feature_similarity_score,
    layer_similarity,
    linear_cka,
    mean_cosine_similarity,
    rbf_cka,
)

# ---- independent references: explicit O(N^2) Gram-space HSIC with a centring matrix ----------------


def _centering(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def naive_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    h = _centering(k.shape[0])
    return float(np.trace(k @ h @ l @ h))


def naive_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), eq. (5), written from the paper (not from Kornblith's helper)."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float(term / (n * (n - 3)))


def naive_cka(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:  # noqa: E741
    f = naive_unbiased_hsic if debiased else naive_hsic
    return f(k, l) / np.sqrt(f(k, k) * f(l, l))


def naive_linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    return naive_cka(x @ x.T, y @ y.T, debiased)


def naive_rbf_gram(x: np.ndarray, threshold: float) -> np.ndarray:
    sq = squareform(pdist(x, "sqeuclidean"))
    return np.exp(-sq / (2 * threshold**2 * np.median(sq)))


def _pair(seed: int = 0, n: int = 60, dt: int = 12, ds: int = 7, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dt)) + offset
    y = x @ rng.normal(size=(dt, ds)) + rng.normal(size=(n, ds)) - offset
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("offset", [0.0, 25.0, 1000.0])
def test_linear_cka_matches_naive_gram_reference(debiased, offset):
    """Features far from the origin (transformer states have outlier dimensions) lose no digits.

    The naive reference is fed pre-centred rows (CKA is translation invariant): its own Gram matrix
    of raw rows loses 5e-3 relative at an offset of 1000 (the accumulator without its shift: 2e-4).
    """
    x, y = _pair(offset=offset)
    expected = naive_linear_cka(x - x.mean(axis=0), y - y.mean(axis=0), debiased)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(expected, rel=1e-9)
    streamed = LinearCKAAccumulator()
    for lo in range(0, len(x), 7):
        streamed.update(x[lo:lo + 7], y[lo:lo + 7])
    assert streamed.compute(debiased=debiased) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_merging_states_with_different_shifts(debiased):
    """Each accumulator takes its first batch's mean as its shift; merging re-expresses the sums."""
    x, y = _pair(offset=300.0, n=90)
    parts = [LinearCKAAccumulator().update(x[a:b] + 0.0, y[a:b]) for a, b in ((0, 10), (10, 50), (50, 90))]
    assert not np.allclose(parts[0].shift_t, parts[2].shift_t)
    merged = LinearCKAAccumulator()
    for part in parts:
        merged += LinearCKAAccumulator.from_state_dict(part.state_dict())
    expected = naive_linear_cka(x - x.mean(axis=0), y - y.mean(axis=0), debiased)
    assert merged.compute(debiased=debiased) == pytest.approx(expected, rel=1e-9)
    assert (parts[2] + parts[0] + parts[1]).compute(debiased=debiased) == pytest.approx(expected, rel=1e-9)
    unshifted = LinearCKAAccumulator(n=0)  # states built by hand (e.g. CrossLayerCKAAccumulator.pair) have no shift
    unshifted += parts[0]
    assert unshifted.shift_t is not None and unshifted.n == 10


def test_kornblith_demo_setup_feature_and_example_space_agree():
    # The set-up of Kornblith et al.'s demo notebook (seed 1337, X ~ N(0,1)^{100x10}, Y = X + noise).
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    assert linear_cka(x, y) == pytest.approx(naive_linear_cka(x, y), rel=1e-12)
    assert linear_cka(x, y, debiased=True) == pytest.approx(naive_linear_cka(x, y, True), rel=1e-12)
    assert linear_cka(x, y) == pytest.approx(0.5576, abs=1e-4)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.5135, abs=1e-4)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_naive_reference(debiased):
    x, y = _pair(n=40)
    expected = naive_cka(naive_rbf_gram(x, 0.5), naive_rbf_gram(y, 0.5), debiased)
    assert rbf_cka(x, y, threshold=0.5, debiased=debiased) == pytest.approx(expected, rel=1e-9)


def test_rbf_cka_refuses_large_n_with_advice():
    x = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ValueError, match="max_examples=20.*linear CKA"):
        rbf_cka(x, x, max_examples=20)


def test_streamed_equals_one_shot_for_uneven_batches():
    x, y = _pair(n=103)
    acc = LinearCKAAccumulator()
    for lo, hi in [(0, 1), (1, 40), (40, 41), (41, 103)]:
        acc.update(x[lo:hi], y[lo:hi])
    for debiased in (False, True):
        assert acc.compute(debiased=debiased) == pytest.approx(linear_cka(x, y, debiased=debiased), rel=1e-10)


def test_merging_process_states_equals_one_shot_and_round_trips_state_dict():
    x, y = _pair(n=90)
    parts = [LinearCKAAccumulator().update(x[i::3], y[i::3]) for i in range(3)]
    merged = LinearCKAAccumulator.from_state_dict(parts[0].state_dict())
    merged += parts[1]
    merged = merged + parts[2]
    assert merged.n == 90
    assert merged.compute() == pytest.approx(linear_cka(x, y), rel=1e-10)


def test_sample_weight_equals_resampling_rows():
    x, y = _pair(n=50)
    idx = np.random.default_rng(3).integers(0, 50, 50)
    counts = np.bincount(idx, minlength=50)
    acc = LinearCKAAccumulator().update(x, y, sample_weight=counts)
    assert acc.compute() == pytest.approx(linear_cka(x[idx], y[idx]), rel=1e-10)
    assert acc.compute(debiased=True) == pytest.approx(linear_cka(x[idx], y[idx], debiased=True), rel=1e-9)


def test_cka_is_not_invariant_to_general_linear_maps():
    x, y = _pair(n=80, dt=6, ds=6)
    skew = np.diag([10.0, 1.0, 1.0, 0.1, 1.0, 1.0]) + np.triu(np.ones((6, 6)), 1)
    assert abs(linear_cka(x @ skew, y) - linear_cka(x, y)) > 1e-3


finite = st.floats(-100, 100, allow_nan=False, width=64)


@st.composite
def feature_pairs(draw):
    n = draw(st.integers(5, 30))
    dt = draw(st.integers(1, 6))
    ds = draw(st.integers(1, 6))
    x = draw(arrays(np.float64, (n, dt), elements=finite))
    y = draw(arrays(np.float64, (n, ds), elements=finite))
    # Keep draws whose features vary enough for CKA to be defined with margin.
    if min(np.ptp(x, axis=0).max(), np.ptp(y, axis=0).max()) < 1e-3:
        x = x + np.arange(n)[:, None]
        y = y - np.arange(n)[:, None] ** 1.5
    return x, y


@settings(max_examples=60, deadline=None)
@given(feature_pairs(), st.integers(0, 10_000))
def test_cka_properties(pair, seed):
    x, y = pair
    value = linear_cka(x, y)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(naive_linear_cka(x, y), abs=1e-6)
    assert value == pytest.approx(linear_cka(y, x), abs=1e-9)  # symmetric
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    assert linear_cka(x[perm], y[perm]) == pytest.approx(value, abs=1e-9)  # order invariance
    q = ortho_group.rvs(x.shape[1], random_state=seed) if x.shape[1] > 1 else np.array([[-1.0]])
    assert linear_cka(x @ q, y) == pytest.approx(value, abs=1e-7)  # orthogonal invariance
    assert linear_cka(3.7 * x + 5.0, y) == pytest.approx(value, abs=1e-7)  # isotropic scaling, translation


@settings(max_examples=30, deadline=None)
@given(feature_pairs(), st.lists(st.integers(1, 29), max_size=4))
def test_batched_equals_one_shot_property(pair, cuts):
    x, y = pair
    edges = sorted({0, len(x), *[c for c in cuts if c < len(x)]})
    acc = LinearCKAAccumulator()
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        acc.update(x[lo:hi], y[lo:hi])
    assert acc.compute() == pytest.approx(linear_cka(x, y), abs=1e-9)


def test_cosine_against_direct_formula_and_accumulator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    expected = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(x, y, strict=True)])
    assert mean_cosine_similarity(x, y) == pytest.approx(expected, rel=1e-12)
    acc = CosineAccumulator().update(x[:7], y[:7])
    acc += CosineAccumulator().update(x[7:], y[7:])
    assert acc.compute() == pytest.approx(expected, rel=1e-12)


def test_fss_is_mean_over_layer_pairs_and_accepts_stacks():
    x, y = _pair(n=50, dt=5, ds=5)
    z = np.random.default_rng(9).normal(size=(50, 5))
    expected = (linear_cka(x, y) + linear_cka(z, y)) / 2
    assert feature_similarity_score([x, z], [y, y]) == pytest.approx(expected)
    # a stack is (N, L, D), examples first, as in the evaluate module, the CLI and the Space
    assert feature_similarity_score(np.stack([x, z], axis=1), np.stack([y, y], axis=1)) == pytest.approx(expected)
    assert feature_similarity_score(x, y, method="cosine") == pytest.approx(max(0.0, mean_cosine_similarity(x, y)))
    assert layer_similarity(x, -x, method="cosine") == 0.0  # clipped at 0


def test_cross_layer_matrix_matches_pairwise_and_streams():
    rng = np.random.default_rng(1)
    t_layers = [rng.normal(size=(40, 6)) for _ in range(3)]
    s_layers = [t_layers[0] @ rng.normal(size=(6, 4)), rng.normal(size=(40, 4))]
    expected = np.array([[linear_cka(t, s) for s in s_layers] for t in t_layers])
    np.testing.assert_allclose(cross_layer_cka(t_layers, s_layers), expected, rtol=1e-10)
    acc = CrossLayerCKAAccumulator()
    for lo in range(0, 40, 16):
        acc.update([t[lo : lo + 16] for t in t_layers], [s[lo : lo + 16] for s in s_layers])
    np.testing.assert_allclose(acc.compute(), expected, rtol=1e-10)


# ---- bad input: every error names the argument and what was expected -----------------------------


@pytest.mark.parametrize(
    ("teacher", "student", "error", "match"),
    [
        (np.ones((5, 3)), np.ones((4, 3)), ValueError, "same examples.*5 rows for the teacher and 4"),
        (np.ones(5), np.ones((5, 3)), ValueError, "`teacher_features` must be 2-D, got an array of shape \\(5,\\)"),
        (np.ones((1, 3)), np.ones((1, 3)), ValueError, "at least 3 examples, got 1"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones((2, 2)), ValueError, "`teacher_features` contains 1 NaN or Inf"),
        (np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2)), TypeError, "`teacher_features` must hold real numbers"),
        ([[1.0, 2.0], [3.0]], np.ones((2, 2)), TypeError, "`teacher_features` must be a rectangular array"),
        (np.ones((6, 3)), np.random.default_rng(0).normal(size=(6, 2)), ValueError, "`teacher_features` are constant"),
    ],
)
def test_linear_cka_bad_input(teacher, student, error, match):
    with pytest.raises(error, match=match):
        linear_cka(teacher, student)


def test_other_bad_inputs():
    x, y = _pair(n=10, dt=3, ds=4)
    with pytest.raises(ValueError, match="same width.*3 and student width 4.*linear_cka"):
        mean_cosine_similarity(x, y)
    with pytest.raises(ValueError, match="`fss_method` must be one of .*got 'cka'"):
        feature_similarity_score(x, y, method="cka")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pair layers one to one: got 2 teacher layer\\(s\\) and 1"):
        feature_similarity_score([x, x], [y])
    with pytest.raises(ValueError, match="needs at least 4 examples"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match="widths changed between batches"):
        LinearCKAAccumulator().update(x, y).update(x, y[:, :2])
    with pytest.raises(ValueError, match="`sample_weight` must hold non-negative integer"):
        LinearCKAAccumulator().update(x, y, sample_weight=np.full(10, 0.5))


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    x, y = _pair(n=30)
    assert linear_cka(torch.tensor(x, dtype=torch.bfloat16), torch.tensor(y)) == pytest.approx(
        linear_cka(torch.tensor(x, dtype=torch.bfloat16).float().numpy(), y), rel=1e-9
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_batch_is_refused_and_leaves_the_state_unchanged(bad):
    x, y = _pair(n=30)
    acc = LinearCKAAccumulator().update(x[:10], y[:10])
    before = acc.compute()
    broken = x[10:].copy()
    broken[4, 3] = bad
    with pytest.raises(ValueError, match=r"`teacher_features` contains 1 NaN or Inf"):
        acc.update(broken, y[10:])
    with pytest.raises(ValueError, match=r"`student_features` contains 1 NaN or Inf"):
        acc.update(x[10:], np.where(np.arange(y[10:].size).reshape(y[10:].shape) == 7, bad, y[10:]))
    assert acc.n == 10 and acc.compute() == before
    # issue 20: rows of 1e160 no longer overflow (they were refused with "overflow float64 when squared"):
    # they are rescaled by a power of two, and CKA equals the reference on the data scaled back by 1e-160
    acc.update(x[10:] * 1e160, y[10:])
    expected = naive_linear_cka(np.vstack([x[:10] * 1e-160, x[10:]]), y, False)
    assert acc.n == 30 and acc.compute() == pytest.approx(expected, rel=1e-9)


def test_accumulators_without_the_debiased_sums():
    x, y = _pair(n=40)
    light = LinearCKAAccumulator(track_debiased=False).update(x[:25], y[:25])
    full = LinearCKAAccumulator().update(x[25:], y[25:])
    assert light.w_tt is None and full.w_tt is not None
    with pytest.raises(ValueError, match="track_debiased=False"):
        light.compute(debiased=True)
    for merged in (light + full, full + light, LinearCKAAccumulator.from_state_dict((light + full).state_dict())):
        assert not merged.track_debiased and merged.n == 40
        assert merged.compute() == pytest.approx(linear_cka(x, y), rel=1e-12)
        with pytest.raises(ValueError, match="debiased"):
            merged.compute(debiased=True)
    both = full + LinearCKAAccumulator().update(x[:25], y[:25])
    assert both.compute(debiased=True) == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_constant_features_are_refused_whatever_their_value(seed):
    """About the first batch's mean, a constant column leaves only rounding noise: still constant."""
    rng = np.random.default_rng(seed)
    constant = np.tile(rng.normal(size=12) * 10 ** rng.uniform(-3, 3), (45, 1))
    y = rng.normal(size=(45, 5))
    for debiased in (False, True):
        with pytest.raises(ValueError, match="`teacher_features` are constant across examples"):
            linear_cka(constant, y, debiased=debiased)
        acc = LinearCKAAccumulator()
        for lo in range(0, 45, 10):
            acc.update(constant[lo:lo + 10], y[lo:lo + 10])
        with pytest.raises(ValueError, match="constant across examples"):
            acc.compute(debiased=debiased)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_cross_layer_cka_far_from_the_origin_and_merged(offset):
    x, y = _pair(offset=offset, n=70)
    expected = naive_linear_cka(x - x.mean(axis=0), y - y.mean(axis=0), False)
    parts = [CrossLayerCKAAccumulator().update([x[a:b], 3 * x[a:b]], [y[a:b]]) for a, b in ((0, 9), (9, 40), (40, 70))]
    merged = CrossLayerCKAAccumulator()
    for part in parts:
        merged += part
    np.testing.assert_allclose(merged.compute(), [[expected], [expected]], rtol=1e-9)
    np.testing.assert_allclose(cross_layer_cka([x], [y]), [[expected]], rtol=1e-9)
    raw = merged.pair(0, 0)  # the same sums re-expressed about the origin (no shift) still centre right
    raw = LinearCKAAccumulator(n=raw.n, sum_t=raw.sum_t, sum_s=raw.sum_s, tt=raw.tt, ss=raw.ss, st=raw.st,
                               shift_t=raw.shift_t, shift_s=raw.shift_s, track_debiased=False)
    from knowledge_retention.similarity import _reshifted

    origin = _reshifted(raw, None, None)
    assert origin.shift_t is None
    assert origin.compute() == pytest.approx(expected, rel=1e-6 if offset else 1e-12)


def test_two_examples_are_refused_with_the_reason():
    """Two centred points are always aligned: CKA would be 1 for any features, so N = 2 is refused."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 5)), rng.normal(size=(2, 4))
    why = "needs at least 3 examples, got 2: two centred points are always aligned"
    for call in (lambda: linear_cka(x, y), lambda: rbf_cka(x, y), lambda: cross_layer_cka([x], [y]),
                 lambda: LinearCKAAccumulator().update(x[:1], y[:1]).update(x[1:], y[1:]).compute(),
                 lambda: feature_similarity_score(x, y)):
        with pytest.raises(InputError, match=why):
            call()
    with pytest.raises(InputError, match="CKA \\(debiased\\) needs at least 4 examples, got 2: two centred"):
        linear_cka(x, y, debiased=True)
    # three examples are scored (small N is the report's and the Space's warning, not an error)
    z, w = rng.normal(size=(3, 5)), rng.normal(size=(3, 4))
    assert 0.0 < linear_cka(z, w) < 1.0 and 0.0 < rbf_cka(z, w) < 1.0


def _on_grid(a: np.ndarray) -> np.ndarray:
    """Multiples of 2**-20: adding 1e6 (or 1e8) to them is exact, so only the computation can differ."""
    return np.round(a * 2.0**20) / 2.0**20


@pytest.mark.parametrize("method", ["linear_cka", "debiased_cka", "rbf_cka"])
def test_a_common_offset_of_1e6_changes_no_similarity(method):
    """Shift before summing: CKA is translation invariant, and so must its computation be (1e-9 relative)."""
    rng = np.random.default_rng(7)
    x = _on_grid(rng.normal(scale=0.5, size=(80, 6)))
    y = _on_grid(x @ rng.normal(size=(6, 4)) + 0.5 * rng.normal(size=(80, 4)))
    plain = feature_similarity_score(x, y, method=method)
    # a spread of 0.5 at a mean offset of 1e6 is real variance, not a constant feature
    offset = feature_similarity_score(x + 1e6, y + 1e6, method=method)
    assert offset == pytest.approx(plain, rel=1e-9)
    assert 0.05 < plain < 0.99


def test_cosine_is_computed_without_overflow_or_underflow():
    """Cosine is not translation invariant (no offset test), but it is scale invariant row by row."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    plain = mean_cosine_similarity(x, y)
    assert mean_cosine_similarity(1e200 * x, 1e200 * y) == pytest.approx(plain, rel=1e-12)
    assert mean_cosine_similarity(1e-200 * x, y) == pytest.approx(plain, rel=1e-12)
    scales = 10.0 ** rng.uniform(-150, 150, size=(30, 1))
    assert mean_cosine_similarity(scales * x, y) == pytest.approx(plain, rel=1e-12)


def test_one_large_call_is_chunked_exactly_and_without_a_float64_copy():
    """linear_cka converts and shifts chunk by chunk: same value, memory flat in N."""
    import tracemalloc

    from knowledge_retention import similarity

    rng = np.random.default_rng(12)
    n = 6 * getattr(similarity, "_CHUNK_ROWS", 8192) + 123
    x = rng.normal(size=(n, 24)).astype(np.float32) + 50
    y = (x[:, :12] @ rng.normal(size=(12, 12)) + rng.normal(size=(n, 12))).astype(np.float32)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for debiased in (False, True):
        reference = LinearCKAAccumulator()
        for lo in range(0, n, 1000):
            reference.update(x64[lo:lo + 1000], y64[lo:lo + 1000])
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(reference.compute(debiased=debiased), rel=1e-12)
    xc, yc = x64 - x64.mean(0), y64 - y64.mean(0)  # Kornblith et al.'s feature-space formula, centred first
    direct = np.sum((yc.T @ xc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(direct, rel=1e-12)
    tracemalloc.start()
    linear_cka(x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * (x64.nbytes + y64.nbytes)  # less than half of one float64 copy of the inputs
    # a NaN in the last chunk is reported and leaves the state as it was
    acc = LinearCKAAccumulator().update(x[:10], y[:10])
    bad = x.copy()
    bad[-1, 3] = np.nan
    with pytest.raises(InputError, match="`teacher_features` contains 1 NaN"):
        acc.update(bad, y)
    assert acc.n == 10


# ---- issue 20 item 2: numerics that scale cannot fool; item 3: the N x N form when D > N -----------------------

from hypothesis import HealthCheck  # noqa: E402

from knowledge_retention.kernel_cka import gram_linear_cka  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_t=st.floats(-150, 150), log_s=st.floats(-150, 150), seed=st.integers(0, 1000))
def test_cka_is_scale_invariant_from_1e_minus_150_to_1e150(log_t, log_s, seed):
    """Each model's features scaled by 10**k: every CKA equals the reference on the unscaled features."""
    x, y = _pair(n=40, seed=seed)
    a, b = 10.0**log_t, 10.0**log_s
    for debiased in (False, True):
        expected = naive_linear_cka(x, y, debiased)
        assert linear_cka(a * x, b * y, debiased=debiased) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        acc = LinearCKAAccumulator()
        for lo in range(0, 40, 15):  # batches, each rescaled by its own power of two, then merged
            acc.update(a * x[lo:lo + 15], b * y[lo:lo + 15])
        assert acc.compute(debiased=debiased) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert rbf_cka(a * x, b * y) == pytest.approx(naive_cka(naive_rbf_gram(x, 1.0), naive_rbf_gram(y, 1.0)), rel=1e-9)
    np.testing.assert_allclose(cross_layer_cka([a * x], [b * y]), [[naive_linear_cka(x, y)]], rtol=1e-9)
    assert mean_cosine_similarity(a * x[:, :4], b * y[:, :4]) == pytest.approx(
        np.mean(np.sum(x[:, :4] * y[:, :4], 1) / np.linalg.norm(x[:, :4], axis=1) / np.linalg.norm(y[:, :4], axis=1)),
        rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(log_offset=st.floats(0, 13), seed=st.integers(0, 1000))
def test_offsets_float64_resolves_are_scored_not_called_constant(log_offset, seed):
    """A spread of 1 at an offset up to 1e13 is real variance: scored, to the precision float64 leaves."""
    x, y = _pair(n=50, seed=seed)
    offset = 10.0**log_offset
    expected = naive_linear_cka(x, y)
    tolerance = max(1e-9, 1e-16 * offset * 50)  # the rounding of x + offset, relative to a spread of 1
    assert linear_cka(x + offset, y - offset) == pytest.approx(expected, rel=tolerance)


def test_what_float64_cannot_resolve_is_refused_and_says_so():
    x, y = _pair(n=50)
    with pytest.raises(InputError, match="spread below float64's resolution"):
        linear_cka(x + 1e17, y)
    with pytest.raises(InputError, match="underflows to 0 in float64.*larger threshold"):
        rbf_cka(x, y, threshold=1e-200)
    with pytest.raises(InputError, match="rounds to 1 in float64.*smaller threshold"):
        rbf_cka(x, y, threshold=1e200)


def test_extreme_features_issue_20_examples():
    """The issue's cases: 1e-160 gave FSS 1.0, 1e38 gave 0.0, debiased at 1e-45 gave inf."""
    x, y = _pair(n=60, seed=4)
    plain, debiased = naive_linear_cka(x, y), naive_linear_cka(x, y, True)
    assert feature_similarity_score(1e-160 * x, 1e-160 * y) == pytest.approx(plain, rel=1e-9)
    assert feature_similarity_score(1e38 * x, 1e38 * y) == pytest.approx(plain, rel=1e-9)
    assert linear_cka(1e-45 * x, 1e-45 * y, debiased=True) == pytest.approx(debiased, rel=1e-9)
    assert linear_cka((1e36 * x).astype(np.float32), (1e36 * y).astype(np.float32)) == pytest.approx(plain, rel=1e-5)


def test_normal_features_are_not_rescaled_at_all():
    """Within float64's range the sums are those of the plain computation (scale exponents 0)."""
    x, y = _pair(n=80, seed=5)
    acc = LinearCKAAccumulator().update(x, y)
    assert (acc.scale_t, acc.scale_s) == (0, 0)
    tiny = LinearCKAAccumulator().update(1e-160 * x, y)
    assert tiny.scale_t > 400 and abs(tiny.scale_s) < 8  # the slow path brings both models to unit size


def test_wide_features_take_the_n_by_n_form_with_the_same_value():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 3000)) + 5.0
    y = x[:, :50] @ rng.normal(size=(50, 20)) + rng.normal(size=(40, 20))
    assert gram_linear_cka(x, y) == pytest.approx(naive_linear_cka(x, y), rel=1e-10)
    assert gram_linear_cka(x, y, debiased=True) == pytest.approx(naive_linear_cka(x, y, True), rel=1e-9)
    assert gram_linear_cka(1e150 * x, 1e-150 * y) == pytest.approx(naive_linear_cka(x, y), rel=1e-9)
    with pytest.warns(UserWarning, match="example space from N x N Gram matrices"):
        value = linear_cka(rng.normal(size=(30, 7000)).astype(np.float32), rng.normal(size=(30, 6000)))
    assert 0.0 < value <= 1.0


def test_wide_features_stay_in_memory_that_follows_n():
    """N = 200 examples of width 2**15 (a flattened feature map): O(N^2) memory, not the 8 GiB of D x D sums."""
    import tracemalloc

    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 2**15)).astype(np.float32)
    y = x[:, :300] * 2.0 + rng.normal(size=(200, 300)).astype(np.float32)
    tracemalloc.start()
    with pytest.warns(UserWarning):
        value = linear_cka(x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2**20
    assert value == pytest.approx(naive_linear_cka(x.astype(np.float64), y.astype(np.float64)), rel=1e-9)
    with pytest.raises(InputError, match="Streaming linear CKA keeps .* GiB"):
        LinearCKAAccumulator().update(x[:10], y[:10].repeat(100, axis=1))


def test_every_fss_accumulator_has_the_same_verbs():
    x, y = _pair(n=30)
    for make, args in ((LinearCKAAccumulator, (x, y)), (CosineAccumulator, (x[:, :4], y[:, :4])),
                       (CrossLayerCKAAccumulator, ([x], [y]))):
        whole = make().update(*args)
        halves = make().update(*(a[:12] if not isinstance(a, list) else [a[0][:12]] for a in args))
        other = make().update(*(a[12:] if not isinstance(a, list) else [a[0][12:]] for a in args))
        empty = (a[:0] if not isinstance(a, list) else [a[0][:0]] for a in args)
        other.update(*empty)  # an empty batch is a no-op
        merged = halves + other
        np.testing.assert_allclose(merged.compute(), whole.compute(), rtol=1e-12)
        restored = make.from_state_dict(merged.state_dict())
        np.testing.assert_allclose(restored.compute(), whole.compute(), rtol=1e-12)
        halves += other
        np.testing.assert_allclose(halves.compute(), whole.compute(), rtol=1e-12)
        assert merged.reset().n == 0


@pytest.mark.parametrize("damage, match", [
    (lambda s: s.pop("tt"), r"`state\['tt'\]` is missing"),
    (lambda s: s.update(n=-3), r"`state\['n'\]` must be >= 0"),
    (lambda s: s.update(st=s["st"][:, :2]), r"`state\['st'\]` must have shape"),
    (lambda s: s["sum_t"].__setitem__(0, np.nan), r"`state\['sum_t'\]` holds NaN"),
    (lambda s: s.update(n="many"), r"`state\['n'\]` must be an integer"),
])
def test_a_damaged_state_is_refused_naming_the_entry(damage, match):
    x, y = _pair(n=30)
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in LinearCKAAccumulator().update(x, y).state_dict().items()}
    damage(state)
    with pytest.raises(InputError, match=match):
        LinearCKAAccumulator.from_state_dict(state)
