"""The teacher's side of an evaluation, kept for reuse: pooled features and logits of every batch.

Scoring several students, the same student at every evaluation of a training run, or the same
command twice, the teacher's outputs on the evaluation set do not change. A :class:`TeacherCache`
records them the first time (the pooled features of *every* teacher hidden state, so any later
choice of ``layers`` or ``cross_layer`` is served, and the logits) and replays them, batch by
batch and in the same order, on later calls whose fingerprint matches: the teacher is not run at all.

* In memory (``TeacherCache()``): for one process's lifetime, e.g. the training-time
  :class:`~knowledge_retention.integrations.callbacks.KRSCallback`. The key covers the options, the texts and the
  identity of the teacher and tokenizer objects (not their weights: the teacher must not change
  between calls).
* On disk (``TeacherCache("folder")``): ``<folder>/<fingerprint>/`` holds ``meta.json`` and
  ``rank<r>-<k>.safetensors`` chunks (at most :data:`CHUNK_ROWS` rows each, so memory stays flat in
  N). Nothing is pickled. The fingerprint is a SHA-256 over the teacher's class, config and
  weights, its tokenizer (vocabulary, normalisation, padding side, special tokens), the texts in
  order, and every option that changes the teacher's outputs or the batches (pooling, max_length,
  batch_size, length grouping, number of processes, mixed precision, device type, library
  versions). The folder is written as ``<fingerprint>.partial`` and renamed when complete, so a
  half-written cache is never read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import InputError, InputTypeError
from .inputs import TextSource
from .streams import PooledBatch

__all__ = ["CACHE_VERSION", "CHUNK_ROWS", "TeacherBatch", "TeacherCache", "TeacherRecorder", "model_fingerprint",
           "tokenizer_fingerprint", "texts_fingerprint"]

CACHE_VERSION = 1
#: Rows per safetensors chunk on disk.
CHUNK_ROWS = 1024
_META = "meta.json"


@dataclass
class TeacherBatch:
    """The teacher's side of one batch: the dataset indices of its rows and the pooled outputs."""

    indices: list[int]
    pooled: PooledBatch


