"""The ``knowledge-retention`` command line.

``knowledge-retention`` with no arguments runs the main job on embedded defaults: a teacher and a
student whose classification heads were trained on SST-2 (built by the distillation recipes at a
quick scale on first run, then cached), evaluated on the SST-2 dev set, with the full report.

Subcommands:

* ``evaluate``        — teacher vs student (optional baseline student) on a dataset: report.
* ``arrays``          — KRS from saved arrays (``.npz``/``.safetensors``), no models needed.
* ``reproduce-sst2``  — train, distil, evaluate and tabulate the SST-2 experiments at a scale.
* ``export-hub``      — a self-contained evaluate metric folder (no need for this package), for the Hub.
* ``record-teacher``  — a causal-LM teacher's top-k log-probabilities and hidden states, written once to a
  folder that ``evaluate --teacher FOLDER`` then takes instead of the teacher.

Exit codes: 0 success; 2 bad arguments or input (argparse's errors and the package's own
``InputError``/``InputTypeError``: one line naming the flag, no stack trace); 3 a model or dataset
could not be loaded; 1 any other exception (with the stack trace: a bug to report).
Set ``KNOWLEDGE_RETENTION_DEBUG=1`` to see the stack trace of any error.

On several GPUs or processes: ``accelerate launch -m knowledge_retention.cli evaluate ...`` (or
``torchrun``) shards the examples over the processes; the main process writes the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._io import DEFAULT_MAX_ARRAY_BYTES
from ._validation import InputError, LoadError
from .methods import ARRAY_AOAG_METHODS, FSS_METHODS, aoag_methods_for  # the package's one list of methods

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LOAD = 0, 1, 2, 3
#: `arrays --max-decompressed-mb`: the Space's default ceiling (4 x its 200 MB upload limit).
_DEFAULT_MAX_DECOMPRESSED_MB = DEFAULT_MAX_ARRAY_BYTES / 2**20

FSS_CHOICES = FSS_METHODS
TASK_CHOICES = ("classification", "nlp", "regression", "causal-lm")
AOAG_CHOICES = aoag_methods_for(TASK_CHOICES)
#: `arrays` scores saved arrays: every task whose outputs are rectangular arrays (not detection's boxes).
ARRAY_TASK_CHOICES = ("classification", "nlp", "regression", "segmentation", "causal-lm")


class UserError(Exception):
    """A mistake in the arguments or the input: printed as one message, exit code 2."""




# --- argument parsing ---------------------------------------------------------------------------------


def _layers_arg(value: str) -> Any:
    """``final``, ``uniform``, ``all`` or explicit pairs ``t:s,t:s`` (hidden-state indices)."""
    if value in ("final", "uniform", "all"):
        return value
    try:
        pairs = [tuple(int(x) for x in item.split(":")) for item in value.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(
            f"expected final, uniform, all or teacher:student index pairs like 0:0,6:3,12:6; got {value!r}"
        )
    return pairs


def _unit_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def _add_scoring_options(parser: argparse.ArgumentParser, *, default_task: str) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument("--task", choices=TASK_CHOICES, default=default_task,
                       help="preset for (alpha, beta) and the default AOAg measure: classification (0.3, 0.7), "
                            "nlp (0.5, 0.5, the paper's SST-2 setting), regression (0.5, 0.5), causal-lm (0.5, 0.5: "
                            "token-level measures of two causal LMs). Default: %(default)s")
    group.add_argument("--alpha", type=_unit_float, help="weight of FSS in [0, 1]; overrides the preset (beta = 1 - alpha)")
    group.add_argument("--beta", type=_unit_float, help="weight of AOAg in [0, 1]; alpha + beta must be 1")
    group.add_argument("--fss-method", choices=FSS_CHOICES, default="linear_cka",
                       help="feature similarity: linear CKA (default), debiased CKA, RBF CKA (N <= 10,000) or cosine (equal widths)")
    group.add_argument("--aoag-method", choices=AOAG_CHOICES,
                       help="output agreement: kl = mean exp(-KL) (default for classification/nlp), js, top1, mse (regression)")
    group.add_argument("--temperature", type=float, default=1.0, help="softmax temperature for kl/js (default 1)")


def _add_report_options(parser: argparse.ArgumentParser, default_dir: str) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--output-dir", type=Path, default=Path(default_dir),
                       help="where report.json, report.md and the figures are written (default: %(default)s)")
    group.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                       help="bootstrap replicates for confidence intervals (0 turns them off; default %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    group.add_argument("--top-k", type=int, default=10, help="examples listed where the student departs most (default 10)")
    group.add_argument("--no-latency", action="store_true", help="skip the latency/throughput measurement")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_extraction_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("extraction")
    group.add_argument("--layers", type=_layers_arg, default="final",
                       help="layer pairs for FSS: final (default, the paper's choice), uniform (PKD/TinyBERT mapping), "
                            "all, or explicit hidden-state pairs teacher:student like 0:0,6:3,12:6 (0 = embeddings)")
    group.add_argument("--pooling", choices=("cls", "mean", "last"), default="cls",
                       help="one vector per example: cls = first token (default), mean over real tokens, last real token (decoders)")
    group.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch (default 32)")
    group.add_argument("--max-examples", type=_positive_int, help="use only the first N examples")
    group.add_argument("--max-length", type=_positive_int, help="truncate inputs to this many tokens (default: model limit)")
    group.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                       help="run the models in low precision on GPU (accumulation stays float64)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    group.add_argument("--teacher-cache", type=Path, metavar="DIR",
                       help="record the teacher's pooled outputs here (safetensors + fingerprint) and reuse them "
                            "when teacher, tokenizer, data and options match: the teacher is then not run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knowledge-retention",
        description="How much of the teacher did the distilled student keep? Knowledge Retention Score "
                    "(KRS = alpha*FSS + beta*AOAg) with the diagnostics around it. With no subcommand: the "
                    "main job on embedded defaults (an SST-2 teacher/student pair, the SST-2 dev set, the full report).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 2 bad arguments or input, 3 model/dataset not loadable, 1 unexpected error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    main_job = sub.add_parser("default", help="the main job on embedded defaults (what no subcommand runs)")
    _add_report_options(main_job, "krs_report")
    main_job.add_argument("--sst2-dir", type=Path,
                          help="folder with dev.tsv, and train.tsv for the first run (default: $SST2_DIR or ../shared/data/sst2)")
    main_job.add_argument("--max-examples", type=_positive_int, help="use only the first N dev sentences")
    # `knowledge-retention --help` shows the main job's options too: it is what runs without a subcommand.
    options = "\n".join(line for line in main_job.format_help().split("\n\n", 1)[1].splitlines()
                        if "-h, --help" not in line)
    parser.epilog = (f"The main job (no COMMAND, or `default`) takes these options:\n\n{options.rstrip()}\n\n"
                     f"{parser.epilog}")

    ev = sub.add_parser("evaluate", help="score a student against its teacher on a dataset and write the report",
                        description="Score a student against its teacher on a dataset and write the report.")
    ev.add_argument("--teacher", required=True, help="local model folder or hub name (AutoModelForSequenceClassification), "
                                                     "or a `record-teacher` folder (causal LMs; the teacher is not run)")
    ev.add_argument("--student", required=True, help="local model folder or hub name")
    ev.add_argument("--baseline-student", help="the same student fine-tuned on labels only: was distillation worth it?")
    ev.add_argument("--dataset", required=True,
                    help="a local .csv/.tsv/.json/.jsonl/.parquet file, a folder (GLUE-style TSVs or a saved dataset), or a hub name")
    ev.add_argument("--dataset-config", help="hub dataset configuration (e.g. sst2 for glue)")
    ev.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    ev.add_argument("--text-column", default="sentence", help="column of input texts (default: sentence)")
    ev.add_argument("--label-column", help="column of gold labels (optional: without it, only teacher-relative figures)")
    ev.add_argument("--prompt-column", help="--task causal-lm: column of prompts put before each text (not counted)")
    ev.add_argument("--generate-tokens", type=_positive_int, metavar="N",
                    help="--task causal-lm: the teacher continues each text greedily by N tokens; only those are scored")
    _add_extraction_options(ev)
    _add_scoring_options(ev, default_task="nlp")
    _add_report_options(ev, "krs_report")

    arr = sub.add_parser("arrays", help="KRS from saved arrays (.npz or .safetensors), no models needed",
                         description="KRS from saved arrays. Keys: teacher_features, student_features (N, D) or (N, L, D); "
                                     "teacher_outputs/student_outputs (or teacher_logits/student_logits).")
    arr.add_argument("path", type=Path, help=".npz or .safetensors file (pickles are never loaded)")
    _add_scoring_options(arr, default_task="classification")
    for action in arr._actions:  # saved arrays can also be label maps (segmentation)
        if action.dest == "task":
            action.choices = ARRAY_TASK_CHOICES
            action.help = (action.help or "").replace("regression (0.5, 0.5),", "regression (0.5, 0.5), segmentation (0.7, 0.3),")
        elif action.dest == "aoag_method":
            action.choices = ARRAY_AOAG_METHODS
            action.help = (action.help or "") + ", mask_iou (segmentation)"
    arr.add_argument("--inputs", choices=("logits", "probabilities"), default="logits",
                     help="whether the outputs are logits (default) or probabilities")
    arr.add_argument("--max-mse", type=float, help="regression: the MSE that maps to 0 agreement (default: teacher output variance)")
    arr.add_argument("--ignore-index", type=int, metavar="LABEL",
                     help="segmentation: a void label (e.g. 255) whose pixels are left out of the IoU")
    arr.add_argument("--max-decompressed-mb", type=float, default=_DEFAULT_MAX_DECOMPRESSED_MB, metavar="MB",
                     help="refuse an .npz whose arrays take more than MB once decompressed, before reading them "
                          "(default %(default)g, the Space's ceiling; 0 lifts the limit)")
    arr.add_argument("--json", action="store_true", help="print the result as JSON")

    rep = sub.add_parser("reproduce-sst2", help="train, distil and evaluate the SST-2 experiments (Table 9 of the paper)",
                         description="Train the teacher, the students before (hard labels) and after distillation "
                                     "(DistilBERT-style, PKD, TinyBERT-style), evaluate KRS and accuracy, write tables and figures.")
    rep.add_argument("--scale", choices=("smoke", "quick", "cpu", "full"), default="smoke",
                     help="smoke: tiny random models, seconds (CI); quick: MiniLM teacher, 4k sentences, minutes; "
                          "cpu: MiniLM teacher, 24k sentences, under an hour on 2 cores; "
                          "full: bert-base-uncased teacher from the hub, GPUs (default: smoke)")
    rep.add_argument("--output-dir", type=Path, help="default: results/sst2/<scale>")
    rep.add_argument("--work-dir", type=Path, help="where checkpoints go (default: <output-dir>/checkpoints, git-ignored)")
    rep.add_argument("--sst2-dir", type=Path, help="folder with train.tsv/dev.tsv (default: $SST2_DIR or ../shared/data/sst2)")
    rep.add_argument("--skip-training", action="store_true", help="re-evaluate the checkpoints of an earlier run (extra seeds it lacks are trained)")
    rep.add_argument("--students", nargs="+", choices=("distilbert", "pkd", "tinybert", "distilbert_teacher_init"),
                     help="train and evaluate only these students (default: all, with the teacher-initialised ablation)")
    rep.add_argument("--dry-run", action="store_true",
                     help="--scale full only: print the plan (models, steps, a GPU-hour estimate) and which "
                          "checkpoints cannot be reached, then stop")
    rep.add_argument("--jobs", type=int, default=1, help="worker processes for --extra-seeds (default: 1)")
    rep.add_argument("--reuse-teacher", type=Path, metavar="RUN_DIR",
                     help="reuse the teacher of an earlier run folder (same teacher settings) instead of training it")
    rep.add_argument("--reuse-general", type=Path, metavar="RUN_DIR",
                     help="reuse the general-distilled TinyBERT of an earlier run folder")
    rep.add_argument("--krs-every", type=int, metavar="STEPS",
                     help="log KRS (KRSCallback) every STEPS steps of the first seed's student trainings, and at "
                          "the start; results.json 'krs_during_training' and krs_during_training.png")
    rep.add_argument("--extra-seeds", nargs="+", type=int, default=[], metavar="SEED",
                     help="retrain the students with these seeds too (same teacher and data) and report the "
                          "mean and standard deviation over seeds")
    rep.add_argument("--quiet", action="store_true", help="no progress bars")

    hub = sub.add_parser("export-hub", help="write a self-contained evaluate metric folder, ready to push to the Hub",
                         description="Write DIR/<name of DIR>.py (the metric script), the maths it needs as flat sibling "
                                     "files, the metric card, the widget app.py and requirements.txt: evaluate.load(DIR) "
                                     "then works without this package installed; push DIR as a Space to publish it.")
    hub.add_argument("directory", type=Path, help="the folder; its name is the metric's (e.g. knowledge_retention)")
    hub.add_argument("--overwrite", action="store_true", help="replace the files of an existing folder")

    space = sub.add_parser("export-space", help="write a Gradio Space folder (the demo) that runs with its requirements.txt alone",
                           description="Write DIR/app.py and the Space's helpers (from spaces_app/), this package's sources "
                                       "vendored as DIR/knowledge_retention/, the Space card and a pinned requirements.txt "
                                       "(torch from the CPU index): push DIR as a Gradio Space. Needs a source checkout.")
    space.add_argument("directory", type=Path, help="the folder to write")
    space.add_argument("--overwrite", action="store_true", help="replace the files of an existing folder")
    _add_record_teacher(sub)
    return parser


def _add_record_teacher(sub: Any) -> None:
    rec = sub.add_parser("record-teacher", help="record a causal-LM teacher once (top-k log-probs, hidden states) "
                                                "for `evaluate --teacher FOLDER` without the teacher",
                         description="Run a causal-LM teacher over a dataset and write, per counted token, its top-k "
                                     "next-token log-probabilities, the tail mass and the hidden states FSS needs, with "
                                     "a manifest. Under `accelerate launch` every process writes its shards of one folder.")
    rec.add_argument("--teacher", required=True, help="local causal-LM folder or hub name")
    rec.add_argument("--dataset", required=True, help="as for evaluate: a local file or folder, or a hub name")
    rec.add_argument("--dataset-config", help="hub dataset configuration")
    rec.add_argument("--split", default="validation", help="split to record (default: validation)")
    rec.add_argument("--out-dir", type=Path, required=True, help="the recording's folder (new or empty)")
    rec.add_argument("--top-k", type=_positive_int, default=128,
                     help="next tokens recorded per counted token (default 128); --full-vocabulary records all")
    rec.add_argument("--full-vocabulary", action="store_true", help="record every token (k = V: exact scores)")
    rec.add_argument("--layers", default="final", help="teacher hidden states recorded for FSS: final (default), all, "
                                                       "or indices like 0,2,-1 (0 = embeddings)")
    rec.add_argument("--text-column", default="sentence", help="column of texts (default: sentence)")
    rec.add_argument("--prompt-column", help="column of prompts put before each text (not counted)")
    rec.add_argument("--sequence-pooling", choices=("mean", "last"), help="one hidden-state row per text")
    for flag, default in (("--logprob-dtype", "float32"), ("--hidden-dtype", "float32")):
        rec.add_argument(flag, choices=("float32", "float16"), default=default, help="storage precision (default float32)")
    rec.add_argument("--batch-size", type=_positive_int, default=32, help="texts per batch (default 32)")
    rec.add_argument("--max-examples", type=_positive_int, help="record only the first N texts")
    rec.add_argument("--max-length", type=_positive_int, help="truncate texts to this many tokens (default: model limit)")
    rec.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="run the teacher in low precision")
    rec.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub")
    rec.add_argument("--quiet", action="store_true", help="no progress bars")


# --- commands -------------------------------------------------------------------------------------------


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
            if (path / "dataset_info.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
                return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            from .distillation.data import SPLIT_FILES, load_sst2

            if any((path / name).exists() for name in SPLIT_FILES.values()):
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
    from .extraction import evaluate_students
    from .report import build_report, write_report

    extraction = extraction or {}
    scoring = scoring or {"task": "nlp"}
    progress = not getattr(args, "quiet", False)
    # under `accelerate launch` / torchrun the examples are sharded over the processes; every process
    # gets the full result and only the main one writes the report
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    common = dict(text_column=text_column, label_column=label_column, progress=progress,
                  keep_arrays=args.bootstrap > 0, distributed=distributed, **extraction, **scoring)
    # one teacher pass for the student and the baseline (replayed from --teacher-cache when it matches)
    students = {"student": student} if baseline is None else {"student": student, "baseline": baseline}
    results = evaluate_students(teacher, students, dataset, cross_layer=["student"], **common)
    result, baseline_result = results["student"], results.get("baseline")
    if distributed:
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return {}
    started = time.perf_counter()
    if progress:  # the report takes tens of seconds: say what is happening
        print(f"knowledge retention: building the report ({args.bootstrap} bootstrap replicates for the intervals, "
              "calibration, latency, the paired baseline comparison) ...", file=sys.stderr, flush=True)
    report = build_report(
        result,
        baseline=baseline_result,
        teacher=teacher,
        student=student,
        baseline_student=baseline,
        dataset=dataset,
        text_column=text_column,
        bootstrap=args.bootstrap,
        seed=args.seed,
        top_k=args.top_k,
        measure_speed=not args.no_latency,
        batch_size=extraction.get("batch_size", 32),
        options=_json_options(args),
    )
    if progress:
        print(f"knowledge retention: report built in {time.perf_counter() - started:.0f} s; writing "
              f"{args.output_dir}/report.json, report.md and the figures ...", file=sys.stderr, flush=True)
    paths = write_report(report, args.output_dir)
    _print_summary(report, paths)
    return report


def _json_options(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as recorded in the report: JSON-safe (paths as strings, layer pairs as lists)."""
    from ._json import jsonable

    return jsonable(vars(args))  # type: ignore[no-any-return]


