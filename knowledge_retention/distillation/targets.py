"""What a distillation method needs from the teacher, computed live or cached once per run.

A :class:`TargetSpec` names the teacher tensors a loss reads; :func:`teacher_targets` cuts them out
of a forward pass; :class:`TrainingTargetCache` runs the frozen teacher once over a training set and
serves the same tensors per batch (re-padded to the batch length), so later epochs and runs skip
the teacher's forward pass. PKD's reference code cached its teacher's predictions the same way.

Target tensors, per batch (``K`` = number of selected layers):

=============  ======================  =========================================
key            shape                   content
=============  ======================  =========================================
``logits``     ``(N, C)``              classifier logits
``cls``        ``(N, K, H)``           [CLS] vector of each layer in ``cls_layers``
``last``       ``(N, L, H)``           last hidden layer, every token
``hidden``     ``(N, K, L, H)``        hidden states of ``hidden_layers`` (0 = embeddings)
``attention``  ``(N, K, A, L, L)``     attention probabilities of ``attention_layers``
=============  ======================  =========================================
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TargetSpec", "TrainingTargetCache", "teacher_targets"]

# token dimensions of each target *per example* (batch dimension removed)
_TOKEN_DIMS: dict[str, tuple[int, ...]] = {
    "logits": (),
    "cls": (),
    "last": (0,),
    "hidden": (1,),
    "attention": (2, 3),
}


@dataclass(frozen=True)
class TargetSpec:
    """Which teacher tensors to extract. Layer numbers are 1-based (0 = embedding output).

    Attributes:
        logits: classifier logits.
        cls_layers: layers whose [CLS] vector is kept (PKD).
        last: the last layer's hidden states, all tokens (DistilBERT cosine loss).
        hidden_layers: layers whose hidden states are kept, all tokens (TinyBERT).
        attention_layers: layers whose attention probabilities are kept (TinyBERT), 1-based.
    """

    logits: bool = False
    cls_layers: tuple[int, ...] = ()
    last: bool = False
    hidden_layers: tuple[int, ...] = ()
    attention_layers: tuple[int, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Target keys this spec produces."""
        present = {
            "logits": self.logits,
            "cls": bool(self.cls_layers),
            "last": self.last,
            "hidden": bool(self.hidden_layers),
            "attention": bool(self.attention_layers),
        }
        return tuple(key for key, on in present.items() if on)

    @property
    def needs_hidden_states(self) -> bool:
        """Whether the forward pass must return ``hidden_states``."""
        return bool(self.cls_layers or self.last or self.hidden_layers)

    @property
    def needs_attentions(self) -> bool:
        """Whether the forward pass must return ``attentions`` (needs eager attention)."""
        return bool(self.attention_layers)

    def covers(self, other: TargetSpec) -> bool:
        """Whether this spec provides everything ``other`` needs (its layers may be a subset of ours)."""
        return (
            (self.logits or not other.logits)
            and (self.last or not other.last)
            and set(other.cls_layers) <= set(self.cls_layers)
            and set(other.hidden_layers) <= set(self.hidden_layers)
            and set(other.attention_layers) <= set(self.attention_layers)
        )

    def union(self, other: TargetSpec) -> TargetSpec:
        """The smallest spec that covers both (layer lists merged and sorted)."""
        return TargetSpec(
            logits=self.logits or other.logits,
            cls_layers=tuple(sorted(set(self.cls_layers) | set(other.cls_layers))),
            last=self.last or other.last,
            hidden_layers=tuple(sorted(set(self.hidden_layers) | set(other.hidden_layers))),
            attention_layers=tuple(sorted(set(self.attention_layers) | set(other.attention_layers))),
        )

    def layers_of(self, key: str) -> tuple[int, ...]:
        """The layer list behind a layered target key (``cls``, ``hidden`` or ``attention``)."""
        return {"cls": self.cls_layers, "hidden": self.hidden_layers, "attention": self.attention_layers}[key]


def teacher_targets(outputs: Any, spec: TargetSpec) -> dict[str, Tensor]:
    """Cut the tensors named by ``spec`` out of a model output (see the module table for shapes).

    Args:
        outputs: a ``transformers`` model output with ``logits`` and, as needed, ``hidden_states``
            and ``attentions``.
        spec: what to extract.

    Returns:
        Dict of detached tensors keyed as in :attr:`TargetSpec.keys`.
    """
    targets: dict[str, Tensor] = {}
    hidden: Any = getattr(outputs, "hidden_states", None)
    if spec.needs_hidden_states and hidden is None:
        raise ValueError("the teacher output has no `hidden_states`; call it with output_hidden_states=True")
    if spec.needs_attentions and not getattr(outputs, "attentions", None):
        raise ValueError(
            "the teacher output has no `attentions`; call it with output_attentions=True and eager attention"
        )
    if spec.logits:
        targets["logits"] = outputs.logits.detach()
    if spec.cls_layers:
        targets["cls"] = torch.stack([hidden[k][:, 0] for k in spec.cls_layers], dim=1).detach()
    if spec.last:
        targets["last"] = hidden[-1].detach()
    if spec.hidden_layers:
        targets["hidden"] = torch.stack([hidden[k] for k in spec.hidden_layers], dim=1).detach()
    if spec.attention_layers:
        attentions = outputs.attentions
        targets["attention"] = torch.stack([attentions[k - 1] for k in spec.attention_layers], dim=1).detach()
    return targets


def _lengths(attention_mask: Tensor) -> list[int]:
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    expected = (positions[None, :] < lengths[:, None]).to(attention_mask.dtype)
    if not torch.equal(expected, attention_mask):
        raise ValueError("the teacher cache needs right-padded batches (attention_mask of the form 1..1 0..0)")
    return [int(n) for n in lengths]


