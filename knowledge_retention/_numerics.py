r"""Power-of-two rescaling: how every accumulator keeps its sums inside float64's range.

The measures here are invariant to the scale of their inputs (CKA to an isotropic scaling of each
model's features, AOAg-MSE with its default ``max_mse`` to a common scaling of the outputs), but
float64 is not: squares of 1e-160 underflow to 0 and fourth powers of 1e80 overflow to inf. So data
is multiplied by :math:`2^e` before any product is formed, with the exponent :math:`e` chosen from the
data's own size, and the sums carry that exponent with them. Multiplying by a power of two is exact
(the significand does not change) and every later operation commutes with it, so within float64's
range the results are *bit for bit* those of the unscaled computation; outside it they stay right.

Sums of order :math:`k` in the data carry :math:`2^{k e}`; states with different exponents merge after
the one with the larger exponent is brought down (:func:`rescale`): small values that then underflow
are below :math:`2^{-1000}` of the largest and change nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exponent_for", "max_abs", "prescaled_difference", "rescale", "sums_in_range"]

#: A chunk's sums of squares are used as computed (no rescaling) when their largest diagonal lies in
#: [2**-LOG2_RANGE, 2**LOG2_RANGE]: then fourth-order sums and their products (CKA's denominator)
#: stay within float64's normal range with room for N up to 2**40 and widths up to 2**20.
LOG2_RANGE = 200


def max_abs(array: np.ndarray | None) -> float:
    """The largest absolute value of ``array`` (0 for None or an empty array)."""
    if array is None or array.size == 0:
        return 0.0
    return float(max(abs(float(np.max(array))), abs(float(np.min(array)))))


def exponent_for(largest: float) -> int:
    """The exponent :math:`e` that brings ``largest`` into [0.5, 1) as ``largest * 2**e`` (0 for 0)."""
    if largest == 0.0 or not np.isfinite(largest):
        return 0
    return -int(np.frexp(largest)[1])


def prescaled_difference(
    rows: np.ndarray, shift: np.ndarray | None, out: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    r"""``(rows - shift) * 2**k`` in float64 and ``k``, with :math:`k` from the size of ``rows`` and ``shift``.

    :math:`k` brings the larger of the two into [0.5, 1), so the difference neither overflows (rows of
    1e308 about a shift of -1e308) nor loses digits to underflow; the rounding is that of the plain
    difference (both operands are scaled exactly). Inputs must be finite.
    """
    k = exponent_for(max(max_abs(rows), max_abs(shift)))
    buf = np.empty(rows.shape, dtype=np.float64) if out is None else out
    np.copyto(buf, rows)
    np.ldexp(buf, k, out=buf)
    if shift is not None:
        np.subtract(buf, np.ldexp(np.asarray(shift, dtype=np.float64), k), out=buf)
    return buf, k


def rescale(value: np.ndarray | float | None, log2_factor: int) -> np.ndarray | float | None:
    """``value * 2**log2_factor``, exactly (short of underflow), for arrays, floats and None."""
    if value is None or log2_factor == 0:
        return value
    if isinstance(value, np.ndarray):
        return np.ldexp(value, log2_factor)
    return float(np.ldexp(float(value), log2_factor))


def sums_in_range(*diagonals: np.ndarray) -> bool:
    """Whether sums of squares (their diagonals) are finite and their largest within :data:`LOG2_RANGE`."""
    for diag in diagonals:
        top = float(np.max(diag)) if diag.size else 0.0
        if not (np.isfinite(top) and 2.0**-LOG2_RANGE <= top <= 2.0**LOG2_RANGE):
            return False
    return True
