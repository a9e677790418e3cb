"""Every diagnostic that the inputs allow, in one dict: what the report, the CLI and the app show.

With gold labels: task quality, calibration and the correctness breakdown; always (monitoring, no
labels): the teacher-relative figures and the examples where the student departs most from the
teacher.  Only calls the functions of the sibling modules; no formula here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import ArrayLike, InputError, check_choice, to_numpy
from ..agreement import InputKind, RegressionAgreementAccumulator
from ..score import TASK_PRESETS
from .calibration import DEFAULT_N_BINS, calibration_summary
from .errors import correctness_breakdown, top_disagreements
from .quality import classification_quality, regression_quality
from .teacher_relative import teacher_relative_summary

CLASSIFICATION_TASKS: tuple[str, ...] = ("classification", "nlp")


def diagnose(
    teacher_outputs: ArrayLike,
    student_outputs: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    texts: Sequence[str] | None = None,
    indices: ArrayLike | None = None,
    task: str = "classification",
    n_bins: int = DEFAULT_N_BINS,
    top_k: int = 10,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> dict[str, Any]:
    """All output-level diagnostics of a student against its teacher (and the gold labels if given).

    Args:
        teacher_outputs: ``(N, C)`` logits for ``classification``/``nlp``; ``(N,)`` or ``(N, K)``
            values for ``regression``.
        student_outputs: the student's, same shape.
        labels: optional gold labels (class indices, or regression targets).
        texts: optional input texts (shown with the top disagreements).
        indices: optional dataset indices of the rows.
        task: ``classification``, ``nlp`` or ``regression``.
        n_bins: calibration bins.
        top_k: how many top disagreements to list.
        temperature: softmax temperature for every probability-based figure.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        ``{"task", "num_examples", "has_labels", "quality", "agreement", "calibration", "errors":
        {"breakdown", "top_disagreements"}, "notes"}``; a section that the inputs do not allow is None
        and ``notes`` says why.
    """
    check_choice(task, "task", tuple(TASK_PRESETS))
    notes: list[str] = []
    out: dict[str, Any] = {"task": task, "has_labels": labels is not None}
    if task == "regression":
        acc = RegressionAgreementAccumulator().update(teacher_outputs, student_outputs)
        out["num_examples"] = acc.n
        out["agreement"] = {"mse": acc.mse}
        out["quality"] = None if labels is None else regression_quality(labels, teacher_outputs, student_outputs)
        out["calibration"] = None
        out["errors"] = {"breakdown": None, "top_disagreements": []}
        notes.append("Regression: no calibration or per-example disagreement listing.")
    elif task in CLASSIFICATION_TASKS:
        agreement = teacher_relative_summary(teacher_outputs, student_outputs, temperature=temperature, inputs=inputs)
        out["agreement"] = agreement
        top = top_disagreements(
            teacher_outputs, student_outputs, k=top_k, labels=labels, texts=texts, indices=indices,
            temperature=temperature, inputs=inputs,
        )
        out["num_examples"] = int(to_numpy(teacher_outputs, "teacher_outputs").shape[0])
        if labels is not None:
            out["quality"] = classification_quality(labels, teacher_outputs, student_outputs)
            out["calibration"] = calibration_summary(
                teacher_outputs, student_outputs, labels, n_bins=n_bins, temperature=temperature, inputs=inputs
            )
            breakdown = correctness_breakdown(labels, teacher_outputs, student_outputs)
        else:
            out["quality"] = out["calibration"] = breakdown = None
        out["errors"] = {"breakdown": breakdown, "top_disagreements": top}
    else:
        raise InputError(f"`task` {task!r} has no output diagnostics here; use classification, nlp or regression.")
    if labels is None:
        notes.append("No gold labels: teacher-relative figures only (no task quality, calibration or error breakdown).")
    if task in CLASSIFICATION_TASKS and out["agreement"].get("confidence_spearman") is None:
        notes.append("Confidence correlations undefined (a model's confidence is constant over the examples).")
    out["notes"] = notes
    return out

