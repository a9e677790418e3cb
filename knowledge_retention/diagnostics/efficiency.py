"""Size and speed: parameter counts, on-disk size, latency, and the trade-off sentence.

Models are a ``torch.nn.Module`` or a path: a checkpoint directory (``*.safetensors`` files, else
``pytorch_model*.bin`` / ``*.pt`` / ``*.pth``) or one such file.  torch is imported only when a
``.bin``/``.pt`` file or a module needs it; safetensors headers are read as JSON, so counting the
parameters of a saved Hugging Face checkpoint needs no torch at all.

Conventions: ``size_ratio = student / teacher`` (lower is smaller), ``speedup = teacher seconds per
batch / student seconds per batch`` (above 1 the student is faster).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import InputError, InputTypeError
from ._inputs import check_int

ModelLike = Any  # torch.nn.Module, or str / os.PathLike to a checkpoint file or directory

_TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def _weight_files(path: Path) -> list[Path]:
    """The weight files of a checkpoint: the file itself, or a directory's safetensors (else torch) files."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"`model` path does not exist: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".safetensors")
    if not files:
        files = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.suffix in _TORCH_SUFFIXES and not p.name.startswith(("optimizer", "scheduler", "training_args", "rng_state"))
        )
    if not files:
        found = sorted(p.name for p in path.iterdir())[:20]
        raise InputError(
            f"No weight files (*.safetensors, *.bin, *.pt, *.pth) in {path}; it holds {found}."
        )
    return files


def _safetensors_parameters(path: Path) -> int:
    """Sum of the tensor sizes listed in a safetensors header (8-byte little-endian length + JSON)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return int(sum(int(np.prod(v["shape"], dtype=np.int64)) for k, v in header.items() if k != "__metadata__"))


def _torch_file_parameters(path: Path) -> int:
    import torch  # lazy: only for pickled checkpoints

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return int(sum(v.numel() for v in state.values() if hasattr(v, "numel")))


def _is_module(model: Any) -> bool:
    return callable(getattr(model, "parameters", None)) and callable(getattr(model, "state_dict", None))


def parameter_count(model: ModelLike, *, trainable_only: bool = False) -> int:
    """Number of parameters of a model.

    Args:
        model: a ``torch.nn.Module`` (shared/tied parameters counted once, as ``module.parameters()``
            yields them) or a path to a checkpoint file or directory (every tensor stored; Hugging
            Face safetensors store tied weights once).
        trainable_only: for a module, count only parameters with ``requires_grad``.

    Returns:
        The count, an int >= 0; lower is smaller.

    Raises:
        TypeError: neither a module nor a path.
        ValueError: the path does not exist or holds no weight file.
    """
    if _is_module(model):
        return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"`model` must be a torch.nn.Module or a path, got {type(model).__name__}.")
    if trainable_only:
        raise InputError("`trainable_only` needs a torch.nn.Module; a checkpoint does not record requires_grad.")
    total = 0
    for file in _weight_files(Path(model)):
        total += _safetensors_parameters(file) if file.suffix == ".safetensors" else _torch_file_parameters(file)
    return total


def model_disk_size(model: ModelLike) -> int:
    """On-disk size of a model's weights in bytes.

    Args:
        model: a path (the weight files of a checkpoint directory, or the file) or a
            ``torch.nn.Module`` (the size of ``torch.save(module.state_dict())``).

    Returns:
        Size in bytes; lower is smaller.
    """
    if _is_module(model):
        import torch  # lazy

        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        return buffer.getbuffer().nbytes
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"`model` must be a torch.nn.Module or a path, got {type(model).__name__}.")
    return int(sum(f.stat().st_size for f in _weight_files(Path(model))))


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        first = next(iter(batch.values()))
        return int(len(first))
    return int(len(batch))


def measure_latency(
    fn: Callable[[Any], Any],
    batches: Sequence[Any],
    *,
    warmup: int = 2,
    repeats: int = 5,
    batch_size: Callable[[Any], int] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Times ``fn(batch)`` over ``batches``: median seconds per batch and examples per second.

    ``warmup`` untimed calls on the first batch come first (lazy initialisation, caches, kernel
    selection); then ``repeats`` timed passes over all batches.  ``fn`` must finish its work before
    returning (on a GPU, call ``torch.cuda.synchronize()`` inside it).

    Args:
        fn: called once per batch; its result is ignored.
        batches: a non-empty sequence of batches (re-iterated on every pass).
        warmup: untimed calls before timing (>= 0).
        repeats: timed passes over ``batches`` (>= 1).
        batch_size: examples in a batch; default ``len(batch)`` (for a dict, the length of its first value).
        timer: the clock (monotonic seconds); replaceable in tests.

    Returns:
        ``seconds_per_batch`` (median over every timed call; lower is better), ``examples_per_second``
        (examples of one pass / median pass time; higher is better), ``pass_seconds`` (one per
        repeat), ``num_batches``, ``examples_per_pass``, ``warmup``, ``repeats``.

    Example:
        >>> out = measure_latency(sum, [[1, 2], [3, 4, 5]], warmup=1, repeats=2)
        >>> out["examples_per_pass"], out["num_batches"]
        (5, 2)
    """
    if not callable(fn):
        raise InputTypeError(f"`fn` must be callable, got {type(fn).__name__}.")
    batches = list(batches)
    if not batches:
        raise InputError("`batches` must hold at least one batch, got none.")
    warmup = check_int(warmup, "warmup", minimum=0)
    repeats = check_int(repeats, "repeats", minimum=1)
    size = batch_size or _batch_len
    examples = int(sum(size(b) for b in batches))
    for _ in range(warmup):
        fn(batches[0])
    per_call: list[float] = []
    per_pass: list[float] = []
    for _ in range(repeats):
        pass_total = 0.0
        for batch in batches:
            start = timer()
            fn(batch)
            elapsed = timer() - start
            per_call.append(elapsed)
            pass_total += elapsed
        per_pass.append(pass_total)
    median_pass = statistics.median(per_pass)
    return {
        "seconds_per_batch": float(statistics.median(per_call)),
        "examples_per_second": float(examples / median_pass) if median_pass > 0 else float("inf"),
        "pass_seconds": per_pass,
        "num_batches": len(batches),
        "examples_per_pass": examples,
        "warmup": warmup,
        "repeats": repeats,
    }


