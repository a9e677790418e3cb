"""Image models through the one engine: ``evaluate_pair`` / ``evaluate_students`` end to end.

References: the models run by hand (their folder's processor, then ``output_hidden_states=True``), the
hidden states pooled by hand in numpy, an O(N^2) Gram-space CKA and exp(-KL) from the logits; the
teacher cache replayed equals the live run; two processes equal one (``accelerate launch``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from knowledge_retention._validation import InputError
from knowledge_retention.extraction import TeacherCache, evaluate_pair, evaluate_students
from knowledge_retention.extraction.tasks.image_models import import_torchvision

import_torchvision()  # before transformers' image processors, which import torchvision when it is installed
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

import image_fixtures as launch  # noqa: E402


def naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    return float(np.trace(k @ h @ l_ @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(l_ @ h @ l_ @ h)))


def exp_neg_kl(t: np.ndarray, s: np.ndarray) -> float:
    lt = t - np.log(np.exp(t - t.max(1, keepdims=True)).sum(1, keepdims=True)) - t.max(1, keepdims=True)
    ls = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    return float(np.mean(np.exp(-(np.exp(lt) * (lt - ls)).sum(1))))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A ResNet teacher (40-px processor) and a 6-block ViT student (32 px), saved with their processors."""
    out = {}
    for name, (model, size) in {"teacher": launch.resnet(), "student": launch.vit()}.items():
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        transformers.ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
        out[name] = str(folder)
    return out