def _print_summary(report: dict[str, Any], paths: dict[str, Any]) -> None:
    headline = report.get("headline", {})
    verdict = report.get("verdict", {})
    print()
    print(_headline_line(headline, report))
    if verdict:
        print(f"Verdict: {verdict.get('level', '?').upper()} — {verdict.get('reason', '')}")
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


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be used right now (offline mode set, or no connection within 3 s), or None."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=3):
            return None
    except OSError as err:
        return f"{endpoint.hostname} is unreachable ({err.__class__.__name__})"


def _default_pair_missing() -> bool:
    """Whether the main job must first train the default pair (and so needs train.tsv)."""
    from .distillation import defaults

    return not defaults._complete(defaults.default_pair_dir())


def _main_job_sst2_dir(flag: Path | None) -> Path | None:
    """The SST-2 folder of the main job, checked before anything runs; None: the Hub's glue/sst2.

    Raises:
        UserError: ``--sst2-dir`` / ``$SST2_DIR`` is not a folder or lacks a file the run needs.
        LoadError: no local SST-2 data and the Hub offline or unreachable (no 30 s of retries).
    """
    env = os.environ.get("SST2_DIR") or None
    source, value = ("--sst2-dir", flag) if flag is not None else ("SST2_DIR", env)
    if value is not None and not Path(value).expanduser().is_dir():
        raise UserError(f"{source} {value}: no such folder; it must hold {_SST2_FILES}")
    needed = ["dev.tsv"] + (["train.tsv"] if _default_pair_missing() else [])
    if value is not None:
        folder = Path(value).expanduser()
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{source} {value}: no {' and no '.join(missing)} in that folder; it must hold {_SST2_FILES}")
        return folder
    from .distillation.data import default_sst2_dir

    shared = default_sst2_dir()
    if shared.is_dir() and all((shared / name).is_file() for name in needed):
        return shared
    reason = _hub_unreachable()
    if reason is not None:
        raise LoadError(f"no SST-2 data found and the Hub cannot be used ({reason}); {_SST2_HINT}")
    return None


