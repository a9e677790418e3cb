"""The evaluation step of the SST-2 reproduction: every student of a training manifest against its teacher
(:func:`evaluate_manifest`), the pooled paired bootstrap of the gains and the per-seed summary."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .sst2_common import _DISPLAY, RESULTS_FORMAT, _say  # noqa: F401

__all__ = ["evaluate_manifest", "pooled_paired_bootstrap", "seed_summary"]


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

    from ..diagnostics import accuracy_score, quality_retained
    from ..extraction import evaluate_pair
    from ..score import knowledge_retention_score
    from ..similarity import mean_cosine_similarity
    from .manifest import load_manifest, pairs_from_manifest
    from .sst2 import KRS_OPTIONS

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
    from ..reporting import build_report

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

    from ..agreement import per_example_kl

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
