"""Per-process streaming state: the core accumulators fed batch by batch, and their merge.

One :class:`Streams` per process holds the accumulators of every mapped layer pair, the cross-layer
matrix and the output agreement, plus the small per-example rows (indices, logits, labels, and the
pooled features with ``keep_arrays=True``). :func:`merge` adds the states of all processes (in process
order) and puts the rows back in example order. :func:`real_rows` tells which rows of a batch are real
under ``accelerate``'s even-batches padding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..agreement import ClassificationAgreementAccumulator, RegressionAgreementAccumulator
from ..similarity import CosineAccumulator, CrossLayerCKAAccumulator, LinearCKAAccumulator
from .inputs import ModelOutputs
from .pooling import Pooling, pool_hidden_states

__all__ = [
    "FLUSH_ROWS", "IndexRange", "PooledBatch", "Streams", "collate_indices", "merge", "pool_outputs", "real_rows",
]

#: Pooled rows are added to the accumulators in chunks of at least this many (see :class:`Streams`).
FLUSH_ROWS = 256


class IndexRange(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Example indices in processing order (``0..n-1``, or a given permutation such as the
    length-grouped order): the dataloader shards indices, the texts are read per batch."""

    def __init__(self, n: int, order: np.ndarray | None = None) -> None:
        self.n = n
        self.order = order

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i if self.order is None else int(self.order[i])


@dataclass
class PooledBatch:
    """One model's pooled outputs for a batch: ``features[layer]`` ``(B, D)`` per hidden-state index,
    and the logits ``(B, C)`` (None when the model has none)."""

    features: dict[int, torch.Tensor]
    logits: torch.Tensor | None


def pool_outputs(outputs: ModelOutputs, layers: Iterable[int], pooling: Pooling) -> PooledBatch:
    """Pools the given hidden states of one model's batch outputs (see :func:`pool_hidden_states`)."""
    return PooledBatch(
        {layer: pool_hidden_states(outputs.hidden_states[layer], outputs.attention_mask, pooling) for layer in layers},
        outputs.logits,
    )


def collate_indices(batch: list[int]) -> torch.Tensor:
    return torch.tensor(batch, dtype=torch.long)


def real_rows(accelerator: Any, batch_len: int) -> int:
    """How many leading rows of this process's batch are real examples (not end-of-data padding).

    ``accelerate`` completes the last round of batches with examples from the start of the dataset
    and ``gather_for_metrics`` keeps the first ``gradient_state.remainder`` rows of the gathered
    (process-ordered) last round; process ``p`` holds rows ``p*B .. (p+1)*B - 1`` of it.
    """
    state = accelerator.gradient_state
    if accelerator.num_processes == 1 or not accelerator.even_batches:
        return batch_len
    if not state.end_of_dataloader or state.remainder <= 0:
        return batch_len
    return max(0, min(batch_len, state.remainder - accelerator.process_index * batch_len))


