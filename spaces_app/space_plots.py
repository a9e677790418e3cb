"""The Space's two figures: the α-sensitivity curve and the cross-layer CKA heatmap.

Drawing only: the curve's values come from ``knowledge_retention.alpha_sensitivity`` and the matrix
from the FSS measure itself (``space_results``).  Figures are built with ``matplotlib.figure.Figure``
(not pyplot), so nothing accumulates in a global figure registry while the server runs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from knowledge_retention import alpha_sensitivity, knowledge_retention_score

__all__ = ["AlphaCurve", "alpha_curve", "alpha_curve_figure", "cka_heatmap_figure"]

_TEACHER_COLOUR = "#1f77b4"
_MARKER_COLOUR = "#d62728"


def alpha_curve_figure(
    fss: float,
    aoag: float,
    alpha: float | None = None,
    *,
    preset_alpha: float | None = None,
    preset_name: str | None = None,
) -> Figure:
    """KRS as a function of α (β = 1 - α), optionally with the chosen α marked.

    Args:
        fss: Feature Similarity Score in [0, 1].
        aoag: Average Output Agreement in [0, 1].
        alpha: the α currently selected (marked with a dot), or None (no marker: the page adds it).
        preset_alpha: the task preset's α (dashed vertical line), if any.
        preset_name: the preset's task name, for the legend.

    Returns:
        A matplotlib figure.
    """
    alphas, krs = alpha_sensitivity(fss, aoag)
    fig = Figure(figsize=(6.0, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(alphas, krs, color=_TEACHER_COLOUR, lw=2, label="KRS(α) = α·FSS + (1−α)·AOAg")
    if preset_alpha is not None:
        ax.axvline(preset_alpha, color="grey", ls="--", lw=1,
                   label=f"{preset_name or 'task'} preset α = {preset_alpha:.2f}")
    if alpha is not None:
        current = knowledge_retention_score(fss, aoag, alpha=alpha)
        ax.plot([alpha], [current], "o", color=_MARKER_COLOUR, ms=9, zorder=5,
                label=f"selected α = {alpha:.2f} → KRS = {current:.4f}")
    # End labels beside the line, on the side it leaves free (as in the report's figure): a rising
    # line has room under its left end and over its right end, a falling one the other way round.
    rising = fss >= aoag
    top = 1.08
    for text, x, y, ha, above in ((f"AOAg = {aoag:.3f}", 0.0, aoag, "left", not rising),
                                  (f"FSS = {fss:.3f}", 1.0, fss, "right", rising)):
        ax.annotate(text, (x, y), xytext=(4 if ha == "left" else -4, 8 if above else -8),
                    textcoords="offset points", fontsize=8, ha=ha, va="bottom" if above else "top",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        if above:
            top = max(top, y + 0.12)  # room under the axes' top edge for a label over a high end
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0.0, top)
    ax.set_xlabel("α (weight on FSS; β = 1 − α weights AOAg)")
    ax.set_ylabel("KRS")
    ax.set_title("α-sensitivity of the Knowledge Retention Score", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=8, framealpha=0.9)
    return fig


@dataclass(frozen=True)
class AlphaCurve:
    """The α curve drawn once as SVG; :meth:`html` adds the selected α's marker without redrawing.

    KRS is linear in α, so moving the slider only moves a dot along a line that is already drawn:
    the page swaps the marker (a few hundred bytes of SVG) instead of re-rendering the figure.

    Attributes:
        svg: the figure without a marker (``<svg>`` element, no XML prologue).
        fss: the stored FSS.
        aoag: the stored AOAg.
        x_of: ``(x0, x1)``: SVG x coordinates of α = 0 and α = 1.
        y_of: ``(y0, y1)``: SVG y coordinates of KRS = 0 and KRS = 1.
    """

    svg: str
    fss: float
    aoag: float
    x_of: tuple[float, float]
    y_of: tuple[float, float]

    def html(self, alpha: float) -> str:
        """The figure with the marker at ``alpha`` (KRS from ``knowledge_retention_score``)."""
        alpha = float(alpha)
        krs = knowledge_retention_score(self.fss, self.aoag, alpha=alpha)
        x = self.x_of[0] + alpha * (self.x_of[1] - self.x_of[0])
        y = self.y_of[0] + krs * (self.y_of[1] - self.y_of[0])
        anchor = "end" if alpha > 0.6 else "start"
        dx = -9 if alpha > 0.6 else 9
        label_y = y + 16 if krs > 0.85 else y - 9
        marker = (
            f'<g id="krs-selected" data-alpha="{alpha:.4f}" data-krs="{krs:.6f}">'
            f'<circle cx="{x:.2f}" cy="{y:.2f}" r="5.5" fill="{_MARKER_COLOUR}" stroke="white" stroke-width="1"/>'
            f'<text x="{x + dx:.2f}" y="{label_y:.2f}" text-anchor="{anchor}" font-size="9" '
            f'font-family="DejaVu Sans, sans-serif" fill="{_MARKER_COLOUR}" stroke="white" stroke-width="3" '
            f'paint-order="stroke">selected α = {alpha:.2f} → KRS = {krs:.4f}</text></g>'
        )
        body = self.svg.replace("</svg>", marker + "</svg>", 1)
        return f'<div class="krs-alpha-figure">{body}</div>'


def alpha_curve(
    fss: float, aoag: float, *, preset_alpha: float | None = None, preset_name: str | None = None
) -> AlphaCurve:
    """Draws :func:`alpha_curve_figure` (no marker) to SVG once and records where α and KRS land on it."""
    fig = alpha_curve_figure(fss, aoag, None, preset_alpha=preset_alpha, preset_name=preset_name)
    FigureCanvasSVG(fig)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    # savefig laid the axes out; map data -> figure fraction -> SVG user units (points, y down).
    ax = fig.axes[0]
    width, height = fig.get_size_inches() * 72.0
    to_fraction = fig.transFigure.inverted()
    (fx0, fy0), (fx1, fy1) = to_fraction.transform(ax.transData.transform([(0.0, 0.0), (1.0, 1.0)]))
    svg = svg.replace("<svg ", '<svg style="width: 100%; height: auto;" ', 1)
    return AlphaCurve(svg=svg, fss=float(fss), aoag=float(aoag), x_of=(fx0 * width, fx1 * width),
                      y_of=((1 - fy0) * height, (1 - fy1) * height))


def cka_heatmap_figure(
    matrix: np.ndarray,
    *,
    teacher_names: Sequence[str] | None = None,
    student_names: Sequence[str] | None = None,
    paired: Sequence[tuple[int, int]] = (),
    method: str = "linear_cka",
) -> Figure:
    """Similarity between every teacher layer (rows) and every student layer (columns), by ``method``.

    Drawn the way up the report's figure is (``knowledge_retention.plots.plot_cross_layer_cka``):
    teacher layer 0 (the embeddings) at the bottom, deeper layers above.

    Args:
        matrix: ``(L_t, L_s)`` values in [0, 1]; NaN cells (undefined) are left blank and marked n/a.
        teacher_names: row labels (default ``T0, T1, ...``).
        student_names: column labels (default ``S0, S1, ...``).
        paired: ``(teacher_layer, student_layer)`` cells that FSS averages; outlined in red.
        method: the FSS measure the values are (title and colour-bar label).

    Returns:
        A matplotlib figure.
    """
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    teacher_names = list(teacher_names or [f"T{i}" for i in range(rows)])
    student_names = list(student_names or [f"S{j}" for j in range(cols)])
    width = min(3.0 + 0.6 * cols, 10.0)
    height = min(2.2 + 0.42 * rows, 8.0)
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                      origin="lower")
    fig.colorbar(image, ax=ax, label=method)
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
    title = f"Cross-layer {method}"
    if not np.all(np.isfinite(matrix)):
        reason = "cosine needs equal widths" if method == "cosine" else "undefined, e.g. constant [CLS] embeddings"
        title += f"\n(n/a: {reason})"
    if paired:
        title += "\n(red boxes: the layer pairs averaged into FSS)"
    ax.set_title(title, fontsize=10)
    return fig
