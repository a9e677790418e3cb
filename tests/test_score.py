"""KRS combination, presets, alpha sensitivity and the array-level entry point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knowledge_retention import (
    TASK_PRESETS,
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