def cmd_default(args: argparse.Namespace) -> int:
    sst2_dir = _main_job_sst2_dir(args.sst2_dir)  # before torch is imported: a wrong folder is refused at once
    from .distillation.data import load_sst2
    from .distillation.defaults import ensure_default_pair

    print("Main job: an SST-2 teacher (all-MiniLM-L6-v2 fine-tuned) vs its 3-layer distilled student, on SST-2 dev;\n"
          "baseline: the same 3-layer student fine-tuned on the labels only (was distillation worth it?).")
    # The first run's training reads train.tsv through $SST2_DIR: set it for that call only, so an
    # in-process caller's environment is left as it was.
    previous = os.environ.get("SST2_DIR")
    if sst2_dir is not None:
        os.environ["SST2_DIR"] = str(sst2_dir)
    try:
        pair = ensure_default_pair(progress=not args.quiet)
    finally:
        if previous is None:
            os.environ.pop("SST2_DIR", None)
        else:
            os.environ["SST2_DIR"] = previous
    try:
        dev = load_sst2("validation", data_dir=sst2_dir)
    except ValueError as err:
        raise LoadError(str(err)) from None
    extraction: dict[str, Any] = {"layers": "final", "pooling": "cls", "batch_size": 32,
                                  "teacher_cache": Path(pair["teacher"]).parents[2] / "teacher_outputs"}
    if args.max_examples:
        extraction["max_examples"] = args.max_examples
    _run_report(pair["teacher"], pair["student"], dev, args=args, baseline=pair.get("baseline"),
                extraction=extraction, scoring={"task": "nlp"})
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    dataset = _load_dataset(args.dataset, args.split, args.dataset_config)
    from .extraction.tasks.recorded import is_recording

    # token-level report of two causal LMs (knowledge_retention/lm_report.py); a recorded teacher is one
    if args.task == "causal-lm" or is_recording(args.teacher):
        from .lm_report import run_cli

        run_cli(args, dataset)
        return EXIT_OK
    extraction = {
        "layers": args.layers, "pooling": args.pooling, "batch_size": args.batch_size,
        "max_examples": args.max_examples, "max_length": args.max_length,
        "mixed_precision": None if args.mixed_precision == "no" else args.mixed_precision,
        "trust_remote_code": args.trust_remote_code, "teacher_cache": args.teacher_cache,
    }
    scoring = {"task": args.task, "alpha": args.alpha, "beta": args.beta, "fss_method": args.fss_method,
               "aoag_method": args.aoag_method, "temperature": args.temperature}
    _run_report(args.teacher, args.student, dataset, args=args, baseline=args.baseline_student,
                text_column=args.text_column, label_column=args.label_column,
                extraction=extraction, scoring=scoring)
    return EXIT_OK


