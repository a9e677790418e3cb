r"""AOAg for dense and box predictions: mask IoU (segmentation) and matched box IoU (detection).

* segmentation (label maps ``(N, H, W)``): mean IoU over the labels present between the teacher's and
  the student's maps, intersections and unions summed over the whole dataset;
* detection (per image, boxes ``(M, 4)`` in ``x1, y1, x2, y2``): teacher and student boxes matched
  one to one by maximum total IoU (Hungarian), per image :math:`\sum \mathrm{IoU}_{matched} / \max(M, K)`
  (unmatched boxes count 0; two empty images agree fully), averaged over images.

Re-exported by :mod:`.agreement`, where :func:`~knowledge_retention.agreement.output_agreement`
dispatches to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._state import check_state_mapping, state_float, state_int
from ._validation import ArrayLike, InputError, InputTypeError, as_float_array, check_integer, to_numpy

__all__ = ["BoxIoUAccumulator", "MaskIoUAccumulator", "box_iou", "box_iou_agreement", "mask_iou_agreement"]


# --- Segmentation: mask IoU ---------------------------------------------------------------------------


def _as_label_map(value: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputTypeError(f"`{name}` must be integer class labels (a label map), got non-integer floats.")
        if array.size and float(np.max(np.abs(array))) > 2.0**53:
            raise InputError(f"`{name}` holds labels beyond 2**53 ({float(np.max(np.abs(array))):.3g}): not class ids.")
        array = array.astype(np.int64)
    if array.dtype.kind not in "biu":
        raise InputTypeError(f"`{name}` must be integer class labels, got dtype {array.dtype}.")
    if array.ndim < 2:
        raise InputError(f"`{name}` must be label maps of shape (N, H, W) (or (N, P)), got shape {array.shape}.")
    return array.astype(np.int64)


@dataclass
class MaskIoUAccumulator:
    r"""Additive state for mask IoU: per label present, the pixels where both models say it, and each model's count.

    IoU of label :math:`c` is :math:`|T_c \cap S_c| / (|T_c| + |S_c| - |T_c \cap S_c|)`, so three counts
    per label suffice (no confusion matrix): memory follows the labels that occur, not their values
    (one pixel labelled 100,000 adds one entry, not 10¹⁰ cells). ``ignore_index`` (e.g. 255, a void
    label) drops every pixel that either model labels so. ``update`` / ``compute`` / ``reset`` /
    ``state_dict`` / ``from_state_dict``; merges with ``+``.
    """

    num_classes: int | None = None
    ignore_index: int | None = None
    labels: np.ndarray | None = None  # sorted labels seen so far
    intersection: np.ndarray | None = None  # pixels labelled c by both models
    teacher_count: np.ndarray | None = None  # pixels labelled c by the teacher
    student_count: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None:
            self.num_classes = check_integer(self.num_classes, "num_classes", minimum=1)
        if self.ignore_index is not None:
            self.ignore_index = check_integer(self.ignore_index, "ignore_index")

    def update(self, teacher_masks: ArrayLike, student_masks: ArrayLike) -> MaskIoUAccumulator:
        """Adds a batch of label maps ``(B, H, W)`` (any trailing shape) of the same shape; B = 0: no-op."""
        t = _as_label_map(teacher_masks, "teacher_masks")
        s = _as_label_map(student_masks, "student_masks")
        if t.shape != s.shape:
            raise InputError(f"`teacher_masks` and `student_masks` must have the same shape, got {t.shape} and {s.shape}.")
        t, s = t.ravel(), s.ravel()
        if self.ignore_index is not None:
            keep = (t != self.ignore_index) & (s != self.ignore_index)
            t, s = t[keep], s[keep]
        if t.size == 0:
            return self
        if t.min() < 0 or s.min() < 0:
            raise InputError("Mask labels must be >= 0 (set ignore_index for a void label such as -1 or 255).")
        top = int(max(t.max(), s.max()))
        if self.num_classes is not None and top >= self.num_classes:
            raise InputError(f"Mask labels go up to {top}, but num_classes={self.num_classes}.")
        labels, codes = np.unique(np.concatenate([t, s]), return_inverse=True)
        code_t, code_s = codes[: t.size], codes[t.size:]
        size = len(labels)
        self._add(labels, np.bincount(code_t[code_t == code_s], minlength=size),
                  np.bincount(code_t, minlength=size), np.bincount(code_s, minlength=size))
        return self

    def _add(self, labels: np.ndarray, inter: np.ndarray, count_t: np.ndarray, count_s: np.ndarray) -> None:
        if self.labels is None:
            self.labels = labels.astype(np.int64)
            self.intersection, self.teacher_count, self.student_count = (
                np.asarray(c, dtype=np.int64).copy() for c in (inter, count_t, count_s))
            return
        union = np.union1d(self.labels, labels)
        sums = [np.zeros(len(union), dtype=np.int64) for _ in range(3)]
        for known, counts in ((self.labels, (self.intersection, self.teacher_count, self.student_count)),
                              (labels, (inter, count_t, count_s))):
            where = np.searchsorted(union, known)
            for total, count in zip(sums, counts, strict=True):
                total[where] += count  # type: ignore[arg-type]
        self.labels = union
        self.intersection, self.teacher_count, self.student_count = sums

    def __iadd__(self, other: MaskIoUAccumulator) -> MaskIoUAccumulator:
        if not isinstance(other, MaskIoUAccumulator):
            raise InputTypeError(f"Only a MaskIoUAccumulator can be added to one, got {type(other).__name__}.")
        if other.labels is not None:
            self._add(other.labels, other.intersection, other.teacher_count, other.student_count)  # type: ignore[arg-type]
        return self

    def __add__(self, other: MaskIoUAccumulator) -> MaskIoUAccumulator:
        merged = MaskIoUAccumulator(num_classes=self.num_classes, ignore_index=self.ignore_index)
        return merged.__iadd__(self).__iadd__(other)

    def reset(self) -> MaskIoUAccumulator:
        """Forgets every batch (``num_classes`` and ``ignore_index`` are kept)."""
        self.labels = self.intersection = self.teacher_count = self.student_count = None
        return self

    def per_label_iou(self) -> dict[int, float]:
        """``{label: IoU}`` for every label present in either model's maps."""
        if self.labels is None or not np.any(self.teacher_count):
            raise InputError("Mask IoU needs at least one labelled pixel, got none.")
        inter = self.intersection.astype(np.float64)  # type: ignore[union-attr]
        union = self.teacher_count + self.student_count - inter  # type: ignore[operator]
        return {int(label): float(i / u) for label, i, u in zip(self.labels, inter, union, strict=True) if u > 0}

    def per_class_iou(self) -> np.ndarray:
        """IoU per class id ``0..max label`` (NaN for classes absent from both models' maps).

        Dense in the class id; for sparse, large label values use :meth:`per_label_iou`.
        """
        ious = self.per_label_iou()
        size = self.num_classes or (max(ious) + 1)
        if size > 2**24:
            raise InputError(f"per_class_iou would hold {size} classes (label {size - 1}); use per_label_iou().")
        dense = np.full(size, np.nan)
        dense[list(ious)] = list(ious.values())
        return dense

    def compute(self) -> float:
        """Mean IoU over the classes present in either model's maps; in [0, 1], higher is better."""
        return float(np.mean(list(self.per_label_iou().values())))

    def state_dict(self) -> dict[str, Any]:
        """The labels present and their counts, with the options."""
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "labels": self.labels,
                "intersection": self.intersection, "teacher_count": self.teacher_count,
                "student_count": self.student_count}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MaskIoUAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "MaskIoUAccumulator")
        acc = cls(num_classes=state.get("num_classes"), ignore_index=state.get("ignore_index"))
        if state.get("labels") is None:
            return acc
        labels = np.asarray(state["labels"])
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or np.any(np.diff(labels) <= 0) or np.any(labels < 0):
            raise InputError("`state['labels']` must be sorted, distinct, non-negative integer labels.")
        counts = []
        for key in ("intersection", "teacher_count", "student_count"):
            value = np.asarray(state.get(key))
            if value.shape != labels.shape or value.dtype.kind not in "iu" or np.any(value < 0):
                raise InputError(f"`state['{key}']` must hold {len(labels)} non-negative pixel counts, one per label.")
            counts.append(value.astype(np.int64))
        if np.any(counts[0] > np.minimum(counts[1], counts[2])):
            raise InputError("`state['intersection']` exceeds a model's count for some label: the state is damaged.")
        acc.labels = labels.astype(np.int64)
        acc.intersection, acc.teacher_count, acc.student_count = counts
        return acc


