"""Which students are on the trade-off front: no other student is at least as good on both axes and better on one.

The quality-retained lesson judges a student against the constraint that sent you to distillation
(size, memory, latency): among several students, only those on the Pareto front of (quality
retained, size) or (quality retained, speed) are worth shipping for that constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import InputError

__all__ = ["pareto_front"]


def pareto_front(
    x: Sequence[float | None], y: Sequence[float | None], *, x_higher_is_better: bool, y_higher_is_better: bool = True,
) -> list[bool]:
    """Whether each point is on the Pareto front (not dominated by another point); None/NaN points are not.

    Point ``j`` dominates ``i`` when it is at least as good on both axes and strictly better on one.
    Equal points are all on the front.

    Args:
        x: the first figure per point (e.g. size ratio, lower is better; or speed-up, higher is better).
        y: the second figure per point (e.g. quality retained, higher is better).
        x_higher_is_better: direction of ``x``.
        y_higher_is_better: direction of ``y``.

    Returns:
        One bool per point, in order.

    Example:
        >>> pareto_front([0.5, 0.3, 0.6, 0.3], [0.95, 0.90, 0.93, 0.85], x_higher_is_better=False)
        [True, True, False, False]
    """
    if len(x) != len(y):
        raise InputError(f"`x` and `y` must have the same length, got {len(x)} and {len(y)}.")
    xs = np.array([np.nan if v is None else float(v) for v in x], dtype=np.float64)
    ys = np.array([np.nan if v is None else float(v) for v in y], dtype=np.float64)
    xs = xs if x_higher_is_better else -xs
    ys = ys if y_higher_is_better else -ys
    valid = np.isfinite(xs) & np.isfinite(ys)
    front = []
    for i in range(len(xs)):
        if not valid[i]:
            front.append(False)
            continue
        dominated = valid & (xs >= xs[i]) & (ys >= ys[i]) & ((xs > xs[i]) | (ys > ys[i]))
        front.append(not bool(dominated.any()))
    return front
