"""The report of one teacher-vs-student evaluation: ``report.json``, ``report.md`` and PNG figures.

The I/O layer: :func:`build_report` gathers the numbers of an extraction run (an
:class:`~knowledge_retention.extraction.ExtractionResult`, or any object or dict with the same
attribute names) and hands every computation to :mod:`knowledge_retention.diagnostics`,
:mod:`knowledge_retention.score` and :mod:`knowledge_retention.plots`; there is no formula here.
:func:`write_report` writes the files.

Inputs read from ``result`` (attribute or key; all optional except ``fss``): ``teacher_logits``,
``student_logits`` ``(N, C)``, ``labels`` ``(N,)``, ``example_indices`` (or ``indices``), ``texts``,
``fss``, ``aoag``, ``krs``, ``alpha``, ``beta``, ``fss_method``, ``aoag_method``, ``task``,
``layer_pairs``, ``pair_scores``, ``pair_linear_cka``, ``teacher_layer_names``,
``student_layer_names``, ``cross_layer_cka``, ``teacher_features``, ``student_features`` (lists of
``(N, D)`` arrays, one per layer pair), ``options``, ``timings``, ``notes``.

JSON schema, version ``1.0`` (keys are stable; a section that does not apply is ``null`` and
``notes`` says why):

=======================  ===================================================================================
key                      content
=======================  ===================================================================================
``schema_version``       ``"1.0"``
``package``              ``{"name", "version"}`` of knowledge_retention
``created_at``           ISO 8601 UTC time the report was built
``environment``          ``{"python", "numpy", "scipy", "platform"}``
``options``              ``{"report": the options of build_report, "extraction": result.options,
                         "run": the caller's options}``: everything needed to repeat the run
``models``               ``{"teacher", "student", "baseline_student"}``: names / paths (or class names)
``num_examples``         N
``has_labels``           whether gold labels were available
``headline``             ``{"krs", "fss", "aoag", "alpha", "beta", "task", "fss_method", "aoag_method",
                         "temperature"}``
``verdict``              ``{"level", "decided_by", "value", "threshold", "comparison", "next_threshold",
                         "reason", "criteria", "thresholds"}`` (see :func:`diagnostics.verdict`)
``tradeoff_sentence``    "X% of the teacher's accuracy at Y% of its size and Z× its speed" (null if nothing known)
``tradeoff``             ``{"quality_name", "quality_retained", "size_ratio", "size_unit", "speedup"}``
``quality``              ``{"teacher": {...}, "student": {...}, "retained": {...}}``: accuracy and
                         macro-F1 (classification) or MAE, RMSE, R² (regression)
``agreement``            mean KL, AOAg (kl, js), top-1 agreement, confidence rank correlations
``calibration``          ``{"n_bins", "teacher": {"ece", "bins"}, "student": {...}}``; ``bins`` holds
                         lists ``bin_lower``, ``bin_upper``, ``confidence``, ``accuracy``, ``count``
``errors``               ``{"breakdown": {"num_examples", "counts", "rates"}, "top_disagreements": [...]}``
``layers``               ``{"pairs": [{"teacher", "student", "teacher_layer", "student_layer", "score",
                         "linear_cka"}], "cross_layer_cka": {"teacher_layers", "student_layers",
                         "matrix"}}``
``alpha_sensitivity``    ``{"alphas": [0, 0.01, ..., 1], "krs": [...]}``
``uncertainty``          the output of :func:`diagnostics.bootstrap_confidence_intervals`
``efficiency``           ``{"teacher", "student", "baseline_student": {"parameters", "disk_bytes",
                         "seconds_per_batch", "examples_per_second"}, "speed_source"}``
``baseline``             ``{"model", "headline", "quality", "agreement", "comparison", "paired"}``: the plain fine-tuned
                         student and distillation's gain over it (paired bootstrap + McNemar)
``timings``              the extraction's timings plus ``report_s``
``notes``                plain-language remarks, in order
``figures``              ``{name: file name}`` relative to the report folder (filled by write_report)
=======================  ===================================================================================

NaN and Inf are written as ``null``; every value is a plain JSON type, so
``json.loads(json.dumps(report)) == report``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._json import jsonable
from .diagnostics import (
    VerdictThresholds,
    bootstrap_confidence_intervals,
    classification_quality,
    diagnose,
    distillation_vs_baseline,
    measure_latency,
    model_disk_size,
    paired_bootstrap_difference,
    parameter_count,
    size_speed_tradeoff,
    teacher_relative_summary,
    verdict,
)
from .diagnostics.efficiency import extraction_speeds
from .diagnostics.summary import CLASSIFICATION_TASKS
from .score import alpha_sensitivity, knowledge_retention_score

SCHEMA_VERSION = "1.0"

__all__ = ["SCHEMA_VERSION", "build_report", "render_markdown", "write_report"]


# --- helpers -------------------------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise; ``default`` when absent or None."""
    if obj is None:
        return default
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def _better(point_estimate_better: bool, difference: Mapping[str, Any] | None) -> str:
    """Reads a distilled-vs-baseline difference with its paired interval: only an interval that
    excludes 0 decides; otherwise the point estimate is shown as such."""
    if difference and difference.get("low") is not None:
        if difference.get("excludes_zero"):
            return "yes" if point_estimate_better else "no, the baseline is better"
        return f"undecided: the interval includes 0 (point estimate: {'yes' if point_estimate_better else 'no'})"
    return f"{'yes' if point_estimate_better else 'no'} (point estimate, no interval)"


