"""One builder for every task's report, and for the comparison of many students.

:func:`build_report` gathers the numbers of an extraction run (an
:class:`~knowledge_retention.extraction.ExtractionResult`, or any object or dict with the same
attribute names) and hands every computation to :mod:`knowledge_retention.diagnostics` and
:mod:`knowledge_retention.score`; there is no formula here. Given ``{name: result}`` (what
:func:`~knowledge_retention.extraction.evaluate_students` returns) it builds the comparison of those
students (:mod:`.comparison`). The schema is in :mod:`.schema`.

Inputs read from ``result`` (attribute or key; all optional except one of ``fss``/``krs``/logits):
``teacher_logits``, ``student_logits`` ``(N, C)``, ``labels`` ``(N,)``, ``example_indices`` (or
``indices``), ``texts``, ``fss``, ``aoag``, ``krs``, ``alpha``, ``beta``, ``fss_method``,
``aoag_method``, ``task``, ``layer_pairs``, ``pair_scores``, ``pair_linear_cka``,
``teacher_layer_names``, ``student_layer_names``, ``cross_layer_cka``, ``teacher_features``,
``student_features`` (lists of ``(N, D)`` arrays, one per layer pair), ``options``, ``timings``,
``notes``; for a causal LM also ``lm``, ``js``, ``topk_overlap``, ``logprob_gap``,
``teacher_perplexity``, ``student_perplexity``, ``perplexity_ratio``, ``mean_kl``, ``top1_agreement``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._json import jsonable
from .._validation import InputError
from ..diagnostics import (
    PRESETS,
    VerdictThresholds,
    article_band,
    bootstrap_confidence_intervals,
    diagnose,
    only_student_wrong_warning,
    verdict,
)
from ..diagnostics.verdict import resolve_thresholds
from ..methods import CLASSIFICATION_METHODS
from ..score import alpha_sensitivity, knowledge_retention_score
from . import causal_lm
from ._common import (
    CLASSIFICATION_TASKS,
    array,
    get,
    is_causal_lm,
    model_name,
    module_version,
    package_version,
    texts_from,
)
from .schema import OPTIONAL_SECTIONS, PAIR_KEYS, SCHEMA_VERSION
from .sections import baseline_section, efficiency_section, layers_section, tradeoff_section
from .thumbnails import add_thumbnails

__all__ = ["build_report", "is_results_mapping"]

#: Keys whose presence marks a mapping as one result in dict form (not ``{name: result}``).
_RESULT_KEYS = frozenset({"fss", "aoag", "krs", "teacher_logits", "student_logits", "lm", "num_examples",
                          "layer_pairs", "alpha"})


def is_results_mapping(value: Any) -> bool:
    """Whether ``value`` is ``{name: result}`` (several students) rather than one result in dict form.

    Raises:
        InputError: a mapping that is neither: no result keys and values that are not results.
    """
    if not isinstance(value, Mapping) or _RESULT_KEYS & set(value):
        return False
    if not value:
        raise InputError("`result` is an empty mapping: expected an extraction result or {name: result} of students.")
    bad = [str(k) for k, v in value.items() if not (isinstance(k, str) and _looks_like_result(v))]
    if bad:
        raise InputError(
            f"`result` looks like {{name: result}} (no result keys such as 'fss' or 'krs'), but the entries {bad} are "
            "not extraction results (objects or dicts with fss/krs, keyed by the student's name).")
    return True


def _looks_like_result(value: Any) -> bool:
    if isinstance(value, Mapping):
        return bool(_RESULT_KEYS & set(value))
    return hasattr(value, "fss") and hasattr(value, "krs")


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
    image_column: str | None = None,
    efficiency: Mapping[str, Any] | None = None,
    bootstrap: int = 1000,
    feature_bootstrap: int = 200,
    feature_resampling: str = "half",
    confidence_level: float = 0.95,
    seed: int = 0,
    top_k: int = 10,
    n_bins: int = 15,
    thresholds: VerdictThresholds | str | None = None,
    measure_speed: bool = False,
    batch_size: int = 32,
    latency_batches: int = 5,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything about one teacher-vs-student run (or several students), as a JSON-serialisable dict.

    Args:
        result: the extraction result (object or dict; see the module docstring for the names read),
            or ``{name: result}`` from :func:`~knowledge_retention.extraction.evaluate_students`:
            then the comparison of those students (:func:`.comparison.build_comparison`, where
            ``student``, ``baseline_student`` and ``efficiency`` are ``{name: ...}`` and ``baseline``
            names the plain fine-tuned student among them).
        baseline: optional result of the same teacher against the *baseline* student (the same
            student architecture fine-tuned on the labels only), on the same examples.
        teacher: the teacher model or its path: for its size (and speed with ``measure_speed``).
        student: the student model or its path.
        baseline_student: the baseline student model or its path (size only).
        dataset: where the texts come from (``dataset[text_column][i]`` for ``i`` in the result's
            example indices) when ``texts`` and ``result.texts`` are absent.
        text_column: the text column of ``dataset``.
        texts: the N input texts, in the result's row order.
        image_column: the image column of ``dataset`` (default: the result's ``options["image_column"]``,
            set by an image task): the worst examples are then thumbnails of ``dataset[image_column][i]``
            (:mod:`.thumbnails`), saved by :func:`.write_report` as ``examples/<index>.png``.
        efficiency: precomputed ``{"teacher": {"parameters", "disk_bytes", "seconds_per_batch",
            "examples_per_second"}, "student": {...}}``; replaces measuring.
        bootstrap: replicates for the logit-based intervals (0: no intervals).
        feature_bootstrap: replicates for FSS/KRS intervals (capped at ``bootstrap``).
        feature_resampling: ``"half"`` or ``"bootstrap"`` (see :mod:`knowledge_retention.diagnostics.bootstrap`).
        confidence_level: of the intervals.
        seed: of the resampling.
        top_k: examples listed where the student departs most from the teacher.
        n_bins: calibration bins.
        thresholds: the verdict's preset name (``"default"``, ``"article"``, ``"safety-critical"``,
            ``"cost-sensitive"``) or your own :class:`VerdictThresholds`; default ``"default"``.
            The report also shows what the other presets would say.
        measure_speed: when the result has no forward timings of both models, time both models on
            the first ``latency_batches`` batches of the texts (needs the extract extra). A result
            from the extraction always has them: its timed passes over all N examples are used and
            nothing is run again.
        batch_size: batch size for the speed figures.
        latency_batches: how many batches to time.
        options: the caller's own options (e.g. the command line), recorded verbatim.

    Returns:
        The report dict (plain JSON types only).

    Raises:
        InputError: ``result`` is neither a result nor ``{name: result}``, or names an unknown preset.
    """
    bars = resolve_thresholds(thresholds)
    if is_results_mapping(result):
        from .comparison import build_comparison

        return build_comparison(
            result, teacher=teacher, students=student, baseline=baseline, baseline_students=baseline_student,
            dataset=dataset, text_column=text_column, texts=texts, efficiency=efficiency, bootstrap=bootstrap,
            feature_bootstrap=feature_bootstrap, feature_resampling=feature_resampling,
            confidence_level=confidence_level, seed=seed, top_k=top_k, n_bins=n_bins, thresholds=bars,
            measure_speed=measure_speed, batch_size=batch_size, latency_batches=latency_batches, options=options,
        )
    if isinstance(result, Mapping) and not result:
        raise InputError("`result` is empty: expected an extraction result (fss, krs, logits...) or {name: result}.")
    report_options = {
        "bootstrap": int(bootstrap), "feature_bootstrap": max(1, min(int(feature_bootstrap), int(bootstrap))),
        "feature_resampling": feature_resampling, "confidence_level": confidence_level, "seed": seed,
        "top_k": top_k, "n_bins": n_bins, "thresholds": dataclasses.asdict(bars), "measure_speed": measure_speed,
        "batch_size": batch_size, "latency_batches": latency_batches, "text_column": text_column,
        "image_column": image_column,
    }
    return _build_pair(result, baseline=baseline, teacher=teacher, student=student,
                       baseline_student=baseline_student, dataset=dataset, texts=texts, efficiency=efficiency,
                       bars=bars, report_options=report_options, options=options)


