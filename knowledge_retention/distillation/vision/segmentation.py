"""A synthetic segmentation demonstration (issue 21 item 7): SegFormer teacher and student on drawn scenes.

**Synthetic data, not a reproduction.** :func:`draw_scenes` paints each image procedurally: a noisy
background and one to three shapes - discs (class 1), squares (class 2), triangles (class 3), random
colours, sizes and places, later shapes over earlier ones - together with the exact label map. A
``SegformerForSemanticSegmentation`` teacher (built from a config, no pretrained weights) is trained on
the masks; a smaller SegFormer student is trained twice per seed from one start: **before** on the masks
only, **after** with pixel-wise KD (the teacher's per-pixel softened distribution, as the pixel-wise term
of structured KD, Liu et al. 2019). Every student is scored against the teacher on held-out scenes by
the engine (:func:`knowledge_retention.extraction.evaluate_students`, ``task="segmentation"``: label maps
at the image's size as ``post_process_semantic_segmentation`` makes them, AOAg = mask-IoU agreement,
FSS = linear CKA of the encoder's last stage mean-pooled) at the paper's preset α = 0.7.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..._validation import InputError
from ..losses import soft_cross_entropy

__all__ = ["SEGMENTATION_SCALES", "draw_scenes", "run_segmentation_demo"]

SEGMENTATION_SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"image_size": 32, "train": 48, "test": 16, "teacher_epochs": 1, "student_epochs": 1, "seeds": (42,),
              "teacher": [8, 16], "student": [4, 8]},
    "cpu": {"image_size": 32, "train": 300, "test": 100, "teacher_epochs": 20, "student_epochs": 10,
            "seeds": (42, 1, 2), "teacher": [32, 64], "student": [8, 16]},
}
RESULTS_FORMAT = "knowledge_retention.demo.segmentation_synthetic/v1"
CLASSES = ("background", "disc", "square", "triangle")


def draw_scenes(n: int, *, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, S, S, 3) uint8, masks (n, S, S) int64)`` of procedurally drawn scenes (see the module)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"`n` must be an int >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float64)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=np.int64)
    for i in range(n):
        image = rng.normal(90, 25, size=(image_size, image_size, 3))
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, 4))
            r = rng.uniform(0.12, 0.25) * image_size
            cy, cx = rng.uniform(r, image_size - r, size=2)
            if kind == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            elif kind == 2:
                inside = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
            else:  # upward triangle: below the apex, inside the two slanted edges
                inside = (yy <= cy + r) & (yy - (cy - r) >= 2 * np.abs(xx - cx))
            image[inside] = rng.uniform(120, 255, size=3) + rng.normal(0, 10, size=(int(inside.sum()), 3))
            masks[i][inside] = kind
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    return images, masks


def _model(hidden: list[int], seed: int) -> Any:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    options: dict[str, Any] = {
        "num_channels": 3, "num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": hidden,
        "patch_sizes": [3, 3], "strides": [2, 2], "num_attention_heads": [1, 2], "mlp_ratios": [2, 2],
        "decoder_hidden_size": 2 * hidden[-1], "num_labels": len(CLASSES),
        "id2label": dict(enumerate(CLASSES)), "label2id": {c: i for i, c in enumerate(CLASSES)}}
    config = SegformerConfig(**options)
    return SegformerForSemanticSegmentation(config)


def _train(model: Any, pixels: torch.Tensor, masks: torch.Tensor, *, epochs: int, seed: int,
           teacher_logits: torch.Tensor | None = None, temperature: float = 2.0, kd_weight: float = 0.5) -> float:
    """Pixel CE at the image's size (logits upsampled as the processor does), plus pixel-wise KD."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(pixels), generator=generator).split(32):
            logits = model(pixel_values=pixels[idx]).logits
            up = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(up, masks[idx])
            if teacher_logits is not None:  # every pixel a row: (B*h*w, C)
                rows = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
                target = teacher_logits[idx].permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
                loss = (1 - kd_weight) * loss + kd_weight * soft_cross_entropy(rows, target, temperature=temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return round(time.perf_counter() - start, 2)


@torch.no_grad()
def _miou(model: Any, pixels: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean IoU against the drawn masks over the classes present (labels at the image's size)."""
    logits = F.interpolate(model(pixel_values=pixels).logits, size=masks.shape[-2:], mode="bilinear",
                           align_corners=False)
    pred = logits.argmax(dim=1)
    ious = []
    for c in range(len(CLASSES)):
        union = ((pred == c) | (masks == c)).sum().item()
        if union:
            ious.append(((pred == c) & (masks == c)).sum().item() / union)
    return float(np.mean(ious))


def run_segmentation_demo(scale: str, output_dir: str | os.PathLike[str], *, progress: bool = True) -> dict[str, Any]:
    """Trains, scores with the engine (α = 0.7) and writes ``results.json`` and ``table.md`` into ``output_dir``."""
    from datasets import Dataset, Image
    from PIL import Image as PILImage
    from transformers import SegformerImageProcessor

    from ...extraction import evaluate_students

    if scale not in SEGMENTATION_SCALES:
        raise InputError(f"`scale` must be one of {sorted(SEGMENTATION_SCALES)}, got {scale!r}")
    cfg = SEGMENTATION_SCALES[scale]
    out = Path(output_dir)
    work = out / "checkpoints"
    size = cfg["image_size"]
    train_images, train_masks = draw_scenes(cfg["train"], image_size=size, seed=0)
    test_images, test_masks = draw_scenes(cfg["test"], image_size=size, seed=1)
    processor = SegformerImageProcessor(size={"height": size, "width": size}, do_reduce_labels=False,
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    test_set = Dataset.from_dict({"image": [PILImage.fromarray(x) for x in test_images]}).cast_column("image", Image())
    pixels = processor(images=[PILImage.fromarray(x) for x in train_images], return_tensors="pt")["pixel_values"]
    test_pixels = processor(images=list(test_set["image"]), return_tensors="pt")["pixel_values"]
    masks, test_masks_t = torch.as_tensor(train_masks), torch.as_tensor(test_masks)
    start = time.perf_counter()
    teacher = _model(cfg["teacher"], seed=cfg["seeds"][0])
    teacher_seconds = _train(teacher, pixels, masks, epochs=cfg["teacher_epochs"], seed=cfg["seeds"][0])
    teacher.save_pretrained(work / "teacher")
    processor.save_pretrained(work / "teacher")
    with torch.no_grad():
        teacher_logits = teacher(pixel_values=pixels).logits
    rows = []
    for seed in cfg["seeds"]:
        init = _model(cfg["student"], seed=seed).state_dict()
        paths = {}
        for variant in ("before", "after"):
            student = _model(cfg["student"], seed=seed)
            student.load_state_dict(init)
            seconds = _train(student, pixels, masks, epochs=cfg["student_epochs"], seed=seed,
                             teacher_logits=teacher_logits if variant == "after" else None)
            path = work / f"seed-{seed}" / f"student-{variant}"
            student.save_pretrained(path)
            processor.save_pretrained(path)
            paths[variant] = str(path)
            rows.append({"seed": seed, "variant": variant, "train_seconds": seconds,
                         "miou": _miou(student, test_pixels, test_masks_t),
                         "parameters": int(sum(p.numel() for p in student.parameters()))})
        scored = evaluate_students(str(work / "teacher"), paths, test_set, image_column="image", task="segmentation",
                                   alpha=0.7, beta=0.3, progress=False)
        for row in rows[-2:]:
            result = scored[row["variant"]]
            row.update({"krs": result.krs, "fss": result.fss, "aoag": result.aoag, "extraction": result.to_dict()})
            if progress:
                print(f"[segmentation demo] seed {seed} {row['variant']}: mIoU {row['miou']:.3f}, KRS {row['krs']:.4f}",
                      file=sys.stderr, flush=True)
    results = {
        "format": RESULTS_FORMAT, "scale": scale, "synthetic": True,
        "data": {"source": "procedurally drawn scenes (draw_scenes): discs, squares, triangles on noise",
                 "classes": list(CLASSES), "image_size": size, "train": cfg["train"], "test": cfg["test"]},
        "setting": {"task": "segmentation", "alpha": 0.7, "beta": 0.3,
                    "aoag": "mask-IoU agreement of the teacher's and the student's label maps",
                    "fss": "linear CKA of the encoder's last stage, mean-pooled",
                    "kd": "after = 0.5 pixel CE + 0.5 T^2 pixel-wise KL, T = 2"},
        "teacher": {"miou": _miou(teacher, test_pixels, test_masks_t), "train_seconds": teacher_seconds,
                    "parameters": int(sum(p.numel() for p in teacher.parameters())), "hidden_sizes": cfg["teacher"]},
        "students": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    from ..sst2_evaluation import _relative_to

    results = _relative_to(results, work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(render_segmentation_table(results), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def render_segmentation_table(results: dict[str, Any]) -> str:
    """One row per seed: mIoU against the drawn masks and KRS/FSS/AOAg against the teacher, before → after."""
    t = results["teacher"]
    lines = [f"**Synthetic** segmentation demonstration (drawn scenes, {results['data']['test']} held-out images of "
             f"{results['data']['image_size']} × {results['data']['image_size']}): SegFormer teacher "
             f"({t['parameters'] / 1e3:.0f} k parameters, mIoU {t['miou']:.3f} against the drawn masks); student "
             f"before = masks only, after = pixel-wise KD; KRS = 0.7·FSS + 0.3·AOAg (the paper's segmentation "
             "preset), AOAg = mask-IoU agreement with the teacher's label maps, from the engine.", "",
             "| seed | mIoU before → after | KRS before → after | FSS before → after | AOAg before → after |",
             "|---|---|---|---|---|"]
    for seed in dict.fromkeys(r["seed"] for r in results["students"]):
        b, a = (next(r for r in results["students"] if r["seed"] == seed and r["variant"] == v) for v in ("before", "after"))
        lines.append(f"| {seed} | {b['miou']:.3f} → {a['miou']:.3f} | {b['krs']:.3f} → {a['krs']:.3f} "
                     f"| {b['fss']:.3f} → {a['fss']:.3f} | {b['aoag']:.3f} → {a['aoag']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - python -m knowledge_retention.distillation.vision.segmentation cpu
    torch.set_num_threads(1)
    _scale = sys.argv[1] if len(sys.argv) > 1 else "smoke"
    run_segmentation_demo(_scale, sys.argv[2] if len(sys.argv) > 2 else "results/vision/segmentation_synthetic")
