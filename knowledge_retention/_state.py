"""Reading an accumulator's ``state_dict`` back: every entry checked, a damaged one named.

A state comes from a file, another process or another version: ``from_state_dict`` must refuse a
missing key, a negative count, NaN sums or a matrix of the wrong shape with an
:class:`~knowledge_retention.InputError` that names the entry (``state['tt']``), never a bare
``KeyError``/``AssertionError`` or a wrong number later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._validation import InputError, InputTypeError

__all__ = ["check_state_mapping", "state_float", "state_int", "state_matrix", "state_vector"]

_MISSING = object()


def check_state_mapping(state: Any, owner: str) -> None:
    """Raises :class:`InputTypeError` unless ``state`` is a mapping (a ``state_dict``)."""
    if not isinstance(state, Mapping):
        raise InputTypeError(f"`state` for {owner}.from_state_dict must be a dict (from state_dict()), got {type(state).__name__}.")


def _entry(state: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    if key not in state:
        if default is _MISSING:
            raise InputError(f"`state['{key}']` is missing: the state is damaged or from another accumulator.")
        return default
    return state[key]


def state_int(state: Mapping[str, Any], key: str, *, default: Any = _MISSING, minimum: int | None = None) -> int:
    """``state[key]`` as an int (a count or an exponent), checked."""
    value = _entry(state, key, default)
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "biuf" or not np.isfinite(array) or float(array) != int(array):
        raise InputError(f"`state['{key}']` must be an integer, got {value!r}.")
    number = int(array)
    if minimum is not None and number < minimum:
        raise InputError(f"`state['{key}']` must be >= {minimum}, got {number}.")
    return number


def state_float(state: Mapping[str, Any], key: str, *, default: Any = _MISSING) -> float:
    """``state[key]`` as a finite float, checked."""
    value = _entry(state, key, default)
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "biuf" or not np.isfinite(array):
        raise InputError(f"`state['{key}']` must be a finite number, got {value!r}.")
    return float(array)


def _state_array(state: Mapping[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    value = _entry(state, key)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"`state['{key}']` must be a numeric array, got {type(value).__name__}.") from None
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        wanted = "(" + ", ".join("D" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise InputError(f"`state['{key}']` must have shape {wanted}, got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"`state['{key}']` holds NaN or Inf: the state is damaged.")
    return array


def state_vector(state: Mapping[str, Any], key: str, width: int | None = None) -> np.ndarray:
    """``state[key]`` as a finite float64 vector (of ``width`` entries when given)."""
    return _state_array(state, key, (width,))


def state_matrix(state: Mapping[str, Any], key: str, shape: tuple[int, int]) -> np.ndarray:
    """``state[key]`` as a finite float64 matrix of ``shape``."""
    return _state_array(state, key, shape)
