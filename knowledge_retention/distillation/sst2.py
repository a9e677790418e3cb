"""SST-2 training pipeline: teacher, then each student "before" (hard labels) and "after" (distilled).

Run it as::

    python -m knowledge_retention.distillation.sst2 --scale smoke --out runs/smoke   # < 1 min, CPU
    python -m knowledge_retention.distillation.sst2 --scale cpu --out runs/sst2-cpu  # ~20-40 min, 2 cores
    accelerate launch -m knowledge_retention.distillation.sst2 --scale full --out runs/sst2-full  # GPUs, Hub

It writes ``teacher/``, ``students/<name>-<variant>/`` (model, tokenizer, ``run_config.json``) and
``manifest.json``; it does not compute KRS (see :mod:`.manifest` for the evaluation boundary).
"""

from __future__ import annotations

import argparse
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
from .students import every_other_layer_student, lower_layers_student, narrow_student, student_config
from .targets import TargetSpec, TeacherCache
from .trainer import DistillationTrainer, plan_targets, recipe_for

__all__ = [
    "PipelineData", "build_student", "build_teacher", "load_pipeline_data", "load_pipeline_splits", "train_pipeline",
    "train_student_seeds",
]

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


class _Progress:
    def __init__(self, scale: str, enabled: bool, main_process: bool):
        self.scale, self.enabled, self.start = scale, enabled and main_process, time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[sst2:{self.scale} +{time.perf_counter() - self.start:6.0f}s] {message}", file=sys.stderr, flush=True)


def load_pipeline_splits(cfg: ScaleConfig, *, data_dir: str | Path | None = None) -> tuple[Any, Any, Any, str]:
    """The raw (untokenised) ``sentence``/``label`` splits a scale trains and evaluates on.

    Returns ``(teacher_train, student_train, dev, source)``. The student training set is the first
    ``student_train_size`` sentences of the teacher's (same shuffle), so students are distilled on
    data the teacher was trained on. The evaluation step reads the same ``dev`` texts.
    """
    use_sst2 = cfg.data == "sst2" or (cfg.data == "auto" and sst2_data.find_sst2_dir(data_dir) is not None)
    if use_sst2:
        train, dev = sst2_data.load_sst2("train", data_dir=data_dir), sst2_data.load_sst2("validation", data_dir=data_dir)
        source = str(sst2_data.find_sst2_dir(data_dir) or "glue/sst2 (Hub)")
    else:
        size = (cfg.teacher_train_size or 512) + (cfg.dev_size or 128)
        pool = sst2_data.synthetic_sentiment(size, seed=cfg.seed)
        train, dev = pool.select(range(size - (cfg.dev_size or 128))), pool.select(range(size - (cfg.dev_size or 128), size))
        source = "synthetic"
    teacher_train = sst2_data.subset(train, cfg.teacher_train_size, seed=cfg.seed)
    student_size = cfg.student_train_size or len(teacher_train)
    if student_size > len(teacher_train):
        raise ValueError(
            f"`student_train_size` ({student_size}) must not exceed the teacher's training set ({len(teacher_train)})"
        )
    student_train = teacher_train.select(range(student_size))
    dev = sst2_data.subset(dev, cfg.dev_size, seed=cfg.seed)
    return teacher_train, student_train, dev, source


def load_pipeline_data(cfg: ScaleConfig, *, data_dir: str | Path | None = None) -> PipelineData:
    """Load, subset and tokenise the splits a scale needs (see :func:`load_pipeline_splits`)."""
    tokenizer = load_tokenizer()
    teacher_train, student_train, dev, source = load_pipeline_splits(cfg, data_dir=data_dir)

    def tok(ds: Any) -> Any:
        return sst2_data.tokenize_dataset(ds, tokenizer, max_length=cfg.max_length)

    return PipelineData(
        tokenizer, sst2_data.make_collator(tokenizer), tok(teacher_train), tok(student_train), tok(dev), source
    )


def build_teacher(cfg: ScaleConfig, tokenizer: Any) -> Any:
    """The untrained teacher of a scale: tiny random BERT, MiniLM + new head, or bert-base-uncased."""
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


def build_student(spec: StudentSpec, teacher: Any, *, seed: int) -> Any:
    """A fresh student for ``spec`` (same init for its "before" and "after" runs)."""
    from transformers import set_seed

    set_seed(seed)
    if spec.init == "every_other":
        return every_other_layer_student(teacher, spec.num_layers)
    if spec.init == "lower":
        return lower_layers_student(teacher, spec.num_layers)
    if spec.init == "narrow":
        if None in (spec.hidden_size, spec.intermediate_size, spec.num_heads):
            raise ValueError(f"a narrow student needs hidden_size, intermediate_size and num_heads, got {spec}")
        assert spec.hidden_size and spec.intermediate_size and spec.num_heads
        return narrow_student(
            teacher.config, spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.num_heads, seed=seed
        ).to(next(teacher.parameters()).device)
    raise ValueError(f"`spec.init` must be 'every_other', 'lower' or 'narrow', got {spec.init!r}")


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
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else bool(
            torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        )

    def trainer(
        self, model: Any, train: Any, *, lr: float, epochs: float, run: str, grouped: bool | None = None, **kwargs: Any
    ) -> Any:
        from transformers import PrinterCallback

        cfg = self.cfg
        extra = {"ddp_find_unused_parameters": True} if kwargs.get("stage") == "intermediate" else None
        args = make_training_args(
            self.out_dir / "_scratch" / run, learning_rate=lr, epochs=epochs, batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
            logging_steps=cfg.logging_steps, use_cpu=cfg.use_cpu, bf16=self.bf16,
            group_by_length=cfg.group_by_length if grouped is None else grouped, progress=self.show, extra=extra,
        )
        trainer = DistillationTrainer(
            model, args, train_dataset=train, data_collator=self.data.collator,
            processing_class=self.data.tokenizer, **kwargs,
        )
        if not self.show:
            trainer.remove_callback(PrinterCallback)
        return trainer

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


