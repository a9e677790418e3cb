"""Diagnostics against independent references: scikit-learn, scipy, naive loops written here."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import rel_entr, softmax
from sklearn import metrics as skm

from knowledge_retention import classification_agreement, compute_krs, feature_similarity_score, linear_cka
from knowledge_retention.diagnostics import (
    LEVELS,
    VerdictThresholds,
    accuracy_score,
    bootstrap_confidence_intervals,
    calibration_summary,
    classification_quality,
    confidence_correlation,
    correctness_breakdown,
    criterion_level,
    diagnose,
    distillation_vs_baseline,
    expected_calibration_error,
    macro_f1_score,
    mcnemar_test,
    mean_absolute_error,
    mean_kl_divergence,
    measure_latency,
    model_disk_size,
    paired_bootstrap_difference,
    parameter_count,
    quality_retained,
    r2_score,
    regression_quality,
    reliability_diagram,
    root_mean_squared_error,
    size_speed_tradeoff,
    teacher_relative_summary,
    top1_agreement,
    top_disagreements,
    tradeoff_sentence,
    verdict,
)
from knowledge_retention.diagnostics.bootstrap import _half_samples, _resample_counts

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(n: int = 200, c: int = 3, seed: int = 0, noise: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher logits, student logits (teacher + noise) and labels that mostly follow the teacher."""
    rng = np.random.default_rng(seed)
    teacher = 2.0 * rng.normal(size=(n, c))
    student = 0.8 * teacher + noise * rng.normal(size=(n, c))
    labels = np.where(rng.random(n) < 0.85, teacher.argmax(1), rng.integers(0, c, n))
    return teacher, student, labels


# --- quality ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 4, 60), rng.integers(0, 5, 60)  # class 4 only predicted, never true
    assert accuracy_score(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert macro_f1_score(y, p) == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))


@pytest.mark.parametrize("shape", [(50,), (50, 3)])
def test_regression_metrics_match_sklearn(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=shape), rng.normal(size=shape)
    assert mean_absolute_error(y, p) == pytest.approx(skm.mean_absolute_error(y, p))
    assert root_mean_squared_error(y, p) == pytest.approx(skm.root_mean_squared_error(y, p))
    assert r2_score(y, p) == pytest.approx(skm.r2_score(y, p))


def test_r2_constant_target_follows_sklearn_force_finite() -> None:
    y = np.ones(5)
    assert r2_score(y, y) == skm.r2_score(y, y) == 1.0
    assert r2_score(y, y + 1) == skm.r2_score(y, y + 1) == 0.0


