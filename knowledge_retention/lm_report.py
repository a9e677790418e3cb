"""Deprecated: the causal-LM report is the one report of :mod:`knowledge_retention.reporting`.

``build_lm_report``, ``write_lm_report``, ``lm_markdown``, ``plot_agreement_by_position`` keep working
with a FutureWarning: a causal-LM result given to :func:`knowledge_retention.reporting.build_report`
gets the same schema and sections as a classifier's (its ``tokens`` and ``lm`` sections included).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .reporting import build_report, write_report
from .reporting.causal_lm import lm_markdown, plot_agreement_by_position

warnings.warn("knowledge_retention.lm_report is deprecated: use knowledge_retention.reporting.build_report / "
              "write_report (one report for every task).", FutureWarning, stacklevel=2)

__all__ = ["build_lm_report", "lm_markdown", "plot_agreement_by_position", "run_cli", "write_lm_report"]


def build_lm_report(result: Any, *, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`knowledge_retention.reporting.build_report` of a causal-LM result."""
    return build_report(result, options=options)


def write_lm_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """:func:`knowledge_retention.reporting.write_report`."""
    return write_report(report, out_dir)


def run_cli(args: Any, dataset: Any) -> dict[str, Any]:
    """``knowledge-retention evaluate`` on a loaded dataset (:func:`knowledge_retention.cli.evaluate_dataset`)."""
    from .cli import evaluate_dataset

    if isinstance(getattr(args, "student", None), str):
        args.student = [args.student]
    return evaluate_dataset(args, dataset)
