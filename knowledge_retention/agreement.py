r"""Average Output Agreement (AOAg): how alike the teacher's and the student's outputs are, in [0, 1].

* classification (logits ``(N, C)``, same C for both models):

  - ``kl``  : :math:`\frac1N\sum_i \exp(-\mathrm{KL}(p^T_i \,\Vert\, p^S_i))` with
    :math:`p = \mathrm{softmax}(z / T)` (natural log; T = temperature, default 1);
  - ``js``  : :math:`1 - \frac1N\sum_i \mathrm{JS}_2(p^T_i, p^S_i)`, Jensen-Shannon divergence in bits
    (so each term is in [0, 1]);
  - ``top1``: :math:`\frac1N\sum_i [\arg\max p^T_i = \arg\max p^S_i]`.

* regression (outputs ``(N,)`` or ``(N, K)``):
  :math:`\mathrm{clip}(1 - \mathrm{MSE}(y^T, y^S)/\mathrm{MSE}_{\max}, 0, 1)`; by default
  :math:`\mathrm{MSE}_{\max}` is the variance of the teacher's outputs (mean over the K outputs), which
  makes AOAg the :math:`R^2` of the student as a predictor of the teacher, floored at 0.

* segmentation (label maps ``(N, H, W)``): mean IoU over classes between the teacher's and the
  student's maps, intersections and unions summed over the whole dataset.

* detection (per image, boxes ``(M, 4)`` in ``x1, y1, x2, y2``): teacher and student boxes matched
  one to one by maximum total IoU (Hungarian), per image :math:`\sum \mathrm{IoU}_{matched} / \max(M, K)`
  (unmatched boxes count 0; two empty images agree fully), averaged over images.

Each measure has an accumulator whose state is a set of sums: batches and processes merge by
addition, and the one-shot functions are ``Accumulator().update(...).compute()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax

from ._validation import (
    ArrayLike,
    InputError,
    InputTypeError,
    as_float_array,
    check_choice,
    check_positive,
    check_same_length,
    is_constant,
    to_numpy,
)

InputKind = Literal["logits", "probabilities"]
ClassificationMethod = Literal["kl", "js", "top1"]
AOAgMethod = Literal["kl", "js", "top1", "mse", "mask_iou", "box_iou"]
AOAG_METHODS: tuple[str, ...] = ("kl", "js", "top1", "mse", "mask_iou", "box_iou")
CLASSIFICATION_METHODS: tuple[str, ...] = ("kl", "js", "top1")

_PROB_ATOL = 1e-4
# Machine epsilon of the half formats probabilities are often stored in.
_BFLOAT16_EPS = 2.0**-7
_FLOAT16_EPS = float(np.finfo(np.float16).eps)  # 2**-10


def _storage_epsilon(array: np.ndarray) -> float:
    """The epsilon of the coarsest float format that holds every value of ``array`` exactly.

    Probabilities rounded to float16 or bfloat16 (mixed-precision inference) have row sums off by
    up to about half that format's epsilon per row; torch's bf16 and fp16 tensors arrive here already
    widened to float32, so the format is recognised from the values, not the dtype. 0 when the
    values need float32 or more.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = array.astype(np.float32)
        if np.array_equal(as32, array):
            if not np.any(as32.view(np.uint32) & np.uint32(0xFFFF)):  # the low 16 bits of bf16 are zero
                return _BFLOAT16_EPS
            if np.array_equal(as32.astype(np.float16).astype(np.float32), as32):
                return _FLOAT16_EPS
    return 0.0


def _row_sum_tolerance(array: np.ndarray) -> float:
    """How far a row sum of probabilities may be from 1: 1e-4, or the rounding of the data's own format.

    Rounding each of a row's probabilities to a format of epsilon ``eps`` moves the sum by at most
    ``eps / 2``; twice that leaves room for a softmax computed and normalised in that format.
    """
    return max(_PROB_ATOL, _storage_epsilon(array))


