"""The tabulation step of the SST-2 reproduction: ``table.md`` (Table-9 style, the paper beside ours), the
figures and ``results.json`` (:func:`tabulate`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .sst2_common import _DISPLAY, PAPER_TABLE9  # noqa: F401

__all__ = ["render_table", "tabulate"]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}"


def _start(row: Mapping[str, Any]) -> str:
    if row.get("init_from") == "teacher":
        return "fine-tuned teacher"
    if row.get("init_checkpoint"):
        return str(row["init_checkpoint"])
    return "P, general-distilled" if row.get("general") else "P"


def render_table(results: Mapping[str, Any]) -> str:
    """The Table-9-style Markdown of a reproduction, the paper's numbers in the columns next to ours.

    Args:
        results: what :func:`reproduce_sst2` returns (or ``results.json``).

    Returns:
        Markdown text.
    """
    teacher = results["teacher"]
    rows: dict[str, dict[str, Any]] = {}
    for row in results["students"]:
        rows.setdefault(row["name"], {})[row["variant"]] = row
    scale, data = results.get("scale", "?"), results.get("data", {})
    lines = [
        f"SST-2 reproduction, scale `{scale}`: teacher = {teacher.get('init', '?')} fine-tuned "
        f"({teacher['num_layers']}×{teacher['hidden_size']}, {teacher['parameters'] / 1e6:.1f} M parameters), "
        f"dev accuracy {_pct(teacher['accuracy'])}; {data.get('dev', '?')} dev sentences, "
        f"{data.get('teacher_train', '?')} teacher / {data.get('student_train', '?')} student training sentences. "
        f"Students start from the pretrained model P ({teacher.get('init', '?')} before fine-tuning), except the "
        "ablation row; \"before\" = that start fine-tuned on hard labels only, \"after\" = distilled (same data, "
        "epochs and seed). KRS = 0.5·FSS + 0.5·AOAg with FSS = linear CKA of the final [CLS] state; "
        "KRS<sub>cos</sub> uses the paper's FSS, the mean cosine of the final [CLS] states (— where the widths "
        "differ); AOAg = mean exp(−KL). Paper: Table 9 of Alba & Villaverde (2025), BERT-base teacher, 6-layer "
        "students, all of SST-2 (— = not reported). First seed only; the seed table follows.",
        "",
        "| student | starts from | layers×width | params | accuracy before → after | paper "
        "| KRS before → after | KRS<sub>cos</sub> before → after | paper KRS | FSS (CKA) before → after "
        "| FSS<sub>cos</sub> before → after | AOAg before → after |",
        "|---|---|---|---:|---|---|---|---|---|---|---|---|",
    ]
    for name, variants in rows.items():
        before, after = variants.get("before"), variants.get("after")
        some = after or before
        assert some is not None
        paper = PAPER_TABLE9.get(name, {})

        def field(row: Mapping[str, Any] | None, key: str, fmt: Any) -> str:
            return fmt(row.get(key)) if row is not None else "—"

        lines.append(
            f"| {_DISPLAY.get(name, name)} | {_start(some)} | {some['num_layers']}×{some['hidden_size']} "
            f"| {some['parameters'] / 1e6:.1f} M "
            f"| {_arrow(field(before, 'accuracy', _pct), field(after, 'accuracy', _pct))} "
            f"| {_arrow(_pct(paper.get('accuracy_before')), _pct(paper.get('accuracy_after')))} "
            f"| {_arrow(field(before, 'krs', _num), field(after, 'krs', _num))} "
            f"| {_arrow(field(before, 'krs_cosine', _num), field(after, 'krs_cosine', _num))} "
            f"| {_arrow(_num(paper.get('krs_before'), 2), _num(paper.get('krs_after'), 2))} "
            f"| {_arrow(field(before, 'fss', _num), field(after, 'fss', _num))} "
            f"| {_arrow(field(before, 'fss_cosine', _num), field(after, 'fss_cosine', _num))} "
            f"| {_arrow(field(before, 'aoag', _num), field(after, 'aoag', _num))} |"
        )
    diagnostics = [r for r in results["students"] if r.get("report")]
    if diagnostics:
        lines += [
            "",
            "From each student's report (`models/<student>-<variant>.json`): 95% bootstrap interval of KRS, "
            "calibration (ECE, 15 bins) and the verdict.",
            "",
            "| student | KRS [95% CI] | ECE teacher / student | verdict |",
            "|---|---|---|---|",
        ]
        for row in diagnostics:
            ci = row.get("krs_interval") or [None, None]
            interval = f" [{_num(ci[0])}, {_num(ci[1])}]" if None not in ci else ""
            ece = row.get("ece") or {}
            lines.append(
                f"| {_DISPLAY.get(row['name'], row['name'])} {row['variant']} | {_num(row['krs'])}{interval} "
                f"| {_num(ece.get('teacher'))} / {_num(ece.get('student'))} | {row.get('verdict') or '—'} |"
            )
    seeds = results.get("seeds")
    if seeds and len(seeds["seeds"]) > 1:
        lines += _seed_table(seeds)
    return "\n".join(lines) + "\n"


def _paper_gain(name: str, key: str) -> float | None:
    paper = PAPER_TABLE9.get(name, {})
    before, after = paper.get(f"{key}_before"), paper.get(f"{key}_after")
    return None if before is None or after is None else after - before


def _seed_table(seeds: Mapping[str, Any]) -> list[str]:
    def pm(mean: float | None, sd: float | None, scale: float = 1.0, digits: int = 3) -> str:
        if mean is None:
            return "—"
        return f"{scale * mean:.{digits}f}" + ("" if sd is None else f" ± {scale * sd:.{digits}f}")

    def ci(entry: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
        if not entry:
            return ""
        return f" [{scale * entry['low']:.{digits}f}, {scale * entry['high']:.{digits}f}]"

    summary = {(r["name"], r["variant"]): r for r in seeds["summary"]}
    paired = (seeds.get("paired_bootstrap") or {}).get("gains", {})
    level = (seeds.get("paired_bootstrap") or {}).get("confidence_level", 0.95)
    lines = [
        "",
        f"Across {len(seeds['seeds'])} student seeds ({', '.join(map(str, seeds['seeds']))}; same teacher, same data, "
        "same general-distilled TinyBERT; the seed sets the fresh head, batch order and dropout): mean ± standard "
        f"deviation over seeds, and the gain after − before averaged over seeds with its {100 * level:.0f}% paired "
        "bootstrap interval (one resample of the dev sentences shared by every seed and model, "
        f"{(seeds.get('paired_bootstrap') or {}).get('n_resamples', '?')} replicates). Paper gain: Table 9's after − before.",
        "",
        "| student | seeds | accuracy before | accuracy after | accuracy gain, points [CI] | paper | KRS before "
        "| KRS after | KRS gain [CI] | paper | KRS<sub>cos</sub> before → after | seeds where accuracy / KRS rose |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for gain in seeds["gains"]:
        b, a = summary[(gain["name"], "before")], summary[(gain["name"], "after")]
        pair = paired.get(gain["name"], {})
        paper_acc, paper_krs = _paper_gain(gain["name"], "accuracy"), _paper_gain(gain["name"], "krs")
        lines.append(
            f"| {_DISPLAY.get(gain['name'], gain['name'])} | {gain['n']} "
            f"| {pm(b['accuracy_mean'], b['accuracy_sd'], 100, 2)}% "
            f"| {pm(a['accuracy_mean'], a['accuracy_sd'], 100, 2)}% "
            f"| {pm(gain['accuracy_gain_mean'], gain['accuracy_gain_sd'], 100, 2)}{ci(pair.get('accuracy'), 100, 2)} "
            f"| {'—' if paper_acc is None else f'{100 * paper_acc:+.2f}'} "
            f"| {pm(b['krs_mean'], b['krs_sd'])} | {pm(a['krs_mean'], a['krs_sd'])} "
            f"| {pm(gain['krs_gain_mean'], gain['krs_gain_sd'])}{ci(pair.get('krs'))} "
            f"| {'—' if paper_krs is None else f'{paper_krs:+.2f}'} "
            f"| {_arrow(pm(b.get('krs_cosine_mean'), b.get('krs_cosine_sd')), pm(a.get('krs_cosine_mean'), a.get('krs_cosine_sd')))} "
            f"| {gain['accuracy_raised']} / {gain['krs_raised']} of {gain['n']} |"
        )
    return lines


def _krs_during_training(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``{"<name>-<variant>": {"every_steps", "history"}}`` of the students whose training logged KRS."""
    return {f"{m['name']}-{m['variant']}": m["krs_during_training"] for m in manifest["models"]
            if m.get("role") == "student" and m.get("krs_during_training")}


