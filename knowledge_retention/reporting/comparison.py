"""Many students against one teacher in one report: the table, the paired differences, the trade-off front.

:func:`build_comparison` takes ``{name: result}`` (what
:func:`~knowledge_retention.extraction.evaluate_students` returns; :func:`.build_report` hands it
over), builds each student's own pair report with the same options, and lays them side by side:
one row per student (parameters, size on disk, latency, accuracy and quality retained, KRS with its
interval, KL, ECE, verdict); the paired-bootstrap difference of each student to the best (highest
KRS) on the same resamples; the Pareto front of quality retained against size and against speed
(the quality-retained lesson's trade-off); Pearson's r of accuracy against KRS across students (the
KRS paper's validation); and, when one student is the plain fine-tuned baseline, the three-way check
(teacher, plain fine-tuned, distilled) with its paired interval. Every number of a row is the
number of that student's pair report.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._json import jsonable
from .._validation import InputError
from ..diagnostics import VerdictThresholds, pareto_front
from ._common import get, is_causal_lm, model_name, package_version
from .schema import COMPARISON_KEYS, SCHEMA_VERSION
from .sections import paired_difference

__all__ = ["build_comparison", "render_comparison", "students_table", "three_way_sentence", "write_comparison_figures"]


def build_comparison(
    results: Mapping[str, Any],
    *,
    teacher: Any = None,
    students: Mapping[str, Any] | None = None,
    baseline: str | None = None,
    baseline_students: Any = None,
    efficiency: Mapping[str, Mapping[str, Any]] | None = None,
    thresholds: VerdictThresholds,
    options: Mapping[str, Any] | None = None,
    **pair_options: Any,
) -> dict[str, Any]:
    """The comparison report of several students against one teacher (schema in :mod:`.schema`).

    Args:
        results: ``{name: result}``, the same examples for every student.
        teacher: the teacher model or its path (for its size).
        students: ``{name: model or path}`` (for their sizes); optional.
        baseline: the name of the plain fine-tuned student among ``results`` (the three-way check);
            default: the student named ``"baseline"`` when there is one.
        baseline_students: not used by a comparison (the baseline is one of the students); must be None.
        efficiency: ``{name: {"teacher": {...}, "student": {...}}}`` precomputed figures per student.
        thresholds: the verdict's thresholds.
        options: the caller's own options, recorded verbatim.
        **pair_options: the other options of :func:`.build_report`, used for every student's report.

    Raises:
        InputError: ``students``/``efficiency`` not keyed by the results' names, a ``baseline`` that is not
            one of them, or results on different examples.
    """
    from .builder import _build_pair, environment

    names = list(results)
    if baseline_students is not None:
        raise InputError("`baseline_student` does not apply to a comparison: put the plain fine-tuned student among "
                         "the students and name it with `baseline`.")
    if baseline is None and "baseline" in results:
        baseline = "baseline"
    if baseline is not None and (not isinstance(baseline, str) or baseline not in results):
        raise InputError(f"`baseline` must name one of the students {names} (a comparison's baseline is one of "
                         f"them), got {baseline!r}.")
    for arg, value in (("student", students), ("efficiency", efficiency)):
        if value is not None and (not isinstance(value, Mapping) or set(value) - set(names)):
            raise InputError(f"`{arg}` of a comparison must be {{name: ...}} with names among {names}, got "
                             f"{sorted(value) if isinstance(value, Mapping) else type(value).__name__}.")
    _check_same_examples(results)
    report_options = _report_options(pair_options, thresholds)
    notes: list[str] = []
    reports = {
        name: _build_pair(result, baseline=None, teacher=teacher, student=(students or {}).get(name),
                          baseline_student=None, dataset=pair_options.get("dataset"), texts=pair_options.get("texts"),
                          efficiency=(efficiency or {}).get(name), bars=thresholds,
                          report_options=dict(report_options), options=options)
        for name, result in results.items()
    }
    rows = [_row(name, rep) for name, rep in reports.items()]
    best = max(rows, key=lambda r: -np.inf if r["krs"] is None else r["krs"])["name"]
    first = reports[names[0]]
    boot = {"n_resamples": report_options["bootstrap"], "n_feature_resamples": report_options["feature_bootstrap"],
            "feature_resampling": report_options["feature_resampling"],
            "confidence_level": report_options["confidence_level"], "seed": report_options["seed"]}
    head, task = first["headline"], first["headline"]["task"]
    differences = {name: None if name == best else _difference(results[best], results[name], head, task, boot, notes,
                                                               label=f"{name} − {best}")
                   for name in names}
    pareto = _pareto(rows)
    correlation = _correlation(rows)
    three_way = None if baseline is None else _three_way(results, reports, baseline, head, task, boot, notes)
    absent = _absent(rows, differences, correlation, three_way, best)
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "comparison",
        "package": {"name": "knowledge_retention", "version": package_version()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "options": {"report": report_options, "extraction": dict(get(results[names[0]], "options", {})),
                    "run": dict(options or {})},
        "models": {"teacher": model_name(teacher) or first["models"]["teacher"],
                   "students": {n: model_name((students or {}).get(n)) or reports[n]["models"]["student"] for n in names}},
        "num_examples": first["num_examples"],
        "students": rows,
        "best": best,
        "differences": differences,
        "pareto": pareto,
        "correlation": correlation,
        "three_way": three_way,
        "verdict_preset": thresholds.name,
        "reports": reports,
        "absent": absent,
        "notes": list(dict.fromkeys(notes)),
        "figures": {},
    }
    assert tuple(report) == COMPARISON_KEYS
    return jsonable(report)  # type: ignore[no-any-return]


def _report_options(pair_options: Mapping[str, Any], thresholds: VerdictThresholds) -> dict[str, Any]:
    import dataclasses

    bootstrap = int(pair_options.get("bootstrap", 1000))
    return {
        "bootstrap": bootstrap,
        "feature_bootstrap": max(1, min(int(pair_options.get("feature_bootstrap", 200)), bootstrap)),
        "feature_resampling": pair_options.get("feature_resampling", "half"),
        "confidence_level": pair_options.get("confidence_level", 0.95), "seed": pair_options.get("seed", 0),
        "top_k": pair_options.get("top_k", 10), "n_bins": pair_options.get("n_bins", 15),
        "thresholds": dataclasses.asdict(thresholds), "measure_speed": pair_options.get("measure_speed", False),
        "batch_size": pair_options.get("batch_size", 32), "latency_batches": pair_options.get("latency_batches", 5),
        "text_column": pair_options.get("text_column", "sentence"),
    }


def _check_same_examples(results: Mapping[str, Any]) -> None:
    counts = {name: get(r, "num_examples") for name, r in results.items()}
    if len({c for c in counts.values() if c is not None}) > 1:
        raise InputError(f"The students of a comparison must be scored on the same examples; got {counts} examples.")


def _row(name: str, rep: Mapping[str, Any]) -> dict[str, Any]:
    """One student's row, every number read from its own pair report."""
    eff = (rep.get("efficiency") or {}).get("student") or {}
    trade = rep.get("tradeoff") or {}
    quality = rep.get("quality") or {}
    krs_ci = ((rep.get("uncertainty") or {}).get("intervals") or {}).get("krs") or {}
    agreement = rep.get("agreement") or rep.get("tokens") or {}
    return {
        "name": name,
        "parameters": eff.get("parameters"),
        "disk_bytes": eff.get("disk_bytes"),
        "seconds_per_batch": eff.get("seconds_per_batch"),
        "speedup": trade.get("speedup"),
        "size_ratio": trade.get("size_ratio"),
        "accuracy": (quality.get("student") or {}).get("accuracy"),
        "quality_name": trade.get("quality_name"),
        "quality_retained": trade.get("quality_retained"),
        "krs": rep["headline"].get("krs"),
        "krs_low": krs_ci.get("low"),
        "krs_high": krs_ci.get("high"),
        "mean_kl": agreement.get("mean_kl"),
        "ece": (((rep.get("calibration") or {}).get("student")) or {}).get("ece"),
        "verdict": (rep.get("verdict") or {}).get("level"),
        "on_front": {},
    }


