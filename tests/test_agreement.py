"""AOAg maths against scipy/sklearn references, streaming and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from sklearn.metrics import jaccard_score, r2_score

from knowledge_retention.agreement import (
    BoxIoUAccumulator,
    ClassificationAgreementAccumulator,
    MaskIoUAccumulator,
    RegressionAgreementAccumulator,
    box_iou,
    box_iou_agreement,
    classification_agreement,
    looks_like_probabilities,
    mask_iou_agreement,
    output_agreement,
    per_example_kl,
    regression_agreement,
)


def _logits(seed=0, n=50, c=4):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, c)) * 2
    return t, t + rng.normal(size=(n, c))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_agreement_matches_scipy_rel_entr(temperature):
    t, s = _logits()
    p, q = softmax(t / temperature, axis=1), softmax(s / temperature, axis=1)
    kl = rel_entr(p, q).sum(axis=1)
    np.testing.assert_allclose(per_example_kl(t, s, temperature=temperature), kl, rtol=1e-10)
    assert classification_agreement(t, s, temperature=temperature) == pytest.approx(np.mean(np.exp(-kl)), rel=1e-12)


def test_js_agreement_matches_scipy_jensenshannon_in_bits():
    t, s = _logits(1)
    p, q = softmax(t, axis=1), softmax(s, axis=1)
    js = np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q, strict=True)])
    assert classification_agreement(t, s, method="js") == pytest.approx(1 - js.mean(), rel=1e-10)


def test_top1_agreement():
    t, s = _logits(2)
    assert classification_agreement(t, s, method="top1") == pytest.approx(np.mean(t.argmax(1) == s.argmax(1)))


def test_probabilities_input_equals_logits_input():
    t, s = _logits(3)
    for method in ("kl", "js", "top1"):
        a = classification_agreement(t, s, method=method, temperature=2.0)
        b = classification_agreement(softmax(t, 1), softmax(s, 1), method=method, temperature=2.0, inputs="probabilities")
        assert a == pytest.approx(b, rel=1e-9)


def test_probability_with_zero_entries_gives_finite_or_zero_agreement():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert classification_agreement(p, q, inputs="probabilities") == pytest.approx(0.5)  # exp(-inf)=0, exp(0)=1
    assert classification_agreement(q, q, inputs="probabilities") == pytest.approx(1.0)


def test_streaming_classification_equals_one_shot():
    t, s = _logits(4, n=37)
    acc = ClassificationAgreementAccumulator(temperature=1.5)
    acc.update(t[:10], s[:10])
    other = ClassificationAgreementAccumulator(temperature=1.5).update(t[10:], s[10:])
    acc += other
    for method in ("kl", "js", "top1"):
        assert acc.compute(method) == pytest.approx(classification_agreement(t, s, method=method, temperature=1.5))
    assert acc.mean_kl == pytest.approx(per_example_kl(t, s, temperature=1.5).mean())


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(2, 5)), elements=st.floats(-30, 30)))
def test_classification_agreement_properties(logits):
    noise = np.random.default_rng(0).normal(size=logits.shape)
    for method in ("kl", "js", "top1"):
        assert classification_agreement(logits, logits, method=method) == pytest.approx(1.0)
        assert 0.0 <= classification_agreement(logits, logits + noise, method=method) <= 1.0
    # shifting logits by a per-row constant changes no probability
    assert classification_agreement(logits, logits + 3.0) == pytest.approx(1.0)


def test_regression_default_is_r2_floored():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(100, 3))
    s = t + 0.3 * rng.normal(size=(100, 3))
    expected = r2_score(t, s, multioutput="uniform_average")
    # r2_score averages per-output R^2; ours divides the pooled MSE by the mean variance: equal when
    # variances are equal, so compare against the pooled definition and check closeness to sklearn.
    pooled = 1 - np.mean((t - s) ** 2) / np.mean(t.var(axis=0))
    assert regression_agreement(t, s) == pytest.approx(pooled, rel=1e-12)
    assert regression_agreement(t, s) == pytest.approx(expected, abs=0.02)
    assert regression_agreement(t[:, 0], s[:, 0]) == pytest.approx(r2_score(t[:, 0], s[:, 0]), rel=1e-12)
    assert regression_agreement(t[:, 0], -t[:, 0]) == 0.0  # floored


def test_regression_streaming_and_max_mse():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=40), rng.normal(size=40)
    acc = RegressionAgreementAccumulator().update(t[:15], s[:15])
    acc += RegressionAgreementAccumulator().update(t[15:], s[15:])
    assert acc.compute() == pytest.approx(regression_agreement(t, s))
    mse = np.mean((t - s) ** 2)
    assert acc.compute(max_mse=10.0) == pytest.approx(1 - mse / 10.0)


def test_mask_iou_matches_sklearn_jaccard_macro():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=(6, 8, 8))
    s = np.where(rng.random((6, 8, 8)) < 0.7, t, rng.integers(0, 4, size=(6, 8, 8)))
    expected = jaccard_score(t.ravel(), s.ravel(), average="macro")
    assert mask_iou_agreement(t, s) == pytest.approx(expected, rel=1e-12)
    acc = MaskIoUAccumulator()
    acc.update(t[:2] % 3, s[:2] % 3)  # fewer classes in the first batch: the matrix grows
    acc.update(t[2:], s[2:])
    both_t = np.concatenate([t[:2] % 3, t[2:]]).ravel()
    both_s = np.concatenate([s[:2] % 3, s[2:]]).ravel()
    assert acc.compute() == pytest.approx(jaccard_score(both_t, both_s, average="macro"), rel=1e-12)


def test_mask_iou_ignore_index():
    t = np.array([[[0, 1, 255]]])
    s = np.array([[[0, 1, 1]]])
    assert mask_iou_agreement(t, s, ignore_index=255) == 1.0


def test_box_iou_against_hand_values_and_hungarian_matching():
    a = np.array([[0, 0, 2, 2], [10, 10, 12, 12]], dtype=float)
    b = np.array([[10, 10, 12, 13], [0, 0, 1, 2]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b), [[0.0, 0.5], [4 / 6, 0.0]])
    # best matching pairs (a0,b1)=0.5 and (a1,b0)=2/3, normalised by max(M, K)=2
    assert box_iou_agreement([a], [b]) == pytest.approx((0.5 + 4 / 6) / 2)
    # an extra student box halves nothing but adds an unmatched box: divide by 3
    assert box_iou_agreement([a], [np.vstack([b, [[50, 50, 51, 51]]])]) == pytest.approx((0.5 + 4 / 6) / 3)
    assert box_iou_agreement([np.zeros((0, 4))], [np.zeros((0, 4))]) == 1.0
    # class-aware matching: different labels never match
    assert box_iou_agreement([a], [b], teacher_labels=[[0, 1]], student_labels=[[0, 0]]) == pytest.approx(0.5 / 2)
    acc = BoxIoUAccumulator().update([a], [b])
    acc += BoxIoUAccumulator().update([a], [a])
    assert acc.compute() == pytest.approx(((0.5 + 4 / 6) / 2 + 1.0) / 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: classification_agreement(np.ones((3, 2)), np.ones((4, 2))), ValueError, "same examples"),
        (lambda: classification_agreement(np.zeros((3, 2)), np.zeros((3, 3))), ValueError, "same classes.*2 columns.*3"),
        (lambda: classification_agreement(np.zeros((3, 1)), np.zeros((3, 1))), ValueError, "at least 2 classes"),
        (lambda: classification_agreement(np.full((3, 2), 0.5), np.zeros((3, 2))), ValueError, "look like probabilities.*inputs='probabilities'"),
        (lambda: classification_agreement(np.ones((3, 2)), np.ones((3, 2)), inputs="probabilities"), ValueError, "must be probabilities"),
        (lambda: classification_agreement(np.zeros((3, 2)), np.zeros((3, 2)), temperature=0), ValueError, "`temperature` must be a finite number > 0"),
        (lambda: classification_agreement(np.zeros((3, 2)), np.zeros((3, 2)), method="kld"), ValueError, "`aoag_method` must be one of"),
        (lambda: classification_agreement(np.zeros(3), np.zeros(3)), ValueError, "`teacher_logits` must be 2-D"),
        (lambda: classification_agreement([[np.inf, 0]], [[0, 0]]), ValueError, "NaN or Inf"),
        (lambda: regression_agreement(np.ones(5), np.zeros(5)), ValueError, "teacher's outputs are constant.*max_mse"),
        (lambda: regression_agreement(np.ones((5, 2)), np.zeros((5, 3))), ValueError, "same number of outputs"),
        (lambda: regression_agreement(np.arange(3.0), np.zeros(3), max_mse=-1), ValueError, "`max_mse` must be"),
        (lambda: mask_iou_agreement(np.zeros((1, 2, 2)), np.zeros((1, 2, 3))), ValueError, "same shape"),
        (lambda: mask_iou_agreement(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2))), TypeError, "integer class labels"),
        (lambda: box_iou_agreement([[[0, 0, 1]]], [[[0, 0, 1, 1]]]), ValueError, "shape \\(M, 4\\)"),
        (lambda: box_iou_agreement([[[2, 0, 1, 1]]], [[[0, 0, 1, 1]]]), ValueError, "x2 >= x1"),
        (lambda: output_agreement(np.zeros((2, 2)), np.zeros((2, 2)), method="iou"), ValueError, "`aoag_method` must be one of"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_half_precision_probabilities_are_still_probabilities(fmt):
    """Rounded to float16 / bfloat16, rows sum to 1 only within that format's rounding (> 1e-4 off)."""
    rng = np.random.default_rng(4)
    p = softmax(2 * rng.normal(size=(300, 5)), axis=1)
    q = softmax(2 * rng.normal(size=(300, 5)), axis=1)
    if fmt == "float16":
        p_half, q_half = p.astype(np.float16), q.astype(np.float16)
        widened = p_half.astype(np.float64), q_half.astype(np.float64)
    else:
        torch = pytest.importorskip("torch")
        p_half, q_half = torch.tensor(p).to(torch.bfloat16), torch.tensor(q).to(torch.bfloat16)
        widened = p_half.float().numpy().astype(np.float64), q_half.float().numpy().astype(np.float64)
    assert np.abs(widened[0].sum(axis=1) - 1).max() > 1e-4  # the old fixed tolerance took these for logits
    assert looks_like_probabilities(widened[0])
    with pytest.raises(ValueError, match="`teacher_logits` look like probabilities"):
        classification_agreement(p_half, q_half)
    got = classification_agreement(p_half, q_half, inputs="probabilities")
    expected = np.mean(np.exp(-np.sum(rel_entr(widened[0] / widened[0].sum(1, keepdims=True),
                                               widened[1] / widened[1].sum(1, keepdims=True)), axis=1)))
    assert got == pytest.approx(expected, rel=1e-12)
    # logits in half precision are still logits
    logits = rng.normal(size=(50, 3)).astype(np.float16)
    assert not looks_like_probabilities(logits.astype(np.float64))


