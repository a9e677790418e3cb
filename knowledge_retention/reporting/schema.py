"""The report's JSON schema, version ``2.0``: one schema for every task, and the comparison of many students.

Version 2.0 (was 1.0 for classifiers and ``knowledge_retention.lm_report/1`` for causal LMs) adds
``kind``, ``bands``, ``warnings``, ``tokens``, ``lm`` and ``absent``, and the verdict's ``preset``,
``rule`` and ``other_presets``; every key of 1.0 keeps its meaning. Keys are stable: a section that
does not apply is ``null`` and ``absent`` says why (never a silent null).

A pair report (``kind == "pair"``):

=======================  ===================================================================================
key                      content
=======================  ===================================================================================
``schema_version``       ``"2.0"``
``kind``                 ``"pair"``
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
                         "reason", "preset", "rule", "criteria", "thresholds", "other_presets"}`` (see
                         :func:`diagnostics.verdict`; ``other_presets``: ``{preset: {"level", "decided_by",
                         "value", "reason"}}`` for every other named preset)
``tradeoff_sentence``    "X% of the teacher's accuracy at Y% of its size and Z× its speed" (null if nothing known)
``tradeoff``             ``{"quality_name", "quality_retained", "size_ratio", "size_unit", "speedup"}``
``quality``              ``{"teacher": {...}, "student": {...}, "retained": {...}}``: accuracy and
                         macro-F1 (classification), MAE, RMSE, R² (regression), perplexity (causal LM;
                         retained = teacher / student perplexity)
``agreement``            mean KL, AOAg (kl, js), top-1 agreement, confidence rank correlations
``calibration``          ``{"n_bins", "teacher": {"ece", "bins"}, "student": {...}}``; ``bins`` holds
                         lists ``bin_lower``, ``bin_upper``, ``confidence``, ``accuracy``, ``count``
``errors``               ``{"breakdown": {"num_examples", "counts", "rates"}, "top_disagreements": [...]}``;
                         an image task's rows add ``image`` (``examples/<index>.png``, the thumbnail)
``layers``               ``{"pairs": [{"teacher", "student", "teacher_layer", "student_layer", "score",
                         "linear_cka"}], "cross_layer_cka": {"teacher_layers", "student_layers",
                         "matrix"}}``
``alpha_sensitivity``    ``{"alphas": [0, 0.01, ..., 1], "krs": [...]}``
``uncertainty``          the output of :func:`diagnostics.bootstrap_confidence_intervals`
``efficiency``           ``{"teacher", "student", "baseline_student": {"parameters", "disk_bytes",
                         "seconds_per_batch", "examples_per_second"}, "speed_source"}``
``baseline``             ``{"model", "headline", "quality", "agreement", "comparison", "paired"}``: the plain
                         fine-tuned student and distillation's gain over it (paired bootstrap + McNemar)
``bands``                the article's band label of each diagnostic: ``{measure: {"value", "band"}}`` for
                         ``mean_kl``, ``confidence_spearman``, ``teacher_ece``, ``student_ece``,
                         ``accuracy_retention`` (those the run has)
``warnings``             ``[{"code", "message", "remedies", ...}]``: the article's warning when more than 5 %
                         of the examples are wrong only for the student
``tokens``               causal LM: the token-level measures (top-1, top-k overlap, AOAg, KL, JS, log-prob
                         gap, perplexities and their ratio); null for other tasks
``lm``                   causal LM: counted tokens and texts, agreement by position, the most-disagreeing
                         tokens in context; null for other tasks
``absent``               ``{section: why it is null}`` for every null section above
``timings``              the extraction's timings plus ``report_s``
``notes``                plain-language remarks, in order
``figures``              ``{name: file name}`` relative to the report folder (filled by write_report)
=======================  ===================================================================================

A comparison of several students against one teacher (``kind == "comparison"``, from
``build_report({name: result, ...})``):

=======================  ===================================================================================
``schema_version``       ``"2.0"``; ``kind``: ``"comparison"``; ``package``, ``created_at``, ``environment``,
                         ``options`` as above
``models``               ``{"teacher", "students": {name: path}}``
``num_examples``         N (the same examples for every student)
``students``             one row per student: ``{"name", "parameters", "disk_bytes", "seconds_per_batch",
                         "speedup", "size_ratio", "accuracy", "quality_name", "quality_retained", "krs",
                         "krs_low", "krs_high", "mean_kl", "ece", "verdict", "on_front"}``
``best``                 the name of the student with the highest KRS
``differences``          ``{name: {"krs": {"difference", "low", "high", "excludes_zero"}, "student_accuracy":
                         {...}}}``: paired bootstrap of each student minus the best, on the same resamples
``pareto``               ``{"size": [names on the quality-vs-size front], "speed": [...]}``
``correlation``          ``{"pearson_r", "n"}``: accuracy against KRS across students (null below 3)
``three_way``            the teacher / plain fine-tuned / distilled check when a student is named as the
                         baseline: ``{"baseline", "distilled", "difference", "sentence"}``
``verdict_preset``       the preset of the verdict column
``reports``              ``{name: the pair report of that student}`` (each ``kind == "pair"``)
``absent``, ``notes``, ``figures``   as above
=======================  ===================================================================================

NaN and Inf are written as ``null``; every value is a plain JSON type, so
``json.loads(json.dumps(report)) == report``.
"""

from __future__ import annotations

SCHEMA_VERSION = "2.0"

#: The top-level keys of a pair report, in the order they are written.
PAIR_KEYS: tuple[str, ...] = (
    "schema_version", "kind", "package", "created_at", "environment", "options", "models", "num_examples",
    "has_labels", "headline", "verdict", "tradeoff_sentence", "tradeoff", "quality", "agreement", "calibration",
    "errors", "layers", "alpha_sensitivity", "uncertainty", "efficiency", "baseline", "bands", "warnings",
    "tokens", "lm", "absent", "timings", "notes", "figures",
)
#: The top-level keys of a comparison report.
COMPARISON_KEYS: tuple[str, ...] = (
    "schema_version", "kind", "package", "created_at", "environment", "options", "models", "num_examples",
    "students", "best", "differences", "pareto", "correlation", "three_way", "verdict_preset", "reports",
    "absent", "notes", "figures",
)
#: Sections that may be null, each of which then gets its reason in ``absent``.
OPTIONAL_SECTIONS: tuple[str, ...] = (
    "verdict", "tradeoff_sentence", "quality", "agreement", "calibration", "alpha_sensitivity", "uncertainty",
    "efficiency", "baseline", "tokens", "lm",
)

__all__ = ["COMPARISON_KEYS", "OPTIONAL_SECTIONS", "PAIR_KEYS", "SCHEMA_VERSION"]
