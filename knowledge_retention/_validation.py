"""Input validation shared by every numeric module.

Two tiers, as in scikit-learn: parameters first (names, ranges, choices), then the data
(type, shape, finiteness).  Every error names the argument, what was expected and what arrived.
Torch tensors are accepted without importing torch here: anything with ``detach``/``cpu``/``numpy``
is converted on the CPU, bf16/fp16 going through float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class LoadError(InputError, OSError):
    """A model, tokenizer or dataset the user named that cannot be loaded: no such folder, a folder that is
    not a model, a Hub name that cannot be reached. The message names the argument; the CLI exits 3."""


def to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    """Converts numpy arrays, torch tensors and (nested) lists to a numpy array.

    Raises:
        InputTypeError: ``value`` is None, a string, a ragged nested list or an object array.
    """
    if value is None:
        raise InputTypeError(f"`{name}` is required, got None.")
    if isinstance(value, (str, bytes)):
        raise InputTypeError(f"`{name}` must be an array of numbers, got a {type(value).__name__}.")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        if getattr(getattr(value, "device", None), "type", None) == "meta" or getattr(value, "is_meta", False) is True:
            raise InputTypeError(
                f"`{name}` is a tensor on the 'meta' device: it has a shape but no values (a model loaded "
                "with init_empty_weights or device_map='meta'?). Pass tensors that hold data."
            )
        tensor = value.detach().cpu()
        if str(getattr(tensor, "dtype", "")) in {"torch.bfloat16", "torch.float16"}:
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise InputTypeError(
            f"`{name}` must be a rectangular array (every row the same length); could not convert it: {err}"
        ) from None
    if array.dtype == object:
        raise InputTypeError(
            f"`{name}` must be a rectangular numeric array, got an object array (ragged rows or mixed types)."
        )
    return array


def as_float_array(
    value: ArrayLike,
    name: str,
    *,
    ndim: int | Sequence[int] = 2,
    min_rows: int = 1,
    dtype: type | None = np.float64,
    check_finite: bool = True,
) -> np.ndarray:
    """Returns ``value`` as a finite float array with the expected number of dimensions.

    Args:
        value: array-like input.
        name: the argument's name, used in error messages.
        ndim: allowed number of dimensions (one int or a sequence of ints).
        min_rows: the smallest allowed size of the first dimension.
        dtype: output float dtype (float64 by default: accumulation happens in float64); None keeps
            the input's dtype (for callers that convert chunk by chunk).
        check_finite: look for NaN/Inf (callers that detect them more cheaply afterwards, e.g. in
            the sums they compute anyway, pass False and call :func:`check_finite_values` on failure).

    Raises:
        InputTypeError: non-numeric or complex input (booleans are accepted as 0/1).
        InputError: wrong number of dimensions, too few rows, empty trailing dimension, NaN or Inf.
    """
    array = to_numpy(value, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    check_real_dtype(array, name)
    if array.ndim not in allowed:
        wanted = " or ".join(f"{d}-D" for d in allowed)
        raise InputError(f"`{name}` must be {wanted}, got an array of shape {array.shape} ({array.ndim}-D).")
    if array.ndim >= 1 and array.shape[0] < min_rows:
        raise InputError(f"`{name}` needs at least {min_rows} examples (rows), got {array.shape[0]}.")
    if array.ndim >= 2 and 0 in array.shape[1:]:
        raise InputError(f"`{name}` has an empty dimension: shape {array.shape}.")
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    if check_finite:
        check_finite_values(array, name)
    return array


def check_finite_values(array: np.ndarray, name: str) -> None:
    """Raises :class:`InputError` naming ``name`` and the count if ``array`` holds NaN or Inf."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"`{name}` contains {bad} NaN or Inf value(s); all values must be finite.")


def check_same_length(teacher: np.ndarray, student: np.ndarray, teacher_name: str, student_name: str) -> None:
    """Raises :class:`InputError` unless both arrays describe the same number of examples."""
    if teacher.shape[0] != student.shape[0]:
        raise InputError(
            f"`{teacher_name}` and `{student_name}` must describe the same examples: got "
            f"{teacher.shape[0]} rows for the teacher and {student.shape[0]} for the student."
        )


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Returns ``value`` if it is one of ``choices``; raises :class:`InputError` otherwise."""
    if value not in choices:
        raise InputError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_positive(value: float, name: str) -> float:
    """Returns ``value`` as float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"`{name}` must be a finite number > 0, got {value}.")
    return float(value)


