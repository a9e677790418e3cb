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

Named presets (:meth:`VerdictThresholds.preset`, :data:`PRESETS`):

* ``"default"``: the bars above (worst of the three criteria, inclusive bars).
* ``"article"``: the distillation-evaluation article's rule, exactly: *excellent* when accuracy
  retention > 0.95 **and** KL(teacher ‖ student) < 0.1; *good* when retention > 0.92 and KL < 0.3;
  *acceptable* when retention > 0.90; *weak* otherwise. Strict inequalities, KRS not used, and no
  verdict without accuracy retention (gold labels). As bars: retention (0.95, 0.92, 0.90), KL
  (0.1, 0.3, no bar), worst of the two: the joint conditions of the rule.
* ``"safety-critical"``: the article's target for safety-critical uses (98 %+ of the teacher's
  accuracy) as the *acceptable* bar: retention (0.995, 0.99, 0.98), KL (0.02, 0.05, 0.1) (the
  article's excellent and very-good KL bands), KRS (0.90, 0.85, 0.80).
* ``"cost-sensitive"``: the article's target for cost-sensitive uses (90–92 %): retention
  (0.95, 0.92, 0.90), KL (0.1, 0.3, 0.5) (the article's acceptable band ends at 0.5), KRS
  (0.80, 0.65, 0.50).

The safety-critical and cost-sensitive bars on KL and KRS are this package's reading of the
article's targets, not values from it. :func:`article_band` gives the article's band label of
each diagnostic (KL, Spearman ρ of confidences, ECE, accuracy retention), and
:func:`only_student_wrong_warning` its warning when more than 5 % of the examples are wrong only for
the student.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._validation import InputError, InputTypeError

LEVELS: tuple[str, ...] = ("excellent", "good", "acceptable", "weak")
#: Criteria in tie-breaking order, with their direction (True: higher is better).
CRITERIA: dict[str, bool] = {"accuracy_retention": True, "krs": True, "mean_kl": False}
#: The named presets of :meth:`VerdictThresholds.preset`, in the order reports list them.
PRESETS: tuple[str, ...] = ("default", "article", "safety-critical", "cost-sensitive")

Bars = tuple[float | None, float | None, float | None]


@dataclass(frozen=True)
class VerdictThresholds:
    """Bars for ``excellent``, ``good`` and ``acceptable``, per criterion (anything below is ``weak``).

    Attributes:
        accuracy_retention: minimum student / teacher accuracy for each level, descending.
        krs: minimum KRS for each level, descending, in [0, 1].
        mean_kl: maximum mean KL(teacher ‖ student) in nats for each level, ascending, >= 0.
        strict: bars are strict (``>`` and ``<``, as the article writes them) instead of inclusive.
        required: criteria without which there is no verdict (the article's rule needs retention).
        name: the preset's name (``"custom"`` for bars of your own).

    A criterion set to ``None`` is not used; a single bar set to ``None`` does not constrain that
    level (the article's *acceptable* has no KL bar).

    Example:
        >>> VerdictThresholds(krs=(0.9, 0.8, 0.6)).krs
        (0.9, 0.8, 0.6)
        >>> VerdictThresholds.preset("article").accuracy_retention
        (0.95, 0.92, 0.9)
    """

    accuracy_retention: Bars | None = (0.99, 0.97, 0.93)
    krs: Bars | None = (0.85, 0.70, 0.55)
    mean_kl: Bars | None = (0.05, 0.15, 0.35)
    strict: bool = False
    required: tuple[str, ...] = ()
    name: str = "custom"

    def __post_init__(self) -> None:
        for name, higher in CRITERIA.items():
            bars = getattr(self, name)
            if bars is None:
                continue
            if not isinstance(bars, (tuple, list)) or len(bars) != 3:
                raise InputError(f"`{name}` thresholds must be 3 numbers (excellent, good, acceptable), got {bars!r}.")
            values = [None if b is None else float(b) for b in bars]
            given = [v for v in values if v is not None]
            if not given or not all(np.isfinite(given)) or min(given) < 0:
                raise InputError(f"`{name}` thresholds must be finite and >= 0 (None: no bar), got {bars!r}.")
            if given != sorted(given, reverse=higher):
                order = "descending (excellent strictest)" if higher else "ascending (excellent strictest)"
                raise InputError(f"`{name}` thresholds must be {order}, got {bars!r}.")
            object.__setattr__(self, name, tuple(values))
        unknown = [c for c in self.required if c not in CRITERIA]
        if unknown:
            raise InputError(f"`required` must name criteria among {list(CRITERIA)}, got {unknown}.")
        object.__setattr__(self, "required", tuple(self.required))
        if all(getattr(self, c) is None for c in CRITERIA):
            raise InputError("VerdictThresholds needs bars for at least one criterion.")

    @classmethod
    def preset(cls, name: str) -> VerdictThresholds:
        """The named preset: ``"default"``, ``"article"``, ``"safety-critical"`` or ``"cost-sensitive"``.

        Raises:
            InputError: an unknown name.

        Example:
            >>> VerdictThresholds.preset("article").strict
            True
        """
        if name not in _PRESET_BARS:
            raise InputError(f"`thresholds` preset must be one of {list(PRESETS)}, got {name!r}.")
        return cls(**_PRESET_BARS[name], name=name)  # type: ignore[arg-type]

    def rule(self) -> str:
        """The rule in words, e.g. ``"excellent: accuracy_retention > 0.95 and mean_kl < 0.1; ..."``."""
        parts = []
        for k, level in enumerate(LEVELS[:3]):
            conditions = []
            for name, higher in CRITERIA.items():
                bars = getattr(self, name)
                if bars is not None and bars[k] is not None:
                    conditions.append(f"{name} {_comparison(higher, self.strict)} {bars[k]:g}")
            parts.append(f"{level}: " + (" and ".join(conditions) or "always"))
        text = "; ".join(parts) + "; weak otherwise"
        if len([c for c in CRITERIA if getattr(self, c) is not None]) > 1:
            text += " (the worst criterion decides; a criterion the run does not have is left out"
            text += f"; no verdict without {', '.join(self.required)})" if self.required else ")"
        elif self.required:
            text += f" (no verdict without {', '.join(self.required)})"
        return text


_PRESET_BARS: dict[str, dict[str, Any]] = {
    "default": {},
    "article": {"accuracy_retention": (0.95, 0.92, 0.90), "krs": None, "mean_kl": (0.1, 0.3, None),
                "strict": True, "required": ("accuracy_retention",)},
    "safety-critical": {"accuracy_retention": (0.995, 0.99, 0.98), "krs": (0.90, 0.85, 0.80),
                        "mean_kl": (0.02, 0.05, 0.1)},
    "cost-sensitive": {"accuracy_retention": (0.95, 0.92, 0.90), "krs": (0.80, 0.65, 0.50),
                       "mean_kl": (0.1, 0.3, 0.5)},
}


def resolve_thresholds(thresholds: VerdictThresholds | str | None) -> VerdictThresholds:
    """A preset name, a :class:`VerdictThresholds` or None (the ``"default"`` preset) as thresholds.

    Raises:
        InputError: an unknown preset name.
        InputTypeError: anything else.
    """
    if thresholds is None:
        return VerdictThresholds.preset("default")
    if isinstance(thresholds, str):
        return VerdictThresholds.preset(thresholds)
    if not isinstance(thresholds, VerdictThresholds):
        raise InputTypeError(
            f"`thresholds` must be a VerdictThresholds or a preset name {list(PRESETS)}, got {type(thresholds).__name__}.")
    return thresholds


def _comparison(greater_is_better: bool, strict: bool) -> str:
    return (">" if strict else ">=") if greater_is_better else ("<" if strict else "<=")


def criterion_level(value: float, bars: Bars, *, greater_is_better: bool, strict: bool = False) -> str:
    """The level a value reaches against (excellent, good, acceptable) bars (None: no bar at that level).

    Example:
        >>> criterion_level(0.98, (0.99, 0.97, 0.93), greater_is_better=True)
        'good'
        >>> criterion_level(0.4, (0.05, 0.15, 0.35), greater_is_better=False)
        'weak'
        >>> criterion_level(0.95, (0.95, 0.92, 0.90), greater_is_better=True, strict=True)
        'good'
    """
    for level, bar in zip(LEVELS, bars, strict=False):
        if bar is None:
            return level
        if greater_is_better:
            met = value > bar if strict else value >= bar
        else:
            met = value < bar if strict else value <= bar
        if met:
            return level
    return LEVELS[-1]


def _undecided(bars: VerdictThresholds, missing: list[str], criteria: dict[str, Any]) -> dict[str, Any]:
    return {
        "level": None, "decided_by": None, "value": None, "threshold": None, "comparison": None,
        "next_threshold": None, "preset": bars.name, "rule": bars.rule(),
        "reason": f"no verdict: the {bars.name} rule needs {' and '.join(missing)}, which this run does not have"
                  + (" (accuracy retention needs gold labels)." if "accuracy_retention" in missing else "."),
        "criteria": criteria, "thresholds": _bars_dict(bars),
    }


def _bars_dict(bars: VerdictThresholds) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) and k in CRITERIA else v for k, v in asdict(bars).items()}


