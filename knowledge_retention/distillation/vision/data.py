"""The UCI handwritten digits as an image folder: what a vision user hands to ``datasets``.

scikit-learn ships the digits (1,797 grey images of 8 × 8 pixels with values 0-16, Alpaydin & Kaynak
1998); :func:`write_digits_imagefolder` upsamples them (bicubic) and saves one PNG per image under
``<root>/<split>/<digit>/``, the layout ``datasets.load_dataset("imagefolder", data_dir=root)`` reads
into a ``train`` and a ``test`` split with an ``image`` column and a ``label`` ClassLabel whose names
are the folder names ``"0"`` … ``"9"`` (so label id = digit). The split is stratified and fixed by
``split_seed``; a ``digits_imagefolder.json`` beside the folders records how it was made and a
fingerprint of every file, so a second call with the same settings reuses the folder.

:func:`load_digits_imagefolder` reads it back through ``datasets`` - the path a user takes - and
:func:`pixel_tensors` turns a split into the tensors the trainers use, through the same image
processor the evaluation loads from each model's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..._validation import InputError

__all__ = [
    "DIGITS_SOURCE", "IMAGE_SIZE", "load_digits_imagefolder", "make_image_processor", "pixel_tensors",
    "write_digits_imagefolder",
]

DIGITS_SOURCE = "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, 1,797 images, 8 x 8)"
IMAGE_SIZE = 32
_INFO = "digits_imagefolder.json"
_FORMAT = "knowledge_retention.vision.digits_imagefolder/v1"


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise InputError(f"`image_size` must be an int >= 8 (the digits are 8 x 8), got {image_size!r}")
    return image_size


def write_digits_imagefolder(
    root: str | os.PathLike[str],
    *,
    image_size: int = IMAGE_SIZE,
    test_fraction: float = 0.25,
    split_seed: int = 0,
    max_per_split: int | None = None,
) -> dict[str, Any]:
    """Write the scikit-learn digits as ``<root>/{train,test}/<digit>/<index>.png`` (RGB, upsampled).

    Args:
        root: folder to write (created; an existing folder written with the same settings is reused).
        image_size: side of the square PNGs in pixels (bicubic upsampling of the 8 × 8 originals).
        test_fraction: share of the images held out (stratified by digit).
        split_seed: seed of the stratified split.
        max_per_split: keep at most this many images per split (the smoke scale), stratified.

    Returns:
        The folder's description: ``root``, ``source``, ``image_size``, ``splits`` ({split: count}),
        ``split_seed``, ``test_fraction`` and ``fingerprint`` (sha256 of every PNG, in order).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    image_size = _check_size(image_size)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}")
    root = Path(root)
    settings = {"format": _FORMAT, "source": DIGITS_SOURCE, "image_size": image_size, "test_fraction": test_fraction,
                "split_seed": split_seed, "max_per_split": max_per_split}
    info_path = root / _INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if all(info.get(k) == v for k, v in settings.items()):
            return {**info, "root": str(root)}
    digits = load_digits()
    images, labels = digits.images, digits.target
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=split_seed)
    splits = {"train": np.sort(train_idx), "test": np.sort(test_idx)}
    if max_per_split is not None:
        for split, idx in splits.items():
            if len(idx) > max_per_split:
                idx, _ = train_test_split(idx, train_size=max_per_split, stratify=labels[idx], random_state=split_seed)
                splits[split] = np.sort(idx)
    digest = hashlib.sha256()
    counts = {}
    for split, idx in splits.items():
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in idx:
            pixels = np.round(images[i] * (255.0 / 16.0)).astype(np.uint8)  # 0-16 -> 0-255
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC).convert("RGB")
            path = root / split / str(int(labels[i])) / f"{int(i):04d}.png"
            image.save(path)
            digest.update(path.read_bytes())
        counts[split] = int(len(idx))
    info = {**settings, "splits": counts, "fingerprint": digest.hexdigest()[:16]}
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {**info, "root": str(root)}


def load_digits_imagefolder(root: str | os.PathLike[str]) -> Any:
    """The folder read back with ``datasets.load_dataset("imagefolder", data_dir=root)``.

    Returns:
        A ``datasets.DatasetDict`` with ``train`` and ``test``, columns ``image`` (PIL) and ``label``
        (ClassLabel with names ``"0"`` … ``"9"``).
    """
    from datasets import load_dataset

    root = Path(root)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise InputError(f"`root` must be a folder written by write_digits_imagefolder, got {str(root)!r}")
    data = load_dataset("imagefolder", data_dir=str(root))
    names = data["train"].features["label"].names
    if names != [str(d) for d in range(10)]:
        raise InputError(f"{str(root)!r} must hold one folder per digit 0-9, got label names {names}")
    return data


def make_image_processor(image_size: int = IMAGE_SIZE) -> Any:
    """The image processor saved with every model: resize to ``image_size``, scale to [0, 1] and
    normalise with mean = std = 0.5 per channel (what ``AutoImageProcessor`` loads back from a model's
    folder during the evaluation)."""
    from ...extraction.tasks.image_models import import_torchvision

    import_torchvision()  # a CUDA torchvision wheel beside a CPU torch: see import_torchvision
    from transformers import ViTImageProcessor

    image_size = _check_size(image_size)
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.5, 0.5],
                             image_std=[0.5, 0.5, 0.5], do_resize=True, do_rescale=True, do_normalize=True)


def pixel_tensors(split: Any, processor: Any, *, batch_size: int = 256) -> tuple[Any, Any]:
    """``(pixel_values (N, 3, H, W) float32, labels (N,) int64)`` of a ``datasets`` split, through
    ``processor``."""
    import torch

    pixels, labels = [], []
    for start in range(0, len(split), batch_size):
        batch = split[start:start + batch_size]
        pixels.append(processor(images=[im.convert("RGB") for im in batch["image"]], return_tensors="pt")
                      ["pixel_values"])
        labels.append(torch.as_tensor(batch["label"], dtype=torch.int64))
    return torch.cat(pixels), torch.cat(labels)
