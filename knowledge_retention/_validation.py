"""Input validation shared by every numeric module.

Two tiers, as in scikit-learn: parameters first (names, ranges, choices), then the data
(type, shape, finiteness).  Every error names the argument, what was expected and what arrived.
Torch tensors are accepted without importing torch here: anything with ``detach``/``cpu``/``numpy``
is converted on the CPU, bf16/fp16 going through float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, torch tensor, nested lists


class InputError(ValueError):
    """A bad argument or input, refused by the package's own validation.

    Every entry point (the functions, the evaluate module, the CLI, the Space, the report) raises this
    type, or :class:`InputTypeError`, for a user's mistake; the CLI maps exactly these to exit code 2,
    so a bug elsewhere (any other exception) is never reported as the user's fault.
    """


class InputTypeError(InputError, TypeError):
    """An input of the wrong kind (``None``, a string, a ragged list, a complex array)."""


def to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    """Converts numpy arrays, torch tensors and (nested) lists to a numpy array.

    Raises:
        TypeError: ``value`` is None, a string, a ragged nested list or an object array.
    """
    if value is None:
        raise TypeError(f"`{name}` is required, got None.")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be an array of numbers, got a {type(value).__name__}.")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        tensor = value.detach().cpu()
        if str(getattr(tensor, "dtype", "")) in {"torch.bfloat16", "torch.float16"}:
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise TypeError(
            f"`{name}` must be a rectangular array (every row the same length); could not convert it: {err}"
        ) from None
    if array.dtype == object:
        raise TypeError(
            f"`{name}` must be a rectangular numeric array, got an object array (ragged rows or mixed types)."
        )
    return array


def as_float_array(
    value: ArrayLike,
    name: str,
    *,
    ndim: int | Sequence[int] = 2,
    min_rows: int = 1,
    dtype: type = np.float64,
    check_finite: bool = True,
) -> np.ndarray:
    """Returns ``value`` as a finite float array with the expected number of dimensions.

    Args:
        value: array-like input.
        name: the argument's name, used in error messages.
        ndim: allowed number of dimensions (one int or a sequence of ints).
        min_rows: the smallest allowed size of the first dimension.
        dtype: output float dtype (float64 by default: accumulation happens in float64).
        check_finite: look for NaN/Inf (callers that detect them more cheaply afterwards, e.g. in
            the sums they compute anyway, pass False and call :func:`check_finite_values` on failure).

    Raises:
        TypeError: non-numeric input (strings, booleans are accepted as 0/1 only via ints).
        ValueError: wrong number of dimensions, too few rows, empty trailing dimension, NaN or Inf.
    """
    array = to_numpy(value, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold real numbers, got dtype {array.dtype}.")
    if array.ndim not in allowed:
        wanted = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"`{name}` must be {wanted}, got an array of shape {array.shape} ({array.ndim}-D).")
    if array.ndim >= 1 and array.shape[0] < min_rows:
        raise ValueError(f"`{name}` needs at least {min_rows} examples (rows), got {array.shape[0]}.")
    if array.ndim >= 2 and 0 in array.shape[1:]:
        raise ValueError(f"`{name}` has an empty dimension: shape {array.shape}.")
    array = np.asarray(array, dtype=dtype)
    if check_finite:
        check_finite_values(array, name)
    return array


def check_finite_values(array: np.ndarray, name: str) -> None:
    """Raises ``ValueError`` naming ``name`` and the count if ``array`` holds NaN or Inf."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"`{name}` contains {bad} NaN or Inf value(s); all values must be finite.")


def check_same_length(teacher: np.ndarray, student: np.ndarray, teacher_name: str, student_name: str) -> None:
    """Raises ``ValueError`` unless both arrays describe the same number of examples."""
    if teacher.shape[0] != student.shape[0]:
        raise ValueError(
            f"`{teacher_name}` and `{student_name}` must describe the same examples: got "
            f"{teacher.shape[0]} rows for the teacher and {student.shape[0]} for the student."
        )


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Returns ``value`` if it is one of ``choices``; raises ``ValueError`` otherwise."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_positive(value: float, name: str) -> float:
    """Returns ``value`` as float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}.")
    return float(value)


def check_unit_interval(value: float, name: str) -> float:
    """Returns ``value`` as float if it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number in [0, 1], got {type(value).__name__}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value}.")
    return float(value)


def as_layer_list(value: ArrayLike | Sequence[ArrayLike], name: str) -> list[ArrayLike]:
    """Normalises one ``(N, D)`` array, a ``(L, N, D)`` stack or a list of ``(N, D_l)`` arrays to a list.

    A list/tuple whose items are themselves arrays (numpy, torch) is a list of layers; a plain
    nested list of numbers is one array.
    """
    if isinstance(value, (list, tuple)) and value and (
        isinstance(value[0], np.ndarray) or hasattr(value[0], "detach")
    ):
        return list(value)
    array = to_numpy(value, name)
    if array.ndim == 3:
        return list(array)
    return [array]
