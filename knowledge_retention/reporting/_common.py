"""Small helpers shared by the report's modules: reading a result, names of models, texts, formatting."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..diagnostics.summary import CLASSIFICATION_TASKS

__all__ = ["CLASSIFICATION_TASKS", "array", "get", "is_causal_lm", "model_name", "texts_from"]


def get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise; ``default`` when absent or None."""
    if obj is None:
        return default
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def array(value: Any) -> np.ndarray | None:
    """A numpy array of ``value`` (torch tensors detached to the CPU); None stays None."""
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def is_causal_lm(result: Any) -> bool:
    """Whether ``result`` is a ``task="causal-lm"`` result (it has the token-level ``lm`` section)."""
    return bool(get(result, "lm")) or get(result, "task") == "causal-lm" \
        or (get(result, "options", {}) or {}).get("task") == "causal-lm"


def model_name(model: Any) -> str | None:
    """A path as given, a model's ``config.name_or_path``, else its class name; None for None."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    config = getattr(model, "config", None)
    name = getattr(config, "name_or_path", None)
    return str(name) if name else type(model).__name__


def texts_from(dataset: Any, column: str, indices: Sequence[int]) -> list[str]:
    """The ``column`` texts of ``dataset`` rows ``indices`` (HF Dataset, dict of lists, list of strings, rows)."""
    if isinstance(dataset, Sequence) and not isinstance(dataset, str) and dataset and isinstance(dataset[0], str):
        return [dataset[int(i)] for i in indices]
    try:
        values = dataset[column]
        return [str(values[int(i)]) for i in indices]
    except (KeyError, TypeError, IndexError):
        return [str(dataset[int(i)][column]) for i in indices]


def package_version() -> str:
    from .. import __version__

    return str(__version__)


def module_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", None))