def test_quality_retained_directions_and_errors() -> None:
    assert quality_retained(0.9, 0.95) == pytest.approx(0.9 / 0.95)
    assert quality_retained(0.5, 0.4, greater_is_better=False) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="teacher_score"):
        quality_retained(0.5, 0.0)
    with pytest.raises(ValueError, match="teacher_score"):
        quality_retained(0.5, -0.2)
    with pytest.raises(ValueError, match="perfect teacher"):
        quality_retained(0.5, 0.0, greater_is_better=False)
    with pytest.raises(ValueError, match="perfect student"):
        quality_retained(0.0, 0.5, greater_is_better=False)
    with pytest.raises(TypeError, match="student_score"):
        quality_retained(True, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        quality_retained(float("nan"), 0.5)


def test_classification_quality_takes_logits_or_predictions() -> None:
    teacher, student, labels = _pair()
    from_logits = classification_quality(labels, teacher, student)
    from_preds = classification_quality(labels, teacher.argmax(1), student.argmax(1))
    assert from_logits == from_preds
    assert from_logits["student"]["accuracy"] == pytest.approx(skm.accuracy_score(labels, student.argmax(1)))
    assert from_logits["retained"]["accuracy"] == pytest.approx(
        from_logits["student"]["accuracy"] / from_logits["teacher"]["accuracy"]
    )


def test_regression_quality() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=40)
    out = regression_quality(y, y + 0.1 * rng.normal(size=40), y + 0.3 * rng.normal(size=40))
    assert out["retained"]["mae"] == pytest.approx(out["teacher"]["mae"] / out["student"]["mae"])
    assert out["retained"]["r2"] == pytest.approx(out["student"]["r2"] / out["teacher"]["r2"])


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([0, -1, 1], ValueError, "negative labels"),
        ([0.5, 1, 0], TypeError, "integer class labels"),
        (["a", "b", "c"], TypeError, "integer class labels"),
        ([[0, 1, 0]], ValueError, "1-D"),
        ([0, 1], ValueError, "same examples"),
    ],
)
def test_bad_labels(labels: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        classification_quality(labels, [0, 1, 1], [0, 1, 0])


# --- teacher-relative ------------------------------------------------------------------------------


def test_mean_kl_matches_scipy_rel_entr() -> None:
    teacher, student, _ = _pair()
    reference = np.mean(np.sum(rel_entr(softmax(teacher, 1), softmax(student, 1)), axis=1))
    assert mean_kl_divergence(teacher, student) == pytest.approx(reference, rel=1e-10)
    reference_t2 = np.mean(np.sum(rel_entr(softmax(teacher / 2, 1), softmax(student / 2, 1)), axis=1))
    assert mean_kl_divergence(teacher, student, temperature=2.0) == pytest.approx(reference_t2, rel=1e-10)


def test_top1_agreement_matches_argmax() -> None:
    teacher, student, _ = _pair()
    assert top1_agreement(teacher, student) == pytest.approx(np.mean(teacher.argmax(1) == student.argmax(1)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    for i, value in enumerate(x):
        ranks[i] = np.sum(x < value) + (np.sum(x == value) + 1) / 2
    return ranks


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))


@pytest.mark.parametrize("of", ["max", "teacher_class"])
def test_confidence_correlations_match_naive_and_scipy(of: str) -> None:
    teacher, student, _ = _pair(n=60)
    p_t, p_s = softmax(teacher, 1), softmax(student, 1)
    cls = p_t.argmax(1)
    c_t, c_s = (p_t.max(1), p_s.max(1)) if of == "max" else (p_t[np.arange(60), cls], p_s[np.arange(60), cls])
    spearman = np.corrcoef(_average_ranks(c_t), _average_ranks(c_s))[0, 1]
    assert confidence_correlation(teacher, student, of=of) == pytest.approx(spearman, rel=1e-9)  # type: ignore[arg-type]
    assert confidence_correlation(teacher, student, of=of) == pytest.approx(stats.spearmanr(c_t, c_s).statistic)  # type: ignore[arg-type]
    kendall = confidence_correlation(teacher, student, method="kendall", of=of)  # type: ignore[arg-type]
    assert kendall == pytest.approx(_kendall_tau_b(c_t, c_s), rel=1e-9)
    assert kendall == pytest.approx(stats.kendalltau(c_t, c_s).statistic)


def test_confidence_correlation_refuses_constant_confidence() -> None:
    teacher = np.tile([2.0, 0.0], (5, 1))
    with pytest.raises(ValueError, match="same on every example"):
        confidence_correlation(teacher, teacher + np.arange(5)[:, None] * [1.0, 0.0])
    summary = teacher_relative_summary(teacher, teacher)
    assert summary["confidence_spearman"] is None
    assert summary["mean_kl"] == 0.0 and summary["top1_agreement"] == 1.0


def test_teacher_relative_summary_consistent_with_core() -> None:
    teacher, student, _ = _pair()
    out = teacher_relative_summary(teacher, student)
    assert out["aoag_kl"] == pytest.approx(classification_agreement(teacher, student))
    assert out["aoag_js"] == pytest.approx(classification_agreement(teacher, student, method="js"))
    assert out["mean_kl"] == pytest.approx(mean_kl_divergence(teacher, student))
    assert out["top1_agreement"] == top1_agreement(teacher, student)


def test_teacher_relative_shape_errors() -> None:
    with pytest.raises(ValueError, match="same classes"):
        mean_kl_divergence(np.ones((4, 3)) * [1, 2, 3], np.ones((4, 2)) * [1, 2])
    with pytest.raises(ValueError, match="look like probabilities"):
        top1_agreement([[0.3, 0.7]], [[0.2, 0.8]])
    with pytest.raises(ValueError, match="NaN"):
        mean_kl_divergence([[np.nan, 1.0]], [[0.0, 1.0]])


# --- calibration -----------------------------------------------------------------------------------


def _naive_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        members = [i for i in range(len(conf)) if (edges[b] < conf[i] <= edges[b + 1]) or (b == 0 and conf[i] == 0)]
        if members:
            total += len(members) / len(conf) * abs(np.mean(correct[members]) - np.mean(conf[members]))
    return total


@pytest.mark.parametrize("n_bins", [1, 5, 15, 40])
def test_ece_matches_naive_loop(n_bins: int) -> None:
    teacher, _, labels = _pair(n=300)
    ece = expected_calibration_error(teacher, labels, n_bins=n_bins)
    assert ece == pytest.approx(_naive_ece(softmax(teacher, 1), labels, n_bins), abs=1e-12)


def test_ece_on_bin_edges_and_probabilities() -> None:
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.8, 0.2], [0.2, 0.8]])  # 0.6 and 0.8 are edges of 5 bins
    labels = np.array([0, 0, 0, 1])
    ece = expected_calibration_error(probs, labels, n_bins=5, inputs="probabilities")
    assert ece == pytest.approx(_naive_ece(probs, labels, 5))


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 80),
    c=st.integers(2, 6),
    n_bins=st.integers(1, 30),
    scale=st.floats(0.01, 20.0),
)
def test_ece_in_unit_interval_and_diagram_consistent(seed: int, n: int, c: int, n_bins: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    logits, labels = scale * rng.normal(size=(n, c)), rng.integers(0, c, n)
    ece = expected_calibration_error(logits, labels, n_bins=n_bins)
    assert 0.0 <= ece <= 1.0
    d = reliability_diagram(logits, labels, n_bins=n_bins)
    assert d["count"].sum() == n
    assert np.all(np.isnan(d["accuracy"][d["count"] == 0]))
    filled = d["count"] > 0
    assert np.all((d["confidence"][filled] > d["bin_lower"][filled]) | (d["bin_lower"][filled] == 0))
    assert np.all(d["confidence"][filled] <= d["bin_upper"][filled] + 1e-12)


def test_calibration_errors() -> None:
    teacher, student, labels = _pair(n=20)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(teacher, labels, n_bins=0)
    with pytest.raises(TypeError, match="n_bins"):
        expected_calibration_error(teacher, labels, n_bins=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="predict 3 classes"):
        expected_calibration_error(teacher, np.full(20, 3))
    with pytest.raises(ValueError, match="same examples"):
        expected_calibration_error(teacher, labels[:-1])
    out = calibration_summary(teacher, student, labels, n_bins=10)
    assert out["n_bins"] == 10 and set(out) == {"n_bins", "teacher", "student"}


# --- errors ----------------------------------------------------------------------------------------


def test_correctness_breakdown_counts() -> None:
    teacher, student, labels = _pair()
    out = correctness_breakdown(labels, teacher, student)
    t_ok, s_ok = teacher.argmax(1) == labels, student.argmax(1) == labels
    assert out["counts"] == {
        "both_correct": int(np.sum(t_ok & s_ok)),
        "both_wrong": int(np.sum(~t_ok & ~s_ok)),
        "only_student_wrong": int(np.sum(t_ok & ~s_ok)),
        "only_teacher_wrong": int(np.sum(~t_ok & s_ok)),
    }
    assert sum(out["rates"].values()) == pytest.approx(1.0)


def test_top_disagreements_order_and_fields() -> None:
    teacher, student, labels = _pair(n=50)
    texts = [f"text {i}" for i in range(50)]
    indices = np.arange(1000, 1050)
    out = top_disagreements(teacher, student, k=5, labels=labels, texts=texts, indices=indices)
    kl = np.sum(rel_entr(softmax(teacher, 1), softmax(student, 1)), axis=1)
    expected_rows = np.argsort(-kl, kind="stable")[:5]
    assert [r["row"] for r in out] == expected_rows.tolist()
    assert [r["kl"] for r in out] == pytest.approx(kl[expected_rows].tolist())
    first = out[0]
    assert first["index"] == 1000 + first["row"] and first["text"] == f"text {first['row']}"
    assert first["label"] == labels[first["row"]]
    assert first["teacher_prediction"] == teacher[first["row"]].argmax()
    assert first["student_confidence"] == pytest.approx(softmax(student[first["row"]]).max())
    assert len(top_disagreements(teacher, student, k=500)) == 50
    assert top_disagreements(teacher, student, k=1)[0]["text"] is None
    with pytest.raises(ValueError, match="same examples"):
        top_disagreements(teacher, student, texts=texts[:-1])
    with pytest.raises(TypeError, match="single string"):
        top_disagreements(teacher, student, texts="hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`k`"):
        top_disagreements(teacher, student, k=0)


# --- efficiency ------------------------------------------------------------------------------------


def _write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file written from the format description (8-byte header length, JSON header, data)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def test_parameter_count_and_size_from_safetensors(tmp_path: Path) -> None:
    _write_safetensors(tmp_path / "model.safetensors", {"w": [10, 20], "b": [20], "e": [3, 4, 5]})
    (tmp_path / "config.json").write_text("{}")
    assert parameter_count(tmp_path) == 200 + 20 + 60
    assert parameter_count(tmp_path / "model.safetensors") == 280
    assert model_disk_size(tmp_path) == (tmp_path / "model.safetensors").stat().st_size


def test_parameter_count_torch_module_and_checkpoint(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    assert parameter_count(module) == 8 * 4 + 4 + 4 * 2 + 2
    module[0].weight.requires_grad_(False)
    assert parameter_count(module, trainable_only=True) == 4 + 4 * 2 + 2
    torch.save(module.state_dict(), tmp_path / "pytorch_model.bin")
    assert parameter_count(tmp_path) == 46
    assert model_disk_size(module) > 46 * 4


def test_parameter_count_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        parameter_count(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="No weight files"):
        parameter_count(tmp_path)
    with pytest.raises(TypeError, match="torch.nn.Module or a path"):
        parameter_count(3.0)


def test_measure_latency_with_a_fake_clock() -> None:
    clock = {"t": 0.0}
    durations = iter([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])  # two passes over three batches
    calls = []

    def fn(batch: list[int]) -> None:
        calls.append(len(batch))
        if len(calls) > 2:  # the two warm-up calls take no time
            clock["t"] += next(durations)

    out = measure_latency(fn, [[1, 2], [3, 4], [5, 6, 7, 8]], warmup=2, repeats=2, timer=lambda: clock["t"])
    assert calls[:2] == [2, 2] and len(calls) == 8
    assert out["seconds_per_batch"] == 2.0
    assert out["pass_seconds"] == [6.0, 6.0]
    assert out["examples_per_second"] == pytest.approx(8 / 6.0)
    with pytest.raises(ValueError, match="at least one batch"):
        measure_latency(fn, [])
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(fn, [[1]], repeats=0)
    with pytest.raises(TypeError, match="callable"):
        measure_latency(3, [[1]])  # type: ignore[arg-type]


def test_tradeoff_sentence_and_ratios() -> None:
    out = size_speed_tradeoff(quality_retained=0.97, teacher_size=110e6, student_size=66e6,
                              teacher_seconds=1.0, student_seconds=0.5, quality_name="accuracy")
    assert out["size_ratio"] == pytest.approx(0.6) and out["speedup"] == pytest.approx(2.0)
    assert out["sentence"] == "97.0% of the teacher's accuracy at 60.0% of its size and 2.00× its speed"
    assert tradeoff_sentence(0.9) == "90.0% of the teacher's quality"
    assert tradeoff_sentence(speedup=3.0) == "3.00× the teacher's speed"
    with pytest.raises(ValueError, match="teacher_size"):
        size_speed_tradeoff(teacher_size=0, student_size=1)


# --- comparison ------------------------------------------------------------------------------------


def _exact_mcnemar(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 0), (5, 5), (9, 2), (1, 12), (30, 45)])
def test_mcnemar_matches_exact_binomial(only_a: int, only_b: int) -> None:
    a = [1] * only_a + [0] * only_b + [1] * 7 + [0] * 3
    b = [0] * only_a + [1] * only_b + [1] * 7 + [0] * 3
    out = mcnemar_test(a, b)
    assert (out["only_a_correct"], out["only_b_correct"]) == (only_a, only_b)
    assert out["p_value"] == pytest.approx(_exact_mcnemar(only_a, only_b), rel=1e-9)


