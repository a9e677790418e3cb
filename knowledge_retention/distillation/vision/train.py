"""Training the digits teacher and its students: before (labels only), vanilla KD, FitNet.

One plain loop (:func:`train_classifier`) serves every model: AdamW, a linear warm-up then cosine
decay, a fixed shuffle per seed, the model in train mode (batch norm) and the teacher's targets
computed once before (:func:`teacher_targets`: the teacher is frozen and the training images are not
augmented, so its logits and hint maps are the same at every step). The student's three trainings of
one seed start from the same weights and see the batches in the same order; only the loss differs:

* ``hard`` (**before**): :math:`\\mathcal{L} = \\mathrm{CE}(z_s, y)`;
* ``kd`` (vanilla KD, Hinton et al. 2015): :math:`(1-w)\\,\\mathrm{CE}(z_s, y) + w\\,T^2\\,
  \\mathrm{KL}(p_t^T \\| p_s^T)` (:func:`~knowledge_retention.distillation.losses.soft_cross_entropy`;
  the teacher-entropy constant does not change the gradient);
* ``fitnet`` (FitNets, Romero et al. 2015, trained jointly as in RepDistiller): :math:`\\mathrm{CE}(z_s,
  y) + \\beta\\,\\mathrm{MSE}(r(h_s), h_t)`, with :math:`r` the learned
  :class:`~knowledge_retention.distillation.vision.models.HintRegressor` from the student's guided
  layer to the teacher's hint layer (trained with the student, then discarded).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._validation import InputError
from ..losses import hard_cross_entropy, soft_cross_entropy
from .models import HintRegressor, ModelSpec, VisionScale, build_model, count_parameters, feature_map

__all__ = ["METHODS", "accuracy_of", "save_model", "teacher_targets", "train_classifier", "train_seed", "train_teacher"]

METHODS = ("hard", "kd", "fitnet")
"""``hard`` is the **before** training; ``kd`` and ``fitnet`` the two **after** trainings."""


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def _forward_all(model: nn.Module, pixels: Tensor, *, batch_size: int = 256, hidden: int | None = None
                 ) -> tuple[Tensor, Tensor | None]:
    model.eval()
    logits, maps = [], []
    for start in range(0, len(pixels), batch_size):
        out = model(pixel_values=pixels[start:start + batch_size], output_hidden_states=hidden is not None)
        logits.append(out.logits.float())
        if hidden is not None:
            maps.append(feature_map(out.hidden_states[hidden]).float())
    return torch.cat(logits), (torch.cat(maps) if maps else None)


def accuracy_of(model: nn.Module, pixels: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(pixels, labels)``."""
    logits, _ = _forward_all(model, pixels)
    return float((logits.argmax(dim=1) == labels).double().mean())


def teacher_targets(teacher: nn.Module, pixels: Tensor, *, hint_layer: int) -> dict[str, Tensor]:
    """The frozen teacher's logits ``(N, C)`` and hint maps ``(N, C_t, H_t, W_t)`` on the training images."""
    logits, hints = _forward_all(teacher, pixels, hidden=hint_layer)
    assert hints is not None
    return {"logits": logits, "hints": hints}


