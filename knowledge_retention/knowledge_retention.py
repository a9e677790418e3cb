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
import pyarrow.compute as pc

import knowledge_retention
from knowledge_retention._validation import (
    InputError,
    as_layers,
    check_num_examples,
    check_real_dtype,
    to_numpy,
)
from knowledge_retention.score import check_krs_options, compute_krs

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
    ignore_index: segmentation only: a void label (e.g. 255) whose pixels are left out of the IoU.
    scale: 1 (default, KRS in 0-1) or 100 (the paper's vision tables).
    Every option is checked whatever the task (an invalid one is refused by name, an unknown keyword
    too); a valid option the task does not use is ignored, as in `compute_krs`.
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
#: Dimensions of one example: features (D,) or (L, D); outputs a value (regression), (C,) or (H, W).
_EXAMPLE_NDIM = {"teacher_features": (1, 2), "student_features": (1, 2),
                 "teacher_outputs": (0, 1, 2), "student_outputs": (0, 1, 2)}


_LIST = getattr(datasets, "List", datasets.Sequence)  # datasets >= 4 names it List
#: The options ``compute`` takes (those of ``compute_krs``); any other keyword is refused by name.
_OPTION_NAMES = ("task", "alpha", "beta", "fss_method", "aoag_method", "temperature", "inputs", "max_mse",
                 "ignore_index", "scale")


def _is_layer_list(value: Any) -> bool:
    """A list of numpy arrays or tensors: one ``(N, D)`` array per layer, the package's layout (as_layers)."""
    return isinstance(value, (list, tuple)) and any(
        isinstance(v, np.ndarray) or (hasattr(v, "detach") and hasattr(v, "cpu")) for v in value
    )


def _layers_as_stack(value: Any, name: str) -> np.ndarray:
    """A list of L per-layer ``(N, D)`` arrays as the ``(N, L, D)`` stack the module stores (one (L, D) per example)."""
    layers = as_layers(value, name)
    widths = sorted({layer.shape[1] for layer in layers})
    if len(widths) > 1:
        raise InputError(
            f"`{name}`: the evaluate module stores one (L, D) array per example, so every layer must have the same "
            f"width; got widths {widths}. Pass the layers to knowledge_retention.compute_krs, which takes them as they are."
        )
    return np.stack(layers, axis=1)


def _feature_for(example_shape: tuple[int, ...]) -> Any:
    """Arrow feature for one example of this shape: nested fixed-size lists of float64.

    Everything is stored as float64 (integer label maps too: exact below 2**53), so the caller's
    precision is kept (float64 input gives the same numbers as ``compute_krs``; finite values above
    float32's 3.4e38 stay finite) and a batch in another dtype is not a different layout.
    """
    feature: Any = datasets.Value("float64")
    for size in reversed(example_shape):
        feature = _LIST(feature, length=int(size))
    return feature


def _to_arrow(array: np.ndarray) -> pa.Array:
    """``(B, d1, ..., dk)`` numpy -> nested FixedSizeListArray of float64, from the flat buffer (no Python loop)."""
    out: pa.Array = pa.array(np.ascontiguousarray(array, dtype=np.float64).reshape(-1))
    for size in reversed(array.shape[1:]):
        out = pa.FixedSizeListArray.from_arrays(out, int(size))
    return out


def _from_arrow(column: Any) -> np.ndarray:
    """A fixed-shape Arrow column (nested fixed-size lists of float64) as an ``(N, d1, ..., dk)`` float64 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(array)]
    while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if pa.types.is_fixed_size_list(array.type):
            shape.append(array.type.list_size)
        else:  # variable-length lists (evaluate's own encoding of the declared features): must be rectangular
            lengths = np.unique(np.asarray(pc.list_value_length(array)))
            if len(lengths) != 1:
                raise InputError(f"Examples of different shapes were stored (lengths {lengths.tolist()}).")
            shape.append(int(lengths[0]))
        array = array.flatten()  # respects the slice's offset
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(shape)


def _batch_arrays(inputs: dict[str, Any], *, one_example: bool) -> dict[str, np.ndarray]:
    """The four inputs of one ``add``/``add_batch`` call as numpy batches, checked by the package's contract.

    Raises:
        InputTypeError: a missing or ``None`` input, strings, ragged lists, complex or non-numeric values.
        InputError: a scalar where a batch is expected, one input empty while others are not (all four
            empty is an empty batch: ``add_batch`` then changes nothing), a wrong number of dimensions,
            inputs that disagree on the number of examples.
    """
    arrays: dict[str, np.ndarray] = {}
    for name in _INPUT_NAMES:
        value = inputs.get(name)
        if not one_example and name.endswith("_features") and _is_layer_list(value):
            value = _layers_as_stack(value, name)  # a list of arrays is layers, never examples (as compute_krs reads it)
        array = to_numpy(value, name)
        check_real_dtype(array, name)
        allowed = _EXAMPLE_NDIM[name]
        if one_example:
            if array.ndim not in allowed:
                shapes = " or ".join("a single value" if d == 0 else f"a {d}-D array" for d in allowed)
                raise InputError(f"`{name}` for one example must be {shapes}; got shape {array.shape}.")
            array = array[None]
        elif array.ndim == 0:
            raise InputError(
                f"`{name}` must be a batch with one row per example; got a scalar ({array.item()!r}). "
                "Use add() for a single example."
            )
        elif array.ndim - 1 not in allowed:
            raise InputError(
                f"`{name}` must be a batch of shape (N, ...) with {' or '.join(str(d) for d in allowed)} "
                f"dimension(s) per example; got shape {array.shape}."
            )
        if 0 in array.shape[1:] or (one_example and array.shape[0] == 0):
            raise InputError(f"`{name}` is empty: shape {array.shape}; every input needs at least one example.")
        arrays[name] = array
    empty = [name for name in _INPUT_NAMES if arrays[name].shape[0] == 0]
    if empty and len(empty) < len(_INPUT_NAMES):  # an empty batch is all four empty; one alone is a mistake
        raise InputError(f"`{empty[0]}` is empty: shape {arrays[empty[0]].shape}; every input needs at least one example.")
    check_num_examples({name: arrays[name].shape[0] for name in _INPUT_NAMES})
    return arrays


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KnowledgeRetention(evaluate.Metric):
    """Knowledge Retention Score of a student against its teacher."""

    _example_shapes: dict[str, tuple[int, ...]]  # per input, the fixed shape of one example (first batch)

    def _info(self) -> evaluate.MetricInfo:
        nested = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # The declared layout; the exact fixed shapes are taken from the first batch (see below).
            features=datasets.Features({name: nested for name in _INPUT_NAMES}),
            homepage="https://doi.org/10.3390/ai6100273",
            reference_urls=["https://arxiv.org/abs/1905.00414"],
        )
        # `_compute` reads the Arrow columns itself (`_from_arrow`): datasets' "numpy" format would hand
        # over float32 (its formatter casts every float column), and without a format `_compute` gets
        # nested Python lists (seconds instead of milliseconds at N = 10,000 x 768; see
        # benchmarks/evaluate_overhead.py). MetricInfo refuses a format unless every feature is a
        # scalar `Value`, so it is set after that check.
        info.format = "arrow"
        return info

    def add_batch(self, *, predictions=None, references=None, **kwargs):  # type: ignore[override]
        """Adds a batch of examples (numpy arrays, torch tensors of any float dtype, nested lists).

        The arrays go to evaluate's Arrow writer as one float64 table built from their buffers;
        ``Features.encode_batch`` would convert each example separately, a Python loop that makes
        ``compute`` ~15x slower than the maths at N = 10,000 x 768.
        """
        self._refuse_predictions_references(predictions, references, kwargs)
        arrays = _batch_arrays(kwargs, one_example=False)
        if arrays["teacher_outputs"].shape[0]:  # an empty batch (no rows at all) changes nothing
            self._write(arrays)

    def add(self, *, prediction=None, reference=None, **kwargs):  # type: ignore[override]
        """Adds one example; accepts what :meth:`add_batch` accepts (bf16, ``requires_grad`` tensors)."""
        self._refuse_predictions_references(prediction, reference, kwargs)
        self._write(_batch_arrays(kwargs, one_example=True))

    def compute(self, *, predictions=None, references=None, **kwargs):  # type: ignore[override]
        """Scores the examples added so far plus those passed here (see the module's inputs description).

        Options are checked before anything is read (an unknown keyword or an invalid value is refused
        by name and the examples stay); a refusal of the data itself (constant features, ...) also
        leaves the examples added, so that ``compute`` can be called again with other options.
        """
        self._refuse_predictions_references(predictions, references, {})
        options = {k: v for k, v in kwargs.items() if k not in _INPUT_NAMES}
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise InputError(
                f"Unknown option(s) {', '.join(f'`{u}`' for u in unknown)}; this metric's options are "
                f"{', '.join(f'`{o}`' for o in _OPTION_NAMES)} (and the inputs {', '.join(f'`{n}`' for n in _INPUT_NAMES)})."
            )
        check_krs_options(**options)
        given = [name for name in _INPUT_NAMES if kwargs.get(name) is not None]
        if given:
            self.add_batch(**{name: kwargs.get(name) for name in _INPUT_NAMES})
        if self.writer is None:
            raise InputError(
                "No examples to score: pass " + ", ".join(f"`{n}`" for n in _INPUT_NAMES)
                + " to compute(), or add them first with add() / add_batch()."
            )
        try:
            return super().compute(**options)
        except InputError:
            self._restore_examples()
            raise

    def _restore_examples(self) -> None:
        """After a refused ``_compute``: the examples read back into a fresh writer (one process only)."""
        data = getattr(self, "data", None)
        if data is None or self.num_process > 1 or self.process_id != 0:
            return
        table = data.data.table
        if self.buf_writer is None:  # the cache files of this run: released and removed, as after a result
            for filelock, file_path in reversed(list(zip(self.filelocks, self.file_paths, strict=True))):
                evaluate.utils.file_utils.Path(file_path).unlink()  # (the Hub folder imports no os)
                filelock.release()
        self.data = None
        shapes: dict[str, tuple[int, ...]] = getattr(self, "_example_shapes")  # noqa: B009 - set by _write
        self.selected_feature_format = datasets.Features({n: _feature_for(shapes[n]) for n in _INPUT_NAMES})
        self._init_writer()
        self.writer.write_table(table)

    def _refuse_predictions_references(self, predictions: Any, references: Any, kwargs: dict[str, Any]) -> None:
        unknown = sorted(set(kwargs) - set(_INPUT_NAMES))
        if predictions is not None or references is not None or unknown:
            got = ["predictions"] * (predictions is not None) + ["references"] * (references is not None) + unknown
            raise InputError(
                f"This metric takes {', '.join(f'`{n}`' for n in _INPUT_NAMES)}; got {', '.join(f'`{g}`' for g in got)}."
            )

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        shapes = {name: tuple(int(d) for d in arrays[name].shape[1:]) for name in _INPUT_NAMES}
        if self.writer is None:
            self.selected_feature_format = datasets.Features({n: _feature_for(shapes[n]) for n in _INPUT_NAMES})
            self._init_writer()
            self._example_shapes = shapes
        elif shapes != getattr(self, "_example_shapes", shapes):
            raise InputError(
                "This batch's per-example shapes differ from the first batch's: "
                + ", ".join(f"`{n}` {shapes[n]} (first batch {self._example_shapes[n]})"
                            for n in _INPUT_NAMES if shapes[n] != self._example_shapes[n])
                + ". Every example must have the same shapes (same layers, widths and classes)."
            )
        table = pa.Table.from_arrays([_to_arrow(arrays[name]) for name in _INPUT_NAMES], names=list(_INPUT_NAMES))
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
        ignore_index: int | None = None,
        scale: float = 1.0,
    ) -> dict[str, Any]:
        # (N, D) or (N, L, D): the package's one layout, read by compute_krs itself
        return compute_krs(
            _from_arrow(teacher_features),
            _from_arrow(student_features),
            _from_arrow(teacher_outputs),
            _from_arrow(student_outputs),
            task=task,  # type: ignore[arg-type]
            alpha=alpha,
            beta=beta,
            fss_method=fss_method,  # type: ignore[arg-type]
            aoag_method=aoag_method,  # type: ignore[arg-type]
            temperature=temperature,
            inputs=inputs,  # type: ignore[arg-type]
            max_mse=max_mse,
            ignore_index=ignore_index,
            scale=scale,
        )


__all__ = ["KnowledgeRetention", "knowledge_retention"]