def load_arrays(path: Path, *, max_array_bytes: int | None = None) -> dict[str, Any]:
    """Reads ``.npz`` (no pickles) or ``.safetensors`` into a dict of numpy arrays (see :mod:`._io`)."""
    from ._io import read_arrays

    return read_arrays(path, max_array_bytes=max_array_bytes)


def cmd_arrays(args: argparse.Namespace) -> int:
    from .score import check_krs_options, compute_krs

    options = {"task": args.task, "alpha": args.alpha, "beta": args.beta, "fss_method": args.fss_method,
               "aoag_method": args.aoag_method, "temperature": args.temperature, "inputs": args.inputs,
               "max_mse": args.max_mse, "ignore_index": args.ignore_index}
    check_krs_options(**options)  # every flag checked before the file is read
    if args.max_decompressed_mb < 0:
        raise UserError(f"--max-decompressed-mb: expected a size in MB >= 0 (0 lifts the limit), got {args.max_decompressed_mb:g}")
    limit = int(args.max_decompressed_mb * 2**20) or None
    data = load_arrays(args.path, max_array_bytes=limit)

    def pick(*names: str) -> Any:
        present = [name for name in names if name in data]
        if len(present) > 1:  # as the Space: two names for one array is ambiguous, never silently one of them
            raise UserError(f"{args.path}: both {present[0]!r} and {present[1]!r} were given; they name the same "
                            "array, keep one")
        if present:
            return data[present[0]]
        raise UserError(f"{args.path}: missing array {names[0]!r} (found: {sorted(data)})")

    t_feat, s_feat = pick("teacher_features"), pick("student_features")  # (N, D) or (N, L, D), as everywhere
    out = compute_krs(t_feat, s_feat, pick("teacher_outputs", "teacher_logits"), pick("student_outputs", "student_logits"),
                      **options)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"KRS {out['krs']:.4f}  FSS {out['fss']:.4f} ({out['fss_method']})  AOAg {out['aoag']:.4f} "
              f"({out['aoag_method']})  alpha={out['alpha']} beta={out['beta']}  N={out['num_examples']}")
    return EXIT_OK


