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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from ._validation import (
    ArrayLike,
    InputError,
    as_float_array,
    as_layers,
    check_choice,
    check_finite_values,
    check_same_length,
    is_constant,
)

FSSMethod = Literal["linear_cka", "debiased_cka", "rbf_cka", "cosine"]
FSS_METHODS: tuple[str, ...] = ("linear_cka", "debiased_cka", "rbf_cka", "cosine")

#: Rows per chunk of one ``LinearCKAAccumulator.update`` call: the float64 buffers are this size
#: (8192 x (D_t + D_s) x 8 bytes, 75 MB at 768 + 384), whatever N is.
_CHUNK_ROWS = 8192

#: Gram-based CKA stores several N x N float64 matrices; refuse sizes that would not fit comfortably.
RBF_MAX_EXAMPLES = 10_000



def check_cka_examples(n: int, *, debiased: bool = False, what: str = "CKA") -> None:
    """Raises :class:`InputError` unless ``n`` examples can give a meaningful CKA.

    Three at least (four for the debiased estimator): two centred points are always aligned
    (:math:`x_1 - \\bar x = -(x_2 - \\bar x)`, likewise for the student), so with N = 2 CKA is 1 for any
    features, whatever the kernel. Small N above that is allowed; the biased estimator's upward bias
    there is what the report and the Space warn about.
    """
    min_n = 4 if debiased else 3
    if n >= min_n:
        return
    why = ("two centred points are always aligned (x1 - mean = -(x2 - mean) for both models), so CKA "
           "would be 1 for any features" if n == 2 else "CKA compares examples with each other")
    raise InputError(
        f"{what}{' (debiased)' if debiased else ''} needs at least {min_n} examples, got {n}{': ' + why if n < 3 else ''}."
    )


def _validate_pair(teacher: ArrayLike, student: ArrayLike, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=min_rows)
    s = as_float_array(student, "student_features", ndim=2, min_rows=min_rows)
    check_same_length(t, s, "teacher_features", "student_features")
    return t, s


def _sum_centered_sqnorm_products(
    n: int,
    q_uv: float,
    w_uv: np.ndarray,
    w_vu: np.ndarray,
    cross_uv: np.ndarray,
    sq_u: float,
    sq_v: float,
    mu_u: np.ndarray,
    mu_v: np.ndarray,
) -> float:
    r"""Returns :math:`\sum_i \lVert u_i - \mu_u\rVert^2 \lVert v_i - \mu_v\rVert^2` from additive sums.

    With :math:`a_i = \lVert u_i\rVert^2 - 2 u_i\cdot\mu_u + \lVert\mu_u\rVert^2` and
    :math:`b_i` likewise, expanding :math:`\sum_i a_i b_i` and using :math:`\sum_i u_i = n\mu_u`:

    .. math::

        \sum_i a_i b_i = Q_{uv} - 2 W_{uv}\cdot\mu_v - 2 W_{vu}\cdot\mu_u
            + \lVert\mu_v\rVert^2 S_u + \lVert\mu_u\rVert^2 S_v
            + 4\,\mu_u^\top C_{uv}\,\mu_v - 3 n \lVert\mu_u\rVert^2\lVert\mu_v\rVert^2

    where :math:`Q_{uv}=\sum\lVert u_i\rVert^2\lVert v_i\rVert^2`,
    :math:`W_{uv}=\sum\lVert u_i\rVert^2 v_i`, :math:`W_{vu}=\sum\lVert v_i\rVert^2 u_i`,
    :math:`C_{uv}=\sum u_i v_i^\top`, :math:`S_u=\sum\lVert u_i\rVert^2`.
    """
    m_u = float(mu_u @ mu_u)
    m_v = float(mu_v @ mu_v)
    return float(
        q_uv
        - 2.0 * float(w_uv @ mu_v)
        - 2.0 * float(w_vu @ mu_u)
        + m_v * sq_u
        + m_u * sq_v
        + 4.0 * float(mu_u @ cross_uv @ mu_v)
        - 3.0 * n * m_u * m_v
    )


def _debiased_hsic(xty: float, sum_ab: float, sum_a: float, sum_b: float, n: int) -> float:
    """Kornblith et al.'s ``_debiased_dot_product_similarity_helper`` (unbiased HSIC up to a factor)."""
    return xty - n / (n - 2.0) * sum_ab + sum_a * sum_b / ((n - 1.0) * (n - 2.0))