def test_mcnemar_errors() -> None:
    with pytest.raises(ValueError, match="booleans or 0/1"):
        mcnemar_test([0, 2], [1, 1])
    with pytest.raises(ValueError, match="same examples"):
        mcnemar_test([0, 1], [1])


def test_distillation_vs_baseline() -> None:
    out = distillation_vs_baseline(distilled_krs=0.8, baseline_krs=0.7, distilled_quality=0.9, baseline_quality=0.9)
    assert out["krs"]["delta"] == pytest.approx(0.1) and out["krs"]["distillation_better"]
    assert not out["quality"]["distillation_better"]  # a tie is not a win
    assert out["distillation_better_on_both"] is False
    errors = distillation_vs_baseline(distilled_krs=0.8, baseline_krs=0.7, distilled_quality=0.2,
                                      baseline_quality=0.3, greater_is_better=False)
    assert errors["quality"]["distillation_better"] and errors["distillation_better_on_both"]
    assert distillation_vs_baseline(distilled_krs=0.5, baseline_krs=0.6)["quality"] is None
    with pytest.raises(ValueError, match="both"):
        distillation_vs_baseline(distilled_krs=0.5, baseline_krs=0.6, distilled_quality=0.9)


# --- bootstrap -------------------------------------------------------------------------------------


