# Copyright 2026 The knowledge_retention authors.
# Licensed under the Apache License, Version 2.0.
"""Knowledge Retention Score (KRS) as a Hugging Face `evaluate` metric.

A thin adapter: it declares the per-example inputs, turns what evaluate stores into arrays and
calls `knowledge_retention.score.compute_krs`, where every formula lives.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np
import pyarrow as pa

import knowledge_retention
from knowledge_retention._validation import to_numpy
from knowledge_retention.score import compute_krs

_CITATION = """\
@article{alba2025krs,
  title   = {A General-Purpose Knowledge Retention Metric for Evaluating Distillation Models Across Architectures and Tasks},
  author  = {Alba, Arjay and Villaverde, Jocelyn},
  journal = {AI},
  volume  = {6},
  number  = {10},
  pages   = {273},
  year    = {2025},
  doi     = {10.3390/ai6100273}
}
@inproceedings{kornblith2019similarity,
  title     = {Similarity of Neural Network Representations Revisited},
  author    = {Kornblith, Simon and Norouzi, Mohammad and Lee, Honglak and Hinton, Geoffrey},
  booktitle = {ICML},
  year      = {2019}
}
"""

_DESCRIPTION = """\
The Knowledge Retention Score measures how much of a teacher model a distilled student kept:
KRS = alpha * FSS + beta * AOAg. FSS (Feature Similarity Score) compares the two models' hidden
representations of the same examples (linear CKA by default; debiased CKA, RBF CKA or cosine on
request); AOAg (Average Output Agreement) compares their outputs (exp(-KL) of the softmax outputs for
classification, a normalised MSE for regression, mean IoU of label maps for segmentation). Task
presets follow Alba & Villaverde (2025): classification (0.3, 0.7), detection/segmentation
(0.7, 0.3), NLP (0.5, 0.5). All three numbers lie in [0, 1]; higher is better.
"""

_KWARGS_DESCRIPTION = """
Args:
    teacher_features: per example, the teacher's pooled hidden vector `(D_t,)`, or `(L, D_t)` for L
        layers. Over the dataset: `(N, D_t)` or `(N, L, D_t)`.
    student_features: the student's, `(D_s,)` or `(L, D_s)` per example; layer l of the student is
        compared with layer l of the teacher. `D_s` may differ from `D_t` (not for `cosine`).
    teacher_outputs: per example, the teacher's logits `(C,)` (classification/nlp), its output
        value(s) (regression), or its label map `(H, W)` (segmentation).
    student_outputs: the student's, same shape as the teacher's.
    task: "classification" (default), "nlp", "regression" or "segmentation": the (alpha, beta)
        preset and the default AOAg measure. Detection (ragged boxes) is available from
        `knowledge_retention.agreement.box_iou_agreement` in Python.
    alpha: weight of FSS in [0, 1] (overrides the preset).
    beta: weight of AOAg in [0, 1]; alpha + beta must equal 1.
    fss_method: "linear_cka" (default), "debiased_cka", "rbf_cka" (N <= 10,000) or "cosine".
    aoag_method: "kl", "js", "top1", "mse" or "mask_iou"; default from the task.
    temperature: softmax temperature for the classification measures (default 1).
    inputs: "logits" (default) or "probabilities"; logits that look like probabilities are refused.
    max_mse: regression only: the MSE that maps to 0 agreement (default: teacher output variance).
    scale: 1 (default, KRS in 0-1) or 100 (the paper's vision tables).
Returns:
    krs: Knowledge Retention Score in [0, scale]; higher is better.
    fss: Feature Similarity Score in [0, 1].
    aoag: Average Output Agreement in [0, 1].
    alpha, beta: the weights used. task, fss_method, aoag_method: the choices used.
    num_examples: N.
Examples:
    >>> import numpy as np
    >>> import evaluate
    >>> krs = evaluate.load(knowledge_retention.module_path())
    >>> rng = np.random.default_rng(0)
    >>> feats, logits = rng.normal(size=(32, 8)), rng.normal(size=(32, 2))
    >>> out = krs.compute(teacher_features=feats, student_features=feats,
    ...                   teacher_outputs=logits, student_outputs=logits, task="nlp")
    >>> out["krs"], out["fss"], out["aoag"]
    (1.0, 1.0, 1.0)
"""

_INPUT_NAMES = ("teacher_features", "student_features", "teacher_outputs", "student_outputs")


_LIST = getattr(datasets, "List", datasets.Sequence)  # datasets >= 4 names it List


def _feature_for(example: np.ndarray) -> Any:
    """Arrow feature for one example's array: nested fixed-size lists of its exact shape."""
    feature: Any = datasets.Value("int64" if example.dtype.kind in "iub" else "float32")
    for size in reversed(example.shape):
        feature = _LIST(feature, length=int(size))
    return feature


def _to_arrow(array: np.ndarray) -> pa.Array:
    """``(B, d1, ..., dk)`` numpy -> nested FixedSizeListArray, built from the flat buffer (no Python loop)."""
    dtype = np.int64 if array.dtype.kind in "iub" else np.float32
    out: pa.Array = pa.array(np.ascontiguousarray(array, dtype=dtype).reshape(-1))
    for size in reversed(array.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(size))
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KnowledgeRetention(evaluate.Metric):
    """Knowledge Retention Score of a student against its teacher."""

    def _info(self) -> evaluate.MetricInfo:
        nested = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # The declared layout; the exact fixed shapes are taken from the first batch (see below).
            features=datasets.Features({name: nested for name in _INPUT_NAMES}),
            homepage="https://doi.org/10.3390/ai6100273",
            reference_urls=["https://arxiv.org/abs/1905.00414"],
        )
        # MetricInfo refuses format="numpy" unless every feature is a scalar `Value`, but datasets
        # formats fixed-shape list/Array2D columns as (N, ...) arrays correctly. Set after that check:
        # without it `_compute` receives nested Python lists (seconds instead of milliseconds at
        # N = 10,000 x 768; see benchmarks/evaluate_overhead.py).
        info.format = "numpy"
        return info

    # evaluate stores inputs in Arrow before `_compute`. The exact per-example shapes (fixed-size
    # lists) are taken from the first batch; every process infers the same ones.
    def _infer_feature_from_batch(self, batch: dict[str, Any]) -> datasets.Features:
        return datasets.Features({name: _feature_for(np.asarray(column[0])) for name, column in batch.items()})

    def _infer_feature_from_example(self, example: dict[str, Any]) -> datasets.Features:
        return datasets.Features({name: _feature_for(np.asarray(value)) for name, value in example.items()})

    def add_batch(self, *, predictions=None, references=None, **kwargs):  # type: ignore[override]
        """Adds a batch of examples (numpy arrays, torch tensors or nested lists).

        Numeric arrays go to evaluate's Arrow writer as one table built from their buffers;
        ``Features.encode_batch`` would convert each example separately, a Python loop that makes
        ``compute`` ~15x slower than the maths at N = 10,000 x 768. Anything else takes evaluate's
        own path (and its messages).
        """
        arrays = {k: (to_numpy(v, k) if v is not None else None) for k, v in kwargs.items()}
        if predictions is not None or references is not None or not _fast_path_ok(arrays, self._feature_names()):
            return super().add_batch(predictions=predictions, references=references, **arrays)
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"All inputs must describe the same examples; got lengths {lengths}.")
        features = datasets.Features({name: _feature_for(array[0]) for name, array in arrays.items()})
        if self.writer is None:
            self.selected_feature_format = features
            self._init_writer()
        elif features != self.selected_feature_format:
            raise ValueError(
                "This batch's per-example shapes differ from the first batch's: "
                + ", ".join(f"{n}: {arrays[n].shape[1:]}" for n in arrays)
                + ". Every example must have the same shapes (same layers, widths and classes)."
            )
        table = pa.Table.from_arrays([_to_arrow(arrays[name]) for name in features], names=list(features))
        self.writer.write_table(table)

    def _compute(
        self,
        teacher_features,
        student_features,
        teacher_outputs,
        student_outputs,
        task: str = "classification",
        alpha: float | None = None,
        beta: float | None = None,
        fss_method: str = "linear_cka",
        aoag_method: str | None = None,
        temperature: float = 1.0,
        inputs: str = "logits",
        max_mse: float | None = None,
        scale: float = 1.0,
    ) -> dict[str, Any]:
        return compute_krs(
            _layers(teacher_features, "teacher_features"),
            _layers(student_features, "student_features"),
            np.asarray(teacher_outputs),
            np.asarray(student_outputs),
            task=task,  # type: ignore[arg-type]
            alpha=alpha,
            beta=beta,
            fss_method=fss_method,  # type: ignore[arg-type]
            aoag_method=aoag_method,  # type: ignore[arg-type]
            temperature=temperature,
            inputs=inputs,  # type: ignore[arg-type]
            max_mse=max_mse,
            scale=scale,
        )


def _fast_path_ok(arrays: dict[str, np.ndarray | None], names: list[str]) -> bool:
    return set(arrays) == set(names) and all(
        a is not None and a.ndim >= 1 and len(a) > 0 and a.dtype.kind in "biuf" for a in arrays.values()
    )


def _layers(value: Any, name: str) -> list[np.ndarray]:
    """``(N, D)`` -> one layer; ``(N, L, D)`` -> L layers of ``(N, D)``."""
    array = np.asarray(value)
    if array.ndim == 3:
        return list(np.moveaxis(array, 1, 0))
    if array.ndim == 2:
        return [array]
    raise ValueError(
        f"`{name}` must be (N, D) or (N, L, D) over the dataset, i.e. (D,) or (L, D) per example; got {array.shape}."
    )


__all__ = ["KnowledgeRetention", "knowledge_retention"]