def mask_iou_agreement(
    teacher_masks: ArrayLike, student_masks: ArrayLike, *, num_classes: int | None = None, ignore_index: int | None = None
) -> float:
    """AOAg for segmentation: mean IoU between the teacher's and the student's label maps.

    Example:
        >>> mask_iou_agreement([[[0, 1], [1, 1]]], [[[0, 1], [0, 1]]])
        0.58333...
    """
    acc = MaskIoUAccumulator(num_classes=num_classes, ignore_index=ignore_index)
    return acc.update(teacher_masks, student_masks).compute()


# --- Detection: matched box IoU -----------------------------------------------------------------------


def _as_boxes(value: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.size == 0:
        return np.zeros((0, 4))
    boxes = as_float_array(array, name, ndim=2)
    if boxes.shape[1] != 4:
        raise InputError(f"`{name}` must have shape (M, 4) as x1, y1, x2, y2, got {boxes.shape}.")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise InputError(f"`{name}` must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1 (got x,y,w,h or swapped corners?).")
    return boxes


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(M, 4)`` and ``(K, 4)`` boxes in x1, y1, x2, y2: an ``(M, K)`` matrix."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class BoxIoUAccumulator:
    """Additive state for matched-box agreement: number of images and the sum of per-image scores.

    ``update`` / ``compute`` / ``reset`` / ``state_dict`` / ``from_state_dict``; merges with ``+``.
    """

    n: int = 0
    total: float = 0.0

    def update(
        self,
        teacher_boxes: Sequence[ArrayLike],
        student_boxes: Sequence[ArrayLike],
        teacher_labels: Sequence[ArrayLike] | None = None,
        student_labels: Sequence[ArrayLike] | None = None,
    ) -> BoxIoUAccumulator:
        """Adds images: lists (one entry per image) of ``(M_i, 4)`` boxes, optional class labels ``(M_i,)``."""
        for value, name in ((teacher_boxes, "teacher_boxes"), (student_boxes, "student_boxes")):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise InputTypeError(f"`{name}` must be a list with one (M_i, 4) array of boxes per image, got {type(value).__name__}.")
        if len(teacher_boxes) != len(student_boxes):
            raise InputError(
                f"`teacher_boxes` and `student_boxes` must list the same images: {len(teacher_boxes)} vs {len(student_boxes)}."
            )
        if (teacher_labels is None) != (student_labels is None):
            raise InputError("Pass both `teacher_labels` and `student_labels`, or neither.")
        for i, (tb, sb) in enumerate(zip(teacher_boxes, student_boxes, strict=True)):
            t = _as_boxes(tb, f"teacher_boxes[{i}]")
            s = _as_boxes(sb, f"student_boxes[{i}]")
            if len(t) == 0 and len(s) == 0:
                score = 1.0
            else:
                iou = box_iou(t, s)
                if teacher_labels is not None and student_labels is not None:
                    tl = to_numpy(teacher_labels[i], f"teacher_labels[{i}]").reshape(-1)
                    sl = to_numpy(student_labels[i], f"student_labels[{i}]").reshape(-1)
                    if len(tl) != len(t) or len(sl) != len(s):
                        raise InputError(f"Image {i}: one label per box expected ({len(t)}/{len(s)} boxes, {len(tl)}/{len(sl)} labels).")
                    iou = np.where(tl[:, None] == sl[None, :], iou, 0.0)
                rows, cols = linear_sum_assignment(iou, maximize=True) if iou.size else ([], [])
                score = float(np.sum(iou[rows, cols])) / max(len(t), len(s))
            self.n += 1
            self.total += score
        return self

    def __iadd__(self, other: BoxIoUAccumulator) -> BoxIoUAccumulator:
        if not isinstance(other, BoxIoUAccumulator):
            raise InputTypeError(f"Only a BoxIoUAccumulator can be added to one, got {type(other).__name__}.")
        self.n += other.n
        self.total += other.total
        return self

    def __add__(self, other: BoxIoUAccumulator) -> BoxIoUAccumulator:
        return BoxIoUAccumulator().__iadd__(self).__iadd__(other)

    def reset(self) -> BoxIoUAccumulator:
        """Forgets every image."""
        self.n, self.total = 0, 0.0
        return self

    def compute(self) -> float:
        """Mean matched-box agreement over images, in [0, 1]."""
        if self.n == 0:
            raise InputError("Box agreement needs at least 1 image, got 0.")
        return self.total / self.n

    def state_dict(self) -> dict[str, Any]:
        """The sums as a flat dict."""
        return {"n": self.n, "total": self.total}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BoxIoUAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "BoxIoUAccumulator")
        acc = cls(n=state_int(state, "n", minimum=0), total=state_float(state, "total"))
        if not 0 <= acc.total <= acc.n * (1 + 1e-9):
            raise InputError(f"`state['total']` must lie in [0, n] (a sum of {acc.n} per-image scores), got {acc.total}.")
        return acc


def box_iou_agreement(
    teacher_boxes: Sequence[ArrayLike],
    student_boxes: Sequence[ArrayLike],
    *,
    teacher_labels: Sequence[ArrayLike] | None = None,
    student_labels: Sequence[ArrayLike] | None = None,
) -> float:
    """AOAg for detection: mean over images of the Hungarian-matched box IoU, normalised by max(M, K).

    Example:
        >>> box_iou_agreement([[[0, 0, 2, 2]]], [[[0, 0, 2, 1]]])
        0.5
    """
    return BoxIoUAccumulator().update(teacher_boxes, student_boxes, teacher_labels, student_labels).compute()