def _features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 6))
    return t, t @ rng.normal(size=(6, 5)) + 0.5 * rng.normal(size=(n, 5))


def test_bootstrap_point_estimates_equal_the_core() -> None:
    teacher, student, labels = _pair(n=120)
    t_feat, s_feat = _features(120)
    out = bootstrap_confidence_intervals(teacher, student, labels=labels, teacher_features=t_feat,
                                         student_features=s_feat, task="nlp", n_resamples=50, n_feature_resamples=20)
    core = compute_krs(t_feat, s_feat, teacher, student, task="nlp")
    ci = out["intervals"]
    assert ci["aoag"]["estimate"] == pytest.approx(core["aoag"])
    assert ci["fss"]["estimate"] == pytest.approx(core["fss"])
    assert ci["krs"]["estimate"] == pytest.approx(core["krs"])
    assert ci["mean_kl"]["estimate"] == pytest.approx(mean_kl_divergence(teacher, student))
    acc_t, acc_s = np.mean(teacher.argmax(1) == labels), np.mean(student.argmax(1) == labels)
    assert ci["accuracy_retention"]["estimate"] == pytest.approx(acc_s / acc_t)
    assert ci["fss"]["n_resamples"] == 20 and ci["aoag"]["n_resamples"] == 50
    for name in ("aoag", "js"):
        method = "kl" if name == "aoag" else name
        est = bootstrap_confidence_intervals(teacher, student, aoag_method=method, n_resamples=5)["intervals"]["aoag"]
        assert est["estimate"] == pytest.approx(classification_agreement(teacher, student, method=method))


