"""SST-2 training pipeline: teacher, then each student "before" (hard labels) and "after" (distilled).

Run it as::

    python -m knowledge_retention.distillation.sst2 --scale smoke --out runs/smoke   # < 1 min, CPU
    python -m knowledge_retention.distillation.sst2 --scale cpu --out runs/sst2-cpu  # ~20-40 min, 2 cores
    accelerate launch -m knowledge_retention.distillation.sst2 --scale full --out runs/sst2-full  # GPUs, Hub

It writes ``teacher/``, ``general/<name>/`` (TinyBERT's general-distilled starting point),
``students/<name>-<variant>/`` (model, tokenizer, ``run_config.json``) and ``manifest.json``; it does
not compute KRS (see :mod:`.manifest` for the evaluation boundary).

The protocol is the paper's: the students start from the *pretrained* model P (the scale's
``teacher`` checkpoint before fine-tuning), never from the fine-tuned teacher, unless a student spec
asks for ``init_from="teacher"`` (the ablation). Each student entry of the manifest records
``init_from`` and ``init_fingerprint`` (a hash of the weights it started from), so that its "before"
and "after" runs can be checked to share their initialisation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import data as sst2_data
from .manifest import MANIFEST, MANIFEST_FORMAT, EvaluateFn, write_manifest
from .pretrained import SST2_LABELS, load_minilm_classifier, load_tokenizer
from .runs import make_training_args, predict_accuracy, run_training, save_run
from .scales import ScaleConfig, StudentSpec, get_scale
from .splits import load_general_corpus, load_pipeline_splits
from .students import every_other_layer_student, lower_layers_student, narrow_student, student_config
from .targets import TargetSpec, TrainingTargetCache
from .trainer import DistillationTrainer, plan_targets, recipe_for

__all__ = [
    "PipelineData", "build_pretrained", "build_student", "build_teacher", "general_distillation", "init_fingerprint",
    "load_general_corpus", "load_pipeline_data", "load_pipeline_splits", "train_general", "train_pipeline",
    "train_student_seeds",
]

#: How the reproduction scores a student against its teacher (the evaluation and KRS during training):
#: the final hidden state's [CLS] vector, linear CKA, the NLP preset (α = β = 0.5), KL-based AOAg.
KRS_OPTIONS: dict[str, Any] = {"layers": "final", "pooling": "cls", "task": "nlp", "fss_method": "linear_cka",
                               "aoag_method": "kl"}

logger = logging.getLogger(__name__)


@dataclass
class PipelineData:
    """Tokenised splits shared by every run of a pipeline."""

    tokenizer: Any
    collator: Any
    teacher_train: Any
    student_train: Any
    dev: Any
    source: str
    general_train: Any = None
    dev_texts: Any = None  # the dev sentences as text (KRS during training scores them)


class _Progress:
    def __init__(self, scale: str, enabled: bool, main_process: bool):
        self.scale, self.enabled, self.start = scale, enabled and main_process, time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[sst2:{self.scale} +{time.perf_counter() - self.start:6.0f}s] {message}", file=sys.stderr, flush=True)


def load_pipeline_data(
    cfg: ScaleConfig, *, data_dir: str | Path | None = None, general: bool = False
) -> PipelineData:
    """Load, subset and tokenise the splits a scale needs (see :func:`load_pipeline_splits`);
    ``general`` also the general-distillation corpus (:func:`load_general_corpus`)."""
    tokenizer = load_tokenizer()
    teacher_train, student_train, dev, source = load_pipeline_splits(cfg, data_dir=data_dir)

    def tok(ds: Any) -> Any:
        return sst2_data.tokenize_dataset(ds, tokenizer, max_length=cfg.max_length)

    return PipelineData(
        tokenizer, sst2_data.make_collator(tokenizer), tok(teacher_train), tok(student_train), tok(dev), source,
        general_train=tok(load_general_corpus(cfg, data_dir=data_dir)) if general else None,
        dev_texts=list(dev["sentence"]),
    )


def build_pretrained(cfg: ScaleConfig, tokenizer: Any) -> Any:
    """The pretrained model P of a scale, as a sequence classifier with a new head: a tiny random
    BERT (``smoke``; seeded), all-MiniLM-L6-v2 as shipped, or bert-base-uncased. The teacher is P
    fine-tuned; the students start from P. Call :func:`transformers.set_seed` first for a
    reproducible head."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    label2id = {v: k for k, v in SST2_LABELS.items()}
    if cfg.teacher == "tiny-random":
        config = BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128,
        )
        config.id2label, config.label2id = dict(SST2_LABELS), label2id
        torch.manual_seed(cfg.seed)
        return BertForSequenceClassification(config)
    if cfg.teacher == "minilm":
        return load_minilm_classifier(2)
    if cfg.teacher == "bert-base-uncased":
        return AutoModelForSequenceClassification.from_pretrained(
            "bert-base-uncased", num_labels=2, id2label=dict(SST2_LABELS), label2id=label2id
        )
    raise ValueError(f"`cfg.teacher` must be 'tiny-random', 'minilm' or 'bert-base-uncased', got {cfg.teacher!r}")