@dataclass
class LinearCKAAccumulator:
    """Additive state for feature-space linear CKA, biased and debiased.

    Feed batches with :meth:`update`; merge states of other batches or processes with ``+`` (every
    field is a sum); read the score with :meth:`compute`.  All sums are float64.

    ``track_debiased=False`` skips the extra sums of the debiased estimator (they add about 8% to a
    batch of 1024 × 768/384 features: ``benchmarks/cka_scaling.py``); ``compute(debiased=True)``
    then refuses. A merge keeps them only if both sides have them.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 8)); y = x @ rng.normal(size=(8, 4))
        >>> acc = LinearCKAAccumulator()
        >>> for lo in range(0, 100, 30):
        ...     _ = acc.update(x[lo:lo + 30], y[lo:lo + 30])
        >>> round(acc.compute(), 6) == round(linear_cka(x, y), 6)
        True
    """

    n: int = 0
    sum_t: np.ndarray | None = None
    sum_s: np.ndarray | None = None
    tt: np.ndarray | None = None
    ss: np.ndarray | None = None
    st: np.ndarray | None = None
    # extra sums for the debiased estimator
    q_tt: float = 0.0
    q_ss: float = 0.0
    q_ts: float = 0.0
    w_tt: np.ndarray | None = None
    w_ss: np.ndarray | None = None
    w_ts: np.ndarray | None = None  # sum ||t_i||^2 s_i
    w_st: np.ndarray | None = None  # sum ||s_i||^2 t_i
    # every sum is of rows minus these shifts (the first batch's means); None = no shift
    shift_t: np.ndarray | None = None
    shift_s: np.ndarray | None = None
    track_debiased: bool = True

    def update(
        self, teacher: ArrayLike, student: ArrayLike, *, sample_weight: ArrayLike | None = None
    ) -> LinearCKAAccumulator:
        """Adds a batch: ``teacher`` of shape ``(B, D_t)``, ``student`` of shape ``(B, D_s)``.

        ``sample_weight`` (``(B,)``, non-negative integers) counts each example that many times:
        the bootstrap's resampling multiplicities.
        """
        # The rows keep their dtype here: each chunk of _CHUNK_ROWS rows is converted to float64 and
        # shifted in one pass into a reused buffer, so one large call (67,349 x 768 float32) never
        # makes a full float64 copy. NaN/Inf are found from each chunk's own sums (a NaN or Inf in a
        # row makes the diagonal of XᵀX non-finite), which saves a pass over the rows.
        t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=1, dtype=None, check_finite=False)
        s = as_float_array(student, "student_features", ndim=2, min_rows=1, dtype=None, check_finite=False)
        check_same_length(t, s, "teacher_features", "student_features")
        weights = None
        if sample_weight is not None:
            weights = as_float_array(sample_weight, "sample_weight", ndim=1)
            if weights.shape[0] != t.shape[0]:
                raise InputError(f"`sample_weight` must have one entry per example ({t.shape[0]}), got {weights.shape[0]}.")
            if np.any(weights < 0) or np.any(weights != np.round(weights)):
                raise InputError("`sample_weight` must hold non-negative integer counts (resampling multiplicities).")
        if self.tt is not None and (t.shape[1] != self.tt.shape[0] or s.shape[1] != self.ss.shape[0]):  # type: ignore[union-attr]
            raise InputError(
                f"Feature widths changed between batches: the accumulator holds teacher width "
                f"{self.tt.shape[0]} and student width {self.ss.shape[0]}, the batch has "  # type: ignore[union-attr]
                f"{t.shape[1]} and {s.shape[1]}."
            )
        shift_t, shift_s = self.shift_t, self.shift_s
        if self.n == 0 and shift_t is None:
            # Shifted sums: CKA is translation invariant, and sums of rows taken about a point near
            # their mean keep the digits that raw sums lose to cancellation when the features sit
            # far from the origin (outlier dimensions of transformer states); the debiased
            # estimator lost 2e-4 relative at a mean offset of 1000 standard deviations without it.
            # The first chunk's mean is near enough to the mean of all rows.
            head = slice(0, _CHUNK_ROWS)
            shift_t = t[head].mean(axis=0, dtype=np.float64)
            shift_s = s[head].mean(axis=0, dtype=np.float64)
        batch: LinearCKAAccumulator | None = None
        for lo in range(0, t.shape[0], _CHUNK_ROWS):
            rows = slice(lo, lo + _CHUNK_ROWS)
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite input is reported just below
                chunk = _batch_sums(self._shifted(t[rows], shift_t, "t"), self._shifted(s[rows], shift_s, "s"),
                                    None if weights is None else weights[rows], debiased=self.track_debiased)
            if not (np.isfinite(np.trace(chunk.tt)) and np.isfinite(np.trace(chunk.ss))):  # type: ignore[arg-type]
                check_finite_values(t[rows], "teacher_features")
                check_finite_values(s[rows], "student_features")
                raise InputError(
                    "`teacher_features`/`student_features` overflow float64 when squared (values near 1e154); "
                    "rescale the features (CKA is invariant to isotropic scaling)."
                )
            chunk.shift_t, chunk.shift_s = shift_t, shift_s
            if batch is None:
                batch = chunk
            else:
                batch += chunk  # same shift: plain in-place sums
        assert batch is not None
        # the state changes only once the whole call is known to be finite
        self.shift_t, self.shift_s = shift_t, shift_s
        if self.n == 0:  # the batch's arrays are new and ours: adopt them instead of copying
            for name in (*_ARRAY_FIELDS, "n", "q_tt", "q_ss", "q_ts"):
                setattr(self, name, getattr(batch, name))
            return self
        self.__iadd__(batch)
        return self

    def _shifted(self, rows: np.ndarray, shift: np.ndarray | None, side: str) -> np.ndarray:
        """``rows - shift`` in float64 (converted and shifted in one pass), in a buffer reused across chunks."""
        buffers = self.__dict__.setdefault("_buffers", {})
        buf = buffers.get(side)
        if buf is None or buf.shape[1] != rows.shape[1] or buf.shape[0] < rows.shape[0]:
            buf = buffers[side] = np.empty(rows.shape, dtype=np.float64)
        out = buf[: rows.shape[0]]
        if shift is None:
            np.copyto(out, rows)
            return out
        return np.subtract(rows, shift, out=out)

    def __iadd__(self, other: LinearCKAAccumulator) -> LinearCKAAccumulator:
        if other.n == 0:
            return self
        if self.n == 0:
            self.track_debiased = self.track_debiased and other.track_debiased
            for name in _ARRAY_FIELDS:
                value = getattr(other, name) if self.track_debiased or name in _BASE_FIELDS else None
                setattr(self, name, None if value is None else np.array(value, dtype=np.float64, copy=True))
            for name in ("shift_t", "shift_s"):
                value = getattr(other, name)
                setattr(self, name, None if value is None else np.array(value, dtype=np.float64, copy=True))
        else:
            if other.tt.shape != self.tt.shape or other.st.shape != self.st.shape:  # type: ignore[union-attr]
                raise InputError(
                    f"Cannot merge CKA states of different widths: {self.st.shape} vs {other.st.shape} "  # type: ignore[union-attr]
                    "(student x teacher)."
                )
            other = _reshifted(other, self.shift_t, self.shift_s)
            if self.track_debiased and not other.track_debiased:
                self.track_debiased = False
                self.w_tt = self.w_ss = self.w_ts = self.w_st = None
            for name in _BASE_FIELDS + (_DEBIASED_FIELDS if self.track_debiased else ()):
                getattr(self, name).__iadd__(getattr(other, name))
        self.n += other.n
        if self.track_debiased:
            self.q_tt += other.q_tt
            self.q_ss += other.q_ss
            self.q_ts += other.q_ts
        else:
            self.q_tt = self.q_ss = self.q_ts = 0.0
        return self

    def __add__(self, other: LinearCKAAccumulator) -> LinearCKAAccumulator:
        merged = LinearCKAAccumulator()
        merged += self
        merged += other
        return merged

    def compute(self, *, debiased: bool = False) -> float:
        """Linear CKA in [0, 1] (1 = identical up to rotation and isotropic scaling).

        Raises:
            InputError: fewer than 3 examples (4 for ``debiased=True``), or constant features
                (zero variance), for which CKA is undefined.
        """
        check_cka_examples(self.n, debiased=debiased)
        assert self.tt is not None and self.ss is not None and self.st is not None
        assert self.sum_t is not None and self.sum_s is not None
        n = self.n
        mu_t = self.sum_t / n
        mu_s = self.sum_s / n
        # ‖XᵀX − n μμᵀ‖²_F = ‖XᵀX‖²_F − 2n μᵀXᵀXμ + n²‖μ‖⁴ (and likewise for YᵀX), without forming
        # the centred D×D matrices; the sums are taken about the first batch's mean, so μ is small
        # and nothing cancels
        m_t, m_s = float(mu_t @ mu_t), float(mu_s @ mu_s)
        var_t = float(np.trace(self.tt)) - n * m_t  # sum_i ||t_i - mu_t||^2
        var_s = float(np.trace(self.ss)) - n * m_s
        # "constant" is judged on the centred spread relative to the rows' size about the origin
        # (is_constant): about the shift, a constant feature leaves only rounding noise, which is not a
        # representation, while a real spread of 1 at a mean offset of 1e6 is one
        for var, second, mu, shift, name in ((var_t, self.tt, mu_t, self.shift_t, "teacher_features"),
                                             (var_s, self.ss, mu_s, self.shift_s, "student_features")):
            origin_mean = mu if shift is None else mu + shift
            _check_not_constant(var, float(np.trace(second)) + n * float(origin_mean @ origin_mean), name)
        if self.shift_t is not None and self.shift_s is not None:
            hsic_ts = float(np.vdot(self.st, self.st)) - 2 * n * float(mu_s @ self.st @ mu_t) + n * n * m_s * m_t
            hsic_tt = float(np.vdot(self.tt, self.tt)) - 2 * n * float(mu_t @ self.tt @ mu_t) + n * n * m_t * m_t
            hsic_ss = float(np.vdot(self.ss, self.ss)) - 2 * n * float(mu_s @ self.ss @ mu_s) + n * n * m_s * m_s
        else:  # sums about the origin (built by hand): centre the matrices first, the mean may be large
            hsic_ts, hsic_tt, hsic_ss = (
                float(np.sum(np.square(c - n * np.outer(a, b))))
                for c, a, b in ((self.st, mu_s, mu_t), (self.tt, mu_t, mu_t), (self.ss, mu_s, mu_s))
            )
        if not debiased:
            return _clip_unit(hsic_ts / np.sqrt(hsic_tt * hsic_ss))
        if not self.track_debiased:
            raise InputError(
                "`debiased=True` needs the extra sums of the debiased estimator, which this accumulator "
                "does not keep (created with track_debiased=False, or merged with one that was)."
            )
        assert self.w_tt is not None and self.w_ss is not None
        assert self.w_ts is not None and self.w_st is not None
        sq_t = float(np.trace(self.tt))
        sq_s = float(np.trace(self.ss))
        ab_ts = _sum_centered_sqnorm_products(n, self.q_ts, self.w_ts, self.w_st, self.st.T, sq_t, sq_s, mu_t, mu_s)
        aa_tt = _sum_centered_sqnorm_products(n, self.q_tt, self.w_tt, self.w_tt, self.tt, sq_t, sq_t, mu_t, mu_t)
        bb_ss = _sum_centered_sqnorm_products(n, self.q_ss, self.w_ss, self.w_ss, self.ss, sq_s, sq_s, mu_s, mu_s)
        num = _debiased_hsic(hsic_ts, ab_ts, var_t, var_s, n)
        den_t = _debiased_hsic(hsic_tt, aa_tt, var_t, var_t, n)
        den_s = _debiased_hsic(hsic_ss, bb_ss, var_s, var_s, n)
        if den_t <= 0 or den_s <= 0:
            raise InputError(
                f"Debiased CKA is undefined here: the unbiased HSIC estimate of a representation with "
                f"itself is not positive (n={n}; too few examples for the feature width?). "
                "Use more examples or the biased estimator (debiased=False)."
            )
        return float(num / np.sqrt(den_t * den_s))

    def state_dict(self) -> dict[str, np.ndarray | int | float]:
        """The sums as a flat dict (for saving or sending between processes)."""
        state: dict[str, np.ndarray | int | float] = {
            "n": self.n, "q_tt": self.q_tt, "q_ss": self.q_ss, "q_ts": self.q_ts,
            "track_debiased": int(self.track_debiased),
        }
        for name in (*_ARRAY_FIELDS, "shift_t", "shift_s"):
            value = getattr(self, name)
            if value is not None:
                state[name] = value
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray | int | float]) -> LinearCKAAccumulator:
        """Inverse of :meth:`state_dict`."""
        acc = cls(n=int(state["n"]), q_tt=float(state["q_tt"]), q_ss=float(state["q_ss"]),  # type: ignore[arg-type]
                  q_ts=float(state["q_ts"]), track_debiased=bool(state.get("track_debiased", True)))  # type: ignore[arg-type]
        for name in (*_ARRAY_FIELDS, "shift_t", "shift_s"):
            if name in state:
                setattr(acc, name, np.asarray(state[name], dtype=np.float64))
        return acc


