"""Semantic segmentation (``task="segmentation"``): ``*ForSemanticSegmentation`` models (SegFormer, UperNet, DPT...).

* **Outputs.** Each model's logits ``(C, h, w)`` are brought to the input image's own size as the
  processors' ``post_process_semantic_segmentation`` does (bilinear, ``align_corners=False``), then
  ``argmax`` gives the label map; teacher and student are compared pixel for pixel on the image.
* **AOAg.** The mask IoU agreement of the two label maps
  (:class:`~knowledge_retention.agreement.MaskIoUAccumulator`: the teacher-vs-student confusion
  matrix over every pixel, mean IoU over the classes present), or, with ``aoag_method="kl"``, the
  per-pixel mean of exp(-KL(teacher || student)) of the resized logits
  (:class:`~knowledge_retention.agreement.ClassificationAgreementAccumulator` over pixel rows).
* **FSS.** On the backbone's hidden states (SegFormer's encoder stages), pooled as for classifiers.

Preset: α = 0.7 (``task="segmentation"``, see :data:`~knowledge_retention.score.TASK_PRESETS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..._validation import InputError
from ...agreement import ClassificationAgreementAccumulator, MaskIoUAccumulator
from ..options import EvalOptions
from .base import ModelSpec
from .detection import OutputTask, _is_head
from .image_models import ImageOutputs, ImageRunner, load_image_model, make_image_runner

__all__ = ["SegmentationAgreementAccumulator", "SemanticSegmentationTask", "resize_logits"]

SEGMENTATION_METHODS: tuple[str, ...] = ("mask_iou", "kl")


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One image's logits ``(C, h, w)`` brought to ``size = (H, W)``, as ``post_process_semantic_segmentation``."""
    return torch.nn.functional.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]


@dataclass
class SegmentationAgreementAccumulator:
    """AOAg of two segmenters: mask IoU of the label maps, and (with ``pixel_kl``) the per-pixel exp(-KL).

    ``update`` takes two lists (one entry per image) of ``{"labels": (H, W) ints, "logits": (C, h, w) or
    None}``; the logits are resized to the label map's size before the KL. States add up (``+``).
    """

    num_classes: int | None = None
    ignore_index: int | None = None
    pixel_kl: bool = False
    masks: MaskIoUAccumulator = field(init=False)
    pixels: ClassificationAgreementAccumulator = field(init=False, default_factory=ClassificationAgreementAccumulator)

    def __post_init__(self) -> None:
        self.masks = MaskIoUAccumulator(num_classes=self.num_classes, ignore_index=self.ignore_index)

    def update(self, teacher: Sequence[dict[str, Any]], student: Sequence[dict[str, Any]]) -> SegmentationAgreementAccumulator:
        if len(teacher) != len(student):
            raise InputError(f"The teacher's and the student's label maps must cover the same images: "
                             f"{len(teacher)} vs {len(student)}.")
        for t, s in zip(teacher, student, strict=True):
            self.masks.update(t["labels"][None], s["labels"][None])
            if self.pixel_kl:
                size = tuple(t["labels"].shape)
                rows = [resize_logits(torch.as_tensor(x["logits"]), size).flatten(1).T.double().numpy() for x in (t, s)]
                self.pixels.update(rows[0], rows[1])
        return self

    def __iadd__(self, other: SegmentationAgreementAccumulator) -> SegmentationAgreementAccumulator:
        self.masks += other.masks
        self.pixels += other.pixels
        return self

    def __add__(self, other: SegmentationAgreementAccumulator) -> SegmentationAgreementAccumulator:
        total = SegmentationAgreementAccumulator(self.num_classes, self.ignore_index, self.pixel_kl)
        return total.__iadd__(self).__iadd__(other)

    def reset(self) -> None:
        self.__post_init__()
        self.pixels = ClassificationAgreementAccumulator()

    def compute(self, method: str = "mask_iou") -> float:
        """``"mask_iou"`` (mean IoU of the label maps) or ``"kl"`` (mean per-pixel exp(-KL)); in [0, 1]."""
        if method == "mask_iou":
            return self.masks.compute()
        if method == "kl":
            if not self.pixel_kl:
                raise InputError("`aoag_method='kl'` for segmentation needs the logits: set pixel_kl=True.")
            return self.pixels.compute("kl")
        raise InputError(f"`aoag_method` must be one of {list(SEGMENTATION_METHODS)} for segmentation, got {method!r}.")


