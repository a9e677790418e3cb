"""The names of the FSS and AOAg methods: one list, imported by every front end.

The maths (:mod:`.similarity`, :mod:`.agreement`, :mod:`.score`), the command line, the Space and the
metric's widget all offer these lists and no copy of their own. This file imports nothing, so the
widget can read it by path where the package is not installed (the exported Hub folder).
"""

from __future__ import annotations

__all__ = [
    "AOAG_METHODS",
    "AOAG_METHODS_BY_TASK",
    "ARRAY_AOAG_METHODS",
    "CLASSIFICATION_METHODS",
    "FSS_METHODS",
    "STREAMING_FSS_METHODS",
    "aoag_methods_for",
]

#: Feature similarity: linear CKA (streams), debiased CKA (streams), RBF CKA (N x N), mean cosine.
FSS_METHODS: tuple[str, ...] = ("linear_cka", "debiased_cka", "rbf_cka", "cosine")
#: The FSS methods computed from additive sums, batch by batch (no rows kept).
STREAMING_FSS_METHODS: tuple[str, ...] = ("linear_cka", "debiased_cka")
#: Output agreement on class distributions.
CLASSIFICATION_METHODS: tuple[str, ...] = ("kl", "js", "top1")
#: Every output agreement measure.
AOAG_METHODS: tuple[str, ...] = (*CLASSIFICATION_METHODS, "mse", "mask_iou", "box_iou")
#: The measures a rectangular array of outputs can feed (all but the ragged boxes of detection).
ARRAY_AOAG_METHODS: tuple[str, ...] = tuple(m for m in AOAG_METHODS if m != "box_iou")
#: The measures that fit each task's outputs (the first is the task's default).
AOAG_METHODS_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_METHODS,
    "nlp": CLASSIFICATION_METHODS,
    "causal-lm": CLASSIFICATION_METHODS,
    "regression": ("mse",),
    "segmentation": ("mask_iou",),
    "detection": ("box_iou",),
}


def aoag_methods_for(tasks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The AOAg methods that fit any of ``tasks``, in the order of :data:`AOAG_METHODS`.

    Example:
        >>> aoag_methods_for(["nlp", "regression"])
        ('kl', 'js', 'top1', 'mse')
    """
    wanted = {m for task in tasks for m in AOAG_METHODS_BY_TASK[task]}
    return tuple(m for m in AOAG_METHODS if m in wanted)