_BASE_FIELDS: tuple[str, ...] = ("sum_t", "sum_s", "tt", "ss", "st")
_DEBIASED_FIELDS: tuple[str, ...] = ("w_tt", "w_ss", "w_ts", "w_st")
_ARRAY_FIELDS = _BASE_FIELDS + _DEBIASED_FIELDS


def _shift_cross(c: np.ndarray, sum_r: np.ndarray, sum_c: np.ndarray, d_r: np.ndarray, d_c: np.ndarray, n: int) -> np.ndarray:
    r""":math:`\sum_i (r_i + d_r)(c_i + d_c)^\top` from :math:`C = \sum_i r_i c_i^\top` and the column sums."""
    return c + np.outer(sum_r, d_c) + np.outer(d_r, sum_c) + n * np.outer(d_r, d_c)


def _reshifted(acc: LinearCKAAccumulator, shift_t: np.ndarray | None, shift_s: np.ndarray | None) -> LinearCKAAccumulator:
    r"""``acc``'s sums re-expressed about other shifts (``None`` = the origin), for merging.

    With :math:`u_i` the rows about ``acc``'s shift and :math:`u'_i = u_i + \delta` the rows about the
    new one (:math:`\delta` = old shift − new shift), every sum expands in the old sums, e.g.
    :math:`\sum u'u'^\top = \sum uu^\top + \Sigma_u\delta^\top + \delta\Sigma_u^\top + n\delta\delta^\top` and
    :math:`\sum\lVert u'\rVert^4 = Q + 4 W\cdot\delta + 2dS + 4\delta^\top C\delta + 4d\,\Sigma_u\cdot\delta + nd^2`
    with :math:`d = \lVert\delta\rVert^2`.
    """
    assert acc.sum_t is not None and acc.sum_s is not None and acc.tt is not None and acc.ss is not None
    assert acc.st is not None
    zero_t, zero_s = np.zeros_like(acc.sum_t), np.zeros_like(acc.sum_s)
    dt = (acc.shift_t if acc.shift_t is not None else zero_t) - (shift_t if shift_t is not None else zero_t)
    ds = (acc.shift_s if acc.shift_s is not None else zero_s) - (shift_s if shift_s is not None else zero_s)
    if not (np.any(dt) or np.any(ds)):
        return acc
    n, st_, ss_, tt, ss, st = acc.n, acc.sum_t, acc.sum_s, acc.tt, acc.ss, acc.st
    nt, ns = float(dt @ dt), float(ds @ ds)  # squared norms of the deltas
    sq_t, sq_s = float(np.trace(tt)), float(np.trace(ss))  # sum ||u||^2, sum ||v||^2
    mt, ms = float(st_ @ dt), float(ss_ @ ds)  # sum u.dt, sum v.ds
    out = LinearCKAAccumulator(n=n, shift_t=shift_t, shift_s=shift_s, track_debiased=acc.track_debiased)
    out.sum_t, out.sum_s = st_ + n * dt, ss_ + n * ds
    out.tt = _shift_cross(tt, st_, st_, dt, dt, n)
    out.ss = _shift_cross(ss, ss_, ss_, ds, ds, n)
    out.st = _shift_cross(st, ss_, st_, ds, dt, n)  # sum v u^T
    if acc.w_tt is not None and acc.w_ss is not None and acc.w_ts is not None and acc.w_st is not None:
        out.q_tt = acc.q_tt + 4 * float(acc.w_tt @ dt) + 2 * nt * sq_t + 4 * float(dt @ tt @ dt) + 4 * nt * mt + n * nt**2
        out.q_ss = acc.q_ss + 4 * float(acc.w_ss @ ds) + 2 * ns * sq_s + 4 * float(ds @ ss @ ds) + 4 * ns * ms + n * ns**2
        out.q_ts = (acc.q_ts + 2 * float(acc.w_ts @ ds) + ns * sq_t + 2 * float(acc.w_st @ dt) + 4 * float(ds @ st @ dt)
                    + 2 * ns * mt + nt * sq_s + 2 * nt * ms + n * nt * ns)
        out.w_tt = acc.w_tt + 2 * tt @ dt + nt * st_ + sq_t * dt + 2 * mt * dt + n * nt * dt
        out.w_ss = acc.w_ss + 2 * ss @ ds + ns * ss_ + sq_s * ds + 2 * ms * ds + n * ns * ds
        out.w_ts = acc.w_ts + 2 * st @ dt + nt * ss_ + sq_t * ds + 2 * mt * ds + n * nt * ds  # sum ||u'||^2 v'
        out.w_st = acc.w_st + 2 * st.T @ ds + ns * st_ + sq_s * dt + 2 * ms * dt + n * ns * dt  # sum ||v'||^2 u'
    return out