build_teacher = build_pretrained
"""The untrained teacher of a scale is its pretrained model P (kept under this name for callers)."""


def init_fingerprint(model: Any) -> str:
    """16 hex digits of a SHA-256 over a model's state dict (sorted keys, raw bytes): equal
    fingerprints mean equal weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _fresh_head(model: Any, seed: int) -> None:
    """Re-draws the classification head (BERT's init: N(0, initializer_range), zero bias) from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    for name in ("pre_classifier", "classifier"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Linear):
            with torch.no_grad():
                weight = torch.empty(module.weight.shape).normal_(0.0, std, generator=generator)
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.zero_()


def build_student(
    spec: StudentSpec, pretrained: Any, *, seed: int, teacher: Any = None, general: Any = None
) -> Any:
    """A fresh student for ``spec`` (same init for its "before" and "after" runs).

    Args:
        spec: the student.
        pretrained: the pretrained model P (layers are copied from it: the paper's protocol).
        seed: sets the fresh head and, for a random narrow student, its weights.
        teacher: the fine-tuned teacher, used only by ``spec.init_from == "teacher"`` (the ablation:
            layers and head copied from it).
        general: the general-distilled checkpoint of a ``narrow`` student (TinyBERT), copied; without
            it a narrow student is randomly initialised.

    Returns:
        A new model; nothing is shared with ``pretrained``, ``teacher`` or ``general``.
    """
    import copy

    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(seed)
    device = next(pretrained.parameters()).device
    if spec.init_from == "teacher":
        if teacher is None:
            raise ValueError(f"student {spec.name!r} is initialised from the teacher, but no `teacher` was given")
        source = teacher
    elif spec.init_from == "pretrained":
        source = pretrained
    else:
        raise ValueError(f"`spec.init_from` must be 'pretrained' or 'teacher', got {spec.init_from!r}")
    if spec.checkpoint is not None and spec.init_from == "pretrained":
        model = AutoModelForSequenceClassification.from_pretrained(
            spec.checkpoint, num_labels=2, id2label=dict(SST2_LABELS), label2id={v: k for k, v in SST2_LABELS.items()}
        )
    elif spec.init == "every_other":
        model = every_other_layer_student(source, spec.num_layers)
    elif spec.init == "lower":
        model = lower_layers_student(source, spec.num_layers)
    elif spec.init == "narrow":
        if None in (spec.hidden_size, spec.intermediate_size, spec.num_heads):
            raise ValueError(f"a narrow student needs hidden_size, intermediate_size and num_heads, got {spec}")
        assert spec.hidden_size and spec.intermediate_size and spec.num_heads
        if general is not None:
            model = copy.deepcopy(general)
        else:
            model = narrow_student(
                source.config, spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.num_heads, seed=seed
            )
    else:
        raise ValueError(f"`spec.init` must be 'every_other', 'lower' or 'narrow', got {spec.init!r}")
    if spec.init_from == "pretrained":
        _fresh_head(model, seed)
    return model.to(device)


def _needs_general(spec: StudentSpec) -> bool:
    return spec.init == "narrow" and spec.init_from == "pretrained" and spec.checkpoint is None


def _cached_spec(cfg: ScaleConfig, teacher: Any) -> TargetSpec:
    """Union of what every cacheable "after" run reads (TinyBERT's intermediate stage runs live)."""
    spec = TargetSpec()
    if "after" not in cfg.variants:
        return spec
    for student in cfg.students:
        stage = "prediction" if student.method == "tinybert" else None
        weights = recipe_for(student.method, stage).weights
        config = student_config(
            teacher.config, student.num_layers, hidden_size=student.hidden_size,
            intermediate_size=student.intermediate_size, num_heads=student.num_heads,
        )
        spec = spec.union(plan_targets(config, teacher.config, weights, strategy=student.layer_map)[0])
    return spec


class _Runner:
    """Builds trainers with a scale's settings and records each run."""

    def __init__(self, cfg: ScaleConfig, data: PipelineData, out_dir: Path, progress: _Progress, show: bool):
        self.cfg, self.data, self.out_dir, self.progress, self.show = cfg, data, out_dir, progress, show
        self.pretrained: Any = None  # P, the students' starting point
        self.general: dict[str, Any] = {}  # general-distilled narrow students, by name
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else bool(
            torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        )

    def trainer(
        self, model: Any, train: Any, *, lr: float, epochs: float, run: str, grouped: bool | None = None,
        krs_teacher: Any = None, **kwargs: Any
    ) -> Any:
        """A ``DistillationTrainer`` with the scale's settings; with ``krs_teacher`` (and the scale's
        ``krs_eval_steps``), KRS against it is logged during training (``trainer.krs_callback``)."""
        from transformers import PrinterCallback

        cfg = self.cfg
        extra: dict[str, Any] = {"ddp_find_unused_parameters": True} if kwargs.get("stage") == "intermediate" else {}
        callback = None
        if krs_teacher is not None and cfg.krs_eval_steps:
            callback = self.krs_callback(krs_teacher)
            extra.update(eval_strategy="steps", eval_steps=cfg.krs_eval_steps, eval_on_start=True)
            # the Trainer evaluates something of its own (its eval_loss): one batch of dev sentences;
            # the callback's KRS covers every dev sentence
            kwargs["eval_dataset"] = self.data.dev.select(range(min(len(self.data.dev), cfg.eval_batch_size)))
            kwargs["callbacks"] = [callback]
        args = make_training_args(
            self.out_dir / "_scratch" / run, learning_rate=lr, epochs=epochs, batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
            logging_steps=cfg.logging_steps, use_cpu=cfg.use_cpu, bf16=self.bf16,
            group_by_length=cfg.group_by_length if grouped is None else grouped, progress=self.show,
            extra=extra or None,
        )
        trainer = DistillationTrainer(
            model, args, train_dataset=train, data_collator=self.data.collator,
            processing_class=self.data.tokenizer, **kwargs,
        )
        trainer.krs_callback = callback
        if not self.show:
            trainer.remove_callback(PrinterCallback)
        return trainer

    def krs_callback(self, teacher: Any) -> Any:
        """A :class:`~knowledge_retention.KRSCallback` against ``teacher`` on the dev sentences, with the
        evaluation's options (:data:`KRS_OPTIONS`)."""
        from ..integrations.callbacks import KRSCallback

        cfg = self.cfg
        return KRSCallback(teacher, {"sentence": self.data.dev_texts}, self.data.tokenizer, **KRS_OPTIONS,
                           max_length=cfg.max_length, batch_size=cfg.eval_batch_size)

    def finish(self, trainer: Any, stages: list[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
        model = trainer.model
        accuracy = predict_accuracy(model, self.data.dev, self.data.collator, batch_size=self.cfg.eval_batch_size)
        seconds = round(sum(s["seconds"] for s in stages), 2)
        entry.update(
            train_seconds=seconds,
            train_loss=stages[-1]["train_loss"],
            dev_accuracy=round(accuracy, 4),
            parameters=sum(p.numel() for p in model.parameters()),
            num_layers=model.config.num_hidden_layers,
            hidden_size=model.config.hidden_size,
        )
        run_config = {
            **entry,
            "scale": self.cfg.name,
            "seed": self.cfg.seed,
            "data": {"source": self.data.source, "train_examples": stages[-1]["examples"], "dev_examples": len(self.data.dev)},
            "hyper_parameters": {
                "batch_size": self.cfg.batch_size, "warmup": self.cfg.warmup, "weight_decay": self.cfg.weight_decay,
                "max_length": self.cfg.max_length,
            },
            "stages": stages,
            "wall_seconds": seconds,
        }
        save_run(trainer, self.out_dir / entry["path"], run_config)
        self.progress(
            f"{entry['name']}{'-' + entry['variant'] if entry['variant'] else ''}: {seconds:.0f} s, "
            f"train loss {entry['train_loss']:.4f}, dev accuracy {accuracy:.4f}"
        )
        return entry


def _stage_record(trainer: Any, result: dict[str, Any], lr: float, epochs: float) -> dict[str, Any]:
    return {
        "method": trainer.method, "stage": trainer.stage, "loss_weights": trainer.loss_weights,
        "temperature": trainer.temperature, "learning_rate": lr, "epochs": epochs, **result,
    }


def general_distillation(runner: _Runner, spec: StudentSpec) -> tuple[Any, dict[str, Any]]:
    """TinyBERT's general distillation: a random narrow student learns P's embeddings, hidden states
    (through a learned projection) and attention maps on the unlabelled corpus (TinyBERT's
    intermediate-layer loss; no prediction layer: P has no task head). Saved as ``general/<name>``.

    Returns:
        ``(model, record)``; the record (also the folder's ``run_config.json``) holds the corpus size,
        steps, seconds and the loss per logged step.
    """
    from transformers import set_seed

    cfg, data = runner.cfg, runner.data
    if data.general_train is None:
        raise ValueError("the pipeline data has no general-distillation corpus (load it with general=True)")
    assert spec.hidden_size and spec.intermediate_size and spec.num_heads
    set_seed(cfg.seed)
    student = narrow_student(
        runner.pretrained.config, spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.num_heads,
        seed=cfg.seed,
    ).to(next(runner.pretrained.parameters()).device)
    run = f"general-{spec.name}"
    runner.progress(f"{run}: general distillation from P on {len(data.general_train)} unlabelled sentences "
                    f"({cfg.general_epochs} epoch(s), lr {cfg.general_lr})")
    trainer = runner.trainer(
        student, data.general_train, run=run, lr=cfg.general_lr, epochs=cfg.general_epochs, method="tinybert",
        stage="intermediate", teacher=runner.pretrained, layer_map_strategy=spec.layer_map,
    )
    result = run_training(trainer)
    record = {
        "name": spec.name, "path": f"general/{spec.name}", "from": cfg.teacher, "corpus": data.source,
        "corpus_sentences": len(data.general_train), "init_seed": cfg.seed,
        **_stage_record(trainer, result, cfg.general_lr, cfg.general_epochs),
        "parameters": sum(p.numel() for p in student.parameters()),
    }
    save_run(trainer, runner.out_dir / record["path"], record)
    runner.progress(f"{run}: done in {result['seconds']:.0f} s, loss {result['train_loss']:.4f}")
    return trainer.model, record


def train_general(
    scale: str | ScaleConfig, out_dir: str | Path, *, data_dir: str | Path | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Only the general distillation of a scale's narrow students, into ``<out_dir>/general/<name>``:
    the "released general checkpoint" that a later :func:`train_pipeline` call reuses with
    ``general_from=out_dir`` (it needs no teacher, so it can run while the teacher trains).

    Returns:
        One record per general-distilled student (see :func:`general_distillation`).
    """
    from transformers import set_seed

    cfg = get_scale(scale)
    out = Path(out_dir)
    say = _Progress(f"{cfg.name}/general", progress, True)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        data = load_pipeline_data(cfg, data_dir=data_dir, general=True)
        runner = _Runner(cfg, data, out, say, progress)
        set_seed(cfg.seed)
        device = torch.device("cuda" if torch.cuda.is_available() and not cfg.use_cpu else "cpu")
        runner.pretrained = build_pretrained(cfg, data.tokenizer).to(device)
        records = [general_distillation(runner, spec)[1] for spec in cfg.students if _needs_general(spec)]
    finally:
        torch.set_num_threads(threads)
    shutil.rmtree(out / "_scratch", ignore_errors=True)
    return records


def _load_general(path: Path) -> tuple[Any, dict[str, Any]]:
    from transformers import AutoModelForSequenceClassification

    from .runs import RUN_CONFIG

    if not (path / RUN_CONFIG).is_file():
        raise ValueError(f"no general-distilled checkpoint in {str(path)!r} ({RUN_CONFIG} missing)")
    record = json.loads((path / RUN_CONFIG).read_text(encoding="utf-8"))
    return AutoModelForSequenceClassification.from_pretrained(path), record


def _train_student(
    runner: _Runner, spec: StudentSpec, variant: str, teacher: Any, cache: TrainingTargetCache | None
) -> dict[str, Any]:
    cfg = runner.cfg
    lr, epochs = spec.learning_rate or cfg.student_lr, spec.epochs or cfg.student_epochs
    student = build_student(spec, runner.pretrained, seed=cfg.seed, teacher=teacher, general=runner.general.get(spec.name))
    fingerprint = init_fingerprint(student)
    run = f"{spec.name}-{variant}"
    start_from = "the teacher" if spec.init_from == "teacher" else spec.checkpoint or (
        "P, general-distilled" if spec.name in runner.general else "P")
    runner.progress(f"{run}: training ({spec.init} init from {start_from}, {spec.num_layers} layers, "
                    f"{'hard labels' if variant == 'before' else spec.method})")
    stages = []
    common: dict[str, Any] = {"lr": lr, "epochs": epochs}
    if variant == "before":
        trainer = runner.trainer(student, runner.data.student_train, run=run, method="hard", krs_teacher=teacher,
                                 **common)
        stages.append(_stage_record(trainer, run_training(trainer), lr, epochs))
    else:
        shared = {"teacher": teacher, "layer_map_strategy": spec.layer_map}
        if spec.method == "tinybert":
            iepochs, ilr = cfg.tinybert_intermediate_epochs, cfg.tinybert_intermediate_lr
            trainer = runner.trainer(
                student, runner.data.student_train, run=f"{run}-intermediate", lr=ilr, epochs=iepochs,
                method="tinybert", stage="intermediate", loss_weights=spec.intermediate_loss_weights, **shared,
            )
            stages.append(_stage_record(trainer, run_training(trainer), ilr, iepochs))
            runner.progress(f"{run}: intermediate-layer stage done in {stages[-1]['seconds']:.0f} s")
        stage = "prediction" if spec.method == "tinybert" else None
        extra_weights = {"hard": spec.prediction_hard_weight} if stage and spec.prediction_hard_weight else None
        trainer = runner.trainer(
            student, runner.data.student_train, run=run, method=spec.method, stage=stage, loss_weights=extra_weights,
            teacher_cache=cache, cache_teacher_outputs=cfg.cache_teacher, krs_teacher=teacher, **shared, **common,
        )
        stages.append(_stage_record(trainer, run_training(trainer), lr, epochs))
    entry: dict[str, Any] = {
        "role": "student", "name": spec.name, "variant": variant,
        "method": "hard" if variant == "before" else spec.method,
        "init": spec.init, "init_from": spec.init_from, "init_checkpoint": spec.checkpoint,
        "general": f"general/{spec.name}" if spec.name in runner.general else None,
        "init_fingerprint": fingerprint, "path": f"students/{run}", "layer_map": spec.layer_map,
    }
    if trainer.krs_callback is not None:
        history = trainer.krs_callback.history
        if not history or history[-1]["step"] != trainer.state.global_step:
            trainer.evaluate()  # the curve ends at the trained student
        entry["krs_during_training"] = {"every_steps": cfg.krs_eval_steps, "history": history}
    return runner.finish(trainer, stages, entry)


def train_pipeline(
    scale: str | ScaleConfig,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    students: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    progress: bool = True,
    evaluate_fn: EvaluateFn | None = None,
    teacher_from: str | Path | None = None,
    general_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train the teacher and every student of a scale; write ``manifest.json``; return the manifest.

    Args:
        scale: ``"smoke"``, ``"quick"``, ``"cpu"``, ``"full"`` or a :class:`~.scales.ScaleConfig`.
        out_dir: output folder (created; existing model folders in it are overwritten).
        data_dir: SST-2 TSV folder (default: ``$SST2_DIR``, then ``../shared/data/sst2``, then the Hub).
        students: subset of the scale's student names to train (default: all).
        variants: subset of ``("before", "after")`` (default: the scale's).
        progress: print progress and timings to stderr, and show the Trainer's progress bars.
        evaluate_fn: optional evaluation step (e.g. KRS extraction + report), called with the
            manifest's path after training; its return value is stored under ``"evaluation"`` in the
            returned dict (not in the manifest file).
        teacher_from: the folder of an earlier run of the same scale whose teacher to reuse instead
            of training one (its teacher settings must equal this run's; its training time is
            carried into the manifest, marked ``reused``).
        general_from: likewise, an earlier run folder holding ``general/<name>`` checkpoints.

    Returns:
        The manifest: ``scale``, ``config``, ``data``, ``timings`` and ``models`` (one entry per
        trained model with ``role``, ``name``, ``variant``, ``method``, ``path`` relative to
        ``out_dir``, ``train_seconds``, ``train_loss``, ``dev_accuracy``, ``parameters``).
    """
    cfg = _select(get_scale(scale), students, variants)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        manifest, written = _run(cfg, Path(out_dir), data_dir=data_dir, progress=progress,
                                 teacher_from=teacher_from, general_from=general_from)
    finally:
        torch.set_num_threads(threads)
    if evaluate_fn is not None and written:
        return {**manifest, "evaluation": evaluate_fn(Path(out_dir) / MANIFEST)}
    return manifest


_TEACHER_FIELDS = ("teacher", "data", "teacher_train_size", "teacher_epochs", "teacher_lr", "batch_size", "max_length",
                   "warmup", "weight_decay", "seed", "group_by_length", "teacher_group_by_length")


def _reuse_teacher(cfg: ScaleConfig, source: Path, out: Path) -> tuple[dict[str, Any], Any]:
    """Copies the teacher of an earlier run with the same teacher settings into ``out/teacher``."""
    from transformers import AutoModelForSequenceClassification

    from .manifest import load_manifest

    earlier = load_manifest(source)
    mine, theirs = cfg.to_dict(), earlier["config"]
    differ = [k for k in _TEACHER_FIELDS if mine.get(k) != theirs.get(k)]
    if differ:
        raise ValueError(f"`teacher_from`: that run's teacher settings differ from this scale's in {differ}")
    entry = dict(next(m for m in earlier["models"] if m["role"] == "teacher"))
    if (out / "teacher").resolve() != (source / entry["path"]).resolve():
        shutil.copytree(source / entry["path"], out / "teacher", dirs_exist_ok=True)
    entry.update(path="teacher", reused=True, reused_created=earlier.get("created"))
    return entry, AutoModelForSequenceClassification.from_pretrained(out / "teacher")


def _run(
    cfg: ScaleConfig, out: Path, *, data_dir: str | Path | None, progress: bool,
    teacher_from: str | Path | None = None, general_from: str | Path | None = None,
) -> tuple[dict[str, Any], bool]:
    from accelerate import PartialState
    from transformers import set_seed

    out.mkdir(parents=True, exist_ok=True)
    main_process = PartialState().is_main_process
    say = _Progress(cfg.name, progress, main_process)
    _configure_logging(progress and main_process)
    start = time.perf_counter()

    set_seed(cfg.seed)
    general_specs = [spec for spec in cfg.students if _needs_general(spec)]
    data = load_pipeline_data(cfg, data_dir=data_dir, general=bool(general_specs) and general_from is None)
    say(f"data: {data.source}; teacher train {len(data.teacher_train)}, student train {len(data.student_train)}, "
        f"dev {len(data.dev)}")
    runner = _Runner(cfg, data, out, say, progress and main_process)

    set_seed(cfg.seed)
    if teacher_from is not None:
        entry, teacher = _reuse_teacher(cfg, Path(teacher_from), out)
        say(f"teacher: reused from an earlier run (dev accuracy {entry['dev_accuracy']}, "
            f"trained in {entry['train_seconds']:.0f} s)")
        models = [entry]
        device = torch.device("cuda" if torch.cuda.is_available() and not cfg.use_cpu else "cpu")
        teacher.to(device)
    else:
        teacher = build_pretrained(cfg, data.tokenizer)
        say(f"teacher: fine-tuning {cfg.teacher} ({cfg.teacher_epochs} epoch(s), lr {cfg.teacher_lr})")
        grouped = cfg.group_by_length if cfg.teacher_group_by_length is None else cfg.teacher_group_by_length
        trainer = runner.trainer(teacher, data.teacher_train, run="teacher", lr=cfg.teacher_lr,
                                 epochs=cfg.teacher_epochs, method="hard", grouped=grouped)
        stage = _stage_record(trainer, run_training(trainer), cfg.teacher_lr, cfg.teacher_epochs)
        models = [runner.finish(trainer, [stage], {"role": "teacher", "name": "teacher", "variant": None,
                                                    "method": "hard", "init": cfg.teacher, "path": "teacher"})]
        teacher, device = trainer.model, trainer.args.device
    teacher.eval().requires_grad_(False)

    set_seed(cfg.seed)
    runner.pretrained = build_pretrained(cfg, data.tokenizer).to(device)  # P, as shipped (its head unused)
    general_records = []
    for spec in general_specs:
        if general_from is not None:
            model, record = _load_general(Path(general_from) / "general" / spec.name)
            if (out / record["path"]).resolve() != (Path(general_from) / record["path"]).resolve():
                shutil.copytree(Path(general_from) / record["path"], out / record["path"], dirs_exist_ok=True)
            record = {**record, "reused": True}
            say(f"general-{spec.name}: reused from an earlier run ({record['seconds']:.0f} s)")
        else:
            model, record = general_distillation(runner, spec)
        runner.general[spec.name] = model.to(device).eval()
        general_records.append(record)
    student_start = time.perf_counter()
    students, cache = _train_students(runner, teacher, device, say)
    models += students
    student_seconds = time.perf_counter() - student_start

    total = round(time.perf_counter() - start, 1)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "scale": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(),
        "data": {"source": data.source, "teacher_train": len(data.teacher_train),
                 "student_train": len(data.student_train), "dev": len(data.dev)},
        "timings": {"total_seconds": total,
                    "teacher_seconds": models[0]["train_seconds"], "teacher_reused": bool(models[0].get("reused")),
                    "general_distillation_seconds": round(sum(r["seconds"] for r in general_records), 1),
                    "general_reused": any(r.get("reused") for r in general_records),
                    "students_seconds": round(student_seconds, 1),
                    "teacher_cache_seconds": round(cache.seconds, 1) if cache else None},
        "pretrained": {"model": cfg.teacher, "fingerprint": init_fingerprint(runner.pretrained)},
        "general": general_records,
        "versions": _versions(),
        "models": models,
    }
    if main_process:
        manifest_path = write_manifest(manifest, out)
        shutil.rmtree(out / "_scratch", ignore_errors=True)
        say(f"done in {total:.0f} s; manifest: {manifest_path}")
    return manifest, main_process


def _train_students(
    runner: _Runner, teacher: Any, device: Any, say: _Progress
) -> tuple[list[dict[str, Any]], TrainingTargetCache | None]:
    """Every student of the runner's scale, before and after, against a trained, frozen teacher."""
    cfg, data = runner.cfg, runner.data
    cache, cache_spec = None, _cached_spec(cfg, teacher)
    if cfg.cache_teacher and cache_spec.keys:
        cache = TrainingTargetCache.build(teacher, data.student_train, data.collator, cache_spec,
                                   batch_size=cfg.eval_batch_size, device=device)
        say(f"teacher outputs cached once for all students: {len(cache)} examples, {', '.join(cache_spec.keys)}, "
            f"{cache.nbytes / 2**20:.0f} MB, {cache.seconds:.0f} s")
    models = [_train_student(runner, spec, variant, teacher, cache) for spec in cfg.students for variant in cfg.variants]
    return models, cache


def _select(cfg: ScaleConfig, students: Sequence[str] | None, variants: Sequence[str] | None) -> ScaleConfig:
    names = [s.name for s in cfg.students]
    if students is not None:
        unknown = sorted(set(students) - set(names))
        if unknown:
            raise ValueError(f"`students` must be a subset of {names}, got unknown {unknown}")
        cfg = cfg.replace(students=tuple(s for s in cfg.students if s.name in students))
    if variants is not None:
        if not variants or set(variants) - {"before", "after"}:
            raise ValueError(f"`variants` must be a non-empty subset of ('before', 'after'), got {variants}")
        cfg = cfg.replace(variants=tuple(v for v in ("before", "after") if v in variants))
    return cfg


def train_student_seeds(
    scale: str | ScaleConfig,
    run_dir: str | Path,
    seed: int,
    *,
    data_dir: str | Path | None = None,
    students: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrains the students of an earlier run with another seed: same teacher, same data.

    The seed sets the students' initialisation where it is random (TinyBERT-style), the order of the
    training batches and dropout; the teacher (``<run_dir>/teacher``) and the data subsets are those
    of the run. This measures run-to-run variation of "before" and "after".

    Args:
        scale: the run's scale (name or config).
        run_dir: the folder of the earlier :func:`train_pipeline` run (holds ``manifest.json``).
        seed: the students' seed.
        data_dir: SST-2 folder, as for :func:`train_pipeline`.
        students: subset of the scale's student names (default: all).
        progress: progress on stderr.

    Returns:
        The manifest written to ``<run_dir>/seeds/<seed>/manifest.json`` (its teacher entry points
        to the run's teacher).
    """
    from transformers import AutoModelForSequenceClassification, set_seed

    from .manifest import load_manifest

    cfg = _select(get_scale(scale), students, None)
    cfg = cfg.replace(students=tuple(s for s in cfg.students if s.all_seeds))
    run_dir = Path(run_dir)
    base = load_manifest(run_dir)
    out = run_dir / "seeds" / str(seed)
    out.mkdir(parents=True, exist_ok=True)
    seeded = cfg.replace(seed=seed)
    say = _Progress(f"{cfg.name}/seed {seed}", progress, True)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        data = load_pipeline_data(cfg, data_dir=data_dir)  # the run's own subsets (its seed, not this one)
        runner = _Runner(seeded, data, out, say, progress)
        device = torch.device("cuda" if torch.cuda.is_available() and not cfg.use_cpu else "cpu")
        teacher = AutoModelForSequenceClassification.from_pretrained(run_dir / "teacher").to(device)
        teacher.eval().requires_grad_(False)
        set_seed(cfg.seed)  # P as the run built it (the run's seed: a random P at smoke scale)
        runner.pretrained = build_pretrained(cfg, data.tokenizer).to(device)
        for spec in cfg.students:  # the run's general-distilled checkpoints, shared by every seed
            if _needs_general(spec):
                runner.general[spec.name] = _load_general(run_dir / "general" / spec.name)[0].to(device).eval()
        models, cache = _train_students(runner, teacher, device, say)
    finally:
        torch.set_num_threads(threads)
    teacher_entry = next(m for m in base["models"] if m["role"] == "teacher")
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "scale": cfg.name,
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": seeded.to_dict(),
        "data": base["data"],
        "timings": {"total_seconds": round(time.perf_counter() - start, 1),
                    "teacher_cache_seconds": round(cache.seconds, 1) if cache else None},
        "pretrained": base.get("pretrained"),
        "general": base.get("general", []),
        "versions": _versions(),
        "models": [{**teacher_entry, "path": os.path.relpath(run_dir / teacher_entry["path"], out)}, *models],
    }
    write_manifest(manifest, out)
    shutil.rmtree(out / "_scratch", ignore_errors=True)
    say(f"done in {manifest['timings']['total_seconds']:.0f} s")
    return manifest


def _versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _configure_logging(enabled: bool) -> None:
    package = logging.getLogger("knowledge_retention.distillation")
    if enabled and not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m knowledge_retention.distillation.sst2 --scale cpu --out runs/sst2-cpu``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", required=True, choices=["smoke", "quick", "cpu", "full"])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with train.tsv / dev.tsv")
    parser.add_argument("--students", nargs="+", default=None, help="subset of student names")
    parser.add_argument("--variants", nargs="+", default=None, choices=["before", "after"])
    parser.add_argument("--teacher-train-size", type=int, default=None)
    parser.add_argument("--student-train-size", type=int, default=None)
    parser.add_argument("--data", choices=["sst2", "synthetic", "auto"], default=None,
                        help="data source (default: the scale's; smoke uses templated sentences)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    cfg = get_scale(args.scale)
    if args.data is not None:
        cfg = cfg.replace(data=args.data)
    if args.teacher_train_size is not None:
        cfg = cfg.replace(teacher_train_size=args.teacher_train_size)
    if args.student_train_size is not None:
        cfg = cfg.replace(student_train_size=args.student_train_size)
    elif cfg.student_train_size and cfg.teacher_train_size and cfg.student_train_size > cfg.teacher_train_size:
        cfg = cfg.replace(student_train_size=cfg.teacher_train_size)
    manifest = train_pipeline(cfg, args.out, data_dir=args.data_dir, students=args.students,
                              variants=args.variants, progress=not args.quiet)
    from accelerate import PartialState

    if PartialState().is_main_process:
        summary = [{k: m[k] for k in ("name", "variant", "dev_accuracy", "train_seconds")} for m in manifest["models"]]
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
