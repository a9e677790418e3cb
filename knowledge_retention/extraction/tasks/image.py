r"""Image classifiers (``task="classification"`` on image models): images in, pooled hidden states and logits out.

Each model sees the images through its own preprocessing, so a 224-pixel teacher and a 160-pixel
student each get what they were trained on (:mod:`.image_models`: transformers models with their image
processor, timm with its data config, torchvision with the transform given). Features are the
``hidden_states`` (index 0 the embeddings or stem, -1 the last block or stage), pooled as
:func:`~.image_inputs.pool_image_state` says: ``"mean"`` by default (every position of a CNN map, every
patch of a ViT, prefix tokens left out), ``"cls"``, ``"flatten"`` (``flatten_grid=k`` pools to
:math:`k \times k` first) or ``"positions"``. ``layers="uniform"`` pairs CNN stages with ViT blocks
(:func:`~.image_inputs.resolve_image_layers`). Everything else (streams, accumulators, result, teacher
cache, accelerate) is the text classifier's: one row of logits per image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..._validation import InputError, check_choice
from ...methods import CLASSIFICATION_METHODS
from ...score import DEFAULT_AOAG, TASK_PRESETS, resolve_weights
from ...similarity import FSS_METHODS
from ..options import EvalOptions
from ..result import ExtractionResult
from ..streams import PooledBatch, Streams
from ..teacher_cache import CACHE_VERSION, model_fingerprint
from .base import Batch, ModelSpec, Plan
from .image_inputs import (
    IMAGE_POOLINGS,
    ImagePooling,
    ImageSource,
    _architectures,
    _has_head,
    check_grids,
    pool_image_state,
    resolve_image_layers,
)
from .image_models import ImageOutputs, ImageRunner, image_backend, load_image_model, make_image_runner
from .text import LM_ONLY, TextClassificationTask

__all__ = [
    "IMAGE_POOLINGS", "ImageClassificationTask", "ImagePooling", "ImageSource", "check_grids", "is_image_model",
    "pool_image_state", "resolve_image_layers",
]

#: text options refused for image models, with the reason
_TEXT_ONLY = {"text_column": " (images are read from `image_column`)",
              "max_length": " (each model's image processor sets its input size)"}
_HEADS = ("ForObjectDetection", "ForSemanticSegmentation")


def is_image_model(model: Any) -> bool:
    """An image classifier (or backbone) object of transformers / timm / torchvision, or a folder whose config
    names an image classifier; detectors and segmenters have their own tasks."""
    if isinstance(model, torch.nn.Module):
        return image_backend(model) is not None and not _has_head(model, _HEADS)
    architectures = _architectures(model)
    return bool(architectures) and any(  # type: ignore[arg-type]
        a.endswith(("ForImageClassification", "ForImageClassificationWithTeacher")) for a in architectures  # type: ignore[union-attr]
    )


class ImageClassificationTask(TextClassificationTask):
    """Image classifiers of transformers, timm and torchvision as a task of the extraction engine.

    Args:
        flatten_grid: for ``pooling="flatten"``, pool each map to ``k x k`` first (None: full size);
            the engine sets it from the ``flatten_grid`` option.
        return_nodes: torchvision node names to read (None: the model's stages).
    """

    name = "image-classification"
    presets = tuple(k for k in TASK_PRESETS if k != "causal-lm")
    default_preset = "classification"
    input_kind = "image"
    default_pooling = "mean"
    poolings = IMAGE_POOLINGS
    #: the AOAg methods this task computes
    aoag_methods: tuple[str, ...] = (*CLASSIFICATION_METHODS, "mse")
    _accepts = staticmethod(is_image_model)

    def __init__(self, *, flatten_grid: int | None = None, return_nodes: Sequence[str] | None = None) -> None:
        super().__init__()
        self.flatten_grid = _check_grid(flatten_grid)
        self.return_nodes = list(return_nodes) if return_nodes else None
        self.pooling: str = self.default_pooling

    # -- the pieces, usable without the engine -----------------------------------------------------
    @classmethod
    def claims(cls, task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> bool:
        models = [teacher, *students.values()]
        if task is not None and task not in cls.presets:
            return False
        flags = [cls._accepts(m) for m in models]
        if any(flags) and not all(flags):
            kinds = ", ".join(f"{'teacher' if i == 0 else 'student'} {type(m).__name__ if isinstance(m, torch.nn.Module) else m!r}"
                              for i, m in enumerate(models) if not flags[i])
            raise InputError(f"An image model can only be compared with image models of the same task; not with {kinds}.")
        return all(flags)

    def accepts(self, model_or_path: Any) -> bool:
        return bool(self._accepts(model_or_path))

    def make_runner(self, model: Any, *, role: str, argument: str | None = None, preprocessor: Any = None,
                    preprocessor_argument: str | None = None) -> ImageRunner:
        """The model's runner (a path is loaded with its head), with its own preprocessing."""
        loaded = load_image_model(model, argument=argument or role)
        return make_image_runner(loaded, role=role, preprocessor=preprocessor, preprocessor_argument=preprocessor_argument,
                                 return_nodes=self.return_nodes, argument=argument)

    def pool(self, outputs: ImageOutputs, layers: Sequence[int], pooling: str | None = None, *,
             runner: ImageRunner | None = None) -> PooledBatch:
        """Pools the given hidden states (:func:`pool_image_state`); the outputs (:meth:`outputs`) pass through."""
        pooling = pooling or self.pooling
        features = {
            layer: pool_image_state(outputs.hidden_states[layer], pooling,  # type: ignore[arg-type]
                                    prefix_tokens=outputs.prefix_tokens[layer], grid=outputs.grids[layer],
                                    flatten_grid=self.flatten_grid,
                                    suffix_tokens=outputs.suffix_tokens[layer] if outputs.suffix_tokens else 0)
            for layer in layers
        }
        return PooledBatch(features, self.outputs(outputs, runner))

    def outputs(self, model_output: ImageOutputs, runner: ImageRunner | None = None, inputs: Any = None) -> Any:
        """What the output agreement compares: the logits ``(B, C)`` for a classifier."""
        return model_output.logits

    resolve_layers = staticmethod(resolve_image_layers)

    def describe(self, runner: ImageRunner, *, pooling: str | None = None) -> dict[str, Any]:
        """What the result and report say about one model's features."""
        prefix = max(runner.last_prefix_tokens, default=0)
        pooling = pooling or self.pooling
        return {
            "backend": runner.backend,
            "model_class": type(runner.model).__name__,
            "preprocessor": type(runner.preprocessor).__name__,
            "image_size": list(runner.last_pixel_size) if runner.last_pixel_size else None,
            "layer_names": list(runner.layer_names),
            "pooling": pooling,
            "flatten_grid": self.flatten_grid if pooling == "flatten" else None,
            "prefix_tokens": prefix,
            "prefix_tokens_pooled": bool(prefix) and pooling == "cls",
            "grids": [list(g) if g else None for g in runner.last_grids],
        }

    # -- the engine's interface --------------------------------------------------------------------
    def check_options(self, opts: EvalOptions) -> None:
        given = [k for k in LM_ONLY if not opts.is_default(k)]
        if given:
            raise InputError(f"{', '.join(f'`{k}`' for k in given)} apply to task='causal-lm' only; got task={opts.task!r}.")
        opts.refuse_unused(_TEXT_ONLY, self.name)
        self.pooling = opts.pooling if opts.given("pooling") or not opts.is_default("pooling") else self.default_pooling
        check_choice(self.pooling, "pooling", IMAGE_POOLINGS)
        self.flatten_grid = _check_grid(opts.flatten_grid)
        if self.flatten_grid is not None and self.pooling != "flatten":
            raise InputError(f"`flatten_grid={self.flatten_grid}` applies to pooling='flatten' only; got pooling={self.pooling!r}.")
        self.return_nodes = list(opts.return_nodes) if opts.return_nodes else None
        task = str(opts.task)
        check_choice(task, "task", self.presets)
        self.weights = resolve_weights(task, opts.alpha, opts.beta)
        check_choice(opts.fss_method, "fss_method", FSS_METHODS)
        if opts.fss_method == "rbf_cka" and not opts.keep_arrays:
            raise InputError("`fss_method='rbf_cka'` needs the full N x N Gram matrices: pass keep_arrays=True, or use "
                             "'linear_cka' / 'debiased_cka'.")
        if self.pooling == "positions":
            for name, value in (("teacher_cache", opts.teacher_cache), ("keep_arrays", opts.keep_arrays or None)):
                if value is not None:
                    raise InputError(f"`{name}` keeps one row per image; pooling='positions' gives one per position: "
                                     f"leave {name} unset or use another pooling.")
        self.temperature = float(opts.temperature)
        self.method = opts.aoag_method if opts.aoag_method is not None else DEFAULT_AOAG.get(task, "kl")
        check_choice(self.method, "aoag_method", self.aoag_methods)

    def make_source(self, dataset: Any, opts: EvalOptions) -> ImageSource:  # type: ignore[override]
        return ImageSource(dataset, image_column=opts.image_column, label_column=opts.label_column,
                           max_examples=opts.max_examples)

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> ImageRunner:  # type: ignore[override]
        loaded = load_image_model(spec.model, argument=spec.argument)
        device.place(loaded)
        runner = make_image_runner(loaded, role=spec.role, preprocessor=spec.preprocessor,
                                   preprocessor_argument=spec.preprocessor_argument, return_nodes=self.return_nodes,
                                   argument=spec.argument)
        runner.path = os.fspath(spec.model) if isinstance(spec.model, (str, os.PathLike)) else (  # type: ignore[attr-defined]
            getattr(getattr(loaded, "config", None), "name_or_path", None) or None)
        self.headless[spec.name] = False
        return runner

    def probe(self, source: ImageSource, runner: ImageRunner, opts: EvalOptions) -> dict[str, Any]:  # type: ignore[override]
        images, _ = source.batch([0])
        out = runner(images, [0])
        return {
            "n_states": len(out.hidden_states),
            "widths": [int(h.shape[1] if h.ndim == 4 else h.shape[-1]) for h in out.hidden_states],
            "num_outputs": self._num_outputs(out),
            "pooling": self.pooling,
            "grids": [list(g) if g else None for g in out.grids],
            "rows": [_rows(h, p, g, s) for h, p, g, s in zip(out.hidden_states, out.prefix_tokens, out.grids,
                                                            out.suffix_tokens or (0,) * len(out.grids), strict=True)],
            "layer_names": list(runner.layer_names),
            "image": self.describe(runner),
        }

    def _num_outputs(self, out: ImageOutputs) -> int | None:
        return None if out.logits is None else int(out.logits.shape[-1])

    def plan(self, spec: ModelSpec, t_info: dict[str, Any], s_info: dict[str, Any], opts: EvalOptions,
             names: dict[str, str]) -> Plan:
        n_t, n_s = int(t_info["n_states"]), int(s_info["n_states"])
        pairs = resolve_image_layers(opts.layers, n_t, n_s)
        if opts.fss_method == "cosine":
            for t, s in pairs:
                if int(t_info["widths"][t]) != int(s_info["widths"][s]):
                    raise InputError(f"`fss_method='cosine'` needs equal widths, but teacher layer {t} has width "
                                     f"{t_info['widths'][t]} and {spec.role} layer {s} has {s_info['widths'][s]}; use 'linear_cka'.")
        notes: list[str] = []
        cross = spec.cross_layer
        if self.pooling == "positions":
            for t, s in pairs:
                if t_info["grids"][t] is None or t_info["grids"][t] != s_info["grids"][s]:
                    raise InputError(f"`pooling='positions'` needs equal grids; teacher hidden state {t} is "
                                     f"{t_info['grids'][t]} and {spec.role} hidden state {s} is {s_info['grids'][s]}. "
                                     "Use 'mean', or 'flatten' with flatten_grid.")
            if cross:
                notes.append("No cross-layer CKA matrix with pooling='positions' (the layers' grids differ).")
                cross = False
        agreement = self._agreement(t_info["num_outputs"], s_info["num_outputs"], spec, names, notes)
        if cross:
            t_layers, s_layers = list(range(n_t)), list(range(n_s))
        else:
            t_layers, s_layers = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
        rows = max([int(t_info["rows"][t]) for t in t_layers] + [int(s_info["rows"][s]) for s in s_layers]) \
            if self.pooling == "positions" else 1
        extra = {"agreement": agreement, "method_used": None if agreement is None else self.method,
                 "warn": [notes[-1]] if agreement is None and notes else [], "cross_layer": cross, "rows": rows,
                 "image": s_info["image"]}
        return Plan(pairs, list(s_info["layer_names"]), t_layers, s_layers, notes, extra)

    def lengths(self, source: Any, teacher: Any, opts: EvalOptions) -> np.ndarray | None:  # type: ignore[override]
        """No length grouping: each model resizes every image to its own input size."""
        return None

    def prepare(self, source: ImageSource, indices: Sequence[int], opts: EvalOptions) -> Batch:  # type: ignore[override]
        images, labels = source.batch(indices)
        return Batch(list(indices), labels, images)

    def teacher(self, runner: ImageRunner, batch: Batch, layers: list[int], opts: EvalOptions, *,  # type: ignore[override]
                record: bool) -> PooledBatch:
        return self.pool(runner(batch.data, batch.indices), layers, runner=runner)

    def student(self, runner: ImageRunner, batch: Batch, plan: Plan, opts: EvalOptions) -> PooledBatch:  # type: ignore[override]
        return self.pool(runner(batch.data, batch.indices), plan.s_layers, runner=runner)

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> Streams:
        return Streams(plan.pairs, plan.t_layers, plan.s_layers, capacity=capacity,
                       batch_size=opts.batch_size * int(plan.extra["rows"]), fss_method=opts.fss_method,
                       cross_layer=bool(plan.extra["cross_layer"]), agreement=plan.extra["agreement"],
                       keep_arrays=opts.keep_arrays, keep_labels=opts.label_column is not None)

    def cache_parts(self, teacher: ImageRunner, source: ImageSource, opts: EvalOptions, *,  # type: ignore[override]
                    in_memory: bool) -> dict[str, Any]:
        import transformers

        return {
            "cache_version": CACHE_VERSION, "task": self.name,
            "teacher": f"object {id(teacher.model)}" if in_memory else model_fingerprint(teacher.model),
            "teacher_preprocessor": f"object {id(teacher.preprocessor)}" if in_memory else teacher.fingerprint(),
            "images": source.fingerprint(), "num_examples": len(source), "device_type": teacher.device.type,
            "torch": torch.__version__, "transformers": transformers.__version__, "image_column": opts.image_column,
            "pooling": self.pooling, "flatten_grid": self.flatten_grid, "return_nodes": self.return_nodes,
            "batch_size": opts.batch_size,
        }

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        """The text classifier's result, with the image models' layer names, pooling and preprocessing."""
        result = super().result(merged, plan, context, opts)
        t_info = context["t_info"]
        result.teacher_layer_names = list(t_info["layer_names"])
        options = dict(result.options)
        options.pop("text_column", None)
        options.pop("max_length", None)
        options.update(image_column=opts.image_column, pooling=self.pooling, cross_layer=bool(plan.extra["cross_layer"]),
                       flatten_grid=self.flatten_grid)
        options["image"] = {"teacher": t_info["image"], "student": plan.extra["image"]}
        result.options = options
        return result


def _rows(state: torch.Tensor, prefix: int, grid: Any, suffix: int) -> int:
    """Rows per image of ``pooling="positions"`` for one hidden state."""
    if state.ndim == 4:
        return int(state.shape[2] * state.shape[3])
    if state.ndim == 3:
        return int(state.shape[1]) - prefix - suffix
    return 1


def _check_grid(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"`flatten_grid` must be a positive int, got {value!r}.")
    return value  # type: ignore[no-any-return]

