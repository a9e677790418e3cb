"""Object detectors (``task="detection"``): ``*ForObjectDetection`` models of transformers (DETR family, YOLOS...).

* **Outputs.** Each model's detections come from its own processor's ``post_process_object_detection``
  (boxes ``x1, y1, x2, y2`` in the pixels of the input image, scores above ``detection_threshold``,
  class labels), so a teacher and a student with different input sizes are compared on the same image.
* **AOAg.** The matched-box IoU agreement of :class:`~knowledge_retention.agreement.BoxIoUAccumulator`
  (Hungarian matching of the teacher's and the student's boxes per image, IoU summed over matches and
  divided by the larger count; an image where neither detects anything agrees fully). Reported beside
  it: the class agreement of the matched boxes (matched pairs with overlapping boxes whose labels are equal).
* **FSS.** On the backbone: YOLOS's ViT blocks (CLS and detection tokens left out of ``"mean"``), or a
  DETR-family model's convolutional backbone maps followed by its encoder's hidden states.

Preset: α = 0.7 (``task="detection"``, see :data:`~knowledge_retention.score.TASK_PRESETS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..._validation import InputError
from ...agreement import BoxIoUAccumulator, box_iou
from ...score import knowledge_retention_score
from ..options import EvalOptions
from ..result import ExtractionResult
from ..streams import PooledBatch, Streams, merge
from .base import Batch, ModelSpec, Plan
from .image import ImageClassificationTask
from .image_inputs import _architectures
from .image_models import (
    ImageOutputs,
    ImageRunner,
    TransformersImageRunner,
    load_image_model,
    make_image_runner,
)

__all__ = ["DetectionAgreementAccumulator", "DetectionRunner", "ObjectDetectionTask", "OutputStream", "OutputTask"]

#: Score threshold of the processors' own default.
DEFAULT_DETECTION_THRESHOLD = 0.5


@dataclass
class DetectionAgreementAccumulator:
    """AOAg of two detectors: matched-box IoU over images, and the class agreement of matched boxes.

    ``update`` takes two lists (one entry per image) of detections ``{"boxes": (M, 4), "labels": (M,),
    "scores": (M,)}``. States add up (``+``), so batches and processes merge.
    """

    boxes: BoxIoUAccumulator = field(default_factory=BoxIoUAccumulator)
    matched: int = 0
    same_class: int = 0

    def update(self, teacher: Sequence[dict[str, Any]], student: Sequence[dict[str, Any]]) -> DetectionAgreementAccumulator:
        if len(teacher) != len(student):
            raise InputError(f"The teacher's and the student's detections must cover the same images: "
                             f"{len(teacher)} vs {len(student)}.")
        self.boxes.update([t["boxes"] for t in teacher], [s["boxes"] for s in student])
        for t, s in zip(teacher, student, strict=True):
            tb, sb = np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4), np.asarray(s["boxes"], dtype=np.float64).reshape(-1, 4)
            if len(tb) == 0 or len(sb) == 0:
                continue
            iou = box_iou(tb, sb)  # the same class-agnostic matching as BoxIoUAccumulator
            rows, cols = linear_sum_assignment(iou, maximize=True)
            overlapping = iou[rows, cols] > 0
            self.matched += int(overlapping.sum())
            labels_t, labels_s = np.asarray(t["labels"]).reshape(-1), np.asarray(s["labels"]).reshape(-1)
            self.same_class += int((labels_t[rows] == labels_s[cols])[overlapping].sum())
        return self

    def __iadd__(self, other: DetectionAgreementAccumulator) -> DetectionAgreementAccumulator:
        self.boxes += other.boxes
        self.matched += other.matched
        self.same_class += other.same_class
        return self

    def __add__(self, other: DetectionAgreementAccumulator) -> DetectionAgreementAccumulator:
        return DetectionAgreementAccumulator().__iadd__(self).__iadd__(other)

    def reset(self) -> None:
        self.boxes, self.matched, self.same_class = BoxIoUAccumulator(), 0, 0

    def compute(self, method: str = "box_iou") -> float:
        """``"box_iou"`` (AOAg, in [0, 1]) or ``"class"`` (share of matched boxes of the same class; NaN
        when nothing was matched)."""
        if method == "box_iou":
            return self.boxes.compute()
        if method == "class":
            return self.same_class / self.matched if self.matched else float("nan")
        raise InputError(f"`aoag_method` must be 'box_iou' or 'class' for detection, got {method!r}.")

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.boxes.n, "total": self.boxes.total, "matched": self.matched, "same_class": self.same_class}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DetectionAgreementAccumulator:
        return cls(BoxIoUAccumulator(n=int(state["n"]), total=float(state["total"])), int(state["matched"]),
                   int(state["same_class"]))


@dataclass
class DetectionRunner(TransformersImageRunner):
    """A transformers detector: backbone states for FSS, detections post-processed by its processor."""

    threshold: float = DEFAULT_DETECTION_THRESHOLD

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, Any]:
        backbone = _conv_backbone(self.model)
        maps: list[torch.Tensor] = []
        handle = backbone.register_forward_hook(lambda _m, _i, out: maps.extend(_feature_maps(out))) if backbone else None
        try:
            out = self.model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            if handle is not None:
                handle.remove()
        hidden = list(getattr(out, "hidden_states", None) or [])
        if not hidden:
            hidden = maps + list(getattr(out, "encoder_hidden_states", None) or [])
            if not self.layer_names:
                self.layer_names = [f"backbone_{i}" for i in range(len(maps))] + [
                    f"encoder_{i}" for i in range(len(hidden) - len(maps))]
        elif not self.layer_names:
            self.layer_names = ["embeddings", *(f"layer_{i}" for i in range(1, len(hidden)))]
        if not hidden:
            raise InputError(f"The {self.role} ({type(self.model).__name__}) returned no hidden states to compare.")
        return hidden, None, out

    def outputs(self, hidden: Sequence[torch.Tensor], logits: torch.Tensor | None, pixels: torch.Tensor) -> ImageOutputs:
        out = super().outputs(hidden, logits, pixels)
        detection_tokens = int(getattr(self.model.config, "num_detection_tokens", 0) or 0)
        patch = self.patch_size()
        if detection_tokens and patch is not None:  # YOLOS: [CLS, patches..., detection tokens]
            grid = (int(pixels.shape[-2]) // patch[0], int(pixels.shape[-1]) // patch[1])
            out.prefix_tokens = tuple(1 if s.ndim == 3 else 0 for s in hidden)
            out.suffix_tokens = tuple(detection_tokens if s.ndim == 3 else 0 for s in hidden)
            out.grids = tuple(grid if s.ndim == 3 else g for s, g in zip(hidden, out.grids, strict=True))
            self.last_prefix_tokens, self.last_grids = out.prefix_tokens, out.grids
        maps = [s for s in hidden if s.ndim == 4]
        if maps and not detection_tokens:  # a DETR encoder reads the last backbone map, position by position
            last = (int(maps[-1].shape[2]), int(maps[-1].shape[3]))
            out.grids = tuple(last if s.ndim == 3 and s.shape[1] == last[0] * last[1] else g
                              for s, g in zip(hidden, out.grids, strict=True))
            self.last_grids = out.grids
        return out

    def detections(self, outputs: ImageOutputs) -> list[dict[str, np.ndarray]]:
        """The processor's ``post_process_object_detection`` at the images' own sizes, as numpy arrays."""
        processed = self.preprocessor.post_process_object_detection(
            outputs.raw, threshold=self.threshold, target_sizes=[list(size) for size in outputs.image_sizes])
        return [{key: value.detach().float().cpu().numpy() if key != "labels" else value.detach().cpu().numpy()
                 for key, value in item.items() if key in ("boxes", "labels", "scores")} for item in processed]

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}|threshold={self.threshold!r}"


def _conv_backbone(model: torch.nn.Module) -> torch.nn.Module | None:
    """The convolutional backbone inside a DETR-family model (``model.model.backbone.model``), if any."""
    inner = getattr(getattr(getattr(model, "model", None), "backbone", None), "model", None)
    return inner if isinstance(inner, torch.nn.Module) else None


def _feature_maps(out: Any) -> list[torch.Tensor]:
    maps = getattr(out, "feature_maps", None)
    if maps is None and isinstance(out, (list, tuple)):
        maps = [m for m in out if isinstance(m, torch.Tensor) and m.ndim == 4]
    return [m for m in (maps or []) if isinstance(m, torch.Tensor) and m.ndim == 4]


class OutputStream:
    """A classifier stream for the features (FSS) beside an agreement accumulator fed whole outputs
    (detections, label maps) instead of logits rows."""

    def __init__(self, features: Streams, agreement: Any) -> None:
        self.features, self.agreement = features, agreement

    def skip(self, batch: Any) -> None:
        self.features.skip(batch)

    def update(self, teacher: PooledBatch, student: PooledBatch, batch: Any) -> None:
        self.features.update(teacher, student, batch)
        self.agreement.update(teacher.logits, student.logits)

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        return {**self.features.payload(counters), "outputs": self.agreement}


class OutputTask(ImageClassificationTask):
    """An image task whose outputs are not logits rows: :meth:`new_agreement` compares whole outputs."""

    unused_teacher_cache = " (its outputs are detections / label maps, not arrays the cache stores)"

    def check_options(self, opts: EvalOptions) -> None:
        super().check_options(opts)
        if opts.teacher_cache is not None:
            raise InputError(f"`teacher_cache` is not used by task={self.name!r}{self.unused_teacher_cache}; leave it unset.")

    def new_agreement(self, options: Any = None) -> Any:
        raise NotImplementedError

    def _num_outputs(self, out: ImageOutputs) -> int | None:
        return None

    def _agreement(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        return None  # the outputs go to new_agreement(), not to a logits accumulator

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> OutputStream:  # type: ignore[override]
        return OutputStream(super().new_stream(plan, spec, opts, capacity=capacity), self.new_agreement(opts))

    def merge(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        merged = merge(payloads)
        total = self.new_agreement()
        for payload in payloads:
            total += payload["outputs"]
        merged["outputs"] = total
        return merged

    def teacher(self, runner: ImageRunner, batch: Batch, layers: list[int], opts: EvalOptions, *,  # type: ignore[override]
                record: bool) -> PooledBatch:
        return self.pool(runner(batch.data, batch.indices), layers, runner=runner)

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        result = super().result(merged, plan, context, opts)
        result.aoag = merged["outputs"].compute(self.method)
        result.aoag_method = self.method
        result.krs = knowledge_retention_score(result.fss, result.aoag, alpha=result.alpha, beta=result.beta)
        result.options = {**result.options, "aoag_method": self.method, **self.extra_options(merged["outputs"])}
        return result

    def extra_options(self, agreement: Any) -> dict[str, Any]:
        return {}


class ObjectDetectionTask(OutputTask):
    """``*ForObjectDetection`` models as a task of the extraction engine (module docstring).

    Args:
        threshold: detections scoring below it are dropped (``post_process_object_detection``); the
            engine sets it from the ``detection_threshold`` option.
        flatten_grid: as :class:`ImageClassificationTask`.
    """

    name = "object-detection"
    preset = "detection"
    presets = ("detection",)
    default_preset = "detection"
    aoag_methods = ("box_iou",)
    _accepts = staticmethod(lambda model: _is_head(model, "ForObjectDetection"))

    def __init__(self, *, threshold: float = DEFAULT_DETECTION_THRESHOLD, flatten_grid: int | None = None) -> None:
        super().__init__(flatten_grid=flatten_grid)
        self.threshold = _check_threshold(threshold)

    def check_options(self, opts: EvalOptions) -> None:
        super().check_options(opts)
        self.threshold = _check_threshold(opts.detection_threshold)

    def make_runner(self, model: Any, *, role: str, argument: str | None = None, preprocessor: Any = None,
                    preprocessor_argument: str | None = None) -> ImageRunner:
        loaded = load_image_model(model, argument=argument or role, heads=("ForObjectDetection",))
        return self._runner(loaded, role, argument, preprocessor, preprocessor_argument)

    def _runner(self, loaded: torch.nn.Module, role: str, argument: str | None, preprocessor: Any,
                preprocessor_argument: str | None) -> DetectionRunner:
        if not type(loaded).__name__.endswith("ForObjectDetection"):
            raise InputError(f"`{argument or role}` is a {type(loaded).__name__}, not a *ForObjectDetection model.")
        base = make_image_runner(loaded, role=role, preprocessor=preprocessor, preprocessor_argument=preprocessor_argument,
                                 argument=argument)
        if not callable(getattr(base.preprocessor, "post_process_object_detection", None)):
            raise InputError(f"`{preprocessor_argument or role + '_preprocessor'}` ({type(base.preprocessor).__name__}) "
                             "has no post_process_object_detection; pass the detector's own image processor.")
        return DetectionRunner(loaded, base.preprocessor, role, base.device, threshold=self.threshold)

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> ImageRunner:  # type: ignore[override]
        loaded = load_image_model(spec.model, argument=spec.argument, heads=("ForObjectDetection",))
        device.place(loaded)
        runner = self._runner(loaded, spec.role, spec.argument, spec.preprocessor, spec.preprocessor_argument)
        runner.path = spec.model if isinstance(spec.model, str) else None  # type: ignore[attr-defined]
        return runner

    def outputs(self, model_output: ImageOutputs, runner: ImageRunner | None = None, inputs: Any = None) -> Any:
        """The detections of the batch: one ``{"boxes", "labels", "scores"}`` dict of numpy arrays per image."""
        if not isinstance(runner, DetectionRunner):
            raise InputError("Detections need the detector's runner (ObjectDetectionTask.make_runner).")
        return runner.detections(model_output)

    def new_agreement(self, options: Any = None) -> DetectionAgreementAccumulator:
        return DetectionAgreementAccumulator()

    def extra_options(self, agreement: Any) -> dict[str, Any]:
        return {"detection_threshold": self.threshold, "class_agreement": agreement.compute("class")}

    def describe(self, runner: ImageRunner, *, pooling: str | None = None) -> dict[str, Any]:
        return {**super().describe(runner, pooling=pooling), "detection_threshold": self.threshold}


def _is_head(model: Any, suffix: str) -> bool:
    if isinstance(model, torch.nn.Module):
        return type(model).__name__.endswith(suffix)
    return any(a.endswith(suffix) for a in _architectures(model) or [])


def _check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"`detection_threshold` must be a score in [0, 1], got {value!r}.")
    return float(value)
