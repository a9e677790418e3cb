r"""A one-word verdict on a distilled student: ``excellent``, ``good``, ``acceptable`` or ``weak``.

Each available criterion gets a level from its thresholds; the verdict is the **worst** level across
criteria (a student is only as good as its weakest figure), and the result names the criterion that
decided it, its value and the bar it met (or, for ``weak``, the ``acceptable`` bar it missed).  When
several criteria share the worst level, the first in :data:`CRITERIA` order decides.

The default thresholds (:class:`VerdictThresholds`) are heuristics for classification students,
not values from the KRS paper; calibrate them on your own teacher/baseline pairs:

* ``accuracy_retention`` (student / teacher accuracy, higher is better): 0.99 / 0.97 / 0.93.
  0.99 is parity within the sampling noise of a ~1,000-example dev set (the standard error of a 90 %
  accuracy on SST-2's 872 sentences is ~1 point); 0.97 is DistilBERT's headline "97 % of BERT's
  performance" (Sanh et al. 2019); below 0.93 a student loses more than twice that.
* ``mean_kl`` (mean KL(teacher ‖ student) in nats, lower is better): 0.05 / 0.15 / 0.35.  For a
  binary teacher at 90 % confidence these are a student at about 77 %, 67 % and 51 % on the same
  class; by Jensen's inequality :math:`\mathrm{AOAg}_{kl} = \overline{e^{-\mathrm{KL}}} \ge e^{-\overline{\mathrm{KL}}}`,
  i.e. AOAg of at least 0.95, 0.86 and 0.70.
* ``krs`` (higher is better): 0.85 / 0.70 / 0.55.  With the NLP preset (α = β = 0.5) these are,
  for example, FSS 0.8 with AOAg 0.9; FSS 0.55 with AOAg 0.85; FSS 0.4 with AOAg 0.7.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVELS: tuple[str, ...] = ("excellent", "good", "acceptable", "weak")
#: Criteria in tie-breaking order, with their direction (True: higher is better).
CRITERIA: dict[str, bool] = {"accuracy_retention": True, "krs": True, "mean_kl": False}


@dataclass(frozen=True)
class VerdictThresholds:
    """Bars for ``excellent``, ``good`` and ``acceptable``, per criterion (anything below is ``weak``).

    Attributes:
        accuracy_retention: minimum student / teacher accuracy for each level, descending.
        krs: minimum KRS for each level, descending, in [0, 1].
        mean_kl: maximum mean KL(teacher ‖ student) in nats for each level, ascending, >= 0.

    Example:
        >>> VerdictThresholds(krs=(0.9, 0.8, 0.6)).krs
        (0.9, 0.8, 0.6)
    """

    accuracy_retention: tuple[float, float, float] = (0.99, 0.97, 0.93)
    krs: tuple[float, float, float] = (0.85, 0.70, 0.55)
    mean_kl: tuple[float, float, float] = (0.05, 0.15, 0.35)

    def __post_init__(self) -> None:
        for name, higher in CRITERIA.items():
            bars = getattr(self, name)
            if not isinstance(bars, (tuple, list)) or len(bars) != 3:
                raise ValueError(f"`{name}` thresholds must be 3 numbers (excellent, good, acceptable), got {bars!r}.")
            values = [float(b) for b in bars]
            if not all(np.isfinite(values)) or min(values) < 0:
                raise ValueError(f"`{name}` thresholds must be finite and >= 0, got {bars!r}.")
            ordered = values == sorted(values, reverse=higher)
            if not ordered:
                order = "descending (excellent strictest)" if higher else "ascending (excellent strictest)"
                raise ValueError(f"`{name}` thresholds must be {order}, got {bars!r}.")
            object.__setattr__(self, name, tuple(values))


def criterion_level(value: float, bars: tuple[float, float, float], *, greater_is_better: bool) -> str:
    """The level a value reaches against (excellent, good, acceptable) bars.

    Example:
        >>> criterion_level(0.98, (0.99, 0.97, 0.93), greater_is_better=True)
        'good'
        >>> criterion_level(0.4, (0.05, 0.15, 0.35), greater_is_better=False)
        'weak'
    """
    for level, bar in zip(LEVELS, bars, strict=False):
        if (value >= bar) if greater_is_better else (value <= bar):
            return level
    return LEVELS[-1]


def verdict(
    *,
    accuracy_retention: float | None = None,
    krs: float | None = None,
    mean_kl: float | None = None,
    thresholds: VerdictThresholds | None = None,
) -> dict[str, Any]:
    """Worst level across the criteria given; names the criterion that decided it.

    Args:
        accuracy_retention: student / teacher accuracy (needs labels); optional.
        krs: Knowledge Retention Score in [0, 1]; optional.
        mean_kl: mean KL(teacher ‖ student) in nats; optional.
        thresholds: the bars; defaults to :class:`VerdictThresholds()`.

    Returns:
        ``level`` (one of :data:`LEVELS`), ``decided_by`` (criterion name), ``value``, ``threshold``
        (the bar met for that level; for ``weak`` the ``acceptable`` bar missed), ``comparison``
        (``">="`` or ``"<="``), ``next_threshold`` (the bar for the next level up; None for
        ``excellent``), ``reason`` (a sentence), ``criteria`` ({name: {value, level,
        greater_is_better, thresholds}}) and ``thresholds`` (all bars).

    Raises:
        ValueError: no criterion given, or a value that is NaN/Inf.

    Example:
        >>> out = verdict(accuracy_retention=0.985, krs=0.9, mean_kl=0.2)
        >>> out["level"], out["decided_by"]
        ('acceptable', 'mean_kl')
    """
    bars = thresholds if thresholds is not None else VerdictThresholds()
    if not isinstance(bars, VerdictThresholds):
        raise TypeError(f"`thresholds` must be a VerdictThresholds, got {type(bars).__name__}.")
    given = {"accuracy_retention": accuracy_retention, "krs": krs, "mean_kl": mean_kl}
    criteria: dict[str, dict[str, Any]] = {}
    for name, higher in CRITERIA.items():
        value = given[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"`{name}` must be a number or None, got {type(value).__name__}.")
        if not np.isfinite(value):
            raise ValueError(f"`{name}` must be finite, got {value}.")
        levels = getattr(bars, name)
        criteria[name] = {
            "value": float(value),
            "level": criterion_level(float(value), levels, greater_is_better=higher),
            "greater_is_better": higher,
            "thresholds": dict(zip(LEVELS[:3], levels, strict=True)),
        }
    if not criteria:
        raise ValueError("`verdict` needs at least one of accuracy_retention, krs or mean_kl.")
    worst = max(LEVELS.index(c["level"]) for c in criteria.values())
    name = next(n for n, c in criteria.items() if LEVELS.index(c["level"]) == worst)
    chosen = criteria[name]
    levels = getattr(bars, name)
    level = LEVELS[worst]
    comparison = ">=" if chosen["greater_is_better"] else "<="
    threshold = levels[min(worst, 2)]
    next_threshold = None if worst == 0 else levels[worst - 1]
    if level == "weak":
        reason = f"decided by {name} = {chosen['value']:.4g}, which misses the 'acceptable' bar ({comparison} {threshold:g})."
    else:
        reason = f"decided by {name} = {chosen['value']:.4g} ({comparison} {threshold:g} for '{level}'"
        reason += ")." if next_threshold is None else f"; '{LEVELS[worst - 1]}' needs {comparison} {next_threshold:g})."
    return {
        "level": level,
        "decided_by": name,
        "value": chosen["value"],
        "threshold": threshold,
        "comparison": comparison,
        "next_threshold": next_threshold,
        "reason": reason,
        "criteria": criteria,
        "thresholds": {k: list(v) for k, v in asdict(bars).items()},
    }
