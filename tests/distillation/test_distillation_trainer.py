"""DistillationTrainer on tiny random models: losses go down, the teacher stays frozen, cache == live."""

from __future__ import annotations

import json

import pytest
import torch

from knowledge_retention.distillation.runs import make_training_args, predict_accuracy, run_training, save_run
from knowledge_retention.distillation.students import (
    every_other_layer_student,
    lower_layers_student,
    narrow_student,
)
from knowledge_retention.distillation.targets import TargetSpec, TrainingTargetCache, teacher_targets
from knowledge_retention.distillation.trainer import DistillationTrainer, plan_targets


def _args(tmp_path, **kwargs):
    options = {"learning_rate": 3e-3, "epochs": 2, "progress": False, "logging_steps": 1000}
    options.update(kwargs)
    return make_training_args(tmp_path / "scratch", **options)


def _trainer(student, tmp_path, data, **kwargs):
    dataset, collator = data
    args = _args(tmp_path, **kwargs.pop("args", {}))
    return DistillationTrainer(student, args, train_dataset=dataset, data_collator=collator, **kwargs)


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def test_hard_training_loss_decreases(make_bert, tiny_data, tmp_path):
    model = make_bert(layers=2)
    trainer = _trainer(model, tmp_path, tiny_data, method="hard", args={"epochs": 6, "learning_rate": 5e-3})
    before = trainer.evaluate(tiny_data[0])["eval_loss"]
    result = run_training(trainer)
    after = trainer.evaluate(tiny_data[0])["eval_loss"]
    assert after < before - 0.3
    assert result["steps"] == 48 and result["examples"] == 256
    assert predict_accuracy(model, tiny_data[0], tiny_data[1]) > 0.9


STUDENTS = {
    "every_other": lambda t: every_other_layer_student(t, 2),
    "lower": lambda t: lower_layers_student(t, 2),
    "narrow": lambda t: narrow_student(t.config, 2, 16, 32, 4, seed=0),
}


@pytest.mark.parametrize(
    ("method", "stage", "init", "terms"),
    [
        ("vanilla", None, "every_other", {"soft", "hard"}),
        ("distilbert", None, "every_other", {"soft", "hard", "cosine"}),
        ("pkd", None, "lower", {"soft", "hard", "patient"}),
        ("tinybert", "intermediate", "narrow", {"embedding", "hidden", "attention"}),
        ("tinybert", "prediction", "every_other", {"soft"}),
    ],
)
def test_distillation_loss_decreases(trained_teacher, tiny_data, tmp_path, method, stage, init, terms):
    teacher_state = {k: v.clone() for k, v in trained_teacher.state_dict().items()}
    student = STUDENTS[init](trained_teacher)
    trainer = _trainer(student, tmp_path, tiny_data, teacher=trained_teacher, method=method, stage=stage,
                       cache_teacher_outputs=True, args={"logging_steps": 4})
    assert set(trainer.loss_weights) == terms
    before = trainer.evaluate(tiny_data[0])["eval_loss"]
    result = run_training(trainer)
    after = trainer.evaluate(tiny_data[0])["eval_loss"]
    assert after < before
    assert result["teacher_cache"]["examples"] == 256  # computed once for the run
    assert {f"loss_{t}" for t in terms} <= set(result["log"][0])  # per-term logging
    # the teacher is frozen: eval mode, no grad, unchanged weights
    assert not trained_teacher.training
    assert not any(p.requires_grad for p in trained_teacher.parameters())
    for key, value in trained_teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key


def test_tinybert_projection_is_trained_not_saved(trained_teacher, tiny_data, tmp_path):
    student = narrow_student(trained_teacher.config, 2, 16, 32, 4, seed=0)
    trainer = _trainer(student, tmp_path, tiny_data, teacher=trained_teacher, method="tinybert", stage="intermediate")
    assert trainer.projection is not None and trainer.projection.in_features == 16
    start = trainer.projection.weight.detach().clone()
    run_training(trainer)
    assert not torch.equal(start, trainer.projection.weight)
    assert not any("projection" in k or k.startswith("fit") for k in student.state_dict())


