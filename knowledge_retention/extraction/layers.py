"""Which teacher hidden state is compared with which student hidden state.

Indices here are **hidden-state indices**, as in ``outputs.hidden_states`` with
``output_hidden_states=True``: ``0`` is the embedding output and ``l`` the output of transformer
block ``l``, so a model with ``L`` blocks has ``L + 1`` hidden states and ``L`` is its final layer.
Negative indices count from the end (``-1`` is the final layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .._validation import InputError, InputTypeError

LayerPreset = Literal["final", "all", "uniform"]
LayerSpec = LayerPreset | Sequence[tuple[int, int]]
LAYER_PRESETS: tuple[str, ...] = ("final", "all", "uniform")

__all__ = ["LAYER_PRESETS", "LayerPreset", "LayerSpec", "layer_names", "resolve_layer_pairs", "uniform_layer_mapping"]


def uniform_layer_mapping(
    n_teacher: int, n_student: int, *, include_embeddings: bool = False
) -> list[tuple[int, int]]:
    r"""The PKD-Skip / TinyBERT uniform map: student block :math:`j` is paired with teacher block :math:`g(j)`.

    .. math:: g(j) = \left\lfloor \frac{j N}{M} + \frac{1}{2} \right\rfloor, \qquad j = 1, \dots, M

    which is TinyBERT's :math:`j N / M` when :math:`M` divides :math:`N` (12 -> 6 pairs student
    layer 1 with teacher layer 2, ..., 6 with 12). The formula itself lives in
    :func:`knowledge_retention.distillation.layer_maps.skip_layer_map`; this adds the pairing.

    Args:
        n_teacher: number of teacher transformer blocks :math:`N` (hidden states minus one).
        n_student: number of student blocks :math:`M \le N`.
        include_embeddings: also pair the two embedding outputs (hidden state 0 with 0).

    Returns:
        ``(teacher_index, student_index)`` hidden-state pairs, ``M`` of them (``M + 1`` with
        embeddings), ordered by student layer.

    Raises:
        TypeError: a depth is not an int.
        ValueError: a depth is < 1, or the student is deeper than the teacher.

    Example:
        >>> uniform_layer_mapping(12, 6)
        [(2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]
        >>> uniform_layer_mapping(6, 3, include_embeddings=True)
        [(0, 0), (2, 1), (4, 2), (6, 3)]
    """
    from ..distillation.layer_maps import skip_layer_map

    teacher_layers = skip_layer_map(n_teacher, n_student)
    pairs = [(t, j) for j, t in enumerate(teacher_layers, start=1)]
    return [(0, 0), *pairs] if include_embeddings else pairs


def _normalise(index: object, count: int, role: str, where: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise InputTypeError(f"`layers`{where}: the {role} layer index must be an int, got {type(index).__name__}.")
    if not -count <= index < count:
        raise InputError(
            f"`layers`{where}: {role} layer {index} is out of range; the {role} has {count} hidden states "
            f"(0 = embeddings ... {count - 1} = final layer; negative indices count from the end)."
        )
    return index % count


def resolve_layer_pairs(layers: LayerSpec, n_teacher_states: int, n_student_states: int) -> list[tuple[int, int]]:
    """Turns a layer choice into explicit ``(teacher, student)`` hidden-state index pairs.

    Args:
        layers: ``"final"`` (the two final layers), ``"uniform"`` (:func:`uniform_layer_mapping`
            over the transformer blocks), ``"all"`` (every student hidden state, embeddings
            included, with its uniformly mapped teacher state: the identity when the depths are
            equal), or an explicit list of ``(teacher_index, student_index)`` pairs.
        n_teacher_states: number of teacher hidden states (blocks + 1).
        n_student_states: number of student hidden states (blocks + 1).

    Returns:
        Pairs of non-negative hidden-state indices.

    Raises:
        TypeError: ``layers`` is neither a preset name nor a sequence of int pairs.
        ValueError: an unknown preset, an empty list, or an index out of range.

    Example:
        >>> resolve_layer_pairs("final", 13, 7)
        [(12, 6)]
        >>> resolve_layer_pairs([(-1, -1), (0, 0)], 7, 4)
        [(6, 3), (0, 0)]
    """
    if isinstance(layers, str):
        if layers not in LAYER_PRESETS:
            raise InputError(
                f"`layers` must be one of {list(LAYER_PRESETS)} or a list of (teacher, student) index pairs, "
                f"got {layers!r}."
            )
        if layers == "final":
            return [(n_teacher_states - 1, n_student_states - 1)]
        if n_student_states > n_teacher_states:
            raise InputError(
                f"`layers={layers!r}` maps each student layer to a teacher layer, which needs a student no deeper "
                f"than the teacher; got {n_teacher_states} teacher and {n_student_states} student hidden states. "
                "Pass an explicit list of (teacher, student) pairs."
            )
        if n_student_states < 2:
            raise InputError(f"`layers={layers!r}` needs a student with at least one transformer block.")
        return uniform_layer_mapping(
            n_teacher_states - 1, n_student_states - 1, include_embeddings=layers == "all"
        )
    if not isinstance(layers, Sequence) or isinstance(layers, bytes):
        raise InputTypeError(
            f"`layers` must be one of {list(LAYER_PRESETS)} or a list of (teacher, student) index pairs, "
            f"got {type(layers).__name__}."
        )
    if len(layers) == 0:
        raise InputError("`layers` is an empty list; give at least one (teacher, student) pair.")
    pairs: list[tuple[int, int]] = []
    for k, pair in enumerate(layers):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise InputTypeError(f"`layers[{k}]` must be a (teacher_index, student_index) pair, got {pair!r}.")
        pairs.append(
            (
                _normalise(pair[0], n_teacher_states, "teacher", f"[{k}]"),
                _normalise(pair[1], n_student_states, "student", f"[{k}]"),
            )
        )
    return pairs


def layer_names(n_states: int) -> list[str]:
    """Readable names of ``n_states`` hidden states: ``embeddings``, ``layer_1``, ..., ``layer_{n-1}``.

    Example:
        >>> layer_names(3)
        ['embeddings', 'layer_1', 'layer_2']
    """
    return ["embeddings", *(f"layer_{i}" for i in range(1, n_states))]