def _batch_sums(
    t: np.ndarray, s: np.ndarray, weights: np.ndarray | None = None, *, debiased: bool = True
) -> LinearCKAAccumulator:
    """The additive sums of one validated float64 batch (each row counted ``weights[i]`` times)."""
    wt, ws = (t, s) if weights is None else (t * weights[:, None], s * weights[:, None])
    n = t.shape[0] if weights is None else int(round(weights.sum()))
    base = {"sum_t": wt.sum(axis=0), "sum_s": ws.sum(axis=0), "tt": wt.T @ t, "ss": ws.T @ s, "st": ws.T @ t}
    if not debiased:
        return LinearCKAAccumulator(n=n, track_debiased=False, **base)
    nt = np.einsum("ij,ij->i", t, t)  # ||t_i||^2
    ns = np.einsum("ij,ij->i", s, s)
    w = np.ones(t.shape[0]) if weights is None else weights
    return LinearCKAAccumulator(
        n=n,
        **base,
        q_tt=float((w * nt) @ nt),
        q_ss=float((w * ns) @ ns),
        q_ts=float((w * nt) @ ns),
        w_tt=(w * nt) @ t,
        w_ss=(w * ns) @ s,
        w_ts=(w * nt) @ s,
        w_st=(w * ns) @ t,
    )


