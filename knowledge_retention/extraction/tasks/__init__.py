"""The tasks of the extraction engine, one module each (the engine's loop never changes for a new task).

* :mod:`.text` - text classifiers and regressors (``task`` = ``nlp``, ``classification``, ``regression``...):
  pooled hidden states, one row of logits per example.
* :mod:`.image` - image classifiers of transformers, timm and torchvision (pooled hidden states, logits);
  :mod:`.detection` and :mod:`.segmentation` - detectors (matched-box IoU) and segmenters (mask IoU).
* :mod:`.causal_lm` - causal language models (``task="causal-lm"``): which positions are counted
  (every next token that is a real token of the text), token-level hidden states for FSS, the
  token-level agreement accumulator, teacher-generated continuations, and the same-vocabulary check.
* :mod:`.recorded` - a causal-LM teacher recorded to a folder (``record_teacher``) and students scored
  against that folder, given where a teacher goes (the teacher is not loaded).

:data:`TASKS` is the registry (as transformers' ``SUPPORTED_TASKS``): :func:`choose` asks each
registered task whether it claims a pair (:meth:`~.base.Task.claims`), in order, and falls back to the
text-classification task. A new task is one module with a :class:`~.base.Task` subclass, added here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Batch, ModelSpec, Plan, Task
from .causal_lm import CausalLMTask
from .detection import ObjectDetectionTask
from .image import ImageClassificationTask
from .recorded import RecordedTeacherTask, RecordingTask
from .segmentation import SemanticSegmentationTask
from .text import TextClassificationTask

__all__ = ["TASKS", "Batch", "CausalLMTask", "ImageClassificationTask", "ModelSpec", "ObjectDetectionTask", "Plan",
           "RecordedTeacherTask", "RecordingTask", "SemanticSegmentationTask", "Task", "TextClassificationTask",
           "choose"]

#: registered tasks by name, asked in this order; the last one is the fallback
TASKS: dict[str, type[Task]] = {
    RecordedTeacherTask.name: RecordedTeacherTask,  # a recording folder where the teacher goes
    CausalLMTask.name: CausalLMTask,
    ObjectDetectionTask.name: ObjectDetectionTask,
    SemanticSegmentationTask.name: SemanticSegmentationTask,
    ImageClassificationTask.name: ImageClassificationTask,
    TextClassificationTask.name: TextClassificationTask,
}


def choose(task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> Task:
    """A fresh instance of the first registered task that claims this pair (else text classification)."""
    for cls in TASKS.values():
        if cls.claims(task, teacher, students, trust_remote_code=trust_remote_code):
            return cls()
    return TextClassificationTask()
