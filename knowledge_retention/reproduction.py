"""The SST-2 reproduction: this module keeps the old import path; the code lives in
:mod:`knowledge_retention.distillation.reproduce` (and its steps ``sst2_evaluation``, ``sst2_tables``, ``sst2_plan``)."""

from __future__ import annotations

from .distillation.reproduce import (
    PAPER_TABLE9,
    RESULTS_FORMAT,
    evaluate_manifest,
    full_scale_plan,
    pooled_paired_bootstrap,
    render_plan,
    render_table,
    reproduce_sst2,
    seed_summary,
    tabulate,
)

__all__ = [
    "PAPER_TABLE9", "RESULTS_FORMAT", "evaluate_manifest", "full_scale_plan", "pooled_paired_bootstrap", "render_plan",
    "render_table", "reproduce_sst2", "seed_summary", "tabulate",
]