def looks_like_probabilities(array: np.ndarray) -> bool:
    """True when every row is non-negative, at most 1, and sums to 1.

    "Sums to 1" within 1e-4, or within the rounding of the values' own format (float16: 9.8e-4,
    bfloat16: 7.8e-3), so probabilities stored in half precision are still recognised.
    """
    if not (array.ndim == 2 and array.shape[1] >= 2 and np.all(array >= 0) and np.all(array <= 1)):
        return False
    sums = array.sum(axis=1, dtype=np.float64)
    if np.allclose(sums, 1.0, atol=_PROB_ATOL):
        return True
    return bool(np.allclose(sums, 1.0, atol=_row_sum_tolerance(array)))


def log_probabilities(
    outputs: ArrayLike, name: str, *, temperature: float = 1.0, inputs: InputKind = "logits"
) -> np.ndarray:
    r"""Validated ``(N, C)`` outputs as log-probabilities :math:`\log\mathrm{softmax}(z/T)`.

    With ``inputs="probabilities"`` the rows must be distributions; they are tempered as
    :math:`p^{1/T}` renormalised (the same as tempering their log).

    Raises:
        InputError: not 2-D, C < 2, NaN/Inf; logits that look like probabilities (every row in
            [0, 1] summing to 1, within the rounding of the values' format) when ``inputs="logits"``; rows that are not distributions when
            ``inputs="probabilities"``.
    """
    check_choice(inputs, "inputs", ("logits", "probabilities"))
    temperature = check_positive(temperature, "temperature")
    array = as_float_array(outputs, name, ndim=2)
    if array.shape[1] < 2:
        raise InputError(f"`{name}` must have at least 2 classes (columns) for classification, got shape {array.shape}.")
    if inputs == "logits":
        if looks_like_probabilities(array):
            raise InputError(
                f"`{name}` look like probabilities (every row is in [0, 1] and sums to 1), but logits were "
                "expected. Pass inputs='probabilities' if they are probabilities, or pass the raw logits."
            )
        return log_softmax(array / temperature, axis=1)
    tolerance = _row_sum_tolerance(array)
    if np.any(array < 0) or not np.allclose(array.sum(axis=1), 1.0, atol=tolerance):
        raise InputError(
            f"`{name}` must be probabilities (non-negative rows summing to 1) since inputs='probabilities'; "
            f"row sums range from {array.sum(axis=1).min():.4g} to {array.sum(axis=1).max():.4g}. "
            "Pass inputs='logits' for raw scores."
        )
    with np.errstate(divide="ignore"):
        return log_softmax(np.log(array) / temperature, axis=1)


def kl_divergence_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Per-row KL(p || q) in nats from ``(N, C)`` log-probabilities, with 0 log 0 = 0 and +inf where q = 0 < p.

    Example:
        >>> import numpy as np
        >>> kl_divergence_rows(np.log([[0.5, 0.5]]), np.log([[0.5, 0.5]])).tolist()
        [0.0]
    """
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return np.sum(terms, axis=1)


def js_divergence_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Per-row Jensen-Shannon divergence in bits (in [0, 1]) from ``(N, C)`` log-probabilities.

    Example:
        >>> import numpy as np
        >>> js_divergence_rows(np.log([[1.0, 1e-300]]), np.log([[1e-300, 1.0]])).round(6).tolist()
        [1.0]
    """
    log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
    js = 0.5 * kl_divergence_rows(log_p, log_m) + 0.5 * kl_divergence_rows(log_q, log_m)
    return np.clip(js / np.log(2.0), 0.0, 1.0)


def _classification_pair(
    teacher_logits: ArrayLike, student_logits: ArrayLike, temperature: float, inputs: InputKind
) -> tuple[np.ndarray, np.ndarray]:
    log_t = log_probabilities(teacher_logits, "teacher_logits", temperature=temperature, inputs=inputs)
    log_s = log_probabilities(student_logits, "student_logits", temperature=temperature, inputs=inputs)
    check_same_length(log_t, log_s, "teacher_logits", "student_logits")
    if log_t.shape[1] != log_s.shape[1]:
        raise InputError(
            f"Teacher and student must predict the same classes: `teacher_logits` has {log_t.shape[1]} "
            f"columns, `student_logits` has {log_s.shape[1]}."
        )
    return log_t, log_s


