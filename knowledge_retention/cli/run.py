"""Reading ``--dataset`` and running the report: the one path of ``evaluate`` (and the main job) for every task."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._validation import InputError, LoadError
from .parser import DEFAULT_BOOTSTRAP, UserError

_DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".arrow")


def _looks_local(spec: str) -> bool:
    """A path, not a Hub name: a data suffix, a leading ``.``/``/``/``~``, a backslash or more than one ``/``."""
    return (Path(spec).suffix.lower() in _DATA_SUFFIXES or spec.startswith((".", "/", "~")) or "\\" in spec
            or spec.count("/") > 1 or os.sep != "/" and os.sep in spec)


def _load_dataset(spec: str, split: str, config: str | None) -> Any:
    """A local file or folder, or a hub dataset, as a ``datasets.Dataset``."""
    path = Path(spec).expanduser()
    if not path.exists() and _looks_local(spec):
        raise UserError(f"--dataset {spec}: no such file or folder (a Hub dataset is named NAME or NAMESPACE/NAME)")
    import datasets

    try:
        if path.is_file():
            suffix = path.suffix.lower()
            kinds = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
            if suffix not in kinds:
                raise UserError(f"--dataset: unsupported file type {suffix!r}; expected one of {sorted(kinds)}")
            _check_table_file(path, spec)
            extra = {"delimiter": "\t"} if suffix == ".tsv" else {}
            return datasets.load_dataset(kinds[suffix], data_files={"data": str(path)}, split="data", **extra)
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "state.json").exists() or \
                    (path / "dataset_dict.json").exists():
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict) and split not in loaded:
                    raise UserError(f"--split {split}: {spec} has the splits {sorted(loaded)}")
                return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            from ..distillation.data import SPLIT_FILES, load_sst2

            if any((path / name).exists() for name in SPLIT_FILES.values()):
                present = [name for name, file in SPLIT_FILES.items() if (path / file).is_file()]
                if split not in present:
                    raise UserError(f"--split {split}: {spec} is a GLUE-style folder with the splits {present} "
                                    f"({', '.join(SPLIT_FILES[name] for name in present)})")
                return load_sst2(split, data_dir=path)  # type: ignore[arg-type]
            return datasets.load_dataset(str(path), config, split=split)
        return datasets.load_dataset(spec, config, split=split)
    except UserError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise LoadError(f"--dataset {spec!r} (split {split!r}) could not be loaded: {err}") from None
    except Exception as err:  # datasets' own DatasetGenerationError: the file's content, not a bug here
        if type(err).__module__.startswith("datasets"):
            cause = err.__cause__ or err.__context__ or err
            raise LoadError(f"--dataset {spec!r} could not be read: {str(cause).strip().splitlines()[0]}") from None
        raise


def _check_table_file(path: Path, spec: str) -> None:
    """An empty file, or a CSV/TSV with a header and no rows, is refused by name before ``datasets`` reads it."""
    if path.stat().st_size == 0 or not path.read_bytes()[:65536].strip():
        raise UserError(f"--dataset {spec}: the file is empty; it needs a header and one row per example")
    if path.suffix.lower() in (".csv", ".tsv"):
        with path.open("rb") as handle:
            rows = 0
            for line in handle:
                rows += bool(line.strip())
                if rows > 1:
                    return
        raise UserError(f"--dataset {spec}: the file has a header and no rows; it needs one row per example")


def _run_report(
    teacher: Any,
    student: Any,
    dataset: Any,
    *,
    args: argparse.Namespace,
    baseline: Any = None,
    text_column: str = "sentence",
    label_column: str | None = "label",
    extraction: dict[str, Any] | None = None,
    scoring: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluates the students (one teacher pass), builds one report (a comparison when ``student`` is
    ``{name: model}`` with several entries) and writes it: the one path of every task."""
    from ..extraction import evaluate_students
    from ..reporting import build_report, write_report

    extraction = dict(extraction or {})
    scoring = scoring or {"task": "nlp"}
    progress = not getattr(args, "quiet", False)
    students = dict(student) if isinstance(student, dict) else {"student": student}
    comparing = len(students) > 1
    if baseline is not None:
        students["baseline"] = baseline
    bootstrap = DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap
    # under `accelerate launch` / torchrun the examples are sharded over the processes; every process
    # gets the full result and only the main one writes the report
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    common = dict(text_column=text_column, label_column=label_column, progress=progress,
                  distributed=distributed, **extraction, **scoring)
    # the arrays serve the bootstrap, and RBF CKA, which needs the N x N Gram matrices and cannot stream
    keep = bootstrap > 0 or scoring.get("fss_method") == "rbf_cka"
    cross = True if comparing else ["student"]
    # one teacher pass for every student (replayed from --teacher-cache when it matches)
    try:
        results = evaluate_students(teacher, students, dataset, cross_layer=cross, keep_arrays=keep, **common)
    except InputError as err:
        if not keep or "keep_arrays" not in str(err):
            raise
        if args.bootstrap is not None:  # asked for intervals the task cannot give: say so, naming the flag
            raise InputError(f"--bootstrap {args.bootstrap}: intervals need per-example arrays, which "
                             f"--task {scoring.get('task')} does not keep ({err}); pass --bootstrap 0") from None
        results = evaluate_students(teacher, students, dataset, cross_layer=cross, keep_arrays=False, **common)
    if distributed:
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return {}
    started = time.perf_counter()
    if progress:  # the report takes tens of seconds: say what is happening
        print(f"knowledge retention: building the report ({bootstrap} bootstrap replicates for the intervals, "
              "calibration, latency, the paired comparisons) ...", file=sys.stderr, flush=True)
    common_report = dict(teacher=teacher, dataset=dataset, text_column=text_column, bootstrap=bootstrap, seed=args.seed,
                         top_k=args.top_k, measure_speed=not args.no_latency, thresholds=args.verdict,
                         batch_size=extraction.get("batch_size", 32), options=_json_options(args))
    if comparing:
        report = build_report(results, student=students, baseline="baseline" if baseline is not None else None,
                              **common_report)
    else:
        report = build_report(results["student"], baseline=results.get("baseline"), student=students["student"],
                              baseline_student=baseline, **common_report)
    if progress:
        print(f"knowledge retention: report built in {time.perf_counter() - started:.0f} s; writing "
              f"{args.output_dir}/report.json, report.md and the figures ...", file=sys.stderr, flush=True)
    paths = write_report(report, args.output_dir)
    _print_summary(report, paths)
    return report


