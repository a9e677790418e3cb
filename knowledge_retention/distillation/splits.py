"""The raw SST-2 (or synthetic) splits a scale of the pipeline trains and evaluates on, and TinyBERT's
general-distillation corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data as sst2_data
from .scales import ScaleConfig

__all__ = ["load_general_corpus", "load_pipeline_splits"]


def load_pipeline_splits(cfg: ScaleConfig, *, data_dir: str | Path | None = None) -> tuple[Any, Any, Any, str]:
    """The raw (untokenised) ``sentence``/``label`` splits a scale trains and evaluates on.

    Returns ``(teacher_train, student_train, dev, source)``. The student training set is the first
    ``student_train_size`` sentences of the teacher's (same shuffle), so students are distilled on
    data the teacher was trained on. The evaluation step reads the same ``dev`` texts.
    """
    use_sst2 = cfg.data == "sst2" or (cfg.data == "auto" and sst2_data.find_sst2_dir(data_dir) is not None)
    if use_sst2:
        train, dev = sst2_data.load_sst2("train", data_dir=data_dir), sst2_data.load_sst2("validation", data_dir=data_dir)
        source = str(sst2_data.find_sst2_dir(data_dir) or "glue/sst2 (Hub)")
    else:
        size = (cfg.teacher_train_size or 512) + (cfg.dev_size or 128)
        pool = sst2_data.synthetic_sentiment(size, seed=cfg.seed)
        train, dev = pool.select(range(size - (cfg.dev_size or 128))), pool.select(range(size - (cfg.dev_size or 128), size))
        source = "synthetic"
    teacher_train = sst2_data.subset(train, cfg.teacher_train_size, seed=cfg.seed)
    student_size = cfg.student_train_size or len(teacher_train)
    if student_size > len(teacher_train):
        raise ValueError(
            f"`student_train_size` ({student_size}) must not exceed the teacher's training set ({len(teacher_train)})"
        )
    student_train = teacher_train.select(range(student_size))
    dev = sst2_data.subset(dev, cfg.dev_size, seed=cfg.seed)
    return teacher_train, student_train, dev, source


def load_general_corpus(cfg: ScaleConfig, *, data_dir: str | Path | None = None) -> Any:
    """The unlabelled corpus of TinyBERT's general distillation: the training split's sentences
    (shuffled with the scale's seed; the first ``general_train_size``, all by default). Labels stay
    in the dataset but no general-distillation loss reads them."""
    use_sst2 = cfg.data == "sst2" or (cfg.data == "auto" and sst2_data.find_sst2_dir(data_dir) is not None)
    if use_sst2:
        train = sst2_data.load_sst2("train", data_dir=data_dir)
        return sst2_data.subset(train, cfg.general_train_size, seed=cfg.seed)
    teacher_train = load_pipeline_splits(cfg, data_dir=data_dir)[0]
    return sst2_data.subset(teacher_train, cfg.general_train_size, seed=cfg.seed)