def _build_pair(
    result: Any, *, baseline: Any, teacher: Any, student: Any, baseline_student: Any, dataset: Any,
    texts: Sequence[str] | None, efficiency: Mapping[str, Any] | None, bars: VerdictThresholds,
    report_options: dict[str, Any], options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes: list[str] = [str(n) for n in get(result, "notes", [])]
    absent: dict[str, str] = {}
    ext_options = dict(get(result, "options", {}))
    lm_task = is_causal_lm(result)
    teacher_logits, student_logits = array(get(result, "teacher_logits")), array(get(result, "student_logits"))
    labels = array(get(result, "labels"))
    indices = array(get(result, "example_indices", get(result, "indices")))
    aoag_method = get(result, "aoag_method", ext_options.get("aoag_method"))
    default_task = "causal-lm" if lm_task else "regression" if aoag_method == "mse" else "classification"
    task = str(get(result, "task", ext_options.get("task", default_task)))
    temperature = float(get(result, "temperature", ext_options.get("temperature", 1.0)))
    num_examples = int(get(result, "num_examples", 0) or (0 if teacher_logits is None else len(teacher_logits)))
    text_column = report_options["text_column"]
    image_column = report_options.get("image_column") or ext_options.get("image_column")
    if texts is None:
        texts = get(result, "texts")
    if texts is None and dataset is not None and indices is not None and not lm_task and not image_column:
        try:
            texts = texts_from(dataset, text_column, indices.tolist())
        except (KeyError, TypeError, IndexError, ValueError) as err:
            notes.append(f"Texts not read from the dataset ({type(err).__name__}: {err}).")

    headline = _headline(result, task, aoag_method, temperature, ext_options)
    diag = _diagnostics(teacher_logits, student_logits, labels, texts, indices, task, temperature,
                        report_options, notes, absent, lm_task)
    if image_column and dataset is not None:
        add_thumbnails(diag["errors"]["top_disagreements"], dataset, str(image_column), notes)
    lm_sections = causal_lm.sections(result) if lm_task else {"tokens": None, "lm": None, "quality": None}
    if lm_task:
        diag["quality"] = lm_sections["quality"]
        absent.update(causal_lm.ABSENT)
    else:
        absent["tokens"] = absent["lm"] = f"token-level measures are for task='causal-lm'; this is task={task!r}"

    eff = efficiency_section(teacher, student, baseline_student, efficiency, result, texts,
                             report_options["measure_speed"], report_options["batch_size"],
                             report_options["latency_batches"], notes)
    tradeoff = tradeoff_section(diag["quality"], task, eff)
    sentence = tradeoff.pop("sentence")
    verdict_out = _verdict_section(diag, headline, task, lm_task, bars, notes, absent)
    uncertainty = _uncertainty(result, teacher_logits, student_logits, labels, headline, task, lm_task,
                               report_options, notes, absent)
    boot = _boot(report_options)
    baseline_out = None
    if baseline is not None:
        baseline_out = baseline_section(baseline, result, headline, diag["quality"], task,
                                        boot if report_options["bootstrap"] else {}, notes)
        baseline_out["model"] = model_name(baseline_student) or get(get(baseline, "options", {}), "student")
    alpha_curve = None
    if headline["fss"] is not None and headline["aoag"] is not None:
        alphas, curve = alpha_sensitivity(headline["fss"], headline["aoag"], step=0.01)
        alpha_curve = {"alphas": np.round(alphas, 2), "krs": curve}

    timings = dict(get(result, "timings", {}))
    timings["report_s"] = time.perf_counter() - started
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "pair",
        "package": {"name": "knowledge_retention", "version": package_version()},
        "created_at": created,
        "environment": environment(),
        "options": {"report": report_options, "extraction": ext_options, "run": dict(options or {})},
        "models": {
            "teacher": model_name(teacher) or ext_options.get("teacher"),
            "student": model_name(student) or ext_options.get("student"),
            "baseline_student": model_name(baseline_student),
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
        "layers": layers_section(result),
        "alpha_sensitivity": alpha_curve,
        "uncertainty": uncertainty,
        "efficiency": eff,
        "baseline": baseline_out,
        "bands": _bands(diag, lm_sections["tokens"], task),
        "warnings": _warnings(diag),
        "tokens": lm_sections["tokens"],
        "lm": lm_sections["lm"],
        "absent": {},
        "timings": timings,
        "notes": list(dict.fromkeys(notes)),
        "figures": {},
    }
    report["absent"] = _absent_reasons(report, absent)
    assert tuple(report) == PAIR_KEYS  # the schema's key order
    return jsonable(report)  # type: ignore[no-any-return]


def environment() -> dict[str, Any]:
    """Python, numpy, scipy and the platform, for the report's ``environment``."""
    return {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": module_version("scipy"),
            "platform": platform.platform()}


def _boot(report_options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n_resamples": report_options["bootstrap"], "n_feature_resamples": report_options["feature_bootstrap"],
        "feature_resampling": report_options["feature_resampling"],
        "confidence_level": report_options["confidence_level"], "seed": report_options["seed"],
    }


def _headline(result: Any, task: str, aoag_method: Any, temperature: float, ext: Mapping[str, Any]) -> dict[str, Any]:
    fss, aoag, krs = get(result, "fss"), get(result, "aoag"), get(result, "krs")
    alpha, beta = get(result, "alpha"), get(result, "beta")
    if krs is None and fss is not None and aoag is not None and alpha is not None:
        krs = knowledge_retention_score(fss, aoag, alpha=alpha, beta=beta)
    return {"krs": krs, "fss": fss, "aoag": aoag, "alpha": alpha, "beta": beta, "task": task,
            "fss_method": get(result, "fss_method", ext.get("fss_method")), "aoag_method": aoag_method,
            "temperature": temperature}


def _diagnostics(
    teacher_logits: np.ndarray | None, student_logits: np.ndarray | None, labels: np.ndarray | None,
    texts: Sequence[str] | None, indices: np.ndarray | None, task: str, temperature: float,
    report_options: Mapping[str, Any], notes: list[str], absent: dict[str, str], lm_task: bool,
) -> dict[str, Any]:
    diag: dict[str, Any] = {"quality": None, "agreement": None, "calibration": None,
                            "errors": {"breakdown": None, "top_disagreements": []}}
    if lm_task:
        return diag  # the token-level sections take their place (causal_lm.ABSENT says so)
    if teacher_logits is None or student_logits is None:
        notes.append("No logits in the result: no agreement, calibration, quality or error analysis.")
        for key in ("quality", "agreement", "calibration"):
            absent[key] = "the result has no logits of both models"
        return diag
    diag_task = task if task in (*CLASSIFICATION_TASKS, "regression") else "classification"
    diag = diagnose(teacher_logits, student_logits, labels=labels, texts=texts, indices=indices, task=diag_task,
                    n_bins=report_options["n_bins"], top_k=report_options["top_k"], temperature=temperature)
    notes.extend(diag["notes"])
    if labels is None:
        absent["quality"] = "no gold labels (pass a label column): teacher-relative figures only"
        absent["calibration"] = "calibration needs gold labels"
    elif diag["calibration"] is None:
        absent["calibration"] = f"calibration is for classification outputs; this is task={task!r}"
    return diag


def _verdict_section(
    diag: Mapping[str, Any], headline: Mapping[str, Any], task: str, lm_task: bool, bars: VerdictThresholds,
    notes: list[str], absent: dict[str, str],
) -> dict[str, Any] | None:
    retention = None
    if diag["quality"] is not None and task in CLASSIFICATION_TASKS:
        retention = diag["quality"]["retained"]["accuracy"]
    mean_kl = (diag["agreement"] or {}).get("mean_kl") if task in CLASSIFICATION_TASKS else None
    figures = {"accuracy_retention": retention, "krs": headline["krs"], "mean_kl": mean_kl}
    if all(v is None for v in figures.values()):
        absent["verdict"] = "no KRS, accuracy retention or mean KL in the result"
        return None
    if lm_task:
        notes.append("The verdict of a causal-LM pair rests on KRS: accuracy retention needs class labels and the "
                     "KL bars are set for classifier outputs, not token distributions.")
    out = verdict(**figures, thresholds=bars)
    out["other_presets"] = {
        name: {k: v for k, v in verdict(**figures, thresholds=name).items() if k in ("level", "decided_by", "value",
                                                                                  "reason")}
        for name in PRESETS if name != bars.name
    }
    return out


def _uncertainty(
    result: Any, teacher_logits: np.ndarray | None, student_logits: np.ndarray | None, labels: np.ndarray | None,
    headline: Mapping[str, Any], task: str, lm_task: bool, report_options: Mapping[str, Any], notes: list[str],
    absent: dict[str, str],
) -> dict[str, Any] | None:
    if not report_options["bootstrap"]:
        absent["uncertainty"] = "bootstrap = 0: intervals turned off"
        return None
    if lm_task:
        carried = get(result, "uncertainty")
        if isinstance(carried, Mapping) and carried.get("intervals"):
            return dict(carried)  # intervals computed where the result was made
        lm = get(result, "lm") or {}
        if lm.get("rows") is not None and get(result, "teacher_features") is not None and not isinstance(result, Mapping):
            from ..diagnostics.token_bootstrap import token_bootstrap_intervals

            boot = _boot(report_options)
            try:
                out = token_bootstrap_intervals(result, n_resamples=boot["n_resamples"],
                                                n_feature_resamples=boot["n_feature_resamples"],
                                                feature_resampling=boot["feature_resampling"],
                                                confidence_level=boot["confidence_level"], seed=boot["seed"])
            except InputError as err:  # e.g. fewer than 4 texts, or average='sequence': say why, in the report
                absent["uncertainty"] = f"no intervals for this causal-LM result: {err}"
                notes.append(f"No confidence intervals: {err}")
                return None
            notes.extend(out["notes"])
            return out
        reason = causal_lm.NO_INTERVALS
        absent["uncertainty"] = reason
        notes.append(f"No confidence intervals: {reason}.")
        return None
    if teacher_logits is None or student_logits is None or task not in CLASSIFICATION_TASKS \
            or headline["aoag_method"] not in CLASSIFICATION_METHODS:
        absent["uncertainty"] = "intervals need per-example classification logits and a kl/js/top1 AOAg"
        notes.append("No confidence intervals: they need classification logits and a kl/js/top1 AOAg.")
        return None
    out = bootstrap_confidence_intervals(
        teacher_logits, student_logits, labels=labels,
        teacher_features=get(result, "teacher_features"), student_features=get(result, "student_features"),
        alpha=headline["alpha"], beta=headline["beta"], aoag_method=headline["aoag_method"],
        fss_method=headline["fss_method"] or "linear_cka", temperature=headline["temperature"], **_boot(report_options),
    )
    notes.extend(out["notes"])
    return out


def _bands(diag: Mapping[str, Any], tokens: Mapping[str, Any] | None, task: str) -> dict[str, Any]:
    """The article's band label beside each diagnostic the run has."""
    values: dict[str, tuple[str, Any]] = {}
    agreement = diag.get("agreement") or {}
    if "mean_kl" in agreement and task in CLASSIFICATION_TASKS:
        values["mean_kl"] = ("mean_kl", agreement["mean_kl"])
    if tokens and tokens.get("mean_kl") is not None:
        values["mean_kl"] = ("mean_kl", tokens["mean_kl"])
    if agreement.get("confidence_spearman") is not None:
        values["confidence_spearman"] = ("confidence_spearman", agreement["confidence_spearman"])
    calibration = diag.get("calibration") or {}
    for role in ("teacher", "student"):
        if calibration.get(role):
            values[f"{role}_ece"] = ("ece", calibration[role]["ece"])
    quality = diag.get("quality")
    if quality and task in CLASSIFICATION_TASKS:
        values["accuracy_retention"] = ("accuracy_retention", quality["retained"].get("accuracy"))
    return {key: {"value": value, "band": article_band(measure, value)} for key, (measure, value) in values.items()
            if value is not None}


def _warnings(diag: Mapping[str, Any]) -> list[dict[str, Any]]:
    breakdown = (diag.get("errors") or {}).get("breakdown")
    warning = only_student_wrong_warning(None if not breakdown else breakdown["rates"]["only_student_wrong"])
    return [warning] if warning else []


def _absent_reasons(report: Mapping[str, Any], reasons: Mapping[str, str]) -> dict[str, str]:
    """Why each null section is null: the reason recorded where it was decided, else a generic one."""
    generic = {
        "tradeoff_sentence": "neither quality retained, nor sizes, nor speeds are known",
        "efficiency": "no models or precomputed efficiency given, and no forward timings in the result",
        "baseline": "no baseline student given (the same student fine-tuned on the labels only)",
        "alpha_sensitivity": "needs both FSS and AOAg",
        "quality": "needs gold labels and both models' outputs",
        "agreement": "needs both models' outputs",
        "calibration": "needs gold labels and class logits",
    }
    return {key: reasons.get(key) or generic.get(key, "not available for this run")
            for key in OPTIONAL_SECTIONS if report.get(key) is None}