def _figures(results: Mapping[str, Any], out: Path) -> dict[str, str]:
    from ..plots import plot_alpha_sensitivity_curves, plot_krs_during_training

    paths: dict[str, str] = {}
    curves = {f"{r['name']}-{r['variant']}": (r["fss"], r["aoag"]) for r in results["students"]}
    paths["alpha_sensitivity"] = str(plot_alpha_sensitivity_curves(
        curves, out / "alpha_sensitivity.png", alpha=0.5,
        title="SST-2, FSS = linear CKA: dashed = before, solid = after"))
    cosine = {f"{r['name']}-{r['variant']}": (max(0.0, r["fss_cosine"]), r["aoag"])
              for r in results["students"] if r.get("fss_cosine") is not None and r.get("aoag") is not None}
    if cosine:  # the paper's Figure 14 uses its cosine FSS (students of the teacher's width only)
        paths["alpha_sensitivity_cosine"] = str(plot_alpha_sensitivity_curves(
            cosine, out / "alpha_sensitivity_cosine.png", alpha=0.5,
            title="SST-2, FSS = mean cosine (paper): dashed = before, solid = after"))
    during = results.get("krs_during_training")
    if during:
        paths["krs_during_training"] = str(plot_krs_during_training(
            {label: run["history"] for label, run in during.items()}, out / "krs_during_training.png",
            title="SST-2: KRS on the dev set while each student trains\n(KRSCallback; dashed = before, solid = after)",
            names=_DISPLAY))
    paths.update(cross_layer_heatmaps(results, out, lambda row: (
        f"Cross-layer linear CKA, teacher vs {_DISPLAY.get(row['name'], row['name'])} ({row['variant']})")))
    return paths


