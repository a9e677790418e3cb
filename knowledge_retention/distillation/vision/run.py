"""The digits reproduction of the paper's image-classification experiment, from training to the table.

:func:`reproduce_vision` runs, at a scale of :data:`~.models.SCALES`:

1. **data**: the scikit-learn digits written as an image folder and read back with
   ``datasets.load_dataset("imagefolder", data_dir=...)`` (:mod:`.data`);
2. **train** (:func:`train_pipeline`): a ResNet teacher on the labels, then for every seed each
   student three times from one start - **before** (labels only), vanilla **KD** and **FitNet**
   (:mod:`.train`); every model saved with ``save_pretrained`` and its image processor, listed in a
   ``manifest.json``;
3. **evaluate** (:func:`evaluate_run`): for every seed, every student against the teacher on the held-out
   split with :func:`knowledge_retention.extraction.evaluate_students` (the package's engine: the image
   task, each model's own image processor, teacher run once) at the paper's classification preset
   α = 0.3, final hidden states mean-pooled, cross-layer CKA kept;
4. **statistics** (:mod:`.report`): seed means, paired bootstrap intervals of each gain, Pearson r of KRS
   with accuracy, the table, figures and ``results.json``.

Nothing here computes a score: the numbers come from the engine and the package's maths.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ..._validation import InputError
from ..manifest import MANIFEST_FORMAT, load_manifest, write_manifest
from .models import VisionScale, get_scale

__all__ = ["KRS_OPTIONS", "evaluate_run", "prepare_data", "reproduce_vision", "train_pipeline"]

KRS_OPTIONS: dict[str, Any] = {"task": "classification", "alpha": 0.3, "beta": 0.7, "layers": "final",
                               "pooling": "mean", "aoag_method": "kl", "fss_method": "linear_cka"}
"""The evaluation's scoring options: the paper's classification preset (α = 0.3), FSS = linear CKA of
the final hidden states mean-pooled over positions (CNN) or patch tokens (ViT), AOAg = mean exp(−KL)."""


def _say(progress: bool, start: float, message: str) -> None:
    if progress:
        print(f"[reproduce-vision +{time.perf_counter() - start:6.0f}s] {message}", file=sys.stderr, flush=True)


def prepare_data(scale: VisionScale, data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The image folder (written if needed), the ``datasets`` splits and the training tensors.

    Returns:
        ``{"info", "dataset" (DatasetDict), "train_pixels", "train_labels", "test_pixels", "test_labels"}``.
    """
    from .data import load_digits_imagefolder, make_image_processor, pixel_tensors, write_digits_imagefolder

    info = write_digits_imagefolder(data_dir, image_size=scale.image_size, max_per_split=scale.max_per_split)
    dataset = load_digits_imagefolder(data_dir)
    processor = make_image_processor(scale.image_size)
    train_pixels, train_labels = pixel_tensors(dataset["train"], processor)
    test_pixels, test_labels = pixel_tensors(dataset["test"], processor)
    return {"info": info, "dataset": dataset, "processor": processor, "train_pixels": train_pixels,
            "train_labels": train_labels, "test_pixels": test_pixels, "test_labels": test_labels}


def _seed_job(scale: VisionScale, data_dir: str, root: str, seed: int, progress: bool) -> list[dict[str, Any]]:
    """One seed's students in a worker process (one torch thread)."""
    import torch
    from transformers import AutoModelForImageClassification

    from .train import train_seed

    torch.set_num_threads(1)
    data = prepare_data(scale, data_dir)
    teacher = AutoModelForImageClassification.from_pretrained(Path(root) / "teacher")
    return train_seed(scale, data, data["processor"], teacher, Path(root), seed=seed, progress=progress)