def _by_hand(folder: str, images: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    pixels = processor(images=[PIL.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    pooled = [h[:, 1:].mean(1) if h.ndim == 3 else h.mean((2, 3)) for h in out.hidden_states]  # CLS left out
    return [p.double().numpy() for p in pooled], out.logits.double().numpy()


def test_evaluate_pair_of_a_cnn_teacher_and_a_vit_student(pair: dict[str, str]) -> None:
    images = launch.images(11)
    labels = [i % 5 for i in range(11)]
    result = evaluate_pair(pair["teacher"], pair["student"], {"image": images, "label": labels}, label_column="label",
                           layers="uniform", batch_size=4, progress=False)
    t_pooled, t_logits = _by_hand(pair["teacher"], images)
    s_pooled, s_logits = _by_hand(pair["student"], images)
    assert result.layer_pairs == [(1, 2), (2, 3), (3, 5), (4, 6)]  # 4 CNN stages, 6 ViT blocks
    want = [naive_cka(t_pooled[t], s_pooled[s]) for t, s in result.layer_pairs]
    np.testing.assert_allclose(result.pair_scores, want, atol=1e-6)
    assert result.fss == pytest.approx(np.mean(want), abs=1e-6)
    assert result.aoag == pytest.approx(exp_neg_kl(t_logits, s_logits), abs=1e-6)
    assert result.alpha == 0.3 and result.krs == pytest.approx(0.3 * result.fss + 0.7 * result.aoag)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.teacher_logits, t_logits, rtol=1e-5, atol=1e-6)
    assert result.cross_layer_cka.shape == (5, 7)
    assert result.cross_layer_cka[4, 6] == pytest.approx(naive_cka(t_pooled[4], s_pooled[6]), abs=1e-6)
    assert result.teacher_layer_names == ["embeddings", "stage_1", "stage_2", "stage_3", "stage_4"]
    image = result.options["image"]
    assert result.options["pooling"] == "mean" and result.options["task"] == "classification"
    assert image["teacher"]["image_size"] == [40, 40] and image["student"]["image_size"] == [32, 32]
    assert image["student"]["prefix_tokens"] == 1 and image["student"]["prefix_tokens_pooled"] is False


def test_teacher_cache_replay_equals_the_live_run(pair: dict[str, str], tmp_path: Path) -> None:
    images = launch.images(7)
    options = dict(pooling="flatten", flatten_grid=2, layers="all", batch_size=3, progress=False)
    live = evaluate_pair(pair["teacher"], pair["student"], images, **options)
    cache = TeacherCache(tmp_path / "cache")
    recorded = evaluate_pair(pair["teacher"], pair["student"], images, teacher_cache=cache, **options)
    replayed = evaluate_pair(pair["teacher"], pair["student"], images, teacher_cache=cache, **options)
    assert recorded.options["teacher_cache"]["reused"] is False and replayed.options["teacher_cache"]["reused"] is True
    for got in (recorded, replayed):
        assert got.fss == pytest.approx(live.fss, abs=1e-9) and got.aoag == pytest.approx(live.aoag, abs=1e-9)
        np.testing.assert_allclose(got.cross_layer_cka, live.cross_layer_cka, atol=1e-9)
    other = evaluate_pair(pair["teacher"], pair["student"], launch.images(7, seed=9), teacher_cache=cache, **options)
    assert other.options["teacher_cache"]["reused"] is False  # other pixels, other fingerprint


def test_positions_and_the_image_options_are_checked(pair: dict[str, str]) -> None:
    images = launch.images(5)
    with pytest.raises(InputError, match="needs equal grids"):
        evaluate_pair(pair["teacher"], pair["student"], images, pooling="positions", layers="uniform", progress=False)
    with pytest.raises(InputError, match="`teacher_cache` keeps one row per image"):
        evaluate_pair(pair["student"], pair["student"], images, pooling="positions", teacher_cache=TeacherCache(),
                      progress=False)
    with pytest.raises(InputError, match="`max_length=16` is not used by task='image-classification'"):
        evaluate_pair(pair["teacher"], pair["student"], images, max_length=16, progress=False)
    with pytest.raises(InputError, match="`pooling` must be one of"):
        evaluate_pair(pair["teacher"], pair["student"], images, pooling="last", progress=False)
    with pytest.raises(InputError, match="flatten_grid=2` applies to pooling='flatten' only"):
        evaluate_pair(pair["teacher"], pair["student"], images, flatten_grid=2, progress=False)
    default = evaluate_pair(pair["student"], pair["teacher"], images, progress=False)
    cls = evaluate_pair(pair["student"], pair["student"], images, pooling="cls", layers=[(1, 2)], progress=False)
    assert default.options["pooling"] == "mean"  # the image default
    assert cls.options["pooling"] == "cls"  # "cls" given explicitly, though it is the text default
    s_pooled, _ = _by_hand(pair["student"], images)
    assert default.pair_scores[0] == pytest.approx(naive_cka(s_pooled[-1], _by_hand(pair["teacher"], images)[0][-1]),
                                                   abs=1e-6)
    same = evaluate_pair(pair["student"], pair["student"], images, pooling="positions", layers="all", progress=False)
    assert same.fss == pytest.approx(1.0) and same.cross_layer_cka is None


def test_evaluate_students_runs_each_student_as_evaluate_pair(pair: dict[str, str]) -> None:
    images = launch.images(6)
    both = evaluate_students(pair["teacher"], {"vit": pair["student"], "self": pair["teacher"]}, images,
                             layers="final", batch_size=4, progress=False)
    alone = evaluate_pair(pair["teacher"], pair["student"], images, layers="final", batch_size=4, progress=False)
    assert both["vit"].fss == pytest.approx(alone.fss, abs=1e-9) and both["vit"].aoag == pytest.approx(alone.aoag)
    assert both["self"].fss == pytest.approx(1.0) and both["self"].aoag == pytest.approx(1.0)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path, torchrun) -> None:
    """2 CPU processes (the ``image-extraction`` scenario): 11 images in batches of 2 (uneven last round)."""
    ranks = torchrun("image-extraction", tmp_path).ranks
    single = launch.run_all(None)
    for dist in ranks:
        for case, want in single.items():
            got = dist[case]
            assert got["num_processes"] == 2 and want["num_processes"] == 1
            assert got["example_indices"] == list(range(launch.N))
            for key in ("fss", "aoag", "krs"):
                assert math.isclose(got[key], want[key], rel_tol=1e-6, abs_tol=1e-9), (case, key)


# --- the front ends ----------------------------------------------------------------------------------


def _image_folder(root: Path, n: int = 8) -> Path:
    for i, array in enumerate(launch.images(n)):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        PIL.fromarray(array).save(root / f"c{i % 2}" / f"{i}.png")
    return root


def test_cli_evaluate_reads_an_image_folder(pair: dict[str, str], tmp_path: Path) -> None:
    from knowledge_retention.cli import main

    folder = _image_folder(tmp_path / "data")
    argv = ["evaluate", "--teacher", pair["teacher"], "--student", pair["student"], "--dataset", str(folder),
            "--image-column", "image", "--label-column", "label", "--layers", "uniform", "--batch-size", "4",
            "--output-dir", str(tmp_path / "out"), "--quiet", "--no-latency", "--bootstrap", "10"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    direct = evaluate_pair(pair["teacher"], pair["student"], str(folder), label_column="label", layers="uniform",
                           batch_size=4, progress=False)
    for key in ("krs", "fss", "aoag"):
        assert report["headline"][key] == pytest.approx(getattr(direct, key), abs=1e-9)
    assert report["headline"]["alpha"] == 0.3 and report["num_examples"] == 8
    assert main([*argv[:-6], "--max-length", "16", "--output-dir", str(tmp_path / "o2"), "--quiet"]) == 2


def test_krs_callback_scores_an_image_student_during_training(pair: dict[str, str], tmp_path: Path) -> None:
    import datasets
    from transformers import Trainer, TrainingArguments

    from knowledge_retention.integrations import KRSCallback

    teacher = transformers.AutoModelForImageClassification.from_pretrained(pair["teacher"])
    student = transformers.AutoModelForImageClassification.from_pretrained(pair["student"]).train()
    t_processor = transformers.AutoImageProcessor.from_pretrained(pair["teacher"])
    s_processor = transformers.AutoImageProcessor.from_pretrained(pair["student"])
    images = launch.images(8)
    eval_images = {"image": images, "label": [i % 5 for i in range(8)]}
    pixels = s_processor(images=[PIL.fromarray(a) for a in images], return_tensors="np")["pixel_values"]
    train = datasets.Dataset.from_dict({"pixel_values": list(pixels), "labels": [i % 5 for i in range(8)]})
    callback = KRSCallback(teacher, eval_images, s_processor, teacher_tokenizer=t_processor, layers="uniform",
                           batch_size=4, label_column="label")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                             eval_strategy="steps", eval_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=student, args=args, train_dataset=train, eval_dataset=train, callbacks=[callback])
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_krs" in e]
    assert [e["step"] for e in evals] == [1, 2] and len({e["eval_krs"] for e in evals}) == 2
    direct = evaluate_pair(teacher, trainer.model, eval_images, teacher_tokenizer=t_processor,
                           student_tokenizer=s_processor, layers="uniform", batch_size=4, label_column="label",
                           cross_layer=False, progress=False)
    for key in ("krs", "fss", "aoag"):
        assert evals[-1][f"eval_{key}"] == pytest.approx(getattr(direct, key), abs=1e-9)
    with pytest.raises(InputError, match="`image_column='img'` is not a column of `eval_dataset`"):
        KRSCallback(teacher, eval_images, s_processor, image_column="img")