@pytest.mark.parametrize(
    ("method", "stage", "init"),
    [("distilbert", None, "every_other"), ("pkd", None, "lower"), ("tinybert", "intermediate", "narrow")],
)
def test_cached_teacher_outputs_equal_live(trained_teacher, tiny_data, tmp_path, method, stage, init):
    dataset, collator = tiny_data
    student = _no_dropout(STUDENTS[init](trained_teacher)).train()
    live = _trainer(student, tmp_path, tiny_data, teacher=trained_teacher, method=method, stage=stage)
    cache = TrainingTargetCache.build(trained_teacher, dataset, collator, live.teacher_spec, batch_size=64,
                               token_dtype=torch.float32)
    cached = _trainer(student, tmp_path, tiny_data, teacher=trained_teacher, method=method, stage=stage,
                      teacher_cache=cache)
    if live.projection is not None:
        cached.projection.load_state_dict(live.projection.state_dict())
    batch = collator([dataset[i] for i in (3, 17, 42, 99, 200)])
    student.train()
    with torch.no_grad():
        loss_live = live.compute_loss(student, {k: v for k, v in batch.items() if k != "idx"})
        loss_cached = cached.compute_loss(student, dict(batch))
    torch.testing.assert_close(loss_cached, loss_live, rtol=1e-4, atol=1e-5)


