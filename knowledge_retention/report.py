"""Deprecated: the report lives in :mod:`knowledge_retention.reporting` (one schema for every task).

``from knowledge_retention.report import build_report, write_report, render_markdown`` keeps working
with a FutureWarning; import them from :mod:`knowledge_retention.reporting`.
"""

from __future__ import annotations

import warnings

from .reporting import SCHEMA_VERSION, build_report, render_markdown, write_figures, write_report
from .reporting.sections import better as _better

warnings.warn("knowledge_retention.report is deprecated: import from knowledge_retention.reporting "
              "(build_report, write_report, render_markdown).", FutureWarning, stacklevel=2)

__all__ = ["SCHEMA_VERSION", "build_report", "render_markdown", "write_figures", "write_report"]
_ = _better  # kept importable for old callers
