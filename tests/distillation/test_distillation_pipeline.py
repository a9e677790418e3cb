"""The smoke pipeline end to end, the manifest boundary, and the cached default pair."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from knowledge_retention.distillation import defaults, scales
from knowledge_retention.distillation import manifest as manifest_mod
from knowledge_retention.distillation.scales import SCALES, StudentSpec
from knowledge_retention.distillation.sst2 import train_pipeline


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(smoke_run):
    # the session's smoke run (tests/conftest.py): train_pipeline("smoke", run, evaluate_fn=...) inside reproduce_sst2
    calls, out, run = smoke_run.evaluate_calls, smoke_run.training, smoke_run.work
    assert calls == [run / "manifest.json"] and out["evaluation"] == "ok"
    models = out["models"]
    roles = [(m["role"], m["name"], m["variant"]) for m in models]
    names = ("distilbert", "pkd", "tinybert", "distilbert_teacher_init")
    assert roles == [("teacher", "teacher", None)] + [
        ("student", name, variant) for name in names for variant in ("before", "after")
    ]
    assert [m["method"] for m in models[1:]] == ["hard", "distilbert", "hard", "pkd", "hard", "tinybert",
                                                 "hard", "distilbert"]
    assert models[0]["dev_accuracy"] > 0.9  # the smoke teacher learns the templated task
    for entry in models:
        folder = run / entry["path"]
        run_config = json.loads((folder / "run_config.json").read_text())
        assert run_config["seed"] == 42 and run_config["wall_seconds"] >= 0 and "train_loss" in run_config
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    tinybert_after = json.loads((run / "students/tinybert-after/run_config.json").read_text())
    assert [s["stage"] for s in tinybert_after["stages"]] == ["intermediate", "prediction"]
    # TinyBERT's recipe: the hidden-state loss is on in the intermediate stage, soft targets only after it
    assert set(tinybert_after["stages"][0]["loss_weights"]) == {"embedding", "hidden", "attention"}
    assert tinybert_after["stages"][1]["loss_weights"] == {"soft": 1.0}
    general = out["general"][0]
    assert general["path"] == "general/tinybert" and general["stage"] == "intermediate"
    assert general["corpus_sentences"] == 512 and (run / "general/tinybert/config.json").is_file()
    assert not (run / "_scratch").exists()

    loaded = manifest_mod.load_manifest(run)
    pairs = manifest_mod.pairs_from_manifest(loaded)
    assert len(pairs) == 8
    assert all(Path(p["teacher"]) == (run / "teacher").resolve() for p in pairs)
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
    assert [(s.name, s.init, s.num_layers, s.init_from) for s in cpu.students] == [
        ("distilbert", "every_other", 3, "pretrained"), ("pkd", "lower", 3, "pretrained"),
        ("tinybert", "narrow", 4, "pretrained"), ("distilbert_teacher_init", "every_other", 3, "teacher"),
    ]
    tiny = cpu.students[2]  # TinyBERT-4's shape, and its recipe (hidden-state loss on, soft-only prediction)
    assert (tiny.hidden_size, tiny.intermediate_size, tiny.num_heads) == (312, 1200, 12)
    assert tiny.intermediate_loss_weights is None and tiny.prediction_hard_weight == 0
    assert [s.checkpoint for s in SCALES["full"].students][:3] == [
        "distilbert-base-uncased", None, "huawei-noah/TinyBERT_General_6L_768D"]
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


@pytest.mark.slow
def test_students_start_from_the_pretrained_model_never_the_teacher(smoke_run):
    """Rebuild every student's starting point from P (and from the trained teacher): the manifest's
    fingerprints must match P's build, never the teacher's, and before/after share theirs."""
    from transformers import AutoModelForSequenceClassification, set_seed

    from knowledge_retention.distillation.sst2 import (
        build_pretrained,
        build_student,
        init_fingerprint,
        load_tokenizer,
    )

    out, run = smoke_run.training, smoke_run.work  # the session's smoke run (tests/conftest.py)
    cfg = SCALES["smoke"]
    set_seed(cfg.seed)
    pretrained = build_pretrained(cfg, load_tokenizer())
    assert init_fingerprint(pretrained) == out["pretrained"]["fingerprint"]
    teacher = AutoModelForSequenceClassification.from_pretrained(run / "teacher")
    general = AutoModelForSequenceClassification.from_pretrained(run / "general" / "tinybert")
    prints = {}
    for m in out["models"][1:]:
        prints.setdefault(m["name"], set()).add(m["init_fingerprint"])
    specs = {spec.name: spec for spec in cfg.students}
    for name, found in prints.items():
        assert len(found) == 1, name  # "before" and "after" start from the same weights
        spec = specs[name]
        extra = {"general": general} if spec.init == "narrow" else {}
        from_p = init_fingerprint(build_student(spec, pretrained, seed=cfg.seed, teacher=teacher, **extra))
        assert found == {from_p}, name
        if spec.init != "narrow":
            as_if_teacher = dataclasses.replace(spec, init_from="teacher" if spec.init_from == "pretrained" else "pretrained")
            other = init_fingerprint(build_student(as_if_teacher, pretrained, seed=cfg.seed, teacher=teacher))
            assert other != from_p, name
    assert [m["init_from"] for m in out["models"][1:]] == ["pretrained"] * 6 + ["teacher"] * 2
    # a student from P copies P's blocks, not the teacher's (which fine-tuning moved)
    student = build_student(specs["pkd"], pretrained, seed=cfg.seed, teacher=teacher)
    weight = student.bert.encoder.layer[0].output.dense.weight
    assert torch.equal(weight, pretrained.bert.encoder.layer[0].output.dense.weight)
    assert not torch.equal(weight, teacher.bert.encoder.layer[0].output.dense.weight)
    # ... with a fresh head drawn from the seed, not P's or the teacher's
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert not torch.equal(student.classifier.weight, pretrained.classifier.weight)


def test_reused_teacher_must_have_the_same_settings(tmp_path):
    (tmp_path / "earlier").mkdir()
    manifest = {"format": manifest_mod.MANIFEST_FORMAT, "config": {**SCALES["smoke"].to_dict(), "teacher_lr": 1.0},
                "models": [{"role": "teacher", "name": "teacher", "variant": None, "path": "teacher"}]}
    (tmp_path / "earlier" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"teacher settings differ .*teacher_lr"):
        train_pipeline("smoke", tmp_path / "run", teacher_from=tmp_path / "earlier", progress=False)
