"""Layer maps, and students whose copied weights equal the teacher's mapped layers."""

from __future__ import annotations

import pytest
import torch

from knowledge_retention.distillation.layer_maps import (
    every_other_layer_indices,
    last_layer_map,
    layer_map,
    lower_layer_indices,
    lower_layer_map,
    skip_layer_map,
)
from knowledge_retention.distillation.students import (
    every_other_layer_student,
    lower_layers_student,
    narrow_student,
)


def test_layer_maps():
    assert skip_layer_map(12, 6) == [2, 4, 6, 8, 10, 12]
    assert skip_layer_map(6, 3) == [2, 4, 6]
    assert skip_layer_map(6, 4) == [2, 3, 5, 6]
    assert skip_layer_map(4, 4) == [1, 2, 3, 4]
    assert lower_layer_map(12, 6) == [1, 2, 3, 4, 5, 6]
    assert last_layer_map(12, 6) == [7, 8, 9, 10, 11, 12]
    assert layer_map(12, 3, strategy="last") == [10, 11, 12]
    assert every_other_layer_indices(12, 6) == [0, 2, 4, 6, 8, 10]
    assert every_other_layer_indices(6, 3) == [0, 2, 4]
    assert lower_layer_indices(6, 3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: skip_layer_map(3, 6), ValueError, "student_layers.*<= `teacher_layers`"),
        (lambda: skip_layer_map(6, 0), ValueError, "student_layers.*>= 1"),
        (lambda: skip_layer_map(6.0, 3), TypeError, "teacher_layers.*int"),
        (lambda: layer_map(6, 3, strategy="middle"), ValueError, "strategy"),
    ],
)
def test_layer_map_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _layer_params(model, i):
    return dict(model.bert.encoder.layer[i].named_parameters())


def _assert_copied(student, teacher, indices):
    for j, i in enumerate(indices):
        s_params, t_params = _layer_params(student, j), _layer_params(teacher, i)
        assert s_params.keys() == t_params.keys()
        for name in s_params:
            assert torch.equal(s_params[name], t_params[name]), (j, i, name)
            assert s_params[name].data_ptr() != t_params[name].data_ptr()  # a copy, not shared storage
    for prefix in ("bert.embeddings", "bert.pooler", "classifier"):
        t_state = {k: v for k, v in teacher.state_dict().items() if k.startswith(prefix)}
        s_state = student.state_dict()
        assert t_state
        for key, value in t_state.items():
            assert torch.equal(s_state[key], value), key


def test_every_other_layer_student_copies_mapped_layers(make_bert):
    teacher = make_bert(layers=4)
    student = every_other_layer_student(teacher, 2)
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    _assert_copied(student, teacher, [0, 2])
    # the student's first block is not the teacher's second one
    assert not torch.equal(
        _layer_params(student, 1)["output.dense.weight"], _layer_params(teacher, 1)["output.dense.weight"]
    )


def test_lower_layers_student_copies_bottom_layers(make_bert):
    teacher = make_bert(layers=4)
    student = lower_layers_student(teacher, 3)
    _assert_copied(student, teacher, [0, 1, 2])


def test_copied_student_equals_teacher_when_all_layers_kept(make_bert, tokenizer):
    teacher = make_bert(layers=2).eval()
    student = lower_layers_student(teacher, 2).eval()
    batch = tokenizer(["a good film .", "a dull , boring movie ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(student(**batch).logits, teacher(**batch).logits)


def test_narrow_student(make_bert):
    teacher = make_bert(layers=4)
    a = narrow_student(teacher.config, 2, 16, 48, 4, seed=0)
    b = narrow_student(teacher.config, 2, 16, 48, 4, seed=0)
    cfg = a.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (2, 16, 48, 4)
    assert cfg.vocab_size == teacher.config.vocab_size and cfg.num_labels == 2
    assert teacher.config.num_hidden_layers == 4 and teacher.config.hidden_size == 32  # teacher config untouched
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name  # seeded init is reproducible


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: every_other_layer_student(t, 5), ValueError, "student_layers"),
        (lambda t: every_other_layer_student(torch.nn.Linear(2, 2), 1), TypeError, "teacher.*PreTrainedModel"),
        (lambda t: narrow_student(t.config, 2, 30, 60, 4), ValueError, "divisible by `num_heads`"),
        (lambda t: narrow_student(t.config, 0, 32, 64, 4), ValueError, "num_layers"),
        (lambda t: narrow_student({"hidden_size": 4}, 1, 4, 4, 1), TypeError, "teacher_config"),
    ],
)
def test_student_errors(make_bert, call, error, match):
    with pytest.raises(error, match=match):
        call(make_bert(layers=4))
