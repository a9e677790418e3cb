"""knowledge_retention: how much of the teacher did a distilled student keep?

On models: ``knowledge_retention.evaluate_pair(teacher, student, texts)`` (transformers + accelerate,
imported on first use), then ``build_report``/``write_report`` for the diagnostics.

The maths (numpy/scipy only) is importable without torch, transformers or evaluate:

>>> import numpy as np
>>> from knowledge_retention import compute_krs
>>> rng = np.random.default_rng(0)
>>> teacher = rng.normal(size=(100, 32))
>>> out = compute_krs(teacher, teacher @ rng.normal(size=(32, 16)), rng.normal(size=(100, 2)),
...                   rng.normal(size=(100, 2)), task="nlp")
>>> sorted(out)[:4]
['alpha', 'aoag', 'aoag_method', 'beta']

As an ``evaluate`` module, from anywhere once the package is installed:
``evaluate.load(knowledge_retention.module_path())``; from the repository root,
``evaluate.load("knowledge_retention")``.
"""

from __future__ import annotations

from pathlib import Path

from ._validation import InputError, InputTypeError
from .agreement import (
    BoxIoUAccumulator,
    ClassificationAgreementAccumulator,
    MaskIoUAccumulator,
    RegressionAgreementAccumulator,
    box_iou_agreement,
    classification_agreement,
    mask_iou_agreement,
    output_agreement,
    per_example_kl,
    regression_agreement,
)
from .methods import AOAG_METHODS, AOAG_METHODS_BY_TASK, FSS_METHODS
from .score import (
    TASK_PRESETS,
    alpha_sensitivity,
    combine_krs,
    compute_krs,
    knowledge_retention_score,
    resolve_weights,
)
from .similarity import (
    CosineAccumulator,
    CrossLayerCKAAccumulator,
    LinearCKAAccumulator,
    cross_layer_cka,
    feature_similarity_score,
    linear_cka,
    mean_cosine_similarity,
    rbf_cka,
)
from .streaming import KRSAccumulator
from .token_agreement import TokenAgreementAccumulator, token_agreement

__version__ = "0.1.0"


def module_path() -> str:
    """Path of the evaluate metric folder, for ``evaluate.load(module_path())`` from anywhere."""
    return str(Path(__file__).resolve().parent)


_LAZY = {
    "evaluate_pair": ("knowledge_retention.extraction", "evaluate_pair"),
    "evaluate_students": ("knowledge_retention.extraction", "evaluate_students"),
    "record_teacher": ("knowledge_retention.extraction", "record_teacher"),
    "TeacherCache": ("knowledge_retention.extraction", "TeacherCache"),
    "ExtractionResult": ("knowledge_retention.extraction", "ExtractionResult"),
    "EvalOptions": ("knowledge_retention.extraction", "EvalOptions"),
    "KRSCallback": ("knowledge_retention.integrations", "KRSCallback"),
    "build_report": ("knowledge_retention.reporting", "build_report"),
    "write_report": ("knowledge_retention.reporting", "write_report"),
    "reproduce_sst2": ("knowledge_retention.reproduction", "reproduce_sst2"),
}


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """Model-facing entry points (torch/transformers) are imported on first use, not with the package."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'knowledge_retention' has no attribute {name!r}")


def load(**kwargs):  # type: ignore[no-untyped-def]
    """``evaluate.load`` of this metric (kwargs: ``num_process``, ``process_id``, ``experiment_id``...)."""
    import evaluate

    return evaluate.load(module_path(), **kwargs)


__all__ = [
    "AOAG_METHODS",
    "AOAG_METHODS_BY_TASK",
    "FSS_METHODS",
    "BoxIoUAccumulator",
    "ClassificationAgreementAccumulator",
    "CosineAccumulator",
    "CrossLayerCKAAccumulator",
    "EvalOptions",
    "ExtractionResult",
    "InputError",
    "InputTypeError",
    "KRSAccumulator",
    "LinearCKAAccumulator",
    "MaskIoUAccumulator",
    "RegressionAgreementAccumulator",
    "KRSCallback",
    "TASK_PRESETS",
    "TeacherCache",
    "TokenAgreementAccumulator",
    "alpha_sensitivity",
    "box_iou_agreement",
    "build_report",
    "classification_agreement",
    "combine_krs",
    "compute_krs",
    "cross_layer_cka",
    "evaluate_pair",
    "evaluate_students",
    "feature_similarity_score",
    "knowledge_retention_score",
    "linear_cka",
    "load",
    "mask_iou_agreement",
    "mean_cosine_similarity",
    "module_path",
    "output_agreement",
    "per_example_kl",
    "rbf_cka",
    "record_teacher",
    "regression_agreement",
    "reproduce_sst2",
    "resolve_weights",
    "token_agreement",
    "write_report",
]
