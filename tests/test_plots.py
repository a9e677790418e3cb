"""The report's figures show what they claim: read back from the plotting calls' axes, not from pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from knowledge_retention import plots  # noqa: E402


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure a plotting function saves, kept for inspection."""
    saved: list[Any] = []
    original = plots._save

    def keep(fig: Any, path: Any) -> Path:
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_baseline_comparison_draws_differences_with_their_paired_intervals(figures: list[Any], tmp_path: Path) -> None:
    metrics = {"accuracy": (0.776, 0.771), "KRS": (0.922, 0.928), "macro-F1": (0.775, 0.769), "FSS": (None, 0.9)}
    intervals = {"accuracy": (-0.022, 0.010), "KRS": (0.001, 0.012)}
    plots.plot_baseline_comparison(metrics, tmp_path / "b.png", intervals=intervals)
    (fig,) = figures
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < -0.022 and high > 0.012 and low == pytest.approx(-high)  # centred on 0, holds every interval
    assert high < 0.05  # a difference of 0.006 is drawn at the scale of differences, not of scores near 0.9
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.lines)  # the line at 0
    points = {}
    for container in ax.containers:  # errorbar containers: (point, caps, bars)
        (x,), (y,) = container.lines[0].get_data()
        segment = container.lines[2][0].get_segments()[0]
        points[round(float(y))] = (float(x), float(segment[0][0]), float(segment[1][0]))
    # first metric on top; the FSS row is dropped (no baseline value)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["accuracy\n0.776 → 0.771", "KRS\n0.922 → 0.928", "macro-F1\n0.775 → 0.769"]
    assert [tick for tick in ax.get_yticks()] == [2, 1, 0]
    assert points[2] == pytest.approx((0.771 - 0.776, -0.022, 0.010))
    assert points[1] == pytest.approx((0.928 - 0.922, 0.001, 0.012))
    assert 0 not in points  # macro-F1: no interval, a hollow point only
    colours = {row: c.lines[0].get_color() for row, c in zip(sorted(points, reverse=True), ax.containers, strict=True)}
    assert colours[1] != colours[2]  # an interval that excludes 0 is drawn differently from one that includes it


def test_alpha_curve_end_labels_sit_beside_the_line(figures: list[Any], tmp_path: Path) -> None:
    for fss, aoag in ((0.901, 0.955), (0.6, 0.9), (0.9, 0.4)):
        figures.clear()
        plots.plot_alpha_sensitivity(fss, aoag, tmp_path / "a.png", alpha=0.5)
        ax = figures[0].axes[0]
        labels = {t.get_text().split(" =")[0]: t for t in ax.texts}
        rising = fss > aoag
        # the side the line leaves free: under the left end of a rising line, over it for a falling one
        assert np.sign(labels["AOAg"].xyann[1]) == (-1 if rising else 1)
        assert np.sign(labels["FSS"].xyann[1]) == (1 if rising else -1)
        assert ax.get_ylim()[1] >= max(fss, aoag) + (0.07 if max(fss, aoag) > 0.95 else 0.0)


def test_reliability_diagram_starts_at_the_lowest_occupied_bin(figures: list[Any], tmp_path: Path) -> None:
    edges = np.linspace(0, 1, 16)
    count = [0] * 7 + [26, 61, 56, 72, 87, 113, 191, 266]  # binary: confidences >= 0.5
    accuracy = [None] * 7 + [0.5, 0.49, 0.73, 0.64, 0.72, 0.77, 0.91, 0.97]
    confidence = [None] * 7 + [0.52, 0.57, 0.64, 0.70, 0.77, 0.84, 0.90, 0.96]
    bins = {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(), "accuracy": accuracy,
            "confidence": confidence, "count": count}
    plots.plot_reliability_diagrams(bins, bins, tmp_path / "r.png")
    axes = figures[0].axes
    for ax in axes:
        assert ax.get_xlim() == pytest.approx((0.4, 1.0))  # first occupied bin starts at 0.467
    everywhere = {**bins, "count": [1] * 15, "accuracy": [0.5] * 15, "confidence": [0.5] * 15}
    figures.clear()
    plots.plot_reliability_diagrams(everywhere, everywhere, tmp_path / "r2.png")
    assert figures[0].axes[0].get_xlim() == pytest.approx((0.0, 1.0))


def test_krs_during_training_draws_each_run_by_step(figures: list[Any], tmp_path: Path) -> None:
    histories = {
        "pkd-before": [{"step": 0, "krs": 0.35}, {"step": 25, "krs": 0.5}, {"step": 50, "krs": 0.8}],
        "pkd-after": [{"step": 50, "krs": 0.82}, {"step": 0, "krs": 0.35}, {"step": 25, "krs": 0.6, "fss": 0.4}],
        "empty": [],
    }
    plots.plot_krs_during_training(histories, tmp_path / "k.png", names={"pkd": "PKD"})
    (fig,) = figures
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"PKD (before)", "PKD (after)"}  # a run without values is left out
    assert list(lines["PKD (after)"].get_xdata()) == [0, 25, 50]  # in step order
    assert list(lines["PKD (after)"].get_ydata()) == [0.35, 0.6, 0.82]
    assert lines["PKD (before)"].get_linestyle() == "--" and lines["PKD (after)"].get_linestyle() == "-"
    assert lines["PKD (before)"].get_color() == lines["PKD (after)"].get_color()  # one colour per student
    low, high = ax.get_ylim()
    assert 0.0 <= low < 0.35 and 0.82 < high <= 1.0
    with pytest.raises(ValueError, match="at least one run"):
        plots.plot_krs_during_training({"a": []}, tmp_path / "none.png")
