r"""How the student's outputs relate to the teacher's, with no gold labels needed (monitoring).

* :func:`mean_kl_divergence` :math:`= \frac1N\sum_i \mathrm{KL}(p^T_i \Vert p^S_i)` (nats), from
  :func:`knowledge_retention.agreement.per_example_kl`;
* :func:`top1_agreement`: share of examples where both models predict the same class
  (:func:`knowledge_retention.agreement.classification_agreement` with ``method="top1"``);
* :func:`confidence_correlation`: Spearman's :math:`\rho` or Kendall's :math:`\tau_b` between the two
  models' per-example confidences, by default the maximum softmax probability
  :math:`c_i = \max_k p_{ik}`; with ``of="teacher_class"`` the probability each model gives to the
  class the *teacher* predicts, :math:`c_i = p_{i,\hat y^T_i}`.  A high correlation means the student
  is unsure where the teacher is unsure.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats

from .._validation import ArrayLike, InputError, check_choice
from ..agreement import (
    ClassificationAgreementAccumulator,
    InputKind,
    classification_agreement,
    per_example_kl,
)
from ._inputs import probabilities

CorrelationMethod = Literal["spearman", "kendall"]
ConfidenceOf = Literal["max", "teacher_class"]


def mean_kl_divergence(
    teacher_logits: ArrayLike, student_logits: ArrayLike, *, temperature: float = 1.0, inputs: InputKind = "logits"
) -> float:
    r"""Batch mean of :math:`\mathrm{KL}(p^T_i \Vert p^S_i)` in nats.

    Args:
        teacher_logits: ``(N, C)`` teacher logits (or probabilities with ``inputs="probabilities"``).
        student_logits: ``(N, C)`` student logits.
        temperature: softmax temperature T > 0 applied to both.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        Mean KL in [0, inf); lower is better, 0 is best (identical predictive distributions).

    Example:
        >>> mean_kl_divergence([[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 2.0]])
        0.0
    """
    return float(np.mean(per_example_kl(teacher_logits, student_logits, temperature=temperature, inputs=inputs)))


def top1_agreement(
    teacher_logits: ArrayLike, student_logits: ArrayLike, *, inputs: InputKind = "logits"
) -> float:
    """Share of examples where the student's argmax equals the teacher's, in [0, 1]; higher is better.

    Example:
        >>> top1_agreement([[2.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [3.0, 0.0]])
        0.5
    """
    return classification_agreement(teacher_logits, student_logits, method="top1", inputs=inputs)


def model_confidences(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    *,
    of: ConfidenceOf = "max",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example confidences of both models, two ``(N,)`` arrays in [0, 1].

    ``of="max"``: each model's maximum softmax probability; ``of="teacher_class"``: the probability
    each model gives to the teacher's predicted class.
    """
    check_choice(of, "of", ("max", "teacher_class"))
    p_t = probabilities(teacher_logits, "teacher_logits", temperature=temperature, inputs=inputs)
    p_s = probabilities(student_logits, "student_logits", temperature=temperature, inputs=inputs)
    if p_t.shape != p_s.shape:
        raise InputError(
            f"`teacher_logits` and `student_logits` must have the same shape (N, C), got {p_t.shape} and {p_s.shape}."
        )
    if of == "max":
        return p_t.max(axis=1), p_s.max(axis=1)
    rows = np.arange(p_t.shape[0])
    cls = np.argmax(p_t, axis=1)
    return p_t[rows, cls], p_s[rows, cls]


def confidence_correlation(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    *,
    method: CorrelationMethod = "spearman",
    of: ConfidenceOf = "max",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> float:
    r"""Rank correlation of the teacher's and the student's per-example confidences.

    Spearman's :math:`\rho` (Pearson correlation of average ranks) or Kendall's :math:`\tau_b`
    (ties corrected), both from :mod:`scipy.stats`.

    Args:
        teacher_logits: ``(N, C)`` teacher logits, N >= 2.
        student_logits: ``(N, C)`` student logits.
        method: ``"spearman"`` or ``"kendall"``.
        of: ``"max"`` (max softmax probability) or ``"teacher_class"`` (probability of the teacher's class).
        temperature: softmax temperature.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        Correlation in [-1, 1]; higher is better, 1 = the student ranks examples by confidence
        exactly as the teacher does.

    Raises:
        ValueError: fewer than 2 examples, or a model whose confidence is the same on every example
            (a rank correlation is undefined then).

    Example:
        >>> t = [[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]]
        >>> confidence_correlation(t, [[2.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
        1.0
    """
    check_choice(method, "method", ("spearman", "kendall"))
    c_t, c_s = model_confidences(teacher_logits, student_logits, of=of, temperature=temperature, inputs=inputs)
    if c_t.shape[0] < 2:
        raise InputError(f"A correlation needs at least 2 examples, got {c_t.shape[0]}.")
    for name, c in (("teacher", c_t), ("student", c_s)):
        if np.all(c == c[0]):
            raise InputError(f"The {name}'s confidence is the same on every example: the rank correlation is undefined.")
    result = stats.spearmanr(c_t, c_s) if method == "spearman" else stats.kendalltau(c_t, c_s)
    return float(result.statistic)


def teacher_relative_summary(
    teacher_logits: ArrayLike, student_logits: ArrayLike, *, temperature: float = 1.0, inputs: InputKind = "logits"
) -> dict[str, Any]:
    """Every teacher-relative figure at once (no labels needed).

    Returns:
        ``mean_kl`` (nats, lower is better), ``aoag_kl``, ``aoag_js``, ``top1_agreement`` (all in
        [0, 1], higher is better), ``confidence_spearman``, ``confidence_kendall`` (max softmax
        probability), ``teacher_class_spearman``, ``teacher_class_kendall`` (probability of the
        teacher's class; each None when undefined, e.g. constant confidences), and the mean
        confidences ``teacher_mean_confidence`` / ``student_mean_confidence``.

    Example:
        >>> out = teacher_relative_summary([[2.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]])
        >>> out["mean_kl"], out["top1_agreement"]
        (0.0, 1.0)
    """
    acc = ClassificationAgreementAccumulator(temperature=temperature, inputs=inputs).update(teacher_logits, student_logits)
    out: dict[str, Any] = {
        "mean_kl": acc.mean_kl,
        "aoag_kl": acc.compute("kl"),
        "aoag_js": acc.compute("js"),
        "top1_agreement": acc.compute("top1"),
    }
    c_t, c_s = model_confidences(teacher_logits, student_logits, temperature=temperature, inputs=inputs)
    out["teacher_mean_confidence"] = float(np.mean(c_t))
    out["student_mean_confidence"] = float(np.mean(c_s))
    for of, prefix in (("max", "confidence"), ("teacher_class", "teacher_class")):
        for method in ("spearman", "kendall"):
            try:
                value: float | None = confidence_correlation(
                    teacher_logits, student_logits, method=method, of=of, temperature=temperature, inputs=inputs  # type: ignore[arg-type]
                )
            except ValueError:
                value = None
            out[f"{prefix}_{method}"] = value
    return out
