"""Error analysis: where the teacher and the student are right or wrong, and where they part most.

* :func:`correctness_breakdown` splits the examples into four groups against the gold labels:
  both correct, both wrong, only the student wrong (knowledge lost in distillation), only the teacher
  wrong (the student fixed a teacher error).
* :func:`top_disagreements` lists the k examples with the highest
  :math:`\\mathrm{KL}(p^T_i \\Vert p^S_i)` (:func:`knowledge_retention.agreement.per_example_kl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import ArrayLike, InputTypeError, to_numpy
from ..agreement import InputKind, per_example_kl
from ._inputs import as_labels, as_predictions, check_int, check_lengths, probabilities

GROUPS: tuple[str, ...] = ("both_correct", "both_wrong", "only_student_wrong", "only_teacher_wrong")


def correctness_breakdown(
    labels: ArrayLike, teacher_predictions: ArrayLike, student_predictions: ArrayLike
) -> dict[str, Any]:
    """Counts and rates of the four (teacher correct?, student correct?) groups.

    Args:
        labels: ``(N,)`` gold class indices.
        teacher_predictions: ``(N,)`` predicted classes or ``(N, C)`` scores (argmax taken).
        student_predictions: the student's, same layout.

    Returns:
        ``{"num_examples": N, "counts": {group: int}, "rates": {group: float}}`` for the groups
        ``both_correct``, ``both_wrong``, ``only_student_wrong``, ``only_teacher_wrong``; rates sum
        to 1. Fewer ``only_student_wrong`` is better.

    Example:
        >>> correctness_breakdown([0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1])["counts"]
        {'both_correct': 1, 'both_wrong': 1, 'only_student_wrong': 1, 'only_teacher_wrong': 1}
    """
    y = as_labels(labels, "labels")
    t = as_predictions(teacher_predictions, "teacher_predictions")
    s = as_predictions(student_predictions, "student_predictions")
    check_lengths([("labels", len(y)), ("teacher_predictions", len(t)), ("student_predictions", len(s))])
    t_ok, s_ok = t == y, s == y
    masks = {
        "both_correct": t_ok & s_ok,
        "both_wrong": ~t_ok & ~s_ok,
        "only_student_wrong": t_ok & ~s_ok,
        "only_teacher_wrong": ~t_ok & s_ok,
    }
    counts = {k: int(np.sum(m)) for k, m in masks.items()}
    return {"num_examples": int(len(y)), "counts": counts, "rates": {k: c / len(y) for k, c in counts.items()}}


def top_disagreements(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    *,
    k: int = 10,
    labels: ArrayLike | None = None,
    texts: Sequence[str] | None = None,
    indices: ArrayLike | None = None,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
) -> list[dict[str, Any]]:
    """The k examples where the student departs most from the teacher (highest per-example KL).

    Args:
        teacher_logits: ``(N, C)`` teacher logits.
        student_logits: ``(N, C)`` student logits.
        k: how many examples (fewer when N < k).
        labels: optional ``(N,)`` gold labels.
        texts: optional N input texts, reported with each example.
        indices: optional ``(N,)`` dataset indices of the rows (default: the row numbers).
        temperature: softmax temperature for KL and the confidences.
        inputs: ``"logits"`` or ``"probabilities"``.

    Returns:
        A list of at most k dicts, highest KL first (ties: lower row first), each with ``row``,
        ``index``, ``kl`` (nats), ``teacher_prediction``, ``student_prediction``,
        ``teacher_confidence``, ``student_confidence`` (max softmax probability), ``label`` (None
        without labels) and ``text`` (None without texts).

    Example:
        >>> out = top_disagreements([[2.0, 0.0], [2.0, 0.0]], [[2.0, 0.0], [0.0, 2.0]], k=1)
        >>> out[0]["row"], out[0]["teacher_prediction"], out[0]["student_prediction"]
        (1, 0, 1)
    """
    k = check_int(k, "k")
    kl = per_example_kl(teacher_logits, student_logits, temperature=temperature, inputs=inputs)
    p_t = probabilities(teacher_logits, "teacher_logits", temperature=temperature, inputs=inputs)
    p_s = probabilities(student_logits, "student_logits", temperature=temperature, inputs=inputs)
    n = kl.shape[0]
    y = None if labels is None else as_labels(labels, "labels", num_classes=p_t.shape[1])
    idx = np.arange(n) if indices is None else to_numpy(indices, "indices").reshape(-1)
    sizes = [("teacher_logits", n), ("indices", len(idx))]
    if y is not None:
        sizes.append(("labels", len(y)))
    if texts is not None:
        if isinstance(texts, (str, bytes)):
            raise InputTypeError("`texts` must be a sequence of strings (one per example), got a single string.")
        sizes.append(("texts", len(texts)))
    check_lengths(sizes)
    order = np.argsort(-kl, kind="stable")[:k]
    rows = []
    for i in order:
        i = int(i)
        rows.append(
            {
                "row": i,
                "index": idx[i].item() if hasattr(idx[i], "item") else idx[i],
                "kl": float(kl[i]),
                "teacher_prediction": int(np.argmax(p_t[i])),
                "student_prediction": int(np.argmax(p_s[i])),
                "teacher_confidence": float(np.max(p_t[i])),
                "student_confidence": float(np.max(p_s[i])),
                "label": None if y is None else int(y[i]),
                "text": None if texts is None else str(texts[i]),
            }
        )
    return rows
