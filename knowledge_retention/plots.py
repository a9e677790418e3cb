"""Figures of the report, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function takes plain numbers (what :func:`knowledge_retention.report.build_report` stores),
writes one PNG and returns its path:

* :func:`plot_cross_layer_cka` - heatmap of linear CKA between every teacher and student layer,
  annotated, with the layer pairs used for FSS outlined;
* :func:`plot_alpha_sensitivity` - KRS as α goes from 0 to 1 (:func:`knowledge_retention.score.alpha_sensitivity`),
  the preset α marked; :func:`plot_alpha_sensitivity_curves` - one line per model on one figure;
* :func:`plot_reliability_diagrams` - teacher and student side by side: accuracy vs confidence per
  bin, the gap to the diagonal, and the bin counts;
* :func:`plot_baseline_comparison` - grouped bars, plain fine-tuned baseline vs distilled student.

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


def _alpha_axes(ax: Any, bottom: float, title: str) -> None:
    """Axes of a KRS-against-α figure: α from 0 to 1, KRS from ``bottom`` (at least 0) to 1."""
    ax.set_ylim(max(0.0, bottom), 1.02)
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
    for text, x, y, ha in ((f"AOAg = {aoag:.3f} (α = 0)", 0.01, aoag, "left"), (f"FSS = {fss:.3f} (α = 1)", 0.99, fss, "right")):
        below = y > 0.93  # near the top: write under the line
        ax.annotate(text, (x, y), xytext=(0, -6 if below else 6), textcoords="offset points", fontsize=8, ha=ha,
                    va="top" if below else "bottom", bbox=box)
    if alpha is not None:
        value = alpha * fss + (1.0 - alpha) * aoag
        ax.axvline(alpha, color="black", linewidth=1.0, alpha=0.6)
        if interval is not None:
            ax.errorbar([alpha], [value], yerr=[[value - interval[0]], [interval[1] - value]], fmt="none",
                        ecolor="black", capsize=4, label=interval_label)
        ax.plot([alpha], [value], "o", color="black", label=f"preset α = {alpha:g}: KRS = {value:.3f}")
    _alpha_axes(ax, min(fss, aoag) - 0.1, title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


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
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1.0, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    heading = f"{name}" + ("" if ece is None else f" — ECE = {ece:.3f}")
    ax.set_title(heading)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(True, alpha=0.3)
    ax_count.bar(centres, count, width=width, color=colour, edgecolor="black", linewidth=0.5)
    ax_count.set_xlim(0, 1)
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
    labels: tuple[str, str] = ("plain fine-tuning (baseline)", "distillation"),
    title: str = "Distillation vs plain fine-tuning of the same student",
) -> Path:
    """Grouped bars, one group per metric: the baseline student and the distilled student.

    Args:
        metrics: ``{metric name: (baseline value, distilled value)}``, values in [0, 1] (None: no bar).
        path: output PNG path.
        labels: legend labels of the two bars.
        title: figure title.

    Returns:
        The path of the PNG written.
    """
    names = [k for k, v in metrics.items() if v[0] is not None or v[1] is not None]
    if not names:
        raise ValueError("`metrics` holds no values to plot.")
    base = _as_float([metrics[k][0] for k in names])
    dist = _as_float([metrics[k][1] for k in names])
    x = np.arange(len(names))
    fig = _figure(max(5.5, 1.4 * len(names) + 2.0), 4.4)
    ax = fig.add_subplot()
    width = 0.38
    for offset, values, colour, label in ((-width / 2, base, _BASELINE_COLOUR, labels[0]), (width / 2, dist, _STUDENT_COLOUR, labels[1])):
        bars = ax.bar(x[np.isfinite(values)] + offset, values[np.isfinite(values)], width, color=colour, label=label,
                      edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, names)
    finite = np.concatenate([base[np.isfinite(base)], dist[np.isfinite(dist)]])
    ax.set_ylim(max(0.0, float(finite.min()) - 0.15) if finite.size else 0.0, 1.05)
    ax.set_ylabel("value (higher is better)")
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)
