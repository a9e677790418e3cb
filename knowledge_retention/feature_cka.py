r"""Linear CKA in feature space, from additive sums: the streaming form of FSS.

With :math:`n`, :math:`\sum_i x_i`, :math:`\sum_i y_i`, :math:`X^\top X`, :math:`Y^\top Y` and
:math:`Y^\top X` accumulated in float64 (Kornblith et al. 2019, ``feature_space_linear_cka``),

.. math::

    \tilde{Y}^\top \tilde{X} = Y^\top X - \tfrac{1}{n} (\textstyle\sum_i y_i)(\sum_i x_i)^\top,
    \qquad
    \mathrm{CKA}(X, Y) = \frac{\lVert \tilde{Y}^\top \tilde{X} \rVert_F^2}
        {\lVert \tilde{X}^\top \tilde{X} \rVert_F \, \lVert \tilde{Y}^\top \tilde{Y} \rVert_F},

so batches and processes merge by adding their sums, in :math:`O(D_t^2 + D_s^2 + D_t D_s)` memory
whatever N is. The debiased estimator (Song et al. 2012) needs further additive sums, derived in
:func:`_sum_centered_sqnorm_products`.

Two things keep the sums exact whatever the features are: they are taken about a *shift* (the first
batch's column means; CKA is translation invariant, and raw sums of rows far from the origin cancel
catastrophically when centred), and about a power-of-two *scale* per model (:mod:`._numerics`; CKA is
invariant to isotropic scaling): a chunk whose sums of squares leave float64's comfortable range
(features of 1e-160 or 1e150) is recomputed from rows multiplied by :math:`2^e` first, and the state
records :math:`e`. Within that range nothing is rescaled and the numbers are those of the plain sums.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._numerics import exponent_for, max_abs, prescaled_difference, rescale, sums_in_range
from ._validation import (
    ArrayLike,
    InputError,
    InputTypeError,
    as_float_array,
    check_cka_examples,
    check_finite_values,
    check_not_constant,
    check_same_length,
)
from .kernel_cka import gram_linear_cka

__all__ = ["MAX_STATE_BYTES", "LinearCKAAccumulator", "linear_cka"]

#: Rows per chunk of one ``LinearCKAAccumulator.update`` call: the float64 buffers are this size
#: (8192 x (D_t + D_s) x 8 bytes, 75 MB at 768 + 384), whatever N is.
_CHUNK_ROWS = 8192

#: Feature-space sums larger than this are refused by the streaming accumulator (it cannot switch to
#: the N x N form: it never holds all rows); :func:`linear_cka` switches to the N x N form instead.
MAX_STATE_BYTES = 8 * 2**30
#: :func:`linear_cka` computes in example space (N x N Gram matrices) when the feature-space sums
#: would be larger than this and larger than the Gram matrices.
_GRAM_SWITCH_BYTES = 256 * 2**20

def _state_bytes(d_t: int, d_s: int) -> int:
    return 8 * (d_t * d_t + d_s * d_s + d_t * d_s)


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

    The verbs of torchmetrics and scikit-learn: :meth:`update` with a batch, :meth:`compute` the
    score, :meth:`reset`, :meth:`state_dict` / :meth:`from_state_dict`, and ``+`` / ``+=`` to merge the
    states of other batches or processes (every field is a sum). All sums are float64.

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
    # ... and times 2**scale_t (teacher) / 2**scale_s (student): 0 unless the features are extreme
    scale_t: int = 0
    scale_s: int = 0

    def update(
        self, teacher: ArrayLike, student: ArrayLike, *, sample_weight: ArrayLike | None = None
    ) -> LinearCKAAccumulator:
        """Adds a batch: ``teacher`` of shape ``(B, D_t)``, ``student`` of shape ``(B, D_s)``.

        ``sample_weight`` (``(B,)``, non-negative integers) counts each example that many times:
        the bootstrap's resampling multiplicities. An empty batch (B = 0) changes nothing.
        """
        # The rows keep their dtype here: each chunk of _CHUNK_ROWS rows is converted to float64 and
        # shifted in one pass into a reused buffer, so one large call (67,349 x 768 float32) never
        # makes a full float64 copy. NaN/Inf are found from each chunk's own sums (a NaN or Inf in a
        # row makes the diagonal of XᵀX non-finite), which saves a pass over the rows.
        t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=0, dtype=None, check_finite=False)
        s = as_float_array(student, "student_features", ndim=2, min_rows=0, dtype=None, check_finite=False)
        check_same_length(t, s, "teacher_features", "student_features")
        weights = _checked_weights(sample_weight, t.shape[0])
        if self.tt is not None and (t.shape[1] != self.tt.shape[0] or s.shape[1] != self.ss.shape[0]):  # type: ignore[union-attr]
            raise InputError(
                f"Feature widths changed between batches: the accumulator holds teacher width "
                f"{self.tt.shape[0]} and student width {self.ss.shape[0]}, the batch has "  # type: ignore[union-attr]
                f"{t.shape[1]} and {s.shape[1]}."
            )
        if t.shape[0] == 0:
            return self
        if self.tt is None and _state_bytes(t.shape[1], s.shape[1]) > MAX_STATE_BYTES:
            raise InputError(
                f"Streaming linear CKA keeps D_t² + D_s² + D_t·D_s float64 sums: "
                f"{_state_bytes(t.shape[1], s.shape[1]) / 2**30:.0f} GiB for `teacher_features` of width {t.shape[1]} "
                f"and `student_features` of width {s.shape[1]}. Pool or project the features, or call linear_cka on "
                "all rows at once, which computes in example space (N x N Gram matrices) when D > N."
            )
        shift_t, shift_s = self.shift_t, self.shift_s
        if self.n == 0 and shift_t is None:
            # Shifted sums: CKA is translation invariant, and sums of rows taken about a point near
            # their mean keep the digits that raw sums lose to cancellation when the features sit
            # far from the origin (outlier dimensions of transformer states); the debiased
            # estimator lost 2e-4 relative at a mean offset of 1000 standard deviations without it.
            # The first chunk's mean is near enough to the mean of all rows.
            head = slice(0, _CHUNK_ROWS)
            shift_t = _column_mean(t[head], "teacher_features")
            shift_s = _column_mean(s[head], "student_features")
        batch: LinearCKAAccumulator | None = None
        for lo in range(0, t.shape[0], _CHUNK_ROWS):
            rows = slice(lo, lo + _CHUNK_ROWS)
            chunk = self._chunk_sums(t[rows], s[rows], shift_t, shift_s, None if weights is None else weights[rows])
            if batch is None:
                batch = chunk
            else:
                batch += chunk  # same shift: plain in-place sums (rescaled first if the scales differ)
        assert batch is not None
        # the state changes only once the whole call is known to be finite
        if self.n == 0:  # the batch's arrays are new and ours: adopt them instead of copying
            for name in (*_ARRAY_FIELDS, "n", "q_tt", "q_ss", "q_ts", "shift_t", "shift_s", "scale_t", "scale_s"):
                setattr(self, name, getattr(batch, name))
            return self
        self.__iadd__(batch)
        return self

    def _chunk_sums(self, t: np.ndarray, s: np.ndarray, shift_t: np.ndarray | None, shift_s: np.ndarray | None,
                    weights: np.ndarray | None) -> LinearCKAAccumulator:
        """The sums of one chunk of rows, scaled by powers of two when the plain sums leave float64's range."""
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # checked just below
            chunk = _batch_sums(self._shifted(t, shift_t, "t"), self._shifted(s, shift_s, "s"),
                                weights, debiased=self.track_debiased)
        if not sums_in_range(np.diagonal(chunk.tt), np.diagonal(chunk.ss)):  # type: ignore[arg-type]
            check_finite_values(t, "teacher_features")
            check_finite_values(s, "student_features")
            # extreme (or constant) rows: bring each model's centred rows to unit size by a power of
            # two, exactly, before any product; the scales travel with the sums
            u, k_t = prescaled_difference(t, shift_t, out=self._buffer("t", t.shape))
            v, k_s = prescaled_difference(s, shift_s, out=self._buffer("s", s.shape))
            scale_t, scale_s = k_t + exponent_for(max_abs(u)), k_s + exponent_for(max_abs(v))
            np.ldexp(u, scale_t - k_t, out=u)
            np.ldexp(v, scale_s - k_s, out=v)
            chunk = _batch_sums(u, v, weights, debiased=self.track_debiased)
            chunk.scale_t, chunk.scale_s = scale_t, scale_s
            if not (np.isfinite(np.trace(chunk.tt)) and np.isfinite(np.trace(chunk.ss))):  # type: ignore[arg-type]
                raise InputError(  # pragma: no cover - unit-size rows cannot overflow
                    "`teacher_features`/`student_features`: the sums overflow float64 even after rescaling."
                )
        chunk.shift_t, chunk.shift_s = shift_t, shift_s
        return chunk

    def _buffer(self, side: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 buffer of ``shape``, reused across chunks (one per model)."""
        buffers = self.__dict__.setdefault("_buffers", {})
        buf = buffers.get(side)
        if buf is None or buf.shape[1] != shape[1] or buf.shape[0] < shape[0]:
            buf = buffers[side] = np.empty(shape, dtype=np.float64)
        return buf[: shape[0]]

    def _shifted(self, rows: np.ndarray, shift: np.ndarray | None, side: str) -> np.ndarray:
        """``rows - shift`` in float64 (converted and shifted in one pass), in a buffer reused across chunks."""
        out = self._buffer(side, rows.shape)
        if shift is None:
            np.copyto(out, rows)
            return out
        return np.subtract(rows, shift, out=out)

    def _rescale_to(self, scale_t: int, scale_s: int) -> None:
        """Re-expresses the sums (in place) at the scales ``2**scale_t`` and ``2**scale_s``."""
        d_t, d_s = scale_t - self.scale_t, scale_s - self.scale_s
        if d_t == 0 and d_s == 0:
            return
        for name, (k_t, k_s) in _ORDERS.items():
            setattr(self, name, rescale(getattr(self, name), k_t * d_t + k_s * d_s))
        self.scale_t, self.scale_s = scale_t, scale_s

    def copy(self) -> LinearCKAAccumulator:
        """An independent copy of the state."""
        return LinearCKAAccumulator() + self

    def __iadd__(self, other: LinearCKAAccumulator) -> LinearCKAAccumulator:
        if not isinstance(other, LinearCKAAccumulator):
            raise InputTypeError(f"Only a LinearCKAAccumulator can be added to one, got {type(other).__name__}.")
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
            self.scale_t, self.scale_s = other.scale_t, other.scale_s
            self.q_tt, self.q_ss, self.q_ts = (other.q_tt, other.q_ss, other.q_ts) if self.track_debiased else (0.0,) * 3
            self.n = other.n
            return self
        if other.tt.shape != self.tt.shape or other.st.shape != self.st.shape:  # type: ignore[union-attr]
            raise InputError(
                f"Cannot merge CKA states of different widths: {self.st.shape} vs {other.st.shape} "  # type: ignore[union-attr]
                "(student x teacher)."
            )
        # one scale per model for both states: the smaller exponent (the larger values) wins, a
        # state without spread takes the other's; the distance between the shifts counts too
        scale_t = _merged_scale(self, other, "t")
        scale_s = _merged_scale(self, other, "s")
        self._rescale_to(scale_t, scale_s)
        if (other.scale_t, other.scale_s) != (scale_t, scale_s):
            other = other.copy()
            other._rescale_to(scale_t, scale_s)
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
        merged = LinearCKAAccumulator(track_debiased=self.track_debiased)
        merged += self
        merged += other
        return merged

    def reset(self) -> LinearCKAAccumulator:
        """Forgets every batch (``track_debiased`` is kept)."""
        self.__init__(track_debiased=self.track_debiased)  # type: ignore[misc]
        return self

    def compute(self, *, debiased: bool = False) -> float:
        """Linear CKA in [0, 1] (1 = identical up to rotation and isotropic scaling).

        Raises:
            InputError: fewer than 3 examples (4 for ``debiased=True``), or constant features
                (zero variance, or a spread float64 cannot resolve at their offset): CKA is undefined.
        """
        check_cka_examples(self.n, debiased=debiased)
        if debiased and not self.track_debiased:
            raise InputError(
                "`debiased=True` needs the extra sums of the debiased estimator, which this accumulator "
                "does not keep (created with track_debiased=False, or merged with one that was)."
            )
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
        # representation, while a real spread of 1 at a mean offset of 1e12 is one
        for var, second, mu, shift, scale, name in (
            (var_t, self.tt, mu_t, self.shift_t, self.scale_t, "teacher_features"),
            (var_s, self.ss, mu_s, self.shift_s, self.scale_s, "student_features"),
        ):
            with np.errstate(over="ignore", invalid="ignore"):  # an offset beyond float64 at this scale: inf
                origin_mean = mu if shift is None else mu + np.ldexp(shift, scale)
                check_not_constant(var, float(np.trace(second)) + n * float(origin_mean @ origin_mean), name)
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
            "track_debiased": int(self.track_debiased), "scale_t": self.scale_t, "scale_s": self.scale_s,
        }
        for name in (*_ARRAY_FIELDS, "shift_t", "shift_s"):
            value = getattr(self, name)
            if value is not None:
                state[name] = value
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray | int | float]) -> LinearCKAAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry.

        Raises:
            InputError: a missing or malformed entry (``state['tt']`` of the wrong shape, a negative
                ``state['n']``, NaN sums, ...).
        """
        from ._state import check_state_mapping, state_float, state_int, state_matrix, state_vector

        check_state_mapping(state, "LinearCKAAccumulator")
        n = state_int(state, "n", minimum=0)
        acc = cls(n=n, track_debiased=bool(state_int(state, "track_debiased", default=1, minimum=0)),
                  scale_t=state_int(state, "scale_t", default=0), scale_s=state_int(state, "scale_s", default=0))
        if n == 0:
            return acc
        for name in ("q_tt", "q_ss", "q_ts"):
            setattr(acc, name, state_float(state, name))
        acc.sum_t = state_vector(state, "sum_t")
        acc.sum_s = state_vector(state, "sum_s")
        d_t, d_s = acc.sum_t.shape[0], acc.sum_s.shape[0]
        acc.tt = state_matrix(state, "tt", (d_t, d_t))
        acc.ss = state_matrix(state, "ss", (d_s, d_s))
        acc.st = state_matrix(state, "st", (d_s, d_t))
        for name, width in (("shift_t", d_t), ("shift_s", d_s)):
            if name in state:
                setattr(acc, name, state_vector(state, name, width))
        if acc.track_debiased:
            for name, width in (("w_tt", d_t), ("w_ss", d_s), ("w_ts", d_s), ("w_st", d_t)):
                setattr(acc, name, state_vector(state, name, width))
        return acc


def _checked_weights(sample_weight: ArrayLike | None, rows: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    weights = as_float_array(sample_weight, "sample_weight", ndim=1, min_rows=0)
    if weights.shape[0] != rows:
        raise InputError(f"`sample_weight` must have one entry per example ({rows}), got {weights.shape[0]}.")
    if np.any(weights < 0) or np.any(weights != np.round(weights)):
        raise InputError("`sample_weight` must hold non-negative integer counts (resampling multiplicities).")
    return weights


def _column_mean(x: np.ndarray, name: str) -> np.ndarray:
    """Column means in float64, without overflow for rows near float64's largest values."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=0, dtype=np.float64)
    if np.all(np.isfinite(mean)):
        return mean
    check_finite_values(x, name)
    k = exponent_for(max_abs(x))
    return np.ldexp(np.ldexp(np.asarray(x, dtype=np.float64), k).mean(axis=0), -k)


def _has_spread(acc: LinearCKAAccumulator, side: str) -> bool:
    second = acc.tt if side == "t" else acc.ss
    return acc.n > 0 and second is not None and bool(np.any(np.diagonal(second)))


def _merged_scale(a: LinearCKAAccumulator, b: LinearCKAAccumulator, side: str) -> int:
    """The exponent both states take for one model before their sums are added."""
    e_a, e_b = getattr(a, f"scale_{side}"), getattr(b, f"scale_{side}")
    if not _has_spread(a, side):
        scale = e_b
    elif not _has_spread(b, side):
        scale = e_a
    else:
        scale = min(e_a, e_b)
    shift_a, shift_b = getattr(a, f"shift_{side}"), getattr(b, f"shift_{side}")
    if shift_a is not None or shift_b is not None:  # the shifts' distance becomes part of the sums
        zero = np.zeros_like(a.sum_t if side == "t" else a.sum_s)
        with np.errstate(over="ignore", invalid="ignore"):
            distance = max_abs((zero if shift_a is None else shift_a) - (zero if shift_b is None else shift_b))
        if distance > 0 and np.isfinite(distance):
            scale = min(scale, exponent_for(distance))
    return scale


#: The order of each sum in the teacher's and the student's rows (how it scales with each).
_ORDERS: dict[str, tuple[int, int]] = {
    "sum_t": (1, 0), "sum_s": (0, 1), "tt": (2, 0), "ss": (0, 2), "st": (1, 1),
    "q_tt": (4, 0), "q_ss": (0, 4), "q_ts": (2, 2),
    "w_tt": (3, 0), "w_ss": (0, 3), "w_ts": (2, 1), "w_st": (1, 2),
}


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
    dt, ds = np.ldexp(dt, acc.scale_t), np.ldexp(ds, acc.scale_s)  # in the units of the sums
    if not (np.any(dt) or np.any(ds)):
        return acc
    n, st_, ss_, tt, ss, st = acc.n, acc.sum_t, acc.sum_s, acc.tt, acc.ss, acc.st
    nt, ns = float(dt @ dt), float(ds @ ds)  # squared norms of the deltas
    sq_t, sq_s = float(np.trace(tt)), float(np.trace(ss))  # sum ||u||^2, sum ||v||^2
    mt, ms = float(st_ @ dt), float(ss_ @ ds)  # sum u.dt, sum v.ds
    out = LinearCKAAccumulator(n=n, shift_t=shift_t, shift_s=shift_s, track_debiased=acc.track_debiased,
                               scale_t=acc.scale_t, scale_s=acc.scale_s)
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


def _clip_unit(value: float) -> float:
    # Rounding can push an exact 1 to 1 + 1e-16; CKA is in [0, 1] by Cauchy-Schwarz.
    return float(min(max(value, 0.0), 1.0))


def linear_cka(teacher: ArrayLike, student: ArrayLike, *, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment between teacher and student features.

    .. math::

        \mathrm{CKA}(X, Y) = \frac{\lVert \tilde Y^\top \tilde X\rVert_F^2}
            {\lVert \tilde X^\top \tilde X\rVert_F\,\lVert \tilde Y^\top \tilde Y\rVert_F},
        \quad \tilde X = X - \mathbf{1}\mu_X^\top.

    Computed from feature-space sums (:class:`LinearCKAAccumulator`), or, when the features are wider
    than the examples are many and those sums would be large (over 256 MiB and over the Gram
    matrices), from ``(N, N)`` Gram matrices (:func:`~knowledge_retention.kernel_cka.gram_linear_cka`;
    a ``UserWarning`` says so): the same number, in memory that follows the data.

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
    t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=0, dtype=None, check_finite=False)
    s = as_float_array(student, "student_features", ndim=2, min_rows=0, dtype=None, check_finite=False)
    check_same_length(t, s, "teacher_features", "student_features")
    n, feature_bytes = t.shape[0], _state_bytes(t.shape[1], s.shape[1])
    if feature_bytes > _GRAM_SWITCH_BYTES and feature_bytes > 8 * 4 * n * n:
        warnings.warn(
            f"linear_cka: features wider than the examples are many (N = {n}, D_t = {t.shape[1]}, "
            f"D_s = {s.shape[1]}): computed in example space from N x N Gram matrices "
            f"({8 * 2 * n * n / 2**20:.0f} MB) instead of feature-space sums ({feature_bytes / 2**30:.1f} GiB); "
            "the value is the same.",
            UserWarning,
            stacklevel=2,
        )
        return gram_linear_cka(t, s, debiased=debiased)
    return LinearCKAAccumulator(track_debiased=debiased).update(t, s).compute(debiased=debiased)


