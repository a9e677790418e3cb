"""Named verdict presets (issue 23): the article's rule exactly, on a grid with its boundaries; bands; warning."""

from __future__ import annotations

import itertools

import pytest

from knowledge_retention._validation import InputError, InputTypeError
from knowledge_retention.diagnostics import (
    LEVELS,
    PRESETS,
    VerdictThresholds,
    article_band,
    only_student_wrong_warning,
    verdict,
    verdicts_by_preset,
)


def _article_rule(retention: float, kl: float) -> str:
    """The article's rule, written out as it reads (strict inequalities, retention and KL jointly)."""
    if retention > 0.95 and kl < 0.1:
        return "excellent"
    if retention > 0.92 and kl < 0.3:
        return "good"
    if retention > 0.90:
        return "acceptable"
    return "weak"


_RETENTIONS = (0.5, 0.85, 0.8999, 0.90, 0.9001, 0.91, 0.92, 0.9200001, 0.93, 0.95, 0.9500001, 0.97, 1.0, 1.05)
_KLS = (0.0, 0.01, 0.0999, 0.1, 0.1001, 0.2, 0.2999, 0.3, 0.3001, 0.5, 2.0)


@pytest.mark.parametrize(("retention", "kl"), list(itertools.product(_RETENTIONS, _KLS)))
def test_article_preset_is_the_article_rule(retention: float, kl: float) -> None:
    out = verdict(accuracy_retention=retention, mean_kl=kl, thresholds="article")
    assert out["level"] == _article_rule(retention, kl)
    assert out["preset"] == "article"
    # KRS plays no part in the article's rule
    assert verdict(accuracy_retention=retention, mean_kl=kl, krs=0.01, thresholds="article")["level"] == out["level"]


def test_article_preset_boundaries_and_rule_text() -> None:
    assert verdict(accuracy_retention=0.95, mean_kl=0.0, thresholds="article")["level"] == "good"  # > 0.95, not >=
    assert verdict(accuracy_retention=0.96, mean_kl=0.1, thresholds="article")["level"] == "good"  # < 0.1, not <=
    assert verdict(accuracy_retention=0.96, mean_kl=0.3, thresholds="article")["level"] == "acceptable"
    assert verdict(accuracy_retention=0.90, mean_kl=0.0, thresholds="article")["level"] == "weak"
    out = verdict(accuracy_retention=0.9425, mean_kl=0.051, thresholds="article")
    assert (out["level"], out["decided_by"], out["comparison"], out["threshold"]) == ("good", "accuracy_retention", ">", 0.92)
    rule = VerdictThresholds.preset("article").rule()
    assert rule.startswith("excellent: accuracy_retention > 0.95 and mean_kl < 0.1; good: accuracy_retention > 0.92 "
                           "and mean_kl < 0.3; acceptable: accuracy_retention > 0.9; weak otherwise")
    # without gold labels the article's rule gives no verdict, and says why (never a silent level)
    none = verdict(mean_kl=0.01, krs=0.9, thresholds="article")
    assert none["level"] is None and "accuracy_retention" in none["reason"] and "gold labels" in none["reason"]


def test_presets_and_custom_thresholds() -> None:
    assert PRESETS == ("default", "article", "safety-critical", "cost-sensitive")
    default = VerdictThresholds.preset("default")
    assert (default.accuracy_retention, default.krs, default.mean_kl) == (
        VerdictThresholds().accuracy_retention, VerdictThresholds().krs, VerdictThresholds().mean_kl)
    assert verdict(accuracy_retention=0.985, krs=0.9, mean_kl=0.2, thresholds="default")["level"] == \
        verdict(accuracy_retention=0.985, krs=0.9, mean_kl=0.2)["level"] == "acceptable"
    # the safety-critical bar is the article's 98 %: 0.975 is weak there, acceptable or better elsewhere
    by = verdicts_by_preset(accuracy_retention=0.975, krs=0.9, mean_kl=0.01)
    assert list(by) == list(PRESETS)
    assert by["safety-critical"]["level"] == "weak" and by["cost-sensitive"]["level"] == "excellent"
    for name in PRESETS:
        assert VerdictThresholds.preset(name).name == name
    custom = VerdictThresholds(krs=(0.9, 0.8, 0.6), accuracy_retention=None, mean_kl=None)
    out = verdict(accuracy_retention=0.5, krs=0.85, mean_kl=9.0, thresholds=custom)
    assert (out["level"], out["preset"], set(out["criteria"])) == ("good", "custom", {"krs"})
    with pytest.raises(InputError, match="preset must be one of"):
        VerdictThresholds.preset("strict")
    with pytest.raises(InputError, match="preset must be one of"):
        verdict(krs=0.5, thresholds="articel")
    with pytest.raises(InputTypeError, match="VerdictThresholds"):
        verdict(krs=0.5, thresholds=3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="required"):
        VerdictThresholds(required=("accuracy",))


@pytest.mark.parametrize(("measure", "value", "band"), [
    ("mean_kl", 0.0, "excellent"), ("mean_kl", 0.0499, "excellent"), ("mean_kl", 0.05, "very good"),
    ("mean_kl", 0.0999, "very good"), ("mean_kl", 0.1, "acceptable"), ("mean_kl", 0.5, "acceptable"),
    ("mean_kl", 0.5001, "weak"),
    ("confidence_spearman", 0.69, "divergent"), ("confidence_spearman", 0.7, "between excellent and divergent"),
    ("confidence_spearman", 0.9, "between excellent and divergent"), ("confidence_spearman", 0.9001, "excellent"),
    ("ece", 0.049, "well calibrated"), ("ece", 0.05, "between well and poorly calibrated"),
    ("ece", 0.1, "between well and poorly calibrated"), ("ece", 0.1001, "poorly calibrated"),
    ("accuracy_retention", 0.90, "weak"), ("accuracy_retention", 0.9001, "acceptable"),
    ("accuracy_retention", 0.92, "acceptable"), ("accuracy_retention", 0.95, "good"),
    ("accuracy_retention", 0.9501, "excellent"),
])
def test_article_bands(measure: str, value: float, band: str) -> None:
    assert article_band(measure, value) == band


def test_article_band_of_retention_matches_the_article_verdict_with_no_kl_penalty() -> None:
    for retention in _RETENTIONS:
        assert article_band("accuracy_retention", retention) == _article_rule(retention, 0.0)
    assert article_band("ece", None) is None
    with pytest.raises(InputError, match="measure"):
        article_band("krs", 0.5)


def test_only_student_wrong_warning() -> None:
    assert only_student_wrong_warning(0.05) is None  # "more than 5 %"
    assert only_student_wrong_warning(None) is None
    warning = only_student_wrong_warning(0.0791)
    assert warning is not None and warning["code"] == "only_student_wrong" and warning["rate"] == 0.0791
    assert "7.9%" in warning["message"] and len(warning["remedies"]) == 4
    assert any("temperature" in r for r in warning["remedies"]) and any("larger student" in r for r in warning["remedies"])
    assert set(LEVELS) == {"excellent", "good", "acceptable", "weak"}
