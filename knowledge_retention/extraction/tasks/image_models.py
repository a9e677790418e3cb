"""Image models of three libraries behind one runner: each preprocesses a batch of images its own way,
runs the model once and returns every hidden state and the logits.

* ``transformers`` models whose ``main_input_name`` is ``"pixel_values"`` (ViT, DeiT, ResNet, ConvNeXt,
  Swin, MobileNet...): their own image processor (``AutoImageProcessor`` from the model's folder, or
  the one passed in), ``output_hidden_states=True``; index 0 is the embeddings (the stem of a CNN),
  the last one the final block or stage. Swin's spatial ``reshaped_hidden_states`` are used.
* ``timm`` models: ``forward_intermediates`` (every ``feature_info`` stage of a CNN, every block of a
  ViT), preprocessed by the transform of timm's data config for the model (or the one passed in).
* ``torchvision`` models: the nodes of ``torchvision.models.feature_extraction.create_feature_extractor``
  (the stages ``layer1..layer4`` of a ResNet, the blocks of ``features`` or of a ViT's encoder, or the
  node names passed as ``return_nodes``), preprocessed by the transform passed in (or a weights enum's
  ``transforms()``).

Token states keep their prefix tokens (CLS, DeiT's distillation token, registers): the runner tells,
for every hidden state, how many there are and the patch grid, so pooling can leave them out.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._validation import InputError, InputTypeError
from ..inputs import ModelOutputs

__all__ = [
    "BACKENDS", "ImageOutputs", "ImageRunner", "TimmImageRunner", "TorchvisionImageRunner",
    "TransformersImageRunner", "image_backend", "import_torchvision", "load_image_model", "make_image_runner",
]

BACKENDS: tuple[str, ...] = ("transformers", "timm", "torchvision")
# Head suffixes whose checkpoints are loaded with their head (the outputs are what AOAg compares).
_HEADS = {
    "ForImageClassification": "AutoModelForImageClassification",
    "ForImageClassificationWithTeacher": "AutoModelForImageClassification",
    "ForObjectDetection": "AutoModelForObjectDetection",
    "ForSemanticSegmentation": "AutoModelForSemanticSegmentation",
}


@dataclass
class ImageOutputs(ModelOutputs):
    """A batch's outputs with, per hidden state, the prefix-token count and the patch grid ``(h, w)``.

    ``prefix_tokens[i]`` is 0 and ``grids[i]`` the map's ``(H, W)`` for a ``(B, C, H, W)`` state; for a
    ``(B, T, D)`` token state they are the leading non-patch tokens and the patch grid (None when
    the tokens do not form a known grid).
    """

    prefix_tokens: tuple[int, ...] = ()
    grids: tuple[tuple[int, int] | None, ...] = ()
    pixel_size: tuple[int, int] | None = None
    #: tokens after the patches (YOLOS's detection tokens), per hidden state
    suffix_tokens: tuple[int, ...] = ()
    #: the input images' own sizes ``(height, width)`` (detections and label maps are brought back to them)
    image_sizes: tuple[tuple[int, int], ...] = ()
    #: the model's raw output (for the detection / segmentation post-processing)
    raw: Any = None
_TORCHVISION_OPS: list[Any] = []  # keeps the operator library of import_torchvision alive


def import_torchvision() -> Any:
    """``torchvision``, importable also where its compiled operators cannot load; None when not installed.

    PyPI's torchvision wheels for Linux are CUDA builds: beside a CPU-only torch (such as
    ``torch==2.13.0+cpu``) their ``_C`` extension cannot load, and ``import torchvision`` then fails
    registering a fake kernel for ``torchvision::nms`` (and with it transformers' image processors and
    timm, which import it). Declaring the two operators it registers lets the pure-Python parts
    (models, ``feature_extraction``, ``transforms``) import; ``nms`` itself stays unavailable. Called
    before any image processor, timm or torchvision model is used.
    """
    try:
        import torchvision
    except ModuleNotFoundError:
        return None
    except RuntimeError as err:
        if "torchvision::nms" not in str(err) or _TORCHVISION_OPS:
            raise
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(lib)
        import torchvision
    return torchvision


def image_backend(model: Any) -> str | None:
    """``"transformers"``, ``"timm"`` or ``"torchvision"`` for an image model object, else None."""
    if not isinstance(model, torch.nn.Module):
        return None
    if getattr(model, "main_input_name", None) == "pixel_values" and hasattr(model, "config"):
        return "transformers"
    if hasattr(model, "forward_intermediates") and hasattr(model, "pretrained_cfg"):
        return "timm"
    if type(model).__module__.startswith("torchvision.models"):
        return "torchvision"
    return None


def load_image_model(model: Any, *, argument: str, heads: Sequence[str] = tuple(_HEADS)) -> torch.nn.Module:
    """A model object as is, or a local transformers folder loaded with its head (``heads`` suffixes).

    Raises:
        InputTypeError: ``model`` is neither a module nor a path.
        InputError: there is no folder at the path, or it holds no image model.
    """
    if isinstance(model, torch.nn.Module):
        return model
    import_torchvision()
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"`{argument}` must be a torch.nn.Module or a local model folder, got {type(model).__name__}.")
    path = os.path.expanduser(os.fspath(model))
    if not os.path.isdir(path):
        raise InputError(f"`{argument}`: there is no model folder at {path} (timm and torchvision models are passed as objects).")
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    architectures = [str(a) for a in getattr(config, "architectures", None) or []]
    for suffix in sorted(heads, key=len, reverse=True):
        if any(a.endswith(suffix) for a in architectures):
            return getattr(transformers, _HEADS[suffix]).from_pretrained(path)  # type: ignore[no-any-return]
    loaded = transformers.AutoModel.from_pretrained(path)
    if getattr(loaded, "main_input_name", None) != "pixel_values":
        raise InputError(f"`{argument}`: {path} holds a {type(loaded).__name__}, not an image model (main_input_name "
                         f"{getattr(loaded, 'main_input_name', None)!r}).")
    return loaded  # type: ignore[no-any-return]


def _as_rgb(image: Any, channels: int) -> Any:
    """PIL images converted to the model's channel count (grey scale and RGBA images are common)."""
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is not None and getattr(image, "mode", mode) != mode:
        return image.convert(mode)
    return image


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ImageRunner:
    """Preprocesses and runs one image model on batches of PIL images (the base of every backend).

    Args:
        model: the model (on its device, in eval mode).
        preprocessor: the image processor / transform.
        role: ``"teacher"`` or ``"student"`` (for messages).
        device: where the pixel values go.
    """

    model: torch.nn.Module
    preprocessor: Any
    role: str
    device: torch.device
    backend: str = field(init=False, default="")
    limit: int | None = field(init=False, default=None)
    limit_source: str = field(init=False, default="model")
    num_truncated: int = field(init=False, default=0)
    tokenize_s: float = field(init=False, default=0.0)
    forward_s: float = field(init=False, default=0.0)
    layer_names: list[str] = field(init=False, default_factory=list)
    last_pixel_size: tuple[int, int] | None = field(init=False, default=None)
    last_prefix_tokens: tuple[int, ...] = field(init=False, default=())
    last_grids: tuple[tuple[int, int] | None, ...] = field(init=False, default=())

    def reset_counters(self) -> None:
        """Zeroes the timers (after the probe batch)."""
        self.num_truncated, self.tokenize_s, self.forward_s = 0, 0.0, 0.0

    @property
    def channels(self) -> int:
        return int(getattr(getattr(self.model, "config", None), "num_channels", 3) or 3)

    def pixel_values(self, images: list[Any]) -> torch.Tensor:
        """The batch's pixel values ``(B, C, H, W)`` as the model's own preprocessing makes them."""
        images = [_as_rgb(image, self.channels) for image in images]
        return torch.stack([self.preprocessor(image) for image in images])

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, Any]:
        """Every hidden state, the logits (or None) and the raw output."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """SHA-256 of the preprocessing settings (for the teacher cache)."""
        return _sha(f"{self.backend}|{self.preprocessor!r}")

    def patch_size(self) -> tuple[int, int] | None:
        """The ViT patch size (None for a model without patches)."""
        size = getattr(getattr(self.model, "config", None), "patch_size", None) or getattr(self.model, "patch_size", None)
        if size is None:
            embed = getattr(self.model, "patch_embed", None)
            size = getattr(embed, "patch_size", None)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, Sequence) and len(size) == 2:
            return (int(size[0]), int(size[1]))
        return None

    def __call__(self, images: list[Any], indices: Sequence[int]) -> ImageOutputs:
        """Runs a batch (the caller holds ``torch.inference_mode`` and any autocast)."""
        start = time.perf_counter()
        pixels = self.pixel_values(images).to(self.device)
        prepared = time.perf_counter()
        hidden, logits, raw = self.forward(pixels)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.tokenize_s += prepared - start
        self.forward_s += time.perf_counter() - prepared
        out = self.outputs(hidden, logits, pixels)
        out.raw = raw
        out.image_sizes = tuple((int(image.size[1]), int(image.size[0])) for image in images)
        return out

    def outputs(self, hidden: Sequence[torch.Tensor], logits: torch.Tensor | None, pixels: torch.Tensor) -> ImageOutputs:
        """Wraps the states with their prefix-token counts and grids."""
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        self.last_pixel_size = size
        patch = self.patch_size()
        prefixes: list[int] = []
        grids: list[tuple[int, int] | None] = []
        for state in hidden:
            if state.ndim == 4:
                prefixes.append(0)
                grids.append((int(state.shape[2]), int(state.shape[3])))
            elif state.ndim == 3 and patch is not None:
                grid = (size[0] // patch[0], size[1] // patch[1])
                extra = int(state.shape[1]) - grid[0] * grid[1]
                ok = 0 <= extra <= int(state.shape[1]) // 2
                prefixes.append(extra if ok else 0)
                grids.append(grid if ok else None)
            else:
                prefixes.append(0)
                grids.append(None)
        self.last_prefix_tokens, self.last_grids = tuple(prefixes), tuple(grids)
        return ImageOutputs(tuple(hidden), None, logits,  # type: ignore[arg-type]
                            prefix_tokens=tuple(prefixes), grids=tuple(grids), pixel_size=size)


@dataclass
class TransformersImageRunner(ImageRunner):
    """A transformers image model and its image processor (``processor(images, return_tensors="pt")``)."""

    def __post_init__(self) -> None:
        self.backend = "transformers"

    def pixel_values(self, images: list[Any]) -> torch.Tensor:
        images = [_as_rgb(image, self.channels) for image in images]
        return self.preprocessor(images=images, return_tensors="pt")["pixel_values"]  # type: ignore[no-any-return]

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, Any]:
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        hidden = getattr(out, "reshaped_hidden_states", None) or getattr(out, "hidden_states", None)
        if not hidden:
            raise InputError(f"The {self.role} model ({type(self.model).__name__}) returned no hidden states with "
                             "output_hidden_states=True.")
        if not self.layer_names:
            self.layer_names = ["embeddings", *(f"{'stage' if hidden[-1].ndim == 4 else 'layer'}_{i}"
                                               for i in range(1, len(hidden)))]
        return list(hidden), getattr(out, "logits", None), out

    def fingerprint(self) -> str:
        to_json = getattr(self.preprocessor, "to_json_string", None)
        return _sha(f"{self.backend}|{to_json() if callable(to_json) else repr(self.preprocessor)}")


@dataclass
class TimmImageRunner(ImageRunner):
    """A timm model: ``forward_intermediates`` gives every stage (CNN) or block (ViT); prefix tokens kept."""

    def __post_init__(self) -> None:
        self.backend = "timm"
        self._prefix = int(getattr(self.model, "num_prefix_tokens", 0) or 0)

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, Any]:
        kwargs: dict[str, Any] = {"return_prefix_tokens": True} if self._prefix else {}
        final, intermediates = self.model.forward_intermediates(pixel_values, **kwargs)  # type: ignore[operator]
        hidden: list[torch.Tensor] = []
        for state in intermediates:
            if isinstance(state, tuple):  # (B, D, h, w) patches and (B, p, D) prefix tokens
                spatial, prefix = state
                hidden.append(torch.cat([prefix, spatial.flatten(2).transpose(1, 2)], dim=1))
            else:
                hidden.append(state)
        logits = self.model.forward_head(final)  # type: ignore[operator]
        if not self.layer_names:
            info = getattr(self.model, "feature_info", None)
            modules = [str(entry.get("module", "")) for entry in info] if isinstance(info, list) else []
            self.layer_names = modules if len(modules) == len(hidden) else [f"block_{i}" for i in range(len(hidden))]
        return hidden, logits, final

    def outputs(self, hidden: Sequence[torch.Tensor], logits: torch.Tensor | None, pixels: torch.Tensor) -> ImageOutputs:
        out = super().outputs(hidden, logits, pixels)
        if self._prefix:  # the grid of each ViT block: the tokens after the prefix, as timm reshaped them
            grid = self._grid(pixels)
            out.prefix_tokens = tuple(self._prefix if s.ndim == 3 else p for s, p in zip(hidden, out.prefix_tokens, strict=True))
            out.grids = tuple(grid if s.ndim == 3 else g for s, g in zip(hidden, out.grids, strict=True))
            self.last_prefix_tokens, self.last_grids = out.prefix_tokens, out.grids
        return out

    def _grid(self, pixels: torch.Tensor) -> tuple[int, int] | None:
        embed = getattr(self.model, "patch_embed", None)
        dynamic = getattr(embed, "dynamic_img_size", False) or getattr(embed, "dynamic_img_pad", False)
        grid = getattr(embed, "grid_size", None)
        patch = self.patch_size()
        if dynamic and patch is not None:
            return (int(pixels.shape[-2]) // patch[0], int(pixels.shape[-1]) // patch[1])
        return (int(grid[0]), int(grid[1])) if grid is not None else None

    def fingerprint(self) -> str:
        return _sha(f"timm|{json.dumps(getattr(self.model, 'pretrained_cfg', {}), default=str)}|{self.preprocessor!r}")


@dataclass
class TorchvisionImageRunner(ImageRunner):
    """A torchvision model through ``create_feature_extractor``: the chosen nodes and the final output."""

    return_nodes: list[str] | None = None

    def __post_init__(self) -> None:
        self.backend = "torchvision"
        from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

        nodes = get_graph_node_names(self.model)[1]
        chosen = list(self.return_nodes) if self.return_nodes else _default_nodes(self.model)
        # a module name stands for the last node inside it, as create_feature_extractor reads it
        missing = [n for n in chosen if n not in nodes and not any(node.startswith(f"{n}.") for node in nodes)]
        if missing:
            raise InputError(f"`return_nodes`: {missing} are not nodes of the {self.role} "
                             f"({type(self.model).__name__}); its nodes include {nodes[:12]}...")
        if not chosen:
            raise InputError(f"The {self.role} ({type(self.model).__name__}) has no default stages; pass "
                             "`return_nodes` (node names of torchvision.models.feature_extraction.get_graph_node_names).")
        self.layer_names = chosen
        self._output_node = nodes[-1]
        wanted = {n: n for n in chosen}
        wanted[self._output_node] = "__output__"
        self._extractor = create_feature_extractor(self.model, return_nodes=wanted)

    def pixel_values(self, images: list[Any]) -> torch.Tensor:
        if self.preprocessor is None:
            raise InputTypeError(f"The {self.role} is a torchvision model: pass its transform as the {self.role}'s "
                                 "preprocessor (e.g. weights.transforms(); weights=None models have none).")
        return super().pixel_values(images)

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None, Any]:
        out = self._extractor(pixel_values)
        final = out["__output__"]
        logits = final if isinstance(final, torch.Tensor) and final.ndim == 2 else None
        return [out[n] for n in self.layer_names], logits, out

    def fingerprint(self) -> str:
        return _sha(f"torchvision|{self.layer_names}|{self.preprocessor!r}")


def _default_nodes(model: torch.nn.Module) -> list[str]:
    """The stages of common torchvision classifiers: ResNet's ``layer1..4``, the blocks of ``features``
    (VGG / AlexNet: its max-pool outputs), the encoder blocks of a ViT."""
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)]
    features = children.get("features")
    if isinstance(features, torch.nn.Sequential):
        named = list(features.named_children())
        pools = [name for name, module in named if isinstance(module, torch.nn.MaxPool2d)]
        return [f"features.{name}" for name in (pools or [name for name, _ in named])]
    layers = getattr(children.get("encoder"), "layers", None)
    if isinstance(layers, torch.nn.Sequential):
        return [f"encoder.layers.{name}" for name, _ in layers.named_children()]
    return []


def _transformers_processor(model: torch.nn.Module, preprocessor: Any, argument: str) -> Any:
    if preprocessor is not None:
        if not callable(preprocessor):
            raise InputTypeError(f"`{argument}` must be an image processor, got {type(preprocessor).__name__}.")
        return preprocessor
    path = getattr(getattr(model, "config", None), "name_or_path", None)
    if not path or not os.path.isdir(os.path.expanduser(str(path))):
        raise InputTypeError(f"`{argument}` is required: the model object has no local folder (config.name_or_path="
                             f"{path!r}) to load its image processor from.")
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(os.path.expanduser(str(path)))
    except OSError as err:
        raise InputError(f"`{argument}`: no image processor in {path} ({err}); save one beside the model "
                         "(processor.save_pretrained) or pass it.") from None


def _timm_transform(model: torch.nn.Module, preprocessor: Any) -> Any:
    if preprocessor is not None:
        return preprocessor
    import timm.data

    return timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))


def _torchvision_transform(preprocessor: Any, argument: str) -> Any:
    if preprocessor is None:
        return None
    transforms = getattr(preprocessor, "transforms", None)
    if callable(transforms) and not callable(preprocessor):  # a weights enum member: its own transform
        return transforms()
    if not callable(preprocessor):
        raise InputTypeError(f"`{argument}` must be a transform (PIL image -> tensor) or a torchvision weights enum, "
                             f"got {type(preprocessor).__name__}.")
    return preprocessor


def make_image_runner(
    model: torch.nn.Module,
    *,
    role: str,
    preprocessor: Any = None,
    preprocessor_argument: str | None = None,
    return_nodes: list[str] | None = None,
    argument: str | None = None,
) -> ImageRunner:
    """The runner of one image model: its backend's forward and its own preprocessing.

    Raises:
        InputTypeError: not an image model of a known library, or no preprocessor to be found.
    """
    argument = argument or role
    preprocessor_argument = preprocessor_argument or f"{role}_preprocessor"
    import_torchvision()
    backend = image_backend(model)
    device = _device(model)
    model.eval()
    if backend == "transformers":
        return TransformersImageRunner(model, _transformers_processor(model, preprocessor, preprocessor_argument), role, device)
    if backend == "timm":
        return TimmImageRunner(model, _timm_transform(model, preprocessor), role, device)
    if backend == "torchvision":
        return TorchvisionImageRunner(model, _torchvision_transform(preprocessor, preprocessor_argument), role, device,
                                      return_nodes=return_nodes)
    raise InputTypeError(
        f"`{argument}` is a {type(model).__name__}, not an image model of transformers (main_input_name "
        "'pixel_values'), timm (forward_intermediates) or torchvision (torchvision.models)."
    )


def _device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")

