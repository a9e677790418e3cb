"""Build students from a BERT-like teacher (same model and config classes, fewer or narrower layers).

* :func:`every_other_layer_student` - DistilBERT-style init: embeddings, every ``N/M``-th encoder
  block, pooler and classifier copied from the teacher.
* :func:`lower_layers_student` - PKD init: the teacher's bottom ``M`` blocks.
* :func:`narrow_student` - TinyBERT-style: fewer, narrower layers, random init (all knowledge has to
  come through distillation).

Copying works on the state dict: a student key ``...encoder.layer.{j}.<rest>`` is filled from the
teacher key ``...encoder.layer.{i_j}.<rest>``, every other key from the same key, strictly.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch

from .layer_maps import every_other_layer_indices, lower_layer_indices

__all__ = [
    "copy_layers_student",
    "every_other_layer_student",
    "lower_layers_student",
    "narrow_student",
    "student_config",
    "student_layer_sources",
]

_LAYER_KEY = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def _check_teacher(teacher: Any) -> int:
    from transformers import PreTrainedModel

    if not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"`teacher` must be a transformers PreTrainedModel, got {type(teacher).__name__}")
    layers = getattr(teacher.config, "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise TypeError(f"`teacher.config` must define an int `num_hidden_layers`, got {layers!r}")
    return layers


def student_layer_sources(student_key: str, layer_indices: Sequence[int]) -> str:
    """The teacher state-dict key a student key is copied from.

    Args:
        student_key: a key of the student's state dict.
        layer_indices: teacher block index for each student block.

    Returns:
        The teacher key.

    Example:
        >>> student_layer_sources("bert.encoder.layer.1.output.dense.weight", [0, 2, 4])
        'bert.encoder.layer.2.output.dense.weight'
        >>> student_layer_sources("classifier.bias", [0, 2, 4])
        'classifier.bias'
    """
    match = _LAYER_KEY.search(student_key)
    if match is None:
        return student_key
    source = layer_indices[int(match.group(1))]
    return f"{student_key[: match.start(1)]}{source}{student_key[match.end(1) :]}"


def copy_layers_student(teacher: Any, layer_indices: Sequence[int]) -> Any:
    """A student of the teacher's class keeping the encoder blocks ``layer_indices`` (in that order).

    Args:
        teacher: BERT-like ``PreTrainedModel`` (e.g. ``BertForSequenceClassification``).
        layer_indices: teacher block indices (0-based), one per student block.

    Returns:
        A new model of ``type(teacher)`` with ``len(layer_indices)`` layers; every tensor is a copy.

    Raises:
        ValueError: for an empty or out-of-range ``layer_indices``.
    """
    teacher_layers = _check_teacher(teacher)
    indices = list(layer_indices)
    if not indices or any(
        isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < teacher_layers for i in indices
    ):
        raise ValueError(
            f"`layer_indices` must be a non-empty list of block indices in [0, {teacher_layers}), got {indices}"
        )
    student = type(teacher)(student_config(teacher.config, len(indices)))
    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        source = student_layer_sources(key, indices)
        if source not in teacher_state:
            raise ValueError(f"the teacher has no weight {source!r} to initialise the student's {key!r}")
        state[key] = teacher_state[source].detach().clone()
    student.load_state_dict(state, strict=True)
    return student.to(next(teacher.parameters()).device)


def every_other_layer_student(teacher: Any, num_layers: int) -> Any:
    """DistilBERT-style student: embeddings, blocks ``0, N/M, 2N/M, ...``, pooler and head copied.

    Args:
        teacher: BERT-like ``PreTrainedModel`` with ``N`` layers.
        num_layers: student depth ``M <= N``.

    Returns:
        A model of ``type(teacher)`` with ``M`` layers.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8,
        ...     num_hidden_layers=4, num_attention_heads=2, intermediate_size=16))
        >>> student = every_other_layer_student(teacher, 2)
        >>> torch.equal(student.bert.encoder.layer[1].output.dense.weight,
        ...             teacher.bert.encoder.layer[2].output.dense.weight)
        True
    """
    teacher_layers = _check_teacher(teacher)
    return copy_layers_student(teacher, every_other_layer_indices(teacher_layers, num_layers))


def lower_layers_student(teacher: Any, num_layers: int) -> Any:
    """PKD student: embeddings, the bottom ``M`` blocks, pooler and head copied from the teacher.

    Args:
        teacher: BERT-like ``PreTrainedModel`` with ``N`` layers.
        num_layers: student depth ``M <= N``.

    Returns:
        A model of ``type(teacher)`` with ``M`` layers.
    """
    teacher_layers = _check_teacher(teacher)
    return copy_layers_student(teacher, lower_layer_indices(teacher_layers, num_layers))


def narrow_student(
    teacher_config: Any,
    num_layers: int,
    hidden_size: int,
    intermediate_size: int,
    num_heads: int,
    *,
    seed: int | None = None,
) -> Any:
    """TinyBERT-style student: a randomly initialised, shallower and narrower sequence classifier.

    Vocabulary, position/type embeddings, labels and activation come from ``teacher_config``.
    TinyBERT's attention loss needs ``num_heads`` equal to the teacher's.

    Args:
        teacher_config: the teacher's ``PretrainedConfig`` (e.g. ``BertConfig``).
        num_layers: student depth.
        hidden_size: student width; must be divisible by ``num_heads``.
        intermediate_size: feed-forward width.
        num_heads: attention heads.
        seed: if given, ``torch.manual_seed(seed)`` before the random init.

    Returns:
        ``AutoModelForSequenceClassification.from_config`` of the new config.
    """
    from transformers import AutoModelForSequenceClassification

    config = student_config(
        teacher_config, num_layers, hidden_size=hidden_size, intermediate_size=intermediate_size, num_heads=num_heads
    )
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


def student_config(
    teacher_config: Any,
    num_layers: int,
    *,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_heads: int | None = None,
) -> Any:
    """A copy of ``teacher_config`` with the student's depth (and, optionally, widths and heads).

    Args:
        teacher_config: the teacher's ``PretrainedConfig``.
        num_layers: student depth.
        hidden_size: student width (default: the teacher's).
        intermediate_size: feed-forward width (default: the teacher's).
        num_heads: attention heads (default: the teacher's); must divide ``hidden_size``.

    Returns:
        A new config of the same class.

    Example:
        >>> from transformers import BertConfig
        >>> student_config(BertConfig(), 6).num_hidden_layers
        6
    """
    from transformers import PretrainedConfig

    if not isinstance(teacher_config, PretrainedConfig):
        raise TypeError(f"`teacher_config` must be a transformers PretrainedConfig, got {type(teacher_config).__name__}")
    sizes = {
        "num_layers": num_layers,
        "hidden_size": teacher_config.hidden_size if hidden_size is None else hidden_size,
        "intermediate_size": teacher_config.intermediate_size if intermediate_size is None else intermediate_size,
        "num_heads": teacher_config.num_attention_heads if num_heads is None else num_heads,
    }
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise ValueError(
            f"`hidden_size` ({sizes['hidden_size']}) must be divisible by `num_heads`, got {sizes['num_heads']}"
        )
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = sizes["num_layers"]
    config.hidden_size = sizes["hidden_size"]
    config.intermediate_size = sizes["intermediate_size"]
    config.num_attention_heads = sizes["num_heads"]
    return config