def _train_student(
    runner: _Runner, spec: StudentSpec, variant: str, teacher: Any, cache: TeacherCache | None
) -> dict[str, Any]:
    cfg = runner.cfg
    lr, epochs = spec.learning_rate or cfg.student_lr, spec.epochs or cfg.student_epochs
    student = build_student(spec, teacher, seed=cfg.seed)
    run = f"{spec.name}-{variant}"
    runner.progress(f"{run}: training ({spec.init} init, {spec.num_layers} layers, "
                    f"{'hard labels' if variant == 'before' else spec.method})")
    stages = []
    common: dict[str, Any] = {"lr": lr, "epochs": epochs}
    if variant == "before":
        trainer = runner.trainer(student, runner.data.student_train, run=run, method="hard", **common)
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
            teacher_cache=cache, cache_teacher_outputs=cfg.cache_teacher, **shared, **common,
        )
        stages.append(_stage_record(trainer, run_training(trainer), lr, epochs))
    entry = {
        "role": "student", "name": spec.name, "variant": variant,
        "method": "hard" if variant == "before" else spec.method,
        "init": spec.init, "path": f"students/{run}", "layer_map": spec.layer_map,
    }
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
        manifest, written = _run(cfg, Path(out_dir), data_dir=data_dir, progress=progress)
    finally:
        torch.set_num_threads(threads)
    if evaluate_fn is not None and written:
        return {**manifest, "evaluation": evaluate_fn(Path(out_dir) / MANIFEST)}
    return manifest


def _run(
    cfg: ScaleConfig, out: Path, *, data_dir: str | Path | None, progress: bool
) -> tuple[dict[str, Any], bool]:
    from accelerate import PartialState
    from transformers import set_seed

    out.mkdir(parents=True, exist_ok=True)
    main_process = PartialState().is_main_process
    say = _Progress(cfg.name, progress, main_process)
    _configure_logging(progress and main_process)
    start = time.perf_counter()

    set_seed(cfg.seed)
    data = load_pipeline_data(cfg, data_dir=data_dir)
    say(f"data: {data.source}; teacher train {len(data.teacher_train)}, student train {len(data.student_train)}, "
        f"dev {len(data.dev)}")
    runner = _Runner(cfg, data, out, say, progress and main_process)

    set_seed(cfg.seed)
    teacher = build_teacher(cfg, data.tokenizer)
    say(f"teacher: fine-tuning {cfg.teacher} ({cfg.teacher_epochs} epoch(s), lr {cfg.teacher_lr})")
    grouped = cfg.group_by_length if cfg.teacher_group_by_length is None else cfg.teacher_group_by_length
    trainer = runner.trainer(teacher, data.teacher_train, run="teacher", lr=cfg.teacher_lr,
                             epochs=cfg.teacher_epochs, method="hard", grouped=grouped)
    stage = _stage_record(trainer, run_training(trainer), cfg.teacher_lr, cfg.teacher_epochs)
    models = [runner.finish(trainer, [stage], {"role": "teacher", "name": "teacher", "variant": None,
                                                "method": "hard", "init": cfg.teacher, "path": "teacher"})]
    teacher = trainer.model
    teacher.eval().requires_grad_(False)

    students, cache = _train_students(runner, teacher, trainer.args.device, say)
    models += students

    total = round(time.perf_counter() - start, 1)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "scale": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(),
        "data": {"source": data.source, "teacher_train": len(data.teacher_train),
                 "student_train": len(data.student_train), "dev": len(data.dev)},
        "timings": {"total_seconds": total,
                    "teacher_cache_seconds": round(cache.seconds, 1) if cache else None},
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
) -> tuple[list[dict[str, Any]], TeacherCache | None]:
    """Every student of the runner's scale, before and after, against a trained, frozen teacher."""
    cfg, data = runner.cfg, runner.data
    cache, cache_spec = None, _cached_spec(cfg, teacher)
    if cfg.cache_teacher and cache_spec.keys:
        cache = TeacherCache.build(teacher, data.student_train, data.collator, cache_spec,
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
    from transformers import AutoModelForSequenceClassification

    from .manifest import load_manifest

    cfg = _select(get_scale(scale), students, None)
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