def cmd_export_hub(args: argparse.Namespace) -> int:
    from .hub_export import export_hub

    files = export_hub(args.directory, overwrite=args.overwrite)
    print(f"Wrote {len(files)} files to {args.directory}: " + ", ".join(sorted(p.name for p in files.values())))
    print(f'Load it with evaluate.load("{args.directory}"); push the folder as a Gradio Space to publish it.')
    return EXIT_OK


def cmd_export_space(args: argparse.Namespace) -> int:
    from .space_export import export_space

    files = export_space(args.directory, overwrite=args.overwrite)
    print(f"Wrote {len(files)} files to {args.directory} (app.py, requirements.txt, README.md, the package vendored).")
    print(f"Try it: pip install -r {args.directory}/requirements.txt && python {args.directory}/app.py")
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduction import render_table, reproduce_sst2

    if args.dry_run:
        if args.scale != "full":
            raise UserError(f"--dry-run: only for --scale full (the scale that needs the Hub and GPUs), got --scale {args.scale}")
        from .reproduction import full_scale_plan, render_plan

        print(render_plan(full_scale_plan(args.extra_seeds or (1, 2))))
        return EXIT_OK
    if args.jobs < 1:
        raise UserError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    if args.krs_every is not None and args.krs_every < 1:
        raise UserError(f"--krs-every: expected an integer >= 1 (training steps), got {args.krs_every}")
    output_dir = args.output_dir or Path("results") / "sst2" / args.scale
    results = reproduce_sst2(args.scale, output_dir, work_dir=args.work_dir, data_dir=args.sst2_dir,
                             skip_training=args.skip_training, students=args.students,
                             extra_seeds=args.extra_seeds, progress=not args.quiet, jobs=args.jobs,
                             teacher_from=args.reuse_teacher, general_from=args.reuse_general,
                             krs_every=args.krs_every)
    print(render_table(results))
    print("Written: " + ", ".join(str(Path(output_dir) / f) for f in results["files"].values()))
    return EXIT_OK


