"""Tiny image models built from configs (fixed seeds), random images, and the evaluation both sides of
``tests/extraction/test_image_engine.py::test_two_processes_equal_one`` run (:func:`run_all`: an image
classifier pair and a segmentation pair over :data:`N` images in batches of 2, an uneven last round; the
2-process side is the ``image-extraction`` scenario of ``tests/distributed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

N = 11


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (38 + 2 * (i % 3), 44, 3), dtype=np.uint8) for i in range(n)]


def resnet() -> tuple[torch.nn.Module, int]:
    import transformers as t

    torch.manual_seed(0)
    config = t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], num_labels=5)
    return t.ResNetForImageClassification(config).eval(), 40


def vit() -> tuple[torch.nn.Module, int]:
    import transformers as t

    torch.manual_seed(1)
    config = t.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                         intermediate_size=64, num_labels=5)
    return t.ViTForImageClassification(config).eval(), 32


def segformer(seed: int) -> torch.nn.Module:
    import transformers as t

    torch.manual_seed(seed)
    config = t.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                               num_attention_heads=[1, 2], decoder_hidden_size=16, num_labels=3, patch_sizes=[7, 3],
                               strides=[4, 2])
    return t.SegformerForSemanticSegmentation(config).eval()


def _processor(size: int) -> Any:
    import transformers as t

    return t.ViTImageProcessor(size={"height": size, "width": size})


def run_all(accelerator: Any) -> dict[str, dict[str, Any]]:
    """Both cases, as JSON-safe dicts."""
    from knowledge_retention.extraction import evaluate_pair

    (teacher, t_size), (student, s_size) = resnet(), vit()
    data = images(N)
    classifier = evaluate_pair(teacher, student, data, teacher_tokenizer=_processor(t_size),
                               student_tokenizer=_processor(s_size), layers="uniform", batch_size=2,
                               accelerator=accelerator, progress=False)
    import transformers as t

    seg_processor = t.SegformerImageProcessor(size={"height": 32, "width": 32})
    segmentation = evaluate_pair(segformer(2), segformer(3), data, teacher_tokenizer=seg_processor,
                                 student_tokenizer=seg_processor, pixel_kl=True, batch_size=2, accelerator=accelerator,
                                 progress=False)
    out = {}
    for name, result in (("classifier", classifier), ("segmentation", segmentation)):
        out[name] = {"fss": result.fss, "aoag": result.aoag, "krs": result.krs,
                     "num_processes": result.options["num_processes"],
                     "example_indices": [int(i) for i in result.example_indices]}
    return out
