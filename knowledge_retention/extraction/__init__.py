"""Extraction: run a teacher and a student (``transformers`` models) over a text dataset and score them.

The layer above the maths: models run here, every formula comes from
:mod:`knowledge_retention.similarity`, :mod:`knowledge_retention.agreement` and
:mod:`knowledge_retention.score`. Needs the ``extract`` extra (torch, transformers, accelerate,
datasets, tqdm).

* :func:`evaluate_students` - one teacher pass per batch, folded with each student's pooled
  features and outputs into that student's core accumulators, optionally sharded over
  ``accelerate`` processes and length-grouped; returns ``{name: ExtractionResult}``.
  :func:`evaluate_pair` is its one-student call. Both build an :class:`EvalOptions`, choose a task
  (:mod:`.tasks`: text classifiers, causal LMs) and run the one loop (:mod:`.engine`).
* :func:`record_teacher` - a causal-LM teacher's top-k next-token log-probabilities and hidden states
  written once to a folder, which :func:`evaluate_pair` / :func:`evaluate_students` take where a
  teacher goes (:mod:`.tasks.recorded`).
* :class:`TeacherCache` - the teacher's pooled outputs recorded once (memory, or safetensors on
  disk with a fingerprint) and replayed by later calls.
* :func:`uniform_layer_mapping`, :func:`resolve_layer_pairs`, :func:`layer_names` - which hidden
  states are compared.
* :func:`pool_hidden_states` - ``cls`` / ``mean`` / ``last`` pooling that ignores padding.
"""

from __future__ import annotations

from .evaluator import MixedPrecision, evaluate_pair, evaluate_students, record_teacher
from .layers import LAYER_PRESETS, LayerSpec, layer_names, resolve_layer_pairs, uniform_layer_mapping
from .options import EvalOptions
from .pooling import POOLINGS, Pooling, pool_hidden_states
from .result import ExtractionResult
from .teacher_cache import TeacherCache

__all__ = [
    "EvalOptions",
    "LAYER_PRESETS",
    "POOLINGS",
    "ExtractionResult",
    "LayerSpec",
    "MixedPrecision",
    "Pooling",
    "TeacherCache",
    "evaluate_pair",
    "evaluate_students",
    "layer_names",
    "pool_hidden_states",
    "record_teacher",
    "resolve_layer_pairs",
    "uniform_layer_mapping",
]
