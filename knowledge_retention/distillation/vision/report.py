"""Statistics, table and figures of the digits reproduction (what :func:`~.run.reproduce_vision` writes).

Every number comes from the evaluation's rows and kept arrays: seed means and gains
(:func:`gain_summary`), paired bootstrap intervals of each gain (per seed with
:func:`knowledge_retention.diagnostics.paired_bootstrap_difference`; averaged over seeds with
:func:`pooled_gain_bootstrap`), the Pearson correlation of KRS with
accuracy over every trained student (:func:`krs_accuracy_correlation`). The paper's values are the
constants :data:`PAPER_FIGURE3` and :data:`PAPER_PEARSON_R`, typed from the paper and cited.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PAPER_FIGURE3", "PAPER_PEARSON_R", "PAPER_ROLES", "RESULTS_FORMAT", "assemble_results", "bootstrap_gains",
    "gain_summary", "krs_accuracy_correlation", "pooled_gain_bootstrap", "render_table", "tabulate",
]

RESULTS_FORMAT = "knowledge_retention.reproduction.vision_digits/v1"

PAPER_FIGURE3: dict[str, dict[str, Any]] = {
    "resnet18": {"student": "ResNet-18", "teacher": "ResNet-101", "data": "CIFAR-100",
                 "krs_before": 42.5, "krs_kd": 57.7, "krs_skd": 69.8},
    "alexnet": {"student": "AlexNet", "teacher": "VGG-19", "data": "CIFAR-100",
                "krs_before": 34.4, "krs_kd": 48.0, "krs_skd": 51.5},
    "deit_s": {"student": "DeiT-S", "teacher": "ViT-B/16", "data": "CIFAR-100",
               "krs_before": 45.9, "krs_kd": 62.3, "krs_skd": None},
}
"""Alba & Villaverde (2025), Figure 3: KRS (0-100) of image-classification students before distillation,
after vanilla KD and after SKD, α = 0.3 (None: not reported)."""

PAPER_PEARSON_R = 0.943
"""Alba & Villaverde (2025): Pearson r of KRS with student accuracy over their classification experiments."""

PAPER_ROLES = {"resnet_small": "resnet18", "resnet_tiny": "alexnet", "vit": "deit_s"}
"""Which paper student each of ours stands in for (same role: a smaller CNN, a much smaller CNN, a ViT)."""

_DISPLAY = {"resnet_small": "ResNet, small", "resnet_tiny": "ResNet, tiny", "vit": "ViT"}
_METHODS = ("kd", "fitnet")
_METHOD_DISPLAY = {"before": "before", "kd": "vanilla KD", "fitnet": "FitNet"}


def gain_summary(per_seed: Mapping[Any, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per student and method, the gain after − before of accuracy, KRS, FSS and AOAg over seeds.

    Returns:
        ``[{name, method, n, <key>_gain_mean, <key>_gain_sd (ddof 1), <key>_raised}]``; ``*_raised``
        counts the seeds where the method raised the figure.
    """
    import numpy as np

    by: dict[tuple[str, str], dict[Any, Mapping[str, Any]]] = {}
    for seed, rows in per_seed.items():
        for row in rows:
            by.setdefault((row["name"], row["variant"]), {})[seed] = row
    out = []
    for name in dict.fromkeys(name for name, _ in by):
        before = by.get((name, "before"), {})
        for method in _METHODS:
            after = by.get((name, method), {})
            common = [s for s in before if s in after]
            if not common:
                continue
            entry: dict[str, Any] = {"name": name, "method": method, "n": len(common)}
            for key in ("accuracy", "krs", "fss", "aoag"):
                diffs = np.asarray([after[s][key] - before[s][key] for s in common], dtype=np.float64)
                entry[f"{key}_gain_mean"] = float(diffs.mean())
                entry[f"{key}_gain_sd"] = float(diffs.std(ddof=1)) if diffs.size > 1 else None
                entry[f"{key}_raised"] = int((diffs > 0).sum())
            out.append(entry)
    return out