def train_classifier(
    model: nn.Module,
    pixels: Tensor,
    labels: Tensor,
    *,
    scale: VisionScale,
    epochs: int,
    seed: int,
    method: str = "hard",
    targets: dict[str, Tensor] | None = None,
    guided_layer: int | None = None,
) -> dict[str, Any]:
    """Trains ``model`` in place on ``(pixels (N, 3, H, W), labels (N,))``; returns its training log.

    Args:
        method: ``"hard"`` (labels only), ``"kd"`` or ``"fitnet"`` (both need ``targets`` from
            :func:`teacher_targets`; ``fitnet`` also the student's ``guided_layer``).
        seed: fixes the batch order (the same for every method of a seed) and the regressor's start.

    Returns:
        ``{"method", "epochs", "steps", "seconds", "log": [{"epoch", "loss", "ce", "distill"}]}``.
    """
    if method not in METHODS:
        raise InputError(f"`method` must be one of {METHODS}, got {method!r}")
    if method != "hard" and targets is None:
        raise InputError(f"`targets` must hold the teacher's outputs for method {method!r}, got None")
    regressor: HintRegressor | None = None
    params = list(model.parameters())
    if method == "fitnet":
        assert targets is not None
        if guided_layer is None:
            raise InputError("`guided_layer` must be the student's hidden-state index for method 'fitnet', got None")
        with torch.no_grad():
            probe = model(pixel_values=pixels[:2], output_hidden_states=True).hidden_states[guided_layer]
        hints = targets["hints"]
        torch.manual_seed(seed + 7919)  # the regressor's start: fixed per seed, apart from the student's
        regressor = HintRegressor(feature_map(probe).shape[1], hints.shape[1], (hints.shape[2], hints.shape[3]))
        params += list(regressor.parameters())
    optimizer = torch.optim.AdamW(params, lr=scale.learning_rate, weight_decay=scale.weight_decay)
    steps_per_epoch = math.ceil(len(pixels) / scale.batch_size)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, total, max(1, total // 20)))
    generator = torch.Generator().manual_seed(seed)
    log = []
    start = time.perf_counter()
    model.train()
    if regressor is not None:
        regressor.train()
    for epoch in range(epochs):
        order = torch.randperm(len(pixels), generator=generator)
        sums = {"loss": 0.0, "ce": 0.0, "distill": 0.0}
        for first in range(0, len(pixels), scale.batch_size):
            idx = order[first:first + scale.batch_size]
            out = model(pixel_values=pixels[idx], output_hidden_states=method == "fitnet")
            ce = hard_cross_entropy(out.logits, labels[idx])
            distill = torch.zeros((), dtype=ce.dtype)
            if method == "hard":
                loss = ce
            elif method == "kd":
                assert targets is not None
                distill = soft_cross_entropy(out.logits, targets["logits"][idx], temperature=scale.temperature)
                loss = (1.0 - scale.kd_weight) * ce + scale.kd_weight * distill
            else:
                assert targets is not None and regressor is not None and guided_layer is not None
                distill = F.mse_loss(regressor(out.hidden_states[guided_layer]), targets["hints"][idx])
                loss = ce + scale.hint_weight * distill
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in (("loss", loss), ("ce", ce), ("distill", distill)):
                sums[key] += float(value.detach()) * len(idx)
        log.append({"epoch": epoch + 1, **{k: round(v / len(pixels), 6) for k, v in sums.items()}})
    model.eval()
    return {"method": method, "epochs": epochs, "steps": total, "seconds": round(time.perf_counter() - start, 2),
            "log": log}


def save_model(model: nn.Module, processor: Any, out: Path, info: dict[str, Any]) -> Path:
    """``save_pretrained`` of the model and its image processor into ``out``, with ``run_config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # type: ignore[operator]
    processor.save_pretrained(out)
    (out / "run_config.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def _entry(role: str, spec: ModelSpec, model: nn.Module, path: Path, root: Path, info: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "name": spec.name if role == "student" else "teacher", "family": spec.family,
            "path": os.path.relpath(path, root), "parameters": count_parameters(model),
            "hidden_size": (spec.config["hidden_sizes"][-1] if spec.family == "resnet" else spec.config["hidden_size"]),
            "num_layers": len(spec.config.get("hidden_sizes", [])) or spec.config["num_hidden_layers"], **info}


def train_teacher(scale: VisionScale, data: dict[str, Tensor], processor: Any, root: Path, *, seed: int
                  ) -> dict[str, Any]:
    """Trains (or reuses, when ``root/teacher/run_config.json`` has the same settings) the teacher."""
    from transformers import AutoModelForImageClassification

    path = root / "teacher"
    settings = {"scale": scale.name, "spec": scale.teacher.config, "epochs": scale.teacher_epochs, "seed": seed,
                "image_size": scale.image_size, "learning_rate": scale.learning_rate, "batch_size": scale.batch_size}
    config_file = path / "run_config.json"
    if config_file.is_file():
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        if saved.get("settings") == json.loads(json.dumps(settings)):
            model = AutoModelForImageClassification.from_pretrained(path)
            return {"model": model, "entry": _entry("teacher", scale.teacher, model, path, root,
                                                    {**saved["entry_info"], "reused": True})}
    model = build_model(scale.teacher, image_size=scale.image_size, seed=seed)
    run = train_classifier(model, data["train_pixels"], data["train_labels"], scale=scale,
                           epochs=scale.teacher_epochs, seed=seed)
    info = {"method": "hard", "seed": seed, "train_seconds": run["seconds"],
            "dev_accuracy": accuracy_of(model, data["test_pixels"], data["test_labels"]), "log": run["log"]}
    save_model(model, processor, path, {"settings": settings, "entry_info": info})
    return {"model": model, "entry": _entry("teacher", scale.teacher, model, path, root, info)}


def train_seed(scale: VisionScale, data: dict[str, Tensor], processor: Any, teacher: nn.Module, root: Path, *,
               seed: int, methods: tuple[str, ...] = METHODS, progress: bool = True) -> list[dict[str, Any]]:
    """Every student of one seed, each trained from one start with every method of ``methods`` (default
    :data:`METHODS`; a subset lets separate processes share one seed's trainings - each is the same
    whichever process runs it, and a later call reuses them).

    Returns:
        The manifest entries (role ``student``, ``name``, ``variant`` = ``before`` / ``kd`` / ``fitnet``,
        ``method``, ``seed``, ``path`` relative to ``root``, ``dev_accuracy``, ``train_seconds``,
        ``init_fingerprint``, ``parameters``, ``log``).
    """
    import hashlib

    entries = []
    targets = teacher_targets(teacher, data["train_pixels"], hint_layer=scale.teacher.hint_layer)
    for spec in scale.students:
        start = build_model(spec, image_size=scale.image_size, seed=seed)
        init = {k: v.clone() for k, v in start.state_dict().items()}
        digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in init.values())).hexdigest()[:16]
        for method in methods:
            variant = "before" if method == "hard" else method
            path = root / f"seed-{seed}" / f"{spec.name}-{variant}"
            settings = _student_settings(scale, spec, method, seed)
            saved = _saved_run(path, settings, digest)
            if saved is not None:  # an earlier run of the same settings from the same start: reuse it
                model, info = saved
            else:
                model = build_model(spec, image_size=scale.image_size, seed=seed)
                model.load_state_dict(init)
                run = train_classifier(model, data["train_pixels"], data["train_labels"], scale=scale,
                                       epochs=scale.student_epochs, seed=seed, method=method, targets=targets,
                                       guided_layer=spec.hint_layer)
                info = {"variant": variant, "method": method, "seed": seed, "init_fingerprint": digest,
                        "train_seconds": run["seconds"],
                        "dev_accuracy": accuracy_of(model, data["test_pixels"], data["test_labels"]), "log": run["log"]}
                save_model(model, processor, path, {"scale": scale.name, "settings": settings, **info})
            entries.append(_entry("student", spec, model, path, root, info))
            if progress:
                took = "reused" if saved is not None else f"{info['train_seconds']:.0f} s"
                print(f"[reproduce-vision] seed {seed} {spec.name}-{variant}: accuracy {info['dev_accuracy']:.4f} "
                      f"({took})", flush=True)
    return entries


def _student_settings(scale: VisionScale, spec: ModelSpec, method: str, seed: int) -> dict[str, Any]:
    """Everything that decides a student's training (what a reused checkpoint must match)."""
    keys = ("image_size", "max_per_split", "student_epochs", "batch_size", "learning_rate", "weight_decay")
    settings = {"scale": scale.name, **{k: getattr(scale, k) for k in keys}, "spec": spec.config,
                "hint_layer": spec.hint_layer, "teacher": scale.teacher.config, "method": method, "seed": seed}
    if method == "kd":
        settings.update(temperature=scale.temperature, kd_weight=scale.kd_weight)
    if method == "fitnet":
        settings.update(hint_weight=scale.hint_weight, teacher_hint_layer=scale.teacher.hint_layer)
    return json.loads(json.dumps(settings))


def _saved_run(path: Path, settings: dict[str, Any], digest: str) -> tuple[nn.Module, dict[str, Any]] | None:
    """``(model, info)`` of a checkpoint trained with ``settings`` from the start ``digest``, else None."""
    from transformers import AutoModelForImageClassification

    config_file = path / "run_config.json"
    if not config_file.is_file():
        return None
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    if saved.get("settings") != settings or saved.get("init_fingerprint") != digest:
        return None
    info = {k: saved[k] for k in ("variant", "method", "seed", "init_fingerprint", "train_seconds", "dev_accuracy",
                                  "log")}
    return AutoModelForImageClassification.from_pretrained(path), {**info, "reused": True}
