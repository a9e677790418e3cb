"""Copy the measured numbers into the README, between ``<!-- BEGIN name -->`` / ``<!-- END name -->`` markers.

The README shows no number typed by hand: every table comes from a file that a script in this
repository writes. ``python benchmarks/sync_readme.py`` rewrites the sections; ``--check`` only
reports whether they are in sync (exit code 1 if not; ``tests/test_readme.py`` runs it).

Sections and their sources:

* ``main-job``   ``results/main_job/report.json`` (``knowledge-retention --output-dir results/main_job``)
* ``sst2``       ``results/sst2/cpu/table.md`` (``knowledge-retention reproduce-sst2 --scale cpu``)
* ``sst2-krs``   ``results/sst2/cpu_krs_during_training/results.json`` (``reproduce-sst2 ... --krs-every 25``)
* ``benchmarks`` ``benchmarks/results/{cka_scaling,extraction_overhead,evaluate_overhead,lm_memory,lm_cost,teacher_once,threads_under_load,image_extraction}.md``
* ``lm``         ``results/lm/{training.json,demo.md}`` (``python -m knowledge_retention.lm_demo all``)
* ``vision``     ``results/vision/digits/{table.md,results.json}`` (``knowledge-retention reproduce-vision --scale cpu``)
  and ``results/vision/segmentation_synthetic/table.md`` (``python -m knowledge_retention.distillation.vision.segmentation cpu``)
* ``recorded-teacher`` ``benchmarks/results/recorded_teacher.md`` (``python benchmarks/recorded_teacher.py``)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = (
    ("cka_scaling", "Streaming CKA against its floor, and against Gram-matrix CKA"),
    ("extraction_overhead", "Extraction: overhead over a bare forward loop, and memory against N"),
    ("evaluate_overhead", "The `evaluate` module against a direct call"),
    ("lm_memory", "Causal-LM evaluation: memory against counted tokens and vocabulary, time over two forward passes"),
    ("lm_cost", "Causal-LM scoring at real vocabularies and widths: time over the two bare forward passes, before and "
                "after the one-pass step"),
    ("teacher_once", "The teacher runs once: several students, length grouping, training-time KRS, the report"),
    ("threads_under_load", "Torch threads per process: why the cpu-scale reproduction trains with one"),
    ("image_extraction", "Image models: overhead over the bare forward passes, memory against N, flatten's memory"),
)


def _missing(what: str, command: str) -> str:
    return f"_Not measured yet: run `{command}` ({what} missing), then `python benchmarks/sync_readme.py`._\n"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _interval(report: dict[str, Any], key: str) -> str:
    ci = ((report.get("uncertainty") or {}).get("intervals") or {}).get(key) or {}
    low, high = ci.get("low"), ci.get("high")
    return "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"


def main_job_section(root: Path = ROOT) -> str:
    path = root / "results" / "main_job" / "report.json"
    if not path.is_file():
        return _missing("results/main_job/report.json", "knowledge-retention --output-dir results/main_job")
    report = json.loads(path.read_text(encoding="utf-8"))
    head, quality = report["headline"], report.get("quality") or {}
    teacher_acc = (quality.get("teacher") or {}).get("accuracy")
    student_acc = (quality.get("student") or {}).get("accuracy")
    retained = (quality.get("retained") or {}).get("accuracy")
    lines = [
        f"What it printed here ({report['num_examples']} SST-2 dev sentences; "
        f"[`results/main_job/report.md`](results/main_job/report.md) is the full report):",
        "",
        "| | value |",
        "|---|---|",
        f"| KRS (α = {head['alpha']}, β = {head['beta']}) | {_num(head['krs'])}{_interval(report, 'krs')} |",
        f"| FSS ({head.get('fss_method')}, final layer) | {_num(head['fss'])}{_interval(report, 'fss')} |",
        f"| AOAg ({head.get('aoag_method')}) | {_num(head['aoag'])}{_interval(report, 'aoag')} |",
        f"| accuracy teacher → student | {_pct(teacher_acc)} → {_pct(student_acc)} (retained {_pct(retained)}) |",
    ]
    baseline = report.get("baseline") or {}
    base_quality = ((baseline.get("quality") or {}).get("student") or {}).get("accuracy")
    if baseline:
        base_head = baseline.get("headline") or {}
        lines.append(f"| baseline (same student, labels only): accuracy, KRS | {_pct(base_quality)}, "
                     f"{_num(base_head.get('krs'))} |")
    verdict = report.get("verdict") or {}
    if verdict:
        preset = verdict.get("preset")
        lines.append(f"| verdict{f' ({preset} preset)' if preset else ''} | {verdict.get('level', '?')} — "
                     f"{verdict.get('reason', '')} |")
        for name, other in (verdict.get("other_presets") or {}).items():
            if name == "article":  # the distillation-evaluation article's own rule, beside ours
                lines.append(f"| verdict (article's rule) | {other.get('level') or 'none'} — {other.get('reason', '')} |")
    if report.get("tradeoff_sentence"):
        lines.append(f"| trade-off | {report['tradeoff_sentence']} |")
    differences = (baseline.get("paired") or {}).get("differences") or {}
    cells = []
    for key, label in (("student_accuracy", "accuracy"), ("krs", "KRS")):
        d = differences.get(key)
        if d:
            verdict = "interval excludes 0" if d.get("excludes_zero") else "interval includes 0"
            cells.append(f"{label} Δ {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {verdict}")
    if cells:
        lines.append("| distilled − baseline (paired bootstrap, 95%) | " + "; ".join(cells) + " |")
    timings = report.get("timings") or {}
    if timings.get("total_s") is not None:
        speed = f" ({timings['examples_per_s']:.0f} examples/s)" if timings.get("examples_per_s") else ""
        built = f", report {timings['report_s']:.0f} s" if timings.get("report_s") is not None else ""
        lines.append(f"| time of this run (after loading the models) | extraction {timings['total_s']:.0f} s{speed}{built} |")
    return "\n".join(lines) + "\n"


def _sst2_verdicts(results: dict) -> list[str]:
    """One line per method: the seed-averaged gains with their paired intervals, and what they say."""
    seeds = results.get("seeds") or {}
    paired = (seeds.get("paired_bootstrap") or {}).get("gains", {})
    names = {"distilbert": "DistilBERT-style", "pkd": "PKD", "tinybert": "TinyBERT-style",
             "distilbert_teacher_init": "DistilBERT-style from the teacher (ablation)"}
    lines = []
    for gain in seeds.get("gains", []):
        pair = paired.get(gain["name"])
        if not pair:
            continue
        acc, krs = pair["accuracy"], pair["krs"]

        def word(d: dict) -> str:
            if not d["excludes_zero"]:
                return "not distinguishable from 0"
            return "raised" if d["gain"] > 0 else "lowered"

        both = acc["excludes_zero"] and krs["excludes_zero"] and acc["gain"] > 0 and krs["gain"] > 0
        lines.append(
            f"* {names.get(gain['name'], gain['name'])} ({gain['n']} seed{'s' if gain['n'] > 1 else ''}): accuracy "
            f"{100 * acc['gain']:+.2f} points [{100 * acc['low']:+.2f}, {100 * acc['high']:+.2f}] ({word(acc)}), "
            f"KRS {krs['gain']:+.3f} [{krs['low']:+.3f}, {krs['high']:+.3f}] ({word(krs)}); "
            f"seeds where accuracy / KRS rose: {gain['accuracy_raised']} / {gain['krs_raised']} of {gain['n']}"
            + ("; **both rose**, as in Table 9" if both else "")
        )
    return lines


def sst2_section(root: Path = ROOT) -> str:
    folder = root / "results" / "sst2" / "cpu"
    table = folder / "table.md"
    if not table.is_file():
        return _missing("results/sst2/cpu/table.md", "knowledge-retention reproduce-sst2 --scale cpu")
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    t = results.get("timings", {})

    def minutes(key: str) -> str:
        value = t.get(key)
        return "—" if value is None else f"{value / 60:.1f}"

    parts = [table.read_text(encoding="utf-8").rstrip("\n")]
    verdicts = _sst2_verdicts(results)
    if verdicts:
        level = 100 * ((results.get("seeds") or {}).get("paired_bootstrap") or {}).get("confidence_level", 0.95)
        parts += ["", f"Distillation's gain, averaged over seeds, with its {level:.0f}% paired bootstrap interval:", "",
                  *verdicts]
    if t.get("teacher_seconds") is not None:
        seeds = t.get("seed_training_seconds") or {}
        parts += [
            "",
            f"Stage timings (minutes, 2 shared CPU cores): teacher {minutes('teacher_seconds')}, general distillation "
            f"{minutes('general_distillation_seconds')}, the first seed's students {minutes('first_seed_students_seconds')}, "
            f"the other seeds {' / '.join(f'{v / 60:.1f}' for v in seeds.values()) or '—'} "
            f"(in {t.get('parallel_jobs', 1)} parallel processes: {minutes('seed_training_wall_seconds')} wall), "
            f"evaluation {minutes('evaluation_seconds')}, paired bootstrap {minutes('paired_bootstrap_seconds')}; "
            f"the whole pipeline {minutes('pipeline_seconds')} "
            f"(`{results.get('command')}`, torch {results['versions']['torch']}, "
            f"transformers {results['versions']['transformers']}).",
        ]
    departures = results.get("departures") or []
    if departures:
        parts += ["", "Departures from the paper's protocol (from `results.json`):", "",
                  "| what | paper | here | why |", "|---|---|---|---|"]
        parts += [f"| {d['what']} | {d['paper']} | {d['here']} | {d['why']} |" for d in departures]
    parts += ["", "![KRS against α for every student](results/sst2/cpu/alpha_sensitivity.png)"]
    files = results.get("files", {})
    if "alpha_sensitivity_cosine" in files:
        parts += ["", "![KRS with the paper's cosine FSS against α](results/sst2/cpu/alpha_sensitivity_cosine.png)"]
    heatmaps = [f"[{key[4:]}](results/sst2/cpu/{name})" for key, name in files.items() if key.startswith("cka_")]
    if heatmaps:
        parts += ["", "Cross-layer CKA heatmaps, teacher vs each student: " + ", ".join(heatmaps) + "."]
    return "\n".join(parts) + "\n"


KRS_RUN = Path("results") / "sst2" / "cpu_krs_during_training"


def sst2_krs_section(root: Path = ROOT) -> str:
    """KRS logged inside the reproduction's trainer (``--krs-every``), against the committed cpu run."""
    folder = root / KRS_RUN
    path = folder / "results.json"
    if not path.is_file():
        return _missing(f"{KRS_RUN}/results.json", "knowledge-retention reproduce-sst2 --scale cpu --krs-every 25 ...")
    run = json.loads(path.read_text(encoding="utf-8"))
    main = json.loads((root / "results" / "sst2" / "cpu" / "results.json").read_text(encoding="utf-8"))
    committed = {(r["name"], r["variant"]): r for r in main["students"]}
    lines = [
        f"`{run['command']}` (the cpu run's teacher and general-distilled TinyBERT reused; "
        f"[`{KRS_RUN}/results.json`]({KRS_RUN}/results.json)): KRS on the {run['data']['dev']} dev sentences at "
        "the start of each student's training, every "
        f"{next(iter(run['krs_during_training'].values()))['every_steps']} steps and at the end, logged by "
        "`KRSCallback` in the reproduction's own `DistillationTrainer`. The last column compares the trained "
        "student with the same student of the committed run above (trained there without the callback).",
        "",
        "| student | evaluations | KRS at step 0 → end | lowest, highest | accuracy here / committed run | KRS here / committed run |",
        "|---|---:|---|---|---|---|",
    ]
    for r in run["students"]:
        label = f"{r['name']}-{r['variant']}"
        history = (run["krs_during_training"].get(label) or {}).get("history") or []
        if not history:
            continue
        krs = [h["krs"] for h in history]
        other = committed.get((r["name"], r["variant"])) or {}
        lines.append(
            f"| {_SST2_NAMES.get(r['name'], r['name'])} {r['variant']} | {len(history)} | {krs[0]:.3f} → {krs[-1]:.3f} | "
            f"{min(krs):.3f}, {max(krs):.3f} | {_pct(r['accuracy'])} / {_pct(other.get('accuracy'))} | "
            f"{r['krs']:.4f} / {_num4(other.get('krs'))} |"
        )
    same = [r for r in run["students"] if (other := committed.get((r["name"], r["variant"])))
            and (r["accuracy"], r["krs"], r["fss"], r["aoag"]) == (other["accuracy"], other["krs"], other["fss"], other["aoag"])]
    lines += [
        "",
        f"{len(same)} of the {len(run['students'])} students trained with the callback have the accuracy, KRS, FSS "
        "and AOAg of the committed run's to every stored digit. TinyBERT-style *after* is logged in its "
        "prediction stage, which starts from the intermediate-layer stage's student (hence its higher start).",
        "",
        f"![KRS during training, every student]({KRS_RUN}/krs_during_training.png)",
    ]
    return "\n".join(lines) + "\n"


