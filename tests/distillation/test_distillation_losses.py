"""Each loss against hand-computed values and independent references on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from knowledge_retention.distillation import losses as L


def _kl_plus_entropy(student_logits, teacher_logits, temperature):
    """Independent reference: T^2 [KL(p_t || p_s) + H(p_t)] via torch's kl_div."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_p_s, p_t, reduction="batchmean")
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    return temperature**2 * (kl + entropy)


# ---- soft / hard cross-entropy -------------------------------------------------------------------
def test_soft_ce_hand_value():
    # teacher p = (3/4, 1/4), student uniform: -sum p log(1/2) = log 2
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    assert L.soft_cross_entropy(student, teacher).item() == pytest.approx(math.log(2), abs=1e-6)
    # student = teacher: the entropy of (3/4, 1/4)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert L.soft_cross_entropy(teacher, teacher).item() == pytest.approx(entropy, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_soft_ce_equals_kl_plus_teacher_entropy(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    got = L.soft_cross_entropy(student, teacher, temperature=temperature)
    assert got.item() == pytest.approx(_kl_plus_entropy(student, teacher, temperature).item(), rel=1e-5)
    unscaled = L.soft_cross_entropy(student, teacher, temperature=temperature, scale_by_temperature_squared=False)
    assert unscaled.item() == pytest.approx(got.item() / temperature**2, rel=1e-6)


def test_soft_ce_gradient_is_hintons():
    # d/dz_s of T^2 * CE(p_t^T, p_s^T), batch mean = T (p_s^T - p_t^T) / N
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, generator=g, requires_grad=True)
    teacher = torch.randn(4, 3, generator=g)
    temperature = 3.0
    L.soft_cross_entropy(student, teacher, temperature=temperature).backward()
    expected = temperature * (F.softmax(student / temperature, -1) - F.softmax(teacher / temperature, -1)) / 4
    torch.testing.assert_close(student.grad, expected.detach())


def test_soft_ce_no_gradient_into_teacher():
    teacher = torch.randn(2, 2, requires_grad=True)
    L.soft_cross_entropy(torch.randn(2, 2, requires_grad=True), teacher).backward()
    assert teacher.grad is None


def test_hard_ce_hand_value():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    expected = -(math.log(0.75) + math.log(0.5)) / 2
    assert L.hard_cross_entropy(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: L.soft_cross_entropy(torch.zeros(2, 2), torch.zeros(2, 3)), ValueError, "same shape"),
        (lambda: L.soft_cross_entropy(torch.zeros(2), torch.zeros(2)), ValueError, r"student_logits.*\(N, C\)"),
        (lambda: L.soft_cross_entropy([[0.0]], torch.zeros(1, 1)), TypeError, "student_logits.*torch.Tensor"),
        (lambda: L.soft_cross_entropy(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0), ValueError, "temperature"),
        (lambda: L.hard_cross_entropy(torch.zeros(2, 2), torch.zeros(2)), TypeError, "labels.*integer"),
        (lambda: L.hard_cross_entropy(torch.zeros(2, 2), torch.zeros(3, dtype=torch.long)), ValueError, "N = 2"),
    ],
)
def test_logit_losses_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- DistilBERT cosine ---------------------------------------------------------------------------
def test_cosine_loss_values():
    h = torch.randn(2, 3, 4)
    assert L.hidden_cosine_loss(h, h).abs().item() < 1e-6
    assert L.hidden_cosine_loss(h, 5 * h).abs().item() < 1e-6  # scale-invariant
    assert L.hidden_cosine_loss(h, -h).item() == pytest.approx(2.0, abs=1e-6)
    e1, e2 = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert L.hidden_cosine_loss(e1, e2).item() == pytest.approx(1.0)


