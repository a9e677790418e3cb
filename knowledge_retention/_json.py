"""One conversion to plain JSON values, shared by the extraction result, the report and the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy to Python, tuples to lists, NaN/Inf to None, dataclasses to dicts, paths to str.

    Example:
        >>> jsonable({"a": np.float64("nan"), "b": (1, np.int64(2)), "c": np.eye(2)})
        {'a': None, 'b': [1, 2], 'c': [[1.0, 0.0], [0.0, 1.0]]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
