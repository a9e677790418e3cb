"""A context manager that leaves the random generators as it found them."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Runs the block, then restores Python's, NumPy's and torch's (CPU and CUDA) global random states.

    An evaluation during training draws from the global generators (every ``DataLoader`` iterator
    takes a base seed from torch's), which shifts the training's batch order and dropout afterwards;
    inside this block it does not.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an extra
        torch = None  # type: ignore[assignment]
    torch_state = torch.get_rng_state() if torch is not None else None
    cuda_states = torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if torch is not None and torch_state is not None:
            torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