class _Rows:
    """A preallocated ``(capacity, ...)`` array filled batch by batch (allocated on the first batch)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: np.ndarray | None = None
        self.count = 0

    def add(self, values: np.ndarray | torch.Tensor) -> None:
        n = values.shape[0]
        if self.data is None:
            dtype = np.dtype(np.float64) if isinstance(values, torch.Tensor) else values.dtype
            if dtype.kind in "USO":  # strings: no fixed width
                dtype = np.dtype(object)
            self.data = np.empty((self.capacity, *values.shape[1:]), dtype=dtype)
        elif isinstance(values, np.ndarray) and not np.can_cast(values.dtype, self.data.dtype, "same_kind"):
            self.data = self.data.astype(np.result_type(self.data.dtype, values.dtype))  # e.g. int labels, then floats
        if self.count + n > self.capacity:
            raise RuntimeError(f"More rows than expected ({self.count + n} > {self.capacity}).")
        if isinstance(values, torch.Tensor):  # converts dtype and device without a temporary
            torch.from_numpy(self.data[self.count : self.count + n]).copy_(values.detach())
        else:
            self.data[self.count : self.count + n] = values
        self.count += n

    def view(self, start: int = 0) -> np.ndarray | None:
        return None if self.data is None else self.data[start : self.count]


class Streams:
    """One process's accumulators and kept per-example rows.

    Every buffer is allocated once, on the first batch, at its final size: the per-example rows
    (``capacity`` of them) and a staging area of ``flush_rows + batch_size`` pooled rows per layer.
    Growing lists of small per-batch arrays instead interleave long-lived allocations with the
    models' activations, and the heap fragments: RSS then climbs with N (measured: ~5 KB per
    example on MiniLM) although nothing is retained.

    Args:
        pairs: ``(teacher, student)`` hidden-state index pairs, one CKA accumulator each.
        teacher_layers: teacher hidden states to pool (all of them for the cross-layer matrix).
        student_layers: student hidden states to pool.
        capacity: the most examples this process will see.
        batch_size: the most examples per update.
        fss_method: adds cosine accumulators for ``"cosine"``.
        cross_layer: accumulate the cross-layer CKA matrix over ``teacher_layers x student_layers``.
        agreement: the output-agreement accumulator, or None when a model has no logits.
        keep_arrays: keep the pooled features of the paired layers.
        keep_labels: keep the labels.
        flush_rows: pooled rows are staged and added to the accumulators once at least this many
            are pending (default :data:`FLUSH_ROWS`): each accumulator update allocates and adds
            full ``D x D`` sums (about 46 MB for the 7 x 4 cross-layer matrix of MiniLM), so adding
            256 rows at a time instead of 32 cuts the accumulation cost about 5x.
    """

    def __init__(
        self,
        pairs: list[tuple[int, int]],
        teacher_layers: list[int],
        student_layers: list[int],
        *,
        capacity: int,
        batch_size: int,
        fss_method: str,
        cross_layer: bool,
        agreement: ClassificationAgreementAccumulator | RegressionAgreementAccumulator | None,
        keep_arrays: bool,
        keep_labels: bool,
        flush_rows: int | None = None,
    ) -> None:
        self.pairs = pairs
        self.teacher_layers = teacher_layers
        self.student_layers = student_layers
        self.flush_rows = FLUSH_ROWS if flush_rows is None else flush_rows
        # the debiased estimator's extra sums only where it is asked for (about 8% more per batch)
        self.cka = [LinearCKAAccumulator(track_debiased=fss_method == "debiased_cka") for _ in pairs]
        self.cosine = [CosineAccumulator() for _ in pairs] if fss_method == "cosine" else None
        self.cross = CrossLayerCKAAccumulator() if cross_layer else None
        self.agreement = agreement
        self.keep_labels = keep_labels
        self.rows = {name: _Rows(capacity) for name in ("index", "teacher_logits", "student_logits", "labels")}
        kept = ({t for t, _ in pairs}, {s for _, s in pairs}) if keep_arrays else (set(), set())
        self.features = {
            "teacher": {layer: _Rows(capacity) for layer in sorted(kept[0])},
            "student": {layer: _Rows(capacity) for layer in sorted(kept[1])},
        }
        staging = self.flush_rows + batch_size
        self._staged = {
            "teacher": {layer: _Rows(staging) for layer in teacher_layers},
            "student": {layer: _Rows(staging) for layer in student_layers},
        }
        self._flushed_logits = 0  # rows of the kept logits already given to the agreement accumulator

    def skip(self, batch: Any) -> None:
        """Nothing to add: every example of a classification batch runs."""

    def update(self, teacher: PooledBatch, student: PooledBatch, batch: Any) -> None:
        """Keeps the per-example rows of a pooled batch and stages it for the accumulators (added by
        :meth:`flush` every ``flush_rows`` rows and at the end).

        The teacher's pooled batch may be shared by several students' streams (it is only read):
        the teacher runs once per batch for all of them, or is replayed from a cache.

        Args:
            teacher: the teacher's pooled features (at least ``teacher_layers``) and logits.
            student: the student's pooled features (at least ``student_layers``; its own
                tokenisation) and logits.
            batch: the prepared batch (:class:`~knowledge_retention.extraction.tasks.base.Batch`): its
                ``B`` dataset ``indices`` and ``labels`` (or None).
        """
        indices, labels = batch.indices, batch.labels
        for role, pooled_batch in (("teacher", teacher), ("student", student)):
            for layer, staged in self._staged[role].items():
                pooled = pooled_batch.features[layer]
                staged.add(pooled)
                if layer in self.features[role]:
                    self.features[role][layer].add(pooled)
        if self.agreement is not None:
            assert teacher.logits is not None and student.logits is not None
            self.rows["teacher_logits"].add(teacher.logits)
            self.rows["student_logits"].add(student.logits)
        self.rows["index"].add(np.asarray(indices, dtype=np.int64))
        if self.keep_labels:
            assert labels is not None
            self.rows["labels"].add(np.asarray(labels))
        if self._staged["teacher"][self.teacher_layers[0]].count >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Adds the staged rows to the accumulators and empties the staging area."""
        first = self._staged["teacher"][self.teacher_layers[0]]
        if first.count == 0:
            return
        t = {i: self._staged["teacher"][i].view() for i in self.teacher_layers}
        s = {j: self._staged["student"][j].view() for j in self.student_layers}
        for k, (i, j) in enumerate(self.pairs):
            self.cka[k].update(t[i], s[j])
            if self.cosine is not None:
                self.cosine[k].update(t[i], s[j])
        if self.cross is not None:
            self.cross.update([t[i] for i in self.teacher_layers], [s[j] for j in self.student_layers])
        if self.agreement is not None:
            self.agreement.update(self.rows["teacher_logits"].view(self._flushed_logits),
                                  self.rows["student_logits"].view(self._flushed_logits))
            self._flushed_logits = self.rows["teacher_logits"].count
        for staged in (*self._staged["teacher"].values(), *self._staged["student"].values()):
            staged.count = 0

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        """This process's states (CKA as state dicts) and rows, ready for ``gather_object``."""
        self.flush()
        rows = {k: v.view() for k, v in self.rows.items()}
        features = {role: {layer: rows_.view() for layer, rows_ in per.items() if rows_.count}
                    for role, per in self.features.items()}
        return {
            "cka": [acc.state_dict() for acc in self.cka],
            "cosine": self.cosine,
            "cross": self.cross,
            "agreement": self.agreement,
            "rows": rows,
            "features": features,
            "counters": counters,
        }


