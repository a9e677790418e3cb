r"""What the image tasks read and how they pool: the images of a dataset, and one row per image (or position).

FSS compares pooled hidden states:

* ``"mean"`` (default): the mean over every spatial position of a CNN stage ``(B, C, H, W)``, or over
  every patch token of a ViT ``(B, T, D)``; prefix tokens (CLS, DeiT's distillation token, register
  tokens) are left out, as timm's average pooling does;
* ``"cls"``: the first token of a ViT-style model (refused for a CNN map or a model without prefix tokens);
* ``"flatten"``: :math:`C \cdot H \cdot W` (channel-major, as ``x.reshape(B, -1)``), after an adaptive
  average pool to a :math:`k \times k` grid when ``flatten_grid=k``; ViT patches are laid out on
  their grid first, so both families flatten alike;
* ``"positions"``: every spatial position or patch is a row, ``(B \cdot P, D)``, in row-major grid
  order; the two models' grids must be equal.

``layers="uniform"`` pairs stages across families: the shallower model's blocks are each paired with a
block of the deeper one (:func:`resolve_image_layers`), so a 12-block ViT student against a 4-stage
ResNet teacher is allowed (CKA takes any widths).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..._validation import InputError, InputTypeError
from ..inputs import read_rows
from ..layers import LAYER_PRESETS, LayerSpec, resolve_layer_pairs, uniform_layer_mapping
from .image_models import ImageOutputs

__all__ = ["IMAGE_POOLINGS", "ImagePooling", "ImageSource", "check_grids", "pool_image_state", "resolve_image_layers"]

ImagePooling = Literal["mean", "cls", "flatten", "positions"]
IMAGE_POOLINGS: tuple[str, ...] = ("mean", "cls", "flatten", "positions")
_FINGERPRINT_BATCH = 64


# --- the images --------------------------------------------------------------------------------------


def _to_image(value: Any, where: str) -> Any:
    """A PIL image from a PIL image, a ``datasets`` image dict, or a uint8 array ``(H, W)`` / ``(H, W, C)``."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):  # an undecoded datasets Image
        if value.get("bytes") is not None:
            return Image.open(io.BytesIO(value["bytes"]))
        return Image.open(value["path"])
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            raise InputTypeError(f"{where} is a {value.dtype} array; image arrays must be uint8 in 0..255 "
                                 "(e.g. (x * 255).round().astype(np.uint8)).")
        if value.ndim == 3 and value.shape[-1] == 1:
            value = value[..., 0]
        if value.ndim == 2 or (value.ndim == 3 and value.shape[-1] in (3, 4)):
            return Image.fromarray(value)
        raise InputError(f"{where} has shape {value.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4.")
    raise InputTypeError(f"{where} must be a PIL image or a uint8 array, got {type(value).__name__}.")


