r"""Task quality against gold labels, and the share of the teacher's quality a student keeps.

Classification (class indices, or ``(N, C)`` scores turned into their argmax):

* :func:`accuracy_score` :math:`= \frac1N\sum_i [\hat y_i = y_i]`;
* :func:`macro_f1_score` :math:`= \frac1{|K|}\sum_{k\in K} \frac{2\,TP_k}{2\,TP_k + FP_k + FN_k}`, K the
  classes present in the labels or the predictions (scikit-learn's default).

Regression (``(N,)`` or ``(N, K)``; several outputs are averaged uniformly, as scikit-learn does):

* :func:`mean_absolute_error`, :func:`root_mean_squared_error`, :func:`r2_score`.

:func:`quality_retained` divides so that the result always reads "higher is better, 1 = as good as the
teacher": ``student / teacher`` for scores, ``teacher / student`` for errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import ArrayLike, InputError, InputTypeError, as_float_array, check_same_length
from ._inputs import as_labels, as_predictions, check_lengths

# --- classification --------------------------------------------------------------------------------


def _label_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth = as_labels(y_true, "y_true")
    pred = as_labels(y_pred, "y_pred")
    check_same_length(truth, pred, "y_true", "y_pred")
    return truth, pred


def accuracy_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Fraction of examples whose predicted class is the gold class.

    .. math:: \mathrm{acc} = \frac1N \sum_{i=1}^N [\hat y_i = y_i]

    Args:
        y_true: ``(N,)`` gold class indices.
        y_pred: ``(N,)`` predicted class indices.

    Returns:
        Accuracy in [0, 1]; higher is better, 1 is best.

    Example:
        >>> accuracy_score([0, 1, 1, 0], [0, 1, 0, 0])
        0.75
    """
    truth, pred = _label_pair(y_true, y_pred)
    return float(np.mean(truth == pred))


def macro_f1_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Unweighted mean over classes of the F1 score.

    .. math:: F_1 = \frac1{|K|}\sum_{k \in K} \frac{2\,TP_k}{2\,TP_k + FP_k + FN_k}

    K is the set of classes found in ``y_true`` or ``y_pred`` (as in scikit-learn's ``f1_score(...,
    average="macro")``); a class never predicted correctly contributes 0.

    Args:
        y_true: ``(N,)`` gold class indices.
        y_pred: ``(N,)`` predicted class indices.

    Returns:
        Macro-F1 in [0, 1]; higher is better, 1 is best.

    Example:
        >>> round(macro_f1_score([0, 0, 1, 1], [0, 1, 1, 1]), 4)
        0.7333
    """
    truth, pred = _label_pair(y_true, y_pred)
    size = int(max(truth.max(), pred.max())) + 1
    classes = np.union1d(truth, pred)
    tp = np.bincount(truth[truth == pred], minlength=size)[classes].astype(np.float64)
    fp = np.bincount(pred, minlength=size)[classes] - tp
    fn = np.bincount(truth, minlength=size)[classes] - tp
    return float(np.mean(2.0 * tp / (2.0 * tp + fp + fn)))  # denominators > 0: each k occurs somewhere


# --- regression ------------------------------------------------------------------------------------


def _regression_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth = as_float_array(y_true, "y_true", ndim=(1, 2))
    pred = as_float_array(y_pred, "y_pred", ndim=(1, 2))
    shapes = truth.shape, pred.shape
    truth = truth[:, None] if truth.ndim == 1 else truth  # (N,) and (N, 1) are the same single output
    pred = pred[:, None] if pred.ndim == 1 else pred
    if truth.shape != pred.shape:
        raise InputError(f"`y_true` and `y_pred` must have the same shape, got {shapes[0]} and {shapes[1]}.")
    return truth, pred


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Mean absolute error :math:`\frac1{NK}\sum_{i,k} |y_{ik} - \hat y_{ik}|`.

    Args:
        y_true: ``(N,)`` or ``(N, K)`` targets.
        y_pred: predictions of the same shape.

    Returns:
        MAE in [0, inf); lower is better, 0 is best.

    Example:
        >>> mean_absolute_error([1.0, 2.0, 3.0], [1.0, 2.5, 2.0])
        0.5
    """
    truth, pred = _regression_pair(y_true, y_pred)
    return float(np.mean(np.abs(truth - pred)))


