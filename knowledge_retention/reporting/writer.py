"""One writer for every report: ``report.json``, ``report.md`` and the figures into a folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import plots
from .._json import jsonable
from . import causal_lm
from .markdown import render_markdown
from .thumbnails import write_thumbnails

__all__ = ["home_relative", "write_figures", "write_report"]


def write_figures(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Draws every figure the report's numbers allow into ``out_dir``; returns ``{name: path}``."""
    if report.get("kind") == "comparison":
        from .comparison import write_comparison_figures

        return write_comparison_figures(report, out_dir)
    out = Path(out_dir)
    figures: dict[str, Path] = {}
    if report.get("lm"):
        figures["agreement_by_position"] = causal_lm.plot_agreement_by_position(report, out / "agreement_by_position.png")
    cross = (report.get("layers") or {}).get("cross_layer_cka")
    if cross and cross.get("matrix"):
        pairs = [(p["teacher"], p["student"]) for p in report["layers"].get("pairs", []) if "teacher" in p]
        figures["cross_layer_cka"] = plots.plot_cross_layer_cka(
            cross["matrix"], out / "cross_layer_cka.png", teacher_layers=cross.get("teacher_layers"),
            student_layers=cross.get("student_layers"), pairs=pairs or None,
            **({"title": "Cross-layer linear CKA over counted tokens"} if report.get("lm") else {}),
        )
    head = report.get("headline") or {}
    if head.get("fss") is not None and head.get("aoag") is not None:
        krs_ci = ((report.get("uncertainty") or {}).get("intervals") or {}).get("krs")
        level = (report.get("uncertainty") or {}).get("confidence_level", 0.95)
        figures["alpha_sensitivity"] = plots.plot_alpha_sensitivity(
            head["fss"], head["aoag"], out / "alpha_sensitivity.png", alpha=head.get("alpha"),
            interval=None if not krs_ci or krs_ci.get("low") is None else (krs_ci["low"], krs_ci["high"]),
            interval_label=f"{100 * level:.0f}% interval of KRS",
        )
    calibration = report.get("calibration")
    if calibration:
        figures["reliability"] = plots.plot_reliability_diagrams(
            calibration["teacher"]["bins"], calibration["student"]["bins"], out / "reliability.png",
            teacher_ece=calibration["teacher"]["ece"], student_ece=calibration["student"]["ece"],
        )
    base = report.get("baseline")
    if base:
        metrics: dict[str, tuple[Any, Any]] = {}
        if base.get("quality") and report.get("quality"):
            metrics["accuracy"] = (base["quality"]["student"]["accuracy"], report["quality"]["student"]["accuracy"])
            metrics["macro-F1"] = (base["quality"]["student"]["macro_f1"], report["quality"]["student"]["macro_f1"])
        for key, name in (("krs", "KRS"), ("fss", "FSS"), ("aoag", "AOAg"), ("top1_agreement", "top-1 agreement")):
            mine = head.get(key) if key != "top1_agreement" else (report.get("agreement") or {}).get(key)
            metrics[name] = (base["headline"].get(key), mine)
        differences = (base.get("paired") or {}).get("differences") or {}
        keys = {"accuracy": "student_accuracy", "KRS": "krs", "FSS": "fss", "AOAg": "aoag",
                "top-1 agreement": "top1_agreement"}
        intervals = {name: (differences[key].get("low"), differences[key].get("high"))
                     for name, key in keys.items() if differences.get(key)}
        if any(v[0] is not None and v[1] is not None for v in metrics.values()):
            figures["baseline_comparison"] = plots.plot_baseline_comparison(
                metrics, out / "baseline_comparison.png", intervals=intervals,
                confidence_level=(base.get("paired") or {}).get("confidence_level", 0.95))
    return figures


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md`` and the PNG figures into ``out_dir`` (created if needed).

    A comparison (``kind == "comparison"``) also writes each student's own report into
    ``out_dir/<student name>/``. Absolute paths under the home folder are written as ``~/...``. An image
    task's worst examples are saved as thumbnails, ``out_dir/examples/<index>.png`` (:mod:`.thumbnails`);
    ``report.json`` keeps their index and relative path.

    Returns:
        ``{"json": path, "markdown": path, <figure name>: path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out)
    final = home_relative(write_thumbnails(report, out))  # no machine-specific /home/<user>/... in files meant to be shared
    final["figures"] = {name: path.name for name, path in figures.items()}
    if report.get("kind") == "comparison" and final.get("reports"):  # each student's thumbnails: in its own folder
        final["reports"] = {name: write_thumbnails(pair, None) for name, pair in final["reports"].items()}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(jsonable(final), indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(final), encoding="utf-8")
    if report.get("kind") == "comparison":
        for name, pair in (report.get("reports") or {}).items():
            write_report(pair, out / _folder_name(name))
    return {"json": json_path, "markdown": md_path, **figures}


def _folder_name(name: str) -> str:
    """A student's name as a folder name (letters, digits, ``-``, ``_``, ``.``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "student"


def home_relative(value: Any) -> Any:
    """Every string that is an absolute path under the home folder, as ``~/...`` (recursively)."""
    if isinstance(value, Mapping):
        return {k: home_relative(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [home_relative(v) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.startswith(os.sep):
        home = os.path.expanduser("~").rstrip(os.sep)
        if home and (value == home or value.startswith(home + os.sep)):
            return "~" + value[len(home):]
    return value