def per_example_kl(
    teacher_logits: ArrayLike, student_logits: ArrayLike, *, temperature: float = 1.0, inputs: InputKind = "logits"
) -> np.ndarray:
    r"""Per-example :math:`\mathrm{KL}(p^T_i \Vert p^S_i)` in nats, shape ``(N,)``; lower is better, 0 is best.

    Example:
        >>> per_example_kl([[2.0, 0.0]], [[2.0, 0.0]]).tolist()
        [0.0]
    """
    log_t, log_s = _classification_pair(teacher_logits, student_logits, temperature, inputs)
    return kl_divergence_rows(log_t, log_s)


@dataclass
class ClassificationAgreementAccumulator:
    """Additive state for classification agreement: n and the sums of exp(-KL), KL, JS and top-1 matches."""

    temperature: float = 1.0
    inputs: InputKind = "logits"
    n: int = 0
    sum_exp_neg_kl: float = 0.0
    sum_kl: float = 0.0
    sum_js: float = 0.0
    top1_matches: int = 0
    num_classes: int | None = None

    def update(self, teacher_logits: ArrayLike, student_logits: ArrayLike) -> ClassificationAgreementAccumulator:
        """Adds a batch of ``(B, C)`` teacher and student logits (or probabilities, see ``inputs``)."""
        log_t, log_s = _classification_pair(teacher_logits, student_logits, self.temperature, self.inputs)
        if self.num_classes is not None and log_t.shape[1] != self.num_classes:
            raise InputError(f"Number of classes changed between batches: {self.num_classes} then {log_t.shape[1]}.")
        self.num_classes = log_t.shape[1]
        kl = kl_divergence_rows(log_t, log_s)
        self.n += log_t.shape[0]
        self.sum_exp_neg_kl += float(np.sum(np.exp(-kl)))
        self.sum_kl += float(np.sum(kl))
        self.sum_js += float(np.sum(js_divergence_rows(log_t, log_s)))
        self.top1_matches += int(np.sum(np.argmax(log_t, 1) == np.argmax(log_s, 1)))
        return self

    def __iadd__(self, other: ClassificationAgreementAccumulator) -> ClassificationAgreementAccumulator:
        if (self.temperature, self.inputs) != (other.temperature, other.inputs):
            raise InputError("Cannot merge agreement states computed with different temperature/inputs.")
        if self.num_classes is not None and other.num_classes is not None and self.num_classes != other.num_classes:
            raise InputError(f"Cannot merge agreement states over {self.num_classes} and {other.num_classes} classes.")
        self.num_classes = self.num_classes or other.num_classes
        self.n += other.n
        self.sum_exp_neg_kl += other.sum_exp_neg_kl
        self.sum_kl += other.sum_kl
        self.sum_js += other.sum_js
        self.top1_matches += other.top1_matches
        return self

    def compute(self, method: ClassificationMethod = "kl") -> float:
        """AOAg by ``method`` (``kl``, ``js`` or ``top1``), in [0, 1]; higher is better."""
        check_choice(method, "aoag_method", CLASSIFICATION_METHODS)
        if self.n == 0:
            raise InputError("Output agreement needs at least 1 example, got 0.")
        if method == "kl":
            return self.sum_exp_neg_kl / self.n
        if method == "js":
            return 1.0 - self.sum_js / self.n
        return self.top1_matches / self.n

    @property
    def mean_kl(self) -> float:
        """Mean KL(teacher || student) in nats."""
        if self.n == 0:
            raise InputError("Mean KL needs at least 1 example, got 0.")
        return self.sum_kl / self.n


