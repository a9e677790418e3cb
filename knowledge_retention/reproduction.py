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

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PAPER_TABLE9", "evaluate_manifest", "render_table", "reproduce_sst2", "seed_summary"]

PAPER_TABLE9: dict[str, dict[str, float | None]] = {
    "distilbert": {"accuracy_before": 0.8931, "accuracy_after": 0.9227, "krs_before": 0.41, "krs_after": 0.68},
    "tinybert": {"accuracy_before": 0.8578, "accuracy_after": 0.9288, "krs_before": None, "krs_after": 0.71},
    "pkd": {"accuracy_before": None, "accuracy_after": 0.9312, "krs_before": None, "krs_after": None},
}
"""Alba & Villaverde (2025), Table 9: SST-2, BERT-base teacher, 6-layer students, α = β = 0.5
(None: not reported in the paper)."""

_DISPLAY = {"distilbert": "DistilBERT-style", "pkd": "PKD", "tinybert": "TinyBERT-style"}
RESULTS_FORMAT = "knowledge_retention.reproduction.sst2/v1"


def _say(progress: bool, start: float, message: str) -> None:
    if progress:
        print(f"[reproduce-sst2 +{time.perf_counter() - start:6.0f}s] {message}", file=sys.stderr, flush=True)


def evaluate_manifest(
    manifest: str | os.PathLike[str] | Mapping[str, Any],
    dev: Any,
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    bootstrap: int = 200,
    measure_speed: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores every student of a training run against its teacher (the paper's SST-2 setting).

    Args:
        manifest: a training run's ``manifest.json`` (or its folder, or the loaded dict).
        dev: the evaluation set, a ``datasets.Dataset`` with ``sentence`` and ``label`` columns.
        batch_size: examples per forward pass (does not change the scores).
        max_length: token limit (the training scale's, so the models see what they were trained on).
        report_dir: where to write each student's full report (:func:`knowledge_retention.report.build_report`:
            calibration, error analysis, size/latency, bootstrap intervals) as ``<name>-<variant>.json``;
            None skips the reports.
        bootstrap: bootstrap replicates of the reports' confidence intervals.
        measure_speed: measure each model's latency in the reports.
        progress: progress bars and one line per model on stderr.

    Returns:
        ``{"teacher": {...}, "students": [{...}, ...]}``: for the teacher its dev accuracy and size;
        for each student ``name``, ``variant``, ``method``, ``accuracy``, ``quality_retained``
        (student / teacher accuracy), ``krs``, ``fss``, ``aoag``, ``mean_kl``, ``top1_agreement``,
        ``parameters``, ``num_layers``, ``hidden_size``, ``train_seconds``, ``extraction``
        (:meth:`ExtractionResult.to_dict`, with the cross-layer CKA matrix) and, with ``report_dir``,
        ``report`` (the file name), ``krs_interval``, ``ece`` (teacher, student), ``verdict`` and
        ``tradeoff`` (the report's sentence).
    """
    import numpy as np

    from .diagnostics import accuracy_score, quality_retained
    from .distillation.manifest import load_manifest, pairs_from_manifest
    from .extraction import evaluate_pair

    if not isinstance(manifest, Mapping):
        manifest = load_manifest(manifest)
    models = {(m["name"], m["variant"]): m for m in manifest["models"]}
    teacher_entry = next(m for m in manifest["models"] if m["role"] == "teacher")
    start = time.perf_counter()
    labels = np.asarray(dev["label"])
    teacher_accuracy: float | None = None
    students = []
    for pair in pairs_from_manifest(manifest):
        result = evaluate_pair(
            pair["teacher"], pair["student"], dev, text_column="sentence", label_column="label",
            layers="final", pooling="cls", task="nlp", fss_method="linear_cka", aoag_method="kl",
            batch_size=batch_size, max_length=max_length, cross_layer=True, progress=progress,
            keep_arrays=report_dir is not None,
        )
        assert result.teacher_logits is not None and result.student_logits is not None
        if teacher_accuracy is None:
            teacher_accuracy = accuracy_score(labels, result.teacher_logits.argmax(axis=1))
        accuracy = accuracy_score(labels, result.student_logits.argmax(axis=1))
        entry = models[(pair["name"], pair["variant"])]
        row = {
            "name": pair["name"],
            "variant": pair["variant"],
            "method": pair["method"],
            "accuracy": accuracy,
            "quality_retained": quality_retained(accuracy, teacher_accuracy),
            "krs": result.krs,
            "fss": result.fss,
            "aoag": result.aoag,
            "mean_kl": result.mean_kl,
            "top1_agreement": result.top1_agreement,
            "parameters": entry.get("parameters"),
            "num_layers": entry.get("num_layers"),
            "hidden_size": entry.get("hidden_size"),
            "train_seconds": entry.get("train_seconds"),
            "extraction": result.to_dict(),
        }
        if report_dir is not None:
            row.update(_write_student_report(result, pair, dev, Path(report_dir), bootstrap=bootstrap,
                                             measure_speed=measure_speed, batch_size=batch_size))
        students.append(row)
        _say(progress, start, f"{pair['name']}-{pair['variant']}: accuracy {accuracy:.4f}, KRS {result.krs:.4f} "
                              f"(FSS {result.fss:.4f}, AOAg {result.aoag:.4f})")
    teacher = {
        "accuracy": teacher_accuracy,
        "parameters": teacher_entry.get("parameters"),
        "num_layers": teacher_entry.get("num_layers"),
        "hidden_size": teacher_entry.get("hidden_size"),
        "train_seconds": teacher_entry.get("train_seconds"),
        "init": teacher_entry.get("init"),
    }
    return {"teacher": teacher, "students": students}


def _relative_to(value: Any, out: Path) -> Any:
    """Absolute paths under ``out`` (the checkpoints) written relative to it: results that read the
    same on every machine."""
    root = str(out.resolve())  # once: the walk visits every number of the CKA matrices

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str) and item.startswith(root + os.sep):
            return os.path.relpath(item, root)
        return item

    return walk(value)


def _write_student_report(
    result: Any, pair: Mapping[str, Any], dev: Any, out: Path, *, bootstrap: int, measure_speed: bool, batch_size: int
) -> dict[str, Any]:
    """The report's diagnostics of one student, written as ``<out>/<name>-<variant>.json``; a summary back."""
    from .report import build_report

    report = build_report(
        result, teacher=pair["teacher"], student=pair["student"], dataset=dev, text_column="sentence",
        bootstrap=bootstrap, feature_bootstrap=min(bootstrap, 100), seed=0, top_k=5,
        measure_speed=measure_speed, batch_size=batch_size,
        options={"reproduction": {"name": pair["name"], "variant": pair["variant"], "method": pair["method"]}},
    )
    for key in ("teacher", "student"):  # absolute checkpoint paths say nothing to a reader of the results
        report["models"][key] = Path(str(report["models"][key])).name if report["models"].get(key) else None
    out.mkdir(parents=True, exist_ok=True)
    name = f"{pair['name']}-{pair['variant']}.json"
    report = _relative_to(report, out.parent)
    (out / name).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    krs_ci = ((report.get("uncertainty") or {}).get("intervals") or {}).get("krs") or {}
    calibration = report.get("calibration") or {}
    return {
        "report": f"{out.name}/{name}",
        "krs_interval": [krs_ci.get("low"), krs_ci.get("high")] if krs_ci else None,
        "ece": {k: (calibration.get(k) or {}).get("ece") for k in ("teacher", "student")},
        "verdict": (report.get("verdict") or {}).get("level"),
        "tradeoff": report.get("tradeoff_sentence"),
    }


def seed_summary(per_seed: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Means and standard deviations (ddof 1) over seeds, and the paired gains after − before.

    Args:
        per_seed: ``{seed: student rows}`` as :func:`evaluate_manifest` returns them.

    Returns:
        ``{"seeds", "per_seed": {seed: [{name, variant, accuracy, krs, fss, aoag}]}, "summary":
        [{name, variant, n, <metric>_mean, <metric>_sd}], "gains": [{name, n, accuracy_gain_mean,
        accuracy_gain_sd, krs_gain_mean, krs_gain_sd, accuracy_raised, krs_raised}]}``; ``*_raised``
        counts the seeds where distillation raised the figure.
    """
    import numpy as np

    keys = ("accuracy", "krs", "fss", "aoag")
    light = {seed: [{"name": r["name"], "variant": r["variant"], **{k: r[k] for k in keys}} for r in rows]
             for seed, rows in per_seed.items()}
    by_model: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for seed, rows in light.items():
        for row in rows:
            by_model.setdefault((row["name"], row["variant"]), {})[seed] = row

    def stats(values: list[float], prefix: str) -> dict[str, float | None]:
        arr = np.asarray(values, dtype=np.float64)
        return {f"{prefix}_mean": float(arr.mean()), f"{prefix}_sd": float(arr.std(ddof=1)) if arr.size > 1 else None}

    summary = []
    for (name, variant), model_rows in by_model.items():
        entry: dict[str, Any] = {"name": name, "variant": variant, "n": len(model_rows)}
        for key in keys:
            entry.update(stats([r[key] for r in model_rows.values()], key))
        summary.append(entry)
    gains = []
    for name in dict.fromkeys(name for name, _ in by_model):
        before, after = by_model.get((name, "before"), {}), by_model.get((name, "after"), {})
        common = sorted(set(before) & set(after))
        if not common:
            continue
        gain: dict[str, Any] = {"name": name, "n": len(common)}
        for key in ("accuracy", "krs"):
            diffs = [after[s][key] - before[s][key] for s in common]
            gain.update(stats(diffs, f"{key}_gain"))
            gain[f"{key}_raised"] = int(sum(d > 0 for d in diffs))
        gains.append(gain)
    return {"seeds": sorted(per_seed), "per_seed": {str(k): v for k, v in light.items()},
            "summary": summary, "gains": gains}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}"


def render_table(results: Mapping[str, Any]) -> str:
    """The Table-9-style Markdown of a reproduction, the paper's numbers in the columns next to ours.

    Args:
        results: what :func:`reproduce_sst2` returns (or ``results.json``).

    Returns:
        Markdown text.
    """
    teacher = results["teacher"]
    rows: dict[str, dict[str, Any]] = {}
    for row in results["students"]:
        rows.setdefault(row["name"], {})[row["variant"]] = row
    scale, data = results.get("scale", "?"), results.get("data", {})
    lines = [
        f"SST-2 reproduction, scale `{scale}`: teacher {teacher.get('init', '?')} "
        f"({teacher['num_layers']}×{teacher['hidden_size']}, {teacher['parameters'] / 1e6:.1f} M parameters), "
        f"dev accuracy {_pct(teacher['accuracy'])}; {data.get('dev', '?')} dev sentences, "
        f"{data.get('teacher_train', '?')} teacher / {data.get('student_train', '?')} student training sentences. "
        "KRS = 0.5·FSS + 0.5·AOAg (FSS: linear CKA of the final [CLS] state; AOAg: mean exp(−KL)). "
        "\"before\" = the same student initialisation fine-tuned on hard labels only. "
        "Paper: Table 9 of Alba & Villaverde (2025), BERT-base teacher, 6-layer students, all of SST-2 "
        "(— = not reported).",
        "",
        "| student | layers×width | params | accuracy before → after | paper | retained (after) "
        "| KRS before → after | paper | FSS before → after | AOAg before → after |",
        "|---|---|---:|---|---|---:|---|---|---|---|",
    ]
    for name, variants in rows.items():
        before, after = variants.get("before"), variants.get("after")
        some = after or before
        assert some is not None
        paper = PAPER_TABLE9.get(name, {})

        def field(row: Mapping[str, Any] | None, key: str, fmt: Any) -> str:
            return fmt(row[key]) if row is not None else "—"

        lines.append(
            f"| {_DISPLAY.get(name, name)} | {some['num_layers']}×{some['hidden_size']} | {some['parameters'] / 1e6:.1f} M "
            f"| {_arrow(field(before, 'accuracy', _pct), field(after, 'accuracy', _pct))} "
            f"| {_arrow(_pct(paper.get('accuracy_before')), _pct(paper.get('accuracy_after')))} "
            f"| {field(after, 'quality_retained', lambda v: f'{100 * v:.1f}%')} "
            f"| {_arrow(field(before, 'krs', _num), field(after, 'krs', _num))} "
            f"| {_arrow(_num(paper.get('krs_before'), 2), _num(paper.get('krs_after'), 2))} "
            f"| {_arrow(field(before, 'fss', _num), field(after, 'fss', _num))} "
            f"| {_arrow(field(before, 'aoag', _num), field(after, 'aoag', _num))} |"
        )
    diagnostics = [r for r in results["students"] if r.get("report")]
    if diagnostics:
        lines += [
            "",
            "From each student's report (`models/<student>-<variant>.json`): 95% bootstrap interval of KRS, "
            "calibration (ECE, 15 bins) and the verdict.",
            "",
            "| student | KRS [95% CI] | ECE teacher / student | verdict |",
            "|---|---|---|---|",
        ]
        for row in diagnostics:
            ci = row.get("krs_interval") or [None, None]
            interval = f" [{_num(ci[0])}, {_num(ci[1])}]" if None not in ci else ""
            ece = row.get("ece") or {}
            lines.append(
                f"| {_DISPLAY.get(row['name'], row['name'])} {row['variant']} | {_num(row['krs'])}{interval} "
                f"| {_num(ece.get('teacher'))} / {_num(ece.get('student'))} | {row.get('verdict') or '—'} |"
            )
    seeds = results.get("seeds")
    if seeds and len(seeds["seeds"]) > 1:
        lines += _seed_table(seeds)
    return "\n".join(lines) + "\n"


def _seed_table(seeds: Mapping[str, Any]) -> list[str]:
    def pm(mean: float, sd: float | None, scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * mean:.{digits}f}" + ("" if sd is None else f" ± {scale * sd:.{digits}f}")

    summary = {(r["name"], r["variant"]): r for r in seeds["summary"]}
    lines = [
        "",
        f"Across {len(seeds['seeds'])} student seeds ({', '.join(map(str, seeds['seeds']))}; same teacher, same data; "
        "the seed sets random initialisation, batch order and dropout): mean ± standard deviation, and the "
        "paired gain after − before.",
        "",
        "| student | accuracy before | accuracy after | accuracy gain (points) | KRS before | KRS after | KRS gain "
        "| seeds where distillation raised accuracy / KRS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for gain in seeds["gains"]:
        b, a = summary[(gain["name"], "before")], summary[(gain["name"], "after")]
        lines.append(
            f"| {_DISPLAY.get(gain['name'], gain['name'])} | {pm(b['accuracy_mean'], b['accuracy_sd'], 100, 2)}% "
            f"| {pm(a['accuracy_mean'], a['accuracy_sd'], 100, 2)}% "
            f"| {pm(gain['accuracy_gain_mean'], gain['accuracy_gain_sd'], 100, 2)} "
            f"| {pm(b['krs_mean'], b['krs_sd'])} | {pm(a['krs_mean'], a['krs_sd'])} "
            f"| {pm(gain['krs_gain_mean'], gain['krs_gain_sd'])} "
            f"| {gain['accuracy_raised']} / {gain['krs_raised']} of {gain['n']} |"
        )
    return lines


def _figures(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    from .plots import plot_alpha_sensitivity_curves, plot_cross_layer_cka

    paths: dict[str, str] = {}
    curves = {f"{r['name']}-{r['variant']}": (r["fss"], r["aoag"]) for r in results["students"]}
    paths["alpha_sensitivity"] = str(plot_alpha_sensitivity_curves(
        curves, out / "alpha_sensitivity.png", alpha=0.5,
        title="SST-2: KRS(α) per student, dashed = before distillation, solid = after"))
    for row in results["students"]:
        ext = row["extraction"]
        cross = ext.get("cross_layer_cka")
        if cross is None:
            continue
        label = f"{row['name']}-{row['variant']}"
        paths[f"cka_{label}"] = str(plot_cross_layer_cka(
            cross["matrix"], out / f"cka_{label}.png",
            teacher_layers=cross["teacher_layers"], student_layers=cross["student_layers"],
            pairs=[(p["teacher"], p["student"]) for p in ext.get("layer_pairs", [])],
            title=f"Cross-layer linear CKA, teacher vs {_DISPLAY.get(row['name'], row['name'])} ({row['variant']})"))
    return paths


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
    measure_speed: bool = True,
    progress: bool = True,
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
        extra_seeds: more seeds for the students (same teacher, same data;
            :func:`~knowledge_retention.distillation.sst2.train_student_seeds`), to measure run-to-run
            variation: ``results["seeds"]`` and a table of means and standard deviations.
        batch_size: evaluation batch size.
        bootstrap: bootstrap replicates of each student's report (``models/<name>-<variant>.json``).
        measure_speed: measure latency in those reports.
        progress: progress on stderr.

    Returns:
        The content of ``results.json``: ``scale``, ``data``, ``teacher``, ``students`` (see
        :func:`evaluate_manifest`), ``paper`` (:data:`PAPER_TABLE9`), ``seeds`` (with
        ``extra_seeds``), ``timings``, ``versions`` and ``files`` (paths of what was written).
    """
    from .distillation.manifest import load_manifest
    from .distillation.scales import get_scale
    from .distillation.sst2 import load_pipeline_splits, train_pipeline, train_student_seeds

    cfg = get_scale(scale)
    extra_seeds = [int(seed) for seed in extra_seeds if int(seed) != cfg.seed]
    out = Path(output_dir)
    work = Path(work_dir) if work_dir is not None else out / "checkpoints"
    start = time.perf_counter()
    if skip_training:
        if not (work / "manifest.json").is_file():
            raise ValueError(f"`skip_training`: no earlier run in {str(work)!r} (manifest.json missing); train first")
        manifest = load_manifest(work)
    else:
        train_pipeline(cfg, work, data_dir=data_dir, students=students, progress=progress)
        manifest = load_manifest(work)
    train_seconds = time.perf_counter() - start
    _, _, dev, source = load_pipeline_splits(cfg, data_dir=data_dir)
    _say(progress, start, f"evaluating {sum(m['role'] == 'student' for m in manifest['models'])} students on "
                          f"{len(dev)} dev sentences ({source})")
    evaluation = evaluate_manifest(manifest, dev, batch_size=batch_size, max_length=cfg.max_length,
                                   report_dir=out / "models", bootstrap=bootstrap, measure_speed=measure_speed,
                                   progress=progress)
    evaluation["teacher"]["init"] = cfg.teacher
    per_seed = {cfg.seed: evaluation["students"]}
    seed_training: dict[str, Any] = {}
    seed_train_seconds = 0.0  # spent training here (not re-used), kept out of the evaluation time
    for seed in extra_seeds:
        seed_dir = work / "seeds" / str(seed)
        if not skip_training or not (seed_dir / "manifest.json").is_file():
            tick = time.perf_counter()
            train_student_seeds(cfg, work, seed, data_dir=data_dir, students=students, progress=progress)
            seed_train_seconds += time.perf_counter() - tick
        seed_manifest = load_manifest(seed_dir)
        seed_training[str(seed)] = seed_manifest.get("timings", {}).get("total_seconds")
        _say(progress, start, f"seed {seed}: evaluating its students")
        per_seed[seed] = evaluate_manifest(seed_manifest, dev, batch_size=batch_size, max_length=cfg.max_length,
                                           progress=progress)["students"]
    import torch
    import transformers

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "scale": cfg.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"knowledge-retention reproduce-sst2 --scale {cfg.name}",
        "setting": {"alpha": 0.5, "beta": 0.5, "fss": "linear_cka, final hidden state, cls pooling",
                    "aoag": "kl: mean exp(-KL(teacher || student)), T = 1", "max_length": cfg.max_length},
        "data": {**manifest.get("data", {}), "dev": len(dev), "source": source},
        **evaluation,
        "paper": PAPER_TABLE9,
        **({"seeds": seed_summary(per_seed)} if extra_seeds else {}),
        "timings": {"training_seconds": round(train_seconds, 1) if not skip_training else None,
                    "training_manifest_seconds": manifest.get("timings", {}).get("total_seconds"),
                    "seed_training_seconds": seed_training or None,
                    "evaluation_seconds": round(time.perf_counter() - start - train_seconds - seed_train_seconds, 1)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    results = _relative_to(results, out)
    out.mkdir(parents=True, exist_ok=True)
    files = _figures(results, out)
    (out / "table.md").write_text(render_table(results), encoding="utf-8")
    files["table"] = str(out / "table.md")
    files["results"] = str(out / "results.json")
    results["files"] = {k: os.path.relpath(v, out) for k, v in files.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _say(progress, start, f"done: {out / 'table.md'}")
    return results