def test_regression_agreement_is_unchanged_by_a_common_offset_of_1e8():
    """Shifted sums: E[t^2] - E[t]^2 of raw values gave 0.84 instead of 0.96 at this offset."""
    rng = np.random.default_rng(9)
    grid = 2.0**20  # multiples of 2**-20: adding 1e8 to them is exact
    t = np.round(rng.normal(size=(400, 2)) * grid) / grid
    s = np.round((t + 0.2 * rng.normal(size=t.shape)) * grid) / grid
    plain = regression_agreement(t, s)
    assert regression_agreement(t + 1e8, s + 1e8) == pytest.approx(plain, rel=1e-9)
    assert plain == pytest.approx(1 - np.mean((t - s) ** 2) / np.mean(np.var(t, axis=0)), rel=1e-12)
    # batches and merged states (each about its own first batch's mean) give the same
    acc = RegressionAgreementAccumulator().update(t[:150] + 1e8, s[:150] + 1e8).update(t[150:300] + 1e8, s[150:300] + 1e8)
    acc += RegressionAgreementAccumulator().update(t[300:] + 1e8, s[300:] + 1e8)  # another shift, re-expressed
    assert acc.n == 400 and acc.compute() == pytest.approx(plain, rel=1e-9)
    # a constant teacher far from the origin is still constant
    with pytest.raises(ValueError, match="teacher's outputs are constant"):
        regression_agreement(np.full(20, 1e8 + 0.5), 1e8 + rng.normal(size=20))