def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds the states of all processes (in process order) and concatenates their rows by example index."""
    first = payloads[0]
    if len(payloads) == 1:  # one process: its states as they are (no copy of the D x D sums)
        cka = [LinearCKAAccumulator.from_state_dict(state) for state in first["cka"]]
        cosine, cross, agreement = first["cosine"], first["cross"], first["agreement"]
        counters = dict(first["counters"])
    else:
        cka, cosine, cross, agreement, counters = _add_states(payloads)
    index = np.concatenate([p["rows"]["index"] for p in payloads if p["rows"]["index"] is not None])
    order = np.argsort(index, kind="stable")

    def rows(key: str) -> np.ndarray | None:
        parts = [p["rows"][key] for p in payloads if p["rows"][key] is not None]
        return np.concatenate(parts)[order] if parts else None

    features: dict[str, dict[int, np.ndarray]] = {"teacher": {}, "student": {}}
    for role in features:
        for layer in sorted({layer for p in payloads for layer in p["features"][role]}):
            parts = [p["features"][role][layer] for p in payloads if layer in p["features"][role]]
            features[role][layer] = np.concatenate(parts)[order]
    return {
        "cka": cka, "cosine": cosine, "cross": cross, "agreement": agreement, "counters": counters,
        "index": index[order], "teacher_logits": rows("teacher_logits"), "student_logits": rows("student_logits"),
        "labels": rows("labels"), "features": features,
    }


def _add_states(payloads: list[dict[str, Any]]) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """Fresh accumulators plus every process's states, in process order."""
    first = payloads[0]
    cka = [LinearCKAAccumulator() for _ in first["cka"]]
    cosine = None if first["cosine"] is None else [CosineAccumulator() for _ in first["cosine"]]
    cross = None if first["cross"] is None else CrossLayerCKAAccumulator()
    agreement = first["agreement"]
    if agreement is not None:
        agreement = type(agreement)(**({"temperature": agreement.temperature, "inputs": agreement.inputs}
                                       if isinstance(agreement, ClassificationAgreementAccumulator) else {}))
    counters: dict[str, Any] = {}
    for p in payloads:
        for k, state in enumerate(p["cka"]):
            cka[k] += LinearCKAAccumulator.from_state_dict(state)
        if cosine is not None:
            for k, acc in enumerate(p["cosine"]):
                cosine[k] += acc
        if cross is not None:
            cross += p["cross"]
        if agreement is not None:
            agreement += p["agreement"]
        for key, value in p["counters"].items():
            counters[key] = counters.get(key, 0) + value
    return cka, cosine, cross, agreement, counters