def _check_not_constant(centred_var: float, raw_second_moment: float, name: str) -> None:
    if is_constant(centred_var, raw_second_moment):
        raise InputError(
            f"`{name}` are constant across examples (zero variance after centring): CKA is undefined. "
            "Check that the features differ between examples (e.g. the pooling, the layer, padding)."
        )


def _clip_unit(value: float) -> float:
    # Rounding can push an exact 1 to 1 + 1e-16; CKA is in [0, 1] by Cauchy-Schwarz.
    return float(min(max(value, 0.0), 1.0))


def linear_cka(teacher: ArrayLike, student: ArrayLike, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment between teacher and student features.

    .. math::

        \mathrm{CKA}(X, Y) = \frac{\lVert \tilde Y^\top \tilde X\rVert_F^2}
            {\lVert \tilde X^\top \tilde X\rVert_F\,\lVert \tilde Y^\top \tilde Y\rVert_F},
        \quad \tilde X = X - \mathbf{1}\mu_X^\top.

    Args:
        teacher: teacher features, shape ``(N, D_t)``.
        student: student features, shape ``(N, D_s)``; ``D_s`` may differ from ``D_t``.
        debiased: use the unbiased HSIC estimator (Song et al. 2012), which removes the upward bias
            of CKA at small N relative to D; needs N >= 4 and may be slightly negative.

    Returns:
        CKA in [0, 1] (debiased: may dip below 0 for unrelated features). Higher is better; 1 is best.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(50, 6))
        >>> round(linear_cka(x, 3.0 * x), 6)
        1.0
    """
    return LinearCKAAccumulator(track_debiased=debiased).update(teacher, student).compute(debiased=debiased)


# --- Gram-space (example-space) CKA: O(N^2) memory, needed for non-linear kernels -------------------


def _center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Centres a symmetric Gram matrix (Kornblith et al.'s ``center_gram``).

    The unbiased variant zeroes the diagonal and applies the U-statistic centring of Song et al.
    (2012), so that ``<center(K), center(L)>`` is proportional to the unbiased HSIC.
    """
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0.0)
        means = np.sum(gram, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0.0)
    else:
        means = np.mean(gram, 0)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _gram_rbf(x: np.ndarray, threshold: float) -> np.ndarray:
    """RBF Gram matrix with bandwidth ``threshold`` x the median pairwise distance (Kornblith et al.).

    ``x`` should be centred (as :func:`rbf_cka` passes it): the squared distances come from dot products.
    """
    dots = x @ x.T
    sq_norms = np.diag(dots)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * dots, 0.0)
    median = float(np.median(sq_dist))
    if median <= 0:
        raise InputError("RBF CKA: the median pairwise distance is 0 (most examples identical); bandwidth undefined.")
    return np.exp(-sq_dist / (2.0 * threshold**2 * median))


