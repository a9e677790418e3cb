"""The task interface of the extraction engine: what differs between text classifiers, causal LMs, ...

The engine (:mod:`knowledge_retention.extraction.engine`) owns the loop: it loads the models through
the task, shards the examples with ``accelerate``, groups them by length, runs the teacher once per
batch (or replays it from a :class:`~knowledge_retention.extraction.TeacherCache`), runs every
student, folds both into each student's stream, gathers the streams of every process, checks that
every example was seen exactly once and asks the task for the result. A task is one class with the
methods below (the model is transformers' ``Pipeline``: ``preprocess`` -> ``_forward`` ->
``postprocess``, and the loop never changes for a new task).

The path of one batch, in the task's words::

    indices --prepare--> batch --teacher--> PooledBatch (recorded by the cache, or replayed)
                               --student--> PooledBatch --stream.update(teacher, student, batch)
    ... every process's stream.payload() --merge--> merged --result--> ExtractionResult
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..options import EvalOptions
    from ..result import ExtractionResult
    from ..streams import PooledBatch

__all__ = ["Batch", "ModelSpec", "Plan", "Task", "_load_kwargs"]


@dataclass
class ModelSpec:
    """One model to run: the teacher or a student, with how messages and results name it.

    Attributes:
        name: the student's key (``"student"`` for :func:`evaluate_pair`); ``"teacher"`` for the teacher.
        model: a model object or a path / hub name.
        preprocessor: its tokenizer (or image processor); None loads the model's own.
        role: how messages name it (``"teacher"``, ``"student"``, ``"student 'kd'"``).
        argument: the argument that holds the model (``"teacher"``, ``"students['kd']"``).
        preprocessor_argument: the argument that holds the preprocessor.
        cross_layer: whether this student gets the cross-layer CKA matrix.
    """

    name: str
    model: Any
    preprocessor: Any
    role: str
    argument: str
    preprocessor_argument: str
    cross_layer: bool = True


@dataclass
class Batch:
    """A batch as the task prepared it from the dataset.

    Attributes:
        indices: dataset index of every example of the batch (all of them are "seen").
        labels: their labels (None without a label column).
        data: the task's own payload (texts, token ids, images...).
        runs: False when no example of the batch needs a forward pass (e.g. texts without a counted
            token): the streams only record the indices.
    """

    indices: list[int]
    labels: list[Any] | None
    data: Any
    runs: bool = True


@dataclass
class Plan:
    """What is compared for one student (decided from the probe): layer pairs and pooled layers.

    ``extra`` holds the task's own decisions (the agreement accumulator, notes...).
    """

    pairs: list[tuple[int, int]]
    names_s: list[str]
    t_layers: list[int]
    s_layers: list[int]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of an extraction task; see the module docstring for the path of a batch.

    Subclasses set :attr:`name` (the ``task`` presets they serve are :attr:`presets`) and implement
    every method that raises ``NotImplementedError`` here.
    """

    #: the task's registry name
    name: str = ""
    #: ``task=`` preset names (``score.TASK_PRESETS``) that this task serves
    presets: tuple[str, ...] = ()
    #: options of :class:`EvalOptions` this task does not use: refused (InputError) when set to a
    #: non-default value, with the reason given here
    unused_options: dict[str, str] = {}

    @classmethod
    def claims(cls, task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> bool:
        """Whether this task scores this pair (``task`` as given, models as given: objects or paths).

        May raise :class:`~knowledge_retention.InputError` for a pair no task can score (e.g. a causal
        LM beside a classifier)."""
        return False

    #: the preset ``task`` takes when the user gives none
    default_preset: str = "nlp"

    # -- options and data ------------------------------------------------------------------------
    def check_options(self, opts: EvalOptions) -> None:
        """Task-specific validation of the options (after the common one)."""

    def make_source(self, dataset: Any, opts: EvalOptions) -> Any:
        """The example source: ``len(source)`` and whatever :meth:`prepare` reads."""
        raise NotImplementedError

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> Any:
        """Loads one model (and its preprocessor) and returns its runner (``model``, ``device``,
        ``role`` and the counters ``tokenize_s``, ``forward_s``, ``num_truncated``)."""
        raise NotImplementedError

    def check_pair(self, teacher: Any, student: Any, spec: ModelSpec) -> None:
        """Refuses a student that cannot be compared with the teacher (before any batch runs)."""

    def model_name(self, runner: Any, spec: ModelSpec) -> str:
        return str(getattr(runner, "path", None) or type(runner.model).__name__)

    # -- the probe and the plan --------------------------------------------------------------------
    def probe(self, source: Any, runner: Any, opts: EvalOptions) -> dict[str, Any]:
        """What the first example says of a model: ``n_states``, ``widths``, ``num_outputs``..."""
        raise NotImplementedError

    def plan(self, spec: ModelSpec, t_info: dict[str, Any], s_info: dict[str, Any], opts: EvalOptions,
             names: dict[str, str]) -> Plan:
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------------------------
    def lengths(self, source: Any, teacher: Any, opts: EvalOptions) -> np.ndarray | None:
        """Per-example lengths for ``group_by_length`` (None: keep dataset order)."""
        return None

    def prepare(self, source: Any, indices: Sequence[int], opts: EvalOptions) -> Batch:
        raise NotImplementedError

    def teacher(self, runner: Any, batch: Batch, layers: list[int], opts: EvalOptions, *, record: bool) -> PooledBatch:
        """The teacher's pooled batch (``record``: in a form the teacher cache can store)."""
        raise NotImplementedError

    def student(self, runner: Any, batch: Batch, plan: Plan, opts: EvalOptions) -> PooledBatch:
        raise NotImplementedError

    def empty_teacher(self, t_info: dict[str, Any]) -> PooledBatch:
        """A teacher batch of no rows (recorded for a batch that :attr:`Batch.runs` is False for)."""
        raise NotImplementedError

    def teacher_stream(self, t_info: dict[str, Any], opts: EvalOptions, runtime: Any) -> Any:
        """A stream of the teacher's own outputs (None by default; ``record_teacher``'s task writes them):
        ``layers`` (teacher layers it needs besides the students'), ``update(teacher, None, batch)``,
        ``skip(batch)`` and ``payload(counters)``, gathered from every process into
        :meth:`finish_teacher_stream`."""
        return None

    def finish_teacher_stream(self, payloads: list[Any], runtime: Any) -> None:
        """Completes the teacher stream from every process's payload (called on every process)."""

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> Any:
        """One student's stream: ``update(teacher, student, batch)``, ``skip(batch)``, ``payload(counters)``."""
        raise NotImplementedError

    def merge(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        """The streams of every process, merged (``index`` sorted)."""
        raise NotImplementedError

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        raise NotImplementedError

    # -- the teacher cache -------------------------------------------------------------------------
    def cache_parts(self, teacher: Any, source: Any, opts: EvalOptions, *, in_memory: bool) -> dict[str, Any]:
        """What the teacher's recorded outputs depend on, beyond the engine's options (the fingerprint)."""
        raise NotImplementedError


def _load_kwargs(spec: ModelSpec, opts: EvalOptions) -> dict[str, Any] | None:
    """``from_pretrained`` keyword arguments of this model: ``teacher_load_kwargs`` for the teacher given as a path."""
    if spec.argument == "teacher" and opts.teacher_load_kwargs:
        return dict(opts.teacher_load_kwargs)
    return None
