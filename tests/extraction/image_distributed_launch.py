"""Run by ``accelerate launch --multi_gpu --num_processes 2`` (CPU, gloo) from ``test_image_engine.py``.

Each process builds the same tiny models from configs (fixed seeds), evaluates an image classifier
pair and a segmentation pair over :data:`N` images in batches of 2 (an uneven last round), and writes
its results to ``<out_dir>/rank<k>.json`` for the test to compare with one process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    from accelerate import Accelerator

    from knowledge_retention.extraction.tasks.image_models import import_torchvision

    import_torchvision()
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    results = run_all(accelerator)
    Path(args.out_dir, f"rank{accelerator.process_index}.json").write_text(json.dumps(results))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
