"""Integrations with other libraries' training loops: :class:`KRSCallback` for the ``transformers`` Trainer."""

from __future__ import annotations

from .callbacks import KRSCallback, check_options

__all__ = ["KRSCallback", "check_options"]
