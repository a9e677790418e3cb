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

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import log_softmax

from ._numerics import LOG2_RANGE, exponent_for, max_abs, prescaled_difference
from ._state import check_state_mapping, state_float, state_int, state_vector
from ._validation import (
    ArrayLike,
    InputError,
    InputTypeError,
    as_float_array,
    check_choice,
    check_integer,
    check_positive,
    check_same_length,
    is_constant,
)
from .methods import AOAG_METHODS, CLASSIFICATION_METHODS  # the one list every front end offers
from .spatial_agreement import (  # re-exported: their former home
    BoxIoUAccumulator,
    MaskIoUAccumulator,
    box_iou,
    box_iou_agreement,
    mask_iou_agreement,
)

__all__ = [
    "AOAG_METHODS",
    "BoxIoUAccumulator",
    "ClassificationAgreementAccumulator",
    "MaskIoUAccumulator",
    "RegressionAgreementAccumulator",
    "box_iou",
    "box_iou_agreement",
    "check_agreement_options",
    "classification_agreement",
    "mask_iou_agreement",
    "output_agreement",
    "per_example_kl",
    "regression_agreement",
]

InputKind = Literal["logits", "probabilities"]
ClassificationMethod = Literal["kl", "js", "top1"]
AOAgMethod = Literal["kl", "js", "top1", "mse", "mask_iou", "box_iou"]

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
    if not (array.ndim == 2 and array.shape[0] > 0 and array.shape[1] >= 2 and np.all(array >= 0) and np.all(array <= 1)):
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
    array = as_float_array(outputs, name, ndim=2, min_rows=0)
    if array.shape[1] < 2:
        raise InputError(f"`{name}` must have at least 2 classes (columns) for classification, got shape {array.shape}.")
    if inputs == "logits":
        if looks_like_probabilities(array):
            raise InputError(
                f"`{name}` look like probabilities (every row is in [0, 1] and sums to 1), but logits were "
                "expected. Pass inputs='probabilities' if they are probabilities, or pass the raw logits."
            )
        return log_softmax(_tempered(array, temperature, name), axis=1)
    tolerance = _row_sum_tolerance(array)
    if np.any(array < 0) or not np.allclose(array.sum(axis=1), 1.0, atol=tolerance):
        raise InputError(
            f"`{name}` must be probabilities (non-negative rows summing to 1) since inputs='probabilities'; "
            f"row sums range from {array.sum(axis=1).min():.4g} to {array.sum(axis=1).max():.4g}. "
            "Pass inputs='logits' for raw scores."
        )
    with np.errstate(divide="ignore"):
        return log_softmax(_tempered(np.log(array), temperature, name), axis=1)


