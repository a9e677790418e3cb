r"""One vector per example from a layer's token states, with padding ignored.

* ``cls``  : the first real token (``[CLS]`` for BERT-style encoders; also right under left padding);
* ``mean`` : :math:`\frac{\sum_t m_t h_t}{\sum_t m_t}` over the attention mask :math:`m`;
* ``last`` : the last real token (decoder models such as GPT-2), under right or left padding.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._validation import InputError

Pooling = Literal["cls", "mean", "last"]
POOLINGS: tuple[str, ...] = ("cls", "mean", "last")

__all__ = ["POOLINGS", "Pooling", "pool_hidden_states"]


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pools token states ``(B, T, D)`` to ``(B, D)`` using the attention mask ``(B, T)``.

    Half-precision states are pooled in float32; float32/float64 keep their dtype.

    Args:
        hidden: one layer's hidden states, shape ``(B, T, D)``.
        attention_mask: 1 for real tokens, 0 for padding, shape ``(B, T)``; padding may be on
            either side.
        pooling: ``"cls"`` (first real token), ``"mean"`` (mean over real tokens) or ``"last"``
            (last real token).

    Returns:
        Pooled features, shape ``(B, D)``.

    Raises:
        ValueError: unknown ``pooling``, mismatched shapes, or a row without any real token.

    Example:
        >>> h = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
        >>> left_padded = torch.tensor([[1, 1, 1], [0, 1, 1]])
        >>> pool_hidden_states(h, left_padded, "last").tolist()
        [[4.0, 5.0], [10.0, 11.0]]
        >>> pool_hidden_states(h, left_padded, "cls").tolist()
        [[0.0, 1.0], [8.0, 9.0]]
        >>> pool_hidden_states(h, left_padded, "mean").tolist()
        [[2.0, 3.0], [9.0, 10.0]]
    """
    if pooling not in POOLINGS:
        raise InputError(f"`pooling` must be one of {list(POOLINGS)}, got {pooling!r}.")
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise InputError(
            f"Expected hidden states of shape (B, T, D) and an attention mask of shape (B, T), got "
            f"{tuple(hidden.shape)} and {tuple(attention_mask.shape)}."
        )
    if hidden.dtype in (torch.float16, torch.bfloat16):
        hidden = hidden.float()
    mask = attention_mask.to(device=hidden.device) > 0
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise InputError(
            f"{int((counts == 0).sum())} row(s) of the batch have no real token (attention mask all 0): "
            "empty texts cannot be pooled."
        )
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / counts.to(hidden.dtype).unsqueeze(-1)
    length = hidden.shape[1]
    positions = torch.arange(length, device=hidden.device).expand_as(mask)
    if pooling == "cls":
        index = torch.where(mask, positions, length).min(dim=1).values
    else:
        index = torch.where(mask, positions, -1).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