def train_pipeline(
    scale: str | VisionScale,
    work_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the teacher (once, reused when its settings match) and every seed's students.

    Args:
        scale: a name of :data:`~.models.SCALES` or a :class:`~.models.VisionScale`.
        work_dir: where the models and ``manifest.json`` go (``teacher/``, ``seed-<s>/<student>-<variant>/``).
        data_dir: the image folder (default ``<work_dir>/imagefolder``).
        seeds: student seeds (default: the scale's); the teacher uses the scale's first seed.
        jobs: seeds trained in parallel processes.
        progress: one line per model on stderr.

    Returns:
        The manifest (``format``, ``scale``, ``data``, ``models``; ``root`` = ``work_dir``).
    """
    import torch

    cfg = get_scale(scale)
    seeds = list(cfg.seeds if seeds is None else seeds)
    if not seeds:
        raise InputError("`seeds` must name at least one seed, got none")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"`jobs` must be an int >= 1, got {jobs!r}")
    root = Path(work_dir).resolve()
    data_dir = Path(data_dir) if data_dir is not None else root / "imagefolder"
    start = time.perf_counter()
    data = prepare_data(cfg, data_dir)
    from .train import train_seed, train_teacher

    teacher = train_teacher(cfg, data, data["processor"], root, seed=cfg.seeds[0])  # one teacher whatever `seeds`
    _say(progress, start, f"teacher: accuracy {teacher['entry']['dev_accuracy']:.4f}"
                          f"{' (reused)' if teacher['entry'].get('reused') else ''}")
    entries: list[dict[str, Any]] = []
    if jobs == 1:
        torch.set_num_threads(1)
        for seed in seeds:
            entries += train_seed(cfg, data, data["processor"], teacher["model"], root, seed=seed, progress=progress)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_seed_job, cfg, str(data_dir), str(root), seed, progress) for seed in seeds]
            for future in futures:
                entries += future.result()
    manifest = {
        "format": MANIFEST_FORMAT, "scale": cfg.name, "task": "image-classification",
        "data": {k: v for k, v in data["info"].items() if k != "root"}, "seeds": seeds,
        "training_seconds": round(time.perf_counter() - start, 1),
        "models": [teacher["entry"], *entries],
    }
    write_manifest(manifest, root)
    return load_manifest(root)


def evaluate_run(
    manifest: str | os.PathLike[str] | dict[str, Any],
    test: Any,
    *,
    batch_size: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores every student of a training run against its teacher with the package's engine.

    One :func:`knowledge_retention.extraction.evaluate_students` call per seed (the teacher runs once per
    batch for all of that seed's students) with :data:`KRS_OPTIONS`, ``keep_arrays=True`` and the
    cross-layer CKA matrix, on the held-out split as ``datasets`` reads it (``image`` and ``label``
    columns; each model preprocesses with the image processor saved in its folder).

    Returns:
        ``{"teacher": {...}, "students": [rows], "arrays": {seed: {"<name>-<variant>": {teacher_features,
        student_features, teacher_logits, student_logits}}}, "labels"}``; a row holds ``name``,
        ``variant``, ``method``, ``seed``, ``accuracy``, ``quality_retained``, ``krs``, ``fss``, ``aoag``,
        ``mean_kl``, ``top1_agreement``, ``parameters``, ``num_layers``, ``hidden_size``, ``family``,
        ``train_seconds``, ``init_fingerprint`` and ``extraction`` (the result's ``to_dict``).
    """
    import numpy as np

    from ...diagnostics import accuracy_score, quality_retained
    from ...extraction import evaluate_students

    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    root = Path(manifest.get("root", "."))
    teacher_entry = next(m for m in manifest["models"] if m["role"] == "teacher")
    teacher_path = str((root / teacher_entry["path"]).resolve())
    labels = np.asarray(test["label"])
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    arrays: dict[int, dict[str, dict[str, Any]]] = {}
    teacher_accuracy: float | None = None
    for seed in manifest["seeds"]:
        entries = {f"{m['name']}-{m['variant']}": m for m in manifest["models"]
                   if m["role"] == "student" and m["seed"] == seed}
        results = evaluate_students(
            teacher_path, {key: str((root / m["path"]).resolve()) for key, m in entries.items()}, test,
            image_column="image", label_column="label", **KRS_OPTIONS, batch_size=batch_size, cross_layer=True,
            keep_arrays=True, progress=progress,
        )
        for key, result in results.items():
            entry = entries[key]
            assert result.teacher_logits is not None and result.student_logits is not None
            assert result.teacher_features is not None and result.student_features is not None
            if teacher_accuracy is None:
                teacher_accuracy = accuracy_score(labels, result.teacher_logits.argmax(axis=1))
            accuracy = accuracy_score(labels, result.student_logits.argmax(axis=1))
            arrays.setdefault(seed, {})[key] = {
                "teacher_features": result.teacher_features[-1], "student_features": result.student_features[-1],
                "teacher_logits": result.teacher_logits, "student_logits": result.student_logits}
            rows.append({
                "name": entry["name"], "variant": entry["variant"], "method": entry["method"], "seed": seed,
                "family": entry["family"], "init_fingerprint": entry.get("init_fingerprint"),
                "accuracy": accuracy, "quality_retained": quality_retained(accuracy, teacher_accuracy),
                "krs": result.krs, "fss": result.fss, "aoag": result.aoag, "mean_kl": result.mean_kl,
                "top1_agreement": result.top1_agreement, "parameters": entry.get("parameters"),
                "num_layers": entry.get("num_layers"), "hidden_size": entry.get("hidden_size"),
                "train_seconds": entry.get("train_seconds"), "extraction": result.to_dict(),
            })
            _say(progress, start, f"seed {seed} {key}: accuracy {accuracy:.4f}, KRS {result.krs:.4f} "
                                  f"(FSS {result.fss:.4f}, AOAg {result.aoag:.4f})")
    teacher = {"accuracy": teacher_accuracy, "family": teacher_entry["family"],
               **{k: teacher_entry.get(k) for k in ("parameters", "num_layers", "hidden_size", "train_seconds")}}
    return {"teacher": teacher, "students": rows, "arrays": arrays, "labels": labels}


def reproduce_vision(
    scale: str | VisionScale,
    output_dir: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    skip_training: bool = False,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    batch_size: int = 128,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """The whole digits reproduction: train, evaluate with the engine, tabulate into ``output_dir``.

    Args:
        scale: ``"smoke"`` (CI, under a minute), ``"cpu"`` (the committed run) or a :class:`VisionScale`.
        output_dir: where ``results.json``, ``table.md`` and the figures go.
        work_dir: models and ``manifest.json`` (default ``<output_dir>/checkpoints``, git-ignored).
        data_dir: the image folder (default ``<work_dir>/imagefolder``).
        skip_training: evaluate the models already in ``work_dir``.
        seeds: student seeds (default the scale's).
        jobs: seeds trained in parallel processes.
        batch_size: images per forward pass of the evaluation (does not change the scores).
        progress: progress lines on stderr.
        command: the command line recorded in the results.

    Returns:
        The results written to ``results.json`` (see :func:`~.report.assemble_results`).
    """
    from .report import assemble_results, tabulate

    cfg = get_scale(scale)
    out = Path(output_dir)
    work = Path(work_dir) if work_dir is not None else out / "checkpoints"
    data_dir = Path(data_dir) if data_dir is not None else work / "imagefolder"
    start = time.perf_counter()
    if skip_training:
        if not (work / "manifest.json").is_file():
            raise InputError(f"`skip_training`: {str(work)!r} holds no manifest.json of an earlier run; train first "
                             "(drop --skip-training) or give its --work-dir")
        manifest = load_manifest(work)
    else:
        manifest = train_pipeline(cfg, work, data_dir=data_dir, seeds=seeds, jobs=jobs, progress=progress)
    train_wall = time.perf_counter() - start
    from .data import load_digits_imagefolder

    test = load_digits_imagefolder(data_dir)["test"]
    evaluated = evaluate_run(manifest, test, batch_size=batch_size, progress=progress)
    evaluation_seconds = time.perf_counter() - start - train_wall
    results = assemble_results(cfg, manifest, evaluated, command=command, timings={
        "training_wall_seconds": round(train_wall, 1), "training_reused": skip_training,
        "evaluation_seconds": round(evaluation_seconds, 1)}, progress=progress)
    results["timings"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    return tabulate(results, out)
