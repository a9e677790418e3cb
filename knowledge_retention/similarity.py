r"""Feature Similarity Score (FSS): how alike the teacher's and the student's representations are.

Everything here takes teacher features ``(N, D_t)`` and student features ``(N, D_s)`` (one pooled
vector per example; ``D_t`` and ``D_s`` may differ) and returns numbers.

Linear CKA is computed in *feature space* from additive sums (Kornblith et al. 2019, Sec. 3 and
their ``feature_space_linear_cka``): with :math:`n`, :math:`\sum_i x_i`, :math:`\sum_i y_i`,
:math:`X^\top X`, :math:`Y^\top Y` and :math:`Y^\top X` accumulated in float64, the centred
cross-covariances follow from

.. math::

    \tilde{Y}^\top \tilde{X} = Y^\top X - \tfrac{1}{n} (\textstyle\sum_i y_i)(\sum_i x_i)^\top,
    \qquad
    \mathrm{CKA}(X, Y) = \frac{\lVert \tilde{Y}^\top \tilde{X} \rVert_F^2}
        {\lVert \tilde{X}^\top \tilde{X} \rVert_F \, \lVert \tilde{Y}^\top \tilde{Y} \rVert_F}.

So batches, and processes, merge by *adding* their sums, and memory is
:math:`O(D_t^2 + D_s^2 + D_t D_s)` whatever :math:`N` is.  The debiased estimator (unbiased HSIC,
Song et al. 2012; Kornblith et al.'s ``_debiased_dot_product_similarity_helper``) needs, besides,
per-example squared norms of the *centred* rows; they expand into further additive sums
(:math:`\sum\lVert x_i\rVert^4`, :math:`\sum \lVert x_i\rVert^2 x_i`, ...), derived in
:func:`_sum_centered_sqnorm_products`.

The sums are taken about a shift, the first batch's column means (CKA is translation invariant):
raw sums of rows far from the origin, as transformer states with outlier dimensions are, cancel
catastrophically when centred (2e-4 relative error of debiased CKA at a mean offset of 1000 standard
deviations); shifted sums stay exact to rounding. States with different shifts merge after one is
re-expressed about the other's shift (:func:`_reshifted`).

Where the code lives: the feature-space accumulator and :func:`linear_cka` in :mod:`.feature_cka`
(sums also scaled by powers of two, :mod:`._numerics`, so features of 1e-150 or 1e150 give the same
CKA), the Gram-matrix forms (RBF, and linear when D > N) in :mod:`.kernel_cka`; this module re-exports
them and holds the cosine, cross-layer and FSS-over-layers code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from ._numerics import exponent_for, max_abs, prescaled_difference
from ._state import check_state_mapping, state_float, state_int, state_matrix, state_vector
from ._validation import (
    ArrayLike,
    InputError,
    InputTypeError,
    as_float_array,
    as_layers,
    check_choice,
    check_cka_examples,
    check_same_length,
)
from .feature_cka import (
    _CHUNK_ROWS,
    MAX_STATE_BYTES,
    LinearCKAAccumulator,
    _batch_sums,
    _clip_unit,
    _reshifted,
    _shift_cross,
    linear_cka,
)
from .kernel_cka import RBF_MAX_EXAMPLES, _center_gram, _gram_rbf, gram_cka, gram_linear_cka, rbf_cka
from .methods import FSS_METHODS  # the one list every front end (CLI, Space, widget) offers

__all__ = [
    "FSS_METHODS",
    "RBF_MAX_EXAMPLES",
    "CosineAccumulator",
    "CrossLayerCKAAccumulator",
    "LinearCKAAccumulator",
    "check_cka_examples",
    "cross_layer_cka",
    "feature_similarity_score",
    "gram_cka",
    "gram_linear_cka",
    "layer_similarity",
    "linear_cka",
    "mean_cosine_similarity",
    "rbf_cka",
]

FSSMethod = Literal["linear_cka", "debiased_cka", "rbf_cka", "cosine"]

# re-exported: the former home of these helpers
_ = (_CHUNK_ROWS, MAX_STATE_BYTES, _batch_sums, _center_gram, _gram_rbf, _reshifted)


def _validate_pair(teacher: ArrayLike, student: ArrayLike, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=min_rows)
    s = as_float_array(student, "student_features", ndim=2, min_rows=min_rows)
    check_same_length(t, s, "teacher_features", "student_features")
    return t, s



# --- Cosine ------------------------------------------------------------------------------------------


def _scaled_rows(x: np.ndarray) -> np.ndarray:
    """``x`` with each row divided by a power of two close to its largest absolute entry (exactly)."""
    _, exponent = np.frexp(np.max(np.abs(x), axis=1, keepdims=True))
    return np.ldexp(x, -exponent)


@dataclass
class CosineAccumulator:
    """Additive state for the mean per-example cosine similarity (``n`` and the sum of cosines).

    ``update`` / ``compute`` / ``reset`` / ``state_dict`` / ``from_state_dict``; merges with ``+``.
    """

    n: int = 0
    total: float = 0.0

    def update(self, teacher: ArrayLike, student: ArrayLike) -> CosineAccumulator:
        """Adds a batch of ``(B, D)`` teacher and student features (same D); B = 0 changes nothing."""
        t, s = _validate_pair(teacher, student, min_rows=0)
        if t.shape[1] != s.shape[1]:
            raise InputError(
                f"Cosine similarity needs features of the same width, got teacher width {t.shape[1]} and "
                f"student width {s.shape[1]}. Use fss_method='linear_cka' (CKA compares widths that differ)."
            )
        if t.shape[0] == 0:
            return self
        # Each row scaled by a power of two near its largest entry (exact: no rounding) before the
        # squares and products: cosine is scale invariant per row, and rows of size 1e200 or 1e-200
        # would otherwise overflow to inf/inf or underflow to "all-zero" vectors. (A common offset is
        # not removed: unlike CKA, cosine similarity is not translation invariant.)
        t, s = _scaled_rows(t), _scaled_rows(s)
        norms = np.linalg.norm(t, axis=1) * np.linalg.norm(s, axis=1)
        if np.any(norms == 0):
            raise InputError(
                f"Cosine similarity is undefined for all-zero feature vectors ({int(np.sum(norms == 0))} row(s))."
            )
        self.n += t.shape[0]
        self.total += float(np.sum(np.einsum("ij,ij->i", t, s) / norms))
        return self

    def __iadd__(self, other: CosineAccumulator) -> CosineAccumulator:
        if not isinstance(other, CosineAccumulator):
            raise InputTypeError(f"Only a CosineAccumulator can be added to one, got {type(other).__name__}.")
        self.n += other.n
        self.total += other.total
        return self

    def __add__(self, other: CosineAccumulator) -> CosineAccumulator:
        return CosineAccumulator().__iadd__(self).__iadd__(other)

    def reset(self) -> CosineAccumulator:
        """Forgets every batch."""
        self.n, self.total = 0, 0.0
        return self

    def compute(self) -> float:
        """The mean cosine similarity, in [-1, 1]."""
        if self.n == 0:
            raise InputError("Cosine similarity needs at least 1 example, got 0.")
        return self.total / self.n

    def state_dict(self) -> dict[str, Any]:
        """The sums as a flat dict."""
        return {"n": self.n, "total": self.total}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CosineAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "CosineAccumulator")
        n = state_int(state, "n", minimum=0)
        total = state_float(state, "total")
        if abs(total) > n * (1 + 1e-9):
            raise InputError(f"`state['total']` must lie in [-n, n] (a sum of {n} cosines), got {total}.")
        return cls(n=n, total=total)


def mean_cosine_similarity(teacher: ArrayLike, student: ArrayLike) -> float:
    r"""Mean over examples of :math:`\cos(x_i, y_i)`, in [-1, 1]; needs ``D_t == D_s``.

    Example:
        >>> mean_cosine_similarity([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, -1.0]])
        0.0
    """
    return CosineAccumulator().update(teacher, student).compute()


# --- FSS over layer pairs ------------------------------------------------------------------------------


def layer_similarity(
    teacher: ArrayLike, student: ArrayLike, *, method: FSSMethod = "linear_cka", rbf_threshold: float = 1.0
) -> float:
    """One layer pair's similarity on the FSS scale [0, 1], by ``method``.

    ``cosine`` is clipped below at 0 (a negative mean cosine retains no similarity).
    """
    check_choice(method, "fss_method", FSS_METHODS)
    if method == "linear_cka":
        return linear_cka(teacher, student)
    if method == "debiased_cka":
        return _clip_unit(linear_cka(teacher, student, debiased=True))
    if method == "rbf_cka":
        return _clip_unit(rbf_cka(teacher, student, threshold=rbf_threshold))
    return max(0.0, mean_cosine_similarity(teacher, student))


def feature_similarity_score(
    teacher_features: ArrayLike | Sequence[ArrayLike],
    student_features: ArrayLike | Sequence[ArrayLike],
    *,
    method: FSSMethod = "linear_cka",
    rbf_threshold: float = 1.0,
) -> float:
    r"""FSS: the mean, over paired layers, of the per-pair feature similarity.

    .. math:: \mathrm{FSS} = \frac{1}{L}\sum_{l=1}^{L} \mathrm{sim}(X_l, Y_l) \in [0, 1]

    Args:
        teacher_features: ``(N, D_t)`` for one layer, an ``(N, L, D_t)`` stack, or a list of L arrays
            ``(N, D_t^l)`` (:func:`~knowledge_retention._validation.as_layers`), paired by position
            with ``student_features``.
        student_features: the student's features, same N and the same number of layers.
        method: ``linear_cka`` (default), ``debiased_cka``, ``rbf_cka`` or ``cosine`` (same widths only).
            The debiased, RBF and cosine values are clipped to [0, 1] for the FSS scale.
        rbf_threshold: RBF bandwidth as a fraction of the median distance.

    Returns:
        FSS in [0, 1]; higher is better, 1 is best.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).normal(size=(40, 5))
        >>> feature_similarity_score([x, x], [x, -x])
        1.0
    """
    teachers = as_layers(teacher_features, "teacher_features")
    students = as_layers(student_features, "student_features")
    if len(teachers) != len(students):
        raise InputError(
            f"`teacher_features` and `student_features` must pair layers one to one: got {len(teachers)} "
            f"teacher layer(s) and {len(students)} student layer(s)."
        )
    scores = [layer_similarity(t, s, method=method, rbf_threshold=rbf_threshold) for t, s in zip(teachers, students, strict=True)]
    return float(np.mean(scores))


# --- Cross-layer CKA matrix (the paper's heatmaps) ---------------------------------------------------


@dataclass
class CrossLayerCKAAccumulator:
    """Additive state for the ``(L_t, L_s)`` matrix of linear CKA between every teacher and student layer.

    Memory: :math:`\\sum_l D_t^2 + \\sum_l D_s^2 + L_t L_s D_t D_s` float64 values (13 x 7 layers of
    width 768: about 0.45 GB), independent of N. Like :class:`LinearCKAAccumulator`, the sums are
    taken about each layer's first-batch mean, and of rows scaled by a power of two per layer
    (``scale_t[i]``, ``scale_s[j]``; exact), so that no layer's size can overflow or underflow them.
    ``update`` / ``compute`` / ``reset`` / ``state_dict`` / ``from_state_dict``; merges with ``+``.
    """

    n: int = 0
    sum_t: list[np.ndarray] = field(default_factory=list)
    sum_s: list[np.ndarray] = field(default_factory=list)
    tt: list[np.ndarray] = field(default_factory=list)
    ss: list[np.ndarray] = field(default_factory=list)
    st: list[list[np.ndarray]] = field(default_factory=list)  # st[i][j] = S_j^T T_i
    shift_t: list[np.ndarray] = field(default_factory=list)
    shift_s: list[np.ndarray] = field(default_factory=list)
    scale_t: list[int] = field(default_factory=list)
    scale_s: list[int] = field(default_factory=list)

    def update(self, teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike]) -> CrossLayerCKAAccumulator:
        """Adds a batch: lists of ``(B, D)`` arrays, one per teacher layer and one per student layer (B = 0: no-op)."""
        for value, name in ((teacher_layers, "teacher_layers"), (student_layers, "student_layers")):
            if not isinstance(value, (list, tuple)):
                raise InputTypeError(f"`{name}` must be a list of (B, D) arrays, one per layer; got {type(value).__name__}.")
        ts = [as_float_array(x, f"teacher_layers[{i}]", ndim=2, min_rows=0) for i, x in enumerate(teacher_layers)]
        ss = [as_float_array(x, f"student_layers[{j}]", ndim=2, min_rows=0) for j, x in enumerate(student_layers)]
        if not ts or not ss:
            raise InputError("`teacher_layers` and `student_layers` must each hold at least one layer.")
        for i, x in enumerate(ts + ss):
            if x.shape[0] != ts[0].shape[0]:
                raise InputError(f"All layers of a batch must have the same number of rows; layer {i} has {x.shape[0]}.")
        if self.n and (len(ts) != len(self.tt) or len(ss) != len(self.ss)):
            raise InputError(
                f"Number of layers changed between batches: {len(self.tt)}x{len(self.ss)} before, {len(ts)}x{len(ss)} now."
            )
        if ts[0].shape[0] == 0:
            return self
        shift_t, shift_s = (self.shift_t, self.shift_s) if self.n else ([x.mean(axis=0) for x in ts], [y.mean(axis=0) for y in ss])
        scaled_t = [_unit_rows(x, a) for x, a in zip(ts, shift_t, strict=True)]
        scaled_s = [_unit_rows(y, b) for y, b in zip(ss, shift_s, strict=True)]
        ts, ss = [u for u, _ in scaled_t], [v for v, _ in scaled_s]
        batch = CrossLayerCKAAccumulator(
            shift_t=shift_t, shift_s=shift_s,
            n=ts[0].shape[0],
            sum_t=[x.sum(0) for x in ts],
            sum_s=[y.sum(0) for y in ss],
            tt=[x.T @ x for x in ts],
            ss=[y.T @ y for y in ss],
            st=[[y.T @ x for y in ss] for x in ts],
            scale_t=[e for _, e in scaled_t], scale_s=[e for _, e in scaled_s],
        )
        self += batch
        return self

    def __iadd__(self, other: CrossLayerCKAAccumulator) -> CrossLayerCKAAccumulator:
        if not isinstance(other, CrossLayerCKAAccumulator):
            raise InputTypeError(f"Only a CrossLayerCKAAccumulator can be added to one, got {type(other).__name__}.")
        if other.n == 0:
            return self
        if self.n == 0:
            self.sum_t = [a.copy() for a in other.sum_t]
            self.sum_s = [a.copy() for a in other.sum_s]
            self.tt = [a.copy() for a in other.tt]
            self.ss = [a.copy() for a in other.ss]
            self.st = [[a.copy() for a in row] for row in other.st]
            self.shift_t = [a.copy() for a in other.shift_t]
            self.shift_s = [a.copy() for a in other.shift_s]
            self.scale_t = list(other.scale_t) or [0] * len(other.tt)
            self.scale_s = list(other.scale_s) or [0] * len(other.ss)
        else:
            if len(other.tt) != len(self.tt) or len(other.ss) != len(self.ss):
                raise InputError(
                    f"Cannot merge cross-layer CKA states of {len(self.tt)}x{len(self.ss)} and "
                    f"{len(other.tt)}x{len(other.ss)} layers."
                )
            # the streaming case - a batch about this state's own shifts and scales - adds as it is: the copy,
            # the rescaling and the re-shift by a zero difference below would only add zeros (three outer
            # products per matrix per batch)
            if not (self._same_frame(other)):
                other = other._copy()
                for side, count in (("t", len(self.tt)), ("s", len(self.ss))):
                    for i in range(count):
                        scale = _merged_layer_scale(self, other, side, i)
                        self._rescale_layer(side, i, scale)
                        other._rescale_layer(side, i, scale)
                other = other._reshifted(self.shift_t, self.shift_s)
            for mine, theirs in ((self.sum_t, other.sum_t), (self.sum_s, other.sum_s), (self.tt, other.tt), (self.ss, other.ss)):
                for a, b in zip(mine, theirs, strict=True):
                    a += b
            for row_a, row_b in zip(self.st, other.st, strict=True):
                for a, b in zip(row_a, row_b, strict=True):
                    a += b
        self.n += other.n
        return self

    def __add__(self, other: CrossLayerCKAAccumulator) -> CrossLayerCKAAccumulator:
        merged = CrossLayerCKAAccumulator()
        merged += self
        merged += other
        return merged

    def _same_frame(self, other: CrossLayerCKAAccumulator) -> bool:
        """Whether ``other``'s sums are about the same shifts and at the same scales as these."""
        return (self._scales("t") == other._scales("t") and self._scales("s") == other._scales("s")
                and all(a is b or np.array_equal(a, b) for a, b in zip(self.shift_t, other.shift_t, strict=True))
                and all(a is b or np.array_equal(a, b) for a, b in zip(self.shift_s, other.shift_s, strict=True)))

    def _copy(self) -> CrossLayerCKAAccumulator:
        return CrossLayerCKAAccumulator() + self if self.n else CrossLayerCKAAccumulator()

    def _scales(self, side: str) -> list[int]:
        scales = self.scale_t if side == "t" else self.scale_s
        count = len(self.tt) if side == "t" else len(self.ss)
        if len(scales) != count:  # a state built by hand: unscaled
            scales[:] = [0] * count
        return scales

    def _rescale_layer(self, side: str, i: int, scale: int) -> None:
        """Re-expresses layer ``i`` of the teacher (``side='t'``) or the student at the scale ``2**scale``."""
        scales = self._scales(side)
        d = scale - scales[i]
        if d == 0:
            return
        if side == "t":
            self.sum_t[i], self.tt[i] = np.ldexp(self.sum_t[i], d), np.ldexp(self.tt[i], 2 * d)
            self.st[i] = [np.ldexp(c, d) for c in self.st[i]]
        else:
            self.sum_s[i], self.ss[i] = np.ldexp(self.sum_s[i], d), np.ldexp(self.ss[i], 2 * d)
            for row in self.st:
                row[i] = np.ldexp(row[i], d)
        scales[i] = scale

    def _reshifted(self, shift_t: list[np.ndarray], shift_s: list[np.ndarray]) -> CrossLayerCKAAccumulator:
        """These sums re-expressed about other shifts (for merging states of other processes)."""
        if len(shift_t) != len(self.shift_t) or len(shift_s) != len(self.shift_s):
            raise InputError(
                f"Cannot merge cross-layer CKA states of {len(self.shift_t)}x{len(self.shift_s)} and "
                f"{len(shift_t)}x{len(shift_s)} layers."
            )
        scale_t, scale_s = self._scales("t"), self._scales("s")
        dt = [np.ldexp(a - b, e) for a, b, e in zip(self.shift_t, shift_t, scale_t, strict=True)]
        ds = [np.ldexp(a - b, e) for a, b, e in zip(self.shift_s, shift_s, scale_s, strict=True)]
        n = self.n
        return CrossLayerCKAAccumulator(
            n=n,
            sum_t=[a + n * d for a, d in zip(self.sum_t, dt, strict=True)],
            sum_s=[a + n * d for a, d in zip(self.sum_s, ds, strict=True)],
            tt=[_shift_cross(c, a, a, d, d, n) for c, a, d in zip(self.tt, self.sum_t, dt, strict=True)],
            ss=[_shift_cross(c, a, a, d, d, n) for c, a, d in zip(self.ss, self.sum_s, ds, strict=True)],
            st=[[_shift_cross(self.st[i][j], self.sum_s[j], self.sum_t[i], ds[j], dt[i], n) for j in range(len(ds))]
                for i in range(len(dt))],
            shift_t=shift_t, shift_s=shift_s, scale_t=list(scale_t), scale_s=list(scale_s),
        )

    def pair(self, i: int, j: int) -> LinearCKAAccumulator:
        """The (biased) linear-CKA state of teacher layer ``i`` and student layer ``j``."""
        return LinearCKAAccumulator(
            n=self.n, sum_t=self.sum_t[i], sum_s=self.sum_s[j], tt=self.tt[i], ss=self.ss[j], st=self.st[i][j],
            shift_t=self.shift_t[i], shift_s=self.shift_s[j], track_debiased=False,
            scale_t=self._scales("t")[i], scale_s=self._scales("s")[j],
        )

    def reset(self) -> CrossLayerCKAAccumulator:
        """Forgets every batch."""
        self.__init__()  # type: ignore[misc]
        return self

    def compute(self) -> np.ndarray:
        """Returns the ``(L_t, L_s)`` linear-CKA matrix."""
        check_cka_examples(self.n, what="Cross-layer CKA")
        return np.array([[self.pair(i, j).compute() for j in range(len(self.ss))] for i in range(len(self.tt))])

    def state_dict(self) -> dict[str, Any]:
        """The sums as a dict of lists (for saving or sending between processes)."""
        return {"n": self.n, "sum_t": list(self.sum_t), "sum_s": list(self.sum_s), "tt": list(self.tt),
                "ss": list(self.ss), "st": [list(row) for row in self.st], "shift_t": list(self.shift_t),
                "shift_s": list(self.shift_s), "scale_t": list(self._scales("t")), "scale_s": list(self._scales("s"))}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CrossLayerCKAAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "CrossLayerCKAAccumulator")
        n = state_int(state, "n", minimum=0)
        if n == 0:
            return cls()
        acc = cls(n=n)
        for key in ("sum_t", "sum_s", "tt", "ss", "st", "shift_t", "shift_s", "scale_t", "scale_s"):
            if not isinstance(state.get(key), (list, tuple)):
                raise InputError(f"`state['{key}']` must be a list (one entry per layer), got {type(state.get(key)).__name__}.")
        for side in ("t", "s"):
            sums = [state_vector({f"sum_{side}[{i}]": v}, f"sum_{side}[{i}]") for i, v in enumerate(state[f"sum_{side}"])]
            widths = [v.shape[0] for v in sums]
            second = [state_matrix({f"{side}{side}[{i}]": v}, f"{side}{side}[{i}]", (w, w))
                      for i, (v, w) in enumerate(zip(state[f"{side}{side}"], widths, strict=False))]
            shifts = [state_vector({f"shift_{side}[{i}]": v}, f"shift_{side}[{i}]", w)
                      for i, (v, w) in enumerate(zip(state[f"shift_{side}"], widths, strict=False))]
            scales = [state_int({f"scale_{side}[{i}]": v}, f"scale_{side}[{i}]") for i, v in enumerate(state[f"scale_{side}"])]
            if not (len(sums) == len(second) == len(shifts) == len(scales)) or not sums:
                raise InputError(f"`state['sum_{side}']`, `state['{side}{side}']`, `state['shift_{side}']` and "
                                 f"`state['scale_{side}']` must list the same layers.")
            setattr(acc, f"sum_{side}", sums)
            setattr(acc, f"{side}{side}", second)
            setattr(acc, f"shift_{side}", shifts)
            setattr(acc, f"scale_{side}", scales)
        rows = state["st"]
        if len(rows) != len(acc.tt) or any(not isinstance(r, (list, tuple)) or len(r) != len(acc.ss) for r in rows):
            raise InputError(f"`state['st']` must be {len(acc.tt)} lists of {len(acc.ss)} matrices.")
        acc.st = [[state_matrix({f"st[{i}][{j}]": c}, f"st[{i}][{j}]", (acc.ss[j].shape[0], acc.tt[i].shape[0]))
                   for j, c in enumerate(row)] for i, row in enumerate(rows)]
        return acc


