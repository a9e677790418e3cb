"""The digits reproduction's own two figures: KRS against accuracy over every trained student, and our
KRS beside the paper's Figure 3 (matplotlib object API on the Agg canvas, as :mod:`knowledge_retention.plots`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...plots import _figure, _save

__all__ = ["plot_krs_vs_accuracy", "plot_paper_comparison"]

_MARKERS = {"before": "o", "kd": "s", "fitnet": "^"}
_VARIANT_LABEL = {"before": "before", "kd": "vanilla KD", "fitnet": "FitNet"}


def plot_krs_vs_accuracy(results: Mapping[str, Any], path: str | os.PathLike[str], *,
                         display: Mapping[str, str] | None = None) -> Path:
    """Scatter of KRS (y) against held-out accuracy (x) for every student of every seed: colour =
    architecture, marker = training; the title carries the Pearson r of the results."""
    from matplotlib import colormaps

    display = display or {}
    palette = colormaps["tab10"]
    fig = _figure(7.2, 4.6)
    ax = fig.add_subplot()
    names = list(dict.fromkeys(r["name"] for rows in results["seeds"]["per_seed"].values() for r in rows))
    for i, name in enumerate(names):
        for variant, marker in _MARKERS.items():
            rows = [r for rows in results["seeds"]["per_seed"].values() for r in rows
                    if r["name"] == name and r["variant"] == variant]
            if rows:
                ax.scatter([100 * r["accuracy"] for r in rows], [r["krs"] for r in rows], color=palette(i % 10),
                           marker=marker, s=42, alpha=0.85, edgecolors="black", linewidths=0.4,
                           label=f"{display.get(name, name)}, {_VARIANT_LABEL[variant]}")
    corr = results["correlation"]
    r_text = "undefined" if corr["r"] is None else f"{corr['r']:.3f}"
    ax.set_title(f"Digits: KRS vs accuracy, every student and seed\nPearson r = {r_text} "
                 f"(n = {corr['n']}); paper: r = {corr['paper_r']}", fontsize=10)
    ax.set_xlabel("held-out accuracy (%)")
    ax.set_ylabel("KRS (α = 0.3)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_paper_comparison(results: Mapping[str, Any], path: str | os.PathLike[str], *,
                          display: Mapping[str, str] | None = None) -> Path:
    """Grouped bars, one panel per student pair: the paper's KRS (before, vanilla KD, SKD) beside ours
    (before, vanilla KD, FitNet; mean over seeds with the seed standard deviation), on the 0-100 scale."""
    import numpy as np

    display = display or {}
    figure3, roles = results["paper"]["figure3"], results["paper"]["roles"]
    summary = {(r["name"], r["variant"]): r for r in results["seeds"]["summary"]}
    pairs = [(name, role) for name, role in roles.items() if (name, "before") in summary]
    fig = _figure(7.2, 3.6)
    axes = fig.subplots(1, max(1, len(pairs)), sharey=True, squeeze=False)[0]
    colours = ("#9e9e9e", "#1f77b4", "#ff7f0e")
    for ax, (name, role) in zip(axes, pairs, strict=False):
        paper = figure3[role]
        theirs = [paper["krs_before"], paper["krs_kd"], paper["krs_skd"]]
        ours: list[Any] = [summary.get((name, v)) for v in ("before", "kd", "fitnet")]
        x = np.arange(2)
        for j, label in enumerate(("before", "vanilla KD", "SKD (paper) / FitNet (ours)")):
            heights = [np.nan if theirs[j] is None else theirs[j],
                       np.nan if ours[j] is None else 100 * ours[j]["krs_mean"]]
            errors = [np.nan, np.nan if ours[j] is None or ours[j]["krs_sd"] is None else 100 * ours[j]["krs_sd"]]
            ax.bar(x + (j - 1) * 0.26, heights, width=0.26, color=colours[j], yerr=errors, capsize=2,
                   label=label if ax is axes[0] else None)
        ax.set_xticks(x, [f"paper\n{paper['student']}", f"ours\n{display.get(name, name)}"], fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("KRS × 100 (α = 0.3)")
    fig.suptitle("KRS before and after distillation: paper's Figure 3 (CIFAR-100) vs ours (digits)", fontsize=10)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return _save(fig, path)