def gram_cka(gram_teacher: np.ndarray, gram_student: np.ndarray, *, debiased: bool = False) -> float:
    """CKA from two ``(N, N)`` Gram matrices (example space)."""
    kt = _center_gram(gram_teacher, unbiased=debiased)
    ks = _center_gram(gram_student, unbiased=debiased)
    num = float(np.sum(kt * ks))
    den = float(np.linalg.norm(kt) * np.linalg.norm(ks))
    if den <= 0:
        raise InputError("CKA is undefined: a centred Gram matrix is zero (constant features).")
    return num / den


def rbf_cka(
    teacher: ArrayLike,
    student: ArrayLike,
    *,
    threshold: float = 1.0,
    debiased: bool = False,
    max_examples: int = RBF_MAX_EXAMPLES,
) -> float:
    r"""CKA with RBF kernels :math:`k(x, x') = \exp(-\lVert x-x'\rVert^2 / (2\sigma^2))`.

    :math:`\sigma` is ``threshold`` times the median pairwise distance (Kornblith et al. 2019).
    Gram-based: time :math:`O(N^2 D)`, memory :math:`O(N^2)`, so N is capped by ``max_examples``.

    Args:
        teacher: ``(N, D_t)`` features.
        student: ``(N, D_s)`` features.
        threshold: bandwidth as a fraction of the median distance (> 0).
        debiased: unbiased HSIC estimator.
        max_examples: refuse larger N (a clear error instead of running out of memory).

    Returns:
        CKA in [0, 1]; higher is better.
    """
    from ._validation import check_positive

    check_positive(threshold, "threshold")
    t, s = _validate_pair(teacher, student, min_rows=1)
    check_cka_examples(t.shape[0], debiased=debiased, what="RBF CKA")
    if t.shape[0] > max_examples:
        raise InputError(
            f"rbf_cka builds N x N Gram matrices; N={t.shape[0]} exceeds max_examples={max_examples} "
            f"(about {3 * 8 * t.shape[0] ** 2 / 2**30:.1f} GiB). Subsample the examples, raise "
            "max_examples, or use linear CKA, which streams in O(D^2) memory."
        )
    # Distances are translation invariant: centre first, so that ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j does
    # not cancel the distances away (relative error 7e-8 at a mean offset of 1e5 without it).
    t_centred, s_centred = t - t.mean(axis=0), s - s.mean(axis=0)
    _check_not_constant(float(np.sum(t_centred**2)), float(np.sum(t * t)), "teacher_features")
    _check_not_constant(float(np.sum(s_centred**2)), float(np.sum(s * s)), "student_features")
    return gram_cka(_gram_rbf(t_centred, threshold), _gram_rbf(s_centred, threshold), debiased=debiased)


