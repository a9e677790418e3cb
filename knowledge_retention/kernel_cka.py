r"""CKA in example space: from ``(N, N)`` Gram matrices (Kornblith et al. 2019, ``cka`` and ``gram_rbf``).

.. math::

    \mathrm{CKA}(K, L) = \frac{\langle \tilde K, \tilde L\rangle_F}{\lVert\tilde K\rVert_F\,\lVert\tilde L\rVert_F},
    \qquad \tilde K = HKH,\ H = I - \tfrac1n \mathbf 1\mathbf 1^\top

Needed for non-linear kernels (RBF) and, for the linear kernel, when the features are wider than the
examples are many: :math:`K = \tilde X \tilde X^\top` takes :math:`8N^2` bytes where the feature-space
sums of :mod:`.similarity` take :math:`8(D_t^2 + D_s^2 + D_t D_s)` (N = 2,000 examples of a flattened
feature map of 131,072 values: 32 MB against 400 GB). Both forms give the same number.

Every Gram matrix is built from features centred and scaled by a power of two first (exact; see
:mod:`._numerics`), so that no product overflows or underflows whatever the features' size.
"""

from __future__ import annotations

import numpy as np

from ._numerics import exponent_for, max_abs, prescaled_difference
from ._validation import (
    ArrayLike,
    InputError,
    as_float_array,
    check_cka_examples,
    check_not_constant,
    check_positive,
)

__all__ = ["RBF_MAX_EXAMPLES", "gram_cka", "gram_linear_cka", "rbf_cka"]

#: Gram-based CKA stores several N x N float64 matrices; refuse sizes that would not fit comfortably.
RBF_MAX_EXAMPLES = 10_000
#: Columns of an ``(N, D)`` array are centred and multiplied in blocks of at most this many bytes.
_BLOCK_BYTES = 16 * 2**20


def _center_gram(gram: np.ndarray, unbiased: bool = False, *, copy: bool = True) -> np.ndarray:
    """Centres a symmetric Gram matrix (Kornblith et al.'s ``center_gram``).

    The unbiased variant zeroes the diagonal and applies the U-statistic centring of Song et al.
    (2012), so that ``<center(K), center(L)>`` is proportional to the unbiased HSIC.
    """
    if copy:
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


def _unit_scaled(gram: np.ndarray) -> np.ndarray:
    """``gram`` times the power of two that brings its largest entry into [0.5, 1) (exact)."""
    return np.ldexp(gram, exponent_for(max_abs(gram)))


def gram_cka(gram_teacher: np.ndarray, gram_student: np.ndarray, *, debiased: bool = False) -> float:
    """CKA from two ``(N, N)`` Gram matrices (example space).

    Each centred matrix is brought to unit size by a power of two before the products (CKA is
    invariant to scaling either), so Gram entries of 1e-300 or 1e300 give the same value as of 1.
    """
    kt = _unit_scaled(_center_gram(np.asarray(gram_teacher, dtype=np.float64), unbiased=debiased))
    ks = _unit_scaled(_center_gram(np.asarray(gram_student, dtype=np.float64), unbiased=debiased))
    num = float(np.sum(kt * ks))
    den = float(np.linalg.norm(kt) * np.linalg.norm(ks))
    if den <= 0:
        raise InputError("CKA is undefined: a centred Gram matrix is zero (constant features).")
    return num / den