def _unit_rows(x: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, int]:
    """``(x - shift) * 2**e`` and ``e``, with the largest value in [0.5, 1) (``e = 0`` for constant rows)."""
    v, k = prescaled_difference(x, shift)
    top = max_abs(v)
    if top == 0:
        return v, 0
    e = k + exponent_for(top)
    return np.ldexp(v, e - k, out=v), e


def _merged_layer_scale(a: CrossLayerCKAAccumulator, b: CrossLayerCKAAccumulator, side: str, i: int) -> int:
    """The exponent layer ``i`` takes in both states before they are added (the smaller, unless one has no spread)."""
    second = (lambda acc: acc.tt[i]) if side == "t" else (lambda acc: acc.ss[i])
    e_a, e_b = a._scales(side)[i], b._scales(side)[i]
    if not np.any(np.diagonal(second(a))):
        scale = e_b
    elif not np.any(np.diagonal(second(b))):
        scale = e_a
    else:
        scale = min(e_a, e_b)
    shift_a = (a.shift_t if side == "t" else a.shift_s)[i]
    shift_b = (b.shift_t if side == "t" else b.shift_s)[i]
    with np.errstate(over="ignore", invalid="ignore"):
        distance = max_abs(shift_a - shift_b)
    if distance > 0 and np.isfinite(distance):
        scale = min(scale, exponent_for(distance))
    return scale


def cross_layer_cka(teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike]) -> np.ndarray:
    """Linear CKA between every teacher layer and every student layer: an ``(L_t, L_s)`` matrix.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(2).normal(size=(30, 4))
        >>> cross_layer_cka([x, 2 * x, x ** 2], [x]).round(3).tolist()
        [[1.0], [1.0], [0.253]]
    """
    return CrossLayerCKAAccumulator().update(teacher_layers, student_layers).compute()


def as_method(value: str) -> FSSMethod:
    """Validates an FSS method name."""
    return cast(FSSMethod, check_choice(value, "fss_method", FSS_METHODS))
