"""One Markdown renderer for every report: a pair of any task, or the comparison of many students.

:func:`render_markdown` reads only the report dict (:mod:`.schema`): headline with intervals, the
verdict with its preset, rule and what the other presets say, the article's bands beside the
numbers, its warning, the trade-off, each diagnostic, the task's own section, what is absent and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import causal_lm
from .sections import better

__all__ = ["render_markdown"]


def f(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ints with thousands separators, floats with ``digits``, None as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _cell(text: Any, limit: int = 160) -> str:
    value = " ".join(str(text).split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def ci(intervals: Mapping[str, Any], key: str) -> str:
    value = intervals.get(key)
    if not value or value.get("low") is None:
        return "—"
    return f"[{value['low']:.3f}, {value['high']:.3f}]"


def mib(value: Any) -> str:
    return "—" if value is None else f"{value / 2**20:,.1f} MiB"


def _band(report: Mapping[str, Any], key: str) -> str:
    band = ((report.get("bands") or {}).get(key) or {}).get("band")
    return f" ({band})" if band else ""


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report: a comparison for ``kind == "comparison"``, else the pair's report."""
    if report.get("kind") == "comparison":
        from .comparison import render_comparison

        return render_comparison(report)
    lines: list[str] = ["# Knowledge retention report" + (" (causal LM)" if report.get("lm") else ""), ""]
    models = report.get("models") or {}
    lines += [
        f"Teacher: `{models.get('teacher') or '—'}` · Student: `{models.get('student') or '—'}` · "
        f"{report.get('num_examples', 0):,} examples · labels: {'yes' if report.get('has_labels') else 'no'}",
        "",
        f"Generated {report.get('created_at')} by knowledge_retention {report.get('package', {}).get('version')} "
        f"(report schema {report.get('schema_version')}).",
        "",
    ]
    lines += _headline(report)
    lines += verdict_lines(report.get("verdict"), report.get("absent") or {})
    lines += _warning_lines(report)
    if report.get("tradeoff_sentence"):
        lines += [f"> The student keeps {report['tradeoff_sentence']}.", ""]
    figures = report.get("figures") or {}
    if "alpha_sensitivity" in figures:
        lines += [f"![KRS as a function of alpha]({figures['alpha_sensitivity']})", ""]
    if report.get("lm"):
        lines += [causal_lm.lm_markdown(report), ""]
    lines += _quality(report) + _agreement(report) + _calibration(report) + _errors(report)
    lines += _efficiency(report) + _baseline(report) + _layers(report) + _uncertainty(report)
    absent = report.get("absent") or {}
    if absent:
        lines += ["## What this report does not have, and why", ""]
        lines += [f"- **{key}**: {why}." for key, why in absent.items()] + [""]
    notes = report.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Options", "", "```json", json.dumps(report.get("options", {}), indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def _headline(report: Mapping[str, Any]) -> list[str]:
    head = report.get("headline") or {}
    intervals = (report.get("uncertainty") or {}).get("intervals") or {}
    level = int(100 * (report.get("uncertainty") or {}).get("confidence_level", 0.95))
    lm = bool(report.get("lm"))
    fss_meaning = f"{'token-level ' if lm else ''}feature similarity ({f(head.get('fss_method'))})"
    aoag_meaning = f"{'token-level ' if lm else ''}output agreement ({f(head.get('aoag_method'))})"
    lines = ["## Headline", ""]
    lines += table(
        ["", "value", f"{level}% interval", "meaning"],
        [
            ["**KRS**", f"**{f(head.get('krs'))}**", ci(intervals, "krs"),
             f"α·FSS + β·AOAg with α = {f(head.get('alpha'), 2)}, β = {f(head.get('beta'), 2)} ({head.get('task')})"],
            ["FSS", f(head.get("fss")), ci(intervals, "fss"), fss_meaning],
            ["AOAg", f(head.get("aoag")), ci(intervals, "aoag"), aoag_meaning],
        ],
    )
    if not intervals and (report.get("absent") or {}).get("uncertainty"):
        lines += [f"No intervals: {report['absent']['uncertainty']}.", ""]
    return lines


def verdict_lines(v: Mapping[str, Any] | None, absent: Mapping[str, str]) -> list[str]:
    """The verdict, its preset and rule, the deciding figure, and what the other presets say."""
    if not v:
        return [f"**Verdict: none** — {absent.get('verdict', 'not available')}.", ""]
    level = (v.get("level") or "none").upper()
    preset = v.get("preset") or "custom"
    lines = [f"**Verdict: {level}** ({preset} preset) — {v['reason']}", ""]
    if v.get("rule"):
        lines += [f"Rule ({preset}): {v['rule']}.", ""]
    others = v.get("other_presets") or {}
    if others:
        rows = [[name, (o.get("level") or "none"), o.get("reason") or ""] for name, o in others.items()]
        lines += ["What the other presets say of the same figures:", ""]
        lines += table(["preset", "verdict", "why"], rows)
    return lines


def _warning_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for w in report.get("warnings") or []:
        lines += [f"> **Warning:** {w['message']} Remedies: " + "; ".join(w.get("remedies") or []) + ".", ""]
    return lines


def _quality(report: Mapping[str, Any]) -> list[str]:
    quality = report.get("quality")
    intervals = (report.get("uncertainty") or {}).get("intervals") or {}
    level = int(100 * (report.get("uncertainty") or {}).get("confidence_level", 0.95))
    if report.get("lm"):
        lines = ["## Task quality (perplexity of the true next token)", ""]
    else:
        lines = ["## Task quality (against the gold labels)", ""]
    if quality:
        rows = []
        for key in quality["teacher"]:
            interval = ci(intervals, "accuracy_retention") if key == "accuracy" else "—"
            retained = pct(quality["retained"][key]) + (_band(report, "accuracy_retention") if key == "accuracy" else "")
            rows.append([key, f(quality["teacher"][key]), f(quality["student"][key]), retained, interval])
        lines += table(["metric", "teacher", "student", "retained", f"{level}% interval (retained)"], rows)
    else:
        lines += ["No gold labels: teacher-relative figures only.", ""]
    return lines


_AGREEMENT = {
    "mean_kl": ("mean KL(teacher ‖ student), nats", "lower"),
    "aoag_kl": ("mean exp(−KL)", "higher"),
    "aoag_js": ("1 − mean JS divergence (bits)", "higher"),
    "top1_agreement": ("top-1 agreement", "higher"),
    "confidence_spearman": ("Spearman ρ of max-softmax confidences", "higher"),
    "confidence_kendall": ("Kendall τ of max-softmax confidences", "higher"),
    "teacher_class_spearman": ("Spearman ρ of P(teacher's class)", "higher"),
    "teacher_class_kendall": ("Kendall τ of P(teacher's class)", "higher"),
    "teacher_mean_confidence": ("teacher mean confidence", "—"),
    "student_mean_confidence": ("student mean confidence", "—"),
    "mse": ("MSE between outputs", "lower"),
}


def _agreement(report: Mapping[str, Any]) -> list[str]:
    agreement = report.get("agreement")
    if report.get("lm") and not agreement:
        return []  # the token-level section above holds the agreement of two causal LMs
    intervals = (report.get("uncertainty") or {}).get("intervals") or {}
    level = int(100 * (report.get("uncertainty") or {}).get("confidence_level", 0.95))
    lines = ["## Agreement with the teacher", ""]
    if not agreement:
        return lines + ["Needs both models' outputs (logits).", ""]
    rows = [[_AGREEMENT.get(k, (k, ""))[0], f(val) + _band(report, k), _AGREEMENT.get(k, ("", "—"))[1], ci(intervals, k)]
            for k, val in agreement.items()]
    lines += table(["measure", "value (the article's band)", "better", f"{level}% interval"], rows)
    return lines


def _calibration(report: Mapping[str, Any]) -> list[str]:
    calibration = report.get("calibration")
    if report.get("lm") and not calibration:
        return []
    lines = ["## Calibration", ""]
    if not calibration:
        return lines + ["Needs gold labels and class logits.", ""]
    lines += table(
        ["model", f"ECE ({calibration['n_bins']} equal-width bins)", "the article's band"],
        [[role, f(calibration[role]["ece"], 4), ((report.get("bands") or {}).get(f"{role}_ece") or {}).get("band") or "—"]
         for role in ("teacher", "student")],
    )
    figures = report.get("figures") or {}
    if "reliability" in figures:
        lines += [f"![Reliability diagrams]({figures['reliability']})", ""]
    return lines


def _errors(report: Mapping[str, Any]) -> list[str]:
    if report.get("lm"):
        return []  # the causal LM's worst tokens in context are in its own section
    errors = report.get("errors") or {}
    lines = ["## Error analysis", ""]
    breakdown = errors.get("breakdown")
    if breakdown:
        names = {
            "both_correct": "both correct", "both_wrong": "both wrong",
            "only_student_wrong": "only the student wrong (lost in distillation)",
            "only_teacher_wrong": "only the teacher wrong (fixed by the student)",
        }
        lines += table(["group", "examples", "rate"],
                       [[names[k], breakdown["counts"][k], pct(breakdown["rates"][k])] for k in breakdown["counts"]])
    top = errors.get("top_disagreements") or []
    if not breakdown and not top:
        lines += ["Needs class logits (and gold labels for the breakdown).", ""]
    if top:
        lines += [f"Where the student departs most from the teacher (top {len(top)} by KL):", ""]
        images = any(r.get("image") for r in top)  # an image task: the thumbnails in place of the texts
        lines += table(
            ["index", "KL", "teacher → p", "student → p", "label", "image" if images else "text"],
            [[r["index"], f(r["kl"]), f"{r['teacher_prediction']} ({f(r['teacher_confidence'], 2)})",
              f"{r['student_prediction']} ({f(r['student_confidence'], 2)})", f(r["label"]),
              (f"![example {r['index']}]({r['image']})" if r.get("image") else "") if images else r["text"] or ""]
             for r in top],
        )
    return lines


def _efficiency(report: Mapping[str, Any]) -> list[str]:
    eff = report.get("efficiency")
    lines = ["## Size and speed", ""]
    if not eff:
        return lines + ["Not measured (pass the models, or precomputed figures).", ""]
    rows = []
    for role in ("teacher", "student", "baseline_student"):
        e = eff.get(role)
        if e:
            rows.append([role.replace("_", " "), f(e.get("parameters")), mib(e.get("disk_bytes")),
                         f(e.get("seconds_per_batch"), 4), f(e.get("examples_per_second"), 1)])
    lines += table(["model", "parameters", "weights on disk", "s / batch", "examples / s"], rows)
    trade = report.get("tradeoff") or {}
    lines += [f"Size ratio (student / teacher, {trade.get('size_unit') or '—'}): {f(trade.get('size_ratio'))} · "
              f"speed-up: {f(trade.get('speedup'), 2)}× · speed source: {eff.get('speed_source') or '—'}", ""]
    return lines


def _baseline(report: Mapping[str, Any]) -> list[str]:
    base = report.get("baseline")
    lines = ["## Distillation vs plain fine-tuning", ""]
    if not base:
        return lines + ["No baseline student given.", ""]
    level = int(100 * (report.get("uncertainty") or {}).get("confidence_level", 0.95))
    comp = base.get("comparison") or {}
    paired = (base.get("paired") or {}).get("differences") or {}
    rows = []
    for key, name in (("quality", "accuracy"), ("krs", "KRS")):
        c = comp.get(key)
        if c:
            d = paired.get("student_accuracy" if key == "quality" else "krs")
            interval = "—" if not d or d.get("low") is None else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
            rows.append([name, f(c["baseline"]), f(c["distilled"]), f"{c['delta']:+.3f}", interval,
                         better(c["distillation_better"], d)])
    lines += [f"Baseline student: `{base.get('model') or '—'}` (same student, fine-tuned on the labels only).", ""]
    lines += table(["metric", "baseline", "distilled", "Δ", f"{level}% interval of Δ", "distillation better?"], rows)
    mcnemar = (base.get("paired") or {}).get("mcnemar")
    if mcnemar:
        lines += [f"McNemar (exact): only the baseline right on {mcnemar['only_a_correct']} examples, only the "
                  f"distilled student on {mcnemar['only_b_correct']}; p = {mcnemar['p_value']:.3g}.", ""]
    figures = report.get("figures") or {}
    if "baseline_comparison" in figures:
        lines += [f"![Distillation vs baseline]({figures['baseline_comparison']})", ""]
    return lines


def _layers(report: Mapping[str, Any]) -> list[str]:
    layers = report.get("layers") or {}
    lines = ["## Layers", ""]
    if layers.get("pairs"):
        lines += table(["teacher layer", "student layer", "score", "linear CKA"],
                       [[p.get("teacher_layer"), p.get("student_layer"), f(p.get("score")), f(p.get("linear_cka"))]
                        for p in layers["pairs"]])
    figures = report.get("figures") or {}
    if "cross_layer_cka" in figures:
        lines += [f"![Cross-layer CKA]({figures['cross_layer_cka']})", ""]
    if not layers.get("pairs") and not layers.get("cross_layer_cka"):
        lines += ["No per-layer figures in the result.", ""]
    return lines


def _uncertainty(report: Mapping[str, Any]) -> list[str]:
    uncertainty = report.get("uncertainty")
    if not uncertainty:
        return []
    intervals = uncertainty.get("intervals") or {}
    level = int(100 * uncertainty.get("confidence_level", 0.95))
    lines = ["## Uncertainty", "",
             f"{uncertainty['method']} intervals at {level}% from {uncertainty['n_resamples']} resamples of the "
             f"examples (seed {uncertainty['seed']}); FSS/KRS from {uncertainty['n_feature_resamples']} "
             f"{uncertainty['feature_resampling']}-resamples.", ""]
    lines += table(["statistic", "estimate", "low", "high", "replicates used"],
                   [[k, f(v["estimate"]), f(v["low"]), f(v["high"]), v["n_valid"]] for k, v in intervals.items()])
    return lines