class TrainingTargetCache:
    """Teacher targets for every example of one dataset, looked up by its ``idx`` column.

    Build it with :meth:`build`; :meth:`lookup` returns batch tensors shaped as from
    :func:`teacher_targets`, zero-padded to the batch's sequence length (padded positions are masked
    out by the token-level losses). Token-level targets are stored trimmed to each sentence's length,
    in ``token_dtype``; logits and [CLS] vectors in float32.
    """

    def __init__(self, spec: TargetSpec, rows: dict[str, list[Tensor]], index: dict[int, int], seconds: float):
        self.spec = spec
        self._rows = rows
        self._index = index
        self.seconds = seconds

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors, in bytes."""
        return sum(t.numel() * t.element_size() for rows in self._rows.values() for t in rows)

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: Any,
        dataset: Any,
        collator: Any,
        spec: TargetSpec,
        *,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        token_dtype: torch.dtype = torch.float16,
    ) -> TrainingTargetCache:
        """Run ``teacher`` (eval mode, no grad) once over ``dataset`` and keep the ``spec`` targets.

        Args:
            teacher: the frozen teacher model.
            dataset: tokenised dataset with a unique integer ``idx`` column (see ``data.tokenize_dataset``).
            collator: pads a list of rows into a batch (right padding).
            spec: which targets to keep.
            batch_size: teacher batch size.
            device: where to run the teacher (default: its current device).
            token_dtype: storage dtype for token-level targets (``last``, ``hidden``, ``attention``).

        Returns:
            The cache.
        """
        if "idx" not in dataset.column_names:
            raise ValueError(f"`dataset` must have an `idx` column for the teacher cache, got {dataset.column_names}")
        start = time.perf_counter()
        device = torch.device(device) if device is not None else next(teacher.parameters()).device
        was_training = teacher.training
        teacher.eval()
        rows: dict[str, list[Tensor]] = {key: [] for key in spec.keys}
        index: dict[int, int] = {}
        table = dataset.select_columns([c for c in dataset.column_names if c not in ("label", "labels")])
        # shortest first: batches of similar length waste little compute on padding
        lengths = [len(ids) for ids in table["input_ids"]]
        order = sorted(range(len(table)), key=lengths.__getitem__)
        for start_row in range(0, len(order), batch_size):
            batch = collator(list(table.select(order[start_row : start_row + batch_size])))
            idx = batch.pop("idx").tolist()
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = teacher(
                **batch,
                output_hidden_states=spec.needs_hidden_states,
                output_attentions=spec.needs_attentions,
            )
            targets = teacher_targets(outputs, spec)
            for row, (example, length) in enumerate(zip(idx, _lengths(batch["attention_mask"]), strict=True)):
                if example in index:
                    raise ValueError(f"`idx` must be unique in `dataset`, got {example} twice")
                index[example] = len(index)
                for key, tensor in targets.items():
                    value = tensor[row]
                    for dim in _TOKEN_DIMS[key]:
                        value = value.narrow(dim, 0, length)
                    dtype = token_dtype if _TOKEN_DIMS[key] else torch.float32
                    rows[key].append(value.to(device="cpu", dtype=dtype).clone())
        teacher.train(was_training)
        return cls(spec, rows, index, time.perf_counter() - start)

    def lookup(
        self, idx: Tensor | Iterable[int], seq_len: int, *, spec: TargetSpec | None = None, device: Any = None
    ) -> dict[str, Tensor]:
        """Batch tensors for the examples ``idx``, token dimensions zero-padded to ``seq_len``.

        Args:
            idx: ``(N,)`` example ids (the dataset's ``idx`` values).
            seq_len: the batch's padded length ``L``.
            spec: the targets wanted (default: everything cached); must be covered by the cache's
                spec; layered targets are cut down to ``spec``'s layers, in its order.
            device: where to put the tensors.

        Returns:
            Dict of float32 tensors shaped as from :func:`teacher_targets` with ``spec``.
        """
        wanted = self.spec if spec is None else spec
        if not self.spec.covers(wanted):
            raise ValueError(f"`spec` asks for {wanted}, but the cache holds only {self.spec}")
        ids = idx.tolist() if isinstance(idx, Tensor) else list(idx)
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise KeyError(f"examples {missing[:5]} are not in the teacher cache (built for {len(self)} examples)")
        positions = [self._index[i] for i in ids]
        out: dict[str, Tensor] = {}
        for key in wanted.keys:
            tensors = []
            for p in positions:
                value = self._rows[key][p]
                pad: list[int] = [0, 0] * value.dim()
                for dim in _TOKEN_DIMS[key]:
                    # F.pad lists (left, right) pairs from the last dimension backwards
                    pad[2 * (value.dim() - 1 - dim) + 1] = seq_len - value.shape[dim]
                tensors.append(F.pad(value, pad) if any(pad) else value)
            stacked = torch.stack(tensors)
            if key in ("cls", "hidden", "attention") and wanted.layers_of(key) != self.spec.layers_of(key):
                cached = self.spec.layers_of(key)
                stacked = stacked[:, [cached.index(layer) for layer in wanted.layers_of(key)]]
            out[key] = stacked.to(device=device, dtype=torch.float32)
        return out


def __getattr__(name: str) -> Any:
    """``TeacherCache``, this class's former name (it clashed with the extraction's
    :class:`knowledge_retention.extraction.TeacherCache`): still importable, with a FutureWarning."""
    if name == "TeacherCache":
        import warnings

        warnings.warn("knowledge_retention.distillation.targets.TeacherCache is now TrainingTargetCache "
                      "(the extraction's TeacherCache is another class).", FutureWarning, stacklevel=2)
        return TrainingTargetCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
