"""The report of an image task: the worst examples are thumbnails of the dataset's images.

References: the thumbnails' pixels against PIL resizing the dataset image by hand, the listed examples
and predictions against a numpy KL and argmax of the result's own logits, the headline against
``evaluate_pair``; the CLI (``evaluate --image-column``) writes the same thumbnails for an image folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knowledge_retention.extraction import evaluate_pair, evaluate_students
from knowledge_retention.extraction.tasks.image_models import import_torchvision
from knowledge_retention.reporting import build_report, write_report

import_torchvision()  # before transformers' image processors, which import torchvision when it is installed
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

import image_fixtures as launch  # noqa: E402

N = 7
TOP_K = 4


def by_hand_thumbnail(image: Any) -> np.ndarray:
    """The image resized (bilinear) so that its longest side is 96 px, computed here."""
    image = image.convert("RGB")
    w, h = image.size
    size = (96, round(h * 96 / w)) if w >= h else (round(w * 96 / h), 96)
    return np.asarray(image.resize(size, PIL.Resampling.BILINEAR))


def per_example_kl(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    lt = t - t.max(1, keepdims=True)
    lt = lt - np.log(np.exp(lt).sum(1, keepdims=True))
    ls = s - s.max(1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(1, keepdims=True))
    return (np.exp(lt) * (lt - ls)).sum(1)  # type: ignore[no-any-return]


def _processor(size: int) -> Any:
    return transformers.ViTImageProcessor(size={"height": size, "width": size})


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    (teacher, t_size), (student, s_size) = launch.resnet(), launch.vit()
    return {"teacher": teacher, "student": student, "teacher_tokenizer": _processor(t_size),
            "student_tokenizer": _processor(s_size)}


@pytest.fixture(scope="module")
def data() -> dict[str, list[Any]]:
    return {"image": launch.images(N, seed=3), "label": [i % 5 for i in range(N)]}


def _check_thumbnails(out: Path, report: dict[str, Any], image_of: Any) -> list[dict[str, Any]]:
    rows = report["errors"]["top_disagreements"]
    assert len(rows) == TOP_K
    for row in rows:
        assert row["image"] == f"examples/{row['index']}.png" and "image_png" not in row and row["text"] is None
        written = np.asarray(PIL.open(out / row["image"]))
        expected = by_hand_thumbnail(image_of(row["index"]))
        assert max(written.shape[:2]) == 96
        np.testing.assert_array_equal(written, expected)
    assert "image_png" not in (out / "report.json").read_text()
    md = (out / "report.md").read_text()
    assert "| label | image |" in md
    for row in rows:
        assert f"![example {row['index']}](examples/{row['index']}.png)" in md
    return rows  # type: ignore[no-any-return]


def test_the_worst_examples_are_thumbnails_of_the_dataset_images(models: dict[str, Any], data: Any,
                                                                 tmp_path: Path) -> None:
    result = evaluate_pair(models["teacher"], models["student"], data, teacher_tokenizer=models["teacher_tokenizer"],
                           student_tokenizer=models["student_tokenizer"], label_column="label", layers="uniform",
                           batch_size=3, progress=False)
    report = build_report(result, dataset=data, bootstrap=0, top_k=TOP_K)
    paths = write_report(report, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["options"]["extraction"]["image_column"] == "image"
    rows = _check_thumbnails(tmp_path, saved, lambda i: PIL.fromarray(data["image"][i]))
    # the listed examples, predictions and labels are the result's own, and the headline is evaluate_pair's
    t, s = np.asarray(result.teacher_logits, np.float64), np.asarray(result.student_logits, np.float64)
    kl = per_example_kl(t, s)
    order = np.argsort(-kl, kind="stable")[:TOP_K]
    indices = np.asarray(result.example_indices)
    assert [r["index"] for r in rows] == [int(indices[i]) for i in order]
    for row, i in zip(rows, order, strict=True):
        assert row["kl"] == pytest.approx(kl[i], rel=1e-6, abs=1e-9)
        assert row["teacher_prediction"] == int(t[i].argmax()) and row["student_prediction"] == int(s[i].argmax())
        assert row["label"] == data["label"][int(indices[i])]
    for key in ("krs", "fss", "aoag"):
        assert saved["headline"][key] == pytest.approx(getattr(result, key), abs=1e-12)
    # no absolute path anywhere in the rows
    assert not any(str(v).startswith("/") for r in rows for v in r.values())


def test_a_text_report_keeps_its_texts_and_a_bad_image_column_is_a_note(models: dict[str, Any], data: Any,
                                                                         tmp_path: Path) -> None:
    result = evaluate_pair(models["teacher"], models["student"], data, teacher_tokenizer=models["teacher_tokenizer"],
                           student_tokenizer=models["student_tokenizer"], layers="uniform", batch_size=4,
                           cross_layer=False, progress=False)
    report = build_report(result, dataset={"picture": data["image"]}, bootstrap=0, top_k=2)
    assert any("Thumbnails not read" in n and "'image'" in n for n in report["notes"])
    assert all("image" not in r for r in report["errors"]["top_disagreements"])
    write_report(report, tmp_path)
    assert not (tmp_path / "examples").exists()
    assert "| label | text |" in (tmp_path / "report.md").read_text()


def test_a_comparison_writes_each_students_thumbnails(models: dict[str, Any], data: Any, tmp_path: Path) -> None:
    students = {"vit": models["student"], "resnet": launch.resnet()[0]}
    tokenizers = {"vit": models["student_tokenizer"], "resnet": models["teacher_tokenizer"]}
    results = evaluate_students(models["teacher"], students, data, teacher_tokenizer=models["teacher_tokenizer"],
                                student_tokenizers=tokenizers, label_column="label", layers="uniform", batch_size=4,
                                progress=False)
    report = build_report(results, dataset=data, bootstrap=0, top_k=TOP_K)
    write_report(report, tmp_path)
    assert "image_png" not in (tmp_path / "report.json").read_text()
    for name in students:
        saved = json.loads((tmp_path / name / "report.json").read_text())
        _check_thumbnails(tmp_path / name, saved, lambda i: PIL.fromarray(data["image"][i]))


def test_cli_evaluate_image_column_writes_the_thumbnails(models: dict[str, Any], tmp_path: Path) -> None:
    import datasets

    from knowledge_retention.cli import main

    folders = {}
    for name in ("teacher", "student"):
        folders[name] = tmp_path / name
        models[name].save_pretrained(folders[name])
        models[f"{name}_tokenizer"].save_pretrained(folders[name])
    root = tmp_path / "data"
    for i, array in enumerate(launch.images(N, seed=5)):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        PIL.fromarray(array).save(root / f"c{i % 2}" / f"{i}.png")
    out = tmp_path / "out"
    argv = ["evaluate", "--teacher", str(folders["teacher"]), "--student", str(folders["student"]), "--dataset",
            str(root), "--image-column", "image", "--label-column", "label", "--layers", "uniform", "--batch-size",
            "4", "--top-k", str(TOP_K), "--output-dir", str(out), "--quiet", "--no-latency", "--bootstrap", "0"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    folder = datasets.load_dataset("imagefolder", data_dir=str(root), split="train")
    _check_thumbnails(out, report, lambda i: folder[int(i)]["image"])
    direct = evaluate_pair(str(folders["teacher"]), str(folders["student"]), str(root), label_column="label",
                           layers="uniform", batch_size=4, progress=False)
    for key in ("krs", "fss", "aoag"):
        assert report["headline"][key] == pytest.approx(getattr(direct, key), abs=1e-9)