def _json_options(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as recorded in the report: JSON-safe (paths as strings, layer pairs as lists)."""
    from .._json import jsonable

    return jsonable(vars(args))  # type: ignore[no-any-return]


def _print_summary(report: dict[str, Any], paths: dict[str, Any]) -> None:
    print()
    if report.get("kind") == "comparison":
        for row in report["students"]:
            krs = "—" if row["krs"] is None else f"{row['krs']:.3f}"
            accuracy = "" if row["accuracy"] is None else f"  accuracy {row['accuracy']:.3f}"
            front = ", ".join(k for k, on in row["on_front"].items() if on)
            print(f"{row['name']:>16}: KRS {krs}{accuracy}  verdict {row['verdict'] or 'none'}"
                  + (f"  (on the {front} front)" if front else ""))
        print(f"Best KRS: {report['best']}")
        if report.get("three_way"):
            print(report["three_way"]["sentence"])
    else:
        headline = report.get("headline", {})
        print(_headline_line(headline, report))
        tokens = report.get("tokens")
        if tokens:
            def shown(key: str, digits: int) -> str:  # a measure skipped with --measures is null: "n/a"
                value = tokens.get(key)
                return "n/a" if value is None or value != value else f"{value:.{digits}f}"

            print(f"top-1 {shown('top1_agreement', 3)}  top-k {shown('topk_overlap', 3)}  "
                  f"perplexity teacher {shown('teacher_perplexity', 2)} / student {shown('student_perplexity', 2)}")
        verdict = report.get("verdict")
        if verdict:
            print(f"Verdict ({verdict.get('preset')} preset): {(verdict.get('level') or 'none').upper()} — "
                  f"{verdict.get('reason', '')}")
            others = verdict.get("other_presets") or {}
            print("Other presets: " + ", ".join(f"{k} {(v.get('level') or 'none')}" for k, v in others.items()))
        if report.get("tradeoff_sentence"):
            print(report["tradeoff_sentence"])
    if paths:
        print("Report: " + ", ".join(str(p) for p in paths.values() if p))


def _headline_line(headline: dict[str, Any], report: dict[str, Any]) -> str:
    """``KRS x (FSS y, AOAg z; ...)``, or FSS alone when a model has no output layer to compare."""

    def number(key: str) -> str:
        value = headline.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    if headline.get("krs") is None:
        notes = [str(n) for n in report.get("notes", []) if "FSS only" in str(n)]
        why = notes[0] if notes else "AOAg and KRS were not computed: a model gives no outputs to compare."
        return f"FSS {number('fss')} only. {why}"
    return (f"KRS {number('krs')}  (FSS {number('fss')}, AOAg {number('aoag')}; alpha={headline.get('alpha')}, "
            f"beta={headline.get('beta')})")


_SST2_FILES = "GLUE's SST-2 TSV files: dev.tsv, and train.tsv for the first run (which trains the default pair)"
_SST2_HINT = f"pass --sst2-dir DIR or set SST2_DIR to a folder with {_SST2_FILES}"
