"""The options of an evaluation, built and validated once (:class:`EvalOptions`).

:func:`~knowledge_retention.extraction.evaluate_pair`, :func:`~knowledge_retention.extraction.evaluate_students`,
:class:`~knowledge_retention.integrations.callbacks.KRSCallback` and the command line all build one
:class:`EvalOptions` from their keyword arguments; the engine and the tasks read it.  A keyword that is
not an option is refused by name (with the closest option), and so is an option that the chosen task
does not use when it is set to anything but its default (the task's ``unused_options`` gives the reason).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from .._validation import InputError, InputTypeError, check_choice, check_positive

__all__ = ["EvalOptions", "MixedPrecision"]

MixedPrecision = Literal["no", "fp16", "bf16"]
_PRECISIONS = ("no", "fp16", "bf16")


def check_count(value: Any, name: str, *, optional: bool) -> int | None:
    """A positive int (or None when ``optional``), refused by name otherwise."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"`{name}` must be a positive int{' or None' if optional else ''}, got {type(value).__name__}.")
    if value < 1:
        raise InputError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


@dataclass(frozen=True)
class EvalOptions:
    """Every option of an evaluation (see :func:`~knowledge_retention.extraction.evaluate_students` for each one).

    Build it with :meth:`build` (validates); the dataclass itself is immutable.
    """

    text_column: str = "sentence"
    label_column: str | None = None
    teacher_tokenizer: Any = None
    layers: Any = "final"
    pooling: str = "cls"
    batch_size: int = 32
    max_length: int | None = None
    max_examples: int | None = None
    task: str | None = None
    alpha: float | None = None
    beta: float | None = None
    fss_method: str = "linear_cka"
    aoag_method: str | None = None
    temperature: float = 1.0
    keep_arrays: bool = False
    accelerator: Any = None
    distributed: bool = False
    mixed_precision: str | None = None
    progress: bool = True
    trust_remote_code: bool = False
    group_by_length: bool = True
    teacher_cache: Any = None
    #: keyword arguments of the teacher's ``from_pretrained`` when it is a path: ``device_map``,
    #: ``max_memory``, ``offload_folder`` (accelerate's big-model inference), ``torch_dtype``...
    teacher_load_kwargs: Mapping[str, Any] | None = None
    # causal-lm
    prompt_column: str | None = None
    generate: Mapping[str, Any] | None = None
    top_k: int = 5
    average: str = "token"
    sequence_pooling: str | None = None
    #: which token-level measures to compute (a subset of token_agreement.TOKEN_MEASURES; None: all)
    measures: Any = None
    # image tasks (extraction/tasks/image.py, detection.py, segmentation.py)
    image_column: str = "image"
    flatten_grid: int | None = None
    return_nodes: Any = None
    detection_threshold: float = 0.5
    pixel_kl: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def build(cls, options: Mapping[str, Any], *, where: str = "evaluate_pair") -> EvalOptions:
        """Validated options from keyword arguments; an unknown keyword is refused by name."""
        known = cls.names()
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise InputTypeError(f"{where}() got an unknown option `{key}`.{hint}")
        opts = cls(**options)
        opts._check()
        object.__setattr__(opts, "_given", frozenset(options))
        return opts

    def given(self, name: str) -> bool:
        """Whether ``name`` was passed to :meth:`build`, even with its default value (``pooling="cls"``
        given for an image model, whose default pooling is ``"mean"``)."""
        return name in getattr(self, "_given", frozenset())

    def with_task(self, task: str) -> EvalOptions:
        new = replace(self, task=task)
        object.__setattr__(new, "_given", getattr(self, "_given", frozenset()))
        return new

    def is_default(self, name: str) -> bool:
        default = next(f.default for f in fields(self) if f.name == name)
        value = getattr(self, name)
        return value is default or (not isinstance(value, np.ndarray) and value == default)

    def _check(self) -> None:
        for name in ("text_column",):
            if not isinstance(getattr(self, name), str):
                raise InputTypeError(f"`{name}` must be a column name (str), got {type(getattr(self, name)).__name__}.")
        for name in ("label_column", "prompt_column"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputTypeError(f"`{name}` must be a column name (str) or None, got {type(value).__name__}.")
        check_count(self.batch_size, "batch_size", optional=False)
        check_count(self.max_length, "max_length", optional=True)
        check_count(self.max_examples, "max_examples", optional=True)
        check_count(self.top_k, "top_k", optional=False)
        check_positive(self.temperature, "temperature")
        if self.mixed_precision is not None:
            check_choice(self.mixed_precision, "mixed_precision", _PRECISIONS)
        for name in ("keep_arrays", "distributed", "progress", "trust_remote_code", "group_by_length"):
            if not isinstance(getattr(self, name), bool):
                raise InputTypeError(f"`{name}` must be a bool (True or False), got {getattr(self, name)!r}.")
        if self.teacher_load_kwargs is not None and not isinstance(self.teacher_load_kwargs, Mapping):
            raise InputTypeError("`teacher_load_kwargs` must be a dict of from_pretrained keyword arguments, got "
                                 f"{type(self.teacher_load_kwargs).__name__}.")
        if self.accelerator is not None:
            from accelerate import Accelerator

            if not isinstance(self.accelerator, Accelerator):
                raise InputTypeError(f"`accelerator` must be an accelerate.Accelerator, got {type(self.accelerator).__name__}.")
            if self.mixed_precision is not None and self.mixed_precision != self.accelerator.mixed_precision:
                raise InputError(
                    f"`mixed_precision={self.mixed_precision!r}` conflicts with the accelerator's "
                    f"mixed_precision={self.accelerator.mixed_precision!r}; set it on the Accelerator only."
                )

    def refuse_unused(self, unused: Mapping[str, str], task: str) -> None:
        """Refuses every option in ``unused`` (name -> reason) that is set to a non-default value."""
        for name, reason in unused.items():
            if not self.is_default(name):
                raise InputError(f"`{name}={getattr(self, name)!r}` is not used by task={task!r}{reason}; leave it unset.")