def _positive(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"`{name}` must be a finite number > 0, got {value}.")
    return float(value)


def extraction_speeds(
    timings: dict[str, Any], num_examples: int, batch_size: int, *, teacher_cache: dict[str, Any] | None = None
) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """Each model's speed from an extraction's own timed forward passes, when the two can be compared.

    The two times must come from the same run: with a teacher cache the teacher's time is the one
    recorded when its outputs were cached (replayed later, while the student is timed again), so
    the ratio would change between identical runs. Then no speed is taken from the timings and
    the reason says so: the caller times both models on the same batches instead.

    Args:
        timings: the extraction's ``timings`` (``teacher_forward_s``, ``student_forward_s``, ``forward_batches``).
        num_examples: examples the forward passes ran over.
        batch_size: examples per batch (for the batch count when ``forward_batches`` is missing).
        teacher_cache: the extraction's ``options["teacher_cache"]`` (None without a cache).

    Returns:
        ``({"teacher": speed, "student": speed}, None)`` with ``seconds_per_batch``,
        ``examples_per_second`` and ``timed_batches`` each; or ``(None, reason)``.

    Example:
        >>> speeds, _ = extraction_speeds({"teacher_forward_s": 2.0, "student_forward_s": 1.0}, 64, 32)
        >>> speeds["teacher"]["seconds_per_batch"] / speeds["student"]["seconds_per_batch"]
        2.0
        >>> extraction_speeds({"teacher_forward_s": 2.0, "student_forward_s": 1.0}, 64, 32,
        ...                   teacher_cache={"reused": True})[0] is None
        True
    """
    if teacher_cache:
        return None, ("the teacher cache is in use, so the extraction's teacher time is replayed on later runs "
                      "while the student is timed again: both models are timed on the same batches instead")
    speeds: dict[str, dict[str, Any]] = {}
    for role in ("teacher", "student"):
        seconds = timings.get(f"{role}_forward_s")
        if not seconds or not num_examples:
            return None, f"the extraction has no timed forward pass of the {role}"
        n_batches = int(timings.get("forward_batches") or 0) or max(1, -(-num_examples // batch_size))
        speeds[role] = {"seconds_per_batch": float(seconds) / n_batches,
                        "examples_per_second": num_examples / float(seconds), "timed_batches": n_batches}
    return speeds, None


def tradeoff_sentence(
    quality_retained: float | None = None,
    size_ratio: float | None = None,
    speedup: float | None = None,
    *,
    quality_name: str = "quality",
) -> str:
    """"X% of the teacher's quality at Y% of its size and Z× its speed", leaving out what is unknown.

    Returns an empty string when all three figures are None.

    Args:
        quality_retained: student / teacher quality (see :func:`quality_retained`), e.g. 0.97.
        size_ratio: student size / teacher size, e.g. 0.5.
        speedup: teacher time / student time, e.g. 2.0.
        quality_name: what "quality" is, e.g. ``"accuracy"``.

    Example:
        >>> tradeoff_sentence(0.9712, 0.4821, 2.034, quality_name="accuracy")
        "97.1% of the teacher's accuracy at 48.2% of its size and 2.03× its speed"
        >>> tradeoff_sentence(size_ratio=0.5)
        "50.0% of the teacher's size"
    """
    parts: list[str] = []
    if size_ratio is not None:
        parts.append(f"{100 * size_ratio:.1f}% of its size")
    if speedup is not None:
        parts.append(f"{speedup:.2f}× its speed")
    if quality_retained is not None:
        head = f"{100 * quality_retained:.1f}% of the teacher's {quality_name}"
        return head if not parts else f"{head} at {' and '.join(parts)}"
    if not parts:
        return ""
    return " and ".join(parts).replace("its", "the teacher's", 1)


def size_speed_tradeoff(
    *,
    quality_retained: float | None = None,
    teacher_size: float | None = None,
    student_size: float | None = None,
    teacher_seconds: float | None = None,
    student_seconds: float | None = None,
    quality_name: str = "quality",
) -> dict[str, Any]:
    """Size ratio, speed-up and the trade-off sentence from raw figures (each optional).

    Args:
        quality_retained: the share of the teacher's quality the student keeps.
        teacher_size: teacher parameters (or bytes), > 0.
        student_size: student parameters (or bytes; same unit), > 0.
        teacher_seconds: teacher seconds per batch, > 0.
        student_seconds: student seconds per batch on the same batches, > 0.
        quality_name: name of the quality metric for the sentence.

    Returns:
        ``{"quality_retained", "size_ratio" (student / teacher, lower = smaller), "speedup" (teacher
        / student seconds, above 1 = faster), "sentence"}``; unknown parts are None.

    Example:
        >>> size_speed_tradeoff(quality_retained=0.95, teacher_size=100, student_size=25,
        ...                     teacher_seconds=2.0, student_seconds=0.5)["sentence"]
        "95.0% of the teacher's quality at 25.0% of its size and 4.00× its speed"
    """
    t_size = _positive(teacher_size, "teacher_size")
    s_size = _positive(student_size, "student_size")
    t_sec = _positive(teacher_seconds, "teacher_seconds")
    s_sec = _positive(student_seconds, "student_seconds")
    size_ratio = s_size / t_size if t_size is not None and s_size is not None else None
    speedup = t_sec / s_sec if t_sec is not None and s_sec is not None else None
    return {
        "quality_retained": quality_retained,
        "size_ratio": size_ratio,
        "speedup": speedup,
        "sentence": tradeoff_sentence(quality_retained, size_ratio, speedup, quality_name=quality_name),
    }