def cross_layer_heatmaps(results: Mapping[str, Any], out: Path, title: Callable[[Mapping[str, Any]], str]) -> dict[str, str]:
    """One cross-layer CKA heatmap per student row that carries the matrix: ``{"cka_<name>-<variant>": path}``
    (the SST-2 and the digits reproductions alike; ``title(row)`` names the figure)."""
    from ..plots import plot_cross_layer_cka

    paths = {}
    for row in results["students"]:
        ext = row["extraction"]
        cross = ext.get("cross_layer_cka")
        if cross is None:
            continue
        label = f"{row['name']}-{row['variant']}"
        paths[f"cka_{label}"] = str(plot_cross_layer_cka(
            cross["matrix"], out / f"cka_{label}.png",
            teacher_layers=cross["teacher_layers"], student_layers=cross["student_layers"],
            pairs=[(p["teacher"], p["student"]) for p in ext.get("layer_pairs", [])], title=title(row)))
    return paths



def tabulate(results: Mapping[str, Any], output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The tabulation step alone: figures, ``table.md`` and ``results.json`` (with ``files``) from a
    reproduction's results, e.g. to redraw an earlier run's ``results.json`` with this version's
    figures and table (nothing is trained or evaluated).

    Args:
        results: what :func:`reproduce_sst2` returns (or the loaded ``results.json``).
        output_dir: where to write.

    Returns:
        The results with ``files`` (paths relative to ``output_dir``).
    """
    return write_run(results, output_dir, figures=_figures, render=render_table)


def write_run(results: Mapping[str, Any], output_dir: str | os.PathLike[str], *,
              figures: Callable[[dict[str, Any], Path], dict[str, str]],
              render: Callable[[Mapping[str, Any]], str]) -> dict[str, Any]:
    """A reproduction's figures (``figures(results, out)``), ``table.md`` (``render(results)``) and
    ``results.json`` with ``files`` relative to ``output_dir``: the writing every reproduction shares."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    files = figures(results, out)
    (out / "table.md").write_text(render(results), encoding="utf-8")
    files["table"] = str(out / "table.md")
    files["results"] = str(out / "results.json")
    results["files"] = {k: os.path.relpath(v, out) for k, v in files.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results
