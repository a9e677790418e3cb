"""Length-grouped batching: examples of similar token length in the same batch, so padding costs little.

A batch is padded to its longest example; in dataset order a batch of short sentences is padded to
the one long sentence it happens to hold. Ordering the examples by token length first (longest first,
so an out-of-memory batch shows at once) and cutting that order into batches makes the padded size
of a batch close to its real size. ``accelerate`` then deals the batches round-robin to the
processes, so every process's shard is grouped the same way. The CKA and agreement sums do not
depend on the order of the examples (float64 summation-order differences only), and every
per-example row keeps its dataset index (:func:`~knowledge_retention.extraction.streams.merge`
puts the rows back in example order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inputs import TextSource

__all__ = ["LENGTH_CHUNK", "length_grouped_order", "token_lengths"]

#: Texts tokenised per call when measuring lengths (memory stays flat in N).
LENGTH_CHUNK = 2048


def token_lengths(tokenizer: Any, source: TextSource, limit: int | None, *, chunk: int = LENGTH_CHUNK) -> np.ndarray:
    """The number of tokens of every example as ``tokenizer`` encodes it (special tokens included),
    capped at ``limit`` like the evaluator's own truncation; ``(N,)`` int64."""
    lengths = np.empty(len(source), dtype=np.int64)
    for lo in range(0, len(source), chunk):
        texts, _ = source.batch(range(lo, min(lo + chunk, len(source))))
        ids = tokenizer(texts, truncation=limit is not None, max_length=limit, padding=False)["input_ids"]
        lengths[lo : lo + len(texts)] = [len(row) for row in ids]
    return lengths


def length_grouped_order(lengths: np.ndarray) -> np.ndarray:
    """Example indices sorted by decreasing length; ties keep dataset order (a stable sort).

    Example:
        >>> length_grouped_order(np.array([3, 9, 3, 5])).tolist()
        [1, 3, 0, 2]
    """
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