def test_bootstrap_is_seeded() -> None:
    teacher, student, labels = _pair(n=80)
    a = bootstrap_confidence_intervals(teacher, student, labels=labels, n_resamples=100, seed=3)
    b = bootstrap_confidence_intervals(teacher, student, labels=labels, n_resamples=100, seed=3)
    c = bootstrap_confidence_intervals(teacher, student, labels=labels, n_resamples=100, seed=4)
    assert a == b
    assert a["intervals"]["aoag"]["low"] != c["intervals"]["aoag"]["low"]


def test_resampling_weights() -> None:
    rng = np.random.default_rng(0)
    counts = np.concatenate(list(_resample_counts(37, 120, rng)))
    assert counts.shape == (120, 37) and np.all(counts.sum(1) == 37)
    halves = np.concatenate(list(_half_samples(37, 60, rng)))
    assert halves.shape == (60, 37) and np.all(halves.sum(1) == 18) and set(np.unique(halves)) <= {0, 1}


def test_multiplicity_weights_equal_resampled_rows() -> None:
    t, s = _features(50)
    counts = next(_resample_counts(50, 1, np.random.default_rng(1)))[0]
    from knowledge_retention.similarity import LinearCKAAccumulator

    weighted = LinearCKAAccumulator().update(t, s, sample_weight=counts).compute()
    assert weighted == pytest.approx(linear_cka(np.repeat(t, counts, axis=0), np.repeat(s, counts, axis=0)), rel=1e-10)


