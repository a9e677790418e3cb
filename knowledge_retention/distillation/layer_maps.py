"""Which teacher layer teaches (or initialises) which student layer.

Two kinds of index are used, and every function says which one it returns:

* **layer numbers** (1-based, as in the papers and in ``output_hidden_states``): layer ``0`` is the
  embedding output, layer ``l`` is the output of encoder block ``l``;
* **block indices** (0-based): positions in ``model.bert.encoder.layer`` used to copy weights.
"""

from __future__ import annotations

from typing import Literal

from .._validation import InputError, InputTypeError

LayerMapStrategy = Literal["skip", "lower", "last"]

__all__ = [
    "LayerMapStrategy",
    "every_other_layer_indices",
    "last_layer_map",
    "layer_map",
    "lower_layer_indices",
    "lower_layer_map",
    "skip_layer_map",
]


def _check_depths(teacher_layers: int, student_layers: int) -> None:
    for name, value in (("teacher_layers", teacher_layers), ("student_layers", student_layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputTypeError(f"`{name}` must be an int, got {type(value).__name__}")
        if value < 1:
            raise InputError(f"`{name}` must be >= 1, got {value}")
    if student_layers > teacher_layers:
        raise InputError(
            f"`student_layers` must be <= `teacher_layers` ({teacher_layers}), got {student_layers}"
        )


def skip_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    r"""Uniform ("skip") map, TinyBERT's :math:`g(m) = m \cdot N / M` and PKD-Skip.

    .. math::
        g(m) = \left\lfloor \frac{m N}{M} + \frac{1}{2} \right\rfloor, \qquad m = 1, \dots, M

    which is exactly :math:`m N / M` when :math:`M` divides :math:`N` (12 -> 6 gives 2, 4, ..., 12) and
    rounds half up otherwise. The top student layer always maps to the top teacher layer.

    Args:
        teacher_layers: Teacher depth :math:`N`.
        student_layers: Student depth :math:`M \le N`.

    Returns:
        Teacher layer numbers (1-based) for student layers ``1..M``.

    Example:
        >>> skip_layer_map(12, 6)
        [2, 4, 6, 8, 10, 12]
        >>> skip_layer_map(6, 4)
        [2, 3, 5, 6]
    """
    _check_depths(teacher_layers, student_layers)
    return [(2 * m * teacher_layers + student_layers) // (2 * student_layers) for m in range(1, student_layers + 1)]


def lower_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """"Lower layers" map: student layer ``m`` learns from teacher layer ``m``.

    Args:
        teacher_layers: Teacher depth ``N``.
        student_layers: Student depth ``M <= N``.

    Returns:
        Teacher layer numbers (1-based) ``[1, ..., M]``.

    Example:
        >>> lower_layer_map(6, 3)
        [1, 2, 3]
    """
    _check_depths(teacher_layers, student_layers)
    return list(range(1, student_layers + 1))


def last_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """PKD-Last map: the student's ``M`` layers learn from the teacher's top ``M`` layers.

    Args:
        teacher_layers: Teacher depth ``N``.
        student_layers: Student depth ``M <= N``.

    Returns:
        Teacher layer numbers (1-based) ``[N - M + 1, ..., N]``.

    Example:
        >>> last_layer_map(12, 6)
        [7, 8, 9, 10, 11, 12]
    """
    _check_depths(teacher_layers, student_layers)
    return list(range(teacher_layers - student_layers + 1, teacher_layers + 1))


def layer_map(teacher_layers: int, student_layers: int, *, strategy: LayerMapStrategy = "skip") -> list[int]:
    """Dispatch to :func:`skip_layer_map`, :func:`lower_layer_map` or :func:`last_layer_map`.

    Args:
        teacher_layers: Teacher depth ``N``.
        student_layers: Student depth ``M <= N``.
        strategy: ``"skip"`` (uniform), ``"lower"`` or ``"last"``.

    Returns:
        Teacher layer numbers (1-based) for student layers ``1..M``.

    Raises:
        ValueError: for an unknown ``strategy``.

    Example:
        >>> layer_map(6, 3, strategy="skip")
        [2, 4, 6]
    """
    maps = {"skip": skip_layer_map, "lower": lower_layer_map, "last": last_layer_map}
    if strategy not in maps:
        raise InputError(f"`strategy` must be one of {sorted(maps)}, got {strategy!r}")
    return maps[strategy](teacher_layers, student_layers)


def every_other_layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    r"""Encoder blocks a DistilBERT-style student copies: every ``N/M``-th block from the bottom.

    .. math::
        i_j = \left\lfloor \frac{j N}{M} \right\rfloor, \qquad j = 0, \dots, M - 1

    (12 -> 6 copies blocks 0, 2, ..., 10; 6 -> 3 copies 0, 2, 4). DistilBERT itself copied
    ``[0, 2, 4, 7, 9, 11]``; pass explicit indices to the student builder to reproduce that.

    Args:
        teacher_layers: Teacher depth ``N``.
        student_layers: Student depth ``M <= N``.

    Returns:
        Block indices (0-based).

    Example:
        >>> every_other_layer_indices(12, 6)
        [0, 2, 4, 6, 8, 10]
        >>> every_other_layer_indices(6, 3)
        [0, 2, 4]
    """
    _check_depths(teacher_layers, student_layers)
    return [j * teacher_layers // student_layers for j in range(student_layers)]


def lower_layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    """Encoder blocks a PKD student copies: the bottom ``M`` blocks.

    Args:
        teacher_layers: Teacher depth ``N``.
        student_layers: Student depth ``M <= N``.

    Returns:
        Block indices (0-based) ``[0, ..., M - 1]``.

    Example:
        >>> lower_layer_indices(12, 6)
        [0, 1, 2, 3, 4, 5]
    """
    _check_depths(teacher_layers, student_layers)
    return list(range(student_layers))
