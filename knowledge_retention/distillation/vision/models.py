"""The image classifiers of the digits reproduction, their scales, and FitNet's hint regressor.

Every model is a ``transformers`` image classifier built from a config (no pretrained weights: the Hub
is out of reach): the teacher a ``ResNetForImageClassification`` (a CNN, as the paper's ResNet-101 and
VGG-19 teachers), the students a smaller ``ResNet`` (the paper's ResNet-18 / AlexNet role) and a
``ViT`` (the paper's DeiT-S role: another family than the teacher's). Their ``hidden_states`` are
what the evaluation compares: a CNN gives the embedder's output and one ``(N, C, H, W)`` map per stage,
a ViT the patch embeddings and one ``(N, 1 + P, D)`` token sequence per block.

:class:`HintRegressor` is FitNet's learned regressor (Romero et al., 2015): a 1 × 1 convolution from
the student's guided layer to the teacher's hint layer's channels, the student's map first brought to
the teacher's grid by adaptive average pooling (a ViT's patch tokens are laid out on their grid first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._validation import InputError

__all__ = [
    "SCALES", "HintRegressor", "ModelSpec", "VisionScale", "build_model", "count_parameters", "feature_map",
    "get_scale",
]


@dataclass(frozen=True)
class ModelSpec:
    """One model: ``family`` ("resnet" or "vit") and the config's keyword arguments."""

    name: str
    family: str
    config: dict[str, Any]
    hint_layer: int
    """Index into the model's ``hidden_states`` of FitNet's guided (student) or hint (teacher) layer."""


@dataclass(frozen=True)
class VisionScale:
    """Everything one scale of the digits reproduction fixes (sizes, steps, losses)."""

    name: str
    image_size: int
    teacher: ModelSpec
    students: tuple[ModelSpec, ...]
    max_per_split: int | None
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seeds: tuple[int, ...]
    temperature: float = 4.0
    kd_weight: float = 0.9
    """KD loss = (1 − w)·CE + w·T²·KL (Hinton et al. 2015; w = 0.9, T = 4 as RepDistiller's KD)."""
    hint_weight: float = 1.0
    """FitNet loss = CE + weight·MSE(regressor(student guided layer), teacher hint layer), trained jointly
    as RepDistiller's FitNet (whose β = 100 suits its feature scale; here β = 100 and 10 cost a small ResNet
    student 16 and 7 accuracy points on a probe run, β = 1 none)."""
    bootstrap: int = 1000
    methods: tuple[str, ...] = ("kd", "fitnet")
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> VisionScale:
        return replace(self, **changes)


def _resnet(name: str, embedding: int, hidden: list[int], hint_layer: int) -> ModelSpec:
    return ModelSpec(name, "resnet", {"embedding_size": embedding, "hidden_sizes": hidden,
                                      "depths": [1] * len(hidden), "layer_type": "basic"}, hint_layer)


def _vit(name: str, hidden: int, layers: int, heads: int, patch: int, hint_layer: int) -> ModelSpec:
    return ModelSpec(name, "vit", {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                                   "intermediate_size": 2 * hidden, "patch_size": patch}, hint_layer)


SCALES: dict[str, VisionScale] = {
    # CI: a few dozen images, two-channel models, a handful of steps (well under a minute)
    "smoke": VisionScale(
        name="smoke", image_size=16,
        teacher=_resnet("teacher", 8, [8, 16], hint_layer=2),
        students=(_resnet("resnet_small", 4, [4, 8], hint_layer=2), _vit("vit", 16, 2, 2, 4, hint_layer=1)),
        max_per_split=60, teacher_epochs=2, student_epochs=1, batch_size=32, learning_rate=3e-3,
        weight_decay=0.0, seeds=(42, 1), bootstrap=50,
    ),
    # the committed run: all 1,797 digits at 32 x 32, tens of minutes on two shared cores
    "cpu": VisionScale(
        name="cpu", image_size=32,
        teacher=_resnet("teacher", 32, [32, 64, 128], hint_layer=2),
        students=(_resnet("resnet_small", 16, [16, 32], hint_layer=2), _resnet("resnet_tiny", 8, [8, 16], hint_layer=2),
                  _vit("vit", 64, 4, 4, 4, hint_layer=2)),
        max_per_split=None, teacher_epochs=40, student_epochs=30, batch_size=64, learning_rate=2e-3,
        weight_decay=5e-4, seeds=(42, 1, 2),
    ),
}


def get_scale(scale: str | VisionScale) -> VisionScale:
    """A scale by name (``smoke``, ``cpu``) or the given one."""
    if isinstance(scale, VisionScale):
        return scale
    if scale not in SCALES:
        raise InputError(f"`scale` must be one of {sorted(SCALES)}, got {scale!r}")
    return SCALES[scale]


def build_model(spec: ModelSpec, *, image_size: int, num_labels: int = 10, seed: int) -> Any:
    """A freshly initialised ``*ForImageClassification`` of ``spec`` (``torch.manual_seed(seed)`` first)."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels: dict[str, Any] = {"num_labels": num_labels, "id2label": {i: str(i) for i in range(num_labels)},
              "label2id": {str(i): i for i in range(num_labels)}}
    if spec.family == "resnet":
        return ResNetForImageClassification(ResNetConfig(num_channels=3, **{**spec.config, **labels}))
    if spec.family == "vit":
        return ViTForImageClassification(ViTConfig(image_size=image_size, num_channels=3, **{**spec.config, **labels}))
    raise InputError(f"`spec.family` must be 'resnet' or 'vit', got {spec.family!r}")


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def feature_map(hidden: Tensor) -> Tensor:
    """A hidden state as an ``(N, C, H, W)`` map: a CNN stage as it is, a ViT block's patch tokens
    (prefix tokens dropped: the tokens beyond the largest square number) laid out on their square grid."""
    if hidden.dim() == 4:
        return hidden
    if hidden.dim() != 3:
        raise ValueError(f"a hidden state must be (N, C, H, W) or (N, T, D), got shape {tuple(hidden.shape)}")
    tokens = hidden.shape[1]
    side = int(tokens**0.5)
    patches = hidden[:, tokens - side * side:, :]  # ViT: [CLS] first, then the patches row by row
    return patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)


class HintRegressor(nn.Module):
    """FitNet's regressor: student guided layer -> teacher hint layer (channels and grid).

    Args:
        student_channels: channels (CNN) or width (ViT) of the student's guided layer.
        teacher_channels: channels of the teacher's hint layer.
        teacher_grid: ``(H, W)`` of the teacher's hint layer.
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = (int(teacher_grid[0]), int(teacher_grid[1]))
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.norm = nn.BatchNorm2d(teacher_channels)

    def forward(self, student_hidden: Tensor) -> Tensor:
        x = feature_map(student_hidden)
        if tuple(x.shape[-2:]) != self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.norm(self.conv(x))
