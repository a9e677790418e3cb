"""Extraction: run a teacher and a student (``transformers`` models) over a text dataset and score them.

The layer above the maths: models run here, every formula comes from
:mod:`knowledge_retention.similarity`, :mod:`knowledge_retention.agreement` and
:mod:`knowledge_retention.score`. Needs the ``extract`` extra (torch, transformers, accelerate,
datasets, tqdm).

* :func:`evaluate_pair` - the evaluator: streams pooled features and logits into the core
  accumulators, optionally sharded over ``accelerate`` processes; returns an
  :class:`ExtractionResult`.
* :func:`uniform_layer_mapping`, :func:`resolve_layer_pairs`, :func:`layer_names` - which hidden
  states are compared.
* :func:`pool_hidden_states` - ``cls`` / ``mean`` / ``last`` pooling that ignores padding.
"""

from __future__ import annotations

from .evaluator import MixedPrecision, evaluate_pair
from .layers import LAYER_PRESETS, LayerSpec, layer_names, resolve_layer_pairs, uniform_layer_mapping
from .pooling import POOLINGS, Pooling, pool_hidden_states
from .result import ExtractionResult

__all__ = [
    "LAYER_PRESETS",
    "POOLINGS",
    "ExtractionResult",
    "LayerSpec",
    "MixedPrecision",
    "Pooling",
    "evaluate_pair",
    "layer_names",
    "pool_hidden_states",
    "resolve_layer_pairs",
    "uniform_layer_mapping",
]
