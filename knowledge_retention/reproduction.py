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

__all__ = [
    "PAPER_TABLE9", "evaluate_manifest", "full_scale_plan", "pooled_paired_bootstrap", "render_plan", "render_table",
    "reproduce_sst2", "seed_summary", "tabulate",
]

PAPER_TABLE9: dict[str, dict[str, float | None]] = {
    "distilbert": {"accuracy_before": 0.8931, "accuracy_after": 0.9227, "krs_before": 0.41, "krs_after": 0.68},
    "tinybert": {"accuracy_before": 0.8578, "accuracy_after": 0.9288, "krs_before": None, "krs_after": 0.71},
    "pkd": {"accuracy_before": None, "accuracy_after": 0.9312, "krs_before": None, "krs_after": None},
}
"""Alba & Villaverde (2025), Table 9: SST-2, BERT-base teacher, 6-layer students, α = β = 0.5
(None: not reported in the paper)."""

_DISPLAY = {"distilbert": "DistilBERT-style", "pkd": "PKD", "tinybert": "TinyBERT-style",
            "distilbert_teacher_init": "DistilBERT-style, teacher init (ablation)"}
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
        ``tradeoff`` (the report's sentence). Each student row also carries ``init_from``,
        ``init_fingerprint``, ``fss_cosine`` (the paper's NLP FSS: mean cosine of the final [CLS]
        states, :func:`knowledge_retention.similarity.mean_cosine_similarity`; None where the widths
        differ) and ``krs_cosine`` (0.5·max(0, fss_cosine) + 0.5·AOAg). ``"arrays"`` holds, per
        ``<name>-<variant>``, the final [CLS] features and logits of teacher and student, and
        ``"labels"`` the gold labels (in memory only; :func:`reproduce_sst2` drops them).
    """
    import numpy as np

    from .diagnostics import accuracy_score, quality_retained
    from .distillation.manifest import load_manifest, pairs_from_manifest
    from .distillation.sst2 import KRS_OPTIONS
    from .extraction import evaluate_pair
    from .score import knowledge_retention_score
    from .similarity import mean_cosine_similarity

    arrays: dict[str, dict[str, Any]] = {}

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
            pair["teacher"], pair["student"], dev, text_column="sentence", label_column="label", **KRS_OPTIONS,
            batch_size=batch_size, max_length=max_length, cross_layer=True, progress=progress,
            keep_arrays=True,
        )
        assert result.teacher_logits is not None and result.student_logits is not None
        if teacher_accuracy is None:
            teacher_accuracy = accuracy_score(labels, result.teacher_logits.argmax(axis=1))
        accuracy = accuracy_score(labels, result.student_logits.argmax(axis=1))
        entry = models[(pair["name"], pair["variant"])]
        assert result.teacher_features is not None and result.student_features is not None
        t_cls, s_cls = result.teacher_features[-1], result.student_features[-1]  # the final [CLS] states
        # the paper's NLP FSS: mean cosine of the final hidden states (defined only for equal widths);
        # the KRS built on it clips a negative mean cosine to 0, as the library's cosine FSS does
        fss_cosine = mean_cosine_similarity(t_cls, s_cls) if t_cls.shape[1] == s_cls.shape[1] else None
        krs_cosine = (None if fss_cosine is None or result.aoag is None else
                      knowledge_retention_score(max(0.0, fss_cosine), result.aoag, alpha=0.5, beta=0.5))
        arrays[f"{pair['name']}-{pair['variant']}"] = {
            "teacher_features": t_cls, "student_features": s_cls,
            "teacher_logits": result.teacher_logits, "student_logits": result.student_logits,
        }
        row = {
            "name": pair["name"],
            "variant": pair["variant"],
            "method": pair["method"],
            "init_from": entry.get("init_from", "teacher"),
            "init_checkpoint": entry.get("init_checkpoint"),
            "general": entry.get("general"),
            "init_fingerprint": entry.get("init_fingerprint"),
            "accuracy": accuracy,
            "quality_retained": quality_retained(accuracy, teacher_accuracy),
            "krs": result.krs,
            "fss": result.fss,
            "aoag": result.aoag,
            "mean_kl": result.mean_kl,
            "top1_agreement": result.top1_agreement,
            "fss_cosine": fss_cosine,
            "krs_cosine": krs_cosine,
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
    return {"teacher": teacher, "students": students, "arrays": arrays, "labels": labels}


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


def _centred_gram(x: Any) -> Any:
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def _resampled_cka(gram_t: Any, gram_s: Any, idx: Any) -> float:
    """Linear CKA of the rows ``idx`` (with repeats) from two uncentred-by-row Gram matrices:
    HSIC(K, L) = <HKH, HLH> with the centring of the resampled rows."""
    import numpy as np

    k = gram_t[np.ix_(idx, idx)]
    l_ = gram_s[np.ix_(idx, idx)]
    k = k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()
    l_ = l_ - l_.mean(axis=0, keepdims=True) - l_.mean(axis=1, keepdims=True) + l_.mean()
    denominator = float(np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))
    return float(np.sum(k * l_)) / denominator if denominator > 0 else float("nan")


def pooled_paired_bootstrap(
    per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]],
    labels: Any,
    *,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    alpha: float = 0.5,
) -> dict[str, Any]:
    """Paired bootstrap of distillation's gain (after − before), averaged over seeds, per student.

    Every replicate draws one resample of the dev examples (with replacement) and scores every
    model of every seed on those same examples, so the gain is paired within a seed and the seeds
    share the examples they are scored on (the dev set is the sample; the seeds are repeated
    trainings on it). The statistic is the mean over seeds of ``after − before`` for accuracy and
    for KRS = α·linear CKA (final [CLS] states) + (1 − α)·mean exp(−KL). The seed-to-seed spread is
    reported separately (:func:`seed_summary`).

    Args:
        per_seed: ``{seed: {"<name>-<variant>": arrays}}`` with the arrays of :func:`evaluate_manifest`
            (``teacher_features``, ``student_features``, ``teacher_logits``, ``student_logits``).
        labels: ``(N,)`` gold labels of the dev examples.
        n_resamples: bootstrap replicates.
        confidence_level: of the percentile interval.
        seed: of the ``numpy.random.Generator``.
        alpha: the FSS weight α of the KRS (0.5: the paper's SST-2 setting; 0.3: its image classification).

    Returns:
        ``{"method", "n_resamples", "confidence_level", "seed", "gains": {name: {"seeds", "accuracy":
        {"gain", "low", "high", "excludes_zero"}, "krs": {...}}}}``; ``gain`` is the point estimate on
        the dev set itself.
    """
    import numpy as np

    from .agreement import per_example_kl

    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"`n_resamples` must be an int >= 1, got {n_resamples!r}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"`confidence_level` must be in (0, 1), got {confidence_level!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
    labels = np.asarray(labels)
    n = labels.shape[0]
    names = sorted({key.rpartition("-")[0] for models in per_seed.values() for key in models})
    # per model: correct (N,), exp(-KL) (N,), teacher / student Gram matrices
    prepared: dict[str, dict[int, dict[str, Any]]] = {}
    teacher_grams: dict[int, Any] = {}
    for run_seed, models in per_seed.items():
        for key, arrays in models.items():
            name, _, variant = key.rpartition("-")
            if id(arrays["teacher_features"]) not in teacher_grams:
                teacher_grams[id(arrays["teacher_features"])] = _centred_gram(arrays["teacher_features"])
            prepared.setdefault(name, {}).setdefault(run_seed, {})[variant] = {
                "correct": (np.asarray(arrays["student_logits"]).argmax(axis=1) == labels).astype(np.float64),
                "agreement": np.exp(-per_example_kl(arrays["teacher_logits"], arrays["student_logits"])),
                "gram_t": teacher_grams[id(arrays["teacher_features"])],
                "gram_s": _centred_gram(arrays["student_features"]),
            }

    def gains(idx: Any) -> dict[str, tuple[float, float]]:
        out = {}
        for name in names:
            acc, krs = [], []
            for variants in prepared[name].values():
                if "before" not in variants or "after" not in variants:
                    continue
                values = {}
                for variant in ("before", "after"):
                    v = variants[variant]
                    cka = _resampled_cka(v["gram_t"], v["gram_s"], idx)
                    values[variant] = (v["correct"][idx].mean(), alpha * cka + (1 - alpha) * v["agreement"][idx].mean())
                acc.append(values["after"][0] - values["before"][0])
                krs.append(values["after"][1] - values["before"][1])
            if acc:
                out[name] = (float(np.mean(acc)), float(np.mean(krs)))
        return out

    point = gains(np.arange(n))
    rng = np.random.default_rng(seed)
    replicates: dict[str, list[tuple[float, float]]] = {name: [] for name in point}
    for _ in range(n_resamples):
        for name, value in gains(rng.integers(0, n, size=n)).items():
            replicates[name].append(value)
    tail = 100 * (1 - confidence_level) / 2
    result: dict[str, Any] = {}
    for name, (acc_gain, krs_gain) in point.items():
        reps = np.asarray(replicates[name], dtype=np.float64)
        entry: dict[str, Any] = {"seeds": sorted(s for s, v in prepared[name].items() if {"before", "after"} <= set(v))}
        for column, (key, gain) in enumerate((("accuracy", acc_gain), ("krs", krs_gain))):
            values = reps[:, column][np.isfinite(reps[:, column])]
            low, high = (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            entry[key] = {"gain": gain, "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0)}
        result[name] = entry
    return {
        "method": "paired percentile bootstrap over the dev examples, one resample shared by every seed; "
                  "statistic: mean over seeds of after - before",
        "n_resamples": n_resamples, "confidence_level": confidence_level, "seed": seed, "gains": result,
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

    keys = ("accuracy", "krs", "fss", "aoag", "fss_cosine", "krs_cosine")
    light = {seed: [{"name": r["name"], "variant": r["variant"], **{k: r.get(k) for k in keys}} for r in rows]
             for seed, rows in per_seed.items()}
    by_model: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for seed, rows in light.items():
        for row in rows:
            by_model.setdefault((row["name"], row["variant"]), {})[seed] = row

    def stats(values: list[float | None], prefix: str) -> dict[str, float | None]:
        if any(v is None for v in values):
            return {f"{prefix}_mean": None, f"{prefix}_sd": None}
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


def _start(row: Mapping[str, Any]) -> str:
    if row.get("init_from") == "teacher":
        return "fine-tuned teacher"
    if row.get("init_checkpoint"):
        return str(row["init_checkpoint"])
    return "P, general-distilled" if row.get("general") else "P"


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
        f"SST-2 reproduction, scale `{scale}`: teacher = {teacher.get('init', '?')} fine-tuned "
        f"({teacher['num_layers']}×{teacher['hidden_size']}, {teacher['parameters'] / 1e6:.1f} M parameters), "
        f"dev accuracy {_pct(teacher['accuracy'])}; {data.get('dev', '?')} dev sentences, "
        f"{data.get('teacher_train', '?')} teacher / {data.get('student_train', '?')} student training sentences. "
        f"Students start from the pretrained model P ({teacher.get('init', '?')} before fine-tuning), except the "
        "ablation row; \"before\" = that start fine-tuned on hard labels only, \"after\" = distilled (same data, "
        "epochs and seed). KRS = 0.5·FSS + 0.5·AOAg with FSS = linear CKA of the final [CLS] state; "
        "KRS<sub>cos</sub> uses the paper's FSS, the mean cosine of the final [CLS] states (— where the widths "
        "differ); AOAg = mean exp(−KL). Paper: Table 9 of Alba & Villaverde (2025), BERT-base teacher, 6-layer "
        "students, all of SST-2 (— = not reported). First seed only; the seed table follows.",
        "",
        "| student | starts from | layers×width | params | accuracy before → after | paper "
        "| KRS before → after | KRS<sub>cos</sub> before → after | paper KRS | FSS (CKA) before → after "
        "| FSS<sub>cos</sub> before → after | AOAg before → after |",
        "|---|---|---|---:|---|---|---|---|---|---|---|---|",
    ]
    for name, variants in rows.items():
        before, after = variants.get("before"), variants.get("after")
        some = after or before
        assert some is not None
        paper = PAPER_TABLE9.get(name, {})

        def field(row: Mapping[str, Any] | None, key: str, fmt: Any) -> str:
            return fmt(row.get(key)) if row is not None else "—"

        lines.append(
            f"| {_DISPLAY.get(name, name)} | {_start(some)} | {some['num_layers']}×{some['hidden_size']} "
            f"| {some['parameters'] / 1e6:.1f} M "
            f"| {_arrow(field(before, 'accuracy', _pct), field(after, 'accuracy', _pct))} "
            f"| {_arrow(_pct(paper.get('accuracy_before')), _pct(paper.get('accuracy_after')))} "
            f"| {_arrow(field(before, 'krs', _num), field(after, 'krs', _num))} "
            f"| {_arrow(field(before, 'krs_cosine', _num), field(after, 'krs_cosine', _num))} "
            f"| {_arrow(_num(paper.get('krs_before'), 2), _num(paper.get('krs_after'), 2))} "
            f"| {_arrow(field(before, 'fss', _num), field(after, 'fss', _num))} "
            f"| {_arrow(field(before, 'fss_cosine', _num), field(after, 'fss_cosine', _num))} "
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


def _paper_gain(name: str, key: str) -> float | None:
    paper = PAPER_TABLE9.get(name, {})
    before, after = paper.get(f"{key}_before"), paper.get(f"{key}_after")
    return None if before is None or after is None else after - before


def _seed_table(seeds: Mapping[str, Any]) -> list[str]:
    def pm(mean: float | None, sd: float | None, scale: float = 1.0, digits: int = 3) -> str:
        if mean is None:
            return "—"
        return f"{scale * mean:.{digits}f}" + ("" if sd is None else f" ± {scale * sd:.{digits}f}")

    def ci(entry: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
        if not entry:
            return ""
        return f" [{scale * entry['low']:.{digits}f}, {scale * entry['high']:.{digits}f}]"

    summary = {(r["name"], r["variant"]): r for r in seeds["summary"]}
    paired = (seeds.get("paired_bootstrap") or {}).get("gains", {})
    level = (seeds.get("paired_bootstrap") or {}).get("confidence_level", 0.95)
    lines = [
        "",
        f"Across {len(seeds['seeds'])} student seeds ({', '.join(map(str, seeds['seeds']))}; same teacher, same data, "
        "same general-distilled TinyBERT; the seed sets the fresh head, batch order and dropout): mean ± standard "
        f"deviation over seeds, and the gain after − before averaged over seeds with its {100 * level:.0f}% paired "
        "bootstrap interval (one resample of the dev sentences shared by every seed and model, "
        f"{(seeds.get('paired_bootstrap') or {}).get('n_resamples', '?')} replicates). Paper gain: Table 9's after − before.",
        "",
        "| student | seeds | accuracy before | accuracy after | accuracy gain, points [CI] | paper | KRS before "
        "| KRS after | KRS gain [CI] | paper | KRS<sub>cos</sub> before → after | seeds where accuracy / KRS rose |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for gain in seeds["gains"]:
        b, a = summary[(gain["name"], "before")], summary[(gain["name"], "after")]
        pair = paired.get(gain["name"], {})
        paper_acc, paper_krs = _paper_gain(gain["name"], "accuracy"), _paper_gain(gain["name"], "krs")
        lines.append(
            f"| {_DISPLAY.get(gain['name'], gain['name'])} | {gain['n']} "
            f"| {pm(b['accuracy_mean'], b['accuracy_sd'], 100, 2)}% "
            f"| {pm(a['accuracy_mean'], a['accuracy_sd'], 100, 2)}% "
            f"| {pm(gain['accuracy_gain_mean'], gain['accuracy_gain_sd'], 100, 2)}{ci(pair.get('accuracy'), 100, 2)} "
            f"| {'—' if paper_acc is None else f'{100 * paper_acc:+.2f}'} "
            f"| {pm(b['krs_mean'], b['krs_sd'])} | {pm(a['krs_mean'], a['krs_sd'])} "
            f"| {pm(gain['krs_gain_mean'], gain['krs_gain_sd'])}{ci(pair.get('krs'))} "
            f"| {'—' if paper_krs is None else f'{paper_krs:+.2f}'} "
            f"| {_arrow(pm(b.get('krs_cosine_mean'), b.get('krs_cosine_sd')), pm(a.get('krs_cosine_mean'), a.get('krs_cosine_sd')))} "
            f"| {gain['accuracy_raised']} / {gain['krs_raised']} of {gain['n']} |"
        )
    return lines


def _krs_during_training(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``{"<name>-<variant>": {"every_steps", "history"}}`` of the students whose training logged KRS."""
    return {f"{m['name']}-{m['variant']}": m["krs_during_training"] for m in manifest["models"]
            if m.get("role") == "student" and m.get("krs_during_training")}


def _figures(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    from .plots import plot_alpha_sensitivity_curves, plot_cross_layer_cka, plot_krs_during_training

    paths: dict[str, str] = {}
    curves = {f"{r['name']}-{r['variant']}": (r["fss"], r["aoag"]) for r in results["students"]}
    paths["alpha_sensitivity"] = str(plot_alpha_sensitivity_curves(
        curves, out / "alpha_sensitivity.png", alpha=0.5,
        title="SST-2, FSS = linear CKA: dashed = before, solid = after"))
    cosine = {f"{r['name']}-{r['variant']}": (max(0.0, r["fss_cosine"]), r["aoag"])
              for r in results["students"] if r.get("fss_cosine") is not None and r.get("aoag") is not None}
    if cosine:  # the paper's Figure 14 uses its cosine FSS (students of the teacher's width only)
        paths["alpha_sensitivity_cosine"] = str(plot_alpha_sensitivity_curves(
            cosine, out / "alpha_sensitivity_cosine.png", alpha=0.5,
            title="SST-2, FSS = mean cosine (paper): dashed = before, solid = after"))
    during = results.get("krs_during_training")
    if during:
        paths["krs_during_training"] = str(plot_krs_during_training(
            {label: run["history"] for label, run in during.items()}, out / "krs_during_training.png",
            title="SST-2: KRS on the dev set while each student trains\n(KRSCallback; dashed = before, solid = after)",
            names=_DISPLAY))
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


SST2_TRAIN_SENTENCES = 67349
"""Size of the GLUE SST-2 training split (the full scale's training set)."""

# Assumed seconds per optimizer step on one A100-class GPU, bf16, batch 32, dynamic padding (SST-2
# sentences are short): an assumption for the plan's estimate, not a measurement of this project.
_ASSUMED_STEP_SECONDS = {"teacher": 0.10, "student": 0.05, "teacher_forward": 0.02, "attention_targets": 0.03}


def _reachable(names: Sequence[str], *, timeout: float = 5.0) -> dict[str, str]:
    """For each Hub checkpoint: ``"cached"`` (its config.json is in the local cache), ``"hub"`` (the
    Hub answered) or ``"unreachable"``. The Hub is asked once, only when something is not cached."""
    status: dict[str, str] = {}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return {name: "unreachable" for name in names}
    for name in names:
        cached = try_to_load_from_cache(name, "config.json")
        status[name] = "cached" if isinstance(cached, str) else "unknown"
    missing = [n for n, v in status.items() if v == "unknown"]
    if missing:
        online = False
        if os.environ.get("HF_HUB_OFFLINE", "").lower() not in {"1", "true", "yes", "on"}:
            try:
                from huggingface_hub import HfApi

                HfApi().model_info(missing[0], timeout=timeout)
                online = True
            except Exception:  # noqa: BLE001 - any failure means: not reachable from here
                online = False
        for name in missing:
            status[name] = "hub" if online else "unreachable"
    return status


def full_scale_plan(extra_seeds: Sequence[int] = (1, 2), *, check_hub: bool = True) -> dict[str, Any]:
    """What ``reproduce-sst2 --scale full`` would train: models, optimizer steps, a GPU-hour estimate
    (from assumed per-step costs, see ``assumed_step_seconds``) and which checkpoints are reachable.

    Args:
        extra_seeds: the seeds besides the scale's own.
        check_hub: look the checkpoints up (local cache, then the Hub once); False skips it.

    Returns:
        ``{"scale", "teacher", "students", "stages", "total_steps", "assumed_step_seconds",
        "gpu_hours_estimate", "checkpoints", "unreachable"}``.
    """
    import math

    from .distillation.scales import get_scale

    cfg = get_scale("full")
    n = cfg.teacher_train_size or SST2_TRAIN_SENTENCES
    per_epoch = math.ceil(n / cfg.batch_size)
    seeds = [cfg.seed, *[int(s) for s in extra_seeds if int(s) != cfg.seed]]
    cost = _ASSUMED_STEP_SECONDS
    stages: list[dict[str, Any]] = [{"stage": "teacher", "model": f"{cfg.teacher} fine-tuned", "steps": per_epoch * int(cfg.teacher_epochs),
               "seconds": per_epoch * cfg.teacher_epochs * cost["teacher"]}]
    students = []
    for spec in cfg.students:
        start = spec.checkpoint or (f"the fine-tuned teacher's {spec.num_layers} layers ({spec.init})"
                                    if spec.init_from == "teacher" else f"{cfg.teacher}'s {spec.num_layers} layers ({spec.init})")
        students.append({"name": spec.name, "start": start, "method": spec.method, "seeds": seeds if spec.all_seeds else seeds[:1]})
        runs = len(seeds) if spec.all_seeds else 1
        epoch_steps = per_epoch * int(spec.epochs or cfg.student_epochs)
        stages.append({"stage": f"{spec.name}-before x {runs}", "steps": runs * epoch_steps,
                       "seconds": runs * epoch_steps * cost["student"]})
        after = epoch_steps * (cost["student"] + (0.0 if cfg.cache_teacher else cost["teacher_forward"]))
        steps = epoch_steps
        if spec.method == "tinybert":
            inter = per_epoch * int(cfg.tinybert_intermediate_epochs)
            steps += inter
            after += inter * (cost["student"] + cost["teacher_forward"] + cost["attention_targets"])
        stages.append({"stage": f"{spec.name}-after x {runs}", "steps": runs * steps, "seconds": runs * after})
    total = sum(s["seconds"] for s in stages) + len(seeds) * per_epoch * cost["teacher_forward"]  # teacher caches
    names = [cfg.teacher, *[s.checkpoint for s in cfg.students if s.checkpoint]]
    checkpoints = _reachable(names) if check_hub else {name: "not checked" for name in names}
    return {
        "scale": "full", "teacher": f"{cfg.teacher}, {cfg.teacher_epochs:g} epochs, lr {cfg.teacher_lr:g}",
        "train_sentences": n, "batch_size": cfg.batch_size, "seeds": seeds, "students": students,
        "stages": [{**s, "seconds": round(s["seconds"])} for s in stages],
        "total_steps": sum(s["steps"] for s in stages), "assumed_step_seconds": dict(cost),
        "gpu_hours_estimate": round(total / 3600, 1), "checkpoints": checkpoints,
        "unreachable": [name for name, state in checkpoints.items() if state == "unreachable"],
    }


def render_plan(plan: Mapping[str, Any]) -> str:
    """The dry run's text: one line per stage, the estimate, and one line naming unreachable checkpoints."""
    lines = [f"reproduce-sst2 --scale full (dry run): teacher {plan['teacher']}; {plan['train_sentences']} "
             f"training sentences, batch {plan['batch_size']}; seeds {', '.join(map(str, plan['seeds']))}"]
    for student in plan["students"]:
        lines.append(f"  student {student['name']}: starts from {student['start']}; after = {student['method']}; "
                     f"seeds {', '.join(map(str, student['seeds']))}")
    for stage in plan["stages"]:
        lines.append(f"  {stage['stage']}: {stage['steps']} steps, ~{stage['seconds'] / 3600:.2f} GPU-hours")
    assumed = ", ".join(f"{k} {v:g} s" for k, v in plan["assumed_step_seconds"].items())
    lines.append(f"  total: {plan['total_steps']} optimizer steps, about {plan['gpu_hours_estimate']} GPU-hours "
                 f"(assumed per-step costs on one A100-class GPU: {assumed})")
    if plan["unreachable"]:
        lines.append(f"offline: cannot reach {', '.join(plan['unreachable'])} (not in the local Hugging Face cache "
                     "and the Hub did not answer); the full scale needs them")
    else:
        lines.append("checkpoints: " + ", ".join(f"{k} ({v})" for k, v in plan["checkpoints"].items()))
    return "\n".join(lines)


def _public_source(source: Any) -> Any:
    """A local data folder named without the machine's path (results read the same everywhere)."""
    if isinstance(source, str) and os.path.isabs(source):
        return f"local GLUE SST-2 TSV folder ({Path(source).name})"
    return source


def _train_seed_job(scale: str, work: str, seed: int, data_dir: str | None, students: list[str] | None,
                    progress: bool) -> float:
    """One extra seed in a worker process (see ``jobs``); returns its wall seconds."""
    from .distillation.sst2 import train_student_seeds

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

    from .distillation.manifest import load_manifest
    from .distillation.scales import get_scale
    from .distillation.sst2 import load_pipeline_splits, train_pipeline

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
    import torch
    import transformers

    mt = manifest.get("timings", {})
    wall = time.perf_counter() - start
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
        **({"krs_during_training": during} if (during := _krs_during_training(manifest)) else {}),
        "departures": _departures(cfg),
        "timings": {
            "teacher_seconds": mt.get("teacher_seconds"),
            "teacher_reused": mt.get("teacher_reused"),
            "general_distillation_seconds": mt.get("general_distillation_seconds"),
            "general_reused": mt.get("general_reused"),
            "first_seed_students_seconds": mt.get("students_seconds"),
            "teacher_cache_seconds": mt.get("teacher_cache_seconds"),
            "training_seconds": round(train_seconds, 1) if not skip_training else None,
            "training_manifest_seconds": mt.get("total_seconds"),
            "seed_training_seconds": seed_training or None,
            "seed_training_wall_seconds": round(seeds_wall, 1) if todo else None,
            "parallel_jobs": jobs,
            "evaluation_seconds": round(eval_seconds, 1),
            "paired_bootstrap_seconds": bootstrap_seconds,
            "wall_seconds": round(wall, 1),
            # what one uninterrupted run costs: this call plus the stages it reused from earlier calls
            "pipeline_seconds": round(wall + earlier, 1) if not skip_training else None,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    results = tabulate(_relative_to(results, out), out)
    _say(progress, start, f"done: {out / 'table.md'}")
    return results


def tabulate(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The tabulation step alone: figures, ``table.md`` and ``results.json`` (with ``files``) from a
    reproduction's results, e.g. to redraw an earlier run's ``results.json`` with this version's
    figures and table (nothing is trained or evaluated).

    Args:
        results: what :func:`reproduce_sst2` returns (or the loaded ``results.json``).
        output_dir: where to write.

    Returns:
        The results with ``files`` (paths relative to ``output_dir``).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    files = _figures(results, out)
    (out / "table.md").write_text(render_table(results), encoding="utf-8")
    files["table"] = str(out / "table.md")
    files["results"] = str(out / "results.json")
    results["files"] = {k: os.path.relpath(v, out) for k, v in files.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