# ---- issue 20: scale, memory, temperature; issue 19: one API for every accumulator ------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from knowledge_retention import InputError  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(log_scale=st.floats(-150, 150), log_offset=st.floats(-3, 9), seed=st.integers(0, 1000))
def test_regression_agreement_is_scale_and_offset_invariant(log_scale, log_offset, seed):
    """R^2 of the student against the teacher (the default max_mse) is the same at any scale and offset."""
    rng = np.random.default_rng(seed)
    grid = 2.0**20
    t = np.round(rng.normal(size=(60, 2)) * grid) / grid
    s = np.round((t + 0.3 * rng.normal(size=t.shape)) * grid) / grid
    expected = max(0.0, 1 - np.mean((t - s) ** 2) / np.mean(np.var(t, axis=0)))
    a, offset = 10.0**log_scale, 10.0**log_offset
    got = regression_agreement(a * (t + offset), a * (s + offset))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    acc = RegressionAgreementAccumulator().update(a * (t[:25] + offset), a * (s[:25] + offset))
    acc += RegressionAgreementAccumulator().update(a * (t[25:] + offset), a * (s[25:] + offset))
    assert acc.compute() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # an explicit max_mse, in the outputs' own units, also holds at any scale
    mse = np.mean((t - s) ** 2)
    assert acc.compute(max_mse=a * a * 4 * mse) == pytest.approx(0.75, rel=1e-6)