# --- Cosine ------------------------------------------------------------------------------------------


def _scaled_rows(x: np.ndarray) -> np.ndarray:
    """``x`` with each row divided by a power of two close to its largest absolute entry (exactly)."""
    _, exponent = np.frexp(np.max(np.abs(x), axis=1, keepdims=True))
    return np.ldexp(x, -exponent)


@dataclass
class CosineAccumulator:
    """Additive state for the mean per-example cosine similarity (``n`` and the sum of cosines)."""

    n: int = 0
    total: float = 0.0

    def update(self, teacher: ArrayLike, student: ArrayLike) -> CosineAccumulator:
        t, s = _validate_pair(teacher, student, min_rows=1)
        if t.shape[1] != s.shape[1]:
            raise InputError(
                f"Cosine similarity needs features of the same width, got teacher width {t.shape[1]} and "
                f"student width {s.shape[1]}. Use fss_method='linear_cka' (CKA compares widths that differ)."
            )
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
        self.n += other.n
        self.total += other.total
        return self

    def __add__(self, other: CosineAccumulator) -> CosineAccumulator:
        return CosineAccumulator(self.n + other.n, self.total + other.total)

    def compute(self) -> float:
        if self.n == 0:
            raise InputError("Cosine similarity needs at least 1 example, got 0.")
        return self.total / self.n


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
    taken about each layer's first-batch mean.
    """

    n: int = 0
    sum_t: list[np.ndarray] = field(default_factory=list)
    sum_s: list[np.ndarray] = field(default_factory=list)
    tt: list[np.ndarray] = field(default_factory=list)
    ss: list[np.ndarray] = field(default_factory=list)
    st: list[list[np.ndarray]] = field(default_factory=list)  # st[i][j] = S_j^T T_i
    shift_t: list[np.ndarray] = field(default_factory=list)
    shift_s: list[np.ndarray] = field(default_factory=list)

    def update(self, teacher_layers: Sequence[ArrayLike], student_layers: Sequence[ArrayLike]) -> CrossLayerCKAAccumulator:
        """Adds a batch: lists of ``(B, D)`` arrays, one per teacher layer and one per student layer."""
        ts = [as_float_array(x, f"teacher_layers[{i}]", ndim=2) for i, x in enumerate(teacher_layers)]
        ss = [as_float_array(x, f"student_layers[{j}]", ndim=2) for j, x in enumerate(student_layers)]
        if not ts or not ss:
            raise InputError("`teacher_layers` and `student_layers` must each hold at least one layer.")
        for i, x in enumerate(ts + ss):
            if x.shape[0] != ts[0].shape[0]:
                raise InputError(f"All layers of a batch must have the same number of rows; layer {i} has {x.shape[0]}.")
        if self.n and (len(ts) != len(self.tt) or len(ss) != len(self.ss)):
            raise InputError(
                f"Number of layers changed between batches: {len(self.tt)}x{len(self.ss)} before, {len(ts)}x{len(ss)} now."
            )
        if self.n == 0:
            self.shift_t, self.shift_s = [x.mean(axis=0) for x in ts], [y.mean(axis=0) for y in ss]
        ts = [x - a for x, a in zip(ts, self.shift_t, strict=True)]
        ss = [y - b for y, b in zip(ss, self.shift_s, strict=True)]
        batch = CrossLayerCKAAccumulator(
            shift_t=self.shift_t, shift_s=self.shift_s,
            n=ts[0].shape[0],
            sum_t=[x.sum(0) for x in ts],
            sum_s=[y.sum(0) for y in ss],
            tt=[x.T @ x for x in ts],
            ss=[y.T @ y for y in ss],
            st=[[y.T @ x for y in ss] for x in ts],
        )
        self += batch
        return self

    def __iadd__(self, other: CrossLayerCKAAccumulator) -> CrossLayerCKAAccumulator:
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
        else:
            other = other._reshifted(self.shift_t, self.shift_s)
            for mine, theirs in ((self.sum_t, other.sum_t), (self.sum_s, other.sum_s), (self.tt, other.tt), (self.ss, other.ss)):
                for a, b in zip(mine, theirs, strict=True):
                    a += b
            for row_a, row_b in zip(self.st, other.st, strict=True):
                for a, b in zip(row_a, row_b, strict=True):
                    a += b
        self.n += other.n
        return self

    def _reshifted(self, shift_t: list[np.ndarray], shift_s: list[np.ndarray]) -> CrossLayerCKAAccumulator:
        """These sums re-expressed about other shifts (for merging states of other processes)."""
        if len(shift_t) != len(self.shift_t) or len(shift_s) != len(self.shift_s):
            raise InputError(
                f"Cannot merge cross-layer CKA states of {len(self.shift_t)}x{len(self.shift_s)} and "
                f"{len(shift_t)}x{len(shift_s)} layers."
            )
        dt = [a - b for a, b in zip(self.shift_t, shift_t, strict=True)]
        ds = [a - b for a, b in zip(self.shift_s, shift_s, strict=True)]
        n = self.n
        return CrossLayerCKAAccumulator(
            n=n,
            sum_t=[a + n * d for a, d in zip(self.sum_t, dt, strict=True)],
            sum_s=[a + n * d for a, d in zip(self.sum_s, ds, strict=True)],
            tt=[_shift_cross(c, a, a, d, d, n) for c, a, d in zip(self.tt, self.sum_t, dt, strict=True)],
            ss=[_shift_cross(c, a, a, d, d, n) for c, a, d in zip(self.ss, self.sum_s, ds, strict=True)],
            st=[[_shift_cross(self.st[i][j], self.sum_s[j], self.sum_t[i], ds[j], dt[i], n) for j in range(len(ds))]
                for i in range(len(dt))],
            shift_t=shift_t, shift_s=shift_s,
        )

    def pair(self, i: int, j: int) -> LinearCKAAccumulator:
        """The (biased) linear-CKA state of teacher layer ``i`` and student layer ``j``."""
        return LinearCKAAccumulator(
            n=self.n, sum_t=self.sum_t[i], sum_s=self.sum_s[j], tt=self.tt[i], ss=self.ss[j], st=self.st[i][j],
            shift_t=self.shift_t[i], shift_s=self.shift_s[j], track_debiased=False,
        )

    def compute(self) -> np.ndarray:
        """Returns the ``(L_t, L_s)`` linear-CKA matrix."""
        check_cka_examples(self.n, what="Cross-layer CKA")
        return np.array([[self.pair(i, j).compute() for j in range(len(self.ss))] for i in range(len(self.tt))])


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
