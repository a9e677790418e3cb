"""The ``knowledge-retention`` command line.

``knowledge-retention`` with no arguments runs the main job on embedded defaults: a teacher and a
student whose classification heads were trained on SST-2 (built by the distillation recipes at a
quick scale on first run, then cached), evaluated on the SST-2 dev set, with the full report.

Subcommands:

* ``evaluate``        — teacher vs student (optional baseline student) on a dataset: report.
* ``arrays``          — KRS from saved arrays (``.npz``/``.safetensors``), no models needed.
* ``reproduce-sst2``  — train, distil, evaluate and tabulate the SST-2 experiments at a scale.
* ``reproduce-vision`` — the paper's image-classification experiment on the UCI digits (ResNet teacher,
  ResNet/ViT students before and after vanilla KD / FitNet) at a scale.
* ``export-hub``      — a self-contained evaluate metric folder (no need for this package), for the Hub.
* ``record-teacher``  — a causal-LM teacher's top-k log-probabilities and hidden states, written once to a
  folder that ``evaluate --teacher FOLDER`` then takes instead of the teacher.

Exit codes: 0 success; 2 bad arguments or input (argparse's errors and the package's own
``InputError``/``InputTypeError``: one line naming the flag, no stack trace); 3 a model or dataset
could not be loaded; 1 any other exception (with the stack trace: a bug to report).
Set ``KNOWLEDGE_RETENTION_DEBUG=1`` to see the stack trace of any error.

The package: :mod:`.parser` (flags), :mod:`.run` (datasets and the report), :mod:`.commands` (the
subcommands), :mod:`.main` (exit codes).

On several GPUs or processes: ``accelerate launch -m knowledge_retention.cli evaluate ...`` (or
``torchrun``) shards the examples over the processes; the main process writes the report.
"""

from __future__ import annotations

from .commands import evaluate_dataset, load_arrays
from .main import COMMANDS, as_flags, main
from .parser import (
    AOAG_CHOICES,
    ARRAY_TASK_CHOICES,
    EXIT_ERROR,
    EXIT_LOAD,
    EXIT_OK,
    EXIT_USAGE,
    FSS_CHOICES,
    TASK_CHOICES,
    VERDICT_PRESETS,
    UserError,
    build_parser,
)

__all__ = ["AOAG_CHOICES", "ARRAY_TASK_CHOICES", "COMMANDS", "EXIT_ERROR", "EXIT_LOAD", "EXIT_OK", "EXIT_USAGE",
           "FSS_CHOICES", "TASK_CHOICES", "VERDICT_PRESETS", "UserError", "as_flags", "build_parser", "evaluate_dataset",
           "load_arrays", "main"]