def check_integer(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Returns ``value`` as int if it is an integer (a Python or NumPy int; not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}.")
    if minimum is not None and value < minimum:
        raise InputError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_unit_interval(value: float, name: str) -> float:
    """Returns ``value`` as float if it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"`{name}` must be a number in [0, 1], got {type(value).__name__}.")
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"`{name}` must lie in [0, 1], got {value}.")
    return float(value)


def check_real_dtype(array: np.ndarray, name: str) -> None:
    """Raises :class:`InputTypeError` unless ``array`` holds real numbers (bool, int or float).

    Complex input is refused rather than cast: a cast would silently drop the imaginary part.
    """
    if array.dtype.kind == "c":
        raise InputTypeError(
            f"`{name}` must hold real numbers, got complex values (dtype {array.dtype}); casting would drop "
            "the imaginary part. Pass the real part, the magnitude, or both as separate features."
        )
    if array.dtype.kind not in "biuf":
        raise InputTypeError(f"`{name}` must hold real numbers, got dtype {array.dtype}.")


def _is_array_object(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "detach") and hasattr(value, "cpu"))


def as_layers(value: ArrayLike | Sequence[ArrayLike], name: str, *, allow_empty: bool = False) -> list[np.ndarray]:
    """The package's one layout for features: returns one ``(N, D_l)`` numpy array per layer.

    Accepted, at every entry point (the functions, the evaluate module, the CLI, the Space, the report):

    * ``(N, D)``: one layer;
    * ``(N, L, D)``: L layers stacked on the *second* axis (examples first, as the evaluate module
      stores them: ``(L, D)`` per example);
    * a list or tuple of ``(N, D_l)`` arrays (numpy or torch): one per layer, widths may differ.

    Nothing else is guessed: a plain nested list of numbers is one array and read by its number of
    dimensions as above. The arrays keep their dtype (the maths converts, chunk by chunk, to float64);
    ``(N, L, D)`` gives views, not copies.

    ``allow_empty=True`` accepts N = 0 (an empty batch of a stream, which changes nothing).

    Raises:
        InputTypeError: ``None``, strings, ragged or non-numeric input, complex values, a list that
            mixes arrays with other things.
        InputError: any other number of dimensions, an empty list, an empty array, or layers that
            disagree on N.

    Example:
        >>> import numpy as np
        >>> [x.shape for x in as_layers(np.zeros((5, 3, 4)), "teacher_features")]
        [(5, 4), (5, 4), (5, 4)]
    """
    expected = "(N, D) for one layer, (N, L, D) for L layers, or a list of (N, D) arrays (one per layer)"
    if isinstance(value, (list, tuple)) and any(_is_array_object(v) for v in value):
        if not all(_is_array_object(v) for v in value):
            raise InputTypeError(
                f"`{name}` mixes arrays with other values; give {expected}."
            )
        layers = [to_numpy(v, f"{name}[{i}]") for i, v in enumerate(value)]
        for i, layer in enumerate(layers):
            if layer.ndim != 2:
                raise InputError(
                    f"`{name}[{i}]` must be one layer's (N, D) features (a list holds one array per layer); "
                    f"got shape {layer.shape} ({layer.ndim}-D)."
                )
    else:
        if isinstance(value, (list, tuple)) and len(value) == 0:
            raise InputError(f"`{name}` is empty; expected {expected}.")
        array = to_numpy(value, name)
        if array.ndim == 2:
            layers = [array]
        elif array.ndim == 3:
            if array.shape[1] == 0:
                raise InputError(f"`{name}` holds no layers: shape {array.shape} (N, L, D) with L = 0; expected {expected}.")
            layers = list(np.moveaxis(array, 1, 0))  # (N, L, D) -> L views of (N, D)
        else:
            raise InputError(f"`{name}` must be {expected}; got shape {array.shape} ({array.ndim}-D).")
    for i, layer in enumerate(layers):
        label = name if len(layers) == 1 else f"{name}[{i}]"
        check_real_dtype(layer, label)
        if 0 in layer.shape[1:] or (layer.shape[0] == 0 and not allow_empty):
            raise InputError(f"`{label}` is empty: shape {layer.shape}; expected {expected} with N, D >= 1.")
    rows = {layer.shape[0] for layer in layers}
    if len(rows) > 1:
        raise InputError(
            f"The layers of `{name}` must describe the same examples; got {[x.shape[0] for x in layers]} rows."
        )
    return layers


#: The former name of :func:`as_layers`.
as_layer_list = as_layers


def num_rows(value: ArrayLike, name: str, *, ragged: bool = False) -> int:
    """The number of examples (first dimension) of ``value``.

    ``ragged=True`` counts the items of a list or tuple without converting it (detection boxes:
    one ``(M_i, 4)`` array per image).

    Raises:
        InputTypeError: ``None``, strings, non-numeric input.
        InputError: a scalar (no example axis).
    """
    if ragged and isinstance(value, (list, tuple)):
        return len(value)
    array = to_numpy(value, name)
    if array.ndim == 0:
        raise InputError(f"`{name}` must have one row per example; got a scalar ({array.item()!r}).")
    return int(array.shape[0])


#: Relative spread (RMS about the mean / RMS about the origin) at or under which values count as constant:
#: 2**-48 (3.6e-15, 16 float64 ulps). A constant column, centred about a float64 mean, leaves a few ulps
#: of rounding at most; anything above that is a spread float64 resolves (a spread of 1 at a mean offset
#: of 1e12 is 1e-12 and at 1e14 is 1e-14: scored, not refused; at 1e15 the values take a handful of
#: float64 steps and are refused, saying so).
CONSTANT_RELATIVE_SPREAD = 2.0**-48


def is_constant(centred_sum_sq: float, origin_sum_sq: float) -> bool:
    """Whether values are constant up to rounding, judged on their centred spread relative to their own size.

    ``centred_sum_sq`` is :math:`\\sum_i \\lVert x_i - \\bar x\\rVert^2` (computed about a shift, so that it
    carries no cancellation), ``origin_sum_sq`` is :math:`\\sum_i \\lVert x_i\\rVert^2`, the data's own scale
    (both in the same units; ``inf`` for the latter when the offset is beyond float64 in those units).
    Constant when the relative spread is at most :data:`CONSTANT_RELATIVE_SPREAD`: the resolution of
    float64 decides, not the raw magnitude (features with a mean offset of 1e12 and a spread of 1 are
    not constant; an offset of 1e17 and a spread of 1 is, since float64 cannot tell such values apart).
    """
    scale = max(float(origin_sum_sq), float(np.finfo(np.float64).tiny))
    return bool(centred_sum_sq <= CONSTANT_RELATIVE_SPREAD**2 * scale)


def check_not_constant(centred_sum_sq: float, origin_sum_sq: float, name: str) -> None:
    """Raises :class:`InputError` naming ``name`` when :func:`is_constant` (CKA is undefined then)."""
    if is_constant(centred_sum_sq, origin_sum_sq):
        raise InputError(
            f"`{name}` are constant across examples (zero variance after centring, or a spread below float64's "
            f"resolution at their offset: under {CONSTANT_RELATIVE_SPREAD:.1e} of their size): CKA is undefined. "
            "Check that the features differ between examples (e.g. the pooling, the layer, padding)."
        )


def check_cka_examples(n: int, *, debiased: bool = False, what: str = "CKA") -> None:
    """Raises :class:`InputError` unless ``n`` examples can give a meaningful CKA.

    Three at least (four for the debiased estimator): two centred points are always aligned
    (:math:`x_1 - \\bar x = -(x_2 - \\bar x)`, likewise for the student), so with N = 2 CKA is 1 for any
    features, whatever the kernel. Small N above that is allowed; the biased estimator's upward bias
    there is what the report and the Space warn about.
    """
    min_n = 4 if debiased else 3
    if n >= min_n:
        return
    why = ("two centred points are always aligned (x1 - mean = -(x2 - mean) for both models), so CKA "
           "would be 1 for any features" if n == 2 else "CKA compares examples with each other")
    raise InputError(
        f"{what}{' (debiased)' if debiased else ''} needs at least {min_n} examples, got {n}{': ' + why if n < 3 else ''}."
    )


def check_num_examples(counts: Mapping[str, int]) -> int:
    """Returns the common number of examples; raises :class:`InputError` unless all ``counts`` agree.

    Every entry point calls it with the inputs in the same order (features, then outputs), so the
    same mistake reads the same wherever it is made.

    Example:
        >>> check_num_examples({"teacher_features": 3, "teacher_outputs": 3})
        3
    """
    values = list(counts.values())
    if len(set(values)) > 1:
        listing = ", ".join(f"`{name}`: {count}" for name, count in counts.items())
        raise InputError(
            f"Features and outputs must describe the same examples, one row each; got {listing} rows."
        )
    return values[0] if values else 0
