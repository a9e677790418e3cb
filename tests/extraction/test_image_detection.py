"""Detection and segmentation tasks against direct computations from the models' outputs.

Tiny random DETR (a transformers ResNet backbone, no pretrained weights), YOLOS and SegFormer models are
saved with their processors and loaded back by path. Detections must equal the processor's own
``post_process_object_detection`` of the model's direct output; the box agreement a brute-force
matching over every assignment; label maps the processor's ``post_process_semantic_segmentation``;
mask IoU a numpy confusion matrix; the per-pixel agreement exp(-KL) written out in numpy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from knowledge_retention._validation import InputError
from knowledge_retention.extraction.tasks.detection import DetectionAgreementAccumulator, ObjectDetectionTask
from knowledge_retention.extraction.tasks.image_models import import_torchvision
from knowledge_retention.extraction.tasks.segmentation import (
    SegmentationAgreementAccumulator,
    SemanticSegmentationTask,
)
from knowledge_retention.score import TASK_PRESETS

import_torchvision()  # before transformers' image processors, which import torchvision when it is installed
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
THRESHOLD = 0.2


def _images(n: int = 5) -> list:  # type: ignore[type-arg]
    rng = np.random.default_rng(2)
    return [PIL.fromarray(rng.integers(0, 256, (40 + 4 * (i % 2), 48, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = transformers
    torch.manual_seed(0)
    backbone = t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1],
                              out_features=["stage2", "stage4"])
    detr = t.DetrForObjectDetection(t.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=16, encoder_layers=2,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        num_queries=5, num_labels=3))
    yolos = t.YolosForObjectDetection(t.YolosConfig(
        image_size=[32, 32], patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_detection_tokens=4, num_labels=3))
    segformer = {size: t.SegformerForSemanticSegmentation(t.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 2],
        decoder_hidden_size=16, num_labels=3, patch_sizes=[7, 3], strides=[4, 2])) for size in (32, 24)}
    out = {}
    for name, model, processor in [
        ("detr", detr, t.DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})),
        ("yolos", yolos, t.YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})),
        ("seg32", segformer[32], t.SegformerImageProcessor(size={"height": 32, "width": 32})),
        ("seg24", segformer[24], t.SegformerImageProcessor(size={"height": 24, "width": 24})),
    ]:
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[name] = str(folder)
    return out


def _direct(folder: str, images: list, head: str):  # type: ignore[no-untyped-def,type-arg]
    model = getattr(transformers, head).from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return model, processor, pixels, out


# --- references --------------------------------------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def brute_force_agreement(teacher: list[dict], student: list[dict]) -> tuple[float, int, int]:  # type: ignore[type-arg]
    """Mean over images of the best one-to-one IoU sum / max(M, K), tried over every assignment;
    and the matched (IoU > 0) pairs and those of equal class."""
    total, matched, same = 0.0, 0, 0
    for t, s in zip(teacher, student, strict=True):
        tb, sb = t["boxes"], s["boxes"]
        if len(tb) == 0 and len(sb) == 0:
            total += 1.0
            continue
        small, large, flip = (tb, sb, False) if len(tb) <= len(sb) else (sb, tb, True)
        best, best_pairs = -1.0, []
        for chosen in itertools.permutations(range(len(large)), len(small)):
            score = sum(_iou(small[i], large[j]) for i, j in enumerate(chosen))
            if score > best:
                best, best_pairs = score, [(j, i) if flip else (i, j) for i, j in enumerate(chosen)]
        total += best / max(len(tb), len(sb))
        for i, j in best_pairs:
            if _iou(tb[i], sb[j]) > 0:
                matched += 1
                same += int(t["labels"][i] == s["labels"][j])
    return total / len(teacher), matched, same


# --- detection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["detr", "yolos"])
def test_detections_are_the_processors_own_post_processing(folders: dict[str, str], kind: str) -> None:
    images = _images()
    _, processor, _, direct = _direct(folders[kind], images, "AutoModelForObjectDetection")
    want = processor.post_process_object_detection(direct, threshold=THRESHOLD,
                                                   target_sizes=[(im.size[1], im.size[0]) for im in images])
    task = ObjectDetectionTask(threshold=THRESHOLD)
    runner = task.make_runner(folders[kind], role="teacher")
    with torch.inference_mode():
        pooled = task.pool(runner(images, list(range(len(images)))), [0], "mean", runner=runner)
    assert sum(len(d["boxes"]) for d in pooled.logits) > 0  # the threshold lets some through
    for got, ref in zip(pooled.logits, want, strict=True):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_allclose(got[key], ref[key].numpy(), rtol=1e-5, atol=1e-4)


def test_yolos_mean_leaves_out_cls_and_detection_tokens(folders: dict[str, str]) -> None:
    images = _images()
    _, _, pixels, direct = _direct(folders["yolos"], images, "AutoModelForObjectDetection")
    task = ObjectDetectionTask(threshold=THRESHOLD)
    runner = task.make_runner(folders["yolos"], role="student")
    with torch.inference_mode():
        out = runner(images, list(range(len(images))))
    grid = (pixels.shape[-2] // 8) * (pixels.shape[-1] // 8)
    for layer, state in enumerate(direct.hidden_states):
        assert state.shape[1] == 1 + grid + 4
        got = task.pool(out, [layer], "mean", runner=runner).features[layer]
        torch.testing.assert_close(got, state[:, 1 : 1 + grid].mean(dim=1))
        torch.testing.assert_close(task.pool(out, [layer], "cls", runner=runner).features[layer], state[:, 0])


def test_detr_states_are_its_backbone_maps_then_its_encoder(folders: dict[str, str]) -> None:
    images = _images()
    model, _, pixels, direct = _direct(folders["detr"], images, "AutoModelForObjectDetection")
    with torch.inference_mode():
        maps = model.model.backbone.model(pixels).feature_maps
    task = ObjectDetectionTask()
    runner = task.make_runner(folders["detr"], role="teacher")
    with torch.inference_mode():
        out = runner(images, list(range(len(images))))
    want = [*maps, *direct.encoder_hidden_states]
    assert runner.layer_names == ["backbone_0", "backbone_1", "encoder_0", "encoder_1", "encoder_2"]
    for layer, state in enumerate(want):
        got = task.pool(out, [layer], "mean", runner=runner).features[layer]
        torch.testing.assert_close(got, state.mean(dim=(2, 3)) if state.ndim == 4 else state.mean(dim=1))
    assert out.grids[-1] == tuple(maps[-1].shape[2:])  # the encoder reads the last map's positions


def test_box_agreement_of_two_detectors_equals_a_brute_force_matching(folders: dict[str, str]) -> None:
    images = _images()
    task = ObjectDetectionTask(threshold=THRESHOLD)
    teacher, student = task.make_runner(folders["detr"], role="teacher"), task.make_runner(folders["yolos"], role="student")
    total = task.new_agreement()
    all_t, all_s = [], []
    for batch in ([0, 1, 2], [3, 4]):
        with torch.inference_mode():
            t = task.outputs(teacher([images[i] for i in batch], batch), teacher)
            s = task.outputs(student([images[i] for i in batch], batch), student)
        part = DetectionAgreementAccumulator().update(t, s)
        total = total + part
        all_t += t
        all_s += s
    want, matched, same = brute_force_agreement(all_t, all_s)
    assert total.compute() == pytest.approx(want, abs=1e-6)  # the boxes are float32
    assert matched > 0 and total.compute("class") == pytest.approx(same / matched)
    again = DetectionAgreementAccumulator.from_state_dict(total.state_dict())
    assert again.compute() == total.compute() and again.compute("class") == total.compute("class")
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0), "scores": np.zeros(0)}]
    assert DetectionAgreementAccumulator().update(empty, empty).compute() == 1.0
    with pytest.raises(InputError, match="'box_iou' or 'class'"):
        total.compute("kl")


def test_detection_refusals_and_preset(folders: dict[str, str]) -> None:
    task = ObjectDetectionTask()
    assert task.accepts(folders["detr"]) and not task.accepts(folders["seg32"])
    with pytest.raises(InputError, match="detection_threshold"):
        ObjectDetectionTask(threshold=1.5)
    with pytest.raises(InputError, match="not a \\*ForObjectDetection"):
        task.make_runner(folders["seg32"], role="student")
    assert TASK_PRESETS[task.preset][0] == 0.7
    assert task.describe(task.make_runner(folders["yolos"], role="s"), pooling="mean")["detection_threshold"] == 0.5


# --- segmentation ------------------------------------------------------------------------------------


def _mask_iou(t: np.ndarray, s: np.ndarray) -> float:
    ious = []
    for c in np.union1d(t, s):
        inter, union = np.sum((t == c) & (s == c)), np.sum((t == c) | (s == c))
        ious.append(inter / union)
    return float(np.mean(ious))


def test_label_maps_mask_iou_and_pixel_kl_against_the_logits(folders: dict[str, str]) -> None:
    images = _images()
    sizes = [(im.size[1], im.size[0]) for im in images]
    _, processor, _, t_direct = _direct(folders["seg32"], images, "AutoModelForSemanticSegmentation")
    _, _, _, s_direct = _direct(folders["seg24"], images, "AutoModelForSemanticSegmentation")
    want_t = [m.numpy() for m in processor.post_process_semantic_segmentation(t_direct, target_sizes=sizes)]
    want_s = [m.numpy() for m in processor.post_process_semantic_segmentation(s_direct, target_sizes=sizes)]
    task = SemanticSegmentationTask(pixel_kl=True)
    teacher, student = task.make_runner(folders["seg32"], role="teacher"), task.make_runner(folders["seg24"], role="student")
    with torch.inference_mode():
        t_out, s_out = teacher(images, range(5)), student(images, range(5))  # type: ignore[arg-type]
    t_items, s_items = task.outputs(t_out, teacher), task.outputs(s_out, student)
    for got, want in zip(t_items + s_items, want_t + want_s, strict=True):
        np.testing.assert_array_equal(got["labels"], want)
    acc = task.new_agreement()
    acc.update(t_items[:2], s_items[:2])
    acc += SegmentationAgreementAccumulator(pixel_kl=True).update(t_items[2:], s_items[2:])
    flat_t = np.concatenate([m.ravel() for m in want_t])
    flat_s = np.concatenate([m.ravel() for m in want_s])
    assert acc.compute() == pytest.approx(_mask_iou(flat_t, flat_s))
    kl_rows = []
    for i, size in enumerate(sizes):  # the logits resized as the processor does, then exp(-KL) per pixel
        lt, ls = (torch.nn.functional.interpolate(d.logits[i : i + 1], size=size, mode="bilinear", align_corners=False)[0]
                  .double().numpy().reshape(3, -1).T for d in (t_direct, s_direct))
        log_t = lt - np.log(np.exp(lt).sum(1, keepdims=True))
        log_s = ls - np.log(np.exp(ls).sum(1, keepdims=True))
        kl_rows.append(np.exp(-(np.exp(log_t) * (log_t - log_s)).sum(1)))
    assert acc.compute("kl") == pytest.approx(float(np.concatenate(kl_rows).mean()), abs=1e-6)
    for layer, state in enumerate(t_direct.hidden_states):
        got = task.pool(t_out, [layer], "mean", runner=teacher).features[layer]
        torch.testing.assert_close(got, state.mean(dim=(2, 3)))
    assert TASK_PRESETS[task.preset][0] == 0.7
    with pytest.raises(InputError, match="pixel_kl=True"):
        SegmentationAgreementAccumulator().update(t_items, s_items).compute("kl")


# --- through the engine ------------------------------------------------------------------------------


def test_evaluate_pair_of_two_detectors_and_two_segmenters(folders: dict[str, str]) -> None:
    from knowledge_retention.extraction import evaluate_pair

    images = _images()
    detection = evaluate_pair(folders["detr"], folders["yolos"], images, detection_threshold=THRESHOLD, batch_size=2,
                              progress=False)
    task = ObjectDetectionTask(threshold=THRESHOLD)
    teacher, student = task.make_runner(folders["detr"], role="t"), task.make_runner(folders["yolos"], role="s")
    with torch.inference_mode():
        t = task.outputs(teacher(images, list(range(5))), teacher)
        s = task.outputs(student(images, list(range(5))), student)
    want, matched, same = brute_force_agreement(t, s)
    assert detection.aoag == pytest.approx(want, abs=1e-6) and detection.aoag_method == "box_iou"
    assert detection.options["class_agreement"] == pytest.approx(same / matched)
    assert detection.alpha == 0.7 and detection.krs == pytest.approx(0.7 * detection.fss + 0.3 * detection.aoag)
    assert detection.options["task"] == "detection" and detection.options["detection_threshold"] == THRESHOLD

    segmentation = evaluate_pair(folders["seg32"], folders["seg24"], images, aoag_method="kl", batch_size=2,
                                 progress=False)
    direct = SemanticSegmentationTask(pixel_kl=True)
    t_run, s_run = direct.make_runner(folders["seg32"], role="t"), direct.make_runner(folders["seg24"], role="s")
    with torch.inference_mode():
        acc = direct.new_agreement().update(direct.outputs(t_run(images, range(5)), t_run),  # type: ignore[arg-type]
                                            direct.outputs(s_run(images, range(5)), s_run))  # type: ignore[arg-type]
    assert segmentation.aoag == pytest.approx(acc.compute("kl"), abs=1e-9) and segmentation.aoag_method == "kl"
    assert segmentation.options["mask_iou"] == pytest.approx(acc.compute("mask_iou"))
    assert segmentation.krs == pytest.approx(0.7 * segmentation.fss + 0.3 * segmentation.aoag)
    with pytest.raises(InputError, match="teacher_cache` is not used by task='object-detection'"):
        from knowledge_retention.extraction import TeacherCache

        evaluate_pair(folders["detr"], folders["yolos"], images, teacher_cache=TeacherCache(), progress=False)
    with pytest.raises(InputError, match="same task"):
        evaluate_pair(folders["detr"], folders["seg32"], images, progress=False)