def _tempered(scores: np.ndarray, temperature: float, name: str) -> np.ndarray:
    """``scores / temperature``; where that overflows, the same up to a per-row constant (softmax ignores it).

    Each row is taken relative to its largest score first, so logits of 1e300 or a temperature of 1e-10
    still give their softmax; a temperature so small that the *differences* between scores overflow
    float64 once divided by it (``temperature=1e-308``) is refused: no float64 softmax exists there.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        tempered = scores / temperature
    if np.all(np.isfinite(tempered) | np.isneginf(scores)) or scores.size == 0:
        return tempered
    with np.errstate(over="ignore", invalid="ignore"):
        relative = scores - np.max(scores, axis=1, keepdims=True)
        tempered = relative / temperature
    finite = np.isfinite(relative)
    if not np.all(finite | np.isneginf(scores)) or np.any(np.isinf(tempered) & finite):
        spread = float(np.max(-relative[finite])) if np.any(finite) else float("inf")
        raise InputError(
            f"`temperature`={temperature:g} is too small for float64: the differences between the scores of "
            f"`{name}` (up to {spread:.3g}) divided by it overflow (beyond 1.8e308), so the tempered softmax "
            "cannot be computed. Use a temperature of at least "
            f"{spread / 1e307:.3g}, or 1 (the default)."
        )
    return tempered


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
    """Additive state for classification agreement: n and the sums of exp(-KL), KL, JS and top-1 matches.

    ``update`` / ``compute`` / ``reset`` / ``state_dict`` / ``from_state_dict``; merges with ``+``
    (states of the same ``temperature`` and ``inputs``). ``temperature`` and ``inputs`` are checked
    when the accumulator is built.
    """

    temperature: float = 1.0
    inputs: InputKind = "logits"
    n: int = 0
    sum_exp_neg_kl: float = 0.0
    sum_kl: float = 0.0
    sum_js: float = 0.0
    top1_matches: int = 0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        self.temperature = check_positive(self.temperature, "temperature")
        check_choice(self.inputs, "inputs", ("logits", "probabilities"))

    def update(self, teacher_logits: ArrayLike, student_logits: ArrayLike) -> ClassificationAgreementAccumulator:
        """Adds a batch of ``(B, C)`` teacher and student logits (or probabilities, see ``inputs``); B = 0: no-op."""
        log_t, log_s = _classification_pair(teacher_logits, student_logits, self.temperature, self.inputs)
        if self.num_classes is not None and log_t.shape[1] != self.num_classes:
            raise InputError(f"Number of classes changed between batches: {self.num_classes} then {log_t.shape[1]}.")
        if log_t.shape[0] == 0:
            return self
        self.num_classes = log_t.shape[1]
        kl = kl_divergence_rows(log_t, log_s)
        self.n += log_t.shape[0]
        self.sum_exp_neg_kl += float(np.sum(np.exp(-kl)))
        self.sum_kl += float(np.sum(kl))
        self.sum_js += float(np.sum(js_divergence_rows(log_t, log_s)))
        self.top1_matches += int(np.sum(np.argmax(log_t, 1) == np.argmax(log_s, 1)))
        return self

    def __iadd__(self, other: ClassificationAgreementAccumulator) -> ClassificationAgreementAccumulator:
        if not isinstance(other, ClassificationAgreementAccumulator):
            raise InputTypeError(f"Only a ClassificationAgreementAccumulator can be added to one, got {type(other).__name__}.")
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

    def __add__(self, other: ClassificationAgreementAccumulator) -> ClassificationAgreementAccumulator:
        merged = ClassificationAgreementAccumulator(temperature=self.temperature, inputs=self.inputs)
        return merged.__iadd__(self).__iadd__(other)

    def reset(self) -> ClassificationAgreementAccumulator:
        """Forgets every batch (``temperature`` and ``inputs`` are kept)."""
        self.n, self.sum_exp_neg_kl, self.sum_kl, self.sum_js, self.top1_matches = 0, 0.0, 0.0, 0.0, 0
        self.num_classes = None
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

    def state_dict(self) -> dict[str, Any]:
        """The sums and the options as a flat dict."""
        return {"temperature": self.temperature, "inputs": self.inputs, "n": self.n,
                "sum_exp_neg_kl": self.sum_exp_neg_kl, "sum_kl": self.sum_kl, "sum_js": self.sum_js,
                "top1_matches": self.top1_matches, "num_classes": self.num_classes}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ClassificationAgreementAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "ClassificationAgreementAccumulator")
        inputs = state.get("inputs", "logits")
        if inputs not in ("logits", "probabilities"):
            raise InputError(f"`state['inputs']` must be 'logits' or 'probabilities', got {inputs!r}.")
        acc = cls(temperature=state_float(state, "temperature", default=1.0), inputs=inputs)
        acc.n = state_int(state, "n", minimum=0)
        acc.top1_matches = state_int(state, "top1_matches", minimum=0)
        for key in ("sum_exp_neg_kl", "sum_kl", "sum_js"):
            setattr(acc, key, state_float(state, key))
        if not (0 <= acc.sum_exp_neg_kl <= acc.n * (1 + 1e-9) and 0 <= acc.sum_js <= acc.n * (1 + 1e-9)
                and acc.sum_kl >= 0 and acc.top1_matches <= acc.n):
            raise InputError(f"`state` sums do not fit its count (n = {acc.n}): the state is damaged.")
        if state.get("num_classes") is not None:
            acc.num_classes = state_int(state, "num_classes", minimum=2)
        return acc


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
    array = as_float_array(value, name, ndim=(1, 2), min_rows=0)
    return array[:, None] if array.ndim == 1 else array


@dataclass
class RegressionAgreementAccumulator:
    """Additive state for regression agreement: n, the sum of squared differences, teacher sums and squares.

    The teacher's sums are taken about a shift, the first batch's teacher mean (``sum_t`` =
    :math:`\\sum_i (t_i - c)`, ``sum_t2`` = :math:`\\sum_i (t_i - c)^2`): the variance then needs no
    :math:`E[t^2] - E[t]^2` of raw values, which at a mean offset of 1e8 cancels to noise. States with
    different shifts merge after one is re-expressed about the other's
    (:math:`\\sum (u + \\delta)^2 = \\sum u^2 + 2\\delta \\sum u + n\\delta^2`). Every sum is of values
    times :math:`2^{\\mathrm{scale}}` (exact; 0 unless the outputs are extreme, 1e-160 or 1e160), so the
    squares neither underflow nor overflow: AOAg with the default ``max_mse`` is scale invariant and
    stays so. ``update`` / ``compute`` / ``reset`` / ``state_dict`` / ``from_state_dict``; ``+``.
    """

    n: int = 0
    sum_sq_diff: float = 0.0
    sum_t: np.ndarray | None = None
    sum_t2: np.ndarray | None = None
    shift_t: np.ndarray | None = None  # None: sums about the origin
    scale: int = 0

    def update(self, teacher_outputs: ArrayLike, student_outputs: ArrayLike) -> RegressionAgreementAccumulator:
        """Adds a batch of ``(B,)`` or ``(B, K)`` teacher and student outputs; B = 0 changes nothing."""
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
        if t.shape[0] == 0:
            return self
        with np.errstate(over="ignore", invalid="ignore"):
            batch_shift = t.mean(axis=0) if self.n == 0 else self.shift_t
        if batch_shift is not None and not np.all(np.isfinite(batch_shift)):  # rows near 1.8e308
            k = exponent_for(max_abs(t))
            batch_shift = np.ldexp(np.ldexp(t, k).mean(axis=0), -k)
        centred = t if batch_shift is None else t - batch_shift
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            batch = RegressionAgreementAccumulator(
                n=t.shape[0], sum_sq_diff=float(np.sum((t - s) ** 2)), sum_t=centred.sum(0),
                sum_t2=(centred * centred).sum(0), shift_t=batch_shift,
            )
        top = max(batch.sum_sq_diff, float(np.max(batch.sum_t2)))  # type: ignore[arg-type]
        if not (np.isfinite(top) and 2.0**-LOG2_RANGE <= top <= 2.0**LOG2_RANGE):
            batch = _scaled_regression_batch(t, s, batch_shift)
        self += batch
        return self

    def _reshifted(self, shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(sum_t, sum_t2)`` about ``shift`` instead of this state's own shift (in the state's units)."""
        assert self.sum_t is not None and self.sum_t2 is not None
        zero = np.zeros_like(self.sum_t)
        with np.errstate(over="ignore", invalid="ignore"):
            delta = np.ldexp((self.shift_t if self.shift_t is not None else zero) - (shift if shift is not None else zero),
                             self.scale)
            if not np.any(delta):
                return self.sum_t, self.sum_t2
            return self.sum_t + self.n * delta, self.sum_t2 + 2 * delta * self.sum_t + self.n * delta * delta

    def _rescale_to(self, scale: int) -> None:
        d = scale - self.scale
        if d:
            self.sum_sq_diff = float(np.ldexp(self.sum_sq_diff, 2 * d))
            self.sum_t, self.sum_t2 = np.ldexp(self.sum_t, d), np.ldexp(self.sum_t2, 2 * d)  # type: ignore[arg-type]
            self.scale = scale

    def _has_values(self) -> bool:
        return self.n > 0 and (self.sum_sq_diff > 0 or bool(np.any(self.sum_t2)))

    def __iadd__(self, other: RegressionAgreementAccumulator) -> RegressionAgreementAccumulator:
        if not isinstance(other, RegressionAgreementAccumulator):
            raise InputTypeError(f"Only a RegressionAgreementAccumulator can be added to one, got {type(other).__name__}.")
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.sum_sq_diff, self.scale = other.n, other.sum_sq_diff, other.scale
            self.sum_t, self.sum_t2 = other.sum_t.copy(), other.sum_t2.copy()  # type: ignore[union-attr]
            self.shift_t = None if other.shift_t is None else np.array(other.shift_t, dtype=np.float64)
            return self
        if other.sum_t is None or self.sum_t is None or other.sum_t.shape != self.sum_t.shape:
            raise InputError("Cannot merge regression agreement states over different numbers of outputs.")
        scale = other.scale if not self._has_values() else self.scale if not other._has_values() else min(self.scale, other.scale)
        if self.shift_t is not None and other.shift_t is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                distance = max_abs(self.shift_t - other.shift_t)
            if distance > 0 and np.isfinite(distance):
                scale = min(scale, exponent_for(distance))
        self._rescale_to(scale)
        if other.scale != scale:
            other = RegressionAgreementAccumulator(n=other.n, sum_sq_diff=other.sum_sq_diff, sum_t=other.sum_t,
                                                   sum_t2=other.sum_t2, shift_t=other.shift_t, scale=other.scale)
            other._rescale_to(scale)
        sum_t, sum_t2 = other._reshifted(self.shift_t)
        self.n += other.n
        self.sum_sq_diff += other.sum_sq_diff
        self.sum_t = self.sum_t + sum_t
        self.sum_t2 = self.sum_t2 + sum_t2  # type: ignore[operator]
        return self

    def __add__(self, other: RegressionAgreementAccumulator) -> RegressionAgreementAccumulator:
        return RegressionAgreementAccumulator().__iadd__(self).__iadd__(other)

    def reset(self) -> RegressionAgreementAccumulator:
        """Forgets every batch."""
        self.__init__()  # type: ignore[misc]
        return self

    @property
    def mse(self) -> float:
        """Mean squared difference between teacher and student outputs (over examples and outputs).

        In the outputs' own units: ``inf`` when that exceeds float64 (outputs of 1e160), though the
        agreement itself is still computed (from the rescaled sums).
        """
        if self.n == 0 or self.sum_t is None:
            raise InputError("Regression agreement needs at least 1 example, got 0.")
        with np.errstate(over="ignore", under="ignore"):
            return float(np.ldexp(self.sum_sq_diff / (self.n * self.sum_t.shape[0]), -2 * self.scale))

    def _scaled_variance(self) -> float:
        assert self.sum_t is not None and self.sum_t2 is not None
        mean = self.sum_t / self.n  # about the shift: small, so nothing cancels
        return float(np.mean(np.maximum(self.sum_t2 / self.n - mean * mean, 0.0)))

    def teacher_variance(self) -> float:
        """Population variance of the teacher's outputs, averaged over outputs (the default MSE_max)."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.ldexp(self._scaled_variance(), -2 * self.scale))

    def compute(self, *, max_mse: float | None = None) -> float:
        """AOAg = clip(1 - MSE / max_mse, 0, 1); ``max_mse`` defaults to the teacher's output variance."""
        if self.n == 0 or self.sum_t is None:
            raise InputError("Regression agreement needs at least 1 example, got 0.")
        scaled_mse = self.sum_sq_diff / (self.n * self.sum_t.shape[0])
        if max_mse is None:
            if self.n < 2:
                raise InputError("The default max_mse (teacher output variance) needs at least 2 examples; pass max_mse.")
            variance = self._scaled_variance()
            _, origin_sq = self._reshifted(None)  # the outputs' own size, about the origin
            if variance <= 0 or is_constant(variance * self.n * len(origin_sq), float(np.sum(origin_sq))):
                raise InputError(
                    "The teacher's outputs are constant, so the default max_mse (their variance) is 0. "
                    "Pass max_mse explicitly (e.g. the worst MSE seen in training)."
                )
            ratio = scaled_mse / variance
        else:
            max_mse = check_positive(max_mse, "max_mse")
            (m_mse, e_mse), (m_max, e_max) = np.frexp(scaled_mse), np.frexp(max_mse)
            with np.errstate(over="ignore", under="ignore"):
                ratio = float(np.ldexp(m_mse / m_max, int(e_mse) - int(e_max) - 2 * self.scale))
        return float(np.clip(1.0 - ratio, 0.0, 1.0))

    def state_dict(self) -> dict[str, Any]:
        """The sums as a flat dict."""
        state: dict[str, Any] = {"n": self.n, "sum_sq_diff": self.sum_sq_diff, "scale": self.scale}
        for key in ("sum_t", "sum_t2", "shift_t"):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RegressionAgreementAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "RegressionAgreementAccumulator")
        acc = cls(n=state_int(state, "n", minimum=0), scale=state_int(state, "scale", default=0))
        if acc.n == 0:
            return acc
        acc.sum_sq_diff = state_float(state, "sum_sq_diff")
        acc.sum_t = state_vector(state, "sum_t")
        acc.sum_t2 = state_vector(state, "sum_t2", acc.sum_t.shape[0])
        if "shift_t" in state:
            acc.shift_t = state_vector(state, "shift_t", acc.sum_t.shape[0])
        if acc.sum_sq_diff < 0 or np.any(acc.sum_t2 < 0):
            raise InputError("`state['sum_sq_diff']`/`state['sum_t2']` are sums of squares and cannot be negative.")
        return acc


