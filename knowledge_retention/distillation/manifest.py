"""The manifest a training run leaves behind, and the boundary to the evaluation step.

``manifest.json`` (next to ``teacher/`` and ``students/``) lists every trained model with its role::

    {"format": "knowledge_retention.distillation.manifest/v1", "scale": "cpu", ...,
     "models": [
        {"role": "teacher", "name": "teacher", "variant": null, "path": "teacher", ...},
        {"role": "student", "name": "pkd", "variant": "before", "method": "hard",
         "path": "students/pkd-before", "train_seconds": ..., "dev_accuracy": ..., ...},
        ...]}

Paths are relative to the manifest's folder. Training does not compute KRS: call
:func:`pairs_from_manifest` (or hand ``train_pipeline`` an ``evaluate_fn``) to feed every
teacher/student pair to the extraction + KRS step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._validation import InputError

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "EvaluateFn", "load_manifest", "pairs_from_manifest", "write_manifest"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "knowledge_retention.distillation.manifest/v1"

EvaluateFn = Callable[[Path], Any]
"""Signature of the evaluation step: called with the manifest's path after training."""


def write_manifest(manifest: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``manifest.json`` into ``out_dir`` atomically (temp file + rename) and return its path."""
    path = Path(out_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest (a ``manifest.json`` file or the folder holding it).

    Raises:
        ValueError: if the file is missing or is not a manifest of this format.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise InputError(f"`path` must be a manifest.json or a folder holding one, got {str(path)!r}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{str(path)!r} is not a {MANIFEST_FORMAT} manifest (format={manifest.get('format')!r})")
    manifest["root"] = str(path.parent.resolve())
    return manifest


def pairs_from_manifest(manifest: Mapping[str, Any] | str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every (teacher, student) pair of a run, with absolute model paths: the evaluation step's input.

    Args:
        manifest: a loaded manifest (from :func:`load_manifest`) or a path to one.

    Returns:
        One dict per student: ``teacher`` and ``student`` (absolute paths of saved models, each with
        its tokenizer), ``name``, ``variant`` (``"before"`` / ``"after"``), ``method`` and the
        student's ``dev_accuracy``.
    """
    if not isinstance(manifest, Mapping):
        manifest = load_manifest(manifest)
    root = Path(manifest.get("root", "."))
    teachers = [m for m in manifest["models"] if m["role"] == "teacher"]
    if len(teachers) != 1:
        raise InputError(f"the manifest must list exactly one teacher, got {len(teachers)}")
    teacher = str((root / teachers[0]["path"]).resolve())
    return [
        {
            "teacher": teacher,
            "student": str((root / m["path"]).resolve()),
            "name": m["name"],
            "variant": m["variant"],
            "method": m["method"],
            "dev_accuracy": m.get("dev_accuracy"),
        }
        for m in manifest["models"]
        if m["role"] == "student"
    ]
