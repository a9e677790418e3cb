"""The Space's two figures: the α-sensitivity curve and the cross-layer CKA heatmap.

Drawing only: the curve's values come from ``knowledge_retention.alpha_sensitivity`` and the matrix
from ``knowledge_retention.cross_layer_cka``.  Figures are built with ``matplotlib.figure.Figure``
(not pyplot), so nothing accumulates in a global figure registry while the server runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from knowledge_retention import alpha_sensitivity, knowledge_retention_score

__all__ = ["alpha_curve_figure", "cka_heatmap_figure"]

_TEACHER_COLOUR = "#1f77b4"
_MARKER_COLOUR = "#d62728"


def alpha_curve_figure(
    fss: float,
    aoag: float,
    alpha: float,
    *,
    preset_alpha: float | None = None,
    preset_name: str | None = None,
) -> Figure:
    """KRS as a function of α (β = 1 - α), with the chosen α marked.

    Args:
        fss: Feature Similarity Score in [0, 1].
        aoag: Average Output Agreement in [0, 1].
        alpha: the α currently selected (marked with a dot).
        preset_alpha: the task preset's α (dashed vertical line), if any.
        preset_name: the preset's task name, for the legend.

    Returns:
        A matplotlib figure.
    """
    alphas, krs = alpha_sensitivity(fss, aoag)
    current = knowledge_retention_score(fss, aoag, alpha=alpha)
    fig = Figure(figsize=(6.0, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(alphas, krs, color=_TEACHER_COLOUR, lw=2, label="KRS(α) = α·FSS + (1−α)·AOAg")
    if preset_alpha is not None:
        ax.axvline(preset_alpha, color="grey", ls="--", lw=1,
                   label=f"{preset_name or 'task'} preset α = {preset_alpha:.2f}")
    ax.plot([alpha], [current], "o", color=_MARKER_COLOUR, ms=9, zorder=5,
            label=f"selected α = {alpha:.2f} → KRS = {current:.4f}")
    ax.annotate(f"AOAg = {aoag:.3f}", (0.0, aoag), xytext=(4, 6), textcoords="offset points", fontsize=8)
    ax.annotate(f"FSS = {fss:.3f}", (1.0, fss), xytext=(-58, -14), textcoords="offset points", fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("α (weight on FSS; β = 1 − α weights AOAg)")
    ax.set_ylabel("KRS")
    ax.set_title("α-sensitivity of the Knowledge Retention Score", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return fig


def cka_heatmap_figure(
    matrix: np.ndarray,
    *,
    teacher_names: Sequence[str] | None = None,
    student_names: Sequence[str] | None = None,
    paired: Sequence[tuple[int, int]] = (),
) -> Figure:
    """Linear CKA between every teacher layer (rows) and every student layer (columns).

    Args:
        matrix: ``(L_t, L_s)`` CKA values in [0, 1].
        teacher_names: row labels (default ``T0, T1, ...``).
        student_names: column labels (default ``S0, S1, ...``).
        paired: ``(teacher_layer, student_layer)`` cells that FSS averages; outlined in black.

    Returns:
        A matplotlib figure.
    """
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    teacher_names = list(teacher_names or [f"T{i}" for i in range(rows)])
    student_names = list(student_names or [f"S{j}" for j in range(cols)])
    width = min(2.5 + 0.55 * cols, 10.0)
    height = min(1.8 + 0.4 * rows, 8.0)
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="linear CKA")
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                value = matrix[i, j]
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if value > 0.6 else "white")
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="grey")
    for i, j in paired:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(cols), student_names, fontsize=8, rotation=45 if cols > 6 else 0,
                  ha="right" if cols > 6 else "center")
    ax.set_yticks(range(rows), teacher_names, fontsize=8)
    ax.set_xlabel("student layer")
    ax.set_ylabel("teacher layer")
    title = "Cross-layer linear CKA"
    if not np.all(np.isfinite(matrix)):
        title += "\n(n/a: CKA undefined, e.g. constant [CLS] embeddings)"
    if paired:
        title += "\n(red boxes: the layer pairs averaged into FSS)"
    ax.set_title(title, fontsize=10)
    return fig
