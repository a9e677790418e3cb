"""Diagnostics of a distilled student beyond the KRS: pure functions, arrays in, numbers and dicts out.

=====================  ===========================================================================
module                 what it holds
=====================  ===========================================================================
``quality``            accuracy, macro-F1, MAE, RMSE, R² against gold labels; ``quality_retained``
``teacher_relative``   mean KL(teacher ‖ student), top-1 agreement, confidence rank correlations
``calibration``        expected calibration error and reliability-diagram data
``errors``             both right / both wrong / only one wrong; the top-k disagreements by KL
``efficiency``         parameter count, on-disk size, latency, the size/speed trade-off sentence
``comparison``         distillation vs plain fine-tuning; exact McNemar test
``bootstrap``          percentile bootstrap intervals (KRS, FSS, AOAg, accuracy retention) and
                       paired differences of two students
``verdict``            excellent / good / acceptable / weak from named presets or your own thresholds
``summary``            ``diagnose``: every output diagnostic the inputs allow, in one dict
=====================  ===========================================================================

Every formula of the KRS itself (KL, agreement, CKA, α/β weighting) comes from
:mod:`knowledge_retention.agreement`, :mod:`knowledge_retention.similarity` and
:mod:`knowledge_retention.score`; nothing here re-derives it.
"""

from __future__ import annotations

from .bootstrap import bootstrap_confidence_intervals, paired_bootstrap_difference
from .calibration import (
    calibration_summary,
    ece_from_reliability,
    expected_calibration_error,
    reliability_diagram,
)
from .comparison import distillation_vs_baseline, mcnemar_test
from .efficiency import (
    measure_latency,
    model_disk_size,
    parameter_count,
    size_speed_tradeoff,
    tradeoff_sentence,
)
from .errors import correctness_breakdown, top_disagreements
from .pareto import pareto_front
from .quality import (
    accuracy_score,
    classification_quality,
    macro_f1_score,
    mean_absolute_error,
    quality_retained,
    r2_score,
    regression_quality,
    root_mean_squared_error,
)
from .summary import diagnose
from .teacher_relative import (
    confidence_correlation,
    mean_kl_divergence,
    model_confidences,
    teacher_relative_summary,
    top1_agreement,
)
from .verdict import (
    LEVELS,
    PRESETS,
    VerdictThresholds,
    article_band,
    criterion_level,
    only_student_wrong_warning,
    verdict,
    verdicts_by_preset,
)

__all__ = [
    "LEVELS",
    "PRESETS",
    "VerdictThresholds",
    "accuracy_score",
    "article_band",
    "bootstrap_confidence_intervals",
    "calibration_summary",
    "classification_quality",
    "confidence_correlation",
    "correctness_breakdown",
    "criterion_level",
    "diagnose",
    "distillation_vs_baseline",
    "ece_from_reliability",
    "expected_calibration_error",
    "macro_f1_score",
    "mcnemar_test",
    "mean_absolute_error",
    "mean_kl_divergence",
    "measure_latency",
    "model_confidences",
    "model_disk_size",
    "only_student_wrong_warning",
    "paired_bootstrap_difference",
    "parameter_count",
    "pareto_front",
    "quality_retained",
    "r2_score",
    "reliability_diagram",
    "regression_quality",
    "root_mean_squared_error",
    "size_speed_tradeoff",
    "teacher_relative_summary",
    "top1_agreement",
    "top_disagreements",
    "tradeoff_sentence",
    "verdict",
    "verdicts_by_preset",
]
