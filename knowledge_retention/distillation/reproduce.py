"""Reproduction of the SST-2 experiments (Table 9 of Alba & Villaverde, 2025): KRS and accuracy of
each student before and after distillation.

One call, :func:`reproduce_sst2`, runs the whole experiment at a scale:

1. **train** (:func:`knowledge_retention.distillation.sst2.train_pipeline`): the teacher, then each
   student twice from the same initialisation - "before" = fine-tuned on the hard labels only,
   "after" = distilled (DistilBERT-style soft targets + cosine on hidden states, PKD, TinyBERT);
2. **evaluate** (:func:`evaluate_manifest`): every student against the teacher on the scale's SST-2
   dev sentences with :func:`knowledge_retention.extraction.evaluate_pair` - the paper's setting:
   α = β = 0.5, FSS = linear CKA of the final hidden state ([CLS] pooling), AOAg = mean exp(−KL)
   of the softmax outputs - plus accuracy against the gold labels and ``quality_retained``;
3. **tabulate**: ``results.json`` (everything, per model), ``table.md`` (Table-9 style, with the
   paper's numbers next to ours), ``alpha_sensitivity.png`` (one line per student, dashed before,
   solid after) and one cross-layer CKA heatmap per student (``cka_<student>-<variant>.png``).

Nothing here computes a score itself: the maths is in :mod:`knowledge_retention.score`,
:mod:`~knowledge_retention.similarity`, :mod:`~knowledge_retention.agreement` and
:mod:`~knowledge_retention.diagnostics`.

Scales (see :mod:`knowledge_retention.distillation.scales`): ``smoke`` (tiny random models,
templated sentences, under a minute - what CI runs), ``quick`` (MiniLM teacher, 4k sentences),
``cpu`` (MiniLM teacher, 24k sentences, tens of minutes on 2 cores), ``full`` (bert-base-uncased
from the Hub, all 67k sentences, 3 epochs - GPUs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .sst2_common import _DISPLAY, PAPER_TABLE9, RESULTS_FORMAT, _say  # noqa: F401
from .sst2_evaluation import _relative_to, evaluate_manifest, pooled_paired_bootstrap, seed_summary
from .sst2_plan import full_scale_plan, render_plan
from .sst2_tables import _krs_during_training, render_table, tabulate

__all__ = [
    "PAPER_TABLE9", "evaluate_manifest", "full_scale_plan", "pooled_paired_bootstrap", "render_plan", "render_table",
    "reproduce_sst2", "seed_summary", "tabulate",
]


def _public_source(source: Any) -> Any:
    """A local data folder named without the machine's path (results read the same everywhere)."""
    if isinstance(source, str) and os.path.isabs(source):
        return f"local GLUE SST-2 TSV folder ({Path(source).name})"
    return source


def _train_seed_job(scale: str, work: str, seed: int, data_dir: str | None, students: list[str] | None,
                    progress: bool) -> float:
    """One extra seed in a worker process (see ``jobs``); returns its wall seconds."""
    from .sst2 import train_student_seeds

    tick = time.perf_counter()
    train_student_seeds(scale, work, seed, data_dir=data_dir, students=students, progress=progress)
    return time.perf_counter() - tick


