"""Figures of the report, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function takes plain numbers (what :func:`knowledge_retention.report.build_report` stores),
writes one PNG and returns its path:

* :func:`plot_cross_layer_cka` - heatmap of linear CKA between every teacher and student layer,
  annotated, with the layer pairs used for FSS outlined;
* :func:`plot_alpha_sensitivity` - KRS as α goes from 0 to 1 (:func:`knowledge_retention.score.alpha_sensitivity`),
  the preset α marked; :func:`plot_alpha_sensitivity_curves` - one line per model on one figure;
* :func:`plot_reliability_diagrams` - teacher and student side by side: accuracy vs confidence per
  bin, the gap to the diagonal, and the bin counts;
* :func:`plot_baseline_comparison` - distilled minus baseline student per metric, with the paired
  intervals, around 0.

matplotlib is imported inside each function: importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .score import alpha_sensitivity

DPI = 150
_TEACHER_COLOUR = "#1f77b4"
_STUDENT_COLOUR = "#ff7f0e"
_BASELINE_COLOUR = "#7f7f7f"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _as_float(values: Sequence[Any]) -> np.ndarray:
    """Lists with None (JSON's NaN) to float arrays with NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def plot_cross_layer_cka(
    matrix: Sequence[Sequence[float | None]] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    teacher_layers: Sequence[str] | None = None,
    student_layers: Sequence[str] | None = None,
    pairs: Sequence[Sequence[int]] | None = None,
    title: str = "Cross-layer linear CKA: teacher vs student",
) -> Path:
    """Heatmap of the ``(L_t, L_s)`` CKA matrix; teacher layers on the y axis, student layers on the x axis.

    Args:
        matrix: ``(L_t, L_s)`` values in [0, 1] (None/NaN cells are left blank).
        path: output PNG path.
        teacher_layers: L_t layer names (default ``0..L_t-1``).
        student_layers: L_s layer names.
        pairs: ``(teacher, student)`` index pairs used for FSS, outlined in red.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    from matplotlib.patches import Rectangle

    values = np.array([_as_float(row) for row in matrix])
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"`matrix` must be a non-empty 2-D (L_t, L_s) array, got shape {values.shape}.")
    n_t, n_s = values.shape
    t_names = list(teacher_layers) if teacher_layers is not None else [str(i) for i in range(n_t)]
    s_names = list(student_layers) if student_layers is not None else [str(j) for j in range(n_s)]
    if len(t_names) != n_t or len(s_names) != n_s:
        raise ValueError(
            f"Layer names must match the matrix: {n_t} teacher and {n_s} student layers, got "
            f"{len(t_names)} and {len(s_names)} names."
        )
    fig = _figure(min(3.2 + 0.75 * n_s, 16.0), min(2.4 + 0.45 * n_t, 14.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label("linear CKA (1 = same representation)")
    if n_t * n_s <= 400:
        size = 9 if n_t * n_s <= 120 else 6
        for i in range(n_t):
            for j in range(n_s):
                if np.isfinite(values[i, j]):
                    colour = "black" if values[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=size, color=colour)
    handles = []
    if pairs:
        for k, (i, j) in enumerate(pairs):
            patch = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.0,
                              label="layer pairs used for FSS")
            ax.add_patch(patch)
            if k == 0:
                handles.append(patch)
    if not np.all(np.isfinite(values)):
        handles.append(Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.6",
                                 label="blank: undefined (constant features)"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False, fontsize=8)
    ax.set_xticks(range(n_s), s_names, rotation=45 if n_s > 6 else 0, ha="right" if n_s > 6 else "center")
    ax.set_yticks(range(n_t), t_names)
    ax.set_xlabel("student layer")
    ax.set_ylabel("teacher layer")
    ax.set_title(title)
    return _save(fig, path)


def _alpha_axes(ax: Any, bottom: float, title: str, *, top: float = 1.02) -> None:
    """Axes of a KRS-against-α figure: α from 0 to 1, KRS from ``bottom`` (at least 0) to ``top``."""
    ax.set_ylim(max(0.0, bottom), top)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("α (weight of FSS; β = 1 − α weights AOAg)")
    ax.set_ylabel("KRS")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def plot_alpha_sensitivity(
    fss: float,
    aoag: float,
    path: str | os.PathLike[str],
    *,
    alpha: float | None = None,
    interval: tuple[float, float] | None = None,
    interval_label: str = "confidence interval of KRS",
    title: str = "KRS sensitivity to the weight α",
) -> Path:
    """KRS = α·FSS + (1 - α)·AOAg for α = 0, 0.01, ..., 1, with the preset α marked.

    Args:
        fss: Feature Similarity Score in [0, 1].
        aoag: Average Output Agreement in [0, 1].
        path: output PNG path.
        alpha: the α used for the headline KRS (marked), or None.
        interval: optional ``(low, high)`` interval of the headline KRS, drawn as an error bar at α.
        interval_label: legend label of that error bar.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    alphas, krs = alpha_sensitivity(fss, aoag, step=0.01)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(alphas, krs, color=_STUDENT_COLOUR, linewidth=2.0, label="KRS(α) = α·FSS + (1 − α)·AOAg")
    ax.axhline(fss, color="0.5", linestyle=":", linewidth=1.0)
    ax.axhline(aoag, color="0.5", linestyle="--", linewidth=1.0)
    box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    top = 1.02
    for text, x, y, ha, side in _end_labels(fss, aoag):
        ax.annotate(text, (x, y), xytext=(0, 7 * side), textcoords="offset points", fontsize=8, ha=ha,
                    va="bottom" if side > 0 else "top", bbox=box)
        if side > 0:
            top = max(top, y + 0.07)  # room above the axes' top for a label written over its end
    if alpha is not None:
        value = alpha * fss + (1.0 - alpha) * aoag
        ax.axvline(alpha, color="black", linewidth=1.0, alpha=0.6)
        if interval is not None:
            ax.errorbar([alpha], [value], yerr=[[value - interval[0]], [interval[1] - value]], fmt="none",
                        ecolor="black", capsize=4, label=interval_label)
        ax.plot([alpha], [value], "o", color="black", label=f"preset α = {alpha:g}: KRS = {value:.3f}")
    _alpha_axes(ax, min(fss, aoag) - 0.1, title, top=top)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def _end_labels(fss: float, aoag: float) -> list[tuple[str, float, float, str, int]]:
    """``(text, x, y, ha, side)`` of the two end labels, ``side`` +1 above the line, -1 below it.

    Each label goes on the side of its end that the line leaves free: a rising line (FSS > AOAg)
    has room under its left end and over its right end, a falling one the other way round.
    """
    rising = fss >= aoag
    return [
        (f"AOAg = {aoag:.3f} (α = 0)", 0.01, aoag, "left", -1 if rising else 1),
        (f"FSS = {fss:.3f} (α = 1)", 0.99, fss, "right", 1 if rising else -1),
    ]


