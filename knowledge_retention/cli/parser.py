"""The command line's parser: every subcommand and flag, and the argument types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._io import DEFAULT_MAX_ARRAY_BYTES
from ..methods import ARRAY_AOAG_METHODS, FSS_METHODS, aoag_methods_for  # the package's one list of methods

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LOAD = 0, 1, 2, 3
#: `arrays --max-decompressed-mb`: the Space's default ceiling (4 x its 200 MB upload limit).
_DEFAULT_MAX_DECOMPRESSED_MB = DEFAULT_MAX_ARRAY_BYTES / 2**20

FSS_CHOICES = FSS_METHODS
TASK_CHOICES = ("classification", "nlp", "regression", "causal-lm")
AOAG_CHOICES = aoag_methods_for(TASK_CHOICES)
#: `arrays` scores saved arrays: every task whose outputs are rectangular arrays (not detection's boxes).
ARRAY_TASK_CHOICES = ("classification", "nlp", "regression", "segmentation", "causal-lm")
VERDICT_PRESETS = ("default", "article", "safety-critical", "cost-sensitive")  # diagnostics.verdict.PRESETS
DEFAULT_BOOTSTRAP = 1000


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


def _max_memory_arg(value: str) -> dict[Any, str]:
    """``0=20GiB,cpu=60GiB`` as accelerate's ``max_memory`` (GPU indices as ints)."""
    memory: dict[Any, str] = {}
    for part in value.split(","):
        device, sep, size = part.strip().partition("=")
        if not sep or not device or not size:
            raise argparse.ArgumentTypeError(f"expected DEVICE=SIZE pairs like 0=20GiB,cpu=60GiB; got {value!r}")
        memory[int(device) if device.isdigit() else device] = size
    return memory


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
    group.add_argument("--bootstrap", type=int, metavar="N",
                       help=f"bootstrap replicates for confidence intervals (0 turns them off; default {DEFAULT_BOOTSTRAP})")
    group.add_argument("--verdict", choices=VERDICT_PRESETS, default="default", metavar="PRESET",
                       help="the verdict's rule: default (this package's bars, worst of retention, KL and KRS), "
                            "article (the distillation-evaluation article's rule: retention > 0.95 and KL < 0.1 "
                            "excellent, > 0.92 and < 0.3 good, > 0.90 acceptable), safety-critical (98%% retention "
                            "at least), cost-sensitive (90%%); the report shows what the others say too")
    group.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    group.add_argument("--top-k", type=int, default=10, help="examples listed where the student departs most (default 10)")
    group.add_argument("--no-latency", action="store_true", help="skip the latency/throughput measurement")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_extraction_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("extraction")
    group.add_argument("--layers", type=_layers_arg, default="final",
                       help="layer pairs for FSS: final (default, the paper's choice), uniform (PKD/TinyBERT mapping), "
                            "all, or explicit hidden-state pairs teacher:student like 0:0,6:3,12:6 (0 = embeddings)")
    group.add_argument("--pooling", choices=("cls", "mean", "last", "flatten", "positions"),
                       help="one vector per example: cls = first token (default), mean over real tokens, last real token "
                            "(decoders); image models: mean (their default: every position / patch, CLS left out), "
                            "cls, flatten (C*H*W), positions (a row per position); not for --task causal-lm")
    group.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch (default 32)")
    group.add_argument("--max-examples", type=_positive_int, help="use only the first N examples")
    group.add_argument("--max-length", type=_positive_int, help="truncate inputs to this many tokens (default: model limit)")
    group.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                       help="run the models in low precision on GPU (accumulation stays float64)")
    group.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    group.add_argument("--teacher-device-map", metavar="MAP",
                       help="load the teacher with accelerate's big-model inference: auto, balanced, sequential or cpu "
                            "(a teacher larger than the device: its blocks spread over GPUs, CPU and disk)")
    group.add_argument("--max-memory", type=_max_memory_arg, metavar="DEV=SIZE,...",
                       help="with --teacher-device-map: the memory each device may hold, e.g. 0=20GiB,cpu=60GiB")
    group.add_argument("--offload-folder", type=Path, metavar="DIR",
                       help="with --teacher-device-map: where the teacher's blocks that fit nowhere else are offloaded")
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
    ev.add_argument("--student", required=True, action="append", metavar="[NAME=]MODEL",
                    help="local model folder or hub name; repeat it to compare several students against the teacher "
                         "in one report (NAME=MODEL names a student; default: the folder's name)")
    ev.add_argument("--baseline-student", help="the same student fine-tuned on labels only: was distillation worth it? "
                                               "(with several --student: the three-way check of the comparison)")
    ev.add_argument("--dataset", required=True,
                    help="a local .csv/.tsv/.json/.jsonl/.parquet file, a folder (GLUE-style TSVs or a saved dataset), or a hub name")
    ev.add_argument("--dataset-config", help="hub dataset configuration (e.g. sst2 for glue)")
    ev.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    ev.add_argument("--text-column", default="sentence", help="column of input texts (default: sentence)")
    ev.add_argument("--image-column",
                    help="column of input images: the models are image models (classifiers, detectors, segmenters); "
                         "a folder of images as --dataset is read with the imagefolder builder")
    ev.add_argument("--flatten-grid", type=_positive_int, metavar="K",
                    help="--pooling flatten: average-pool each feature map to K x K first")
    ev.add_argument("--label-column", help="column of gold labels (optional: without it, only teacher-relative figures)")
    ev.add_argument("--prompt-column", help="--task causal-lm: column of prompts put before each text (not counted)")
    ev.add_argument("--generate-tokens", type=_positive_int, metavar="N",
                    help="--task causal-lm: the teacher continues each text greedily by N tokens; only those are scored")
    ev.add_argument("--measures", type=lambda v: [m.strip() for m in v.split(",") if m.strip()], metavar="M,...",
                    help="--task causal-lm: the token measures to compute, of kl,js,top1,topk,nll (default: all; "
                         "the others are skipped, reported as NaN, and cost nothing)")
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

    vis = sub.add_parser("reproduce-vision", help="the paper's image-classification experiment on the UCI digits",
                         description="Write the scikit-learn digits as an image folder, train a ResNet teacher and ResNet/ViT "
                                     "students (before = labels only, after = vanilla KD or FitNet) for several seeds, score "
                                     "every student with the engine at alpha = 0.3 and write results.json, table.md, figures.")
    vis.add_argument("--scale", choices=("smoke", "cpu"), default="smoke",
                     help="smoke: tiny models, a few dozen images, seconds (CI); cpu: all 1,797 digits, tens of minutes")
    vis.add_argument("--output-dir", type=Path, help="default: results/vision/digits (cpu) or results/vision/digits_smoke")
    vis.add_argument("--work-dir", type=Path, help="models and manifest (default: <output-dir>/checkpoints, git-ignored)")
    vis.add_argument("--data-dir", type=Path, help="the digits image folder (default: <work-dir>/imagefolder)")
    vis.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="student seeds (default: the scale's)")
    vis.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes (default: 1)")
    vis.add_argument("--skip-training", action="store_true", help="evaluate the models already in --work-dir")
    vis.add_argument("--quiet", action="store_true", help="no progress lines")

    hub = sub.add_parser("export-hub", help="write a self-contained evaluate metric folder, ready to push to the Hub",
                         description="Write DIR/<name of DIR>.py (the metric script), the maths it needs as flat sibling "
                                     "files, the metric card, the widget app.py and requirements.txt: evaluate.load(DIR) "
                                     "then works without this package installed; push DIR as a Space to publish it.")
    hub.add_argument("directory", type=Path, help="the folder; its name is the metric's (e.g. knowledge_retention)")
    hub.add_argument("--overwrite", action="store_true", help="replace the files of an existing folder")

    space = sub.add_parser("export-space", help="write a Gradio Space folder (the demo) that runs with its requirements.txt alone",
                           description="Write DIR/app.py and the Space's helpers (from spaces_app/), this package's sources "
                                       "vendored as DIR/knowledge_retention/, the Space card and a pinned requirements.txt "
                                       "(PyPI alone): push DIR as a Gradio Space. Needs a source checkout.")
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