def _difference(a: Any, b: Any, head: Mapping[str, Any], task: str, boot: Mapping[str, Any], notes: list[str], *,
                label: str) -> dict[str, Any] | None:
    """The paired bootstrap of ``b − a``: the statistics a comparison reads, with McNemar's test."""
    if is_causal_lm(b):
        notes.append(f"No paired difference {label}: the paired bootstrap of two causal-LM students is not implemented "
                     "(the intervals of each pair resample its texts on their own).")
        return None
    paired = paired_difference(a, b, head, task, boot, notes, label=label)
    if paired is None:
        return None
    keep = ("krs", "fss", "aoag", "student_accuracy", "mean_kl")
    return {**{k: v for k, v in paired["differences"].items() if k in keep}, "mcnemar": paired.get("mcnemar")}


def _pareto(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    quality = [r["quality_retained"] for r in rows]
    out: dict[str, list[str]] = {}
    for axis, key, higher in (("size", "size_ratio", False), ("speed", "speedup", True)):
        front = pareto_front([r[key] for r in rows], quality, x_higher_is_better=higher)
        for row, on in zip(rows, front, strict=True):
            row["on_front"][axis] = on
        out[axis] = [r["name"] for r, on in zip(rows, front, strict=True) if on]
    return out


def _correlation(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pearson's r of accuracy against KRS across the students (the paper's validation); None below 3."""
    pairs = [(r["accuracy"], r["krs"]) for r in rows if r["accuracy"] is not None and r["krs"] is not None]
    if len(pairs) < 3:
        return None
    from scipy.stats import pearsonr

    acc, krs = (np.asarray(v, dtype=np.float64) for v in zip(*pairs, strict=True))
    if np.ptp(acc) == 0 or np.ptp(krs) == 0:
        return {"pearson_r": None, "p_value": None, "n": len(pairs)}
    out = pearsonr(krs, acc)
    return {"pearson_r": float(out.statistic), "p_value": float(out.pvalue), "n": len(pairs)}


def _three_way(
    results: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]], baseline: str, head: Mapping[str, Any],
    task: str, boot: Mapping[str, Any], notes: list[str],
) -> dict[str, Any] | None:
    """Teacher, plain fine-tuned and distilled: does distillation earn its extra machinery?"""
    distilled = [n for n in results if n != baseline]
    if not distilled:
        return None
    best = max(distilled, key=lambda n: -np.inf if reports[n]["headline"]["krs"] is None else reports[n]["headline"]["krs"])
    diff = _difference(results[baseline], results[best], head, task, boot, notes, label=f"{best} − {baseline}")
    quality = reports[best].get("quality") or {}
    accuracy = {"teacher": (quality.get("teacher") or {}).get("accuracy"),
                "baseline": ((reports[baseline].get("quality") or {}).get("student") or {}).get("accuracy"),
                "distilled": (quality.get("student") or {}).get("accuracy")}
    return {"baseline": baseline, "distilled": best, "accuracy": accuracy, "difference": diff,
            "sentence": three_way_sentence(best, baseline, accuracy, diff)}


def three_way_sentence(distilled: str, baseline: str, accuracy: Mapping[str, Any], diff: Mapping[str, Any] | None) -> str:
    """The three-way check in one sentence, decided only by a paired interval that excludes 0."""
    figures = ""
    if accuracy.get("teacher") is not None:
        figures = (f" (accuracy: teacher {accuracy['teacher']:.3f}, plain fine-tuned {accuracy['baseline']:.3f}, "
                   f"distilled {accuracy['distilled']:.3f})")
    key = "student_accuracy" if diff and diff.get("student_accuracy") else "krs"
    d = (diff or {}).get(key)
    if not d or d.get("low") is None:
        return (f"Three-way check{figures}: no paired interval of {distilled} − {baseline}, so it cannot say whether "
                "distillation earns its complexity.")
    what = "accuracy" if key == "student_accuracy" else "KRS"
    interval = f"{what} Δ {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
    if d["excludes_zero"] and d["difference"] > 0:
        verdict = "distillation earns its complexity"
    elif d["excludes_zero"]:
        verdict = "distillation does not earn its complexity: the plain fine-tuned student is better"
    else:
        verdict = "distillation does not earn its complexity on this evidence: the interval includes 0"
    return f"Three-way check{figures}: {verdict} ({distilled} − {baseline}, {interval})."


def _absent(rows: Sequence[Mapping[str, Any]], differences: Mapping[str, Any], correlation: Any, three_way: Any,
            best: str) -> dict[str, str]:
    absent: dict[str, str] = {}
    if all(v is None for k, v in differences.items() if k != best):
        absent["differences"] = (
            "no paired bootstrap: the paired bootstrap of two causal-LM students is not implemented"
            if any(r["quality_name"] and "perplexity" in r["quality_name"] for r in rows) else
            "no paired bootstrap: it needs every student's per-example classification logits (keep_arrays) on the "
            "same examples, and bootstrap > 0")
    if correlation is None:
        have = sum(r["accuracy"] is not None and r["krs"] is not None for r in rows)
        absent["correlation"] = f"Pearson's r needs the accuracy and KRS of at least 3 students; {have} have both"
    if three_way is None:
        absent["three_way"] = "no plain fine-tuned baseline among the students (name it with `baseline`)"
    if not any(r["on_front"].get("size") for r in rows):
        absent["pareto.size"] = "no sizes (pass the students' models or paths)"
    if not any(r["on_front"].get("speed") for r in rows):
        absent["pareto.speed"] = "no speeds (the results carry no forward timings)"
    return absent


# --- markdown and figures ---------------------------------------------------------------------------


def render_comparison(report: Mapping[str, Any]) -> str:
    """The comparison's Markdown: the table, the differences to the best, the fronts, the three-way check."""
    rows = report.get("students") or []
    level = int(100 * (report.get("options") or {}).get("report", {}).get("confidence_level", 0.95))
    lines = ["# Knowledge retention: students compared", "",
             f"Teacher: `{report['models'].get('teacher') or '—'}` · {len(rows)} students · "
             f"{report.get('num_examples') or 0:,} examples · verdicts by the `{report.get('verdict_preset')}` preset",
             "", f"Generated {report.get('created_at')} by knowledge_retention {report['package']['version']} "
             f"(report schema {report.get('schema_version')}).", "", "## Students", ""]
    lines += students_table(report)
    lines += _difference_lines(report, level)
    figures = report.get("figures") or {}
    for key, alt in (("tradeoff_front", "Quality retained against size and speed"),
                     ("accuracy_vs_krs", "Accuracy against KRS across students")):
        if key in figures:
            lines += [f"![{alt}]({figures[key]})", ""]
    corr = report.get("correlation")
    if corr and corr.get("pearson_r") is not None:
        lines += [f"Accuracy against KRS across the {corr['n']} students: Pearson's r = {corr['pearson_r']:.3f} "
                  f"(p = {corr['p_value']:.3g}).", ""]
    if report.get("three_way"):
        lines += ["## Teacher, plain fine-tuning, distillation", "", report["three_way"]["sentence"], ""]
    lines += ["## Each student's report", ""]
    lines += [f"- [{name}]({_link(name)}/report.md)" for name in report.get("reports") or {}] + [""]
    if report.get("absent"):
        lines += ["## What this comparison does not have, and why", ""]
        lines += [f"- **{k}**: {v}." for k, v in report["absent"].items()] + [""]
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def students_table(report: Mapping[str, Any]) -> list[str]:
    """The comparison's table as Markdown lines: the teacher for reference, then one row per student
    (the report and the Space show the same table)."""
    from .markdown import f, mib, pct, table

    rows = report.get("students") or []
    level = int(100 * (report.get("options") or {}).get("report", {}).get("confidence_level", 0.95))
    body = []
    first = next(iter((report.get("reports") or {}).values()), None) or {}
    t_eff = ((first.get("efficiency") or {}).get("teacher")) or {}
    t_quality = ((first.get("quality") or {}).get("teacher")) or {}
    if first:
        body.append(["teacher (reference)", f(t_eff.get("parameters")), mib(t_eff.get("disk_bytes")),
                     f(t_eff.get("seconds_per_batch"), 4), f(t_quality.get("accuracy")), "100.0%", "—", "—",
                     f((((first.get("calibration") or {}).get("teacher")) or {}).get("ece"), 4), "—", "—"])
    for r in rows:
        krs = f(r["krs"]) + ("" if r["krs_low"] is None else f" [{r['krs_low']:.3f}, {r['krs_high']:.3f}]")
        front = ", ".join(k for k, on in r["on_front"].items() if on) or "—"
        body.append([("**" + r["name"] + "**") if r["name"] == report.get("best") else r["name"], f(r["parameters"]),
                     mib(r["disk_bytes"]), f(r["seconds_per_batch"], 4), f(r["accuracy"]), pct(r["quality_retained"]),
                     krs, f(r["mean_kl"]), f(r["ece"], 4), r["verdict"] or "none", front])
    lines = table(["model", "parameters", "on disk", "s / batch", "accuracy", "quality retained",
                   f"KRS [{level}%]", "mean KL", "ECE", f"verdict ({report.get('verdict_preset')})", "on the front"], body)
    quality = rows[0]["quality_name"] if rows else "—"
    quality += "" if "(" in quality else " (student / teacher)"
    return lines + [f"Bold: the best KRS. Quality retained: {quality}. On the front: no other "
                    "student keeps more quality at a smaller size (size) or a higher speed (speed).", ""]


def _link(name: str) -> str:
    from .writer import _folder_name

    return _folder_name(name)


def _difference_lines(report: Mapping[str, Any], level: int) -> list[str]:
    from .markdown import table

    diffs = {k: v for k, v in (report.get("differences") or {}).items() if v}
    if not diffs:
        return []
    best = report.get("best")

    def cell(d: Mapping[str, Any] | None) -> str:
        if not d or d.get("low") is None:
            return "—"
        return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + ("" if d["excludes_zero"] else " (includes 0)")

    rows = [[name, cell(d.get("krs")), cell(d.get("student_accuracy")), cell(d.get("mean_kl"))] for name, d in diffs.items()]
    return [f"## Difference to the best ({best}), paired bootstrap", ""] + table(
        ["student", f"KRS Δ [{level}%]", f"accuracy Δ [{level}%]", f"mean KL Δ [{level}%]"], rows)


def write_comparison_figures(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The trade-off front (quality retained against size and speed) and accuracy against KRS."""
    from .. import plots

    out = Path(out_dir)
    rows = report.get("students") or []
    figures: dict[str, Path] = {}
    if any(r["quality_retained"] is not None and (r["size_ratio"] is not None or r["speedup"] is not None) for r in rows):
        figures["tradeoff_front"] = plots.plot_tradeoff_front(rows, out / "tradeoff_front.png")
    if sum(r["accuracy"] is not None and r["krs"] is not None for r in rows) >= 2:
        corr = report.get("correlation") or {}
        figures["accuracy_vs_krs"] = plots.plot_accuracy_vs_krs(rows, out / "accuracy_vs_krs.png",
                                                                pearson_r=corr.get("pearson_r"))
    return figures
