r"""Calibration: does a model's confidence match how often it is right?

Top-label expected calibration error with ``B`` equal-width bins (Naeini et al. 2015; Guo et al. 2017):

.. math::

    \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N}\,\bigl|\mathrm{acc}(b) - \mathrm{conf}(b)\bigr|,

where bin :math:`b` holds the examples whose confidence :math:`c_i = \max_k p_{ik}` lies in
:math:`(\frac{b-1}{B}, \frac{b}{B}]` (a confidence of exactly 0 goes to the first bin),
:math:`\mathrm{acc}(b)` is the share of them predicted correctly and :math:`\mathrm{conf}(b)` their mean
confidence.  Empty bins carry no weight.  The per-bin numbers are the reliability diagram.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import ArrayLike, InputError
from ..agreement import InputKind
from ._inputs import as_labels, check_int, check_lengths, probabilities

DEFAULT_N_BINS = 15


def reliability_diagram(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> dict[str, Any]:
    """Per-bin confidence, accuracy and count: the data of a reliability diagram.

    Args:
        logits: ``(N, C)`` logits (or probabilities with ``inputs="probabilities"``) of one model.
        labels: ``(N,)`` gold class indices.
        n_bins: number B of equal-width confidence bins on [0, 1] (default 15).
        temperature: softmax temperature.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        dict of ``(B,)`` numpy arrays: ``bin_lower``, ``bin_upper`` (edges), ``confidence`` (mean
        confidence in the bin), ``accuracy`` (share correct), both NaN for empty bins, and ``count``
        (int64).

    Example:
        >>> d = reliability_diagram([[2.0, 0.0], [0.0, 2.0]], [0, 0], n_bins=2)
        >>> d["count"].tolist(), d["accuracy"].tolist()
        ([0, 2], [nan, 0.5])
    """
    n_bins = check_int(n_bins, "n_bins")
    probs = probabilities(logits, "logits", temperature=temperature, inputs=inputs)
    y = as_labels(labels, "labels", num_classes=probs.shape[1])
    check_lengths([("logits", probs.shape[0]), ("labels", y.shape[0])])
    confidence = probs.max(axis=1)
    correct = (np.argmax(probs, axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") - 1 puts c in bin b when edges[b] < c <= edges[b + 1].
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        mean_acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": np.where(count > 0, mean_conf, np.nan),
        "accuracy": np.where(count > 0, mean_acc, np.nan),
        "count": count,
    }


def ece_from_reliability(diagram: dict[str, Any]) -> float:
    """ECE from the output of :func:`reliability_diagram`: the count-weighted mean |accuracy - confidence|."""
    count = np.asarray(diagram["count"], dtype=np.float64)
    if count.sum() <= 0:
        raise InputError("The reliability diagram holds no examples (all counts are 0).")
    keep = count > 0
    gaps = np.abs(np.asarray(diagram["accuracy"], dtype=np.float64) - np.asarray(diagram["confidence"], dtype=np.float64))
    return float(np.sum(count[keep] * gaps[keep]) / count.sum())


def expected_calibration_error(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> float:
    r"""Top-label expected calibration error with equal-width bins.

    .. math:: \mathrm{ECE} = \sum_b \frac{n_b}{N} \lvert \mathrm{acc}(b) - \mathrm{conf}(b)\rvert

    Args:
        logits: ``(N, C)`` logits of one model (or probabilities with ``inputs="probabilities"``).
        labels: ``(N,)`` gold class indices.
        n_bins: number of equal-width bins on [0, 1] (default 15).
        temperature: softmax temperature.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        ECE in [0, 1]; lower is better, 0 is best (confidence equals accuracy in every bin).

    Example:
        >>> expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1], inputs="probabilities", n_bins=10)
        0.4
    """
    diagram = reliability_diagram(logits, labels, n_bins=n_bins, temperature=temperature, inputs=inputs)
    return ece_from_reliability(diagram)


def calibration_summary(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> dict[str, Any]:
    """ECE and reliability-diagram data of both models.

    Returns:
        ``{"n_bins": B, "teacher": {"ece", "bins"}, "student": {"ece", "bins"}}`` where ``bins`` is the
        output of :func:`reliability_diagram`.
    """
    out: dict[str, Any] = {"n_bins": check_int(n_bins, "n_bins")}
    for role, logits in (("teacher", teacher_logits), ("student", student_logits)):
        diagram = reliability_diagram(logits, labels, n_bins=n_bins, temperature=temperature, inputs=inputs)
        out[role] = {"ece": ece_from_reliability(diagram), "bins": diagram}
    return out
