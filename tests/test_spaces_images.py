"""The Space's models tab on image classifiers: listed image models scored on an image folder.

Reference: ``evaluate_pair`` called directly on the same folder (the numbers must be its own), and the
refusals (a folder outside the results folders, a measure the image path does not offer).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from knowledge_retention.extraction import evaluate_pair
from knowledge_retention.extraction.tasks.image_models import import_torchvision

import_torchvision()  # before transformers' image processors, which import torchvision when it is installed
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

import image_fixtures as launch  # noqa: E402

SPACE = Path(__file__).resolve().parents[1] / "spaces_app"
sys.path.insert(0, str(SPACE))

import space_compare  # noqa: E402
from space_io import InputError  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with a ResNet teacher, a ViT student (saved with their processors) and an image folder."""
    root = tmp_path_factory.mktemp("results")
    for name, (model, size) in {"teacher": launch.resnet(), "student": launch.vit()}.items():
        model.save_pretrained(root / "vision" / name)
        transformers.ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(root / "vision" / name)
    for i, array in enumerate(launch.images(8, seed=4)):
        (root / "images" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        PIL.fromarray(array).save(root / "images" / f"c{i % 3}" / f"{i}.png")
    return root


@pytest.fixture()
def listed(results: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    monkeypatch.setenv("KRS_RESULTS_DIR", str(results))
    monkeypatch.delenv("KRS_ALLOW_CUSTOM_MODELS", raising=False)
    choices = space_compare.model_choices()
    assert {path for _, path in choices} >= {str(results / "vision" / "teacher"), str(results / "vision" / "student")}
    return choices


def test_compare_models_scores_listed_image_models_on_an_image_folder(results: Path,
                                                                      listed: list[tuple[str, str]]) -> None:
    teacher, student = str(results / "vision" / "teacher"), str(results / "vision" / "student")
    out = space_compare.compare_models(teacher, student, [], None, alpha=0.3, layers="uniform",
                                       images=str(results / "images"), choices=listed, source="8 images")
    direct = evaluate_pair(teacher, student, str(results / "images"), label_column="label", layers="uniform",
                           progress=False)
    assert out.task == "classification" and out.num_examples == 8
    assert out.fss == pytest.approx(direct.fss, abs=1e-12) and out.aoag == pytest.approx(direct.aoag, abs=1e-12)
    assert out.paired == tuple(tuple(p) for p in direct.layer_pairs)
    assert out.cka is not None and np.allclose(out.cka, np.asarray(direct.cross_layer_cka))
    assert out.quality is not None  # the class subfolders are the labels


def test_image_folder_refusals(results: Path, listed: list[tuple[str, str]], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = str(results / "vision" / "teacher"), str(results / "vision" / "student")
    with pytest.raises(InputError, match="must be under this Space's results folders"):
        space_compare.compare_models(teacher, student, [], None, images=str(tmp_path), choices=listed)
    with pytest.raises(InputError, match="There is no image folder at"):
        space_compare.compare_models(teacher, student, [], None, images=str(results / "nope"), choices=listed)
    with pytest.raises(InputError, match="scored with linear_cka here, not rbf_cka"):
        space_compare.compare_models(teacher, student, [], None, fss_method="rbf_cka", images=str(results / "images"),
                                     choices=listed)
    monkeypatch.setenv("KRS_ALLOW_CUSTOM_MODELS", "1")
    assert space_compare.image_folder(str(tmp_path)) == (str(tmp_path.resolve()), None)  # no class subfolders


def test_run_models_callback_takes_an_image_folder(results: Path, listed: list[tuple[str, str]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("krs_space_app_images", SPACE / "app.py")
    assert spec is not None and spec.loader is not None
    app: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app
    spec.loader.exec_module(app)
    monkeypatch.setattr(app, "MODEL_CHOICES", listed)
    labels = {path: label for label, path in listed}
    shown, status, summary, *_ = app.run_models(
        labels[str(results / "vision" / "teacher")], labels[str(results / "vision" / "student")],
        space_compare.SOURCE_BUILTIN, 8, "", "nlp", 0.3, "uniform", "linear_cka", "auto", 1.0,
        str(results / "images"), progress=lambda *a, **k: None)
    assert "Compared the teacher" in status.value and "the images of" in status.value
    assert shown.result.num_examples == 8 and "KRS" in summary
