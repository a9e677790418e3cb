"""Constants of the SST-2 reproduction shared by its steps: the paper's Table 9, display names, the results format."""

from __future__ import annotations

import sys
import time

__all__ = ["PAPER_TABLE9", "RESULTS_FORMAT"]

PAPER_TABLE9: dict[str, dict[str, float | None]] = {
    "distilbert": {"accuracy_before": 0.8931, "accuracy_after": 0.9227, "krs_before": 0.41, "krs_after": 0.68},
    "tinybert": {"accuracy_before": 0.8578, "accuracy_after": 0.9288, "krs_before": None, "krs_after": 0.71},
    "pkd": {"accuracy_before": None, "accuracy_after": 0.9312, "krs_before": None, "krs_after": None},
}
"""Alba & Villaverde (2025), Table 9: SST-2, BERT-base teacher, 6-layer students, α = β = 0.5
(None: not reported in the paper)."""

_DISPLAY = {"distilbert": "DistilBERT-style", "pkd": "PKD", "tinybert": "TinyBERT-style",
            "distilbert_teacher_init": "DistilBERT-style, teacher init (ablation)"}
RESULTS_FORMAT = "knowledge_retention.reproduction.sst2/v1"


def _say(progress: bool, start: float, message: str) -> None:
    if progress:
        print(f"[reproduce-sst2 +{time.perf_counter() - start:6.0f}s] {message}", file=sys.stderr, flush=True)