class SemanticSegmentationTask(OutputTask):
    """``*ForSemanticSegmentation`` models as a task of the extraction engine (module docstring).

    Args:
        pixel_kl: also keep the logits for the per-pixel exp(-KL) agreement (``aoag_method="kl"`` sets it).
        ignore_index: a label left out of the mask IoU (None: none).
        flatten_grid: as :class:`ImageClassificationTask`.
    """

    name = "semantic-segmentation"
    preset = "segmentation"
    presets = ("segmentation",)
    default_preset = "segmentation"
    aoag_methods = SEGMENTATION_METHODS
    _accepts = staticmethod(lambda model: _is_head(model, "ForSemanticSegmentation"))

    def __init__(self, *, pixel_kl: bool = False, ignore_index: int | None = None, flatten_grid: int | None = None) -> None:
        super().__init__(flatten_grid=flatten_grid)
        self.pixel_kl, self.ignore_index = bool(pixel_kl), ignore_index

    def check_options(self, opts: EvalOptions) -> None:
        super().check_options(opts)
        self.pixel_kl = bool(opts.pixel_kl) or self.method == "kl"

    def make_runner(self, model: Any, *, role: str, argument: str | None = None, preprocessor: Any = None,
                    preprocessor_argument: str | None = None) -> ImageRunner:
        loaded = load_image_model(model, argument=argument or role, heads=("ForSemanticSegmentation",))
        if not type(loaded).__name__.endswith("ForSemanticSegmentation"):
            raise InputError(f"`{argument or role}` is a {type(loaded).__name__}, not a *ForSemanticSegmentation model.")
        return make_image_runner(loaded, role=role, preprocessor=preprocessor, preprocessor_argument=preprocessor_argument,
                                 argument=argument)

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> ImageRunner:  # type: ignore[override]
        loaded = load_image_model(spec.model, argument=spec.argument, heads=("ForSemanticSegmentation",))
        device.place(loaded)
        runner = self.make_runner(loaded, role=spec.role, argument=spec.argument, preprocessor=spec.preprocessor,
                                  preprocessor_argument=spec.preprocessor_argument)
        runner.path = spec.model if isinstance(spec.model, str) else None  # type: ignore[attr-defined]
        return runner

    def outputs(self, model_output: ImageOutputs, runner: ImageRunner | None = None, inputs: Any = None) -> Any:
        """One ``{"labels": (H, W) int64, "logits": (C, h, w) float32 or None}`` per image, at the image's size."""
        logits = model_output.logits
        if logits is None or logits.ndim != 4:
            raise InputError("A segmentation model must return logits (B, C, h, w).")
        items = []
        for i, size in enumerate(model_output.image_sizes):
            labels = resize_logits(logits[i], size).argmax(dim=0).cpu().numpy().astype(np.int64)
            items.append({"labels": labels, "logits": logits[i].float().cpu().numpy() if self.pixel_kl else None})
        return items

    def new_agreement(self, options: Any = None) -> SegmentationAgreementAccumulator:
        return SegmentationAgreementAccumulator(ignore_index=self.ignore_index, pixel_kl=self.pixel_kl)

    def extra_options(self, agreement: Any) -> dict[str, Any]:
        return {"pixel_kl": self.pixel_kl, "mask_iou": agreement.compute("mask_iou"),
                "pixel_exp_neg_kl": agreement.compute("kl") if self.pixel_kl else None}

    def describe(self, runner: ImageRunner, *, pooling: str | None = None) -> dict[str, Any]:
        return {**super().describe(runner, pooling=pooling), "pixel_kl": self.pixel_kl, "ignore_index": self.ignore_index}
