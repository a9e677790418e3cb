"""The report's sections that need more than one diagnostic: layers, sizes and speeds, the trade-off,
the plain fine-tuned baseline. No formula here: every number comes from :mod:`knowledge_retention.diagnostics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._json import jsonable
from ..diagnostics import (
    classification_quality,
    distillation_vs_baseline,
    measure_latency,
    model_disk_size,
    paired_bootstrap_difference,
    parameter_count,
    size_speed_tradeoff,
    teacher_relative_summary,
)
from ..diagnostics.efficiency import extraction_speeds
from ..methods import CLASSIFICATION_METHODS
from ._common import CLASSIFICATION_TASKS, array, get


def better(point_estimate_better: bool, difference: Mapping[str, Any] | None) -> str:
    """Reads a distilled-vs-baseline difference with its paired interval: only an interval that
    excludes 0 decides; otherwise the point estimate is shown as such."""
    if difference and difference.get("low") is not None:
        if difference.get("excludes_zero"):
            return "yes" if point_estimate_better else "no, the baseline is better"
        return f"undecided: the interval includes 0 (point estimate: {'yes' if point_estimate_better else 'no'})"
    return f"{'yes' if point_estimate_better else 'no'} (point estimate, no interval)"



def layers_section(result: Any) -> dict[str, Any]:
    """Layer pairs and the cross-layer matrix, from an ExtractionResult or its ``to_dict()``."""
    t_names = list(get(result, "teacher_layer_names", []))
    s_names = list(get(result, "student_layer_names", []))
    raw_pairs = get(result, "layer_pairs", [])
    scores = list(get(result, "pair_scores", []))
    linear = get(result, "pair_linear_cka")
    pairs = []
    for k, pair in enumerate(raw_pairs):
        if isinstance(pair, Mapping):
            pairs.append(dict(pair))
            continue
        t, s = int(pair[0]), int(pair[1])
        pairs.append({
            "teacher": t,
            "student": s,
            "teacher_layer": t_names[t] if t < len(t_names) else str(t),
            "student_layer": s_names[s] if s < len(s_names) else str(s),
            "score": scores[k] if k < len(scores) else None,
            "linear_cka": None if linear is None or k >= len(linear) else linear[k],
        })
    cross = get(result, "cross_layer_cka")
    cross_section = None
    if isinstance(cross, Mapping):
        cross_section = dict(cross)
    elif cross is not None:
        matrix = np.asarray(cross, dtype=np.float64)
        cross_section = {
            "teacher_layers": t_names if len(t_names) == matrix.shape[0] else [str(i) for i in range(matrix.shape[0])],
            "student_layers": s_names if len(s_names) == matrix.shape[1] else [str(j) for j in range(matrix.shape[1])],
            "matrix": matrix,
        }
    return {"pairs": pairs, "cross_layer_cka": cross_section}


def _size(model: Any, role: str, notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"parameters": None, "disk_bytes": None}
    if model is None:
        return out
    try:
        out["parameters"] = parameter_count(model)
        out["disk_bytes"] = model_disk_size(model)
    except (TypeError, ValueError, OSError, ImportError) as err:
        notes.append(f"Size of the {role} not measured ({err}).")
    return out


def _measure_speed(model: Any, role: str, texts: Sequence[str], batch_size: int, n_batches: int) -> dict[str, Any]:
    """Median seconds per batch of tokenisation + forward pass on the first batches of ``texts``."""
    import torch

    from ..extraction.inputs import ModelRunner, load_model, load_tokenizer

    module, path, _ = load_model(model, role)
    runner = ModelRunner(module, load_tokenizer(None, path, role), role, None, next(module.parameters()).device)
    batches = [list(texts[i : i + batch_size]) for i in range(0, min(len(texts), batch_size * n_batches), batch_size)]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            return measure_latency(lambda batch: runner(batch, range(len(batch))), batches, warmup=2, repeats=5)
    finally:
        module.train(was_training)


def efficiency_section(
    teacher: Any, student: Any, baseline_student: Any, efficiency: Mapping[str, Any] | None, result: Any,
    texts: Sequence[str] | None, measure_speed: bool, batch_size: int, latency_batches: int, notes: list[str],
) -> dict[str, Any] | None:
    """Sizes of the models, and their speed: from the extraction's timed forward passes when the result
    has them (no extra pass is run), else measured on the first batches with ``measure_speed``."""
    if efficiency is not None:
        return {**jsonable(efficiency), "speed_source": efficiency.get("speed_source", "given")}
    models = {"teacher": teacher, "student": student, "baseline_student": baseline_student}
    section: dict[str, Any] = {role: _size(m, role, notes) for role, m in models.items() if m is not None}
    section["speed_source"] = None
    timings = get(result, "timings", {})
    n = int(get(result, "num_examples", 0))
    cache = (get(result, "options", {}) or {}).get("teacher_cache") or {}
    speeds, why_not = extraction_speeds(timings, n, batch_size, teacher_cache=cache)  # both timed in one run, or neither
    if speeds is not None:
        for role, speed in speeds.items():
            section.setdefault(role, {"parameters": None, "disk_bytes": None}).update(speed)
        section["speed_source"] = "extraction timings"
        grouped = (get(result, "options", {}) or {}).get("group_by_length")
        notes.append(
            f"Speed from the extraction's timed forward passes over all {n:,} examples "
            f"({speeds['teacher']['timed_batches']} batches, "
            f"{'length-grouped' if grouped else 'in dataset order'}; forward only, tokenisation excluded, after a "
            "one-example warm-up); no extra passes were run."
        )
    elif measure_speed and teacher is not None and student is not None and texts:
        try:
            for role in ("teacher", "student"):
                section[role].update(_measure_speed(models[role], role, texts, batch_size, latency_batches))
            section["speed_source"] = "measured"
        except Exception as err:  # noqa: BLE001 - speed is optional; say why it is missing
            notes.append(f"Latency not measured ({type(err).__name__}: {err}).")
        if cache and section["speed_source"] == "measured":
            notes.append(f"Speed measured, not taken from the extraction: {why_not}.")
    elif cache and timings.get("student_forward_s"):
        notes.append(f"No speed figure: {why_not}; latency measurement is off.")
    return section if len(section) > 1 else None


#: The quality each task's trade-off speaks of: ``task -> (key in quality["retained"], name)``.
QUALITY_KEYS: dict[str, tuple[str, str]] = {
    **{task: ("accuracy", "accuracy") for task in CLASSIFICATION_TASKS},
    "regression": ("r2", "R²"),
    "causal-lm": ("perplexity", "next-token quality (teacher / student perplexity)"),
}


def tradeoff_section(quality: Mapping[str, Any] | None, task: str, efficiency: Mapping[str, Any] | None) -> dict[str, Any]:
    quality_name, retained = "quality", None
    if quality is not None:
        key, quality_name = QUALITY_KEYS.get(task, ("r2", "R²"))
        retained = quality["retained"].get(key)
    teacher = (efficiency or {}).get("teacher") or {}
    student = (efficiency or {}).get("student") or {}
    size_unit = "parameters" if teacher.get("parameters") and student.get("parameters") else "disk_bytes"
    out = size_speed_tradeoff(
        quality_retained=retained,
        teacher_size=teacher.get(size_unit) or None,
        student_size=student.get(size_unit) or None,
        teacher_seconds=teacher.get("seconds_per_batch") or None,
        student_seconds=student.get("seconds_per_batch") or None,
        quality_name=quality_name,
    )
    out["quality_name"] = quality_name
    out["size_unit"] = size_unit if out["size_ratio"] is not None else None
    return out


def paired_difference(
    a: Any, b: Any, headline: Mapping[str, Any], task: str, boot: Mapping[str, Any], notes: list[str], *,
    label: str,
) -> dict[str, Any] | None:
    """Paired bootstrap of student ``b`` minus student ``a`` (two results against the same teacher, on the
    same examples): :func:`diagnostics.paired_bootstrap_difference` on both results' logits and features.
    None, with a note, when the arrays are missing or the examples differ."""
    t_logits = array(get(b, "teacher_logits"))
    a_logits, b_logits = array(get(a, "student_logits")), array(get(b, "student_logits"))
    aligned = (
        a_logits is not None and b_logits is not None and t_logits is not None
        and a_logits.shape == b_logits.shape
        and np.array_equal(np.asarray(get(a, "example_indices", [])), np.asarray(get(b, "example_indices", [])))
    )
    if boot.get("n_resamples") and aligned and task in CLASSIFICATION_TASKS and headline.get("aoag_method") in CLASSIFICATION_METHODS:
        features = [get(b, "teacher_features"), get(a, "student_features"), get(b, "student_features")]
        have = all(f is not None for f in features)
        paired = paired_bootstrap_difference(
            t_logits, a_logits, b_logits, labels=array(get(b, "labels")),
            teacher_features=features[0] if have else None,
            student_a_features=features[1] if have else None,
            student_b_features=features[2] if have else None,
            alpha=headline["alpha"], beta=headline["beta"], aoag_method=headline["aoag_method"],
            fss_method=headline["fss_method"], temperature=headline["temperature"], **boot,
        )
        notes.extend(f"{label}: {n}" for n in paired["notes"])
        return paired
    if boot.get("n_resamples"):
        why = "its logits are missing or not on the same examples" if not aligned else \
            "it needs classification logits and a kl/js/top1 AOAg"
        notes.append(f"No paired bootstrap ({label.lower()}): {why}.")
    return None


def baseline_section(
    baseline: Any, result: Any, headline: Mapping[str, Any], quality: Mapping[str, Any] | None, task: str,
    boot: Mapping[str, Any], notes: list[str],
) -> dict[str, Any]:
    b_logits = array(get(baseline, "student_logits"))
    t_logits = array(get(result, "teacher_logits"))
    labels = array(get(result, "labels"))
    b_headline = {k: get(baseline, k) for k in ("krs", "fss", "aoag", "mean_kl", "top1_agreement")}
    b_agreement = None
    if b_logits is not None and t_logits is not None and task in CLASSIFICATION_TASKS:
        b_agreement = teacher_relative_summary(t_logits, b_logits, temperature=headline["temperature"])
        for key in ("mean_kl", "top1_agreement"):
            if b_headline[key] is None:
                b_headline[key] = b_agreement[key]
    b_quality = None
    if labels is not None and b_logits is not None and t_logits is not None and task in CLASSIFICATION_TASKS:
        b_quality = classification_quality(labels, t_logits, b_logits)
    comparison = None
    if headline.get("krs") is not None and b_headline["krs"] is not None:
        comparison = distillation_vs_baseline(
            distilled_krs=headline["krs"],
            baseline_krs=b_headline["krs"],
            distilled_quality=None if quality is None or b_quality is None else quality["student"]["accuracy"],
            baseline_quality=None if b_quality is None else b_quality["student"]["accuracy"],
            quality_name="accuracy",
        )
    else:
        notes.append("Baseline comparison needs the KRS of both students.")
    paired = paired_difference(baseline, result, headline, task, boot, notes, label="Baseline comparison")
    return {
        "model": None,
        "headline": b_headline,
        "quality": b_quality,
        "agreement": b_agreement,
        "comparison": comparison,
        "paired": paired,
    }