def _departures(cfg: Any) -> list[dict[str, str]]:
    """What this scale does differently from the paper's SST-2 protocol (from the scale's own config)."""
    if cfg.name == "full":
        return []
    specs = {spec.name: spec for spec in cfg.students}
    out = [
        {"what": "teacher", "paper": "bert-base-uncased (12 x 768) fine-tuned",
         "here": f"{cfg.teacher} fine-tuned ({cfg.teacher_train_size or 'all'} sentences, {cfg.teacher_epochs:g} epoch(s))",
         "why": "no Hub and no BERT weights here; the pretrained model P is the one checkpoint that installs offline"},
        {"what": "training data and epochs", "paper": "all 67,349 SST-2 sentences, 3 epochs, batch 32",
         "here": f"students: {cfg.student_train_size or 'all'} sentences, {cfg.student_epochs:g} epoch(s), batch "
                 f"{cfg.batch_size}; {cfg.max_length} tokens at most",
         "why": "the 90-minute budget on 2 CPU cores (timings in `timings`)"},
        {"what": "FSS", "paper": "cosine similarity of the final hidden states, normalised to [0, 1]",
         "here": "primary `fss`/`krs`: linear CKA of the final [CLS] states (defined for every width); "
                 "`fss_cosine`/`krs_cosine`: the mean cosine, a negative mean clipped to 0",
         "why": "the cosine needs equal widths (TinyBERT's 312 is not the teacher's 384)"},
    ]
    if "distilbert" in specs:
        spec = specs["distilbert"]
        out.append({"what": "DistilBERT-style student", "paper": "distilbert-base-uncased: 6 layers of BERT, general-"
                    "distilled (MLM + soft targets + cosine) on Wikipedia/BookCorpus",
                    "here": f"{spec.num_layers} layers of P (every other), no general distillation stage",
                    "why": "CPU budget; P's layers are its pretrained starting point, as BERT's were DistilBERT's"})
    if "tinybert" in specs:
        spec = specs["tinybert"]
        out.append({"what": "TinyBERT-style student", "paper": "TinyBERT general distillation on Wikipedia (3 epochs), "
                    "task distillation with data augmentation, intermediate stage 10 epochs",
                    "here": f"{spec.num_layers} x {spec.hidden_size} (FFN {spec.intermediate_size}, {spec.num_heads} heads) "
                            f"general-distilled from P on {cfg.general_train_size or 'all'} "
                            f"{'templated' if cfg.data == 'synthetic' else 'SST-2 training'} sentences "
                            f"({cfg.general_epochs:g} epoch, lr {cfg.general_lr:g}); no augmentation; intermediate "
                            f"stage {cfg.tinybert_intermediate_epochs:g} epoch(s), lr {cfg.tinybert_intermediate_lr:g}; "
                            "the hidden-state projection is learned afresh in each stage",
                    "why": "CPU budget; no Wikipedia here"})
    if cfg.num_threads:
        out.append({"what": "threads", "paper": "-", "here": f"{cfg.num_threads} torch thread(s) per process; extra "
                    "seeds trained in parallel processes", "why": "on 2 cores shared with other jobs, a process with "
                    "2 threads stalls whenever a neighbour takes one core (every op waits for the slower thread)"})
    return out


