"""The SST-2 reproduction at four scales, one code path (:func:`.sst2.train_pipeline`).

Every scale follows the paper's protocol: a *pretrained* model P plays pretrained BERT; the teacher
is P fine-tuned on SST-2; the students start from P (never from the teacher), "before" = that
starting point fine-tuned on the hard labels, "after" = the method's task distillation from the
teacher, with the same data, epochs and seed.

=========  ==================================  ======================================================
scale      P (pretrained) / teacher            students
=========  ==================================  ======================================================
``smoke``  random BERT 4 x 32 / P fine-tuned   2-layer DistilBERT/PKD from P, 2 x 16 TinyBERT general-
           a few dozen steps on templated      distilled from P, plus the teacher-initialised
           sentences (same in CI and here)     DistilBERT ablation
``quick``  MiniLM-L6 / fine-tuned on 4,000     3-layer every-other student, vanilla KD (the CLI's
           sentences                           default pair, "after" only)
``cpu``    all-MiniLM-L6-v2 as shipped /       DistilBERT-style (every other layer of P), PKD (lower 3
           fine-tuned on 24,000 sentences      layers of P), TinyBERT-4 (4 x 312, FFN 1200, 12 heads,
                                               general distillation from P on the SST-2 train
                                               sentences), ablation: DistilBERT-style from the teacher
``full``   bert-base-uncased (Hub) / all 67k,  ``distilbert-base-uncased``, the first 6 layers of
           3 epochs                            bert-base-uncased (PKD), ``huawei-noah/TinyBERT_General_6L_768D``
=========  ==================================  ======================================================

Hyper-parameters: the ``full`` scale follows the papers (batch 32, 3 epochs, learning rates from
their grids: teacher 2e-5, students 5e-5; TinyBERT intermediate stage 10 epochs). The ``cpu`` scale
uses the teacher settings measured in ``shared/MODELS.md`` (24,000 sentences, 1 epoch, lr 1e-4, random
batches, about 88% dev accuracy) and students on the first 12,000 of those sentences, 1 epoch, in
length-grouped batches; its departures from the papers (1 epoch, 12k sentences, a 1-epoch TinyBERT
intermediate stage, general distillation on 67k SST-2 sentences instead of Wikipedia) are written
into ``results.json`` by :mod:`knowledge_retention.reproduction`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .layer_maps import LayerMapStrategy

__all__ = ["SCALES", "ScaleConfig", "StudentSpec", "get_scale"]

Variant = Literal["before", "after"]


@dataclass(frozen=True)
class StudentSpec:
    """One student architecture and how its "after" variant is distilled.

    Attributes:
        name: short name used in paths and the manifest (``distilbert``, ``pkd``, ``tinybert``).
        init: ``"every_other"`` (DistilBERT), ``"lower"`` (PKD) or ``"narrow"`` (TinyBERT, random).
        num_layers: student depth.
        method: recipe of the "after" variant: ``vanilla``, ``distilbert``, ``pkd`` or ``tinybert``.
        hidden_size, intermediate_size, num_heads: widths of a ``narrow`` student.
        layer_map: teacher layer for each student layer (``skip`` = PKD-Skip / TinyBERT uniform).
        learning_rate: overrides the scale's student learning rate (random-init students need more).
        epochs: overrides the scale's student epochs (the "before" run and the last distillation stage).
        prediction_hard_weight: TinyBERT prediction stage only: weight of an added hard-label term
            (0 = the paper's soft-only loss). Without general distillation and data augmentation, a
            random-init student does not learn from soft targets alone on a CPU budget.
        intermediate_loss_weights: TinyBERT intermediate stage only: overrides of the recipe's
            weights (e.g. ``{"hidden": 0, "embedding": 0}``).
        init_from: where the copied layers come from: ``"pretrained"`` (the paper's protocol: the
            pretrained model P, a fresh classifier head) or ``"teacher"`` (the fine-tuned teacher,
            head included: the old protocol, kept as an ablation). A ``narrow`` student from
            ``"pretrained"`` is general-distilled from P once per run (shared by all seeds).
        checkpoint: a Hub checkpoint to start from instead (``full`` scale: ``distilbert-base-uncased``,
            ``huawei-noah/TinyBERT_General_6L_768D``), with a fresh head.
        all_seeds: train this student for every seed (False: the run's own seed only).
    """

    name: str
    init: Literal["every_other", "lower", "narrow"]
    num_layers: int
    method: Literal["vanilla", "distilbert", "pkd", "tinybert"]
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    layer_map: LayerMapStrategy = "skip"
    learning_rate: float | None = None
    epochs: float | None = None
    prediction_hard_weight: float = 0.0
    intermediate_loss_weights: Mapping[str, float] | None = None
    init_from: Literal["pretrained", "teacher"] = "pretrained"
    checkpoint: str | None = None
    all_seeds: bool = True


@dataclass(frozen=True)
class ScaleConfig:
    """Everything that differs between scales. ``None`` sizes mean the whole split;
    ``num_threads`` (torch intra-op threads during the run) ``None`` keeps torch's default;
    ``group_by_length`` batches students' sentences by length (about 2.5x cheaper steps on SST-2),
    ``teacher_group_by_length`` the same for the teacher (``None``: as the students).
    ``general_*``: TinyBERT's general distillation from P (a ``narrow`` student from ``"pretrained"``):
    its corpus is the first ``general_train_size`` sentences of the shuffled training split (``None``:
    all of it; labels unused), epochs and learning rate.
    ``krs_eval_steps``: every that many optimizer steps of each student's training (its final stage:
    TinyBERT's prediction stage), and once before the first, :class:`~knowledge_retention.KRSCallback`
    scores the student against the teacher on every dev sentence with the evaluation's options
    (:data:`~knowledge_retention.distillation.sst2.KRS_OPTIONS`); ``None``: no evaluation during training."""

    name: str
    teacher: Literal["tiny-random", "minilm", "bert-base-uncased"]
    students: tuple[StudentSpec, ...]
    variants: tuple[Variant, ...] = ("before", "after")
    data: Literal["sst2", "synthetic", "auto"] = "sst2"
    teacher_train_size: int | None = None
    student_train_size: int | None = None
    dev_size: int | None = None
    teacher_epochs: float = 1.0
    teacher_lr: float = 1e-4
    student_epochs: float = 1.0
    student_lr: float = 1e-4
    tinybert_intermediate_epochs: float = 1.0
    tinybert_intermediate_lr: float = 1e-4
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 64
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 42
    use_cpu: bool = True
    bf16: bool | None = False
    cache_teacher: bool = True
    logging_steps: int = 50
    num_threads: int | None = None
    group_by_length: bool = False
    teacher_group_by_length: bool | None = None
    general_train_size: int | None = None
    general_epochs: float = 1.0
    general_lr: float = 3e-4
    krs_eval_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested student specs included)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ScaleConfig:
        """A copy with some fields changed (unknown fields raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)


_SMOKE_STUDENTS = (
    StudentSpec("distilbert", "every_other", 2, "distilbert"),
    StudentSpec("pkd", "lower", 2, "pkd"),
    StudentSpec("tinybert", "narrow", 2, "tinybert", hidden_size=16, intermediate_size=32, num_heads=4),
    StudentSpec("distilbert_teacher_init", "every_other", 2, "distilbert", init_from="teacher"),
)
_CPU_STUDENTS = (
    StudentSpec("distilbert", "every_other", 3, "distilbert"),
    StudentSpec("pkd", "lower", 3, "pkd"),
    # TinyBERT-4's shape (Jiao et al. 2020, Table 1); heads equal to P's, as the attention loss needs
    StudentSpec("tinybert", "narrow", 4, "tinybert", hidden_size=312, intermediate_size=1200, num_heads=12),
    # the ablation: the old protocol (layers and head copied from the fine-tuned teacher), one seed
    StudentSpec("distilbert_teacher_init", "every_other", 3, "distilbert", init_from="teacher", all_seeds=False),
)
_FULL_STUDENTS = (
    StudentSpec("distilbert", "every_other", 6, "distilbert", checkpoint="distilbert-base-uncased"),
    StudentSpec("pkd", "lower", 6, "pkd"),
    StudentSpec("tinybert", "narrow", 6, "tinybert", hidden_size=768, intermediate_size=3072, num_heads=12,
                checkpoint="huawei-noah/TinyBERT_General_6L_768D"),
    StudentSpec("distilbert_teacher_init", "every_other", 6, "distilbert", init_from="teacher", all_seeds=False),
)

SCALES: Mapping[str, ScaleConfig] = {
    "smoke": ScaleConfig(
        name="smoke",
        teacher="tiny-random",
        students=_SMOKE_STUDENTS,
        data="synthetic",
        teacher_train_size=512,
        student_train_size=512,
        dev_size=128,
        teacher_epochs=4,
        teacher_lr=3e-3,
        student_epochs=1,
        student_lr=3e-3,
        tinybert_intermediate_epochs=1,
        tinybert_intermediate_lr=3e-3,
        general_lr=3e-3,
        max_length=48,
        logging_steps=10,
        num_threads=1,  # tiny matrices: a second thread only adds synchronisation (10x slower when shared)
    ),
    "quick": ScaleConfig(
        name="quick",
        teacher="minilm",
        # the main job's default pair: a copy of the teacher's layers (its cached checkpoints keep this recipe)
        students=(StudentSpec("distilbert", "every_other", 3, "vanilla", init_from="teacher"),),
        variants=("before", "after"),  # "before": the plain fine-tuned baseline of the main job's report
        teacher_train_size=4000,
        student_train_size=4000,
        teacher_lr=2e-4,  # 125 steps: 2e-4 reached 81.8% dev accuracy where 1e-4 reached 77.9%
        student_lr=2e-4,
        logging_steps=25,
        group_by_length=True,  # ~2.5x cheaper steps (little padding); keeps the first run at a few minutes
    ),
    "cpu": ScaleConfig(
        name="cpu",
        teacher="minilm",
        students=_CPU_STUDENTS,
        teacher_train_size=24000,
        student_train_size=12000,
        teacher_lr=1e-4,
        student_lr=1e-4,
        tinybert_intermediate_epochs=1,
        tinybert_intermediate_lr=1e-4,
        general_train_size=None,  # all 67,349 SST-2 training sentences, labels unused
        general_epochs=1,
        general_lr=3e-4,  # random init, ~2,100 steps: BERT pre-training's 1e-4 is made for 10^6 steps
        group_by_length=True,  # students only: about 2.5x cheaper steps
        teacher_group_by_length=False,  # the teacher keeps the measured recipe (random batches, ~88%)
        # on 2 shared cores two torch threads per process are several times slower than one (one thread
        # waits for the other whenever a neighbour takes a core; benchmarks/threads_under_load.py);
        # seeds run as parallel processes instead
        num_threads=1,
    ),
    "full": ScaleConfig(
        name="full",
        teacher="bert-base-uncased",
        students=_FULL_STUDENTS,
        teacher_epochs=3,
        teacher_lr=2e-5,
        student_epochs=3,
        student_lr=5e-5,
        tinybert_intermediate_epochs=10,
        tinybert_intermediate_lr=5e-5,
        max_length=128,
        eval_batch_size=256,
        use_cpu=False,
        bf16=None,
        logging_steps=100,
    ),
}


def get_scale(scale: str | ScaleConfig) -> ScaleConfig:
    """Look up a scale by name (``smoke``, ``quick``, ``cpu``, ``full``) or pass a config through."""
    if isinstance(scale, ScaleConfig):
        return scale
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {sorted(SCALES)} or a ScaleConfig, got {scale!r}")
    return SCALES[scale]