def _scaled_regression_batch(t: np.ndarray, s: np.ndarray, shift: np.ndarray | None) -> RegressionAgreementAccumulator:
    """The sums of one batch of extreme (or constant) outputs, from values scaled to unit size by a power of two."""
    centred, k_c = prescaled_difference(t, shift)
    diff, k_d = prescaled_difference(t, s)
    exponents = [k + exponent_for(max_abs(v)) for v, k in ((centred, k_c), (diff, k_d)) if max_abs(v) > 0]
    scale = min(exponents) if exponents else 0
    np.ldexp(centred, scale - k_c, out=centred)
    np.ldexp(diff, scale - k_d, out=diff)
    return RegressionAgreementAccumulator(n=t.shape[0], sum_sq_diff=float(np.sum(diff * diff)), sum_t=centred.sum(0),
                                          sum_t2=(centred * centred).sum(0), shift_t=shift, scale=scale)


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




def check_agreement_options(
    *,
    temperature: float = 1.0,
    inputs: str = "logits",
    max_mse: float | None = None,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> None:
    """Validates every AOAg option, whichever measure will use it (the package's rule: see ``compute_krs``).

    Raises:
        InputError: ``temperature`` not a finite number > 0, ``inputs`` not ``logits``/``probabilities``,
            ``max_mse`` not None or > 0, ``num_classes`` not None or an integer >= 1, ``ignore_index`` not
            None or an integer.
    """
    check_positive(temperature, "temperature")
    check_choice(inputs, "inputs", ("logits", "probabilities"))
    if max_mse is not None:
        check_positive(max_mse, "max_mse")
    if num_classes is not None:
        check_integer(num_classes, "num_classes", minimum=1)
    if ignore_index is not None:
        check_integer(ignore_index, "ignore_index")


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
    """AOAg by method name: dispatches to the classification, regression, mask or box measure.

    Every option is validated whatever the method (:func:`check_agreement_options`); those the method
    does not use are then ignored.
    """
    check_choice(method, "aoag_method", AOAG_METHODS)
    check_agreement_options(temperature=temperature, inputs=inputs, max_mse=max_mse, num_classes=num_classes,
                            ignore_index=ignore_index)
    if method in CLASSIFICATION_METHODS:
        return classification_agreement(
            teacher_outputs, student_outputs, method=method, temperature=temperature, inputs=inputs  # type: ignore[arg-type]
        )
    if method == "mse":
        return regression_agreement(teacher_outputs, student_outputs, max_mse=max_mse)
    if method == "mask_iou":
        return mask_iou_agreement(teacher_outputs, student_outputs, num_classes=num_classes, ignore_index=ignore_index)
    return box_iou_agreement(teacher_outputs, student_outputs)  # type: ignore[arg-type]
