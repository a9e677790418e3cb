"""Distillation recipes and the SST-2 training pipeline (the training side of the KRS reproduction).

Modules, from pure maths up:

* :mod:`.losses` - soft/hard cross-entropy, DistilBERT cosine, PKD patient, TinyBERT losses (torch only);
* :mod:`.layer_maps` - which teacher layer teaches / initialises which student layer;
* :mod:`.students` - students built from a teacher (every-other-layer, lower-layers, narrow);
* :mod:`.targets` - teacher targets, live or cached once per run;
* :mod:`.trainer` - ``DistillationTrainer`` (a ``transformers.Trainer``) and the recipes;
* :mod:`.runs` - ``TrainingArguments`` preset, timing, saving with ``run_config.json``, accuracy;
* :mod:`.data` - SST-2 loading and tokenisation; :mod:`.pretrained` - offline MiniLM assets;
* :mod:`.scales`, :mod:`.sst2`, :mod:`.manifest` - the pipeline at smoke / quick / cpu / full scale;
* :mod:`.defaults` - the cached teacher/student pair behind the CLI's zero-argument run.

Only the torch-only pieces are imported eagerly; the rest load ``transformers`` on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .layer_maps import (
    every_other_layer_indices,
    last_layer_map,
    layer_map,
    lower_layer_indices,
    lower_layer_map,
    skip_layer_map,
)
from .losses import (
    hard_cross_entropy,
    hidden_cosine_loss,
    patient_loss,
    soft_cross_entropy,
    tinybert_attention_loss,
    tinybert_embedding_loss,
    tinybert_hidden_loss,
)

_LAZY = {
    "DistillationTrainer": "trainer",
    "RECIPES": "trainer",
    "recipe_for": "trainer",
    "every_other_layer_student": "students",
    "lower_layers_student": "students",
    "narrow_student": "students",
    "load_sst2": "data",
    "tokenize_dataset": "data",
    "make_collator": "data",
    "TrainingTargetCache": "targets",
    "TargetSpec": "targets",
    "make_training_args": "runs",
    "SCALES": "scales",
    "ScaleConfig": "scales",
    "StudentSpec": "scales",
    "train_pipeline": "sst2",
    "load_manifest": "manifest",
    "pairs_from_manifest": "manifest",
    "ensure_default_pair": "defaults",
}

__all__ = [
    "every_other_layer_indices",
    "hard_cross_entropy",
    "hidden_cosine_loss",
    "last_layer_map",
    "layer_map",
    "lower_layer_indices",
    "lower_layer_map",
    "patient_loss",
    "skip_layer_map",
    "soft_cross_entropy",
    "tinybert_attention_loss",
    "tinybert_embedding_loss",
    "tinybert_hidden_loss",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name == "TeacherCache":  # the former name of TrainingTargetCache (FutureWarning from targets)
        return getattr(import_module(".targets", __name__), name)
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