def test_temperature_too_small_for_float64_is_refused_and_large_logits_are_not():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20, 3))
    with pytest.raises(InputError, match="`temperature`=1e-308 is too small for float64"):
        classification_agreement(z, z + 0.1, temperature=1e-308)
    # logits of 1e300 (relative to each other they are what matters) and a small but representable temperature
    assert classification_agreement(z * 1e300, z * 1e300) == pytest.approx(1.0)
    assert classification_agreement(z, z, temperature=1e-10) == pytest.approx(1.0)


def test_a_pixel_labelled_100000_costs_one_entry_not_label_squared_bins():
    import tracemalloc

    t = np.zeros((2, 8, 8), dtype=np.int64)
    s = t.copy()
    t[0, 0, 0] = 100_000
    s[1, 1, 1] = 3
    tracemalloc.start()
    value = mask_iou_agreement(t, s)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    expected = jaccard_score(t.ravel(), s.ravel(), average="macro")
    assert value == pytest.approx(expected, rel=1e-12) and peak < 2**20
    acc = MaskIoUAccumulator().update(t, s)
    assert acc.labels.tolist() == [0, 3, 100_000] and acc.per_label_iou()[100_000] == 0.0
    with pytest.raises(InputError, match="labels beyond 2"):
        mask_iou_agreement(np.full((1, 2, 2), 1e300), np.zeros((1, 2, 2)))


@pytest.mark.parametrize("make, batch", [
    (lambda: ClassificationAgreementAccumulator(temperature=2.0), "logits"),
    (RegressionAgreementAccumulator, "values"),
    (MaskIoUAccumulator, "masks"),
    (BoxIoUAccumulator, "boxes"),
])
def test_every_agreement_accumulator_has_the_same_verbs(make, batch):
    rng = np.random.default_rng(2)
    if batch == "logits":
        t, s = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    elif batch == "values":
        t, s = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    elif batch == "masks":
        t, s = rng.integers(0, 5, size=(30, 4, 4)), rng.integers(0, 5, size=(30, 4, 4))
    else:
        t = [np.array([[0.0, 0.0, 2.0, 2.0]]) + i for i in range(30)]
        s = [np.array([[0.0, 0.0, 2.0, 1.0 + i / 30]]) + i for i in range(30)]
    whole = make().update(t, s)
    first, second = make().update(t[:11], s[:11]), make().update(t[11:], s[11:])
    second.update(t[:0], s[:0])  # an empty batch is a no-op
    assert (first + second).compute() == pytest.approx(whole.compute(), rel=1e-12)
    restored = type(whole).from_state_dict((first + second).state_dict())
    assert restored.compute() == pytest.approx(whole.compute(), rel=1e-12)
    first += second
    assert first.compute() == pytest.approx(whole.compute(), rel=1e-12)
    with pytest.raises(InputError, match="at least"):
        first.reset().compute()
    with pytest.raises(TypeError, match="can be added"):
        whole += 3


@pytest.mark.parametrize("cls, state, match", [
    (ClassificationAgreementAccumulator, {"n": 3, "sum_exp_neg_kl": 9.0, "sum_kl": 0.0, "sum_js": 0.0, "top1_matches": 1},
     "do not fit its count"),
    (ClassificationAgreementAccumulator, {"n": 3, "sum_exp_neg_kl": 1.0, "sum_kl": 0.0, "sum_js": 0.0}, r"`state\['top1_matches'\]` is missing"),
    (RegressionAgreementAccumulator, {"n": 3, "sum_sq_diff": -1.0, "sum_t": [0.0], "sum_t2": [1.0]}, "cannot be negative"),
    (RegressionAgreementAccumulator, {"n": 3, "sum_sq_diff": 1.0, "sum_t": [0.0], "sum_t2": [1.0, 2.0]}, r"`state\['sum_t2'\]` must have shape"),
    (MaskIoUAccumulator, {"labels": np.array([2, 1]), "intersection": [0, 0], "teacher_count": [1, 1],
                          "student_count": [1, 1]}, "sorted, distinct"),
    (MaskIoUAccumulator, {"labels": np.array([1, 2]), "intersection": [5, 0], "teacher_count": [1, 1],
                          "student_count": [1, 1]}, "exceeds a model's count"),
    (BoxIoUAccumulator, {"n": 2, "total": 5.0}, r"`state\['total'\]` must lie in \[0, n\]"),
    (BoxIoUAccumulator, [1, 2], "must be a dict"),
])
def test_damaged_agreement_states_are_refused_by_entry(cls, state, match):
    with pytest.raises(InputError, match=match):
        cls.from_state_dict(state)