def verdict(
    *,
    accuracy_retention: float | None = None,
    krs: float | None = None,
    mean_kl: float | None = None,
    thresholds: VerdictThresholds | str | None = None,
) -> dict[str, Any]:
    """Worst level across the criteria given; names the criterion that decided it.

    Args:
        accuracy_retention: student / teacher accuracy (needs labels); optional.
        krs: Knowledge Retention Score in [0, 1]; optional.
        mean_kl: mean KL(teacher ‖ student) in nats; optional.
        thresholds: the bars, or a preset name (:data:`PRESETS`); defaults to ``"default"``.

    Returns:
        ``level`` (one of :data:`LEVELS`; None when a criterion the preset requires is missing),
        ``decided_by`` (criterion name), ``value``, ``threshold`` (the bar met for that level; for
        ``weak`` the ``acceptable`` bar missed), ``comparison`` (``">="``, ``"<="``, or ``">"``,
        ``"<"`` for strict bars), ``next_threshold`` (the bar for the next level up; None for
        ``excellent``), ``reason`` (a sentence), ``preset`` and ``rule`` (the thresholds' name and
        their rule in words), ``criteria`` ({name: {value, level, greater_is_better, thresholds}})
        and ``thresholds`` (all bars).

    Raises:
        InputError: no criterion given, or a value that is NaN/Inf.
        InputTypeError: a value that is not a number, or thresholds of the wrong type.

    Example:
        >>> out = verdict(accuracy_retention=0.985, krs=0.9, mean_kl=0.2)
        >>> out["level"], out["decided_by"]
        ('acceptable', 'mean_kl')
        >>> verdict(accuracy_retention=0.9425, mean_kl=0.051, thresholds="article")["level"]
        'good'
    """
    bars = resolve_thresholds(thresholds)
    given = {"accuracy_retention": accuracy_retention, "krs": krs, "mean_kl": mean_kl}
    if all(v is None for v in given.values()):
        raise InputError("`verdict` needs at least one of accuracy_retention, krs or mean_kl.")
    criteria: dict[str, dict[str, Any]] = {}
    for name, higher in CRITERIA.items():
        value = given[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputTypeError(f"`{name}` must be a number or None, got {type(value).__name__}.")
        if not math.isfinite(value):
            raise InputError(f"`{name}` must be finite, got {value}.")
        levels = getattr(bars, name)
        if levels is None:
            continue
        criteria[name] = {
            "value": float(value),
            "level": criterion_level(float(value), levels, greater_is_better=higher, strict=bars.strict),
            "greater_is_better": higher,
            "thresholds": dict(zip(LEVELS[:3], levels, strict=True)),
        }
    missing = [c for c in bars.required if c not in criteria]
    if not criteria:
        missing = missing or [c for c in CRITERIA if getattr(bars, c) is not None]
    if missing:
        return _undecided(bars, missing, criteria)
    worst = max(LEVELS.index(c["level"]) for c in criteria.values())
    name = next(n for n, c in criteria.items() if LEVELS.index(c["level"]) == worst)
    chosen = criteria[name]
    levels = getattr(bars, name)
    level = LEVELS[worst]
    comparison = _comparison(chosen["greater_is_better"], bars.strict)
    threshold = levels[min(worst, 2)]
    next_threshold = None if worst == 0 else levels[worst - 1]
    if level == "weak":
        reason = f"decided by {name} = {chosen['value']:.4g}, which misses the 'acceptable' bar ({comparison} {threshold:g})."
    else:
        bar = "no bar" if threshold is None else f"{comparison} {threshold:g}"
        reason = f"decided by {name} = {chosen['value']:.4g} ({bar} for '{level}'"
        reason += ")." if next_threshold is None else f"; '{LEVELS[worst - 1]}' needs {comparison} {next_threshold:g})."
    return {
        "level": level,
        "decided_by": name,
        "value": chosen["value"],
        "threshold": threshold,
        "comparison": comparison,
        "next_threshold": next_threshold,
        "preset": bars.name,
        "rule": bars.rule(),
        "reason": reason,
        "criteria": criteria,
        "thresholds": _bars_dict(bars),
    }


def verdicts_by_preset(
    *, accuracy_retention: float | None = None, krs: float | None = None, mean_kl: float | None = None,
) -> dict[str, dict[str, Any]]:
    """What every named preset says of the same figures: ``{preset: verdict(...)}`` in :data:`PRESETS` order.

    Example:
        >>> {k: v["level"] for k, v in verdicts_by_preset(accuracy_retention=0.9425, krs=0.928, mean_kl=0.051).items()}
        {'default': 'acceptable', 'article': 'good', 'safety-critical': 'weak', 'cost-sensitive': 'good'}
    """
    return {name: verdict(accuracy_retention=accuracy_retention, krs=krs, mean_kl=mean_kl, thresholds=name)
            for name in PRESETS}


# --- the article's bands and warning ----------------------------------------------------------------

#: The article's bands per diagnostic, in increasing order of value: ``(upper bound, upper bound
#: included, label)``; the last band has no upper bound. Each bound sits on the side the article's
#: wording puts it ("KL > 0.5 weak", "Spearman < 0.7 divergent", "ECE > 0.1 poorly", retention
#: "> 0.90 acceptable").
BANDS: dict[str, tuple[tuple[float | None, bool, str], ...]] = {
    "mean_kl": ((0.05, False, "excellent"), (0.1, False, "very good"), (0.5, True, "acceptable"), (None, False, "weak")),
    "confidence_spearman": ((0.7, False, "divergent"), (0.9, True, "between excellent and divergent"),
                            (None, False, "excellent")),
    "ece": ((0.05, False, "well calibrated"), (0.1, True, "between well and poorly calibrated"),
            (None, False, "poorly calibrated")),
    "accuracy_retention": ((0.90, True, "weak"), (0.92, True, "acceptable"), (0.95, True, "good"),
                           (None, False, "excellent")),
}
#: Share of examples wrong only for the student above which the article warns.
ONLY_STUDENT_WRONG_LIMIT = 0.05
#: The article's remedies when too many examples are wrong only for the student.
REMEDIES: tuple[str, ...] = (
    "more transfer data (more, or more varied, unlabelled examples for the teacher to label)",
    "a higher distillation temperature (softer teacher targets carry more of its dark knowledge)",
    "a larger student",
    "longer training",
)


def article_band(measure: str, value: float | None) -> str | None:
    """The article's band label of one diagnostic (:data:`BANDS`); None for a missing value.

    At a bound, the article's wording decides (KL 0.05 is *very good*, 0.5 *acceptable*; Spearman
    0.7 is between excellent and divergent; retention 0.95 is *good*, as its strict rule reads).

    Example:
        >>> article_band("mean_kl", 0.051), article_band("ece", 0.03), article_band("confidence_spearman", 0.95)
        ('very good', 'well calibrated', 'excellent')
    """
    if measure not in BANDS:
        raise InputError(f"`measure` must be one of {list(BANDS)}, got {measure!r}.")
    if value is None or not math.isfinite(value):
        return None
    for upper, included, label in BANDS[measure]:
        if upper is None or value < upper or (included and value == upper):
            return label
    return BANDS[measure][-1][2]


def only_student_wrong_warning(rate: float | None, *, limit: float = ONLY_STUDENT_WRONG_LIMIT) -> dict[str, Any] | None:
    """The article's warning when more than ``limit`` of the examples are wrong only for the student.

    Returns:
        None below the limit (or without a rate), else ``{"code", "rate", "limit", "message", "remedies"}``.

    Example:
        >>> only_student_wrong_warning(0.079)["message"][:40]
        '7.9% of the examples are wrong only for '
        >>> only_student_wrong_warning(0.03) is None
        True
    """
    if rate is None or not rate > limit:
        return None
    return {
        "code": "only_student_wrong",
        "rate": float(rate),
        "limit": limit,
        "message": f"{100 * rate:.1f}% of the examples are wrong only for the student (more than the article's "
                   f"{100 * limit:g}%): knowledge the teacher had was lost in distillation.",
        "remedies": list(REMEDIES),
    }
