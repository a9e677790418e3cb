r"""Distillation losses as pure torch functions (tensors in, scalar tensor out).

Each loss is a mean, lower is better, best value 0 (except the cross-entropies, whose floor is the
teacher's entropy or 0 for one-hot targets). Shapes: ``N`` examples, ``C`` classes, ``L`` tokens,
``H`` hidden units, ``A`` attention heads, ``K`` matched layers.

Token-level losses take an optional ``attention_mask`` ``(N, L)`` (1 = real token): padded positions
are left out of the mean, so dynamic padding does not change the value.

References:
    Hinton, Vinyals & Dean (2015), *Distilling the Knowledge in a Neural Network*.
    Sanh et al. (2019), *DistilBERT*. Sun et al. (2019), *Patient Knowledge Distillation for BERT
    Model Compression*. Jiao et al. (2020), *TinyBERT*.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "hard_cross_entropy",
    "hidden_cosine_loss",
    "patient_loss",
    "soft_cross_entropy",
    "tinybert_attention_loss",
    "tinybert_embedding_loss",
    "tinybert_hidden_loss",
]

Projection = Callable[[Tensor], Tensor]


def _check_tensor(name: str, value: object, ndim: int, shape_doc: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape {shape_doc}, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"`{name}` must have shape {shape_doc}, got tensor of shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}")
    return value


def _check_same_shape(student: Tensor, teacher: Tensor, student_name: str, teacher_name: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"`{student_name}` and `{teacher_name}` must have the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )


def _token_mask(attention_mask: Tensor | None, n: int, length: int, like: Tensor) -> Tensor:
    """Float mask ``(N, L)``; all ones when ``attention_mask`` is None."""
    if attention_mask is None:
        return torch.ones(n, length, dtype=like.dtype, device=like.device)
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"`attention_mask` must be a torch.Tensor of shape (N, L), got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (n, length):
        raise ValueError(
            f"`attention_mask` must have shape (N, L) = {(n, length)}, got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(device=like.device, dtype=like.dtype)
    if mask.sum() <= 0:
        raise ValueError("`attention_mask` must mark at least one real token (1), got all zeros")
    return mask


def soft_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
) -> Tensor:
    r"""Cross-entropy of the student against the teacher's temperature-softened distribution.

    .. math::
        \mathcal{L}_{soft} = -\frac{T^2}{N} \sum_{i=1}^{N} \sum_{c=1}^{C}
            p_t^{T}(c \mid x_i) \log p_s^{T}(c \mid x_i),
        \qquad p^{T} = \operatorname{softmax}(z / T)

    It equals :math:`T^2 \,[\mathrm{KL}(p_t^T \,\|\, p_s^T) + H(p_t^T)]`; the entropy term does not
    depend on the student, so the gradient is Hinton's KD gradient. The :math:`T^2` factor (Hinton et
    al., 2015) keeps gradient magnitudes comparable across temperatures.

    Args:
        student_logits: ``(N, C)`` student logits :math:`z_s`.
        teacher_logits: ``(N, C)`` teacher logits :math:`z_t` (no gradient flows into them).
        temperature: :math:`T > 0`.
        scale_by_temperature_squared: multiply by :math:`T^2` (default True).

    Returns:
        Scalar tensor, range :math:`[T^2 \bar H(p_t^T), \infty)`.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> round(soft_cross_entropy(z, z).item(), 4)  # log 2: entropy of a fair coin
        0.6931
    """
    _check_tensor("student_logits", student_logits, 2, "(N, C)")
    _check_tensor("teacher_logits", teacher_logits, 2, "(N, C)")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    p_teacher = F.softmax(teacher_logits.detach().to(log_p_student.dtype) / temperature, dim=-1)
    loss = -(p_teacher * log_p_student).sum(dim=-1).mean()
    return loss * temperature**2 if scale_by_temperature_squared else loss


def hard_cross_entropy(student_logits: Tensor, labels: Tensor) -> Tensor:
    r"""Cross-entropy against the gold labels.

    .. math::
        \mathcal{L}_{hard} = -\frac{1}{N} \sum_{i=1}^{N} \log p_s(y_i \mid x_i)

    Args:
        student_logits: ``(N, C)`` logits.
        labels: ``(N,)`` integer class ids in ``[0, C)``.

    Returns:
        Scalar tensor, range :math:`[0, \infty)`, best 0.

    Example:
        >>> round(hard_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1])).item(), 4)
        0.6931
    """
    _check_tensor("student_logits", student_logits, 2, "(N, C)")
    if not isinstance(labels, Tensor) or labels.is_floating_point():
        got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"`labels` must be an integer torch.Tensor of shape (N,), got {got}")
    if labels.dim() != 1:
        raise ValueError(f"`labels` must have shape (N,), got {tuple(labels.shape)}")
    if labels.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"`labels` must have N = {student_logits.shape[0]} entries, got {labels.shape[0]}"
        )
    return F.cross_entropy(student_logits, labels)


def hidden_cosine_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, *, attention_mask: Tensor | None = None
) -> Tensor:
    r"""DistilBERT's cosine embedding loss between hidden states, averaged over real tokens.

    .. math::
        \mathcal{L}_{cos} = \frac{1}{\sum_{i,l} m_{il}} \sum_{i,l} m_{il}
            \left(1 - \frac{h^s_{il} \cdot h^t_{il}}{\lVert h^s_{il} \rVert \, \lVert h^t_{il} \rVert}\right)

    Args:
        student_hidden: ``(N, L, H)`` student hidden states.
        teacher_hidden: ``(N, L, H)`` teacher hidden states (same width; no projection).
        attention_mask: optional ``(N, L)`` mask :math:`m` (1 = real token).

    Returns:
        Scalar tensor, range ``[0, 2]``, best 0 (aligned directions).

    Example:
        >>> h = torch.randn(2, 3, 4)
        >>> hidden_cosine_loss(h, h).abs().item() < 1e-6
        True
    """
    _check_tensor("student_hidden", student_hidden, 3, "(N, L, H)")
    _check_tensor("teacher_hidden", teacher_hidden, 3, "(N, L, H)")
    _check_same_shape(student_hidden, teacher_hidden, "student_hidden", "teacher_hidden")
    n, length, _ = student_hidden.shape
    mask = _token_mask(attention_mask, n, length, student_hidden)
    cosine = F.cosine_similarity(student_hidden, teacher_hidden.detach().to(student_hidden.dtype), dim=-1)
    return ((1.0 - cosine) * mask).sum() / mask.sum()


def patient_loss(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    r"""PKD patient loss: MSE between L2-normalised [CLS] vectors of mapped layers (Sun et al., 2019).

    .. math::
        \mathcal{L}_{PT} = \frac{1}{N K H} \sum_{i=1}^{N} \sum_{k=1}^{K}
            \left\lVert \frac{h^s_{ik}}{\lVert h^s_{ik} \rVert_2}
            - \frac{h^t_{ik}}{\lVert h^t_{ik} \rVert_2} \right\rVert_2^2

    The paper writes the sum over layers of squared distances; its reference code takes the
    element-wise mean as above (so :math:`\beta \in \{100, 500, 1000\}` absorbs :math:`1/(KH)`).

    Args:
        student_cls: ``(N, K, H)`` student [CLS] vectors of the ``K`` matched layers.
        teacher_cls: ``(N, K, H)`` teacher [CLS] vectors of the mapped teacher layers.

    Returns:
        Scalar tensor, range ``[0, 4/H]``, best 0 (same directions).

    Example:
        >>> s = torch.tensor([[[3.0, 4.0]]])
        >>> patient_loss(s, 2 * s).item()  # identical once normalised
        0.0
        >>> patient_loss(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])).item()
        1.0
    """
    _check_tensor("student_cls", student_cls, 3, "(N, K, H)")
    _check_tensor("teacher_cls", teacher_cls, 3, "(N, K, H)")
    _check_same_shape(student_cls, teacher_cls, "student_cls", "teacher_cls")
    student_unit = F.normalize(student_cls, p=2, dim=-1)
    teacher_unit = F.normalize(teacher_cls.detach().to(student_cls.dtype), p=2, dim=-1)
    return F.mse_loss(student_unit, teacher_unit)


def tinybert_hidden_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    *,
    projection: Projection | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    r"""TinyBERT hidden-state loss: MSE after a learned projection :math:`W_h` (Jiao et al., 2020).

    .. math::
        \mathcal{L}_{hidn} = \frac{1}{H_t \sum_{i,l} m_{il}} \sum_{i,l} m_{il}
            \left\lVert h^s_{il} W_h - h^t_{il} \right\rVert_2^2

    Args:
        student_hidden: ``(N, L, H_s)`` student hidden states.
        teacher_hidden: ``(N, L, H_t)`` teacher hidden states.
        projection: callable ``(..., H_s) -> (..., H_t)`` (e.g. a ``torch.nn.Linear``); ``None`` means
            identity and requires ``H_s == H_t``.
        attention_mask: optional ``(N, L)`` mask :math:`m` (1 = real token).

    Returns:
        Scalar tensor, range :math:`[0, \infty)`, best 0.

    Example:
        >>> h = torch.randn(2, 3, 4)
        >>> tinybert_hidden_loss(h, h).item()
        0.0
    """
    _check_tensor("student_hidden", student_hidden, 3, "(N, L, H_s)")
    _check_tensor("teacher_hidden", teacher_hidden, 3, "(N, L, H_t)")
    if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        raise ValueError(
            "`student_hidden` and `teacher_hidden` must agree on (N, L), got "
            f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}"
        )
    projected = student_hidden if projection is None else projection(student_hidden)
    if projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"the (projected) student width must equal the teacher width {teacher_hidden.shape[-1]}, got "
            f"{projected.shape[-1]}; pass `projection` when the widths differ"
        )
    n, length, width = teacher_hidden.shape
    mask = _token_mask(attention_mask, n, length, projected)
    squared = (projected - teacher_hidden.detach().to(projected.dtype)).pow(2).sum(dim=-1)
    return (squared * mask).sum() / (mask.sum() * width)


def tinybert_embedding_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    *,
    projection: Projection | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    r"""TinyBERT embedding-layer loss: :math:`\mathrm{MSE}(E^s W_e, E^t)` over real tokens.

    .. math::
        \mathcal{L}_{embd} = \frac{1}{H_t \sum_{i,l} m_{il}} \sum_{i,l} m_{il}
            \left\lVert e^s_{il} W_e - e^t_{il} \right\rVert_2^2

    Same computation as :func:`tinybert_hidden_loss`, applied to the embedding outputs (layer 0 of
    ``output_hidden_states``).

    Args:
        student_embeddings: ``(N, L, H_s)`` student embedding outputs.
        teacher_embeddings: ``(N, L, H_t)`` teacher embedding outputs.
        projection: callable ``(..., H_s) -> (..., H_t)``; ``None`` = identity (needs equal widths).
        attention_mask: optional ``(N, L)`` mask (1 = real token).

    Returns:
        Scalar tensor, range :math:`[0, \infty)`, best 0.

    Example:
        >>> e = torch.randn(1, 2, 3)
        >>> tinybert_embedding_loss(e, e + 1).item()
        1.0
    """
    return tinybert_hidden_loss(
        student_embeddings, teacher_embeddings, projection=projection, attention_mask=attention_mask
    )


def tinybert_attention_loss(
    student_attentions: Tensor, teacher_attentions: Tensor, *, attention_mask: Tensor | None = None
) -> Tensor:
    r"""TinyBERT attention loss: MSE between attention matrices of mapped layers.

    .. math::
        \mathcal{L}_{attn} = \frac{1}{A \sum_{i} (\sum_l m_{il})^2} \sum_{i,a,l,l'} m_{il} m_{il'}
            \left(A^s_{i a l l'} - A^t_{i a l l'}\right)^2

    TinyBERT compares the pre-softmax scores; ``transformers`` returns the post-softmax
    probabilities, which are used here (bounded, and padded keys are exactly 0). Both models must
    have the same number of heads :math:`A`.

    Args:
        student_attentions: ``(N, A, L, L)`` student attention probabilities.
        teacher_attentions: ``(N, A, L, L)`` teacher attention probabilities.
        attention_mask: optional ``(N, L)`` mask; query/key pairs with a padded side are left out.

    Returns:
        Scalar tensor, range ``[0, 1]`` for probabilities, best 0.

    Example:
        >>> a = torch.softmax(torch.randn(2, 2, 3, 3), dim=-1)
        >>> tinybert_attention_loss(a, a).item()
        0.0
    """
    _check_tensor("student_attentions", student_attentions, 4, "(N, A, L, L)")
    _check_tensor("teacher_attentions", teacher_attentions, 4, "(N, A, L, L)")
    _check_same_shape(student_attentions, teacher_attentions, "student_attentions", "teacher_attentions")
    n, heads, length, _ = student_attentions.shape
    mask = _token_mask(attention_mask, n, length, student_attentions)
    pair_mask = mask[:, None, :, None] * mask[:, None, None, :]  # (N, 1, L, L)
    squared = (student_attentions - teacher_attentions.detach().to(student_attentions.dtype)).pow(2)
    return (squared * pair_mask).sum() / (pair_mask.sum() * heads)