class ImageSource:
    """Random access to the images (and optional labels) of a dataset, by example index.

    Args:
        dataset: a ``datasets.Dataset`` with an ``Image`` column, a local image folder (read with
            ``load_dataset("imagefolder", data_dir=..., split="train")``), a dict of equal-length
            columns, or a list of PIL images / uint8 arrays.
        image_column: the column holding the images (ignored for a list).
        label_column: optional column of labels.
        max_examples: keep only the first ``max_examples`` examples.

    Raises:
        InputTypeError: an unsupported dataset type (a ``DatasetDict`` must be indexed by split).
        InputError: a missing column, columns of unequal length, an empty dataset, a missing folder.
    """

    def __init__(
        self, dataset: Any, *, image_column: str = "image", label_column: str | None = None,
        max_examples: int | None = None,
    ) -> None:
        self.image_column, self.label_column = image_column, label_column
        self._arrow: Any = None
        self._columns: Mapping[str, Any] | None = None
        if isinstance(dataset, (str, os.PathLike)):
            dataset = _image_folder(os.fspath(dataset))
        import datasets

        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            raise InputTypeError(f"`dataset` is a DatasetDict with splits {sorted(dataset)}; pass one split, e.g. "
                                 f"dataset[{sorted(dataset)[0]!r}].")
        if isinstance(dataset, datasets.IterableDataset):
            raise InputTypeError("`dataset` is an IterableDataset; pass a map-style datasets.Dataset (it needs a length).")
        if isinstance(dataset, datasets.Dataset):
            self._check_columns(list(dataset.column_names))
            self._arrow = dataset.select_columns([image_column] + ([label_column] if label_column else []))
            length = len(dataset)
        elif isinstance(dataset, Mapping):
            self._check_columns(list(dataset))
            lengths = {name: len(dataset[name]) for name in dataset}
            if len(set(lengths.values())) > 1:
                raise InputError(f"`dataset` columns must have the same length, got {lengths}.")
            self._columns, length = dataset, len(dataset[image_column])
        elif isinstance(dataset, (Sequence, np.ndarray)) and not isinstance(dataset, (str, bytes)):
            if label_column is not None:
                raise InputError(f"`label_column={label_column!r}` was given but `dataset` is a plain list of images; "
                                 "pass a dict of columns or a datasets.Dataset to provide labels.")
            self._columns, length = {image_column: dataset}, len(dataset)
        else:
            raise InputTypeError("`dataset` must be a datasets.Dataset, an image folder, a dict of columns or a list of "
                                 f"images, got {type(dataset).__name__}.")
        length = length if max_examples is None else min(length, max_examples)
        if length == 0:
            raise InputError("`dataset` is empty: there are no images to evaluate.")
        self.length = length

    def _check_columns(self, available: list[str]) -> None:
        for role, name in (("image_column", self.image_column), ("label_column", self.label_column)):
            if name is not None and name not in available:
                raise InputError(f"`{role}={name!r}` is not a column of `dataset`; available columns: {available}.")

    def __len__(self) -> int:
        return self.length

    def batch(self, indices: Sequence[int]) -> tuple[list[Any], list[Any] | None]:
        """The PIL images and labels (None without a label column) of the given example indices."""
        values, labels = read_rows(self._arrow, self._columns, self.image_column, self.label_column, indices)
        images = [_to_image(v, f"`dataset[{self.image_column!r}][{i}]`") for i, v in zip(indices, values, strict=True)]
        return images, None if labels is None else list(labels)

    def fingerprint(self) -> str:
        """SHA-256 over every image (mode, size, pixels) and label, in order, read batch by batch."""
        digest = hashlib.sha256(f"images|{self.length}".encode())
        for start in range(0, self.length, _FINGERPRINT_BATCH):
            images, labels = self.batch(range(start, min(start + _FINGERPRINT_BATCH, self.length)))
            for image in images:
                digest.update(f"{image.mode}|{image.size}".encode())
                digest.update(image.tobytes())
            if labels is not None:
                digest.update(repr(labels).encode())
        return digest.hexdigest()


def _image_folder(path: str) -> Any:
    if not os.path.isdir(os.path.expanduser(path)):
        raise InputError(f"`dataset`: there is no image folder at {path}.")
    from datasets import load_dataset

    return load_dataset("imagefolder", data_dir=os.path.expanduser(path), split="train")


# --- pooling -----------------------------------------------------------------------------------------


