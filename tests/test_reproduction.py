"""The SST-2 reproduction at smoke scale: train, evaluate, tabulate, and the numbers agree with the
training run's own accuracy and with the library's KRS formula."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knowledge_retention import knowledge_retention_score
from knowledge_retention.plots import plot_alpha_sensitivity_curves
from knowledge_retention.reporting import SCHEMA_VERSION
from knowledge_retention.reproduction import PAPER_TABLE9, render_table, reproduce_sst2

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(smoke_run):
    """``reproduce_sst2("smoke", out, bootstrap=50, measure_speed=False)``, trained once per session
    (``tests/conftest.py``); read-only."""
    return smoke_run.out, smoke_run.results


def test_results_cover_every_student_before_and_after(run):
    out, results = run
    assert [(r["name"], r["variant"]) for r in results["students"]] == [
        (name, variant) for name in ("distilbert", "pkd", "tinybert", "distilbert_teacher_init")
        for variant in ("before", "after")
    ]
    assert [r["init_from"] for r in results["students"]] == ["pretrained"] * 6 + ["teacher"] * 2
    assert results["general_distillation"][0]["path"] == "general/tinybert"
    for key in ("teacher_seconds", "general_distillation_seconds", "first_seed_students_seconds",
                "evaluation_seconds", "wall_seconds"):
        assert results["timings"][key] >= 0, key
    assert results["departures"] and all({"what", "paper", "here", "why"} <= set(d) for d in results["departures"])
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
    for name in ("DistilBERT-style", "PKD", "TinyBERT-style", "DistilBERT-style, teacher init (ablation)"):
        assert table.count(f"| {name} |") == 1
        for variant in ("before", "after"):
            assert f"| {name} {variant} |" in table  # the diagnostics table
    first = results["students"][0]
    assert f"{first['krs']:.3f}" in table and "| 89.31% → 92.27% |" in table and "| 0.41 → 0.68 |" in table
    for name in results["files"].values():
        assert (out / name).is_file()
    pngs = [n for n in results["files"].values() if n.endswith(".png")]
    assert len(pngs) == 10  # alpha sensitivity (CKA and cosine FSS) + one heatmap per student model
    assert "alpha_sensitivity_cosine" in results["files"]
    assert all((out / n).read_bytes()[:8] == PNG for n in pngs)


def test_each_student_has_its_report(run):
    out, results = run
    for row in results["students"]:
        report = json.loads((out / row["report"]).read_text())
        assert report["schema_version"] == SCHEMA_VERSION == "2.0"  # one report schema for every task
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
    row = {"name": "pkd", "variant": "after", "init_from": "pretrained", "accuracy": 0.9, "quality_retained": 0.95, "krs": 0.7, "fss": 0.6,
           "aoag": 0.8, "num_layers": 3, "hidden_size": 384, "parameters": 17_400_000}
    table = render_table({"teacher": {"accuracy": 0.947, "num_layers": 6, "hidden_size": 384, "parameters": 22.7e6,
                                      "init": "minilm"}, "students": [row], "scale": "x", "data": {"dev": 872}})
    assert ("| PKD | P | 3×384 | 17.4 M | — → 90.00% | — → 93.12% | — → 0.700 | — → — | — → — | — → 0.600 | — → — "
            "| — → 0.800 |") in table
    assert "dev accuracy 94.70%" in table


def test_alpha_curves_figure(tmp_path):
    path = plot_alpha_sensitivity_curves({"a-before": (0.4, 0.9), "a-after": (0.7, 0.95), "b": (0.2, 0.3)},
                                         tmp_path / "alpha.png", alpha=0.5)
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="`curves`"):
        plot_alpha_sensitivity_curves({}, tmp_path / "x.png")


def test_extra_seeds_measure_run_to_run_variation(smoke_run, tmp_path):
    from knowledge_retention.distillation.scales import SCALES

    own = SCALES["smoke"].seed
    shared = {"teacher_from": smoke_run.work, "general_from": smoke_run.work}  # the seeds vary the students only
    results = reproduce_sst2("smoke", tmp_path, students=["tinybert"], extra_seeds=[own, 7], bootstrap=0,
                             measure_speed=False, progress=False, **shared)
    seeds = results["seeds"]
    assert seeds["seeds"] == sorted([own, 7])  # the scale's own seed is not trained twice
    assert (tmp_path / "checkpoints" / "seeds" / "7" / "manifest.json").is_file()
    assert not (tmp_path / "checkpoints" / "seeds" / str(own)).exists()
    rows = {seed: {r["variant"]: r for r in seeds["per_seed"][str(seed)]} for seed in (own, 7)}
    # the general-distilled start is shared; another seed draws another head and batch order
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


def test_fss_cosine_is_the_library_cosine_of_the_final_cls_states(run):
    """fss_cosine on the run's own features: the features are the final-layer [CLS] states of the saved
    checkpoints (recomputed here with a plain forward pass), and fss_cosine is the library's
    mean_cosine_similarity of them (and numpy's mean cosine)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from knowledge_retention.distillation.scales import SCALES
    from knowledge_retention.distillation.sst2 import load_pipeline_splits
    from knowledge_retention.reproduction import evaluate_manifest
    from knowledge_retention.similarity import mean_cosine_similarity

    out, results = run
    cfg = SCALES["smoke"]
    dev = load_pipeline_splits(cfg)[2]
    again = evaluate_manifest(out / "checkpoints", dev, max_length=cfg.max_length, progress=False)
    texts = list(dev["sentence"][:16])

    def cls_states(path):
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        with torch.no_grad():
            return model(**batch, output_hidden_states=True).hidden_states[-1][:, 0].numpy()

    teacher_cls = cls_states(out / "checkpoints" / "teacher")
    for row, fresh in zip(results["students"], again["students"], strict=True):
        arrays = again["arrays"][f"{row['name']}-{row['variant']}"]
        np.testing.assert_allclose(arrays["teacher_features"][:16], teacher_cls, rtol=1e-4, atol=1e-5)
        student_cls = cls_states(out / "checkpoints" / "students" / f"{row['name']}-{row['variant']}")
        np.testing.assert_allclose(arrays["student_features"][:16], student_cls, rtol=1e-4, atol=1e-5)
        t, s_ = arrays["teacher_features"], arrays["student_features"]
        if t.shape[1] != s_.shape[1]:
            assert row["fss_cosine"] is None and row["krs_cosine"] is None  # TinyBERT-style: other width
            continue
        numpy_cosine = float(np.mean(np.sum(t * s_, axis=1) / (np.linalg.norm(t, axis=1) * np.linalg.norm(s_, axis=1))))
        assert row["fss_cosine"] == pytest.approx(mean_cosine_similarity(t, s_), abs=1e-9) == fresh["fss_cosine"]
        assert row["fss_cosine"] == pytest.approx(numpy_cosine, abs=1e-6)
        assert row["krs_cosine"] == pytest.approx(
            knowledge_retention_score(max(0.0, row["fss_cosine"]), row["aoag"], alpha=0.5, beta=0.5))
    assert any(r["fss_cosine"] is not None for r in results["students"])


def test_pooled_paired_bootstrap_point_estimate_and_interval():
    from knowledge_retention.agreement import per_example_kl
    from knowledge_retention.reproduction import pooled_paired_bootstrap
    from knowledge_retention.similarity import linear_cka

    rng = np.random.default_rng(3)
    n = 120
    labels = rng.integers(0, 2, size=n)
    teacher = rng.normal(size=(n, 6))
    t_logits = np.stack([teacher[:, 0], -teacher[:, 0]], axis=1)
    per_seed = {}
    expected_acc, expected_krs = [], []
    for seed in (0, 1):
        models = {}
        for variant, noise in (("before", 1.5), ("after", 0.3)):
            feats = teacher @ rng.normal(size=(6, 4)) * 0.1 + teacher[:, :4] + noise * rng.normal(size=(n, 4))
            logits = t_logits + noise * rng.normal(size=(n, 2))
            models[f"m-{variant}"] = {"teacher_features": teacher, "student_features": feats,
                                      "teacher_logits": t_logits, "student_logits": logits}
        per_seed[seed] = models

        def stats(m):
            acc = float(np.mean(m["student_logits"].argmax(1) == labels))
            aoag = float(np.mean(np.exp(-per_example_kl(m["teacher_logits"], m["student_logits"]))))
            return acc, 0.5 * linear_cka(m["teacher_features"], m["student_features"]) + 0.5 * aoag

        (acc_b, krs_b), (acc_a, krs_a) = stats(models["m-before"]), stats(models["m-after"])
        expected_acc.append(acc_a - acc_b)
        expected_krs.append(krs_a - krs_b)
    out = pooled_paired_bootstrap(per_seed, labels, n_resamples=200, seed=0)
    gain = out["gains"]["m"]
    assert gain["seeds"] == [0, 1]
    assert gain["accuracy"]["gain"] == pytest.approx(np.mean(expected_acc), abs=1e-12)
    assert gain["krs"]["gain"] == pytest.approx(np.mean(expected_krs), abs=1e-9)
    for key in ("accuracy", "krs"):
        assert gain[key]["low"] <= gain[key]["gain"] <= gain[key]["high"]
    assert gain["krs"]["excludes_zero"] and gain["krs"]["low"] > 0  # much less noise after: a clear gain
    with pytest.raises(ValueError, match="n_resamples"):
        pooled_paired_bootstrap(per_seed, labels, n_resamples=0)


def test_full_scale_dry_run_plan(monkeypatch, capsys):
    from knowledge_retention.cli import main
    from knowledge_retention.reproduction import full_scale_plan, render_plan

    plan = full_scale_plan(check_hub=False)
    assert plan["stages"][0] == {"stage": "teacher", "model": "bert-base-uncased fine-tuned", "steps": 2105 * 3,
                                 "seconds": round(2105 * 3 * plan["assumed_step_seconds"]["teacher"])}
    tiny = next(s for s in plan["stages"] if s["stage"] == "tinybert-after x 3")
    assert tiny["steps"] == 3 * (2105 * 3 + 2105 * 10)  # prediction 3 epochs + intermediate 10 epochs
    assert plan["total_steps"] == sum(s["steps"] for s in plan["stages"]) and plan["gpu_hours_estimate"] > 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache-for-the-test")
    assert main(["reproduce-sst2", "--scale", "full", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    offline = [line for line in printed if line.startswith("offline:")]
    assert offline == [render_plan({**plan, "unreachable": ["bert-base-uncased", "distilbert-base-uncased",
                                                             "huawei-noah/TinyBERT_General_6L_768D"]}).splitlines()[-1]]
    assert any("GPU-hours" in line for line in printed)
    assert main(["reproduce-sst2", "--scale", "smoke", "--dry-run"]) != 0


def test_krs_during_training_comes_from_the_reproduction_s_own_trainer(run, smoke_run, tmp_path):
    """``krs_every``: KRSCallback inside the reproduction's DistillationTrainer logs KRS at the start,
    every N steps and at the end; the last value is the evaluation's KRS of the trained student, and
    logging it changes nothing of the training (same students as the run without it)."""
    _, plain = run
    shared = {"teacher_from": smoke_run.work, "general_from": smoke_run.work}  # the students are retrained
    results = reproduce_sst2("smoke", tmp_path, students=["pkd", "tinybert"], krs_every=2, bootstrap=0,
                             measure_speed=False, progress=False, **shared)
    during = results["krs_during_training"]
    assert sorted(during) == ["pkd-after", "pkd-before", "tinybert-after", "tinybert-before"]
    rows = {f"{r['name']}-{r['variant']}": r for r in results["students"]}
    before = {f"{r['name']}-{r['variant']}": r for r in plain["students"]}
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    steps = {f"{m['name']}-{m['variant']}": m for m in manifest["models"] if m["role"] == "student"}
    for label, run_log in during.items():
        history = run_log["history"]
        assert run_log["every_steps"] == 2
        logged = [h["step"] for h in history]
        final = max(s["steps"] for s in steps[label]["stages"]) if "stages" in steps[label] else logged[-1]
        assert logged[0] == 0 and logged[-1] == final and all(s % 2 == 0 for s in logged[1:-1]), logged
        assert all(0.0 <= h["krs"] <= 1.0 and h["krs"] == pytest.approx(0.5 * h["fss"] + 0.5 * h["aoag"])
                   for h in history)
        # the curve ends at the evaluation's KRS of the saved student (other batch sizes: float32 rounding)
        assert history[-1]["krs"] == pytest.approx(rows[label]["krs"], abs=1e-5), label
        assert history[-1]["fss"] == pytest.approx(rows[label]["fss"], abs=1e-5), label
        # the evaluations during training leave the training itself untouched
        assert rows[label]["accuracy"] == before[label]["accuracy"], label
        assert rows[label]["krs"] == pytest.approx(before[label]["krs"], abs=1e-6), label
    assert (tmp_path / "krs_during_training.png").read_bytes().startswith(PNG)
    assert results["files"]["krs_during_training"] == "krs_during_training.png"
    assert "--krs-every 2" in results["command"]
    with pytest.raises(ValueError, match=r"`krs_every` must be an int >= 1"):
        reproduce_sst2("smoke", tmp_path / "bad", krs_every=0, progress=False)
