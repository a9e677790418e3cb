"""The former home of :class:`KRSCallback`; it lives in :mod:`knowledge_retention.integrations.callbacks`."""

from __future__ import annotations

from .integrations.callbacks import KRSCallback, check_options

__all__ = ["KRSCallback", "check_options"]