def _replicate_fss(teacher: Any, student: Any, weights: Any) -> Any:
    """FSS (linear CKA) of one feature pair under every row of ``weights`` ``(R, N)``: the package's
    bootstrap path (:mod:`knowledge_retention.diagnostics.bootstrap`), Gram or feature space, whichever
    is cheaper."""
    import numpy as np

    from ...diagnostics.bootstrap import _fss_replicates, _fss_statistic, _gram_path_is_cheaper

    t, s = np.asarray(teacher, dtype=np.float64), np.asarray(student, dtype=np.float64)
    if len(weights) > 1 and _gram_path_is_cheaper(t.shape[0], [(t.shape[1], s.shape[1])], len(weights), False):
        return _fss_replicates([t], [s], weights)
    return np.array([_fss_statistic([t], [s], w, False) for w in weights])


def pooled_gain_bootstrap(
    arrays: Mapping[Any, Mapping[str, Mapping[str, Any]]],
    labels: Any,
    *,
    alpha: float = 0.3,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of each method's gain (after − before), averaged over seeds, per student.

    Every replicate draws one resample of the held-out images (with replacement) and scores every model
    of every seed on those same images: the gain is paired within a seed and the seeds share the images
    (the held-out set is the sample; the seeds are repeated trainings on it). The statistic is the mean
    over seeds of after − before, for accuracy and for KRS = α·FSS + (1 − α)·AOAg
    (:func:`knowledge_retention.knowledge_retention_score`; FSS = linear CKA of the kept final features
    under the resample's multiplicities, AOAg = the resample's mean exp(−KL)). The same design as the SST-2
    run's :func:`~knowledge_retention.distillation.sst2_evaluation.pooled_paired_bootstrap`, on the
    bootstrap module's vectorised CKA (that one re-centres an N × N Gram matrix per replicate).

    Returns:
        ``{"method", "n_resamples", "confidence_level", "seed", "gains": {"<name>/<method>": {"seeds",
        "accuracy": {"gain", "low", "high", "excludes_zero"}, "krs": {...}}}}``; ``gain`` is the point
        estimate on the held-out images themselves.
    """
    import numpy as np

    from ...agreement import per_example_kl
    from ...diagnostics.bootstrap import _resample_counts
    from ...score import knowledge_retention_score

    labels = np.asarray(labels)
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    weights = np.concatenate(list(_resample_counts(n, n_resamples, rng))).astype(np.float64)
    every = np.vstack([np.ones(n), weights])  # row 0: the sample itself (the point estimate)
    krs = np.vectorize(lambda f, a: knowledge_retention_score(float(np.clip(f, 0, 1)), float(np.clip(a, 0, 1)),
                                                              alpha=alpha, beta=1 - alpha), otypes=[float])
    scored: dict[Any, dict[str, tuple[Any, Any]]] = {}
    for run_seed, models in arrays.items():
        for key, a in models.items():
            correct = (np.asarray(a["student_logits"]).argmax(axis=1) == labels).astype(np.float64)
            agreement = np.exp(-per_example_kl(a["teacher_logits"], a["student_logits"]))
            fss = _replicate_fss(a["teacher_features"], a["student_features"], every)
            scored.setdefault(run_seed, {})[key] = (every @ correct / n, krs(fss, every @ agreement / n))
    tail = 100 * (1 - confidence_level) / 2
    gains: dict[str, Any] = {}
    names = dict.fromkeys(key.rpartition("-")[0] for models in arrays.values() for key in models)
    for name in names:
        for method in _METHODS:
            seeds = [s for s, m in scored.items() if f"{name}-before" in m and f"{name}-{method}" in m]
            if not seeds:
                continue
            entry: dict[str, Any] = {"seeds": sorted(seeds)}
            for column, key in enumerate(("accuracy", "krs")):
                diff = np.mean([scored[s][f"{name}-{method}"][column] - scored[s][f"{name}-before"][column]
                                for s in seeds], axis=0)
                reps = diff[1:][np.isfinite(diff[1:])]
                low, high = float(np.percentile(reps, tail)), float(np.percentile(reps, 100 - tail))
                entry[key] = {"gain": float(diff[0]), "low": low, "high": high,
                              "excludes_zero": bool(low > 0 or high < 0)}
            gains[f"{name}/{method}"] = entry
    return {"method": "paired percentile bootstrap over the held-out images, one resample shared by every seed "
                      "and model; statistic: mean over seeds of after - before",
            "n_resamples": n_resamples, "confidence_level": confidence_level, "seed": seed, "gains": gains}


def bootstrap_gains(
    arrays: Mapping[Any, Mapping[str, Mapping[str, Any]]],
    labels: Any,
    *,
    alpha: float = 0.3,
    n_resamples: int = 1000,
    n_feature_resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap intervals of each gain (after − before) over the held-out images.

    Args:
        arrays: ``{seed: {"<name>-<variant>": {teacher_features, student_features, teacher_logits,
            student_logits}}}`` as :func:`~.run.evaluate_run` keeps them.
        labels: ``(N,)`` gold labels.
        alpha: FSS weight of the KRS.
        n_resamples: replicates (output statistics; the pooled interval).
        n_feature_resamples: replicates of the per-seed FSS/KRS intervals.
        seed: of the resampling.

    Returns:
        ``{"per_seed": {seed: {name: {method: {accuracy|krs|fss|aoag: {difference, low, high,
        excludes_zero}}}}}, "pooled": pooled_gain_bootstrap(...)}`` - per seed, the package's paired
        bootstrap (half-sampling for FSS/KRS, see :mod:`knowledge_retention.diagnostics.bootstrap`);
        pooled, the mean over seeds of the gain with one resample of the images shared by every seed.
    """
    from ...diagnostics import paired_bootstrap_difference

    per_seed: dict[str, Any] = {}
    for run_seed, models in arrays.items():
        names = dict.fromkeys(key.rpartition("-")[0] for key in models)
        for name in names:
            before = models.get(f"{name}-before")
            for method in _METHODS:
                after = models.get(f"{name}-{method}")
                if before is None or after is None:
                    continue
                diff = paired_bootstrap_difference(
                    before["teacher_logits"], before["student_logits"], after["student_logits"], labels=labels,
                    teacher_features=before["teacher_features"], student_a_features=before["student_features"],
                    student_b_features=after["student_features"], task="classification", alpha=alpha,
                    beta=1 - alpha, aoag_method="kl", n_resamples=n_resamples,
                    n_feature_resamples=n_feature_resamples, seed=seed)
                per_seed.setdefault(str(run_seed), {}).setdefault(name, {})[method] = {
                    key: {k: diff["differences"][key][k] for k in ("difference", "low", "high", "excludes_zero")}
                    for key in ("accuracy", "krs", "fss", "aoag") if key in diff["differences"]}
    pooled = pooled_gain_bootstrap(arrays, labels, alpha=alpha, n_resamples=n_resamples, seed=seed)
    return {"per_seed": per_seed, "per_seed_method": "knowledge_retention.diagnostics.paired_bootstrap_difference "
            f"(percentile; {n_resamples} replicates for accuracy/AOAg, {n_feature_resamples} half-samples for "
            "FSS/KRS)", "pooled": pooled}


def krs_accuracy_correlation(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pearson r of KRS with accuracy over the given student rows (``scipy.stats.pearsonr``), overall and
    within each student architecture."""
    import numpy as np
    from scipy.stats import pearsonr

    def one(subset: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        krs = np.asarray([r["krs"] for r in subset], dtype=np.float64)
        acc = np.asarray([r["accuracy"] for r in subset], dtype=np.float64)
        if len(subset) < 3 or np.ptp(krs) == 0 or np.ptp(acc) == 0:
            return {"n": len(subset), "r": None, "p_value": None}
        test = pearsonr(krs, acc)
        return {"n": len(subset), "r": float(test.statistic), "p_value": float(test.pvalue)}

    names = dict.fromkeys(r["name"] for r in rows)
    return {**one(rows), "paper_r": PAPER_PEARSON_R,
            "by_student": {name: one([r for r in rows if r["name"] == name]) for name in names}}


def _departures(cfg: Any, teacher: Mapping[str, Any]) -> list[dict[str, str]]:
    students = ", ".join(f"{s.name} ({s.family}, {s.config.get('hidden_sizes') or s.config.get('hidden_size')})"
                         for s in cfg.students)
    return [
        {"what": "data", "paper": "CIFAR-100, Tiny ImageNet, Oxford-IIIT Pet (natural colour images, 100-200 classes)",
         "here": f"the UCI digits from scikit-learn: 10 classes, 8 x 8 grey images upsampled to {cfg.image_size} x "
                 f"{cfg.image_size}, {'all' if cfg.max_per_split is None else cfg.max_per_split} images, 25% held out",
         "why": "no network here; the digits are the one real image data set that installs offline"},
        {"what": "models", "paper": "ResNet-101 -> ResNet-18, VGG-19 -> AlexNet, ViT-B/16 -> DeiT-S, ImageNet-pretrained",
         "here": f"one ResNet teacher ({teacher.get('parameters')} parameters, hidden {cfg.teacher.config['hidden_sizes']}) "
                 f"for every student: {students}; all from scratch",
         "why": "CPU budget and no pretrained weights; the ViT student distils from a CNN teacher (DeiT's setting), "
                "not from a ViT as the paper's DeiT-S"},
        {"what": "feature-based method", "paper": "SKD (structured KD)",
         "here": f"FitNet hints (Romero et al. 2015) with a learned 1x1-conv regressor, trained jointly with the "
                 f"labels (weight {cfg.hint_weight:g}), no KD term",
         "why": "the brief's feature-based method; the SKD columns of the paper are shown beside our FitNet ones. The "
                "weight was picked on one probe run (seed 42, small ResNet) that read the held-out accuracy: 100 "
                "(RepDistiller's) and 10 cost accuracy there, 1 did not"},
        {"what": "training", "paper": "not stated per experiment (standard recipes, GPUs)",
         "here": f"AdamW lr {cfg.learning_rate:g}, cosine, batch {cfg.batch_size}, teacher {cfg.teacher_epochs} / "
                 f"students {cfg.student_epochs} epochs, no augmentation; KD T = {cfg.temperature:g}, "
                 f"weight {cfg.kd_weight:g}",
         "why": "tens of minutes on 2 shared CPU cores"},
        {"what": "FSS", "paper": "the paper's feature similarity for image models, α = 0.3 (its layer and pooling "
                                 "choices are not reproduced here)",
         "here": "linear CKA of the final hidden state, mean-pooled over the CNN's positions / the ViT's patch tokens "
                 "(the engine's image default); cross-layer CKA over every stage x block in the heatmaps",
         "why": "defined across widths and families (CNN teacher, ViT student)"},
    ]


def assemble_results(cfg: Any, manifest: Mapping[str, Any], evaluated: Mapping[str, Any], *, command: str | None,
                     timings: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """``results.json``'s content (same schema as the SST-2 reproduction's: ``students`` = the first seed's
    rows, ``seeds.per_seed``, ``departures``) from the manifest and :func:`~.run.evaluate_run`'s output."""
    import sys

    import torch
    import transformers

    from ..sst2_evaluation import _relative_to, seed_summary
    from .run import KRS_OPTIONS

    rows = evaluated["students"]
    seeds = list(manifest["seeds"])
    per_seed = {seed: [r for r in rows if r["seed"] == seed] for seed in seeds}
    start = time.perf_counter()
    boot = bootstrap_gains(evaluated["arrays"], evaluated["labels"], alpha=KRS_OPTIONS["alpha"],
                           n_resamples=cfg.bootstrap, n_feature_resamples=max(20, cfg.bootstrap // 5))
    timings["bootstrap_seconds"] = round(time.perf_counter() - start, 1)
    if progress:
        print(f"[reproduce-vision] bootstrap: {timings['bootstrap_seconds']} s", file=sys.stderr, flush=True)
    summary = seed_summary(per_seed)
    summary["gains"] = gain_summary(per_seed)
    summary["paired_bootstrap"] = boot["pooled"]
    summary["paired_bootstrap_per_seed"] = {"method": boot["per_seed_method"], "gains": boot["per_seed"]}
    teacher_entry = next(m for m in manifest["models"] if m["role"] == "teacher")
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "scale": cfg.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "protocol": "one ResNet teacher trained on the labels; every student trained three times per seed from the "
                    "same initialisation and batch order: before = labels only, after = vanilla KD or FitNet",
        "setting": {**KRS_OPTIONS, "fss": "linear_cka, final hidden state, mean pooling",
                    "aoag": "kl: mean exp(-KL(teacher || student)), T = 1",
                    "engine": "knowledge_retention.extraction.evaluate_students (image task), one call per seed"},
        "data": {**manifest["data"], "test": len(evaluated["labels"])},
        "teacher": {**evaluated["teacher"], "epochs": cfg.teacher_epochs, "seed": teacher_entry.get("seed")},
        "students": per_seed[seeds[0]],
        "scale_config": cfg.to_dict(),
        "paper": {"figure3": PAPER_FIGURE3, "pearson_r": PAPER_PEARSON_R, "roles": PAPER_ROLES},
        "seeds": summary,
        "correlation": krs_accuracy_correlation(rows),
        "departures": _departures(cfg, evaluated["teacher"]),
        "timings": {"training_seconds": manifest.get("training_seconds"),
                    # each model's own training time (one torch thread per process), summed: what the models cost,
                    # whether this run trained them or reused checkpoints of an earlier run of the same settings
                    "model_training_seconds": round(sum(m.get("train_seconds") or 0.0 for m in manifest["models"]), 1),
                    "models_reused": sum(bool(m.get("reused")) for m in manifest["models"]), **timings},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    return _relative_to(results, Path(manifest["root"]))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pm(mean: float | None, sd: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{scale * mean:.{digits}f}" + ("" if sd is None else f" ± {scale * sd:.{digits}f}")


def _ci(entry: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    return "" if not entry else f" [{scale * entry['low']:.{digits}f}, {scale * entry['high']:.{digits}f}]"


def _first_seed_table(results: Mapping[str, Any]) -> list[str]:
    rows: dict[str, dict[str, Any]] = {}
    for row in results["students"]:
        rows.setdefault(row["name"], {})[row["variant"]] = row
    lines = ["| student | params | accuracy before / KD / FitNet | KRS before / KD / FitNet "
             "| FSS before / KD / FitNet | AOAg before / KD / FitNet |", "|---|---:|---|---|---|---|"]
    for name, variants in rows.items():
        some = next(iter(variants.values()))

        def three(key: str, fmt: Any, variants: Mapping[str, Any] = variants) -> str:
            return " / ".join(fmt(variants[v][key]) if v in variants else "—" for v in ("before", *_METHODS))
        lines.append(f"| {_DISPLAY.get(name, name)} | {some['parameters'] / 1e3:.1f} k | {three('accuracy', _pct)} "
                     f"| {three('krs', _num)} | {three('fss', _num)} | {three('aoag', _num)} |")
    return lines


def _seed_table(seeds: Mapping[str, Any]) -> list[str]:
    summary = {(r["name"], r["variant"]): r for r in seeds["summary"]}
    pooled = (seeds.get("paired_bootstrap") or {}).get("gains", {})
    per_seed = (seeds.get("paired_bootstrap_per_seed") or {}).get("gains", {})
    lines = ["| student | method | seeds | accuracy before → after | accuracy gain, points [CI] | KRS before → after "
             "| KRS gain [CI] | FSS gain | AOAg gain | seeds where accuracy / KRS rose "
             "| seeds whose KRS-gain CI excludes 0 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for gain in seeds["gains"]:
        name, method = gain["name"], gain["method"]
        b, a = summary[(name, "before")], summary[(name, method)]
        pair = pooled.get(f"{name}/{method}", {})
        excludes = sum(bool(per_seed.get(s, {}).get(name, {}).get(method, {}).get("krs", {}).get("excludes_zero"))
                       for s in per_seed)
        lines.append(
            f"| {_DISPLAY.get(name, name)} | {_METHOD_DISPLAY[method]} | {gain['n']} "
            f"| {_pm(b['accuracy_mean'], b['accuracy_sd'], 100, 1)}% → {_pm(a['accuracy_mean'], a['accuracy_sd'], 100, 1)}% "
            f"| {_pm(gain['accuracy_gain_mean'], gain['accuracy_gain_sd'], 100, 1)}{_ci(pair.get('accuracy'), 100, 1)} "
            f"| {_pm(b['krs_mean'], b['krs_sd'])} → {_pm(a['krs_mean'], a['krs_sd'])} "
            f"| {_pm(gain['krs_gain_mean'], gain['krs_gain_sd'])}{_ci(pair.get('krs'))} "
            f"| {_pm(gain['fss_gain_mean'], gain['fss_gain_sd'])} | {_pm(gain['aoag_gain_mean'], gain['aoag_gain_sd'])} "
            f"| {gain['accuracy_raised']} / {gain['krs_raised']} of {gain['n']} | {excludes} of {len(per_seed)} |")
    return lines


def _paper_table(results: Mapping[str, Any]) -> list[str]:
    summary = {(r["name"], r["variant"]): r for r in results["seeds"]["summary"]}
    lines = ["| paper student (teacher, data) | paper KRS before → KD → SKD | our stand-in | our KRS before → KD → FitNet "
             "(×100, mean over seeds) |", "|---|---|---|---|"]
    for name, role in PAPER_ROLES.items():
        if (name, "before") not in summary:
            continue
        paper = PAPER_FIGURE3[role]
        ours = " → ".join(_num(None if summary.get((name, v)) is None else 100 * summary[(name, v)]["krs_mean"], 1)
                          for v in ("before", *_METHODS))
        theirs = " → ".join(_num(paper[k], 1) for k in ("krs_before", "krs_kd", "krs_skd"))
        lines.append(f"| {paper['student']} ({paper['teacher']}, {paper['data']}) | {theirs} "
                     f"| {_DISPLAY.get(name, name)} | {ours} |")
    return lines


def _shape_notes(results: Mapping[str, Any]) -> list[str]:
    """Where the shape of our results agrees with the paper's Figure 3 and where it does not, computed."""
    summary = {(r["name"], r["variant"]): r for r in results["seeds"]["summary"]}
    gains = {(g["name"], g["method"]): g for g in results["seeds"]["gains"]}
    pooled = (results["seeds"].get("paired_bootstrap") or {}).get("gains", {})
    names = [n for n in PAPER_ROLES if (n, "before") in summary]
    paper_gain = {key: [p[key] - p["krs_before"] for p in PAPER_FIGURE3.values() if p[key] is not None]
                  for key in ("krs_kd", "krs_skd")}
    paper_text = {"kd": "vanilla KD raised every student's", "fitnet": "SKD raised both CNN students'"}
    notes = []
    for method, label, key in (("kd", "vanilla KD", "krs_kd"), ("fitnet", "FitNet", "krs_skd")):
        rows = [(n, gains[(n, method)]) for n in names if (n, method) in gains]
        raised = [n for n, g in rows if g["krs_gain_mean"] > 0]
        sure = [n for n, _ in rows if (pooled.get(f"{n}/{method}", {}).get("krs") or {}).get("low", 0) > 0]
        text = ", ".join(f"{_DISPLAY.get(n, n)} {100 * g['krs_gain_mean']:+.1f}" for n, g in rows)
        notes.append(f"- **{label}** raised the mean KRS of {len(raised)} of {len(rows)} students ({text}, KRS × 100; "
                     f"pooled interval above 0 for {len(sure)}); paper: {paper_text[method]}, by "
                     f"{min(paper_gain[key]):.1f} to {max(paper_gain[key]):.1f}.")
    fit_over_kd = [n for n in names if (n, "fitnet") in summary and (n, "kd") in summary
                   and summary[(n, "fitnet")]["krs_mean"] > summary[(n, "kd")]["krs_mean"]]
    notes.append(f"- **Feature-based over logit-based**: FitNet's KRS above vanilla KD's for {len(fit_over_kd)} of "
                 f"{len(names)} students; paper: SKD above vanilla KD for both CNN students.")
    before = [100 * summary[(n, "before")]["krs_mean"] for n in names]
    paper_before = [PAPER_FIGURE3[r]["krs_before"] for r in PAPER_FIGURE3]
    fss = [summary[(n, "before")]["fss_mean"] for n in names]
    aoag = [summary[(n, "before")]["aoag_mean"] for n in names]
    notes.append(f"- **Level**: our students start at KRS {min(before):.1f}-{max(before):.1f} (×100) before "
                 f"distillation, the paper's at {min(paper_before):.1f}-{max(paper_before):.1f}; KRS weighs AOAg by "
                 f"0.7, and our students' AOAg before is {min(aoag):.3f}-{max(aoag):.3f} (FSS {min(fss):.3f}-"
                 f"{max(fss):.3f}) on 10 classes against CIFAR-100's 100.")
    corr = results["correlation"]
    if corr["r"] is not None:
        within = [c["r"] for c in corr["by_student"].values() if c["r"] is not None]
        spread = (f"; within one architecture r runs from {min(within):.3f} to {max(within):.3f} "
                  "(nine models each, table above)") if within else ""
        notes.append(f"- **KRS tracks accuracy**: r = {corr['r']:.3f} over {corr['n']} students here, "
                     f"{corr['paper_r']} in the paper{spread}.")
    return notes


def render_table(results: Mapping[str, Any]) -> str:
    """The Markdown of a digits reproduction: first seed, seeds with intervals, the paper beside ours."""
    teacher, data, corr = results["teacher"], results["data"], results["correlation"]
    level = (results["seeds"].get("paired_bootstrap") or {}).get("confidence_level", 0.95)
    lines = [
        f"Digits reproduction, scale `{results['scale']}`: a ResNet teacher ({teacher['parameters'] / 1e3:.0f} k "
        f"parameters, trained from scratch on the labels) at {_pct(teacher['accuracy'])} held-out accuracy; "
        f"{data['splits']['train']} training / {data['test']} held-out images of the UCI digits ({data['image_size']} × "
        f"{data['image_size']}, read with `datasets` imagefolder). Each student is trained three times per seed from "
        "one start: before = labels only, after = vanilla KD or FitNet. KRS = 0.3·FSS + 0.7·AOAg (the paper's "
        "classification preset), FSS = linear CKA of the final hidden states mean-pooled, AOAg = mean exp(−KL), "
        "all from the package's engine (`evaluate_students`). First seed:",
        "",
        *_first_seed_table(results),
        "",
        f"Across {len(results['seeds']['seeds'])} seeds ({', '.join(map(str, results['seeds']['seeds']))}): mean ± "
        f"standard deviation; gain = after − before averaged over seeds with its {100 * level:.0f}% paired bootstrap "
        "interval (one resample of the held-out images shared by every seed and model); the last column counts the "
        "seeds whose own paired interval (`paired_bootstrap_difference`) excludes 0.",
        "",
        *_seed_table(results["seeds"]),
        "",
        "The paper's Figure 3 (KRS ×100 at α = 0.3) beside ours; our FitNet stands where the paper has SKD (another "
        "method, shown for its place in the ordering, not as a like-for-like number):",
        "",
        *_paper_table(results),
        "",
        f"Pearson r of KRS with accuracy over every trained student ({corr['n']} models: every student, variant and "
        f"seed): **r = {_num(corr['r'])}** (p = {corr['p_value']:.2g}); paper: r = {corr['paper_r']} for "
        "classification. Within one architecture: " + "; ".join(
            f"{_DISPLAY.get(n, n)} r = {_num(c['r'])} (n = {c['n']})" for n, c in corr["by_student"].items()) + ".",
        "",
        "Shape against the paper (computed from the numbers above):",
        "",
        *_shape_notes(results),
    ]
    return "\n".join(lines) + "\n"


def _figures(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    from ...plots import plot_alpha_sensitivity_curves
    from .figures import plot_krs_vs_accuracy, plot_paper_comparison

    paths: dict[str, str] = {}
    summary = {(r["name"], r["variant"]): r for r in results["seeds"]["summary"]}
    names = list(dict.fromkeys(r["name"] for r in results["students"]))
    for method in _METHODS:
        curves = {}
        for name in names:
            for variant, label in (("before", "before"), (method, "after")):
                row = summary.get((name, variant))
                if row is not None:
                    curves[f"{_DISPLAY.get(name, name)}-{label}"] = (row["fss_mean"], row["aoag_mean"])
        paths[f"alpha_sensitivity_{method}"] = str(plot_alpha_sensitivity_curves(
            curves, out / f"alpha_sensitivity_{method}.png", alpha=0.3,
            title=f"Digits, mean over seeds: dashed = before, solid = {_METHOD_DISPLAY[method]}"))
    from ..sst2_tables import cross_layer_heatmaps

    paths.update(cross_layer_heatmaps(results, out, lambda row: (
        f"Cross-layer linear CKA, ResNet teacher vs\n{_DISPLAY.get(row['name'], row['name'])} "
        f"({_METHOD_DISPLAY[row['variant']]}), seed {row['seed']}")))
    paths["krs_vs_accuracy"] = str(plot_krs_vs_accuracy(results, out / "krs_vs_accuracy.png", display=_DISPLAY))
    paths["paper_comparison"] = str(plot_paper_comparison(results, out / "paper_comparison.png", display=_DISPLAY))
    return paths


def tabulate(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Figures, ``table.md`` and ``results.json`` (with ``files``, relative to ``output_dir``)."""
    from ..sst2_tables import write_run

    return write_run(results, output_dir, figures=_figures, render=render_table)
