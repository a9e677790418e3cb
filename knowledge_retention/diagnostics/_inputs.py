"""Validation shared by the diagnostics: gold labels, predictions, per-model probabilities.

Built on :mod:`knowledge_retention._validation` and :func:`knowledge_retention.agreement.log_probabilities`,
so logits are checked (and tempered) exactly as the KRS itself checks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import ArrayLike, InputError, InputTypeError, as_float_array, to_numpy
from ..agreement import InputKind, log_probabilities


def as_labels(value: ArrayLike, name: str, *, num_classes: int | None = None) -> np.ndarray:
    """Returns ``value`` as a 1-D int64 array of class indices (``0 <= y < num_classes``).

    Floats are accepted when they hold whole numbers (``1.0``); booleans count as 0/1.

    Raises:
        TypeError: strings, objects, or non-integer floats.
        ValueError: not 1-D, empty, NaN, negative (``-1`` marks unlabelled rows in GLUE test splits:
            drop them or pass no labels), or ``>= num_classes``.
    """
    array = to_numpy(value, name)
    if array.ndim != 1:
        raise InputError(f"`{name}` must be 1-D class indices of shape (N,), got shape {array.shape}.")
    if array.shape[0] == 0:
        raise InputError(f"`{name}` needs at least 1 example, got 0.")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"`{name}` contains NaN or Inf; class labels must be finite whole numbers.")
        if not np.all(array == np.round(array)):
            raise InputTypeError(f"`{name}` must be integer class labels, got non-integer floats (probabilities?).")
    elif array.dtype.kind not in "biu":
        raise InputTypeError(f"`{name}` must be integer class labels, got dtype {array.dtype}.")
    labels = array.astype(np.int64)
    if labels.min() < 0:
        raise InputError(
            f"`{name}` contains negative labels (min {labels.min()}); -1 usually marks unlabelled rows. "
            "Drop them, or pass no labels for teacher-relative figures only."
        )
    if num_classes is not None and labels.max() >= num_classes:
        raise InputError(
            f"`{name}` goes up to {labels.max()} but the models predict {num_classes} classes (0..{num_classes - 1})."
        )
    return labels


def as_predictions(value: ArrayLike, name: str) -> np.ndarray:
    """Predicted classes: 1-D class indices as they are, or the row-wise argmax of ``(N, C)`` scores."""
    array = to_numpy(value, name)
    if array.ndim == 2:
        return np.argmax(as_float_array(array, name, ndim=2), axis=1).astype(np.int64)
    return as_labels(array, name)


def probabilities(
    logits: ArrayLike, name: str, *, temperature: float = 1.0, inputs: InputKind = "logits"
) -> np.ndarray:
    """``softmax(z / T)`` as an ``(N, C)`` float64 array, validated by ``agreement.log_probabilities``."""
    return np.exp(log_probabilities(logits, name, temperature=temperature, inputs=inputs))


def check_lengths(arrays: Sequence[tuple[str, int]]) -> None:
    """Raises ``ValueError`` unless every named length is the same (the same examples)."""
    lengths = dict(arrays)
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"`{k}`: {v}" for k, v in lengths.items())
        raise InputError(f"All inputs must describe the same examples (same number of rows); got {listing}.")


def check_int(value: int, name: str, *, minimum: int = 1) -> int:
    """Returns ``value`` if it is an int ``>= minimum`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise InputError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)