def root_mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Root mean squared error, per output then averaged: :math:`\frac1K\sum_k\sqrt{\frac1N\sum_i (y_{ik}-\hat y_{ik})^2}`.

    Args:
        y_true: ``(N,)`` or ``(N, K)`` targets.
        y_pred: predictions of the same shape.

    Returns:
        RMSE in [0, inf); lower is better, 0 is best.

    Example:
        >>> root_mean_squared_error([0.0, 0.0], [3.0, -3.0])
        3.0
    """
    truth, pred = _regression_pair(y_true, y_pred)
    return float(np.mean(np.sqrt(np.mean((truth - pred) ** 2, axis=0))))


def r2_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    r"""Coefficient of determination, per output then averaged.

    .. math:: R^2_k = 1 - \frac{\sum_i (y_{ik} - \hat y_{ik})^2}{\sum_i (y_{ik} - \bar y_k)^2}

    A constant target column (zero denominator) scores 1 if predicted exactly and 0 otherwise,
    scikit-learn's ``force_finite=True`` convention.

    Args:
        y_true: ``(N,)`` or ``(N, K)`` targets, N >= 2.
        y_pred: predictions of the same shape.

    Returns:
        R² in (-inf, 1]; higher is better, 1 is best, 0 = as good as predicting the mean.

    Example:
        >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
        1.0
    """
    truth, pred = _regression_pair(y_true, y_pred)
    if truth.shape[0] < 2:
        raise InputError(f"`y_true` needs at least 2 examples for R², got {truth.shape[0]}.")
    ss_res = np.sum((truth - pred) ** 2, axis=0)
    ss_tot = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_output = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(per_output))


# --- retention ---------------------------------------------------------------------------------------


def quality_retained(student_score: float, teacher_score: float, *, greater_is_better: bool = True) -> float:
    r"""Share of the teacher's task quality the student keeps; 1 = as good as the teacher.

    .. math::

        \text{retained} = \begin{cases} s / t & \text{scores (accuracy, F1, } R^2\text{): higher is better}\\
                                      t / s & \text{errors (MAE, RMSE): lower is better} \end{cases}

    Both forms read the same way: above 1 the student beats the teacher, 0.97 means "97 % of the
    teacher's quality" (for errors: the teacher's error is 97 % of the student's).

    Args:
        student_score: the student's metric value.
        teacher_score: the teacher's, same metric.
        greater_is_better: True for scores (``*_score``), False for errors (``*_error``).

    Returns:
        The ratio in [0, inf) for non-negative scores (may be negative for a negative student R²);
        higher is better, 1 = parity with the teacher.

    Raises:
        ValueError: for scores, ``teacher_score <= 0`` (no quality to retain: the ratio would be
            undefined or change meaning with the sign); for errors, a score < 0 or a zero error
            (``teacher_score == 0`` gives 0/x, ``student_score == 0`` divides by zero).

    Example:
        >>> quality_retained(0.88, 0.92)
        0.956521...
        >>> quality_retained(0.5, 0.4, greater_is_better=False)
        0.8
    """
    for name, value in (("student_score", student_score), ("teacher_score", teacher_score)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputTypeError(f"`{name}` must be a number, got {type(value).__name__}.")
        if not np.isfinite(value):
            raise InputError(f"`{name}` must be finite, got {value}.")
    student, teacher = float(student_score), float(teacher_score)
    if greater_is_better:
        if teacher <= 0:
            raise InputError(
                f"`teacher_score` must be > 0 to compute the share of it the student retains, got {teacher}."
            )
        return student / teacher
    if teacher < 0 or student < 0:
        raise InputError(f"Errors must be >= 0, got teacher_score={teacher} and student_score={student}.")
    if teacher == 0:
        raise InputError("`teacher_score` is 0 (a perfect teacher): the retained share of an error is undefined.")
    if student == 0:
        raise InputError("`student_score` is 0 (a perfect student): teacher / student is infinite.")
    return teacher / student


def classification_quality(labels: ArrayLike, teacher_predictions: ArrayLike, student_predictions: ArrayLike) -> dict[str, Any]:
    """Accuracy and macro-F1 of both models and the share the student retains.

    Args:
        labels: ``(N,)`` gold class indices.
        teacher_predictions: ``(N,)`` predicted classes or ``(N, C)`` logits/probabilities (argmax taken).
        student_predictions: the student's, same layout.

    Returns:
        ``{"teacher": {"accuracy", "macro_f1"}, "student": {...}, "retained": {"accuracy", "macro_f1"}}``;
        a retained entry is None when the teacher scores 0.

    Example:
        >>> out = classification_quality([0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 0])
        >>> out["retained"]["accuracy"]
        0.75
    """
    y = as_labels(labels, "labels")
    t = as_predictions(teacher_predictions, "teacher_predictions")
    s = as_predictions(student_predictions, "student_predictions")
    check_lengths([("labels", len(y)), ("teacher_predictions", len(t)), ("student_predictions", len(s))])
    teacher = {"accuracy": accuracy_score(y, t), "macro_f1": macro_f1_score(y, t)}
    student = {"accuracy": accuracy_score(y, s), "macro_f1": macro_f1_score(y, s)}
    retained = {k: (quality_retained(student[k], teacher[k]) if teacher[k] > 0 else None) for k in teacher}
    return {"teacher": teacher, "student": student, "retained": retained}


def regression_quality(targets: ArrayLike, teacher_outputs: ArrayLike, student_outputs: ArrayLike) -> dict[str, Any]:
    """MAE, RMSE and R² of both models and the share the student retains.

    Retention is ``teacher / student`` for the errors and ``student / teacher`` for R² (None when the
    teacher's R² is <= 0 or an error is 0, where the ratio is undefined).

    Example:
        >>> out = regression_quality([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.5], [0.0, 1.0, 2.0, 4.0])
        >>> out["retained"]["mae"]
        0.5
    """
    y = as_float_array(targets, "targets", ndim=(1, 2))
    t = as_float_array(teacher_outputs, "teacher_outputs", ndim=(1, 2))
    s = as_float_array(student_outputs, "student_outputs", ndim=(1, 2))
    check_lengths([("targets", len(y)), ("teacher_outputs", len(t)), ("student_outputs", len(s))])
    metrics = {"mae": mean_absolute_error, "rmse": root_mean_squared_error, "r2": r2_score}
    teacher = {k: f(y, t) for k, f in metrics.items()}
    student = {k: f(y, s) for k, f in metrics.items()}
    retained: dict[str, float | None] = {}
    for k in metrics:
        higher = k == "r2"
        ok = teacher[k] > 0 if higher else (teacher[k] > 0 and student[k] > 0)
        retained[k] = quality_retained(student[k], teacher[k], greater_is_better=higher) if ok else None
    return {"teacher": teacher, "student": student, "retained": retained}
