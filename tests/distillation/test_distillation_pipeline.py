"""The smoke pipeline end to end, the manifest boundary, and the cached default pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge_retention.distillation import defaults, scales
from knowledge_retention.distillation import manifest as manifest_mod
from knowledge_retention.distillation.scales import SCALES, StudentSpec
from knowledge_retention.distillation.sst2 import train_pipeline


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    calls = []
    out = train_pipeline("smoke", tmp_path / "run", progress=False, evaluate_fn=lambda p: calls.append(p) or "ok")
    assert calls == [tmp_path / "run" / "manifest.json"] and out["evaluation"] == "ok"
    models = out["models"]
    roles = [(m["role"], m["name"], m["variant"]) for m in models]
    assert roles == [("teacher", "teacher", None)] + [
        ("student", name, variant) for name in ("distilbert", "pkd", "tinybert") for variant in ("before", "after")
    ]
    assert [m["method"] for m in models[1:]] == ["hard", "distilbert", "hard", "pkd", "hard", "tinybert"]
    assert models[0]["dev_accuracy"] > 0.9  # the smoke teacher learns the templated task
    for entry in models:
        folder = tmp_path / "run" / entry["path"]
        run_config = json.loads((folder / "run_config.json").read_text())
        assert run_config["seed"] == 42 and run_config["wall_seconds"] >= 0 and "train_loss" in run_config
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    tinybert_after = json.loads((tmp_path / "run/students/tinybert-after/run_config.json").read_text())
    assert [s["stage"] for s in tinybert_after["stages"]] == ["intermediate", "prediction"]
    assert not (tmp_path / "run" / "_scratch").exists()

    loaded = manifest_mod.load_manifest(tmp_path / "run")
    pairs = manifest_mod.pairs_from_manifest(loaded)
    assert len(pairs) == 6
    assert all(Path(p["teacher"]) == (tmp_path / "run" / "teacher").resolve() for p in pairs)
    assert {(p["name"], p["variant"]) for p in pairs} == {(m["name"], m["variant"]) for m in models[1:]}


def test_pipeline_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="`scale` must be one of"):
        train_pipeline("huge", tmp_path)
    with pytest.raises(ValueError, match="`students` must be a subset"):
        train_pipeline("smoke", tmp_path, students=["bert-of-theseus"])
    with pytest.raises(ValueError, match="`variants`"):
        train_pipeline("smoke", tmp_path, variants=["during"])


def test_manifest_errors(tmp_path):
    with pytest.raises(ValueError, match="manifest.json"):
        manifest_mod.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not a"):
        manifest_mod.load_manifest(tmp_path)


def test_scale_configs_are_consistent():
    assert set(SCALES) == {"smoke", "quick", "cpu", "full"}
    cpu = SCALES["cpu"]
    assert cpu.teacher == "minilm" and cpu.teacher_train_size == 24000 and cpu.teacher_lr == 1e-4
    assert [(s.name, s.init, s.num_layers) for s in cpu.students] == [
        ("distilbert", "every_other", 3), ("pkd", "lower", 3), ("tinybert", "narrow", 4)
    ]
    full = SCALES["full"]
    assert full.teacher == "bert-base-uncased" and full.teacher_epochs == 3 and full.batch_size == 32
    assert all(s.num_layers == 6 for s in full.students)
    quick = SCALES["quick"]
    assert [(s.name, s.method) for s in quick.students] == [("distilbert", "vanilla")] and quick.variants == ("before", "after")


@pytest.fixture
def tiny_quick_scale(monkeypatch):
    """Make the default pair's recipe tiny so that building it takes seconds."""
    tiny = SCALES["smoke"].replace(
        name="quick", students=(StudentSpec("distilbert", "every_other", 2, "vanilla"),), variants=("before", "after")
    )
    monkeypatch.setitem(scales.SCALES, "quick", tiny)
    return tiny


@pytest.mark.slow
def test_default_pair_is_built_once_and_reused(tmp_path, tiny_quick_scale, monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_RETENTION_CACHE", str(tmp_path / "cache"))
    pair = defaults.ensure_default_pair(progress=False)
    folder = defaults.default_pair_dir()
    assert folder.parent == tmp_path / "cache" / "default_pair"
    assert pair == {"teacher": str(folder / "teacher"), "student": str(folder / "students/distilbert-after"),
                    "baseline": str(folder / "students/distilbert-before")}
    marker = json.loads((folder / defaults.COMPLETE).read_text())
    assert marker["teacher_dev_accuracy"] > 0.9
    assert not list(folder.parent.glob("*.partial-*"))

    def boom(*args, **kwargs):
        raise AssertionError("the cached pair must be reused, not retrained")

    monkeypatch.setattr("knowledge_retention.distillation.sst2.train_pipeline", boom)
    assert defaults.ensure_default_pair(progress=False) == pair

    # a half-written cache (no completion marker) is never reused: it is rebuilt
    (folder / defaults.COMPLETE).unlink()
    with pytest.raises(AssertionError, match="reused, not retrained"):
        defaults.ensure_default_pair(progress=False)
    assert not folder.exists() and not list(folder.parent.glob("*.partial-*"))


def test_version_hash_follows_the_recipe(tmp_path, monkeypatch):
    before = defaults.version_hash()
    monkeypatch.setitem(scales.SCALES, "quick", SCALES["quick"].replace(teacher_train_size=123))
    assert defaults.version_hash() != before
    assert defaults.default_pair_dir(tmp_path).parent == tmp_path / "default_pair"