def _silence_progress_bars() -> None:
    """``--quiet``: also the progress bars of transformers (weight loading) and datasets (tokenising)."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging
    except ImportError:  # the `extract` extra is not installed: nothing of theirs will run
        return
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{parameter name: flag}`` of one subcommand, read from its parser (``fss_method`` -> ``--fss-method``)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = subparsers[0].choices.get(command) if subparsers else None
    flags: dict[str, str] = {}
    for action in (sub or parser)._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.dest not in ("help",):
            flags[action.dest] = long[0]
    return flags


def as_flags(message: str, flags: dict[str, str]) -> str:
    """An error raised by the library, worded for a command-line user: the flags they typed.

    A backquoted name (`` `alpha` ``) becomes its flag (`` `--alpha` ``) and ``inputs='probabilities'``
    becomes ``--inputs probabilities``.
    Names that are not options of the command (array keys such as ``teacher_features``) are kept.
    """
    if not flags:
        return message
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    message = re.sub(rf"\b({names})=(['\"])(.*?)\2", lambda m: f"{flags[m.group(1)]} {m.group(3)}", message)
    message = re.sub(rf"\b({names})=([\w.+-]+)", lambda m: f"{flags[m.group(1)]} {m.group(2)}", message)
    return re.sub(rf"`({names})`", lambda m: f"`{flags[m.group(1)]}`", message)


#: How the evaluator names the CLI's two students (``evaluate_students``' keys) on the command line.
_STUDENT_FLAGS = {"student": "--student", "baseline": "--baseline-student"}


def _user_message(err: BaseException, parser: argparse.ArgumentParser, command: str) -> str:
    """One line: the library's message in the flags the user typed (students by their flags too)."""
    message = " ".join(str(err).split())
    if command in ("evaluate", "default"):
        for name, flag in _STUDENT_FLAGS.items():
            for form in (f"`students[{name!r}]`", f"`student_tokenizers[{name!r}]`"):
                message = message.replace(form, f"`{flag}`")
            message = message.replace(f"student {name!r}", f"student ({flag})")
    return as_flags(message, _flags_of(parser, command))


