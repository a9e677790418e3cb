r"""A recorded teacher: the teacher's side of a causal-LM evaluation, written once and read by every later one.

Per counted token the recording keeps the teacher's k most probable next tokens with their
log-probabilities and the log of the remaining mass (the maths that scores a student against this is
:func:`~knowledge_retention.token_agreement.recorded_token_statistics`), the log-probability of the true
next token, and optionally the hidden states FSS needs. A folder holds:

``manifest.json``
    ``format`` / ``format_version``; ``tokenizer`` (name, vocabulary fingerprint, full fingerprint);
    ``texts_fingerprint``; ``options`` (the extraction options the recording was made with); ``top_k``,
    ``vocab_size``; ``dtypes``; ``layers`` and ``hidden_widths``; ``sequence_pooling``; ``num_examples``,
    ``num_tokens``; ``storage_bytes`` (every shard) and ``bytes_per_token`` (with
    ``bytes_per_token_outputs``, the same without the hidden states); ``shards`` (file, rank, tokens,
    examples, bytes, SHA-256). It is written last: a folder without it is an unfinished recording.
``rank<r>-part<p>.safetensors``
    one per process and part (at most ``shard_tokens`` tokens each, whole examples only), holding:

    ==================  ============  ====================================================================
    tensor              dtype         per
    ==================  ============  ====================================================================
    ``example``         int64         counted token: the dataset index of its text
    ``position``        int32         counted token: its index among its text's counted tokens
    ``target``          int32         counted token: the true next token id
    ``topk_ids``        int32         counted token, ``(k,)``: the teacher's top-k ids, most probable first
    ``topk_logprobs``   float32 or    counted token, ``(k,)``: their log-probabilities at temperature 1
                        float16
    ``tail_logmass``    float32       counted token: log of the mass outside the top k (``-inf`` if none)
    ``target_logprob``  float32       counted token: the teacher's log-probability of the true next token
    ``hidden.<l>``      float32 or    counted token ``(D_l,)`` (or, with ``sequence_pooling``, one row per
                        float16       text in ``pooled_example`` order): hidden state of layer l
    ``examples``        int64         every text this part evaluated (texts without a counted token too)
    ==================  ============  ====================================================================

Precision. Log-probabilities are float32 by default (``logprob_dtype="float16"`` halves them; a
log-probability of -10 is then known to about 0.008, which moves KL in the third decimal); the tail
and the true token's log-probability are always float32 (a tail of 1e-30 stays representable).
Hidden states are float32 by default (a k = V recording then scores exactly as the live teacher);
``hidden_dtype="float16"`` halves the largest part of a recording at a CKA cost of about 1e-4.

Readers refuse (:class:`~knowledge_retention._validation.InputError`) a folder that is not a finished
recording, a format version they do not know, a shard that is missing, truncated or altered (size
and SHA-256 against the manifest), shards whose contents disagree with the manifest, and a recording
made with another vocabulary, other texts or other extraction options than the evaluation asks for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import InputError, check_choice

__all__ = ["FORMAT", "FORMAT_VERSION", "HIDDEN_DTYPES", "LOGPROB_DTYPES", "RecordedBatch", "RecordedTeacher",
           "RecordingWriter", "finalize_recording", "vocabulary_fingerprint"]

FORMAT = "knowledge-retention/recorded-teacher"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOGPROB_DTYPES: tuple[str, ...] = ("float32", "float16")
HIDDEN_DTYPES: tuple[str, ...] = ("float32", "float16")
#: Counted tokens per shard part (whole texts: a part can hold a little more).
SHARD_TOKENS = 1 << 16
_TOKEN_FIELDS = {"example": np.int64, "position": np.int32, "target": np.int32, "tail_logmass": np.float32,
                 "target_logprob": np.float32}


def vocabulary_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's token -> id map (what decides whether two models' ids mean the same tokens)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RecordedBatch:
    """The recorded teacher's side of some texts: one row per counted token (see the module docstring).

    ``hidden`` maps a layer to its ``(n, D)`` rows (per counted token) or, with ``pooled_example`` set,
    ``(m, D)`` rows of the texts ``pooled_example``.
    """

    example: np.ndarray
    position: np.ndarray
    target: np.ndarray
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    tail_logmass: np.ndarray
    target_logprob: np.ndarray
    hidden: dict[int, np.ndarray] = field(default_factory=dict)
    pooled_example: np.ndarray | None = None
    examples: np.ndarray | None = None  # every text of the batch, counted tokens or not

    @property
    def num_tokens(self) -> int:
        return int(self.example.shape[0])


def _token_arrays(batch: RecordedBatch, k: int, logprob_dtype: str) -> dict[str, np.ndarray]:
    n = batch.num_tokens
    arrays = {name: np.ascontiguousarray(np.asarray(getattr(batch, name)).reshape(-1), dtype=dtype)
              for name, dtype in _TOKEN_FIELDS.items()}
    arrays["topk_ids"] = np.ascontiguousarray(batch.topk_ids, dtype=np.int32)
    arrays["topk_logprobs"] = np.ascontiguousarray(batch.topk_logprobs, dtype=np.dtype(logprob_dtype))
    for name, value in arrays.items():
        want = (n, k) if name.startswith("topk_") else (n,)
        if value.shape != want:
            raise InputError(f"Recorded `{name}` must have shape {want}, got {value.shape}.")
    return arrays


class RecordingWriter:
    """Writes one process's shard parts of a recording (whole texts per :meth:`write`).

    Args:
        out_dir: the recording's folder (created; must not hold a finished recording).
        top_k: k, the tokens recorded per counted token.
        vocab_size: V.
        rank: this process's index (its parts are ``rank<rank>-part<p>.safetensors``).
        logprob_dtype: ``"float32"`` (default) or ``"float16"``.
        hidden_dtype: ``"float32"`` (default) or ``"float16"``.
        layers: the teacher layers whose hidden states are recorded (indices into ``hidden_states``).
        pooled: hidden states are one row per text (``sequence_pooling``) instead of one per counted token.
        shard_tokens: counted tokens per part before a new part starts.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, top_k: int, vocab_size: int, rank: int = 0,
                 logprob_dtype: str = "float32", hidden_dtype: str = "float32", layers: Sequence[int] = (),
                 pooled: bool = False, shard_tokens: int = SHARD_TOKENS) -> None:
        self.folder = Path(out_dir)
        check_choice(logprob_dtype, "logprob_dtype", LOGPROB_DTYPES)
        check_choice(hidden_dtype, "hidden_dtype", HIDDEN_DTYPES)
        if (self.folder / MANIFEST).exists():
            raise InputError(f"`out_dir` {str(self.folder)!r} already holds a finished recording; choose another folder.")
        if not 1 <= int(top_k) <= int(vocab_size):
            raise InputError(f"`top_k` must be in [1, vocab_size = {vocab_size}], got {top_k}.")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.top_k, self.vocab_size, self.rank = int(top_k), int(vocab_size), int(rank)
        self.logprob_dtype, self.hidden_dtype = logprob_dtype, hidden_dtype
        self.layers, self.pooled, self.shard_tokens = [int(i) for i in layers], bool(pooled), int(shard_tokens)
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_tokens = 0
        self._seen: set[int] = set()
        self.parts: list[dict[str, Any]] = []
        self.widths: dict[int, int] = {}

    def write(self, batch: RecordedBatch) -> None:
        """Adds the counted tokens of whole texts (a text is never split between calls)."""
        arrays = _token_arrays(batch, self.top_k, self.logprob_dtype)
        examples = np.unique(arrays["example"]) if batch.examples is None else np.asarray(batch.examples, np.int64)
        if not set(arrays["example"].tolist()) <= set(examples.tolist()):
            raise InputError("Every recorded token's `example` must be one of the batch's `examples`.")
        if self._seen & set(examples.tolist()):
            raise InputError("A text was recorded twice (or split between two writes): "
                             f"{sorted(self._seen & set(examples.tolist()))[:5]}.")
        self._seen |= set(examples.tolist())
        if arrays["topk_ids"].size and (arrays["topk_ids"].min() < 0 or arrays["topk_ids"].max() >= self.vocab_size):
            raise InputError(f"Recorded `topk_ids` must be token ids in [0, {self.vocab_size}).")
        arrays["examples"] = examples
        rows = (examples.shape[0] if batch.pooled_example is None else len(batch.pooled_example)) if self.pooled \
            else arrays["example"].shape[0]
        if self.pooled:
            pooled = np.zeros(0, np.int64) if batch.pooled_example is None else batch.pooled_example
            arrays["pooled_example"] = np.asarray(pooled, dtype=np.int64)
        if set(batch.hidden) != set(self.layers):
            raise InputError(f"Recorded hidden states must be given for layers {self.layers}, got {sorted(batch.hidden)}.")
        for layer, states in batch.hidden.items():
            states = np.ascontiguousarray(states, dtype=np.dtype(self.hidden_dtype))
            if states.ndim != 2 or states.shape[0] != rows or self.widths.setdefault(layer, states.shape[1]) != states.shape[1]:
                raise InputError(f"Hidden states of layer {layer} must have shape ({rows}, "
                                 f"{self.widths.get(layer, 'D')}), got {states.shape}.")
            arrays[f"hidden.{layer}"] = states
        self._pending.append(arrays)
        self._pending_tokens += arrays["example"].shape[0]
        if self._pending_tokens >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        from safetensors.numpy import save_file

        names = self._pending[0].keys()
        merged = {name: np.concatenate([p[name] for p in self._pending]) for name in names}
        path = self.folder / f"rank{self.rank:05d}-part{len(self.parts):05d}.safetensors"
        save_file(merged, str(path), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        self.parts.append({"file": path.name, "rank": self.rank, "num_tokens": int(merged["example"].shape[0]),
                           "num_examples": int(merged["examples"].shape[0]), "bytes": path.stat().st_size,
                           "sha256": _sha256(path)})
        self._pending, self._pending_tokens = [], 0

    def close(self) -> dict[str, Any]:
        """Writes the last part and this process's summary (``rank<r>.json``); returns the summary."""
        self._flush()
        summary = {"rank": self.rank, "parts": self.parts, "hidden_widths": {str(k): v for k, v in self.widths.items()}}
        (self.folder / f"rank{self.rank:05d}.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        return summary


def finalize_recording(
    out_dir: str | os.PathLike[str],
    *,
    num_processes: int,
    num_examples: int,
    top_k: int,
    vocab_size: int,
    tokenizer: Any,
    texts_fingerprint: str,
    options: Mapping[str, Any],
    logprob_dtype: str = "float32",
    hidden_dtype: str = "float32",
    layers: Sequence[int] = (),
    sequence_pooling: str | None = None,
    tokenizer_name: str | None = None,
) -> dict[str, Any]:
    """Writes ``manifest.json`` once every process closed its writer (the main process, after a barrier).

    Raises:
        InputError: a process's summary is missing, or the parts do not cover every text exactly once.
    """
    folder = Path(out_dir)
    parts: list[dict[str, Any]] = []
    widths: dict[str, int] = {}
    for rank in range(num_processes):
        path = folder / f"rank{rank:05d}.json"
        if not path.is_file():
            raise InputError(f"Process {rank} of {num_processes} wrote no summary ({path.name}) in {str(folder)!r}.")
        summary = json.loads(path.read_text(encoding="utf-8"))
        parts += summary["parts"]
        widths.update(summary.get("hidden_widths", {}))
    from .teacher_cache import tokenizer_fingerprint

    num_tokens = sum(p["num_tokens"] for p in parts)
    storage = sum(p["bytes"] for p in parts)
    per_token = 8 + 4 + 4 + 4 + 4 + top_k * (4 + np.dtype(logprob_dtype).itemsize)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "tokenizer": {"name": tokenizer_name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
                      "vocabulary_fingerprint": vocabulary_fingerprint(tokenizer),
                      "fingerprint": tokenizer_fingerprint(tokenizer)},
        "texts_fingerprint": texts_fingerprint, "options": dict(options), "top_k": int(top_k),
        "vocab_size": int(vocab_size),
        "dtypes": {"topk_ids": "int32", "topk_logprobs": logprob_dtype, "tail_logmass": "float32",
                   "target_logprob": "float32", "hidden": hidden_dtype},
        "layers": [int(i) for i in layers], "hidden_widths": widths, "sequence_pooling": sequence_pooling,
        "num_examples": int(num_examples), "num_tokens": int(num_tokens), "storage_bytes": int(storage),
        "bytes_per_token": storage / num_tokens if num_tokens else None,
        "bytes_per_token_outputs": per_token, "shards": parts,
    }
    reader = RecordedTeacher.__new__(RecordedTeacher)
    reader._init(folder, manifest, verify=False)  # the coverage check, before the manifest exists
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
    for rank in range(num_processes):
        (folder / f"rank{rank:05d}.json").unlink()
    return manifest


class RecordedTeacher:
    """Reads a finished recording (see the module docstring); :meth:`batch` gives the tokens of some texts.

    Args:
        folder: the recording's folder.
        verify: check each shard's SHA-256 against the manifest when it is first read (sizes are always checked).

    Raises:
        InputError: not a finished recording, an unknown format version, a missing or damaged shard.
    """

    def __init__(self, folder: str | os.PathLike[str], *, verify: bool = True) -> None:
        path = Path(folder)
        if not (path / MANIFEST).is_file():
            raise InputError(f"{str(path)!r} is not a finished teacher recording (no {MANIFEST}).")
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{str(path / MANIFEST)!r} is not readable JSON: {err}") from err
        self._init(path, manifest, verify=verify)

    def _init(self, folder: Path, manifest: Any, *, verify: bool) -> None:
        self.folder, self.verify = folder, verify
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InputError(f"{str(folder)!r} is not a teacher recording (manifest format "
                             f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r}).")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(f"The recording in {str(folder)!r} has format version {manifest.get('format_version')!r}; "
                             f"this version of knowledge_retention reads version {FORMAT_VERSION}.")
        missing = [k for k in ("top_k", "vocab_size", "num_examples", "num_tokens", "shards", "dtypes", "layers",
                               "tokenizer", "texts_fingerprint", "options") if k not in manifest]
        if missing:
            raise InputError(f"The manifest of {str(folder)!r} lacks {missing}.")
        self.manifest = manifest
        self.top_k, self.vocab_size = int(manifest["top_k"]), int(manifest["vocab_size"])
        self.layers = [int(i) for i in manifest["layers"]]
        self.pooled = manifest.get("sequence_pooling") is not None
        self._checked: set[str] = set()
        self._where: dict[int, tuple[int, int, int]] = {}  # example -> (part, first token, end token)
        self._pooled_rows: dict[int, tuple[int, int]] = {}  # example -> (part, row)
        covered: list[np.ndarray] = []
        tokens = 0
        for number, part in enumerate(manifest["shards"]):
            arrays = self._read(number, ("example", "examples", *(("pooled_example",) if self.pooled else ())))
            example, examples = arrays["example"], arrays["examples"]
            covered.append(examples)
            tokens += example.shape[0]
            if example.shape[0] != part["num_tokens"]:
                raise InputError(f"Shard {part['file']} holds {example.shape[0]} tokens, the manifest says {part['num_tokens']}.")
            starts = np.flatnonzero(np.r_[True, example[1:] != example[:-1]]) if example.size else np.zeros(0, np.int64)
            ends = np.r_[starts[1:], example.shape[0]]
            for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
                if int(example[lo]) in self._where:
                    raise InputError(f"Text {int(example[lo])} appears twice in the recording (shard {part['file']}).")
                self._where[int(example[lo])] = (number, lo, hi)
            if self.pooled:
                for row, ex in enumerate(arrays["pooled_example"].tolist()):
                    self._pooled_rows[int(ex)] = (number, row)
        every = np.sort(np.concatenate(covered)) if covered else np.zeros(0, np.int64)
        if tokens != manifest["num_tokens"] or not np.array_equal(every, np.arange(manifest["num_examples"])):
            raise InputError(f"The shards of {str(folder)!r} hold {tokens} tokens of {every.shape[0]} texts; the manifest "
                             f"says {manifest['num_tokens']} tokens of {manifest['num_examples']} texts, each once.")

    def _read(self, number: int, names: Sequence[str], lo: int | None = None, hi: int | None = None) -> dict[str, np.ndarray]:
        from safetensors import SafetensorError, safe_open

        part = self.manifest["shards"][number]
        path = self.folder / str(part["file"])
        if part["file"] not in self._checked:
            if not path.is_file():
                raise InputError(f"Shard {part['file']} of the recording in {str(self.folder)!r} is missing.")
            if path.stat().st_size != part["bytes"]:
                raise InputError(f"Shard {part['file']} has {path.stat().st_size} bytes, the manifest says {part['bytes']} "
                                 "(a truncated or altered recording).")
            if self.verify and _sha256(path) != part["sha256"]:
                raise InputError(f"Shard {part['file']} does not match its SHA-256 in the manifest (an altered recording).")
            self._checked.add(part["file"])
        try:
            with safe_open(str(path), framework="np") as handle:
                keys = set(handle.keys())
                absent = [name for name in names if name not in keys]
                if absent:
                    raise InputError(f"Shard {part['file']} lacks {absent}.")
                if lo is None:
                    return {name: handle.get_tensor(name) for name in names}
                return {name: handle.get_slice(name)[lo:hi] for name in names}
        except (SafetensorError, OSError) as err:
            raise InputError(f"Shard {part['file']} is not a readable safetensors file: {err}") from err

    def check_compatible(self, *, tokenizer: Any = None, texts_fingerprint: str | None = None,
                         vocab_size: int | None = None, options: Mapping[str, Any] | None = None,
                         layers: Sequence[int] | None = None) -> None:
        """Refuses an evaluation this recording cannot serve, naming what differs.

        Args:
            tokenizer: the student's tokenizer (its vocabulary must be the recording's).
            texts_fingerprint: the evaluation's texts (their fingerprint must be the recording's).
            vocab_size: the student's output size.
            options: extraction options; each one the manifest also has must be equal.
            layers: the teacher layers the evaluation needs (they must have been recorded).
        """
        where = f"the recording in {str(self.folder)!r}"
        if tokenizer is not None and vocabulary_fingerprint(tokenizer) != self.manifest["tokenizer"]["vocabulary_fingerprint"]:
            raise InputError(f"The tokenizer's vocabulary ({len(tokenizer.get_vocab())} tokens) is not that of {where} "
                             f"(made with {self.manifest['tokenizer']['name']!r}).")
        if texts_fingerprint is not None and texts_fingerprint != self.manifest["texts_fingerprint"]:
            raise InputError(f"The dataset's texts are not those of {where} ({self.manifest['num_examples']} texts).")
        if vocab_size is not None and int(vocab_size) != self.vocab_size:
            raise InputError(f"The student has {vocab_size} logits; {where} has a vocabulary of {self.vocab_size}.")
        recorded, asked = self.manifest["options"], dict(options or {})
        differing = sorted(k for k in asked if k in recorded and _plain(asked[k]) != _plain(recorded[k]))
        if differing:
            raise InputError(f"{where.capitalize()} was made with other options: " + ", ".join(
                f"{k}={recorded[k]!r} there, {asked[k]!r} here" for k in differing) + ".")
        absent = sorted(set(layers or ()) - set(self.layers))
        if absent:
            raise InputError(f"Teacher layers {absent} were not recorded in {where} (recorded: {self.layers}).")

    def batch(self, examples: Sequence[int]) -> RecordedBatch:
        """The recorded tokens of these texts, text by text in the order given (texts without tokens add none)."""
        index = [int(e) for e in examples]
        unknown = [e for e in index if not 0 <= e < self.manifest["num_examples"]]
        if unknown:
            raise InputError(f"Texts {unknown[:5]} are not in the recording ({self.manifest['num_examples']} texts).")
        names = ["example", "position", "target", "topk_ids", "topk_logprobs", "tail_logmass", "target_logprob"]
        if not self.pooled:
            names += [f"hidden.{layer}" for layer in self.layers]
        ranges: list[list[int]] = []  # [part, lo, hi]: consecutive texts of one part are read at once
        for e in index:
            if e in self._where:
                part, lo, hi = self._where[e]
                if ranges and ranges[-1][0] == part and ranges[-1][2] == lo:
                    ranges[-1][2] = hi
                else:
                    ranges.append([part, lo, hi])
        pieces = [self._read(part, names, lo, hi) for part, lo, hi in ranges]
        empty = {name: np.zeros((0, self.top_k) if name.startswith("topk_") else (0,)) for name in names}
        merged = {name: np.concatenate([p[name] for p in pieces]) if pieces else empty[name] for name in names}
        hidden = {layer: merged.pop(f"hidden.{layer}") for layer in self.layers} if not self.pooled else {}
        pooled_example = None
        if self.pooled:
            rows = [e for e in index if e in self._pooled_rows]
            pooled_example = np.asarray(rows, dtype=np.int64)
            for layer in self.layers:
                got = [self._read(self._pooled_rows[e][0], [f"hidden.{layer}"], self._pooled_rows[e][1],
                                  self._pooled_rows[e][1] + 1)[f"hidden.{layer}"] for e in rows]
                hidden[layer] = np.concatenate(got) if got else np.zeros((0, 0), np.float32)
        return RecordedBatch(**merged, hidden=hidden, pooled_example=pooled_example,
                             examples=np.asarray(index, dtype=np.int64))

    def batches(self, batch_size: int) -> Iterator[RecordedBatch]:
        """Every text in index order, ``batch_size`` texts at a time."""
        for lo in range(0, self.manifest["num_examples"], batch_size):
            yield self.batch(range(lo, min(lo + batch_size, self.manifest["num_examples"])))

    def __len__(self) -> int:
        return int(self.manifest["num_examples"])


def _plain(value: Any) -> Any:
    """A JSON round trip, so tuples and lists (and numpy scalars) compare as the manifest stores them."""
    return json.loads(json.dumps(value, default=str))
