"""The report: one builder, one schema, one Markdown renderer and one writer for every task.

* :func:`build_report` - a pair of any task (classifier, regression, causal LM) into the report dict;
  given ``{name: result}`` (from ``evaluate_students``), the comparison of those students;
* :mod:`.schema` - the JSON schema (``SCHEMA_VERSION``), its keys and what each holds;
* :func:`render_markdown` - ``report.md`` from the dict;
* :func:`write_report` - ``report.json``, ``report.md`` and the figures into a folder.

Layers: this package reads extraction results and calls :mod:`knowledge_retention.diagnostics`,
:mod:`knowledge_retention.score` and :mod:`knowledge_retention.plots`; no formula lives here.
"""

from __future__ import annotations

from .builder import build_report, is_results_mapping
from .comparison import build_comparison
from .markdown import render_markdown
from .schema import COMPARISON_KEYS, PAIR_KEYS, SCHEMA_VERSION
from .writer import write_figures, write_report

__all__ = [
    "COMPARISON_KEYS",
    "PAIR_KEYS",
    "SCHEMA_VERSION",
    "build_comparison",
    "build_report",
    "is_results_mapping",
    "render_markdown",
    "write_figures",
    "write_report",
]
