"""The SST-2 reproduction at smoke scale: train, evaluate, tabulate, and the numbers agree with the
training run's own accuracy and with the library's KRS formula."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knowledge_retention import knowledge_retention_score
from knowledge_retention.plots import plot_alpha_sensitivity_curves
from knowledge_retention.reproduction import PAPER_TABLE9, render_table, reproduce_sst2

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sst2-smoke")
    return out, reproduce_sst2("smoke", out, bootstrap=50, measure_speed=False, progress=False)


def test_results_cover_every_student_before_and_after(run):
    out, results = run
    assert [(r["name"], r["variant"]) for r in results["students"]] == [
        (name, variant) for name in ("distilbert", "pkd", "tinybert") for variant in ("before", "after")
    ]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    for path in (out / "results.json", *(out / "models").glob("*.json")):  # no machine-specific paths
        assert str(out.resolve()) not in path.read_text(), path
    assert results["students"][0]["extraction"]["options"]["teacher"] == "checkpoints/teacher"
    assert results["data"]["dev"] == 128 and results["paper"] == PAPER_TABLE9


def test_accuracy_matches_the_training_run_and_krs_the_formula(run):
    out, results = run
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    trained = {(m["name"], m["variant"]): m["dev_accuracy"] for m in manifest["models"]}
    # the trainer measured dev accuracy with its own loop; the evaluation recomputes it from the logits
    assert results["teacher"]["accuracy"] == pytest.approx(trained[("teacher", None)], abs=1e-4)
    for row in results["students"]:
        assert row["accuracy"] == pytest.approx(trained[(row["name"], row["variant"])], abs=1e-4)
        assert row["quality_retained"] == pytest.approx(row["accuracy"] / results["teacher"]["accuracy"])
        assert row["krs"] == pytest.approx(knowledge_retention_score(row["fss"], row["aoag"], alpha=0.5, beta=0.5))
        assert 0.0 <= row["fss"] <= 1.0 and 0.0 <= row["aoag"] <= 1.0
        assert row["aoag"] == pytest.approx(row["extraction"]["aoag"]) and row["mean_kl"] >= 0.0
        matrix = np.array(row["extraction"]["cross_layer_cka"]["matrix"], dtype=float)
        assert matrix.shape == (5, row["num_layers"] + 1)  # teacher: embeddings + 4 layers
        assert matrix[-1, -1] == pytest.approx(row["fss"])  # final layer vs final layer is the FSS pair


def test_table_and_figures_are_written(run):
    out, results = run
    table = (out / "table.md").read_text()
    for name in ("DistilBERT-style", "PKD", "TinyBERT-style"):
        assert table.count(f"| {name} |") == 1
        for variant in ("before", "after"):
            assert f"| {name} {variant} |" in table  # the diagnostics table
    first = results["students"][0]
    assert f"{first['krs']:.3f}" in table and "| 89.31% → 92.27% |" in table and "| 0.41 → 0.68 |" in table
    for name in results["files"].values():
        assert (out / name).is_file()
    pngs = [n for n in results["files"].values() if n.endswith(".png")]
    assert len(pngs) == 7  # alpha sensitivity + one heatmap per student model
    assert all((out / n).read_bytes()[:8] == PNG for n in pngs)


def test_each_student_has_its_report(run):
    out, results = run
    for row in results["students"]:
        report = json.loads((out / row["report"]).read_text())
        assert report["schema_version"] == "1.0"
        assert report["headline"]["krs"] == pytest.approx(row["krs"], abs=1e-9)
        assert report["quality"]["student"]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-9)
        low, high = row["krs_interval"]
        assert low <= row["krs"] <= high
        assert row["ece"]["student"] == report["calibration"]["student"]["ece"]
        assert row["verdict"] in {"excellent", "good", "acceptable", "weak"}


def test_skip_training_reevaluates_the_same_models(run, tmp_path):
    out, results = run
    again = reproduce_sst2("smoke", tmp_path, work_dir=out / "checkpoints", skip_training=True,
                           bootstrap=0, measure_speed=False, progress=False)
    assert again["timings"]["training_seconds"] is None
    for a, b in zip(results["students"], again["students"], strict=True):
        assert a["krs"] == pytest.approx(b["krs"], abs=1e-9) and a["accuracy"] == b["accuracy"]


def test_skip_training_without_an_earlier_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"no earlier run .*manifest\.json missing"):
        reproduce_sst2("smoke", tmp_path, skip_training=True, progress=False)
    with pytest.raises(ValueError, match="scale"):
        reproduce_sst2("huge", tmp_path, progress=False)


def test_render_table_marks_missing_variants():
    row = {"name": "pkd", "variant": "after", "accuracy": 0.9, "quality_retained": 0.95, "krs": 0.7, "fss": 0.6,
           "aoag": 0.8, "num_layers": 3, "hidden_size": 384, "parameters": 17_400_000}
    table = render_table({"teacher": {"accuracy": 0.947, "num_layers": 6, "hidden_size": 384, "parameters": 22.7e6,
                                      "init": "minilm"}, "students": [row], "scale": "x", "data": {"dev": 872}})
    assert "| PKD | 3×384 | 17.4 M | — → 90.00% | — → 93.12% | 95.0% | — → 0.700 | — → — | — → 0.600 | — → 0.800 |" in table
    assert "dev accuracy 94.70%" in table


def test_alpha_curves_figure(tmp_path):
    path = plot_alpha_sensitivity_curves({"a-before": (0.4, 0.9), "a-after": (0.7, 0.95), "b": (0.2, 0.3)},
                                         tmp_path / "alpha.png", alpha=0.5)
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="`curves`"):
        plot_alpha_sensitivity_curves({}, tmp_path / "x.png")


def test_extra_seeds_measure_run_to_run_variation(tmp_path):
    from knowledge_retention.distillation.scales import SCALES

    own = SCALES["smoke"].seed
    results = reproduce_sst2("smoke", tmp_path, students=["tinybert"], extra_seeds=[own, 7], bootstrap=0,
                             measure_speed=False, progress=False)
    seeds = results["seeds"]
    assert seeds["seeds"] == sorted([own, 7])  # the scale's own seed is not trained twice
    assert (tmp_path / "checkpoints" / "seeds" / "7" / "manifest.json").is_file()
    assert not (tmp_path / "checkpoints" / "seeds" / str(own)).exists()
    rows = {seed: {r["variant"]: r for r in seeds["per_seed"][str(seed)]} for seed in (own, 7)}
    # a random-init student: another seed is another model, evaluated against the same teacher
    assert rows[own]["before"]["krs"] != rows[7]["before"]["krs"]
    gain = seeds["gains"][0]
    diffs = [rows[s]["after"]["krs"] - rows[s]["before"]["krs"] for s in sorted([own, 7])]
    assert gain["krs_gain_mean"] == pytest.approx(np.mean(diffs))
    assert gain["krs_gain_sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert gain["krs_raised"] == sum(d > 0 for d in diffs) and gain["n"] == 2
    table = (tmp_path / "table.md").read_text()
    assert f"Across 2 student seeds ({', '.join(map(str, sorted([own, 7])))};" in table
    assert "| TinyBERT-style |" in table
    again = reproduce_sst2("smoke", tmp_path / "again", work_dir=tmp_path / "checkpoints", skip_training=True,
                           students=["tinybert"], extra_seeds=[7], bootstrap=0, measure_speed=False, progress=False)
    assert again["seeds"]["per_seed"]["7"] == seeds["per_seed"]["7"]
