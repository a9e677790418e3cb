"""The causal-LM section of the report (``task="causal-lm"``): token agreement, top-k, perplexities, by position.

:func:`sections` reads the token-level measures of a causal-LM
:class:`~knowledge_retention.extraction.ExtractionResult` (or its ``to_dict()``) into the report's
``tokens``, ``lm`` and ``quality`` sections; :func:`lm_markdown` renders them (also usable on its own,
e.g. by the Space); :func:`plot_agreement_by_position` draws agreement against the position in the
text. No formula lives here: every number comes from the extraction result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._common import get

__all__ = ["ABSENT", "NO_INTERVALS", "lm_markdown", "plot_agreement_by_position", "sections"]

_MEASURES = (
    ("top1_agreement", "top-1 agreement", "share of counted tokens where both models' most likely next token is the same"),
    ("topk_overlap", "top-k overlap", "mean size of (top-k of the teacher ∩ top-k of the student) / k"),
    ("aoag", "token AOAg", "mean exp(−KL(teacher ‖ student)) per token"),
    ("mean_kl", "mean KL", "KL(teacher ‖ student) per token, nats (lower is better)"),
    ("js", "mean JS", "Jensen-Shannon divergence per token, bits (lower is better)"),
    ("logprob_gap", "log-prob gap", "log p_teacher(true token) − log p_student(true token), nats"),
    ("teacher_perplexity", "teacher perplexity", "exp(mean NLL of the true next token)"),
    ("student_perplexity", "student perplexity", "exp(mean NLL of the true next token)"),
    ("perplexity_ratio", "perplexity ratio", "teacher / student perplexity (1 = as good as the teacher)"),
)


#: Why the classifier sections of a causal-LM report are null (the report's ``absent``).
ABSENT: dict[str, str] = {
    "agreement": "a causal-LM pair is compared token by token: see 'tokens' (KL, AOAg, top-1, top-k, JS)",
    "calibration": "calibration is measured against class labels; a causal-LM pair has none",
}
#: Why a causal-LM report has no intervals: the result was made without its per-token rows.
NO_INTERVALS = ("the causal-LM result carries no per-token rows to resample (evaluate with keep_arrays=True: "
                "the texts are then resampled, their tokens together)")


def sections(result: Any) -> dict[str, Any]:
    """``{"tokens", "lm", "quality"}`` of a causal-LM result; quality is the perplexity of both models and its
    ratio (teacher / student: 1 = as good as the teacher), the causal LM's "quality retained"."""
    lm = get(result, "lm") or {}
    tokens = {key: get(result, key) for key, _, _ in _MEASURES}
    quality = None
    t_ppl, s_ppl = tokens.get("teacher_perplexity"), tokens.get("student_perplexity")
    if t_ppl is not None and s_ppl is not None:
        ratio = tokens.get("perplexity_ratio")
        quality = {"teacher": {"perplexity": t_ppl}, "student": {"perplexity": s_ppl},
                   "retained": {"perplexity": ratio if ratio is not None else t_ppl / s_ppl}}
    # the per-token rows (keep_arrays) feed the intervals; the report keeps their summaries, not the rows
    kept = {k: v for k, v in lm.items() if k != "rows"} if lm else None
    return {"tokens": tokens, "lm": kept, "quality": quality}


def _f(value: Any, digits: int = 3) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎")


def lm_markdown(report: Mapping[str, Any], *, heading: str = "##") -> str:
    """The LM section: token measures, agreement by position (figure link) and the most-disagreeing tokens."""
    lm, tokens = report.get("lm") or {}, report.get("tokens") or {}
    mode = "teacher-generated continuations (greedy)" if lm.get("mode") == "generated" else "teacher-forced text"
    lines = [
        f"{heading} Token-level agreement ({mode})", "",
        f"{lm.get('num_tokens', 0):,} counted tokens in {lm.get('num_sequences', 0):,} texts (every next token that "
        f"is a real token of the text; padding and prompt tokens are not counted). Averaged per "
        f"{lm.get('average', 'token')}; k = {lm.get('top_k')}.", "",
        "| measure | value | meaning |", "|---|---|---|",
    ]
    bands = report.get("bands") or {}
    for key, label, meaning in _MEASURES:
        band = (bands.get(key) or {}).get("band") if key == "mean_kl" else None
        lines.append(f"| {label} | {_f(tokens.get(key))}{f' ({band})' if band else ''} | {meaning} |")
    lines.append("")
    figures = report.get("figures") or {}
    if "agreement_by_position" in figures:
        lines += [f"![agreement by position]({figures['agreement_by_position']})", ""]
    worst = lm.get("most_disagreeing") or []
    if worst:
        lines += [f"{heading}# Where the two disagree most (largest KL)", "",
                  "| KL | context → true next token | teacher's top-1 | student's top-1 |", "|---|---|---|---|"]
        for r in worst[:10]:
            lines.append(f"| {_f(r.get('kl'))} | {_cell(str(r.get('context_text', '')))} **→ "
                         f"{_cell(str(r.get('target_text', '')))}** | `{_cell(str(r.get('teacher_top1_text', '')))}` | "
                         f"`{_cell(str(r.get('student_top1_text', '')))}` |")
        lines.append("")
    return "\n".join(lines)


def plot_agreement_by_position(report: Mapping[str, Any], path: str | os.PathLike[str], *, min_count: int = 5) -> Path:
    """Top-1 agreement and token AOAg against the position among a text's counted tokens."""
    import numpy as np

    from ..plots import _figure, _save

    by = (report.get("lm") or {}).get("by_position") or {}
    count = np.asarray(by.get("count") or [], dtype=float)
    keep = count >= min_count
    x = np.arange(count.size)[keep] + 1
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    for key, label in (("top1_agreement", "top-1 agreement"), ("aoag", "token AOAg (mean exp(−KL))")):
        values = np.asarray(by.get(key) or [], dtype=float)[keep] if count.size else np.zeros(0)
        ax.plot(x, values, marker="o", markersize=3, label=label)
    ax.set_xlabel(f"position of the predicted token in the text (1 = first prediction; positions with ≥ {min_count} tokens)",
                  fontsize=8)
    ax.set_ylabel("agreement")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Teacher-student agreement by position in the sequence")
    return _save(fig, path)
