"""KRS combination, presets, alpha sensitivity and the array-level entry point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knowledge_retention import (
    TASK_PRESETS,
    InputError,
    alpha_sensitivity,
    compute_krs,
    knowledge_retention_score,
    resolve_weights,
)
from knowledge_retention.agreement import classification_agreement, regression_agreement
from knowledge_retention.similarity import linear_cka

unit = st.floats(0, 1, allow_nan=False)


def test_paper_presets():
    assert TASK_PRESETS["classification"] == (0.3, 0.7)
    assert TASK_PRESETS["detection"] == TASK_PRESETS["segmentation"] == (0.7, 0.3)
    assert TASK_PRESETS["nlp"] == (0.5, 0.5)


@given(unit, unit, unit)
def test_krs_is_convex_combination(fss, aoag, alpha):
    krs = knowledge_retention_score(fss, aoag, alpha=alpha)
    assert krs == pytest.approx(alpha * fss + (1 - alpha) * aoag, abs=1e-12)
    assert min(fss, aoag) - 1e-12 <= krs <= max(fss, aoag) + 1e-12
    assert knowledge_retention_score(fss, aoag, alpha=alpha, scale=100) == pytest.approx(100 * krs, abs=1e-9)


def test_weights_resolution():
    assert resolve_weights("segmentation") == (0.7, 0.3)
    assert resolve_weights("classification", alpha=0.6) == (0.6, 0.4)
    assert resolve_weights(beta=0.25) == (0.75, 0.25)
    with pytest.raises(ValueError, match="`alpha` \\+ `beta` must equal 1, got 0.5 \\+ 0.6"):
        resolve_weights(alpha=0.5, beta=0.6)
    with pytest.raises(ValueError, match="`alpha` must lie in \\[0, 1\\], got 1.5"):
        resolve_weights(alpha=1.5)
    with pytest.raises(ValueError, match="`task` must be one of .*got 'vision'"):
        resolve_weights("vision")
    with pytest.raises(ValueError, match="Give a `task` preset"):
        resolve_weights()
    with pytest.raises(ValueError, match="`fss` must lie in \\[0, 1\\]"):
        knowledge_retention_score(1.2, 0.5, task="nlp")


def test_alpha_sensitivity_curve():
    alphas, krs = alpha_sensitivity(0.8, 0.4)
    assert len(alphas) == 101 and alphas[0] == 0 and alphas[-1] == 1
    np.testing.assert_allclose(alphas[1] - alphas[0], 0.01)
    np.testing.assert_allclose(krs, [knowledge_retention_score(0.8, 0.4, alpha=a) for a in alphas], atol=1e-12)
    with pytest.raises(ValueError, match="`step` must divide 1 evenly"):
        alpha_sensitivity(0.8, 0.4, step=0.3)


def test_compute_krs_classification_end_to_end():
    rng = np.random.default_rng(0)
    t_feat = rng.normal(size=(80, 12))
    s_feat = t_feat[:, :6] + 0.5 * rng.normal(size=(80, 6))
    t_log = rng.normal(size=(80, 3))
    s_log = t_log + 0.5 * rng.normal(size=(80, 3))
    out = compute_krs(t_feat, s_feat, t_log, s_log, task="classification")
    fss, aoag = linear_cka(t_feat, s_feat), classification_agreement(t_log, s_log)
    assert out["fss"] == pytest.approx(fss)
    assert out["aoag"] == pytest.approx(aoag)
    assert out["krs"] == pytest.approx(0.3 * fss + 0.7 * aoag)
    assert out["aoag_method"] == "kl" and out["num_examples"] == 80


def test_compute_krs_regression_and_segmentation_defaults():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(30, 4))
    y = rng.normal(size=30)
    out = compute_krs(feats, feats, y, y + 0.1, task="regression")
    assert out["aoag_method"] == "mse"
    assert out["aoag"] == pytest.approx(regression_agreement(y, y + 0.1))
    masks = rng.integers(0, 3, size=(30, 4, 4))
    seg = compute_krs(feats, feats, masks, masks, task="segmentation", scale=100)
    assert seg["aoag_method"] == "mask_iou" and seg["krs"] == pytest.approx(100.0)


def test_compute_krs_bad_options():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="`aoag_method` must be one of"):
        compute_krs(x, x, x, x, aoag_method="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`task` must be one of"):
        compute_krs(x, x, x, x, task="translation")  # type: ignore[arg-type]


@pytest.mark.parametrize("fss_method", ["linear_cka", "debiased_cka", "rbf_cka"])
def test_krs_is_unchanged_by_offsets_of_1e6_on_features_and_1e8_on_outputs(fss_method):
    rng = np.random.default_rng(11)
    grid = 2.0**20  # multiples of 2**-20: the offsets are added exactly

    def on_grid(a):
        return np.round(a * grid) / grid

    x = on_grid(rng.normal(size=(60, 5)))
    y = on_grid(x @ rng.normal(size=(5, 3)) + rng.normal(size=(60, 3)))
    t = on_grid(rng.normal(size=60))
    s = on_grid(t + 0.3 * rng.normal(size=60))
    plain = compute_krs(x, y, t, s, task="regression", fss_method=fss_method)
    offset = compute_krs(x + 1e6, y - 1e6, t + 1e8, s + 1e8, task="regression", fss_method=fss_method)
    for key in ("fss", "aoag", "krs"):
        assert offset[key] == pytest.approx(plain[key], rel=1e-9), key


# ---- issue 19 item 3: KRSAccumulator streams compute_krs; combine_krs; options validated for every task -------

from hypothesis import HealthCheck, settings  # noqa: E402

from knowledge_retention import FSS_METHODS, KRSAccumulator, combine_krs  # noqa: E402
from knowledge_retention.methods import AOAG_METHODS_BY_TASK, aoag_methods_for  # noqa: E402


def _stream_data(seed: int, n: int, task: str) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = [rng.normal(size=(n, 6)) + 3.0, rng.normal(size=(n, 5))]
    s = [t[0][:, :4] @ rng.normal(size=(4, 3)) + 0.5 * rng.normal(size=(n, 3)), np.tanh(t[1]) + 0.2 * rng.normal(size=(n, 5))]
    if task == "regression":
        out_t = rng.normal(size=(n, 2))
        out_s = out_t + 0.3 * rng.normal(size=(n, 2))
    elif task == "segmentation":
        out_t = rng.integers(0, 4, size=(n, 3, 3))
        out_s = np.where(rng.random((n, 3, 3)) < 0.7, out_t, rng.integers(0, 4, size=(n, 3, 3)))
    else:
        out_t = rng.normal(size=(n, 3))
        out_s = out_t + rng.normal(size=(n, 3))
    return t, s, out_t, out_s


def _assert_same_result(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert got[key] == value, key


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 60), max_size=4),
       task=st.sampled_from(["nlp", "classification", "regression", "segmentation"]),
       fss_method=st.sampled_from(["linear_cka", "debiased_cka", "cosine"]))
def test_krs_accumulator_equals_compute_krs_batch_by_batch(seed, cuts, task, fss_method):
    """Every prefix of the stream gives compute_krs of the rows so far (empty batches included: no-ops)."""
    n = 60
    t, s, out_t, out_s = _stream_data(seed, n, task)
    if fss_method == "cosine":
        s = [t[0][:, :6] * 0.5 + 0.1, t[1] + 0.3]
    bounds = [0, *sorted(cuts), n]
    acc = KRSAccumulator(task=task, fss_method=fss_method)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        acc.update([x[lo:hi] for x in t], [y[lo:hi] for y in s], out_t[lo:hi], out_s[lo:hi])
        if hi >= 8:
            expected = compute_krs([x[:hi] for x in t], [y[:hi] for y in s], out_t[:hi], out_s[:hi], task=task,
                                   fss_method=fss_method)
            _assert_same_result(acc.compute(), expected)
    assert acc.n == n


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(4, 56), task=st.sampled_from(["nlp", "regression", "segmentation"]))
def test_krs_accumulator_merges_halves_and_round_trips_its_state(seed, cut, task):
    t, s, out_t, out_s = _stream_data(seed, 60, task)
    first = KRSAccumulator(task=task).update([x[:cut] for x in t], [y[:cut] for y in s], out_t[:cut], out_s[:cut])
    second = KRSAccumulator(task=task).update([x[cut:] for x in t], [y[cut:] for y in s], out_t[cut:], out_s[cut:])
    expected = compute_krs(t, s, out_t, out_s, task=task)
    _assert_same_result((first + second).compute(), expected)
    merged = KRSAccumulator(task=task)
    merged += KRSAccumulator.from_state_dict(first.state_dict())
    merged += KRSAccumulator.from_state_dict(second.state_dict())
    _assert_same_result(merged.compute(), expected)
    assert merged.reset().n == 0
    with pytest.raises(InputError, match="no examples"):
        merged.compute()


def test_krs_accumulator_refuses_by_name_and_keeps_its_state():
    t, s, out_t, out_s = _stream_data(0, 40, "nlp")
    with pytest.raises(InputError, match="rbf_cka.*cannot stream"):
        KRSAccumulator(task="nlp", fss_method="rbf_cka")
    with pytest.raises(InputError, match="`max_mse`"):
        KRSAccumulator(task="nlp", max_mse=-5)
    acc = KRSAccumulator(task="nlp").update(t, s, out_t, out_s)
    before = acc.compute()
    broken = out_s.copy()
    broken[3, 1] = np.nan
    with pytest.raises(InputError, match="`student_logits` contains 1 NaN"):
        acc.update(t, s, out_t, broken)
    with pytest.raises(InputError, match="number of layers changed"):
        acc.update(t[:1], s[:1], out_t, out_s)
    with pytest.raises(InputError, match="different options: task"):
        acc += KRSAccumulator(task="classification")
    assert acc.compute() == before
    damaged = acc.state_dict()
    damaged["features"][0]["tt"] = damaged["features"][0]["tt"][:2]
    with pytest.raises(InputError, match=r"`state\['tt'\]` must have shape"):
        KRSAccumulator.from_state_dict(damaged)


def test_combine_krs_is_the_two_number_combiner_and_keeps_its_former_name():
    assert combine_krs(0.8, 0.6, task="nlp") == knowledge_retention_score(0.8, 0.6, task="nlp") == 0.7
    assert knowledge_retention_score is combine_krs


def test_float32_weights_are_accepted_to_their_own_precision():
    alpha, beta = resolve_weights(alpha=np.float32(0.3), beta=0.7)
    assert alpha + beta == pytest.approx(1.0, abs=1e-15) and alpha == pytest.approx(0.3, rel=1e-7)
    with pytest.raises(InputError, match="must equal 1"):
        resolve_weights(alpha=0.3, beta=0.7 + 1e-7)  # float64 weights: 1e-9
    with pytest.raises(InputError, match="must equal 1"):
        resolve_weights(alpha=np.float32(0.3), beta=0.71)


@pytest.mark.parametrize("task", ["nlp", "classification", "regression", "segmentation", "detection", "causal-lm"])
@pytest.mark.parametrize("option, value, match", [
    ("max_mse", -5.0, "`max_mse` must be a finite number > 0"),
    ("temperature", -1.0, "`temperature` must be a finite number > 0"),
    ("temperature", float("nan"), "`temperature` must be a finite number > 0"),
    ("inputs", "bogus", "`inputs` must be one of"),
    ("ignore_index", 1.5, "`ignore_index` must be an integer"),
    ("scale", 0.0, "`scale` must be a finite number > 0"),
    ("fss_method", "bogus", "`fss_method` must be one of"),
])
def test_every_option_is_validated_whatever_the_task(task, option, value, match):
    """The one rule (compute_krs's docstring): validated for every task, ignored only once valid."""
    t, s, out_t, out_s = _stream_data(1, 30, "nlp")
    with pytest.raises(InputError, match=match):
        compute_krs(t, s, out_t, out_s, task=task, **{option: value})
    with pytest.raises(InputError, match=match):
        KRSAccumulator(task=task, **{option: value})


def test_valid_options_a_task_does_not_use_are_ignored():
    t, s, out_t, out_s = _stream_data(2, 30, "regression")
    plain = compute_krs(t, s, out_t, out_s, task="regression")
    assert compute_krs(t, s, out_t, out_s, task="regression", temperature=3.0, inputs="probabilities",
                       ignore_index=255) == plain


def test_ignore_index_reaches_the_mask_iou_from_compute_krs():
    t, s, out_t, out_s = _stream_data(3, 30, "segmentation")
    out_t = out_t.copy()
    out_t[:, 0, 0] = 255  # a void label in the teacher's maps
    with_void = compute_krs(t, s, out_t, out_s, task="segmentation")
    without = compute_krs(t, s, out_t, out_s, task="segmentation", ignore_index=255)
    keep = out_t != 255
    from sklearn.metrics import jaccard_score

    assert without["aoag"] == pytest.approx(jaccard_score(out_t[keep], out_s[keep], average="macro"), rel=1e-12)
    assert with_void["aoag"] != without["aoag"]


def test_one_list_of_methods():
    assert set(FSS_METHODS) == {"linear_cka", "debiased_cka", "rbf_cka", "cosine"}
    assert aoag_methods_for(list(AOAG_METHODS_BY_TASK)) == ("kl", "js", "top1", "mse", "mask_iou", "box_iou")
    from knowledge_retention import cli

    assert cli.FSS_CHOICES == FSS_METHODS and cli.AOAG_CHOICES == ("kl", "js", "top1", "mse")