def test_cache_lookup_matches_live_targets_and_selects_layers(trained_teacher, tiny_data):
    dataset, collator = tiny_data
    spec = TargetSpec(logits=True, cls_layers=(1, 2, 3), last=True, hidden_layers=(0, 2, 4), attention_layers=(2, 4))
    trained_teacher.set_attn_implementation("eager")
    cache = TrainingTargetCache.build(trained_teacher, dataset, collator, spec, batch_size=50, token_dtype=torch.float32)
    assert len(cache) == len(dataset) and cache.nbytes > 0
    batch = collator([dataset[i] for i in (5, 0, 77)])
    idx = batch.pop("idx")
    batch.pop("labels")
    with torch.no_grad():
        live = teacher_targets(trained_teacher(**batch, output_hidden_states=True, output_attentions=True), spec)
    got = cache.lookup(idx, batch["input_ids"].shape[1])
    mask = batch["attention_mask"].bool()
    for key in spec.keys:
        assert got[key].shape == live[key].shape, key
    torch.testing.assert_close(got["logits"], live["logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["last"][mask], live["last"][mask], rtol=1e-4, atol=1e-5)
    sub = TargetSpec(cls_layers=(3, 1))
    torch.testing.assert_close(cache.lookup(idx, 1, spec=sub)["cls"], live["cls"][:, [2, 0]], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="holds only"):
        cache.lookup(idx, 1, spec=TargetSpec(cls_layers=(4,)))
    with pytest.raises(KeyError, match="not in the teacher cache"):
        cache.lookup([100000], 4)


def test_forward_requests_only_what_the_recipe_needs(trained_teacher, tiny_data, tmp_path):
    dataset, collator = tiny_data
    batch = collator([dataset[i] for i in range(4)])
    seen = []

    def spy(name):
        def hook(module, args, kwargs):
            seen.append((name, bool(kwargs.get("output_hidden_states")), bool(kwargs.get("output_attentions"))))

        return hook

    expected = {"vanilla": (False, False), "pkd": (True, False), "tinybert": (True, True)}
    for method, (hidden, attention) in expected.items():
        student = (lower_layers_student if method == "pkd" else every_other_layer_student)(trained_teacher, 2)
        stage = "intermediate" if method == "tinybert" else None
        trainer = _trainer(student, tmp_path, tiny_data, teacher=trained_teacher, method=method, stage=stage)
        handles = [student.register_forward_pre_hook(spy("student"), with_kwargs=True),
                   trained_teacher.register_forward_pre_hook(spy("teacher"), with_kwargs=True)]
        seen.clear()
        with torch.no_grad():
            trainer.compute_loss(student, dict(batch))
        for handle in handles:
            handle.remove()
        assert seen == [("student", hidden, attention), ("teacher", hidden, attention)], method


def test_plan_targets_layer_maps():
    from transformers import BertConfig

    teacher = BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12)
    student = BertConfig(num_hidden_layers=3, hidden_size=384, num_attention_heads=12)
    spec, layers = plan_targets(student, teacher, {"patient": 1.0}, strategy="skip")
    assert spec.cls_layers == (2, 4) and layers["cls_layers"] == (1, 2)  # PKD-Skip, top layer excluded
    spec, _ = plan_targets(student, teacher, {"patient": 1.0}, strategy="last")
    assert spec.cls_layers == (4, 5)
    narrow = BertConfig(num_hidden_layers=4, hidden_size=192, num_attention_heads=12)
    spec, layers = plan_targets(narrow, teacher, {"hidden": 1.0, "attention": 1.0})
    assert spec.hidden_layers == (0, 2, 3, 5, 6) and spec.attention_layers == (2, 3, 5, 6)
    assert layers["projection"] is True


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "fitnets"}, ValueError, "method"),
        ({"method": "tinybert"}, ValueError, "stage"),
        ({"method": "vanilla", "stage": "prediction"}, ValueError, "stage"),
        ({"method": "vanilla", "teacher": None}, ValueError, "teacher"),
        ({"method": "vanilla", "loss_weights": {"kl": 1.0}}, ValueError, "loss_weights"),
        ({"method": "vanilla", "temperature": -1.0}, ValueError, "temperature"),
        ({"method": "distilbert", "student": "narrow"}, ValueError, "cosine loss needs equal widths"),
        ({"method": "tinybert", "stage": "intermediate", "student": "heads"}, ValueError, "equal head counts"),
        ({"method": "pkd", "student": "one_layer"}, ValueError, "patient loss needs a student with >= 2"),
    ],
)
def test_trainer_rejects_bad_configuration(trained_teacher, tiny_data, tmp_path, kwargs, error, match):
    students = {
        "narrow": lambda: narrow_student(trained_teacher.config, 2, 16, 32, 4),
        "heads": lambda: narrow_student(trained_teacher.config, 2, 16, 32, 2),
        "one_layer": lambda: lower_layers_student(trained_teacher, 1),
    }
    student = students.get(kwargs.pop("student", ""), lambda: every_other_layer_student(trained_teacher, 2))()
    kwargs.setdefault("teacher", trained_teacher)
    with pytest.raises(error, match=match):
        _trainer(student, tmp_path, tiny_data, **kwargs)


def test_cache_that_does_not_cover_the_run_is_rejected(trained_teacher, tiny_data, tmp_path):
    cache = TrainingTargetCache.build(trained_teacher, tiny_data[0], tiny_data[1], TargetSpec(logits=True))
    with pytest.raises(ValueError, match="teacher_cache"):
        _trainer(every_other_layer_student(trained_teacher, 2), tmp_path, tiny_data, teacher=trained_teacher,
                 method="distilbert", teacher_cache=cache)


def test_save_run_writes_model_tokenizer_and_run_config(make_bert, tokenizer, tiny_data, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = make_bert(layers=1)
    trainer = _trainer(model, tmp_path, tiny_data, method="hard", processing_class=tokenizer, args={"max_steps": 3})
    result = run_training(trainer)
    out = save_run(trainer, tmp_path / "model", {"seed": 42, "method": "hard", "wall_seconds": result["seconds"],
                                                  "train_loss": result["train_loss"], "nan": float("nan")})
    config = json.loads((out / "run_config.json").read_text())
    assert config["method"] == "hard" and config["nan"] is None and config["train_loss"] > 0
    assert not list(out.glob("checkpoint-*"))  # only the final model, no intermediate checkpoints
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value.cpu()), key
    assert AutoTokenizer.from_pretrained(out)("a good film .")["input_ids"] == tokenizer("a good film .")["input_ids"]