def classification_agreement(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    *,
    method: ClassificationMethod = "kl",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> float:
    r"""AOAg for classifiers: ``kl`` (default), ``js`` or ``top1`` agreement, in [0, 1].

    Args:
        teacher_logits: ``(N, C)`` teacher logits (or probabilities with ``inputs="probabilities"``).
        student_logits: ``(N, C)`` student logits, same C.
        method: ``kl`` = mean exp(-KL(p_T || p_S)); ``js`` = 1 - mean JS divergence (bits);
            ``top1`` = argmax agreement rate.
        temperature: softmax temperature T > 0 applied to both models.
        inputs: ``"logits"`` (default; probability-looking rows are refused) or ``"probabilities"``.

    Returns:
        Agreement in [0, 1]; higher is better, 1 is best (identical predictive distributions).

    Example:
        >>> classification_agreement([[3.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [0.0, 1.0]])
        1.0
        >>> classification_agreement([[3.0, 0.0]], [[0.0, 3.0]], method="top1")
        0.0
    """
    acc = ClassificationAgreementAccumulator(temperature=temperature, inputs=inputs)
    return acc.update(teacher_logits, student_logits).compute(method)


# --- Regression --------------------------------------------------------------------------------------


def _as_regression(value: ArrayLike, name: str) -> np.ndarray:
    array = as_float_array(value, name, ndim=(1, 2))
    return array[:, None] if array.ndim == 1 else array


@dataclass
class RegressionAgreementAccumulator:
    """Additive state for regression agreement: n, the sum of squared differences, teacher sums and squares.

    The teacher's sums are taken about a shift, the first batch's teacher mean (``sum_t`` =
    :math:`\\sum_i (t_i - c)`, ``sum_t2`` = :math:`\\sum_i (t_i - c)^2`): the variance then needs no
    :math:`E[t^2] - E[t]^2` of raw values, which at a mean offset of 1e8 cancels to noise. States with
    different shifts merge after one is re-expressed about the other's
    (:math:`\\sum (u + \\delta)^2 = \\sum u^2 + 2\\delta \\sum u + n\\delta^2`).
    """

    n: int = 0
    sum_sq_diff: float = 0.0
    sum_t: np.ndarray | None = None
    sum_t2: np.ndarray | None = None
    shift_t: np.ndarray | None = None  # None: sums about the origin

    def update(self, teacher_outputs: ArrayLike, student_outputs: ArrayLike) -> RegressionAgreementAccumulator:
        """Adds a batch of ``(B,)`` or ``(B, K)`` teacher and student outputs."""
        t = _as_regression(teacher_outputs, "teacher_outputs")
        s = _as_regression(student_outputs, "student_outputs")
        check_same_length(t, s, "teacher_outputs", "student_outputs")
        if t.shape[1] != s.shape[1]:
            raise InputError(
                f"`teacher_outputs` and `student_outputs` must have the same number of outputs, got "
                f"{t.shape[1]} and {s.shape[1]}."
            )
        if self.sum_t is not None and self.sum_t.shape[0] != t.shape[1]:
            raise InputError(f"Number of outputs changed between batches: {self.sum_t.shape[0]} then {t.shape[1]}.")
        batch_shift = t.mean(axis=0) if self.n == 0 else self.shift_t
        centred = t if batch_shift is None else t - batch_shift
        with np.errstate(over="ignore", invalid="ignore"):
            batch = RegressionAgreementAccumulator(
                n=t.shape[0], sum_sq_diff=float(np.sum((t - s) ** 2)), sum_t=centred.sum(0),
                sum_t2=(centred * centred).sum(0), shift_t=batch_shift,
            )
        if not (np.isfinite(batch.sum_sq_diff) and np.all(np.isfinite(batch.sum_t2))):  # type: ignore[arg-type]
            raise InputError(
                "`teacher_outputs`/`student_outputs` overflow float64 when squared (values near 1e154); rescale them."
            )
        self += batch
        return self

    def _reshifted(self, shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(sum_t, sum_t2)`` about ``shift`` instead of this state's own shift."""
        assert self.sum_t is not None and self.sum_t2 is not None
        zero = np.zeros_like(self.sum_t)
        delta = (self.shift_t if self.shift_t is not None else zero) - (shift if shift is not None else zero)
        if not np.any(delta):
            return self.sum_t, self.sum_t2
        return self.sum_t + self.n * delta, self.sum_t2 + 2 * delta * self.sum_t + self.n * delta * delta

    def __iadd__(self, other: RegressionAgreementAccumulator) -> RegressionAgreementAccumulator:
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.sum_sq_diff = other.n, other.sum_sq_diff
            self.sum_t, self.sum_t2 = other.sum_t.copy(), other.sum_t2.copy()  # type: ignore[union-attr]
            self.shift_t = None if other.shift_t is None else np.array(other.shift_t, dtype=np.float64)
            return self
        if other.sum_t is None or self.sum_t is None or other.sum_t.shape != self.sum_t.shape:
            raise InputError("Cannot merge regression agreement states over different numbers of outputs.")
        sum_t, sum_t2 = other._reshifted(self.shift_t)
        self.n += other.n
        self.sum_sq_diff += other.sum_sq_diff
        self.sum_t = self.sum_t + sum_t
        self.sum_t2 = self.sum_t2 + sum_t2  # type: ignore[operator]
        return self

    @property
    def mse(self) -> float:
        """Mean squared difference between teacher and student outputs (over examples and outputs)."""
        if self.n == 0 or self.sum_t is None:
            raise InputError("Regression agreement needs at least 1 example, got 0.")
        return self.sum_sq_diff / (self.n * self.sum_t.shape[0])

    def teacher_variance(self) -> float:
        """Population variance of the teacher's outputs, averaged over outputs (the default MSE_max)."""
        assert self.sum_t is not None and self.sum_t2 is not None
        mean = self.sum_t / self.n  # about the shift: small, so nothing cancels
        return float(np.mean(np.maximum(self.sum_t2 / self.n - mean * mean, 0.0)))

    def compute(self, *, max_mse: float | None = None) -> float:
        """AOAg = clip(1 - MSE / max_mse, 0, 1); ``max_mse`` defaults to the teacher's output variance."""
        mse = self.mse
        if max_mse is None:
            if self.n < 2:
                raise InputError("The default max_mse (teacher output variance) needs at least 2 examples; pass max_mse.")
            max_mse = self.teacher_variance()
            _, origin_sq = self._reshifted(None)  # the outputs' own size, about the origin
            if max_mse <= 0 or is_constant(max_mse * self.n * len(origin_sq), float(np.sum(origin_sq))):
                raise InputError(
                    "The teacher's outputs are constant, so the default max_mse (their variance) is 0. "
                    "Pass max_mse explicitly (e.g. the worst MSE seen in training)."
                )
        else:
            max_mse = check_positive(max_mse, "max_mse")
        return float(np.clip(1.0 - mse / max_mse, 0.0, 1.0))


def regression_agreement(
    teacher_outputs: ArrayLike, student_outputs: ArrayLike, *, max_mse: float | None = None
) -> float:
    r"""AOAg for regression: :math:`\mathrm{clip}(1 - \mathrm{MSE}(y^T, y^S)/\mathrm{MSE}_{\max}, 0, 1)`.

    Args:
        teacher_outputs: ``(N,)`` or ``(N, K)`` teacher predictions.
        student_outputs: same shape, student predictions.
        max_mse: the MSE that maps to 0 agreement (the paper takes the worst case seen in training).
            Default: the variance of the teacher's outputs (mean over K), i.e. AOAg = R^2 of the
            student against the teacher, floored at 0.

    Returns:
        Agreement in [0, 1]; higher is better.

    Example:
        >>> regression_agreement([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0])
        1.0
        >>> regression_agreement([0.0, 2.0], [1.0, 1.0], max_mse=4.0)
        0.75
    """
    return RegressionAgreementAccumulator().update(teacher_outputs, student_outputs).compute(max_mse=max_mse)


# --- Segmentation: mask IoU ---------------------------------------------------------------------------


def _as_label_map(value: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputTypeError(f"`{name}` must be integer class labels (a label map), got non-integer floats.")
        array = array.astype(np.int64)
    if array.dtype.kind not in "biu":
        raise InputTypeError(f"`{name}` must be integer class labels, got dtype {array.dtype}.")
    if array.ndim < 2:
        raise InputError(f"`{name}` must be label maps of shape (N, H, W) (or (N, P)), got shape {array.shape}.")
    return array.astype(np.int64)


@dataclass
class MaskIoUAccumulator:
    """Additive state for mask IoU: the teacher-vs-student confusion matrix over pixels."""

    num_classes: int | None = None
    ignore_index: int | None = None
    confusion: np.ndarray | None = None

    def update(self, teacher_masks: ArrayLike, student_masks: ArrayLike) -> MaskIoUAccumulator:
        """Adds a batch of label maps ``(B, H, W)`` (any trailing shape) of the same shape."""
        t = _as_label_map(teacher_masks, "teacher_masks")
        s = _as_label_map(student_masks, "student_masks")
        if t.shape != s.shape:
            raise InputError(f"`teacher_masks` and `student_masks` must have the same shape, got {t.shape} and {s.shape}.")
        t, s = t.ravel(), s.ravel()
        if self.ignore_index is not None:
            keep = (t != self.ignore_index) & (s != self.ignore_index)
            t, s = t[keep], s[keep]
        if t.size and (t.min() < 0 or s.min() < 0):
            raise InputError("Mask labels must be >= 0 (set ignore_index for a void label such as -1 or 255).")
        top = int(max(t.max(initial=-1), s.max(initial=-1))) + 1
        if self.num_classes is not None and top > self.num_classes:
            raise InputError(f"Mask labels go up to {top - 1}, but num_classes={self.num_classes}.")
        size = self.num_classes or max(top, 0 if self.confusion is None else self.confusion.shape[0])
        batch = np.bincount(t * size + s, minlength=size * size).reshape(size, size)
        self._add(batch)
        return self

    def _add(self, batch: np.ndarray) -> None:
        if self.confusion is None:
            self.confusion = batch.astype(np.int64)
            return
        size = max(self.confusion.shape[0], batch.shape[0])
        grown = np.zeros((size, size), dtype=np.int64)
        grown[: self.confusion.shape[0], : self.confusion.shape[0]] += self.confusion
        grown[: batch.shape[0], : batch.shape[0]] += batch
        self.confusion = grown

    def __iadd__(self, other: MaskIoUAccumulator) -> MaskIoUAccumulator:
        if other.confusion is not None:
            self._add(other.confusion)
        return self

    def per_class_iou(self) -> np.ndarray:
        """IoU per class (NaN for classes absent from both the teacher's and the student's maps)."""
        if self.confusion is None or self.confusion.sum() == 0:
            raise InputError("Mask IoU needs at least one labelled pixel, got none.")
        inter = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, np.nan)

    def compute(self) -> float:
        """Mean IoU over the classes present in either model's maps; in [0, 1], higher is better."""
        return float(np.nanmean(self.per_class_iou()))


def mask_iou_agreement(
    teacher_masks: ArrayLike, student_masks: ArrayLike, *, num_classes: int | None = None, ignore_index: int | None = None
) -> float:
    """AOAg for segmentation: mean IoU between the teacher's and the student's label maps.

    Example:
        >>> mask_iou_agreement([[[0, 1], [1, 1]]], [[[0, 1], [0, 1]]])
        0.58333...
    """
    acc = MaskIoUAccumulator(num_classes=num_classes, ignore_index=ignore_index)
    return acc.update(teacher_masks, student_masks).compute()


# --- Detection: matched box IoU -----------------------------------------------------------------------


def _as_boxes(value: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.size == 0:
        return np.zeros((0, 4))
    boxes = as_float_array(array, name, ndim=2)
    if boxes.shape[1] != 4:
        raise InputError(f"`{name}` must have shape (M, 4) as x1, y1, x2, y2, got {boxes.shape}.")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise InputError(f"`{name}` must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1 (got x,y,w,h or swapped corners?).")
    return boxes


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(M, 4)`` and ``(K, 4)`` boxes in x1, y1, x2, y2: an ``(M, K)`` matrix."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class BoxIoUAccumulator:
    """Additive state for matched-box agreement: number of images and the sum of per-image scores."""

    n: int = 0
    total: float = 0.0

    def update(
        self,
        teacher_boxes: Sequence[ArrayLike],
        student_boxes: Sequence[ArrayLike],
        teacher_labels: Sequence[ArrayLike] | None = None,
        student_labels: Sequence[ArrayLike] | None = None,
    ) -> BoxIoUAccumulator:
        """Adds images: lists (one entry per image) of ``(M_i, 4)`` boxes, optional class labels ``(M_i,)``."""
        if len(teacher_boxes) != len(student_boxes):
            raise InputError(
                f"`teacher_boxes` and `student_boxes` must list the same images: {len(teacher_boxes)} vs {len(student_boxes)}."
            )
        if (teacher_labels is None) != (student_labels is None):
            raise InputError("Pass both `teacher_labels` and `student_labels`, or neither.")
        for i, (tb, sb) in enumerate(zip(teacher_boxes, student_boxes, strict=True)):
            t = _as_boxes(tb, f"teacher_boxes[{i}]")
            s = _as_boxes(sb, f"student_boxes[{i}]")
            if len(t) == 0 and len(s) == 0:
                score = 1.0
            else:
                iou = box_iou(t, s)
                if teacher_labels is not None and student_labels is not None:
                    tl = to_numpy(teacher_labels[i], f"teacher_labels[{i}]").reshape(-1)
                    sl = to_numpy(student_labels[i], f"student_labels[{i}]").reshape(-1)
                    if len(tl) != len(t) or len(sl) != len(s):
                        raise InputError(f"Image {i}: one label per box expected ({len(t)}/{len(s)} boxes, {len(tl)}/{len(sl)} labels).")
                    iou = np.where(tl[:, None] == sl[None, :], iou, 0.0)
                rows, cols = linear_sum_assignment(iou, maximize=True) if iou.size else ([], [])
                score = float(np.sum(iou[rows, cols])) / max(len(t), len(s))
            self.n += 1
            self.total += score
        return self

    def __iadd__(self, other: BoxIoUAccumulator) -> BoxIoUAccumulator:
        self.n += other.n
        self.total += other.total
        return self

    def compute(self) -> float:
        if self.n == 0:
            raise InputError("Box agreement needs at least 1 image, got 0.")
        return self.total / self.n


def box_iou_agreement(
    teacher_boxes: Sequence[ArrayLike],
    student_boxes: Sequence[ArrayLike],
    *,
    teacher_labels: Sequence[ArrayLike] | None = None,
    student_labels: Sequence[ArrayLike] | None = None,
) -> float:
    """AOAg for detection: mean over images of the Hungarian-matched box IoU, normalised by max(M, K).

    Example:
        >>> box_iou_agreement([[[0, 0, 2, 2]]], [[[0, 0, 2, 1]]])
        0.5
    """
    return BoxIoUAccumulator().update(teacher_boxes, student_boxes, teacher_labels, student_labels).compute()


def output_agreement(
    teacher_outputs: ArrayLike,
    student_outputs: ArrayLike,
    *,
    method: AOAgMethod = "kl",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
    max_mse: float | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> float:
    """AOAg by method name: dispatches to the classification, regression, mask or box measure."""
    check_choice(method, "aoag_method", AOAG_METHODS)
    if method in CLASSIFICATION_METHODS:
        return classification_agreement(
            teacher_outputs, student_outputs, method=method, temperature=temperature, inputs=inputs  # type: ignore[arg-type]
        )
    if method == "mse":
        return regression_agreement(teacher_outputs, student_outputs, max_mse=max_mse)
    if method == "mask_iou":
        return mask_iou_agreement(teacher_outputs, student_outputs, num_classes=num_classes, ignore_index=ignore_index)
    return box_iou_agreement(teacher_outputs, student_outputs)  # type: ignore[arg-type]