@FAST
@given(seed=st.integers(0, 10_000), noise=st.floats(0.1, 2.0))
def test_bootstrap_interval_contains_estimate(seed: int, noise: float) -> None:
    teacher, student, labels = _pair(n=300, seed=seed, noise=noise)
    out = bootstrap_confidence_intervals(teacher, student, labels=labels, n_resamples=200, seed=seed)
    for name, ci in out["intervals"].items():
        assert ci["low"] <= ci["estimate"] <= ci["high"], name
        assert ci["n_valid"] == 200


def test_half_sampling_avoids_the_tie_bias_of_the_bootstrap_for_cka() -> None:
    # Duplicated rows in a bootstrap resample inflate CKA when the width is not small against N.
    rng = np.random.default_rng(0)
    t = rng.normal(size=(120, 60))
    s = 0.3 * t[:, :30] @ rng.normal(size=(30, 40)) / np.sqrt(30) + rng.normal(size=(120, 40))
    logits_t, logits_s = rng.normal(size=(120, 2)), rng.normal(size=(120, 2))
    shift = {}
    for mode in ("bootstrap", "half"):
        ci = bootstrap_confidence_intervals(
            logits_t, logits_s, teacher_features=t, student_features=s, fss_method="debiased_cka", n_resamples=5,
            n_feature_resamples=40, feature_resampling=mode,  # type: ignore[arg-type]
        )["intervals"]["fss"]
        shift[mode] = ci["replicate_mean"] - ci["estimate"]
        if mode == "half":
            assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert shift["bootstrap"] > 0.1
    assert abs(shift["half"]) < 0.02


