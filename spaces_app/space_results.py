"""From validated inputs to what the page shows: scores, the CKA matrix and the summary text.

Every number comes from ``knowledge_retention``: ``compute_krs`` (FSS, AOAg, KRS),
``cross_layer_cka`` (heatmap), ``knowledge_retention_score`` (KRS at another α, for the live
slider) and, when labels are given, ``knowledge_retention.diagnostics.quality`` (accuracy retention).
This module only calls them and formats the results.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from space_io import ArrayInputs, InputError

from knowledge_retention import TASK_PRESETS, compute_krs, cross_layer_cka, knowledge_retention_score
from knowledge_retention.methods import ARRAY_AOAG_METHODS
from knowledge_retention.similarity import FSS_METHODS, layer_similarity

__all__ = [
    "AOAG_CHOICES",
    "FSS_CHOICES",
    "MAX_HEATMAP_FLOATS",
    "TASK_CHOICES",
    "ScoreResult",
    "krs_at",
    "preset_alpha",
    "quality_for",
    "score_arrays",
    "heatmap_caption",
    "summary_markdown",
    "with_task",
]

logger = logging.getLogger(__name__)

#: Tasks whose outputs fit in one rectangular array (detection's ragged boxes do not).
TASK_CHOICES: tuple[str, ...] = tuple(t for t in TASK_PRESETS if t != "detection")
FSS_CHOICES: tuple[str, ...] = FSS_METHODS
#: ``auto`` = the task's default measure (``knowledge_retention.score.DEFAULT_AOAG``).
AOAG_CHOICES: tuple[str, ...] = ("auto", *ARRAY_AOAG_METHODS)
#: The cross-layer CKA state holds about this many float64 numbers at most (400 MB).
MAX_HEATMAP_FLOATS = 50_000_000
#: Below this many examples the page warns that linear CKA is biased upwards.
SMALL_N = 50


@dataclass(frozen=True)
class ScoreResult:
    """What one computation produced; kept in ``gr.State`` so that α can move without recomputing.

    Attributes:
        fss: Feature Similarity Score in [0, 1].
        aoag: Average Output Agreement in [0, 1], or None when a model has no logits (FSS only).
        task: the task preset used.
        fss_method: FSS measure.
        aoag_method: AOAg measure.
        temperature: softmax temperature of the classification measures.
        num_examples: N.
        num_layer_pairs: layer pairs averaged into FSS.
        cka: ``(L_t, L_s)`` similarity of every teacher layer with every student layer by
            ``fss_method`` (NaN: undefined), or None (one layer each, or too large).
        paired: the ``(teacher, student)`` layer pairs behind FSS (cells outlined in the heatmap).
        teacher_names: heatmap row labels.
        student_names: heatmap column labels.
        quality: ``classification_quality`` / ``regression_quality`` output, or None.
        source: a line saying what was scored.
        notes: remarks shown under the scores (skipped parts and why).
        lm: (causal-LM pairs) the token-level measures shown instead of accuracy retention:
            ``num_tokens``, ``top1_agreement``, ``top_k``, ``topk_overlap``, ``js``,
            ``teacher_perplexity``, ``student_perplexity``, ``perplexity_ratio``; None otherwise.
    """

    fss: float
    aoag: float | None
    task: str
    fss_method: str
    aoag_method: str
    temperature: float
    num_examples: int
    num_layer_pairs: int
    cka: np.ndarray | None = None
    paired: tuple[tuple[int, int], ...] = ()
    teacher_names: tuple[str, ...] = ()
    student_names: tuple[str, ...] = ()
    quality: dict[str, Any] | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    lm: dict[str, Any] | None = None


def preset_alpha(task: str) -> float:
    """α of the task preset (``TASK_PRESETS[task][0]``)."""
    if task not in TASK_PRESETS:
        raise InputError(f"Unknown task preset {task!r}; choose one of {', '.join(TASK_CHOICES)}.")
    return TASK_PRESETS[task][0]


def krs_at(result: ScoreResult, alpha: float) -> float | None:
    """KRS of a stored result at another α (β = 1 - α), via ``knowledge_retention_score``; None without AOAg."""
    if result.aoag is None:
        return None
    return knowledge_retention_score(result.fss, result.aoag, alpha=float(alpha))


def _heatmap(
    teacher_layers: list[np.ndarray], student_layers: list[np.ndarray], method: str = "linear_cka"
) -> tuple[np.ndarray | None, str | None]:
    """Every teacher layer against every student layer, by the FSS method (so the boxed cells average to FSS)."""
    if len(teacher_layers) < 2 and len(student_layers) < 2:
        return None, None
    d_t = [x.shape[1] for x in teacher_layers]
    d_s = [y.shape[1] for y in student_layers]
    n = teacher_layers[0].shape[0]
    if method == "rbf_cka":  # one N x N Gram matrix per layer
        floats = n * n * (len(d_t) + len(d_s))
    else:
        floats = sum(d * d for d in d_t) + sum(d * d for d in d_s) + sum(d_t) * sum(d_s)
    if floats > MAX_HEATMAP_FLOATS:
        return None, (
            f"Cross-layer heatmap skipped: {len(d_t)}x{len(d_s)} layers need about {floats * 8 / 1e9:.1f} GB "
            f"for {method}; the Space stops at {MAX_HEATMAP_FLOATS * 8 / 1e9:.1f} GB."
        )
    if method == "linear_cka":
        return cross_layer_cka(teacher_layers, student_layers), None
    matrix = np.full((len(d_t), len(d_s)), np.nan)
    for i, teacher in enumerate(teacher_layers):
        for j, student in enumerate(student_layers):
            if method == "cosine" and d_t[i] != d_s[j]:
                continue  # cosine compares features of equal width only: the cell stays blank
            matrix[i, j] = layer_similarity(teacher, student, method=method)  # type: ignore[arg-type]
    return matrix, None


def quality_for(
    task: str, labels: np.ndarray | None, teacher_out: np.ndarray, student_out: np.ndarray
) -> tuple[dict[str, Any] | None, str | None]:
    """Task quality of both models and the share retained (``knowledge_retention.diagnostics.quality``).

    Returns:
        ``(quality, note)``: the quality dict (with ``kind``) or None, and why not when None.
    """
    if labels is None:
        return None, None
    try:
        from knowledge_retention.diagnostics.quality import classification_quality, regression_quality
    except ImportError as err:
        return None, f"Accuracy retention not shown: `knowledge_retention.diagnostics` is unavailable ({err})."
    try:
        if task in ("classification", "nlp") and teacher_out.ndim == 2:
            classes = teacher_out.shape[1]
            if labels.ndim == 1 and labels.size and (labels.min() < 0 or labels.max() >= classes):
                return None, (f"Accuracy retention not shown: `labels` range over {labels.min()}..{labels.max()} but "
                              f"the logits have {classes} classes (0..{classes - 1}).")
            return {"kind": "classification", **classification_quality(labels, teacher_out, student_out)}, None
        if task == "regression":
            return {"kind": "regression", **regression_quality(labels, teacher_out, student_out)}, None
    except (ValueError, TypeError) as err:
        return None, f"Accuracy retention not shown: {err}"
    return None, f"`labels` ignored: task quality is shown for classification, nlp and regression, not {task}."


def for_this_page(message: str) -> str:
    """A library message worded for this page: the Space scores logits and has no ``inputs`` option, so a
    sentence telling the visitor to pass ``inputs=...`` becomes what they can do here: upload logits.

    Example:
        >>> for_this_page("`teacher_logits` look like probabilities. Pass inputs='probabilities' if they are.")
        '`teacher_logits` look like probabilities. This page scores logits: upload the raw logits, or the log of these probabilities (np.log(p): a softmax gives p back).'
    """
    sentences = re.split(r"(?<=[.;])\s+", message.strip())
    kept = [s for s in sentences if "inputs=" not in s]
    if len(kept) == len(sentences):
        return message
    if kept and kept[-1].endswith(";"):
        kept[-1] = kept[-1][:-1] + "."
    return " ".join([*kept, "This page scores logits: upload the raw logits, or the log of these probabilities "
                             "(np.log(p): a softmax gives p back)."])


def score_arrays(
    inputs: ArrayInputs,
    *,
    task: str,
    alpha: float,
    fss_method: str = "linear_cka",
    aoag_method: str = "auto",
    temperature: float = 1.0,
    source: str = "",
) -> ScoreResult:
    """FSS, AOAg (``compute_krs``), the cross-layer CKA matrix and task quality of uploaded arrays.

    Args:
        inputs: validated arrays (:func:`space_io.parse_arrays`).
        task: task preset (see :data:`TASK_CHOICES`).
        alpha: FSS weight used for the KRS the core returns (the page recomputes KRS for any α).
        fss_method: one of :data:`FSS_CHOICES`.
        aoag_method: one of :data:`AOAG_CHOICES` (``auto`` = the task default).
        temperature: softmax temperature (> 0).
        source: what is being scored, shown on the page.

    Raises:
        InputError: bad options; ``ValueError``/``TypeError`` from ``knowledge_retention`` pass
            through (their messages name the argument, the expectation and what arrived).
    """
    if task not in TASK_CHOICES:
        raise InputError(f"Unknown task preset {task!r}; choose one of {', '.join(TASK_CHOICES)}.")
    if fss_method not in FSS_CHOICES:
        raise InputError(f"Unknown FSS method {fss_method!r}; choose one of {', '.join(FSS_CHOICES)}.")
    if aoag_method not in AOAG_CHOICES:
        raise InputError(f"Unknown AOAg method {aoag_method!r}; choose one of {', '.join(AOAG_CHOICES)}.")
    if temperature is None or not np.isfinite(temperature) or temperature <= 0:
        raise InputError(f"The temperature must be a number > 0, got {temperature}.")
    teacher_paired = inputs.paired_teacher_layers()
    try:
        core = compute_krs(
            teacher_paired,
            inputs.student_layers,
            inputs.teacher_outputs,
            inputs.student_outputs,
            task=task,  # type: ignore[arg-type]
            alpha=float(alpha),
            fss_method=fss_method,  # type: ignore[arg-type]
            aoag_method=None if aoag_method == "auto" else aoag_method,  # type: ignore[arg-type]
            temperature=float(temperature),
            ignore_index=inputs.ignore_index,
        )
    except InputError as err:
        raise InputError(for_this_page(str(err))) from None
    notes: list[str] = []
    cka, cka_note = _heatmap(inputs.teacher_layers, inputs.student_layers, fss_method)
    quality, quality_note = quality_for(task, inputs.labels, inputs.teacher_outputs, inputs.student_outputs)
    notes.extend(n for n in (cka_note, quality_note) if n)
    if inputs.ignored_keys:
        notes.append("Ignored keys: " + ", ".join(f"`{k}`" for k in inputs.ignored_keys) + ".")
    layer_map = inputs.layer_map or list(range(len(inputs.student_layers)))
    return ScoreResult(
        fss=float(core["fss"]),
        aoag=float(core["aoag"]),
        task=task,
        fss_method=fss_method,
        aoag_method=str(core["aoag_method"]),
        temperature=float(temperature),
        num_examples=int(core["num_examples"]),
        num_layer_pairs=len(inputs.student_layers),
        cka=cka,
        paired=tuple((t, s) for s, t in enumerate(layer_map)),
        teacher_names=tuple(f"T{i}" for i in range(len(inputs.teacher_layers))),
        student_names=tuple(f"S{j}" for j in range(len(inputs.student_layers))),
        quality=quality,
        source=source or inputs.describe(),
        notes=tuple(notes),
    )


def _quality_rows(quality: dict[str, Any]) -> list[str]:
    retained = quality["retained"]
    teacher, student = quality["teacher"], quality["student"]
    rows = []
    if quality["kind"] == "classification":
        labels = {"accuracy": "Accuracy retention", "macro_f1": "Macro-F1 retention"}
        for key, label in labels.items():
            value = retained.get(key)
            shown = "n/a" if value is None else f"{value:.4f}"
            rows.append(f"| {label} (student / teacher) | {shown} | student {student[key]:.2%} · "
                        f"teacher {teacher[key]:.2%} |")
    else:
        for key, label in (("r2", "R² retention"), ("rmse", "RMSE retention (teacher / student)")):
            value = retained.get(key)
            shown = "n/a" if value is None else f"{value:.4f}"
            rows.append(f"| {label} | {shown} | student {student[key]:.4g} · teacher {teacher[key]:.4g} |")
    return rows


def heatmap_caption(result: ScoreResult) -> str:
    """The line under the heatmap: which measure it shows, and that its boxed cells average to FSS."""
    if result.cka is None:
        return ""
    boxed = [float(result.cka[t, s]) for t, s in result.paired]
    mean = f"{np.mean(boxed):.4f}" if boxed and np.all(np.isfinite(boxed)) else "n/a"
    return (f"Heatmap: **{result.fss_method}** between every teacher layer (rows, input at the bottom) and every "
            f"student layer (columns). The {len(boxed)} red box(es) are the layer pairs FSS averages: their mean "
            f"is {mean}, FSS = {result.fss:.4f}.")


def with_task(result: ScoreResult, task: str) -> ScoreResult:
    """The same scores under another task preset's name (when the preset's AOAg measure is the one used);
    a causal-LM result stays ``causal-lm`` (its scores are token-level whatever the preset)."""
    return result if result.lm is not None else replace(result, task=task)


def _lm_rows(lm: dict[str, Any]) -> list[str]:
    """Rows of the token-level measures of a causal-LM pair (no accuracy: the texts are scored token by token)."""

    def shown(value: Any, digits: str = ".4f") -> str:
        return "n/a" if value is None else format(float(value), digits)

    return [
        f"| Top-1 agreement | {shown(lm.get('top1_agreement'))} | share of counted tokens where both predict the "
        "same next token |",
        f"| Top-{lm.get('top_k', 5)} overlap | {shown(lm.get('topk_overlap'))} | share of the teacher's top "
        f"{lm.get('top_k', 5)} next tokens among the student's |",
        f"| Perplexity ratio (teacher / student) | {shown(lm.get('perplexity_ratio'))} | teacher "
        f"{shown(lm.get('teacher_perplexity'), '.4g')} · student {shown(lm.get('student_perplexity'), '.4g')} "
        "(1 = as good as the teacher) |",
    ]


def summary_markdown(result: ScoreResult, alpha: float) -> str:
    """The score table shown on the page, for the selected α (KRS recomputed, FSS/AOAg stored)."""
    alpha = float(alpha)
    krs = krs_at(result, alpha)
    preset = TASK_PRESETS[result.task][0]
    preset_note = "task preset" if abs(alpha - preset) < 1e-9 else f"preset for {result.task}: α = {preset:.2f}"
    temperature = f", T = {result.temperature:g}" if result.aoag_method in ("kl", "js") else ""
    layers = "1 layer pair" if result.num_layer_pairs == 1 else f"mean over {result.num_layer_pairs} layer pairs"
    krs_text = "n/a" if krs is None else f"{krs:.4f}"
    aoag_text = "n/a (needs logits from both models)" if result.aoag is None else f"{result.aoag:.4f}"
    lines = [
        f"## KRS = {krs_text}",
        "",
        "| score | value | how |",
        "|---|---|---|",
        f"| **KRS** = α·FSS + β·AOAg | **{krs_text}** | α = {alpha:.2f}, β = {1 - alpha:.2f} ({preset_note}) |",
        f"| FSS (feature similarity) | {result.fss:.4f} | {result.fss_method}, {layers} |",
        f"| AOAg (output agreement) | {aoag_text} | {result.aoag_method}{temperature} |",
    ]
    if result.lm is not None:
        lines[-2] = lines[-2].replace("| FSS (feature similarity) |", "| FSS (token hidden states) |")
        lines[-1] = (f"| AOAg (next-token agreement) | {aoag_text} | {result.aoag_method}{temperature}, "
                     "mean over counted tokens |")
        lines.extend(_lm_rows(result.lm))
    if result.quality is not None:
        lines.extend(_quality_rows(result.quality))
    size = f"N = {result.num_examples} examples"
    rows = result.num_examples
    if result.lm is not None:
        rows = int(result.lm.get("num_tokens") or 0)
        size = f"N = {result.num_examples} texts, {rows} counted tokens"
    lines += ["", f"{size} · task preset: **{result.task}** · {result.source}"]
    notes = list(result.notes)
    if rows < SMALL_N and result.fss_method == "linear_cka":
        notes.append(f"Only {rows} {'counted tokens' if result.lm is not None else 'examples'}: linear CKA is biased upwards when N is small compared "
                     "with the feature width; use more examples or the debiased_cka method.")
    lines += [f"\n> {note}" for note in notes]
    return "\n".join(lines)
