"""The default teacher/student pair behind the CLI's zero-argument run, trained once and cached.

Both classification heads are really trained on SST-2: the teacher is all-MiniLM-L6-v2 fine-tuned
on 4,000 SST-2 training sentences, the student its 3-layer every-other-layer copy distilled with
vanilla KD, and the baseline the same 3-layer copy fine-tuned on the hard labels only (the ``quick``
scale of :mod:`.scales`, built by the same pipeline code) - so the main job can answer "was
distillation worth it?". The first call
trains them (a few minutes on 2 CPU cores, with progress); later calls return at once.

Cache location: ``<root>/default_pair/<version-hash>/`` where ``<root>`` is ``cache_dir``, else
``$KNOWLEDGE_RETENTION_CACHE``, else ``~/.cache/knowledge_retention``. The hash covers the recipe,
so a changed recipe trains a new pair. The pair is built in its final folder, under an exclusive lock,
and ``COMPLETE.json`` is written last: a folder without it (a run that stopped half-way) is never used,
only rebuilt. Building in place means that every path the first run prints (the manifest's included)
is the one that stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["COMPLETE", "default_pair_dir", "ensure_default_pair", "version_hash"]

COMPLETE = "COMPLETE.json"
_RECIPE_VERSION = 1  # bump when the recipe changes in a way the scale config does not show
_TEACHER, _STUDENT, _BASELINE = "teacher", "students/distilbert-after", "students/distilbert-before"


def version_hash() -> str:
    """12 hex digits identifying the default-pair recipe (scale config + recipe version)."""
    from .scales import SCALES

    payload = json.dumps({"recipe": _RECIPE_VERSION, "scale": _stable(SCALES["quick"].to_dict())}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


# fields added to the configs after the default pair was first cached: left out of the hash while they
# hold the values that reproduce the earlier recipe (whose students were copied from the teacher)
_LATER_FIELDS = {"general_train_size": None, "general_epochs": 1.0, "general_lr": 3e-4}
_LATER_STUDENT_FIELDS = {"init_from": "teacher", "checkpoint": None, "all_seeds": True}


def _stable(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    out["students"] = [
        {k: v for k, v in s.items() if k not in _LATER_STUDENT_FIELDS or v != _LATER_STUDENT_FIELDS[k]}
        for s in config["students"]
    ]
    return out


def default_pair_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the default pair lives: ``<root>/default_pair/<version-hash>`` (see the module docstring)."""
    root = cache_dir or os.environ.get("KNOWLEDGE_RETENTION_CACHE") or Path.home() / ".cache" / "knowledge_retention"
    return Path(root).expanduser() / "default_pair" / version_hash()


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and all(_is_model_dir(path / p) for p in (_TEACHER, _STUDENT, _BASELINE))


def _pair(path: Path) -> dict[str, str]:
    return {"teacher": str(path / _TEACHER), "student": str(path / _STUDENT), "baseline": str(path / _BASELINE)}


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX ``flock``; a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_default_pair(cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True) -> dict[str, str]:
    """Return the cached default teacher/student pair, training it first if needed.

    Args:
        cache_dir: cache root (default ``$KNOWLEDGE_RETENTION_CACHE`` or ``~/.cache/knowledge_retention``).
        progress: print progress and timings to stderr while training.

    Returns:
        ``{"teacher": path, "student": path, "baseline": path}``: folders loadable with
        ``AutoModelForSequenceClassification.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    final = default_pair_dir(cache_dir)
    if _complete(final):
        return _pair(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f"{final.name}.lock"):
        if _complete(final):  # another process finished it while we waited
            return _pair(final)
        if final.exists():  # leftovers without the completion marker: never reuse
            shutil.rmtree(final)
        _build(final, progress=progress)
    return _pair(final)


def _build(final: Path, *, progress: bool) -> None:
    from .manifest import load_manifest
    from .scales import SCALES
    from .sst2 import train_pipeline

    if progress:
        print(
            f"[knowledge_retention] first run: training the default SST-2 teacher/student pair into {final} "
            "(a few minutes on 2 CPU cores; reused afterwards)",
            file=sys.stderr,
            flush=True,
        )
    final.mkdir(parents=True)
    try:
        train_pipeline(SCALES["quick"], final, progress=progress)
        manifest = load_manifest(final)
        models: dict[str, Any] = {m["path"]: m for m in manifest["models"]}
        marker = {
            "version_hash": final.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "teacher": _TEACHER,
            "student": _STUDENT,
            "teacher_dev_accuracy": models[_TEACHER]["dev_accuracy"],
            "student_dev_accuracy": models[_STUDENT]["dev_accuracy"],
            "baseline": _BASELINE,
            "baseline_dev_accuracy": models[_BASELINE]["dev_accuracy"],
            "total_seconds": manifest["timings"]["total_seconds"],
        }
        (final / COMPLETE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")  # last: complete
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