def _column_mean(x: np.ndarray) -> np.ndarray:
    """Column means in float64, without overflow for values near float64's largest."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=0, dtype=np.float64)
    if np.all(np.isfinite(mean)):
        return mean
    k = exponent_for(max_abs(x))
    return np.ldexp(np.ldexp(np.asarray(x, dtype=np.float64), k).mean(axis=0), -k)


def _column_blocks(x: np.ndarray) -> list[slice]:
    cols = max(1, _BLOCK_BYTES // (8 * x.shape[0]))
    return [slice(lo, min(lo + cols, x.shape[1])) for lo in range(0, x.shape[1], cols)]


def linear_gram(x: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    r"""The linear Gram matrix :math:`2^{2e}\tilde X\tilde X^\top` of the centred ``(N, D)`` ``x``, and its relative spread.

    Columns are centred and multiplied a block at a time (peak memory :math:`8N^2` bytes plus one
    16 MB block, whatever D is); :math:`e` brings the largest centred value into [0.5, 1).

    Raises:
        InputError: ``x`` holds NaN/Inf, or is constant across examples (see :func:`check_not_constant`).
    """
    n = x.shape[0]
    mean = _column_mean(x)
    if not np.all(np.isfinite(mean)):
        from ._validation import check_finite_values

        check_finite_values(x, name)
    blocks = _column_blocks(x)
    buffer = np.empty((n, blocks[0].stop - blocks[0].start), dtype=np.float64)
    exponent = None
    for cols in blocks:  # pass 1: the size of the centred values
        v, k = prescaled_difference(x[:, cols], mean[cols], out=buffer[:, : cols.stop - cols.start])
        if not np.all(np.isfinite(v)):
            from ._validation import check_finite_values

            check_finite_values(x[:, cols], name)
        top = max_abs(v)
        if top > 0:
            e = k + exponent_for(top)
            exponent = e if exponent is None else min(exponent, e)
    if exponent is None:
        exponent = 0
    gram = np.zeros((n, n))
    for cols in blocks:  # pass 2: the products
        v, k = prescaled_difference(x[:, cols], mean[cols], out=buffer[:, : cols.stop - cols.start])
        np.ldexp(v, exponent - k, out=v)
        gram += v @ v.T
    centred = float(np.trace(gram))
    scaled_mean = np.ldexp(mean, exponent)
    with np.errstate(over="ignore"):
        origin = centred + n * float(scaled_mean @ scaled_mean)
    check_not_constant(centred, origin, name)
    return gram, centred


def gram_linear_cka(teacher: ArrayLike, student: ArrayLike, *, debiased: bool = False) -> float:
    """Linear CKA through ``(N, N)`` Gram matrices: the form for features wider than N.

    Equal to :func:`knowledge_retention.similarity.linear_cka` (which switches to it by itself when
    the feature-space sums would be the larger); memory :math:`O(N^2)` instead of :math:`O(D^2)`.
    """
    t = as_float_array(teacher, "teacher_features", ndim=2, dtype=None, check_finite=False)
    s = as_float_array(student, "student_features", ndim=2, dtype=None, check_finite=False)
    if t.shape[0] != s.shape[0]:
        from ._validation import check_same_length

        check_same_length(t, s, "teacher_features", "student_features")
    check_cka_examples(t.shape[0], debiased=debiased)
    gram_t, _ = linear_gram(t, "teacher_features")
    gram_s, _ = linear_gram(s, "student_features")
    value = gram_cka(gram_t, gram_s, debiased=debiased)
    if debiased:
        return value
    return float(min(max(value, 0.0), 1.0))


def _gram_rbf(x: np.ndarray, threshold: float) -> np.ndarray:
    """RBF Gram matrix with bandwidth ``threshold`` x the median pairwise distance (Kornblith et al.).

    ``x`` should be centred (as :func:`rbf_cka` passes it): the squared distances come from dot
    products. The distances are divided by their median before the bandwidth is applied, so a
    ``threshold`` whose square underflows (1e-200) gives the kernel's limit (the identity), not NaN.
    """
    x = np.ldexp(x, exponent_for(max_abs(x)))  # distances are scale-free once divided by their median
    dots = x @ x.T
    sq_norms = np.diag(dots)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * dots, 0.0)
    median = float(np.median(sq_dist))
    if median <= 0:
        raise InputError("RBF CKA: the median pairwise distance is 0 (most examples identical); bandwidth undefined.")
    try:
        width = 2.0 * threshold**2 * median
    except OverflowError:  # threshold**2 beyond float64
        width = float("inf")
    if np.isfinite(width) and width > 0:
        gram = np.exp(-sq_dist / width)
    else:
        with np.errstate(over="ignore", under="ignore"):  # threshold**2 under- or overflows: divide step by step
            gram = np.exp(-(sq_dist / median) / threshold / threshold / 2.0)
    off_diagonal = gram[~np.eye(gram.shape[0], dtype=bool)]
    if off_diagonal.size and float(np.max(off_diagonal)) == 0.0:
        raise InputError(
            f"RBF CKA: with `threshold`={threshold:g} every kernel value between two examples underflows to 0 in "
            "float64 (the bandwidth is far narrower than the distances), so CKA would be 1 for any features. "
            "Use a larger threshold (1.0 is the usual choice)."
        )
    if float(np.min(gram)) == 1.0:
        raise InputError(
            f"RBF CKA: with `threshold`={threshold:g} every kernel value rounds to 1 in float64 (the bandwidth is "
            "far wider than the distances), so CKA is undefined. Use a smaller threshold (1.0 is the usual choice)."
        )
    return gram


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
    check_positive(threshold, "threshold")
    t = as_float_array(teacher, "teacher_features", ndim=2, min_rows=1)
    s = as_float_array(student, "student_features", ndim=2, min_rows=1)
    from ._validation import check_same_length

    check_same_length(t, s, "teacher_features", "student_features")
    check_cka_examples(t.shape[0], debiased=debiased, what="RBF CKA")
    if t.shape[0] > max_examples:
        raise InputError(
            f"rbf_cka builds N x N Gram matrices; N={t.shape[0]} exceeds max_examples={max_examples} "
            f"(about {3 * 8 * t.shape[0] ** 2 / 2**30:.1f} GiB). Subsample the examples, raise "
            "max_examples, or use linear CKA, which streams in O(D^2) memory."
        )
    # Distances are translation invariant: centre first, so that ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j does
    # not cancel the distances away (relative error 7e-8 at a mean offset of 1e5 without it); the
    # centred values are scaled to unit size (exact) before they are squared.
    centred = []
    for x, name in ((t, "teacher_features"), (s, "student_features")):
        v, k = prescaled_difference(x, _column_mean(x))
        e = exponent_for(max_abs(v))
        v = np.ldexp(v, e)
        scaled_mean = np.ldexp(_column_mean(x), k + e)
        with np.errstate(over="ignore"):
            check_not_constant(float(np.sum(v * v)), float(np.sum(v * v)) + x.shape[0] * float(scaled_mean @ scaled_mean),
                               name)
        centred.append(v)
    return gram_cka(_gram_rbf(centred[0], threshold), _gram_rbf(centred[1], threshold), debiased=debiased)
