"""Figures of the report, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function takes plain numbers (what :func:`knowledge_retention.reporting.build_report` stores),
writes one PNG and returns its path:

* :func:`plot_cross_layer_cka` - heatmap of linear CKA between every teacher and student layer,
  annotated, with the layer pairs used for FSS outlined;
* :func:`plot_alpha_sensitivity` - KRS as α goes from 0 to 1 (:func:`knowledge_retention.score.alpha_sensitivity`),
  the preset α marked; :func:`plot_alpha_sensitivity_curves` - one line per model on one figure;
* :func:`plot_reliability_diagrams` - teacher and student side by side: accuracy vs confidence per
  bin, the gap to the diagonal, and the bin counts;
* :func:`plot_baseline_comparison` - distilled minus baseline student per metric, with the paired
  intervals, around 0;
* :func:`plot_tradeoff_front` - several students: quality retained against size and against speed,
  the Pareto front marked; :func:`plot_accuracy_vs_krs` - accuracy against KRS across students.

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


def _front_panel(ax: Any, rows: Sequence[Mapping[str, Any]], key: str, axis: str, xlabel: str, higher: bool) -> None:
    """One panel of the trade-off figure: quality retained against ``key``, the front joined by a line."""
    points = [(r[key], r["quality_retained"], r["name"], bool((r.get("on_front") or {}).get(axis)))
              for r in rows if r.get(key) is not None and r.get("quality_retained") is not None]
    if not points:
        ax.text(0.5, 0.5, f"no {axis} figures", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    front = sorted((p for p in points if p[3]), key=lambda p: p[0])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], color=_STUDENT_COLOUR, linewidth=1.5, zorder=1,
                label="Pareto front")
    for x, y, name, on in points:
        ax.plot([x], [y], "o", markersize=8, zorder=2, color=_STUDENT_COLOUR if on else "white",
                markeredgecolor=_STUDENT_COLOUR if on else _BASELINE_COLOUR, markeredgewidth=1.5)
        ax.annotate(name, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.plot([], [], "o", color="white", markeredgecolor=_BASELINE_COLOUR, label="dominated")
    xs = [p[0] for p in points]
    pad = max(0.05 * (max(xs) - min(xs)), 0.02 * max(abs(v) for v in xs), 1e-3)
    ax.set_xlim(min(xs) - pad, max(xs) + 4 * pad)
    ys = [p[1] for p in points]
    ypad = max(0.1 * (max(ys) - min(ys)), 0.01)
    ax.set_ylim(min(ys) - ypad, max(ys) + ypad)
    ax.set_xlabel(xlabel + (" (higher is better)" if higher else " (lower is better)"))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)


def plot_tradeoff_front(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "Quality retained against size and speed: the students on the front",
) -> Path:
    """Quality retained against size (left) and against speed (right), one point per student, the
    Pareto front of each panel joined and filled (the quality-retained lesson's trade-off).

    Args:
        rows: the comparison report's ``students`` rows: ``name``, ``quality_retained``, ``size_ratio``
            (student / teacher), ``speedup`` (teacher / student seconds), ``on_front`` (``{"size", "speed"}``),
            ``quality_name``.
        path: output PNG path.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    if not rows:
        raise ValueError("`rows` must hold at least one student, got none.")
    fig = _figure(11.0, 4.6)
    left, right = fig.subplots(1, 2, sharey=True)
    _front_panel(left, rows, "size_ratio", "size", "size (student / teacher)", higher=False)
    _front_panel(right, rows, "speedup", "speed", "speed-up (teacher time / student time)", higher=True)
    quality = rows[0].get("quality_name") or "quality"
    left.set_ylabel(f"{quality} retained (student / teacher)", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_vs_krs(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    pearson_r: float | None = None,
    title: str = "Accuracy against KRS across students",
) -> Path:
    """Each student's accuracy against its KRS (with its interval when known), and Pearson's r in the title.

    Args:
        rows: the comparison report's ``students`` rows: ``name``, ``krs``, ``krs_low``, ``krs_high``, ``accuracy``.
        path: output PNG path.
        pearson_r: Pearson's r of accuracy against KRS across the students (None: not shown).
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    points = [r for r in rows if r.get("krs") is not None and r.get("accuracy") is not None]
    if not points:
        raise ValueError("`rows` holds no student with both accuracy and KRS.")
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    for r in points:
        if r.get("krs_low") is not None and r.get("krs_high") is not None:
            ax.errorbar([r["krs"]], [r["accuracy"]], xerr=[[r["krs"] - r["krs_low"]], [r["krs_high"] - r["krs"]]],
                        fmt="none", ecolor=_BASELINE_COLOUR, capsize=3, linewidth=1.2)
        ax.plot([r["krs"]], [r["accuracy"]], "o", color=_STUDENT_COLOUR, markersize=8)
        ax.annotate(r["name"], (r["krs"], r["accuracy"]), xytext=(6, 4), textcoords="offset points", fontsize=8)
    krs = [r["krs"] for r in points] + [r["krs_low"] for r in points if r.get("krs_low") is not None] + \
        [r["krs_high"] for r in points if r.get("krs_high") is not None]
    acc = [r["accuracy"] for r in points]
    pad = max(0.05 * (max(krs) - min(krs)), 0.005)
    ax.set_xlim(min(krs) - pad, max(krs) + 4 * pad)
    apad = max(0.1 * (max(acc) - min(acc)), 0.005)
    ax.set_ylim(min(acc) - apad, max(acc) + apad)
    ax.set_xlabel("KRS (bars: its interval)")
    ax.set_ylabel("accuracy on the gold labels")
    suffix = "" if pearson_r is None else f" — Pearson's r = {pearson_r:.3f} (n = {len(points)})"
    ax.set_title(title + suffix, fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