def test_cosine_loss_ignores_padding():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = L.hidden_cosine_loss(student, teacher, attention_mask=mask)
    garbage = student.clone()
    garbage[0, 3:] = 100.0
    assert L.hidden_cosine_loss(garbage, teacher, attention_mask=mask).item() == pytest.approx(base.item())
    per_token = 1 - F.cosine_similarity(student, teacher, dim=-1)
    assert base.item() == pytest.approx(per_token[mask.bool()].mean().item(), rel=1e-6)


# ---- PKD patient loss ----------------------------------------------------------------------------
def test_patient_loss_values():
    s = torch.randn(3, 2, 8)
    assert L.patient_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    assert L.patient_loss(s, 3 * s).item() == pytest.approx(0.0, abs=1e-7)  # normalised first
    # orthogonal unit vectors: ||e1 - e2||^2 = 2, mean over H = 2 entries -> 1
    assert L.patient_loss(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])).item() == pytest.approx(1.0)
    # opposite: ||2 e1||^2 / H = 4 / 2
    assert L.patient_loss(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[-1.0, 0.0]]])).item() == pytest.approx(2.0)


def test_patient_loss_matches_elementwise_reference():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 6, generator=g)
    ref = ((s / s.norm(dim=-1, keepdim=True) - t / t.norm(dim=-1, keepdim=True)) ** 2).sum() / s.numel()
    assert L.patient_loss(s, t).item() == pytest.approx(ref.item(), rel=1e-6)


def test_patient_loss_shape_error():
    with pytest.raises(ValueError, match=r"student_cls.*\(N, K, H\)"):
        L.patient_loss(torch.zeros(2, 3), torch.zeros(2, 3))


# ---- TinyBERT --------------------------------------------------------------------------------------
def test_tinybert_losses_zero_for_identical_models_and_identity_projection():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 4, 6, generator=g)
    identity = torch.nn.Linear(6, 6)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(6))
        identity.bias.zero_()
    assert L.tinybert_hidden_loss(hidden, hidden, projection=identity).item() == pytest.approx(0.0, abs=1e-7)
    assert L.tinybert_embedding_loss(hidden, hidden, projection=identity).item() == pytest.approx(0.0, abs=1e-7)
    attn = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), dim=-1)
    assert L.tinybert_attention_loss(attn, attn).item() == 0.0


def test_tinybert_hidden_hand_value_and_projection():
    student = torch.zeros(1, 2, 2)
    teacher = torch.ones(1, 2, 3)
    project = torch.nn.Linear(2, 3)
    with torch.no_grad():
        project.weight.zero_()
        project.bias.fill_(3.0)  # every projected entry is 3: squared error 4 everywhere
    assert L.tinybert_hidden_loss(student, teacher, projection=project).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="pass `projection`"):
        L.tinybert_hidden_loss(student, teacher)


def test_tinybert_hidden_masks_padding():
    student, teacher = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    teacher[0, 0] = 1.0  # error only on the first (real) token
    teacher[0, 2] = 50.0  # padded position: ignored
    mask = torch.tensor([[1, 1, 0]])
    assert L.tinybert_hidden_loss(student, teacher, attention_mask=mask).item() == pytest.approx(0.5)


def test_tinybert_attention_hand_value_and_mask():
    student = torch.zeros(1, 1, 2, 2)
    teacher = torch.zeros(1, 1, 2, 2)
    teacher[0, 0, 0, 0] = 1.0
    assert L.tinybert_attention_loss(student, teacher).item() == pytest.approx(0.25)
    teacher[0, 0, 1, 1] = 7.0  # pair with the padded token: ignored
    mask = torch.tensor([[1, 0]])
    assert L.tinybert_attention_loss(student, teacher, attention_mask=mask).item() == pytest.approx(1.0)


def test_attention_mask_errors():
    with pytest.raises(ValueError, match=r"attention_mask.*\(N, L\)"):
        L.hidden_cosine_loss(torch.ones(1, 2, 3), torch.ones(1, 2, 3), attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="at least one real token"):
        L.tinybert_hidden_loss(torch.ones(1, 2, 3), torch.ones(1, 2, 3), attention_mask=torch.zeros(1, 2))