def cmd_record_teacher(args: argparse.Namespace) -> int:
    from .extraction import record_teacher

    parts = [p.strip() for p in args.layers.split(",")]
    try:
        layers: Any = args.layers if args.layers in ("final", "all") else [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--layers: expected final, all or hidden-state indices like 0,2,-1; got {args.layers!r}") from None
    manifest = record_teacher(
        args.teacher, _load_dataset(args.dataset, args.split, args.dataset_config), args.out_dir,
        top_k=None if args.full_vocabulary else args.top_k, layers=layers, batch_size=args.batch_size,
        progress=not args.quiet, logprob_dtype=args.logprob_dtype, hidden_dtype=args.hidden_dtype,
        text_column=args.text_column, prompt_column=args.prompt_column, sequence_pooling=args.sequence_pooling,
        max_examples=args.max_examples, max_length=args.max_length, trust_remote_code=args.trust_remote_code,
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun: the main process says it
        print(f"recorded {manifest['num_tokens']:,} tokens of {manifest['num_examples']:,} texts (top-{manifest['top_k']} of "
              f"{manifest['vocab_size']:,}, {manifest['bytes_per_token'] or 0:,.0f} bytes a token) in {args.out_dir}")
    return EXIT_OK


COMMANDS = {"default": cmd_default, "evaluate": cmd_evaluate, "arrays": cmd_arrays, "reproduce-sst2": cmd_reproduce,
            "export-hub": cmd_export_hub, "export-space": cmd_export_space, "record-teacher": cmd_record_teacher}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["default", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["default"])
    if getattr(args, "quiet", False):
        _silence_progress_bars()
    import warnings

    # a warning (FSS only: a model without a classification head, ...) reads as one line, not as source code
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"knowledge-retention: warning: {message}\n"
    try:
        return _run_command(parser, args)
    finally:
        warnings.formatwarning = previous


def _run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Runs the subcommand; the package's own errors become one line and exit 2 or 3, anything else exit 1."""
    try:
        return COMMANDS[args.command](args)
    except (LoadError, OSError) as err:  # a model or dataset that cannot be loaded (before InputError: a LoadError is both)
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        print(f"knowledge-retention: error: {_user_message(err, parser, args.command)}", file=sys.stderr)
        return EXIT_LOAD
    except (UserError, InputError) as err:  # the user's mistake: exactly the package's own input errors
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        print(f"knowledge-retention: error: {_user_message(err, parser, args.command)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("knowledge-retention: interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug: say so, with the stack trace to report
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        traceback.print_exc()
        print("knowledge-retention: internal error (a bug, not your input): please report the stack trace above",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