@pytest.mark.parametrize("mode", ["half", "bootstrap"])
def test_gram_space_replicates_equal_the_feature_space_accumulator(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Gram-space path (few thousand examples) gives every replicate's CKA of the accumulator with
    those multiplicities, also at a mean offset of 1e3, and the same intervals as the per-replicate path."""
    from knowledge_retention.diagnostics import bootstrap as bs
    from knowledge_retention.similarity import LinearCKAAccumulator

    rng = np.random.default_rng(5)
    t = rng.normal(size=(301, 48)) + 1e3
    s = t[:, :20] @ rng.normal(size=(20, 24)) + 2.0 * rng.normal(size=(301, 24)) - 50.0
    draw = bs._half_samples if mode == "half" else bs._resample_counts
    weights = np.concatenate(list(draw(301, 60, rng)))
    got = bs._gram_linear_cka(t, s, weights)
    want = [LinearCKAAccumulator().update(t[w > 0], s[w > 0], sample_weight=w[w > 0]).compute() for w in weights]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.isnan(bs._gram_linear_cka(np.ones((301, 3)), s, weights[:2])).all()  # constant features
    assert bs._gram_path_is_cheaper(872, [(384, 384)], 200, debiased=False)
    assert not bs._gram_path_is_cheaper(872, [(384, 384)], 200, debiased=True)
    assert not bs._gram_path_is_cheaper(200_000, [(384, 384)], 200, debiased=False)  # linear beyond
    logits_t, logits_s = rng.normal(size=(301, 2)), rng.normal(size=(301, 2))
    kwargs = dict(teacher_features=t, student_features=s, n_resamples=30, n_feature_resamples=60,
                  feature_resampling=mode, seed=1)
    gram = bootstrap_confidence_intervals(logits_t, logits_s, **kwargs)["intervals"]  # type: ignore[arg-type]
    monkeypatch.setattr(bs, "_gram_path_is_cheaper", lambda *a, **k: False)
    feature = bootstrap_confidence_intervals(logits_t, logits_s, **kwargs)["intervals"]  # type: ignore[arg-type]
    for key in ("fss", "krs"):
        for end in ("low", "high", "replicate_mean"):
            assert gram[key][end] == pytest.approx(feature[key][end], abs=1e-12), (key, end)


def test_bootstrap_without_features_or_labels_says_so() -> None:
    teacher, student, _ = _pair(n=40)
    out = bootstrap_confidence_intervals(teacher, student, n_resamples=20)
    assert set(out["intervals"]) == {"aoag", "mean_kl", "top1_agreement"}
    assert any("No per-example features" in n for n in out["notes"])
    assert any("No labels" in n for n in out["notes"])
    t_feat, s_feat = _features(40)
    cos = bootstrap_confidence_intervals(teacher, student, teacher_features=t_feat, student_features=t_feat + 1,
                                         fss_method="cosine", n_resamples=5)
    assert "fss" not in cos["intervals"] and any("cosine" in n for n in cos["notes"])
    layered = bootstrap_confidence_intervals(teacher, student, teacher_features=[t_feat, t_feat],
                                             student_features=[s_feat, s_feat], n_resamples=5, n_feature_resamples=5)
    assert layered["intervals"]["fss"]["estimate"] == pytest.approx(feature_similarity_score(t_feat, s_feat))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"aoag_method": "mse"}, ValueError, "classification logits"),
        ({"confidence_level": 1.0}, ValueError, "strictly between"),
        ({"n_resamples": 0}, ValueError, "n_resamples"),
        ({"feature_resampling": "jackknife"}, ValueError, "feature_resampling"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"teacher_features": np.ones((40, 3))}, ValueError, "or none of them"),
        ({"teacher_features": np.zeros((39, 3)), "student_features": np.zeros((39, 3))}, ValueError, "39 rows"),
        ({"labels": np.zeros(39, dtype=int)}, ValueError, "same examples"),
        ({"task": "vision"}, ValueError, "task"),
    ],
)
def test_bootstrap_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    teacher, student, _ = _pair(n=40)
    with pytest.raises(error, match=match):
        bootstrap_confidence_intervals(teacher, student, n_resamples=kwargs.pop("n_resamples", 5), **kwargs)  # type: ignore[arg-type]


def test_paired_bootstrap_difference() -> None:
    teacher, good, labels = _pair(n=200, noise=0.3)
    _, bad, _ = _pair(n=200, noise=2.0)
    t_feat, s_feat = _features(200)
    out = paired_bootstrap_difference(teacher, bad, good, labels=labels, teacher_features=t_feat,
                                      student_a_features=s_feat + np.random.default_rng(9).normal(size=s_feat.shape),
                                      student_b_features=s_feat, n_resamples=200, n_feature_resamples=20)
    d = out["differences"]
    assert d["aoag"]["difference"] == pytest.approx(d["aoag"]["b"] - d["aoag"]["a"])
    assert d["aoag"]["a"] == pytest.approx(classification_agreement(teacher, bad))
    assert d["aoag"]["low"] > 0 and d["aoag"]["excludes_zero"]
    assert d["mean_kl"]["high"] < 0
    assert {"fss", "krs", "student_accuracy"} <= set(d)
    correct_a, correct_b = bad.argmax(1) == labels, good.argmax(1) == labels
    assert out["mcnemar"] == mcnemar_test(correct_a, correct_b)
    same = paired_bootstrap_difference(teacher, good, good, n_resamples=50)
    assert same["differences"]["aoag"]["low"] == same["differences"]["aoag"]["high"] == 0.0
    assert same["mcnemar"] is None


# --- verdict ---------------------------------------------------------------------------------------


def test_verdict_levels_and_decider() -> None:
    assert verdict(accuracy_retention=0.995, krs=0.9, mean_kl=0.01)["level"] == "excellent"
    out = verdict(accuracy_retention=0.98, krs=0.9, mean_kl=0.01)
    assert (out["level"], out["decided_by"], out["threshold"], out["next_threshold"]) == ("good", "accuracy_retention", 0.97, 0.99)
    weak = verdict(krs=0.9, mean_kl=0.5)
    assert (weak["level"], weak["decided_by"], weak["threshold"], weak["comparison"]) == ("weak", "mean_kl", 0.35, "<=")
    assert "misses" in weak["reason"]
    tie = verdict(accuracy_retention=0.95, krs=0.6)  # both acceptable: the first criterion decides
    assert tie["decided_by"] == "accuracy_retention"
    assert verdict(krs=0.86)["criteria"].keys() == {"krs"}
    assert verdict(mean_kl=0.05)["level"] == "excellent"  # bars are inclusive


def test_verdict_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        verdict()
    with pytest.raises(ValueError, match="finite"):
        verdict(krs=float("nan"))
    with pytest.raises(TypeError, match="VerdictThresholds"):
        verdict(krs=0.5, thresholds={"krs": (1, 2, 3)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="descending"):
        VerdictThresholds(krs=(0.5, 0.7, 0.9))
    with pytest.raises(ValueError, match="ascending"):
        VerdictThresholds(mean_kl=(0.3, 0.2, 0.1))
    with pytest.raises(ValueError, match="3 numbers"):
        VerdictThresholds(accuracy_retention=(0.99, 0.97))  # type: ignore[arg-type]


_bars = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).map(lambda v: tuple(sorted(v, reverse=True)))


@FAST
@given(
    acc=st.floats(0.5, 1.1), krs=st.floats(0.0, 1.0), kl=st.floats(0.0, 1.0),
    bars_acc=_bars, bars_krs=_bars, bars_kl=_bars.map(lambda v: tuple(reversed(v))), tighten=st.floats(0.0, 0.3),
)
def test_verdict_monotone_in_thresholds(acc: float, krs: float, kl: float, bars_acc: tuple[float, float, float],
                                        bars_krs: tuple[float, float, float], bars_kl: tuple[float, float, float],
                                        tighten: float) -> None:
    loose = VerdictThresholds(accuracy_retention=bars_acc, krs=bars_krs, mean_kl=bars_kl)
    strict = VerdictThresholds(
        accuracy_retention=tuple(b + tighten for b in bars_acc),  # type: ignore[arg-type]
        krs=tuple(b + tighten for b in bars_krs),  # type: ignore[arg-type]
        mean_kl=tuple(max(0.0, b - tighten) for b in bars_kl),  # type: ignore[arg-type]
    )
    a = verdict(accuracy_retention=acc, krs=krs, mean_kl=kl, thresholds=loose)
    b = verdict(accuracy_retention=acc, krs=krs, mean_kl=kl, thresholds=strict)
    assert LEVELS.index(b["level"]) >= LEVELS.index(a["level"])
    assert LEVELS.index(a["level"]) == max(LEVELS.index(c["level"]) for c in a["criteria"].values())
    assert criterion_level(krs, bars_krs, greater_is_better=True) == a["criteria"]["krs"]["level"]


# --- diagnose --------------------------------------------------------------------------------------


def test_diagnose_with_and_without_labels() -> None:
    teacher, student, labels = _pair(n=60)
    full = diagnose(teacher, student, labels=labels, texts=[str(i) for i in range(60)], top_k=3)
    assert full["quality"] and full["calibration"] and full["errors"]["breakdown"]
    assert len(full["errors"]["top_disagreements"]) == 3 and full["num_examples"] == 60
    monitoring = diagnose(teacher, student)
    assert monitoring["quality"] is None and monitoring["calibration"] is None
    assert monitoring["errors"]["breakdown"] is None and monitoring["agreement"]["mean_kl"] > 0
    assert any("No gold labels" in n for n in monitoring["notes"])
    regression = diagnose(teacher[:, 0], student[:, 0], labels=teacher[:, 0] + 0.1, task="regression")
    assert regression["quality"]["teacher"]["mae"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="task"):
        diagnose(teacher, student, task="detection")
