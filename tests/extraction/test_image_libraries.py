"""timm and torchvision image models (built without pretrained weights) through the image task.

The references are forward hooks on the models' own stage / block modules (not the task's
``forward_intermediates`` / ``create_feature_extractor`` calls) and the models' plain forward for the
logits. Skipped where torchvision or timm are not installed (the ``vision`` extra).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from knowledge_retention._validation import InputError, InputTypeError
from knowledge_retention.extraction.tasks.image import ImageClassificationTask
from knowledge_retention.extraction.tasks.image_models import import_torchvision

PIL = pytest.importorskip("PIL.Image")


def _torchvision() -> Any:
    """torchvision (its pure-Python parts where a CUDA wheel sits beside a CPU torch), or a skip."""
    torchvision = import_torchvision()
    if torchvision is None:
        pytest.skip("torchvision is not installed: `make install-vision` with a torchvision built for this torch "
                    "(PyPI's 0.28.0 wheel is built against CUDA torch; see the Makefile)")
    return torchvision


@pytest.fixture(scope="module")
def tv() -> Any:
    return _torchvision()


@pytest.fixture(scope="module")
def timm(tv: Any) -> Any:
    return pytest.importorskip("timm")


def _images(n: int = 6) -> list[Any]:
    rng = np.random.default_rng(1)
    return [PIL.fromarray(rng.integers(0, 256, (40, 36 + 4 * (i % 2), 3), dtype=np.uint8)) for i in range(n)]


def _hooked(model: torch.nn.Module, modules: list[torch.nn.Module], pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The outputs of the given modules (forward hooks) and the logits of the plain forward."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out)) for m in modules]
    try:
        with torch.inference_mode():
            logits = model(pixels)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def _pooled(task: ImageClassificationTask, runner: Any, images: list[Any], layer: int, pooling: str) -> torch.Tensor:
    with torch.inference_mode():
        out = runner(images, list(range(len(images))))
    return task.pool(out, [layer], pooling).features[layer], out


def test_timm_cnn_stages_and_logits(timm: Any) -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    task = ImageClassificationTask()
    runner = task.make_runner(model, role="teacher")
    images = _images()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    pixels = torch.stack([transform(im) for im in images])
    modules = [model.get_submodule(info["module"]) for info in model.feature_info]
    stages, logits = _hooked(model, modules, pixels)
    for layer, stage in enumerate(stages):
        got, out = _pooled(task, runner, images, layer, "mean")
        torch.testing.assert_close(got, stage.mean(dim=(2, 3)))
    torch.testing.assert_close(out.logits, logits)
    assert runner.layer_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert task.describe(runner, pooling="mean")["image_size"] == [224, 224]


def test_timm_vit_blocks_keep_their_prefix_out_of_mean(timm: Any) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=8,
                              depth=2, reg_tokens=2).eval()
    assert model.num_prefix_tokens == 3  # CLS + 2 registers
    transform = timm.data.create_transform(input_size=(3, 32, 32), interpolation="bilinear", crop_pct=1.0)
    task = ImageClassificationTask()
    runner = task.make_runner(model, role="student", preprocessor=transform)
    images = _images()
    blocks, logits = _hooked(model, list(model.blocks), torch.stack([transform(im) for im in images]))
    for layer, block in enumerate(blocks):
        got, out = _pooled(task, runner, images, layer, "mean")
        torch.testing.assert_close(got, block[:, 3:].mean(dim=1))
        torch.testing.assert_close(_pooled(task, runner, images, layer, "cls")[0], block[:, 0])
        positions = _pooled(task, runner, images, layer, "positions")[0]
        torch.testing.assert_close(positions, block[:, 3:].reshape(-1, block.shape[-1]))
    torch.testing.assert_close(out.logits, logits)
    assert out.prefix_tokens == (3, 3) and out.grids == ((4, 4), (4, 4))


def test_torchvision_resnet_stages_with_a_given_transform(tv: Any) -> None:
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=5).eval()
    transform = tv.transforms.Compose([tv.transforms.Resize(32), tv.transforms.CenterCrop(32), tv.transforms.ToTensor()])
    task = ImageClassificationTask()
    with pytest.raises(InputTypeError, match="torchvision model: pass its transform"):
        task.make_runner(model, role="teacher")([_images(1)[0]], [0])
    runner = task.make_runner(model, role="teacher", preprocessor=transform)
    images = _images()
    stages, logits = _hooked(model, [model.layer1, model.layer2, model.layer3, model.layer4],
                             torch.stack([transform(im) for im in images]))
    assert runner.layer_names == ["layer1", "layer2", "layer3", "layer4"]
    for layer, stage in enumerate(stages):
        got, out = _pooled(task, runner, images, layer, "flatten")
        torch.testing.assert_close(got, stage.reshape(len(images), -1))
    torch.testing.assert_close(out.logits, logits)
    nodes = ImageClassificationTask(return_nodes=["layer2", "avgpool"]).make_runner(model, role="teacher", preprocessor=transform)
    assert nodes.layer_names == ["layer2", "avgpool"]
    with pytest.raises(InputError, match="not nodes of the teacher"):
        ImageClassificationTask(return_nodes=["layer9"]).make_runner(model, role="teacher", preprocessor=transform)


def test_torchvision_vit_encoder_blocks(tv: Any) -> None:
    torch.manual_seed(0)
    model = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                        mlp_dim=32, num_classes=5).eval()
    transform = tv.transforms.Compose([tv.transforms.Resize((32, 32)), tv.transforms.ToTensor()])
    task = ImageClassificationTask()
    runner = task.make_runner(model, role="student", preprocessor=transform)
    images = _images()
    blocks, logits = _hooked(model, list(model.encoder.layers), torch.stack([transform(im) for im in images]))
    for layer, block in enumerate(blocks):
        got, out = _pooled(task, runner, images, layer, "mean")
        torch.testing.assert_close(got, block[:, 1:].mean(dim=1))
    torch.testing.assert_close(out.logits, logits)
    assert out.prefix_tokens == (1, 1)


def test_evaluate_pair_of_a_timm_teacher_and_a_torchvision_student(timm: Any, tv: Any) -> None:
    """Through the engine: FSS equals a Gram-space CKA of the hooked stages, AOAg exp(-KL) of the logits."""
    from knowledge_retention.extraction import evaluate_pair

    torch.manual_seed(0)
    teacher = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    student = tv.models.resnet18(weights=None, num_classes=5).eval()
    transform = tv.transforms.Compose([tv.transforms.Resize((32, 32)), tv.transforms.ToTensor()])
    images = _images(9)
    result = evaluate_pair(teacher, student, images, teacher_tokenizer=transform, student_tokenizer=transform,
                           layers=[(4, 3), (2, 1)], batch_size=4, progress=False)
    pixels = torch.stack([transform(im) for im in images])
    t_states, t_logits = _hooked(teacher, [teacher.layer4, teacher.layer2], pixels)
    s_states, s_logits = _hooked(student, [student.layer2, student.layer4], pixels)

    def cka(x: torch.Tensor, y: torch.Tensor) -> float:
        a, b = x.mean(dim=(2, 3)).double().numpy(), y.mean(dim=(2, 3)).double().numpy()
        h = np.eye(len(a)) - 1.0 / len(a)
        k, l_ = h @ a @ a.T @ h, h @ b @ b.T @ h
        return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))

    np.testing.assert_allclose(result.pair_scores, [cka(t_states[1], s_states[1]), cka(t_states[0], s_states[0])],
                               atol=1e-6)
    lt, ls = torch.log_softmax(t_logits.double(), 1), torch.log_softmax(s_logits.double(), 1)
    assert result.aoag == pytest.approx(float(torch.exp(-(lt.exp() * (lt - ls)).sum(1)).mean()), abs=1e-6)
    assert result.options["image"]["teacher"]["backend"] == "timm"
    assert result.options["image"]["student"]["backend"] == "torchvision"