def pool_image_state(
    state: torch.Tensor,
    pooling: ImagePooling,
    *,
    prefix_tokens: int = 0,
    grid: tuple[int, int] | None = None,
    flatten_grid: int | None = None,
    suffix_tokens: int = 0,
) -> torch.Tensor:
    r"""Pools one hidden state of an image model to rows.

    Args:
        state: a CNN stage ``(B, C, H, W)``, ViT tokens ``(B, T, D)`` (prefix tokens first), or ``(B, D)``.
        pooling: ``"mean"``, ``"cls"``, ``"flatten"`` or ``"positions"`` (module docstring).
        prefix_tokens: how many leading tokens are not patches (CLS, distillation, registers).
        grid: the patch grid ``(h, w)`` of a token state (None: unknown).
        flatten_grid: for ``"flatten"``, adaptive-average-pool the map to ``k x k`` first.
        suffix_tokens: how many trailing tokens are not patches (YOLOS's detection tokens).

    Returns:
        ``(B, D)`` rows (``(B, C * k * k)`` for flatten, ``(B * P, D)`` for positions), float32 or wider.

    Raises:
        InputError: an unknown pooling, ``"cls"`` without a prefix token, a grid needed but unknown.

    Example:
        >>> x = torch.arange(8.0).reshape(1, 2, 2, 2)
        >>> pool_image_state(x, "mean").tolist()
        [[1.5, 5.5]]
        >>> pool_image_state(x, "positions").tolist()
        [[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [3.0, 7.0]]
    """
    if pooling not in IMAGE_POOLINGS:
        raise InputError(f"`pooling` must be one of {list(IMAGE_POOLINGS)} for image models, got {pooling!r}.")
    if state.dtype in (torch.float16, torch.bfloat16):
        state = state.float()
    if state.ndim == 2:
        if pooling == "positions":
            raise InputError("`pooling='positions'` needs spatial maps or patch tokens; this hidden state is (B, D).")
        return state
    if state.ndim == 4:
        if pooling == "cls":
            raise InputError("`pooling='cls'` needs a CLS token; a CNN stage (B, C, H, W) has none: use 'mean'.")
        spatial = state
    elif state.ndim == 3:
        if pooling == "cls":
            if prefix_tokens < 1:
                raise InputError("`pooling='cls'` needs a CLS token; this model's token states have no prefix token: "
                                 "use 'mean'.")
            return state[:, 0]
        patches = state[:, prefix_tokens : state.shape[1] - suffix_tokens]
        if pooling == "mean":
            return patches.mean(dim=1)
        if pooling == "positions":
            return patches.reshape(-1, patches.shape[-1])
        if grid is None:
            if flatten_grid is not None:
                raise InputError("`flatten_grid` needs the patch grid, which is unknown for this model's tokens.")
            return patches.transpose(1, 2).reshape(patches.shape[0], -1)
        spatial = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], grid[0], grid[1])
    else:
        raise InputError(f"Expected an image model's hidden state (B, C, H, W) or (B, T, D), got {tuple(state.shape)}.")
    if pooling == "mean":
        return spatial.mean(dim=(2, 3))
    if pooling == "positions":
        return spatial.permute(0, 2, 3, 1).reshape(-1, spatial.shape[1])
    if flatten_grid is not None:
        spatial = torch.nn.functional.adaptive_avg_pool2d(spatial, flatten_grid)
    return spatial.reshape(spatial.shape[0], -1)


def check_grids(teacher: ImageOutputs, student: ImageOutputs, pairs: Sequence[tuple[int, int]], pooling: str) -> None:
    """``pooling="positions"`` compares position with position: every paired grid must be equal.

    Raises:
        InputError: a pair of hidden states with different (or unknown) grids.
    """
    if pooling != "positions":
        return
    for t, s in pairs:
        tg, sg = teacher.grids[t], student.grids[s]
        if tg is None or sg is None or tg != sg:
            raise InputError(
                f"`pooling='positions'` needs equal grids; teacher hidden state {t} is {tg} and student hidden "
                f"state {s} is {sg}. Use 'mean', or 'flatten' with flatten_grid."
            )


def resolve_image_layers(layers: LayerSpec, n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """Layer pairs for image models: as :func:`~knowledge_retention.extraction.layers.resolve_layer_pairs`,
    except that ``"uniform"`` / ``"all"`` also pair a student deeper than the teacher (each teacher
    stage with the uniformly mapped student block), since CNN stages and ViT blocks differ in number.

    Example:
        >>> resolve_image_layers("uniform", 5, 13)  # a 4-stage CNN teacher, a 12-block ViT student
        [(1, 3), (2, 6), (3, 9), (4, 12)]
    """
    if isinstance(layers, str) and layers in LAYER_PRESETS and layers != "final" and n_student > n_teacher >= 2:
        swapped = uniform_layer_mapping(n_student - 1, n_teacher - 1, include_embeddings=layers == "all")
        return [(t, s) for s, t in swapped]
    return resolve_layer_pairs(layers, n_teacher, n_student)


# --- helpers of the tasks ----------------------------------------------------------------------------------------


def _option(options: Any, name: str, default: Any = None) -> Any:
    if options is None:
        return default
    if isinstance(options, Mapping):
        return options.get(name, default)
    return getattr(options, name, default)


def _has_head(model: torch.nn.Module, suffixes: tuple[str, ...]) -> bool:
    return type(model).__name__.endswith(suffixes)


def _architectures(path: Any) -> list[str] | None:
    if not isinstance(path, (str, os.PathLike)):
        return None
    config = os.path.join(os.path.expanduser(os.fspath(path)), "config.json")
    if not os.path.isfile(config):
        return None
    import json

    try:
        with open(config, encoding="utf-8") as handle:
            return [str(a) for a in json.load(handle).get("architectures") or []]
    except (OSError, ValueError, AttributeError):  # a damaged config: the loader names it (LoadError, exit 3)
        return None