def _model_name(model: Any) -> str | None:
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", None)
    return str(name) if name else type(model).__name__


def _texts_from(dataset: Any, column: str, indices: Sequence[int]) -> list[str]:
    """The ``column`` texts of ``dataset`` rows ``indices`` (HF Dataset, dict of lists, list of strings, rows)."""
    if isinstance(dataset, Sequence) and not isinstance(dataset, str) and dataset and isinstance(dataset[0], str):
        return [dataset[int(i)] for i in indices]
    try:
        values = dataset[column]
        return [str(values[int(i)]) for i in indices]
    except (KeyError, TypeError, IndexError):
        return [str(dataset[int(i)][column]) for i in indices]


def _array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _layers_section(result: Any) -> dict[str, Any]:
    """Layer pairs and the cross-layer matrix, from an ExtractionResult or its ``to_dict()``."""
    t_names = list(_get(result, "teacher_layer_names", []))
    s_names = list(_get(result, "student_layer_names", []))
    raw_pairs = _get(result, "layer_pairs", [])
    scores = list(_get(result, "pair_scores", []))
    linear = _get(result, "pair_linear_cka")
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
    cross = _get(result, "cross_layer_cka")
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

    from .extraction.inputs import ModelRunner, load_model, load_tokenizer

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


def _efficiency(
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
    timings = _get(result, "timings", {})
    n = int(_get(result, "num_examples", 0))
    cache = (_get(result, "options", {}) or {}).get("teacher_cache") or {}
    speeds, why_not = extraction_speeds(timings, n, batch_size, teacher_cache=cache)  # both timed in one run, or neither
    if speeds is not None:
        for role, speed in speeds.items():
            section.setdefault(role, {"parameters": None, "disk_bytes": None}).update(speed)
        section["speed_source"] = "extraction timings"
        grouped = (_get(result, "options", {}) or {}).get("group_by_length")
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


def _tradeoff(quality: Mapping[str, Any] | None, task: str, efficiency: Mapping[str, Any] | None) -> dict[str, Any]:
    quality_name, retained = "quality", None
    if quality is not None:
        quality_name = "accuracy" if task in CLASSIFICATION_TASKS else "R²"
        retained = quality["retained"].get("accuracy" if task in CLASSIFICATION_TASKS else "r2")
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


def _baseline_section(
    baseline: Any, result: Any, headline: Mapping[str, Any], quality: Mapping[str, Any] | None, task: str,
    boot: Mapping[str, Any], notes: list[str],
) -> dict[str, Any]:
    b_logits = _array(_get(baseline, "student_logits"))
    t_logits = _array(_get(result, "teacher_logits"))
    s_logits = _array(_get(result, "student_logits"))
    labels = _array(_get(result, "labels"))
    b_headline = {k: _get(baseline, k) for k in ("krs", "fss", "aoag", "mean_kl", "top1_agreement")}
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
    paired = None
    aligned = (
        b_logits is not None and s_logits is not None and t_logits is not None
        and b_logits.shape == s_logits.shape
        and np.array_equal(np.asarray(_get(baseline, "example_indices", [])), np.asarray(_get(result, "example_indices", [])))
    )
    if boot.get("n_resamples") and aligned and task in CLASSIFICATION_TASKS and headline.get("aoag_method") in ("kl", "js", "top1"):
        features = [_get(result, "teacher_features"), _get(baseline, "student_features"), _get(result, "student_features")]
        have = all(f is not None for f in features)
        paired = paired_bootstrap_difference(
            t_logits, b_logits, s_logits, labels=labels,
            teacher_features=features[0] if have else None,
            student_a_features=features[1] if have else None,
            student_b_features=features[2] if have else None,
            alpha=headline["alpha"], beta=headline["beta"], aoag_method=headline["aoag_method"],
            fss_method=headline["fss_method"], temperature=headline["temperature"], **boot,
        )
        notes.extend(f"Baseline comparison: {n}" for n in paired["notes"])
    elif boot.get("n_resamples"):
        notes.append("No paired bootstrap against the baseline: its logits are missing or not on the same examples.")
    return {
        "model": None,
        "headline": b_headline,
        "quality": b_quality,
        "agreement": b_agreement,
        "comparison": comparison,
        "paired": paired,
    }


# --- build ---------------------------------------------------------------------------------------------


def build_report(
    result: Any,
    *,
    baseline: Any = None,
    teacher: Any = None,
    student: Any = None,
    baseline_student: Any = None,
    dataset: Any = None,
    text_column: str = "sentence",
    texts: Sequence[str] | None = None,
    efficiency: Mapping[str, Any] | None = None,
    bootstrap: int = 1000,
    feature_bootstrap: int = 200,
    feature_resampling: str = "half",
    confidence_level: float = 0.95,
    seed: int = 0,
    top_k: int = 10,
    n_bins: int = 15,
    thresholds: VerdictThresholds | None = None,
    measure_speed: bool = False,
    batch_size: int = 32,
    latency_batches: int = 5,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything about one teacher-vs-student run, as a JSON-serialisable dict (schema in the module doc).

    Args:
        result: the extraction result (object or dict; see the module docstring for the names read).
        baseline: optional result of the same teacher against the *baseline* student (the same
            student architecture fine-tuned on the labels only), on the same examples.
        teacher: the teacher model or its path: for its size (and speed with ``measure_speed``).
        student: the student model or its path.
        baseline_student: the baseline student model or its path (size only).
        dataset: where the texts come from (``dataset[text_column][i]`` for ``i`` in the result's
            example indices) when ``texts`` and ``result.texts`` are absent.
        text_column: the text column of ``dataset``.
        texts: the N input texts, in the result's row order.
        efficiency: precomputed ``{"teacher": {"parameters", "disk_bytes", "seconds_per_batch",
            "examples_per_second"}, "student": {...}}``; replaces measuring.
        bootstrap: replicates for the logit-based intervals (0: no intervals).
        feature_bootstrap: replicates for FSS/KRS intervals (capped at ``bootstrap``).
        feature_resampling: ``"half"`` or ``"bootstrap"`` (see :mod:`knowledge_retention.diagnostics.bootstrap`).
        confidence_level: of the intervals.
        seed: of the resampling.
        top_k: examples listed where the student departs most from the teacher.
        n_bins: calibration bins.
        thresholds: verdict thresholds (default :class:`VerdictThresholds()`).
        measure_speed: when the result has no forward timings of both models, time both models on
            the first ``latency_batches`` batches of the texts (needs the extract extra). A result
            from the extraction always has them: its timed passes over all N examples are used and
            nothing is run again.
        batch_size: batch size for the speed figures.
        latency_batches: how many batches to time.
        options: the caller's own options (e.g. the command line), recorded verbatim.

    Returns:
        The report dict (plain JSON types only).
    """
    started = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes: list[str] = [str(n) for n in _get(result, "notes", [])]
    ext_options = dict(_get(result, "options", {}))
    teacher_logits = _array(_get(result, "teacher_logits"))
    student_logits = _array(_get(result, "student_logits"))
    labels = _array(_get(result, "labels"))
    indices = _array(_get(result, "example_indices", _get(result, "indices")))
    aoag_method = _get(result, "aoag_method", ext_options.get("aoag_method"))
    task = str(_get(result, "task", ext_options.get("task", "regression" if aoag_method == "mse" else "classification")))
    temperature = float(_get(result, "temperature", ext_options.get("temperature", 1.0)))
    num_examples = int(_get(result, "num_examples", 0) or (0 if teacher_logits is None else len(teacher_logits)))

    if texts is None:
        texts = _get(result, "texts")
    if texts is None and dataset is not None and indices is not None:
        try:
            texts = _texts_from(dataset, text_column, indices.tolist())
        except (KeyError, TypeError, IndexError, ValueError) as err:
            notes.append(f"Texts not read from the dataset ({type(err).__name__}: {err}).")

    # headline
    fss, aoag, krs = _get(result, "fss"), _get(result, "aoag"), _get(result, "krs")
    alpha, beta = _get(result, "alpha"), _get(result, "beta")
    if krs is None and fss is not None and aoag is not None and alpha is not None:
        krs = knowledge_retention_score(fss, aoag, alpha=alpha, beta=beta)
    headline = {
        "krs": krs, "fss": fss, "aoag": aoag, "alpha": alpha, "beta": beta, "task": task,
        "fss_method": _get(result, "fss_method", ext_options.get("fss_method")), "aoag_method": aoag_method,
        "temperature": temperature,
    }

    # output diagnostics
    diag: dict[str, Any] = {"quality": None, "agreement": None, "calibration": None,
                            "errors": {"breakdown": None, "top_disagreements": []}}
    if teacher_logits is not None and student_logits is not None:
        diag_task = task if task in (*CLASSIFICATION_TASKS, "regression") else "classification"
        diag = diagnose(
            teacher_logits, student_logits, labels=labels, texts=texts, indices=indices, task=diag_task,
            n_bins=n_bins, top_k=top_k, temperature=temperature,
        )
        notes.extend(diag["notes"])
    else:
        notes.append("No logits in the result: no agreement, calibration, quality or error analysis.")

    # efficiency and trade-off
    eff = _efficiency(teacher, student, baseline_student, efficiency, result, texts, measure_speed,
                      batch_size, latency_batches, notes)
    tradeoff = _tradeoff(diag["quality"], task, eff)
    sentence = tradeoff.pop("sentence")

    # verdict
    retention = None
    if diag["quality"] is not None and task in CLASSIFICATION_TASKS:
        retention = diag["quality"]["retained"]["accuracy"]
    mean_kl = (diag["agreement"] or {}).get("mean_kl") if task in CLASSIFICATION_TASKS else None
    verdict_out = None
    if retention is not None or krs is not None or mean_kl is not None:
        verdict_out = verdict(accuracy_retention=retention, krs=krs, mean_kl=mean_kl, thresholds=thresholds)

    # uncertainty
    boot: dict[str, Any] = {
        "n_resamples": int(bootstrap),
        "n_feature_resamples": max(1, min(int(feature_bootstrap), int(bootstrap))),
        "feature_resampling": feature_resampling,
        "confidence_level": confidence_level,
        "seed": seed,
    }
    uncertainty = None
    if bootstrap and teacher_logits is not None and student_logits is not None and task in CLASSIFICATION_TASKS \
            and aoag_method in ("kl", "js", "top1"):
        uncertainty = bootstrap_confidence_intervals(
            teacher_logits, student_logits, labels=labels,
            teacher_features=_get(result, "teacher_features"), student_features=_get(result, "student_features"),
            alpha=alpha, beta=beta, aoag_method=aoag_method, fss_method=headline["fss_method"] or "linear_cka",
            temperature=temperature, **boot,
        )
        notes.extend(uncertainty["notes"])
    elif bootstrap:
        notes.append("No confidence intervals: they need classification logits and a kl/js/top1 AOAg.")

    baseline_section = None
    if baseline is not None:
        baseline_section = _baseline_section(baseline, result, headline, diag["quality"], task,
                                             boot if bootstrap else {}, notes)
        baseline_section["model"] = _model_name(baseline_student) or _get(_get(baseline, "options", {}), "student")

    alpha_curve = None
    if fss is not None and aoag is not None:
        alphas, curve = alpha_sensitivity(fss, aoag, step=0.01)
        alpha_curve = {"alphas": np.round(alphas, 2), "krs": curve}

    timings = dict(_get(result, "timings", {}))
    timings["report_s"] = time.perf_counter() - started
    report = {
        "schema_version": SCHEMA_VERSION,
        "package": {"name": "knowledge_retention", "version": _package_version()},
        "created_at": created,
        "environment": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": _module_version("scipy"),
            "platform": platform.platform(),
        },
        "options": {
            "report": {
                "bootstrap": int(bootstrap),
                "feature_bootstrap": boot["n_feature_resamples"],
                "feature_resampling": feature_resampling,
                "confidence_level": confidence_level,
                "seed": seed,
                "top_k": top_k,
                "n_bins": n_bins,
                "thresholds": dataclasses.asdict(thresholds or VerdictThresholds()),
                "measure_speed": measure_speed,
                "batch_size": batch_size,
                "latency_batches": latency_batches,
                "text_column": text_column,
            },
            "extraction": ext_options,
            "run": dict(options or {}),
        },
        "models": {
            "teacher": _model_name(teacher) or ext_options.get("teacher"),
            "student": _model_name(student) or ext_options.get("student"),
            "baseline_student": _model_name(baseline_student),
        },
        "num_examples": num_examples,
        "has_labels": labels is not None,
        "headline": headline,
        "verdict": verdict_out,
        "tradeoff_sentence": sentence or None,
        "tradeoff": tradeoff,
        "quality": diag["quality"],
        "agreement": diag["agreement"],
        "calibration": diag["calibration"],
        "errors": diag["errors"],
        "layers": _layers_section(result),
        "alpha_sensitivity": alpha_curve,
        "uncertainty": uncertainty,
        "efficiency": eff,
        "baseline": baseline_section,
        "timings": timings,
        "notes": list(dict.fromkeys(notes)),
        "figures": {},
    }
    return jsonable(report)


def _package_version() -> str:
    from . import __version__

    return str(__version__)


def _module_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", None))


# --- write ---------------------------------------------------------------------------------------------


def write_figures(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Draws every figure the report's numbers allow into ``out_dir``; returns ``{name: path}``."""
    from . import plots

    out = Path(out_dir)
    figures: dict[str, Path] = {}
    cross = (report.get("layers") or {}).get("cross_layer_cka")
    if cross and cross.get("matrix"):
        pairs = [(p["teacher"], p["student"]) for p in report["layers"].get("pairs", []) if "teacher" in p]
        figures["cross_layer_cka"] = plots.plot_cross_layer_cka(
            cross["matrix"], out / "cross_layer_cka.png", teacher_layers=cross.get("teacher_layers"),
            student_layers=cross.get("student_layers"), pairs=pairs or None,
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

    Returns:
        ``{"json": path, "markdown": path, <figure name>: path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out)
    final = _home_relative(dict(report))  # no machine-specific /home/<user>/... in files meant to be shared
    final["figures"] = {name: path.name for name, path in figures.items()}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(jsonable(final), indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(final), encoding="utf-8")
    return {"json": json_path, "markdown": md_path, **figures}


def _home_relative(value: Any) -> Any:
    """Every string that is an absolute path under the home folder, as ``~/...`` (recursively)."""
    if isinstance(value, Mapping):
        return {k: _home_relative(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_home_relative(v) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.startswith(os.sep):
        home = os.path.expanduser("~").rstrip(os.sep)
        if home and (value == home or value.startswith(home + os.sep)):
            return "~" + value[len(home):]
    return value


# --- markdown ------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _cell(text: Any, limit: int = 160) -> str:
    value = " ".join(str(text).split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _ci(intervals: Mapping[str, Any], key: str) -> str:
    ci = intervals.get(key)
    if not ci or ci.get("low") is None:
        return "—"
    return f"[{ci['low']:.3f}, {ci['high']:.3f}]"


def _bytes(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value / 2**20:,.1f} MiB"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report: headline, verdict, tables, figure links and notes."""
    lines: list[str] = ["# Knowledge retention report", ""]
    models = report.get("models") or {}
    lines += [
        f"Teacher: `{models.get('teacher') or '—'}` · Student: `{models.get('student') or '—'}` · "
        f"{report.get('num_examples', 0):,} examples · labels: {'yes' if report.get('has_labels') else 'no'}",
        "",
        f"Generated {report.get('created_at')} by knowledge_retention {report.get('package', {}).get('version')} "
        f"(report schema {report.get('schema_version')}).",
        "",
    ]
    head = report.get("headline") or {}
    intervals = (report.get("uncertainty") or {}).get("intervals") or {}
    level = int(100 * (report.get("uncertainty") or {}).get("confidence_level", 0.95))
    lines += ["## Headline", ""]
    lines += _table(
        ["", "value", f"{level}% interval", "meaning"],
        [
            ["**KRS**", f"**{_f(head.get('krs'))}**", _ci(intervals, "krs"),
             f"α·FSS + β·AOAg with α = {_f(head.get('alpha'), 2)}, β = {_f(head.get('beta'), 2)} ({head.get('task')})"],
            ["FSS", _f(head.get("fss")), _ci(intervals, "fss"), f"feature similarity ({_f(head.get('fss_method'))})"],
            ["AOAg", _f(head.get("aoag")), _ci(intervals, "aoag"), f"output agreement ({_f(head.get('aoag_method'))})"],
        ],
    )
    v = report.get("verdict")
    if v:
        lines += [f"**Verdict: {v['level'].upper()}** — {v['reason']}", ""]
    if report.get("tradeoff_sentence"):
        lines += [f"> The student keeps {report['tradeoff_sentence']}.", ""]
    figures = report.get("figures") or {}
    if "alpha_sensitivity" in figures:
        lines += [f"![KRS as a function of alpha]({figures['alpha_sensitivity']})", ""]

    quality = report.get("quality")
    lines += ["## Task quality (against the gold labels)", ""]
    if quality:
        rows = []
        for key in quality["teacher"]:
            ci = _ci(intervals, "accuracy_retention") if key == "accuracy" else "—"
            rows.append([key, _f(quality["teacher"][key]), _f(quality["student"][key]), _pct(quality["retained"][key]), ci])
        lines += _table(["metric", "teacher", "student", "retained", f"{level}% interval (retained)"], rows)
    else:
        lines += ["No gold labels: teacher-relative figures only.", ""]

    agreement = report.get("agreement")
    lines += ["## Agreement with the teacher", ""]
    if agreement:
        labels = {
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
        rows = [[labels.get(k, (k, ""))[0], _f(val), labels.get(k, ("", "—"))[1], _ci(intervals, k)] for k, val in agreement.items()]
        lines += _table(["measure", "value", "better", f"{level}% interval"], rows)
    else:
        lines += ["Needs both models' outputs (logits).", ""]

    calibration = report.get("calibration")
    lines += ["## Calibration", ""]
    if calibration:
        lines += _table(
            ["model", f"ECE ({calibration['n_bins']} equal-width bins)"],
            [["teacher", _f(calibration["teacher"]["ece"], 4)], ["student", _f(calibration["student"]["ece"], 4)]],
        )
        if "reliability" in figures:
            lines += [f"![Reliability diagrams]({figures['reliability']})", ""]
    else:
        lines += ["Needs gold labels and class logits.", ""]

    errors = report.get("errors") or {}
    lines += ["## Error analysis", ""]
    breakdown = errors.get("breakdown")
    if breakdown:
        names = {
            "both_correct": "both correct", "both_wrong": "both wrong",
            "only_student_wrong": "only the student wrong (lost in distillation)",
            "only_teacher_wrong": "only the teacher wrong (fixed by the student)",
        }
        lines += _table(["group", "examples", "rate"],
                        [[names[k], breakdown["counts"][k], _pct(breakdown["rates"][k])] for k in breakdown["counts"]])
    top = errors.get("top_disagreements") or []
    if not breakdown and not top:
        lines += ["Needs class logits (and gold labels for the breakdown).", ""]
    if top:
        lines += [f"Where the student departs most from the teacher (top {len(top)} by KL):", ""]
        lines += _table(
            ["index", "KL", "teacher → p", "student → p", "label", "text"],
            [[r["index"], _f(r["kl"]), f"{r['teacher_prediction']} ({_f(r['teacher_confidence'], 2)})",
              f"{r['student_prediction']} ({_f(r['student_confidence'], 2)})", _f(r["label"]), r["text"] or ""]
             for r in top],
        )

    eff = report.get("efficiency")
    lines += ["## Size and speed", ""]
    if eff:
        rows = []
        for role in ("teacher", "student", "baseline_student"):
            e = eff.get(role)
            if e:
                rows.append([role.replace("_", " "), _f(e.get("parameters")), _bytes(e.get("disk_bytes")),
                             _f(e.get("seconds_per_batch"), 4), _f(e.get("examples_per_second"), 1)])
        lines += _table(["model", "parameters", "weights on disk", "s / batch", "examples / s"], rows)
        trade = report.get("tradeoff") or {}
        lines += [f"Size ratio (student / teacher, {trade.get('size_unit') or '—'}): {_f(trade.get('size_ratio'))} · "
                  f"speed-up: {_f(trade.get('speedup'), 2)}× · speed source: {eff.get('speed_source') or '—'}", ""]
    else:
        lines += ["Not measured (pass the models, or precomputed figures).", ""]

    base = report.get("baseline")
    lines += ["## Distillation vs plain fine-tuning", ""]
    if base:
        comp = base.get("comparison") or {}
        paired = (base.get("paired") or {}).get("differences") or {}
        rows = []
        for key, name in (("quality", "accuracy"), ("krs", "KRS")):
            c = comp.get(key)
            if c:
                diff_key = "student_accuracy" if key == "quality" else "krs"
                d = paired.get(diff_key)
                interval = "—" if not d or d.get("low") is None else f"[{d['low']:+.3f}, {d['high']:+.3f}]"
                rows.append([name, _f(c["baseline"]), _f(c["distilled"]), f"{c['delta']:+.3f}", interval,
                             _better(c["distillation_better"], d)])
        lines += [f"Baseline student: `{base.get('model') or '—'}` (same student, fine-tuned on the labels only).", ""]
        lines += _table(["metric", "baseline", "distilled", "Δ", f"{level}% interval of Δ", "distillation better?"], rows)
        mcnemar = (base.get("paired") or {}).get("mcnemar")
        if mcnemar:
            lines += [f"McNemar (exact): only the baseline right on {mcnemar['only_a_correct']} examples, only the "
                      f"distilled student on {mcnemar['only_b_correct']}; p = {mcnemar['p_value']:.3g}.", ""]
        if "baseline_comparison" in figures:
            lines += [f"![Distillation vs baseline]({figures['baseline_comparison']})", ""]
    else:
        lines += ["No baseline student given.", ""]

    layers = report.get("layers") or {}
    lines += ["## Layers", ""]
    if layers.get("pairs"):
        lines += _table(["teacher layer", "student layer", "score", "linear CKA"],
                        [[p.get("teacher_layer"), p.get("student_layer"), _f(p.get("score")), _f(p.get("linear_cka"))]
                         for p in layers["pairs"]])
    if "cross_layer_cka" in figures:
        lines += [f"![Cross-layer CKA]({figures['cross_layer_cka']})", ""]
    if not layers.get("pairs") and not layers.get("cross_layer_cka"):
        lines += ["No per-layer figures in the result.", ""]

    uncertainty = report.get("uncertainty")
    if uncertainty:
        lines += ["## Uncertainty", "",
                  f"{uncertainty['method']} intervals at {level}% from {uncertainty['n_resamples']} resamples of the "
                  f"examples (seed {uncertainty['seed']}); FSS/KRS from {uncertainty['n_feature_resamples']} "
                  f"{uncertainty['feature_resampling']}-resamples.", ""]
        lines += _table(["statistic", "estimate", "low", "high", "replicates used"],
                        [[k, _f(ci["estimate"]), _f(ci["low"]), _f(ci["high"]), ci["n_valid"]] for k, ci in intervals.items()])

    notes = report.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Options", "", "```json", json.dumps(report.get("options", {}), indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)
