"""The report of a causal-LM pair (``task="causal-lm"``): token agreement, top-k, perplexities, by position.

:func:`build_lm_report` turns an :class:`~knowledge_retention.extraction.ExtractionResult` (or its
``to_dict()``) into a JSON-safe dict; :func:`lm_markdown` renders the LM section (also usable on its
own, e.g. by the Space); :func:`write_lm_report` writes ``report.json``, ``report.md``,
``agreement_by_position.png`` and ``cross_layer_cka.png``; :func:`run_cli` is what
``knowledge-retention evaluate --task causal-lm`` runs. No formula lives here: every number comes
from the extraction result.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._json import jsonable

__all__ = ["build_lm_report", "lm_markdown", "plot_agreement_by_position", "run_cli", "write_lm_report"]

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


def build_lm_report(result: Any, *, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The LM report dict from an extraction result (object or ``to_dict()``)."""
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    lm = data.get("lm") or {}
    if not lm:
        raise ValueError("build_lm_report needs a task='causal-lm' result (it has no `lm` section).")
    ext = data.get("options") or {}
    return jsonable({
        "schema": "knowledge_retention.lm_report/1",
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {"teacher": ext.get("teacher"), "student": ext.get("student")},
        "num_examples": data.get("num_examples"),
        "headline": {key: data.get(key) for key in ("krs", "fss", "aoag", "alpha", "beta", "fss_method", "aoag_method")},
        "tokens": {key: data.get(key) for key, _, _ in _MEASURES},
        "lm": lm,
        "layers": {"pairs": data.get("layer_pairs"), "cross_layer_cka": data.get("cross_layer_cka")},
        "extraction_options": ext,
        "timings": data.get("timings"),
        "notes": data.get("notes") or [],
        "options": dict(options or {}),
    })


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
    for key, label, meaning in _MEASURES:
        lines.append(f"| {label} | {_f(tokens.get(key))} | {meaning} |")
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


def render_markdown(report: Mapping[str, Any]) -> str:
    head, models = report.get("headline") or {}, report.get("models") or {}
    lines = [
        "# Knowledge retention report (causal LM)", "",
        f"Teacher: `{models.get('teacher')}` · Student: `{models.get('student')}` · {report.get('num_examples', 0):,} texts",
        "", "## Headline", "", "| | value | meaning |", "|---|---|---|",
        f"| **KRS** | **{_f(head.get('krs'))}** | α·FSS + β·AOAg, α = {_f(head.get('alpha'), 2)}, β = {_f(head.get('beta'), 2)} (causal-lm) |",
        f"| FSS | {_f(head.get('fss'))} | token-level {head.get('fss_method')} of hidden states, mean over layer pairs |",
        f"| AOAg | {_f(head.get('aoag'))} | token-level output agreement ({head.get('aoag_method')}) |", "",
        lm_markdown(report),
    ]
    figures = report.get("figures") or {}
    if "cross_layer_cka" in figures:
        lines += ["## Layers", "", f"![cross-layer CKA]({figures['cross_layer_cka']})", ""]
    if report.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def plot_agreement_by_position(report: Mapping[str, Any], path: str | os.PathLike[str], *, min_count: int = 5) -> Path:
    """Top-1 agreement and token AOAg against the position among a text's counted tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = (report.get("lm") or {}).get("by_position") or {}
    count = np.asarray(by.get("count") or [], dtype=float)
    keep = count >= min_count
    x = np.arange(count.size)[keep] + 1
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
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
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_lm_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md``, ``agreement_by_position.png`` and ``cross_layer_cka.png``."""
    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"agreement_by_position": plot_agreement_by_position(report, out / "agreement_by_position.png")}
    cross = (report.get("layers") or {}).get("cross_layer_cka")
    if cross and cross.get("matrix"):
        pairs = [(p["teacher"], p["student"]) for p in (report["layers"].get("pairs") or [])]
        figures["cross_layer_cka"] = plots.plot_cross_layer_cka(
            cross["matrix"], out / "cross_layer_cka.png", teacher_layers=cross.get("teacher_layers"),
            student_layers=cross.get("student_layers"), pairs=pairs or None,
            title="Cross-layer linear CKA over counted tokens")
    final = dict(report)
    final["figures"] = {name: path.name for name, path in figures.items()}
    (out / "report.json").write_text(json.dumps(jsonable(final), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(final), encoding="utf-8")
    return {"json": out / "report.json", "markdown": out / "report.md", **figures}


def run_cli(args: Any, dataset: Any) -> dict[str, Any]:
    """``knowledge-retention evaluate --task causal-lm``: evaluate the pair, write the LM report, print a summary."""
    from .extraction import evaluate_pair

    new_tokens = getattr(args, "generate_tokens", None)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    result = evaluate_pair(
        args.teacher, args.student, dataset, task="causal-lm", text_column=args.text_column,
        prompt_column=getattr(args, "prompt_column", None), layers=args.layers, batch_size=args.batch_size,
        max_examples=args.max_examples, max_length=args.max_length, alpha=args.alpha, beta=args.beta,
        fss_method=args.fss_method, aoag_method=args.aoag_method, temperature=args.temperature,
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        trust_remote_code=args.trust_remote_code, progress=not args.quiet, distributed=distributed,
        generate=None if not new_tokens else {"max_new_tokens": new_tokens},
    )
    if distributed:
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return {}
    report = build_lm_report(result, options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                              if not callable(v)})
    paths = write_lm_report(report, args.output_dir)
    tok = report["tokens"]
    print(f"\nKRS {report['headline']['krs']:.3f}  (FSS {report['headline']['fss']:.3f}, token AOAg "
          f"{report['headline']['aoag']:.3f})  top-1 {tok['top1_agreement']:.3f}  top-k {tok['topk_overlap']:.3f}  "
          f"perplexity teacher {tok['teacher_perplexity']:.2f} / student {tok['student_perplexity']:.2f}")
    print(f"report: {paths['markdown']}")
    return report