def reproduce_sst2(
    scale: str,
    output_dir: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    data_dir: str | Path | None = None,
    skip_training: bool = False,
    students: Sequence[str] | None = None,
    extra_seeds: Sequence[int] = (),
    batch_size: int = 64,
    bootstrap: int = 200,
    paired_bootstrap: int = 1000,
    measure_speed: bool = True,
    progress: bool = True,
    jobs: int = 1,
    teacher_from: str | Path | None = None,
    general_from: str | Path | None = None,
    krs_every: int | None = None,
) -> dict[str, Any]:
    """Trains, distils, evaluates and tabulates the SST-2 experiment at ``scale``.

    Args:
        scale: ``"smoke"``, ``"quick"``, ``"cpu"`` or ``"full"`` (see the module docstring).
        output_dir: where ``results.json``, ``table.md`` and the figures are written.
        work_dir: where the trained models go (default ``<output_dir>/checkpoints``, git-ignored).
        data_dir: folder with the GLUE SST-2 ``train.tsv``/``dev.tsv`` (default: ``$SST2_DIR``, then
            ``../shared/data/sst2``, then ``load_dataset("glue", "sst2")`` from the Hub).
        skip_training: re-evaluate the models of an earlier run in ``work_dir`` (extra seeds that it
            lacks are trained).
        students: subset of the scale's students (default: all).
        extra_seeds: more seeds for the students (same teacher, same data, same general-distilled
            TinyBERT; :func:`~knowledge_retention.distillation.sst2.train_student_seeds`):
            ``results["seeds"]`` (means, standard deviations and the pooled paired intervals).
        batch_size: evaluation batch size.
        bootstrap: bootstrap replicates of each student's report (``models/<name>-<variant>.json``).
        paired_bootstrap: replicates of the pooled paired bootstrap of the gains (with extra seeds).
        measure_speed: measure latency in those reports.
        progress: progress on stderr.
        jobs: worker processes for the extra seeds (they run while the first seed is evaluated).
        teacher_from: an earlier run folder whose teacher (same settings) is reused instead of trained.
        general_from: an earlier run folder (or :func:`~knowledge_retention.distillation.sst2.train_general`
            output) whose general-distilled TinyBERT is reused.
        krs_every: log KRS during the first seed's student trainings every that many steps (and at the
            start) with :class:`~knowledge_retention.KRSCallback` in the reproduction's own trainer
            (``results["krs_during_training"]``, figure ``krs_during_training.png``); None: not logged.

    Returns:
        The content of ``results.json``: ``scale``, ``data``, ``teacher``, ``students`` (see
        :func:`evaluate_manifest`), ``general_distillation``, ``paper`` (:data:`PAPER_TABLE9`),
        ``seeds`` (with ``extra_seeds``), ``departures`` (from the paper's protocol), ``timings``
        (seconds per stage), ``versions`` and ``files`` (paths of what was written).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .manifest import load_manifest
    from .scales import get_scale
    from .sst2 import load_pipeline_splits, train_pipeline

    cfg = get_scale(scale)
    if krs_every is not None:
        if isinstance(krs_every, bool) or not isinstance(krs_every, int) or krs_every < 1:
            raise ValueError(f"`krs_every` must be an int >= 1 (training steps), got {krs_every!r}")
        cfg = cfg.replace(krs_eval_steps=krs_every)
    extra_seeds = [int(seed) for seed in extra_seeds if int(seed) != cfg.seed]
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be an int >= 1, got {jobs!r}")
    out = Path(output_dir)
    work = Path(work_dir) if work_dir is not None else out / "checkpoints"
    start = time.perf_counter()
    if skip_training:
        if not (work / "manifest.json").is_file():
            raise ValueError(f"`skip_training`: no earlier run in {str(work)!r} (manifest.json missing); train first")
        manifest = load_manifest(work)
    else:
        train_pipeline(cfg, work, data_dir=data_dir, students=students, progress=progress,
                       teacher_from=teacher_from, general_from=general_from)
        manifest = load_manifest(work)
    train_seconds = time.perf_counter() - start
    todo = [seed for seed in extra_seeds if not skip_training or not (work / "seeds" / str(seed) / "manifest.json").is_file()]
    pool, futures = None, {}
    seeds_start = time.perf_counter()
    if todo:
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn")) if jobs > 1 else None
        if pool is not None:
            futures = {seed: pool.submit(_train_seed_job, cfg.name if scale == cfg.name else scale, str(work), seed,
                                         None if data_dir is None else str(data_dir),
                                         None if students is None else list(students), progress)
                       for seed in todo}
            _say(progress, start, f"training seeds {todo} in {min(jobs, len(todo))} worker process(es)")
    _, _, dev, source = load_pipeline_splits(cfg, data_dir=data_dir)
    _say(progress, start, f"evaluating {sum(m['role'] == 'student' for m in manifest['models'])} students on "
                          f"{len(dev)} dev sentences ({source})")
    eval_start = time.perf_counter()
    evaluation = evaluate_manifest(manifest, dev, batch_size=batch_size, max_length=cfg.max_length,
                                   report_dir=out / "models", bootstrap=bootstrap, measure_speed=measure_speed,
                                   progress=progress)
    eval_seconds = time.perf_counter() - eval_start
    labels = evaluation.pop("labels")
    arrays = {cfg.seed: evaluation.pop("arrays")}
    evaluation["teacher"]["init"] = cfg.teacher
    per_seed = {cfg.seed: evaluation["students"]}
    seed_training: dict[str, Any] = {}
    for seed in extra_seeds:
        if seed in futures:
            futures[seed].result()
        elif seed in todo:
            _train_seed_job(scale, str(work), seed, None if data_dir is None else str(data_dir),
                            None if students is None else list(students), progress)
    seeds_wall = time.perf_counter() - seeds_start if todo else 0.0
    if pool is not None:
        pool.shutdown()
    for seed in extra_seeds:
        seed_manifest = load_manifest(work / "seeds" / str(seed))
        seed_training[str(seed)] = seed_manifest.get("timings", {}).get("total_seconds")
        _say(progress, start, f"seed {seed}: evaluating its students")
        tick = time.perf_counter()
        seed_eval = evaluate_manifest(seed_manifest, dev, batch_size=batch_size, max_length=cfg.max_length,
                                      progress=progress)
        eval_seconds += time.perf_counter() - tick
        arrays[seed] = seed_eval.pop("arrays")
        seed_eval.pop("labels")
        per_seed[seed] = seed_eval["students"]
    seeds = None
    bootstrap_seconds = None
    if extra_seeds:
        tick = time.perf_counter()
        seeds = seed_summary(per_seed)
        seeds["paired_bootstrap"] = pooled_paired_bootstrap(arrays, labels, n_resamples=paired_bootstrap, seed=0)
        bootstrap_seconds = round(time.perf_counter() - tick, 1)
        _say(progress, start, f"pooled paired bootstrap ({paired_bootstrap} replicates) in {bootstrap_seconds:.0f} s")
    results = _assemble(cfg, manifest, evaluation, dev, source, extra_seeds=extra_seeds, jobs=jobs, krs_every=krs_every,
                        seeds=seeds, skip_training=skip_training, todo=todo,
                        seconds={"train": train_seconds, "seeds_wall": seeds_wall, "eval": eval_seconds,
                                 "bootstrap": bootstrap_seconds, "wall": time.perf_counter() - start},
                        seed_training=seed_training)
    results = tabulate(_relative_to(results, out), out)
    _say(progress, start, f"done: {out / 'table.md'}")
    return results


def _assemble(cfg: Any, manifest: Mapping[str, Any], evaluation: dict[str, Any], dev: Any, source: Any, *,
              extra_seeds: Sequence[int], jobs: int, krs_every: int | None, seeds: dict[str, Any] | None,
              skip_training: bool, todo: Sequence[int], seconds: Mapping[str, Any],
              seed_training: dict[str, Any]) -> dict[str, Any]:
    """The content of ``results.json`` (before tabulation) from the run's parts."""
    during = _krs_during_training(manifest)
    import torch
    import transformers

    mt = manifest.get("timings", {})
    wall = seconds["wall"]
    earlier = sum(float(mt.get(k) or 0.0) for k, reused in (("teacher_seconds", "teacher_reused"),
                                                            ("general_distillation_seconds", "general_reused"))
                  if mt.get(reused))
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "scale": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"knowledge-retention reproduce-sst2 --scale {cfg.name}"
                   + (f" --extra-seeds {' '.join(map(str, extra_seeds))}" if extra_seeds else "")
                   + (f" --jobs {jobs}" if jobs > 1 else "")
                   + (f" --krs-every {krs_every}" if krs_every else ""),
        "protocol": "students start from the pretrained model P (the teacher before fine-tuning), never from the "
                    "fine-tuned teacher, except the ablation row (init_from = teacher); before = that start "
                    "fine-tuned on hard labels, after = the method's task distillation; same data, epochs and seed",
        "setting": {"alpha": 0.5, "beta": 0.5, "fss": "linear_cka, final hidden state, cls pooling",
                    "fss_cosine": "mean cosine of the final [CLS] states (None where widths differ); "
                                  "krs_cosine = 0.5 * max(0, fss_cosine) + 0.5 * aoag",
                    "aoag": "kl: mean exp(-KL(teacher || student)), T = 1", "max_length": cfg.max_length},
        "data": {**manifest.get("data", {}), "dev": len(dev), "source": _public_source(source)},
        **evaluation,
        "pretrained": manifest.get("pretrained"),
        "general_distillation": [{**g, "corpus": _public_source(g.get("corpus"))} for g in manifest.get("general", [])],
        "paper": PAPER_TABLE9,
        **({"seeds": seeds} if seeds else {}),
        **({"krs_during_training": during} if during else {}),
        "departures": _departures(cfg),
        "timings": {
            "teacher_seconds": mt.get("teacher_seconds"),
            "teacher_reused": mt.get("teacher_reused"),
            "general_distillation_seconds": mt.get("general_distillation_seconds"),
            "general_reused": mt.get("general_reused"),
            "first_seed_students_seconds": mt.get("students_seconds"),
            "teacher_cache_seconds": mt.get("teacher_cache_seconds"),
            "training_seconds": round(seconds["train"], 1) if not skip_training else None,
            "training_manifest_seconds": mt.get("total_seconds"),
            "seed_training_seconds": seed_training or None,
            "seed_training_wall_seconds": round(seconds["seeds_wall"], 1) if todo else None,
            "parallel_jobs": jobs,
            "evaluation_seconds": round(seconds["eval"], 1),
            "paired_bootstrap_seconds": seconds["bootstrap"],
            "wall_seconds": round(wall, 1),
            # what one uninterrupted run costs: this call plus the stages it reused from earlier calls
            "pipeline_seconds": round(wall + earlier, 1) if not skip_training else None,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    return results
