"""Comparing students: distillation against plain fine-tuning, and McNemar's test on correctness.

:func:`distillation_vs_baseline` answers "did distillation beat fine-tuning the same student on the
labels alone?" on task quality and on KRS, with the deltas.  :func:`mcnemar_test` is the exact
(binomial) McNemar test on the examples where exactly one of two models is right: under the null
hypothesis that both models are equally accurate, each such example is equally likely to favour
either model, so :math:`n_{A} \\sim \\mathrm{Binomial}(n_{A} + n_{B}, 1/2)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

from .._validation import ArrayLike, InputError, InputTypeError, to_numpy
from ._inputs import check_lengths


def _as_correct(value: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.ndim != 1:
        raise InputError(f"`{name}` must be a 1-D array of per-example correctness (N,), got shape {array.shape}.")
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind not in "iuf" or not np.all(np.isin(array, (0, 1))):
        raise InputError(f"`{name}` must hold booleans or 0/1 (was each example predicted correctly?).")
    return array.astype(bool)


def mcnemar_test(correct_a: ArrayLike, correct_b: ArrayLike) -> dict[str, Any]:
    """Exact McNemar test: do two models, scored on the same examples, differ in accuracy?

    Args:
        correct_a: ``(N,)`` booleans (or 0/1): model A right on example i.
        correct_b: ``(N,)`` booleans for model B on the same examples.

    Returns:
        ``only_a_correct`` and ``only_b_correct`` (the discordant counts), ``num_discordant`` and the
        two-sided ``p_value`` of ``scipy.stats.binomtest(only_a_correct, num_discordant, 0.5)`` (1.0
        when no example is discordant); lower p means stronger evidence of a difference.

    Example:
        >>> out = mcnemar_test([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0])
        >>> out["only_a_correct"], round(out["p_value"], 4)
        (6, 0.0312)
    """
    a = _as_correct(correct_a, "correct_a")
    b = _as_correct(correct_b, "correct_b")
    check_lengths([("correct_a", len(a)), ("correct_b", len(b))])
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "num_discordant": discordant, "p_value": p_value}


def _number(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not np.isfinite(value):
        raise InputError(f"`{name}` must be finite, got {value}.")
    return float(value)


def distillation_vs_baseline(
    *,
    distilled_krs: float,
    baseline_krs: float,
    distilled_quality: float | None = None,
    baseline_quality: float | None = None,
    quality_name: str = "accuracy",
    greater_is_better: bool = True,
) -> dict[str, Any]:
    """Did the distilled student beat the same student fine-tuned on labels only?

    Args:
        distilled_krs: KRS of the distilled student.
        baseline_krs: KRS of the plain fine-tuned student (same teacher, same data).
        distilled_quality: the distilled student's task quality (e.g. accuracy); optional.
        baseline_quality: the baseline's, same metric; give both or neither.
        quality_name: the metric's name, recorded.
        greater_is_better: direction of the quality metric (False for errors).

    Returns:
        ``{"krs": {...}, "quality": {...} or None, "distillation_better_on_both": bool or None}``; each
        entry holds ``distilled``, ``baseline``, ``delta`` (distilled - baseline) and ``distillation_better``
        (strictly better in the metric's direction; a tie is not a win).

    Example:
        >>> out = distillation_vs_baseline(distilled_krs=0.82, baseline_krs=0.74,
        ...                                distilled_quality=0.90, baseline_quality=0.91)
        >>> out["krs"]["distillation_better"], out["quality"]["distillation_better"]
        (True, False)
    """
    d_krs = _number(distilled_krs, "distilled_krs")
    b_krs = _number(baseline_krs, "baseline_krs")
    out: dict[str, Any] = {
        "krs": {"distilled": d_krs, "baseline": b_krs, "delta": d_krs - b_krs, "distillation_better": d_krs > b_krs},
        "quality": None,
        "distillation_better_on_both": None,
    }
    if (distilled_quality is None) != (baseline_quality is None):
        raise InputError("Give both `distilled_quality` and `baseline_quality`, or neither.")
    if distilled_quality is not None and baseline_quality is not None:
        d_q = _number(distilled_quality, "distilled_quality")
        b_q = _number(baseline_quality, "baseline_quality")
        better = d_q > b_q if greater_is_better else d_q < b_q
        out["quality"] = {
            "name": quality_name,
            "greater_is_better": greater_is_better,
            "distilled": d_q,
            "baseline": b_q,
            "delta": d_q - b_q,
            "distillation_better": better,
        }
        out["distillation_better_on_both"] = bool(better and out["krs"]["distillation_better"])
    return out
