"""The digits reproduction at smoke scale, end to end: the image folder as `datasets` reads it, the
trainings, the engine's scores, and every number of results.json against a direct recomputation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from knowledge_retention import compute_krs
from knowledge_retention._validation import InputError
from knowledge_retention.distillation.manifest import load_manifest
from knowledge_retention.distillation.vision.data import load_digits_imagefolder, write_digits_imagefolder
from knowledge_retention.distillation.vision.models import SCALES, HintRegressor, feature_map, get_scale
from knowledge_retention.distillation.vision.report import PAPER_FIGURE3, PAPER_PEARSON_R, render_table
from knowledge_retention.distillation.vision.run import KRS_OPTIONS, evaluate_run, reproduce_vision

PNG = b"\x89PNG\r\n\x1a\n"
VARIANTS = ("before", "kd", "fitnet")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision-smoke")
    return out, reproduce_vision("smoke", out, progress=False)


@pytest.fixture(scope="module")
def again(run):
    """The same checkpoints evaluated a second time, keeping the arrays the engine returns."""
    out, _ = run
    manifest = load_manifest(out / "checkpoints")
    test = load_digits_imagefolder(out / "checkpoints" / "imagefolder")["test"]
    return manifest, test, evaluate_run(manifest, test, progress=False)


def test_image_folder_loads_through_datasets_with_the_digits_labels(tmp_path):
    from datasets import Image
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    info = write_digits_imagefolder(tmp_path, image_size=16, max_per_split=30)
    assert info["splits"] == {"train": 30, "test": 30}
    data = load_digits_imagefolder(tmp_path)
    assert data["train"].features["label"].names == [str(d) for d in range(10)]
    digits = load_digits()
    raw = data["test"].cast_column("image", Image(decode=False))
    for row in raw:
        index = int(re.fullmatch(r"(\d+)\.png", Path(row["image"]["path"]).name).group(1))
        assert row["label"] == digits.target[index]  # label id = the digit, from the folder name
        expected = PILImage.fromarray(np.round(digits.images[index] * 255 / 16).astype(np.uint8), mode="L").resize(
            (16, 16), PILImage.Resampling.BICUBIC).convert("RGB")
        assert np.array_equal(np.asarray(PILImage.open(row["image"]["path"])), np.asarray(expected))
    assert sorted(set(data["test"]["label"])) == list(range(10))  # stratified: every digit held out
    again = write_digits_imagefolder(tmp_path, image_size=16, max_per_split=30)  # same settings: reused
    assert again["fingerprint"] == info["fingerprint"]


def test_results_schema_matches_the_sst2_run(run):
    out, results = run
    cfg = SCALES["smoke"]
    names = [s.name for s in cfg.students]
    assert [(r["name"], r["variant"]) for r in results["students"]] == [(n, v) for n in names for v in VARIANTS]
    assert all(r["seed"] == cfg.seeds[0] for r in results["students"])
    assert sorted(results["seeds"]["per_seed"]) == sorted(str(s) for s in cfg.seeds)
    assert all(len(rows) == len(names) * 3 for rows in results["seeds"]["per_seed"].values())
    assert results["departures"] and all({"what", "paper", "here", "why"} <= set(d) for d in results["departures"])
    assert results["setting"]["alpha"] == 0.3 and results["setting"]["beta"] == 0.7
    assert results["paper"]["figure3"] == PAPER_FIGURE3 and results["paper"]["pearson_r"] == PAPER_PEARSON_R
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert str(out.resolve()) not in (out / "results.json").read_text()  # no machine-specific paths
    for row in results["students"]:
        assert row["extraction"]["alpha"] == 0.3 and row["extraction"]["num_examples"] == results["data"]["test"]
        cross = row["extraction"]["cross_layer_cka"]
        assert np.asarray(cross["matrix"], dtype=float).shape == (len(cross["teacher_layers"]),
                                                                  len(cross["student_layers"]))
    for name in results["files"].values():
        assert (out / name).is_file(), name
    for key, name in results["files"].items():
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG, key
    assert {f"cka_{n}-{v}" for n in names for v in VARIANTS} | {"alpha_sensitivity_kd", "alpha_sensitivity_fitnet",
                                                                "krs_vs_accuracy", "paper_comparison"} <= set(results["files"])
    assert (out / "table.md").read_text() == render_table(results)


def test_each_student_trained_three_times_from_one_start(run):
    out, _ = run
    manifest = load_manifest(out / "checkpoints")
    students = [m for m in manifest["models"] if m["role"] == "student"]
    for seed in manifest["seeds"]:
        for name in {m["name"] for m in students}:
            runs = [m for m in students if m["seed"] == seed and m["name"] == name]
            assert sorted(m["variant"] for m in runs) == sorted(VARIANTS)
            assert len({m["init_fingerprint"] for m in runs}) == 1
    fingerprints = {m["seed"]: m["init_fingerprint"] for m in students if m["name"] == students[0]["name"]}
    assert len(set(fingerprints.values())) == len(manifest["seeds"])  # seeds start apart


def test_scores_equal_a_direct_recomputation_from_the_kept_arrays(run, again):
    _, results = run
    manifest, test, evaluated = again
    labels = np.asarray(test["label"])
    rows = {(str(r["seed"]), r["name"], r["variant"]): r for r in evaluated["students"]}
    for seed, light in results["seeds"]["per_seed"].items():
        for row in light:
            arrays = evaluated["arrays"][int(seed)][f"{row['name']}-{row['variant']}"]
            direct = compute_krs(arrays["teacher_features"], arrays["student_features"], arrays["teacher_logits"],
                                 arrays["student_logits"], task="classification", alpha=0.3, beta=0.7)
            for key in ("krs", "fss", "aoag"):
                assert row[key] == pytest.approx(direct[key], abs=1e-9), (seed, row["name"], row["variant"], key)
            accuracy = float((arrays["student_logits"].argmax(axis=1) == labels).mean())
            assert row["accuracy"] == pytest.approx(accuracy, abs=1e-12)
            assert row["krs"] == pytest.approx(rows[(seed, row["name"], row["variant"])]["krs"], abs=1e-9)
    # the engine's preprocessing is the training's: each student's accuracy is the one measured after training
    trained = {(str(m["seed"]), m["name"], m["variant"]): m["dev_accuracy"] for m in manifest["models"]
               if m["role"] == "student"}
    for key, row in rows.items():
        assert row["accuracy"] == pytest.approx(trained[key], abs=1e-12), key


def test_kept_features_are_the_final_hidden_states_mean_pooled(again):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    manifest, test, evaluated = again
    root = Path(manifest["root"])
    seed = manifest["seeds"][0]
    for entry in (m for m in manifest["models"] if m["role"] == "student" and m["seed"] == seed
                  and m["variant"] == "kd"):
        model = AutoModelForImageClassification.from_pretrained(root / entry["path"]).eval()
        processor = AutoImageProcessor.from_pretrained(root / entry["path"])
        with torch.no_grad():
            out = model(**processor(images=[im.convert("RGB") for im in test["image"]], return_tensors="pt"),
                        output_hidden_states=True)
        last = out.hidden_states[-1]
        pooled = last.mean(dim=(2, 3)) if last.dim() == 4 else last[:, 1:].mean(dim=1)  # ViT: patches, no [CLS]
        arrays = evaluated["arrays"][seed][f"{entry['name']}-kd"]
        np.testing.assert_allclose(arrays["student_features"], pooled.double().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(arrays["student_logits"], out.logits.double().numpy(), rtol=1e-4, atol=1e-5)


def test_gains_and_correlation_follow_from_the_rows(run):
    from scipy.stats import pearsonr

    _, results = run
    per_seed = results["seeds"]["per_seed"]
    for gain in results["seeds"]["gains"]:
        diffs = []
        for rows in per_seed.values():
            by = {r["variant"]: r for r in rows if r["name"] == gain["name"]}
            diffs.append(by[gain["method"]]["krs"] - by["before"]["krs"])
        assert gain["krs_gain_mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
        assert gain["krs_raised"] == sum(d > 0 for d in diffs)
        pooled = results["seeds"]["paired_bootstrap"]["gains"][f"{gain['name']}/{gain['method']}"]
        assert pooled["krs"]["gain"] == pytest.approx(np.mean(diffs), abs=1e-9)  # point estimate = the seeds' mean
        assert pooled["krs"]["low"] <= pooled["krs"]["high"]
        for seed, rows in per_seed.items():
            per = results["seeds"]["paired_bootstrap_per_seed"]["gains"][seed][gain["name"]][gain["method"]]
            by = {r["variant"]: r for r in rows if r["name"] == gain["name"]}
            assert per["krs"]["difference"] == pytest.approx(by[gain["method"]]["krs"] - by["before"]["krs"], abs=1e-9)
    everyone = [r for rows in per_seed.values() for r in rows]
    corr = results["correlation"]
    assert corr["n"] == len(everyone)
    if corr["r"] is not None:
        assert corr["r"] == pytest.approx(pearsonr([r["krs"] for r in everyone], [r["accuracy"] for r in everyone])[0])


def test_fitnet_regressor_maps_a_vit_block_onto_a_cnn_stage():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # [CLS] + a 4 x 4 grid, width 3
    grid = feature_map(tokens)
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2, :])  # patch (row 1, column 2)
    assert HintRegressor(3, 5, (2, 2))(tokens).shape == (2, 5, 2, 2)


def test_user_mistakes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="`scale` must be one of"):
        get_scale("huge")
    with pytest.raises(InputError, match="`skip_training`"):
        reproduce_vision("smoke", tmp_path, skip_training=True, progress=False)
    with pytest.raises(InputError, match="`root` must be a folder written by"):
        load_digits_imagefolder(tmp_path)
    with pytest.raises(InputError, match="`image_size` must be an int >= 8"):
        write_digits_imagefolder(tmp_path, image_size=4)
    assert KRS_OPTIONS["alpha"] == 0.3


def test_cli_refuses_skip_training_without_a_run(tmp_path, capsys):
    from knowledge_retention.cli import main

    code = main(["reproduce-vision", "--skip-training", "--work-dir", str(tmp_path), "--output-dir", str(tmp_path)])
    assert code == 2
    assert "--skip-training" in capsys.readouterr().err


def test_synthetic_segmentation_demo_scores_with_the_segmentation_preset(tmp_path):
    from knowledge_retention.distillation.vision.segmentation import (
        CLASSES,
        draw_scenes,
        run_segmentation_demo,
    )

    images, masks = draw_scenes(8, image_size=32, seed=3)
    assert images.shape == (8, 32, 32, 3) and masks.shape == (8, 32, 32)
    assert set(np.unique(masks)) <= set(range(len(CLASSES))) and (masks > 0).any(axis=(1, 2)).all()
    assert images[masks > 0].mean() > images[masks == 0].mean()  # shapes are painted brighter than the noise
    np.testing.assert_array_equal(draw_scenes(8, image_size=32, seed=3)[1], masks)  # reproducible
    results = run_segmentation_demo("smoke", tmp_path, progress=False)
    assert results["synthetic"] is True and results["setting"]["alpha"] == 0.7
    assert [(r["seed"], r["variant"]) for r in results["students"]] == [(42, "before"), (42, "after")]
    for row in results["students"]:
        assert row["krs"] == pytest.approx(0.7 * row["fss"] + 0.3 * row["aoag"], abs=1e-9)
        assert row["extraction"]["options"]["task"] == "segmentation"
    assert (tmp_path / "table.md").read_text().startswith("**Synthetic**")
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))


def test_pooled_gain_bootstrap_equals_the_gram_matrix_reference(again):
    from knowledge_retention.distillation.sst2_evaluation import pooled_paired_bootstrap
    from knowledge_retention.distillation.vision.report import pooled_gain_bootstrap

    _, test, evaluated = again
    labels = np.asarray(test["label"])
    ours = pooled_gain_bootstrap(evaluated["arrays"], labels, alpha=0.3, n_resamples=60, seed=5)
    # the SST-2 run's implementation (N x N Gram matrices re-centred per replicate) on the same pairs
    reference_input = {seed: {f"{name}/{method}-{side}": models[f"{name}-{variant}"]
                              for name in {k.rpartition("-")[0] for k in models} for method in ("kd", "fitnet")
                              for side, variant in (("before", "before"), ("after", method))}
                       for seed, models in evaluated["arrays"].items()}
    reference = pooled_paired_bootstrap(reference_input, labels, n_resamples=60, seed=5, alpha=0.3)
    assert sorted(ours["gains"]) == sorted(reference["gains"])
    for key, entry in ours["gains"].items():
        for stat in ("accuracy", "krs"):  # same resamples (one stream of draws), same statistic
            for bound in ("gain", "low", "high"):
                assert entry[stat][bound] == pytest.approx(reference["gains"][key][stat][bound], abs=1e-9), (key, stat)