def plot_alpha_sensitivity_curves(
    curves: Mapping[str, tuple[float, float]],
    path: str | os.PathLike[str],
    *,
    alpha: float | None = None,
    title: str = "KRS sensitivity to the weight α",
) -> Path:
    """Several students on one α-sensitivity figure: one line KRS(α) = α·FSS + (1 − α)·AOAg each.

    Labels ending in ``before``/``after`` share a colour per student name, dashed before, solid
    after, so the effect of distillation reads as the gap between the two lines.

    Args:
        curves: ``{label: (fss, aoag)}``, in legend order.
        path: output PNG path.
        alpha: the α of the headline KRS (a vertical line), or None.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    if not curves:
        raise ValueError("`curves` must hold at least one {label: (fss, aoag)} entry, got none.")
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    colours: dict[str, Any] = {}
    fig = _figure(7.2, 4.6)
    ax = fig.add_subplot()
    low = 1.0
    for label, (fss, aoag) in curves.items():
        alphas, krs = alpha_sensitivity(fss, aoag, step=0.01)
        stem, _, variant = label.rpartition("-") if label.endswith(("-before", "-after")) else (label, "", "")
        colour = colours.setdefault(stem, palette(len(colours) % 10))
        ax.plot(alphas, krs, color=colour, linewidth=2.0, linestyle="--" if variant == "before" else "-", label=label)
        low = min(low, fss, aoag)
    if alpha is not None:
        ax.axvline(alpha, color="black", linewidth=1.0, alpha=0.6, label=f"preset α = {alpha:g}")
    _alpha_axes(ax, low - 0.05, title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_krs_during_training(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    title: str = "KRS while the students train",
    names: Mapping[str, str] | None = None,
) -> Path:
    """KRS against the training step, one line per run (:attr:`KRSCallback.history` entries).

    Labels ending in ``-before``/``-after`` share a colour per student, dashed before (fine-tuned on
    labels), solid after (distilled), as in :func:`plot_alpha_sensitivity_curves`.

    Args:
        histories: ``{label: [{"step": s, "krs": k, ...}, ...]}``, in legend order.
        path: output PNG path.
        title: figure title.
        names: display names of the label stems (e.g. ``{"pkd": "PKD"}``).

    Returns:
        The path of the PNG written.
    """
    runs = {label: [(float(h["step"]), float(h["krs"])) for h in history if h.get("krs") is not None]
            for label, history in histories.items()}
    runs = {label: sorted(points) for label, points in runs.items() if points}
    if not runs:
        raise ValueError("`histories` must hold at least one run with logged KRS values, got none.")
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    colours: dict[str, Any] = {}
    fig = _figure(7.2, 4.2)
    ax = fig.add_subplot()
    for label, points in runs.items():
        stem, _, variant = label.rpartition("-") if label.endswith(("-before", "-after")) else (label, "", "")
        colour = colours.setdefault(stem, palette(len(colours) % 10))
        steps, krs = zip(*points, strict=True)
        shown = (names or {}).get(stem, stem) + (f" ({variant})" if variant else "")
        ax.plot(steps, krs, color=colour, linewidth=2.0, linestyle="--" if variant == "before" else "-",
                marker="o", markersize=3, label=shown)
    values = [k for points in runs.values() for _, k in points]
    low, high = min(values), max(values)
    pad = max(0.02, 0.08 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    ax.set_xlabel("training step (optimizer updates)")
    ax.set_ylabel("KRS on the dev set")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _save(fig, path)


def _confidence_floor(lower: np.ndarray, count: np.ndarray) -> float:
    """Left edge of the confidence axis: the lowest occupied bin, rounded down to a tenth.

    The top-class probability of C classes is at least 1/C (0.5 for binary), so the bins below the
    first occupied one are always empty; drawing them would waste half the panel.
    """
    occupied = lower[np.isfinite(count) & (count > 0)]
    if occupied.size == 0:
        return 0.0
    return float(np.floor(occupied.min() * 10 + 1e-9) / 10)


def _reliability_panel(ax: Any, ax_count: Any, bins: Mapping[str, Sequence[Any]], name: str, colour: str, ece: float | None) -> None:
    lower = _as_float(bins["bin_lower"])
    upper = _as_float(bins["bin_upper"])
    accuracy = _as_float(bins["accuracy"])
    confidence = _as_float(bins["confidence"])
    count = _as_float(bins["count"])
    centres = (lower + upper) / 2
    width = upper - lower
    filled = np.isfinite(accuracy)
    ax.bar(centres[filled], accuracy[filled], width=width[filled], color=colour, edgecolor="black", linewidth=0.5,
           alpha=0.85, label="accuracy in bin")
    gap_low = np.minimum(accuracy, confidence)[filled]
    gap_height = np.abs(accuracy - confidence)[filled]
    ax.bar(centres[filled], gap_height, bottom=gap_low, width=width[filled], facecolor="none",
           edgecolor="red", hatch="///", linewidth=0.8, label="gap |accuracy − confidence|")
    ax.plot(centres[filled], confidence[filled], "_", color="black", markersize=9, markeredgewidth=1.5,
            label="mean confidence in bin")
    left = _confidence_floor(lower, count)
    ax.plot([left, 1], [left, 1], linestyle="--", color="black", linewidth=1.0, label="perfect calibration")
    ax.set_xlim(left, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    heading = f"{name}" + ("" if ece is None else f" — ECE = {ece:.3f}")
    ax.set_title(heading)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(True, alpha=0.3)
    ax_count.bar(centres, count, width=width, color=colour, edgecolor="black", linewidth=0.5)
    ax_count.set_xlim(left, 1)
    ax_count.set_xlabel("confidence (max softmax probability)")
    ax_count.set_ylabel("examples")
    if np.nanmax(count) > 0 and np.nanmax(count) / max(np.nanmin(count[count > 0]), 1) > 50:
        ax_count.set_yscale("log")


def plot_reliability_diagrams(
    teacher_bins: Mapping[str, Sequence[Any]],
    student_bins: Mapping[str, Sequence[Any]],
    path: str | os.PathLike[str],
    *,
    teacher_ece: float | None = None,
    student_ece: float | None = None,
) -> Path:
    """Reliability diagrams of the teacher and the student, side by side, with bin counts below.

    Args:
        teacher_bins: :func:`knowledge_retention.diagnostics.reliability_diagram` output (arrays or lists,
            None for empty bins): ``bin_lower``, ``bin_upper``, ``confidence``, ``accuracy``, ``count``.
        student_bins: the student's.
        path: output PNG path.
        teacher_ece: shown in the panel title.
        student_ece: shown in the panel title.

    Returns:
        The path of the PNG written.
    """
    fig = _figure(10.0, 5.6)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1])
    for col, (bins, name, colour, ece) in enumerate(
        ((teacher_bins, "Teacher", _TEACHER_COLOUR, teacher_ece), (student_bins, "Student", _STUDENT_COLOUR, student_ece))
    ):
        ax = fig.add_subplot(grid[0, col])
        ax_count = fig.add_subplot(grid[1, col], sharex=ax)
        _reliability_panel(ax, ax_count, bins, name, colour, ece)
    fig.suptitle("Reliability diagrams (equal-width confidence bins)")
    return _save(fig, path)


def plot_baseline_comparison(
    metrics: Mapping[str, tuple[float | None, float | None]],
    path: str | os.PathLike[str],
    *,
    intervals: Mapping[str, tuple[float | None, float | None]] | None = None,
    confidence_level: float = 0.95,
    labels: tuple[str, str] = ("plain fine-tuning (baseline)", "distillation"),
    title: str = "Distillation minus plain fine-tuning of the same student",
) -> Path:
    """The difference distilled − baseline per metric, with its paired interval, around a line at 0.

    A difference of 0.006 between two scores near 0.9 is drawn as what it is: a point near 0 whose
    interval may well include 0 (then the comparison is undecided), not two bars of visibly
    different height. The two values themselves are written in the metric's label.

    Args:
        metrics: ``{metric name: (baseline value, distilled value)}`` (None: not available).
        path: output PNG path.
        intervals: ``{metric name: (low, high)}``: the paired interval of distilled − baseline
            (``report["baseline"]["paired"]["differences"]``); metrics without one get a point only.
        confidence_level: of the intervals, for the legend.
        labels: names of the two models (baseline, distilled), for the axis label.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    names = [k for k, v in metrics.items() if v[0] is not None and v[1] is not None]
    if not names:
        raise ValueError("`metrics` holds no values to compare: no metric has both a baseline and a distilled value.")
    intervals = intervals or {}
    base = _as_float([metrics[k][0] for k in names])
    dist = _as_float([metrics[k][1] for k in names])
    delta = dist - base
    y = np.arange(len(names))[::-1]  # the first metric on top
    fig = _figure(7.0, max(2.9, 1.3 + 0.55 * len(names)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="black", linewidth=1.0)
    extent = [float(np.max(np.abs(delta)))]
    shown_interval = shown_undecided = False
    for row, name, d in zip(y, names, delta, strict=True):
        low, high = intervals.get(name, (None, None))
        if low is not None and high is not None:
            decided = low > 0 or high < 0
            colour = _STUDENT_COLOUR if decided else _BASELINE_COLOUR
            label = None
            if decided and not shown_interval:
                label, shown_interval = f"{100 * confidence_level:.0f}% paired interval excludes 0", True
            elif not decided and not shown_undecided:
                label, shown_undecided = f"{100 * confidence_level:.0f}% paired interval includes 0: undecided", True
            ax.errorbar([d], [row], xerr=[[d - low], [high - d]], fmt="o", color=colour, ecolor=colour, capsize=4,
                        markersize=6, linewidth=1.6, label=label)
            extent += [abs(low), abs(high)]
        else:
            ax.plot([d], [row], "o", color="black", markersize=6, markerfacecolor="white")
        ax.annotate(f"{d:+.3f}", (d, row), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    if any(name not in intervals for name in names):
        ax.plot([], [], "o", color="black", markerfacecolor="white", label="no interval (point estimate)")
    ticks = [f"{name}\n{b:.3f} → {v:.3f}" for name, b, v in zip(names, base, dist, strict=True)]
    ax.set_yticks(y, ticks, fontsize=8)
    span = 1.25 * max(extent) if max(extent) > 0 else 0.01
    ax.set_xlim(-span, span)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel(f"difference: {labels[1]} − {labels[0]} (> 0: distillation higher)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return _save(fig, path)