def _sha(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's class, config and every tensor of its state dict (names, dtypes, shapes, bytes)."""

    def chunks() -> Iterator[bytes]:
        yield type(model).__qualname__.encode()
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            yield config.to_json_string(use_diff=False).encode()
        for name, tensor in _state_items(model):
            flat = tensor.detach().contiguous().cpu()
            yield f"{name}|{flat.dtype}|{tuple(flat.shape)}".encode()
            yield flat.reshape(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b""

    return _sha(chunks())


def _state_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The state dict's ``(name, tensor)`` items in its order; the weights of a model dispatched by
    accelerate with CPU or disk offload (meta tensors) are brought in one module at a time."""
    state = model.state_dict()
    if not any(t.is_meta for t in state.values()):
        yield from state.items()
        return
    from accelerate.utils import align_module_device, has_offloaded_params

    del state
    for prefix, module in model.named_modules(remove_duplicate=False):
        with align_module_device(module) if has_offloaded_params(module) else contextlib.nullcontext():
            own = [*module._parameters.items(),
                   *((k, b) for k, b in module._buffers.items() if k not in module._non_persistent_buffers_set)]
            for name, tensor in own:
                if tensor is not None:
                    yield (f"{prefix}.{name}" if prefix else name), tensor


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what decides a tokenizer's ids: its full definition (fast tokenizers) or vocabulary
    (slow ones), class, padding/truncation sides, length limit and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        definition = json.loads(backend.to_str())
        # the per-call state a fast tokenizer keeps from its last call (padding/truncation of that
        # call) is not part of what it is: every call sets its own
        definition.pop("truncation", None)
        definition.pop("padding", None)
        body = json.dumps(definition, sort_keys=True)
    elif hasattr(tokenizer, "get_vocab"):
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    else:
        body = repr(tokenizer)
    extras = {
        "class": type(tokenizer).__qualname__,
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "special": getattr(tokenizer, "special_tokens_map", None),
    }
    return _sha(iter([body.encode(), json.dumps(extras, sort_keys=True, default=str).encode()]))


def texts_fingerprint(source: TextSource, chunk: int = 4096) -> str:
    """SHA-256 of the N texts in order (each length-prefixed, so boundaries count)."""

    def chunks() -> Iterator[bytes]:
        for lo in range(0, len(source), chunk):
            texts, _ = source.batch(range(lo, min(lo + chunk, len(source))))
            for text in texts:
                data = text.encode("utf-8")
                yield len(data).to_bytes(8, "little") + data

    return _sha(chunks())


def fingerprint(parts: Mapping[str, Any]) -> str:
    """The cache key: SHA-256 (24 hex digits) of the JSON of the fingerprint parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class TeacherCache:
    """Where teacher outputs are recorded and replayed from: memory (``path=None``) or a folder.

    Args:
        path: a folder for the on-disk cache (created when first written); None keeps the records
            in memory, for this object's lifetime.

    Example:
        >>> from knowledge_retention.extraction import TeacherCache, evaluate_students  # doctest: +SKIP
        >>> cache = TeacherCache("~/.cache/krs_teacher")  # doctest: +SKIP
        >>> evaluate_students(teacher, {"a": s1}, dev, teacher_cache=cache)  # doctest: +SKIP
        >>> evaluate_students(teacher, {"b": s2}, dev, teacher_cache=cache)  # teacher not run  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise InputTypeError(f"`teacher_cache` must be a folder path or a TeacherCache, got {type(path).__name__}.")
        self.path = None if path is None else Path(path).expanduser()
        if self.path is not None and self.path.exists() and not self.path.is_dir():
            raise InputError(f"`teacher_cache`: {path} is a file; give a folder (created if missing) for the "
                             "teacher's recorded outputs.")
        self._memory: dict[str, tuple[dict[str, Any], dict[int, list[TeacherBatch]]]] = {}

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def __repr__(self) -> str:
        return f"TeacherCache({'memory' if self.path is None else str(self.path)!r})"

    def where(self, key: str) -> str:
        """A readable location of an entry, for notes (``~/...`` under the home folder: reports carry no
        machine-specific paths)."""
        if self.path is None:
            return "memory"
        location = (self.path / key).resolve()
        home = Path.home().resolve()
        return f"~/{location.relative_to(home)}" if location.is_relative_to(home) else str(location)

    def lookup(self, key: str, rank: int, num_processes: int) -> tuple[dict[str, Any], Iterator[TeacherBatch]] | None:
        """``(meta, batches of this process)`` when a complete entry ``key`` exists for this many processes."""
        if self.path is None:
            entry = self._memory.get(key)
            if entry is None or rank not in entry[1]:
                return None
            return entry[0], iter(entry[1][rank])
        folder = self.path / key
        try:
            meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("version") != CACHE_VERSION or meta.get("key") != key or meta.get("num_processes") != num_processes:
            return None
        ranks = meta.get("ranks") or []
        if rank >= len(ranks) or not all((folder / name).is_file() for name in ranks[rank]["chunks"]):
            return None
        return meta, _read_chunks(folder, ranks[rank]["chunks"], meta["teacher"]["layers"])

    def recorder(self, key: str, rank: int) -> TeacherRecorder:
        """A recorder for this process's batches of entry ``key``."""
        return TeacherRecorder(self, key, rank)

    def _store_memory(self, key: str, meta: dict[str, Any], rank: int, batches: list[TeacherBatch]) -> None:
        entry = self._memory.setdefault(key, (meta, {}))
        entry[1][rank] = batches

    def finalize(self, key: str, meta: dict[str, Any]) -> None:
        """Completes an entry once every process has written its chunks (main process only, on disk)."""
        if self.path is None:
            if key in self._memory:
                self._memory[key] = (meta, self._memory[key][1])
            return
        partial = self.path / f"{key}.partial"
        (partial / _META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        final = self.path / key
        if final.exists():  # another run finished the same entry first: keep it
            shutil.rmtree(partial, ignore_errors=True)
            return
        os.replace(partial, final)


def _read_chunks(folder: Path, names: list[str], layers: list[int]) -> Iterator[TeacherBatch]:
    from safetensors.torch import load_file

    for name in names:
        tensors = load_file(str(folder / name))
        index = tensors["index"].tolist()
        logits = tensors.get("logits")
        start = 0
        sizes = tensors["batch_sizes"].tolist()
        # rows of features and of logits per batch: one per example (classifiers), one per counted token (causal LMs)
        row_sizes = tensors["row_sizes"].tolist() if "row_sizes" in tensors else sizes
        logit_sizes = tensors["logit_sizes"].tolist() if "logit_sizes" in tensors else sizes
        row = out = 0
        for size, n_rows, n_logits in zip(sizes, row_sizes, logit_sizes, strict=True):
            stop = start + size
            features = {layer: tensors[f"layer_{layer}"][row : row + n_rows] for layer in layers}
            yield TeacherBatch(index[start:stop],
                               PooledBatch(features, None if logits is None else logits[out : out + n_logits]))
            start, row, out = stop, row + n_rows, out + n_logits


@dataclass
class TeacherRecorder:
    """Collects one process's teacher batches, writing a safetensors chunk every :data:`CHUNK_ROWS` rows."""

    cache: TeacherCache
    key: str
    rank: int
    chunks: list[str] = field(default_factory=list)
    n_batches: int = 0
    n_rows: int = 0
    _pending: list[TeacherBatch] = field(default_factory=list)
    _pending_rows: int = 0
    _memory: list[TeacherBatch] = field(default_factory=list)

    def add(self, batch: TeacherBatch) -> None:
        self.n_batches += 1
        self.n_rows += len(batch.indices)
        if self.cache.path is None:
            self._memory.append(batch)
            return
        self._pending.append(batch)
        self._pending_rows += len(batch.indices)
        if self._pending_rows >= CHUNK_ROWS:
            self._write()

    def _write(self) -> None:
        from safetensors.torch import save_file

        if not self._pending:
            return
        assert self.cache.path is not None
        folder = self.cache.path / f"{self.key}.partial"
        folder.mkdir(parents=True, exist_ok=True)
        first = self._pending[0].pooled
        tensors = {
            "index": torch.tensor([i for b in self._pending for i in b.indices], dtype=torch.int64),
            "batch_sizes": torch.tensor([len(b.indices) for b in self._pending], dtype=torch.int64),
            "row_sizes": torch.tensor([_rows(b.pooled) for b in self._pending], dtype=torch.int64),
        }
        if first.logits is not None:
            tensors["logit_sizes"] = torch.tensor([int(b.pooled.logits.shape[0])  # type: ignore[union-attr]
                                                   for b in self._pending], dtype=torch.int64)
        for layer in first.features:
            tensors[f"layer_{layer}"] = torch.cat([b.pooled.features[layer] for b in self._pending]).detach().cpu().contiguous()
        if first.logits is not None:
            tensors["logits"] = torch.cat([b.pooled.logits for b in self._pending  # type: ignore[misc]
                                           ]).detach().cpu().contiguous()
        name = f"rank{self.rank}-{len(self.chunks):05d}.safetensors"
        save_file(tensors, str(folder / name))
        self.chunks.append(name)
        self._pending, self._pending_rows = [], 0

    def close(self, meta: dict[str, Any], rank_info: dict[str, Any]) -> dict[str, Any]:
        """Writes what is pending; returns this process's entry of ``meta["ranks"]``."""
        info = {**rank_info, "chunks": list(self.chunks), "n_batches": self.n_batches, "n_rows": self.n_rows}
        if self.cache.path is None:
            self.cache._store_memory(self.key, meta, self.rank, self._memory)
            return info
        self._write()
        info["chunks"] = list(self.chunks)
        return info


def _rows(pooled: PooledBatch) -> int:
    return int(next(iter(pooled.features.values())).shape[0]) if pooled.features else 0


def new_meta(key: str, parts: Mapping[str, Any], teacher: Mapping[str, Any], num_processes: int) -> dict[str, Any]:
    """The ``meta.json`` of an entry (``ranks`` filled by :meth:`TeacherCache.finalize`'s caller)."""
    return {
        "version": CACHE_VERSION,
        "key": key,
        "parts": dict(parts),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_processes": num_processes,
        "teacher": dict(teacher),
        "ranks": [],
    }


def as_cache(value: Any) -> TeacherCache | None:
    """``teacher_cache`` argument: None, a TeacherCache, or a folder path."""
    if value is None or isinstance(value, TeacherCache):
        return value
    if isinstance(value, (str, os.PathLike)):
        return TeacherCache(value)
    raise InputTypeError(f"`teacher_cache` must be None, a folder path or a TeacherCache, got {type(value).__name__}.")


def numpy_free(value: Any) -> Any:
    """JSON-safe copies of numpy scalars in a small dict (for meta.json)."""
    if isinstance(value, dict):
        return {k: numpy_free(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [numpy_free(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