def _num4(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


_SST2_NAMES = {"distilbert": "DistilBERT-style", "pkd": "PKD", "tinybert": "TinyBERT-style"}


def benchmarks_section(root: Path = ROOT) -> str:
    parts = []
    for name, title in BENCHMARKS:
        path = root / "benchmarks" / "results" / f"{name}.md"
        body = path.read_text(encoding="utf-8").strip() if path.is_file() else _missing(
            f"benchmarks/results/{name}.md", f"python benchmarks/{name}.py").strip()
        body = re.sub(r"^# .*\n+", "", body)  # the file's own title: the README gives one
        body = re.sub(r"^#{1,4} ", "##### ", body, flags=re.M)  # its sub-headings go under the README's
        parts.append(f"#### {title}\n\n{body}\n")
    return "\n".join(parts)


def lm_section(root: Path = ROOT) -> str:
    folder = root / "results" / "lm"
    if not (folder / "demo.md").is_file() or not (folder / "training.json").is_file():
        return _missing("results/lm/demo.md", "python -m knowledge_retention.lm_demo all")
    train = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    minutes = sum(train[k]["train_s"] for k in ("teacher", "student_before", "student_after")) / 60
    lines = [
        f"Trained here ({train['note']}): a byte-level BPE tokenizer of {train['vocab_size']:,} tokens and a GPT-2-style "
        f"teacher ({train['teacher_layers']} blocks, width {train['width']}) on {train['train_sentences']:,} SST-2 "
        f"train sentences for {train['teacher']['steps']:,} steps of {train['batch_size']}; then a "
        f"{train['student_layers']}-block student twice from one random initialisation for "
        f"{train['student_before']['steps']:,} steps each, on the same batches: **before** = next-token "
        f"cross-entropy only, **after** = {train['kd_loss']}. Training took {minutes:.0f} minutes in all.",
        "",
        (folder / "demo.md").read_text(encoding="utf-8").strip(),
        "",
        "Files: [`results/lm/demo.json`](results/lm/demo.json) (every measure, per-position agreement, the "
        "most-disagreeing tokens), [`results/lm/training.json`](results/lm/training.json).",
    ]
    return "\n".join(lines) + "\n"


def recorded_teacher_section(root: Path = ROOT) -> str:
    path = root / "benchmarks" / "results" / "recorded_teacher.md"
    if not path.is_file():
        return _missing("benchmarks/results/recorded_teacher.md", "python benchmarks/recorded_teacher.py")
    return path.read_text(encoding="utf-8").strip() + "\n"


VISION_RUN = Path("results") / "vision" / "digits"
SEGMENTATION_RUN = Path("results") / "vision" / "segmentation_synthetic"


def vision_section(root: Path = ROOT) -> str:
    """The digits reproduction: its table, the departures, timings and figures."""
    folder = root / VISION_RUN
    if not (folder / "table.md").is_file() or not (folder / "results.json").is_file():
        return _missing(f"{VISION_RUN}/table.md", "knowledge-retention reproduce-vision --scale cpu --jobs 2")
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    t, files = results.get("timings", {}), results.get("files", {})

    def minutes(key: str) -> str:
        value = t.get(key)
        return "—" if value is None else f"{value / 60:.1f}"

    parts = [(folder / "table.md").read_text(encoding="utf-8").rstrip("\n"), "",
             f"Timings (minutes, 2 CPU cores shared with other jobs, one torch thread per process): the models' "
             f"training {minutes('model_training_seconds')} (teacher and {len(results['seeds']['seeds'])} seeds, summed "
             f"over the models; {t.get('models_reused', 0)} of them reused from earlier runs of the same settings), "
             f"evaluation with the engine {minutes('evaluation_seconds')}, bootstrap {minutes('bootstrap_seconds')}; "
             f"this run {minutes('wall_seconds')} (`{results.get('command')}`, torch {results['versions']['torch']}, "
             f"transformers {results['versions']['transformers']})."]
    departures = results.get("departures") or []
    if departures:
        parts += ["", "Departures from the paper's protocol (from `results.json`):", "",
                  "| what | paper | here | why |", "|---|---|---|---|"]
        parts += [f"| {d['what']} | {d['paper']} | {d['here']} | {d['why']} |" for d in departures]
    for key, alt in (("paper_comparison", "Our KRS before and after distillation beside the paper's Figure 3"),
                     ("krs_vs_accuracy", "KRS against accuracy for every trained student"),
                     ("alpha_sensitivity_kd", "KRS against α, before and after vanilla KD"),
                     ("alpha_sensitivity_fitnet", "KRS against α, before and after FitNet"),
                     ("cka_vit-before", "Cross-layer CKA, ResNet stages × ViT blocks, before distillation"),
                     ("cka_vit-kd", "Cross-layer CKA, ResNet stages × ViT blocks, after vanilla KD")):
        if key in files:
            parts += ["", f"![{alt}]({VISION_RUN.as_posix()}/{files[key]})"]
    heatmaps = [f"[{key[4:]}]({VISION_RUN.as_posix()}/{name})" for key, name in files.items() if key.startswith("cka_")]
    if heatmaps:
        parts += ["", "Every cross-layer CKA heatmap (first seed): " + ", ".join(heatmaps) + "."]
    segmentation = root / SEGMENTATION_RUN / "table.md"
    if segmentation.is_file():  # issue 21 item 7: python -m knowledge_retention.distillation.vision.segmentation cpu
        parts += ["", segmentation.read_text(encoding="utf-8").rstrip("\n")]
    return "\n".join(parts) + "\n"


SECTIONS = {"main-job": main_job_section, "sst2": sst2_section, "sst2-krs": sst2_krs_section,
            "benchmarks": benchmarks_section, "lm": lm_section, "vision": vision_section,
            "recorded-teacher": recorded_teacher_section}


def render(readme: str, root: Path = ROOT) -> str:
    """The README with every section replaced by what its source files say now."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"README.md lacks the markers of section {name!r}")
        body = make(root)
        readme = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the README is out of date")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    current = path.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md is out of date: run python benchmarks/sync_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
