r"""The public entry points of extraction: :func:`evaluate_pair` and :func:`evaluate_students`.

Both build one :class:`~knowledge_retention.extraction.options.EvalOptions` from their keyword
arguments, choose the task (:func:`task_for`) and hand everything to the one loop,
:func:`knowledge_retention.extraction.engine.run`. :func:`evaluate_pair` is :func:`evaluate_students`
with one student.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from .._validation import InputError, InputTypeError
from .engine import run
from .options import EvalOptions, MixedPrecision
from .result import ExtractionResult
from .tasks import ModelSpec, Task, choose

__all__ = ["MixedPrecision", "evaluate_pair", "evaluate_students", "record_teacher", "task_for"]

#: the options of :class:`EvalOptions` that matter to a recorded teacher (the others concern students)
RECORD_OPTIONS = ("text_column", "prompt_column", "max_length", "max_examples", "sequence_pooling", "accelerator",
                  "distributed", "mixed_precision", "trust_remote_code", "group_by_length")


def task_for(opts: EvalOptions, teacher: Any, students: Mapping[str, Any]) -> tuple[Task, EvalOptions]:
    """The task that scores this pair (:func:`~knowledge_retention.extraction.tasks.choose`), and the
    options with ``task`` resolved to a preset (the task's default when none is given)."""
    task = choose(opts.task, teacher, students, trust_remote_code=opts.trust_remote_code)
    return task, opts.with_task(opts.task or task.default_preset)


def evaluate_pair(
    teacher: torch.nn.Module | str,
    student: torch.nn.Module | str,
    dataset: Any,
    *,
    student_tokenizer: Any = None,
    cross_layer: bool = True,
    **options: Any,
) -> ExtractionResult:
    r"""Runs a teacher and a student over a text dataset and scores how much the student retained.

    A one-student call of :func:`evaluate_students` (same options, same numbers).

    .. math::

        \mathrm{KRS} = \alpha\,\underbrace{\tfrac1L \textstyle\sum_{(t,s)} \mathrm{CKA}(H^T_t, H^S_s)}_{\mathrm{FSS}}
            + \beta\,\underbrace{\tfrac1N \textstyle\sum_i e^{-\mathrm{KL}(p^T_i \Vert p^S_i)}}_{\mathrm{AOAg}}

    Args:
        teacher: a model object, or a local path / hub name loaded with
            ``AutoModelForSequenceClassification`` when its config names a classification head and
            with ``AutoModel`` otherwise (then there are no logits: no AOAg, no KRS; see ``notes``); or a
            causal-LM teacher's folder written by :func:`record_teacher` (the teacher is then not loaded).
        student: likewise.
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        student_tokenizer: the student's own tokenizer (each model tokenises the texts itself).
        cross_layer: also accumulate the ``(L_t, L_s)`` linear-CKA matrix of all hidden states
            (memory :math:`L_t L_s D_t D_s` float64 values, independent of N; for a causal-LM pair as many
            multiply-adds per counted token, so beyond 256 MiB of them the matrix is skipped with a note:
            :func:`~knowledge_retention.extraction.tasks.causal_lm.cross_layer_skipped`).
        task: ``None`` (default): ``"causal-lm"`` when the teacher and the student are both causal
            LMs (``*ForCausalLM`` objects, or paths whose config names one), else ``"nlp"``.
        (other options, the causal-lm ones included: see :func:`evaluate_students`)

    Returns:
        An :class:`ExtractionResult`. Under ``accelerate`` every process returns the same, full
        result (the states are gathered to all processes); only the main process shows progress and
        warns.

    Raises:
        TypeError: a model, tokenizer, dataset or option of the wrong type.
        ValueError: an empty dataset; a missing column (the available ones are listed); a model
            without hidden states; teacher and student with different numbers of labels; layer
            indices out of range; an invalid option value.

    Example:
        >>> from knowledge_retention.extraction import evaluate_pair  # doctest: +SKIP
        >>> result = evaluate_pair("path/to/teacher", "path/to/student", sst2_validation,
        ...                        label_column="label", layers="uniform")  # doctest: +SKIP
        >>> result.krs, result.fss, result.aoag  # doctest: +SKIP
    """
    if not isinstance(cross_layer, bool):
        raise InputTypeError(f"`cross_layer` must be True or False, got {type(cross_layer).__name__}.")
    opts = EvalOptions.build(options, where="evaluate_pair")
    spec = ModelSpec("student", student, student_tokenizer, "student", "student", "student_tokenizer", cross_layer)
    task, opts = task_for(opts, teacher, {"student": student})
    return run(task, teacher, [spec], dataset, opts)["student"]


def evaluate_students(
    teacher: torch.nn.Module | str,
    students: Mapping[str, torch.nn.Module | str],
    dataset: Any,
    *,
    student_tokenizers: Any = None,
    cross_layer: bool | Collection[str] = True,
    **options: Any,
) -> dict[str, ExtractionResult]:
    r"""Scores several students against one teacher, running the teacher once.

    Every batch is tokenised and run through the teacher once; its pooled features and logits are
    folded into every student's accumulators (or replayed from ``teacher_cache``), so memory stays
    flat in N and the cost is one teacher pass plus one pass per student. Each student's result
    equals :func:`evaluate_pair` on that pair (same options) up to float64 summation order.

    Args:
        teacher: a model object, a local path / hub name, or a :func:`record_teacher` folder (see
            :func:`evaluate_pair`).
        students: ``{name: model or path}``, at least one.
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        student_tokenizers: None (each student's own, from its path), one tokenizer for every
            student, or ``{name: tokenizer}``.
        cross_layer: also accumulate each student's ``(L_t, L_s)`` cross-layer CKA matrix: True
            (every student), False, or the names of the students that get it (a causal-LM pair whose
            matrix would stream more than 256 MiB of sums skips it, with a note).
        **options: the options of :class:`~knowledge_retention.extraction.options.EvalOptions`, each
            keyword-only (an unknown keyword is refused by name):

        text_column: the column of input texts.
        label_column: optional column of labels, kept per example (``result.labels``).
        teacher_tokenizer: the teacher's tokenizer (default: ``AutoTokenizer`` of its path). A
            missing pad token is set to the EOS token (GPT-2), on the tokenizer and the model config.
        layers: ``"final"`` (default), ``"uniform"`` (student block j vs teacher block g(j), see
            :func:`uniform_layer_mapping`), ``"all"`` (every student hidden state, embeddings
            included, vs its uniformly mapped teacher state), or explicit
            ``[(teacher_index, student_index), ...]`` hidden-state pairs (0 = embeddings, -1 = final).
        pooling: ``"cls"`` (first real token), ``"mean"`` (over the attention mask) or ``"last"``
            (last real token; decoder models).
        batch_size: examples per batch (per process); it does not change the result.
        max_length: truncate inputs to this many tokens (default and upper bound: each model's own
            limit; truncation at a model's limit is warned about once, with the count).
        max_examples: use only the first ``max_examples`` examples.
        task: preset for (alpha, beta) and the default AOAg measure (``nlp``: 0.5, 0.5, ``kl``).
            ``"causal-lm"`` scores next-token predictions token by token
            (:mod:`knowledge_retention.extraction.tasks.causal_lm`); None (default) picks it when the
            teacher and every student are causal LMs, else ``"nlp"``.
        alpha: FSS weight in [0, 1] (overrides the preset).
        beta: AOAg weight in [0, 1]; alpha + beta = 1.
        fss_method: ``linear_cka`` (default), ``debiased_cka``, ``cosine`` (equal widths) — all
            streamed — or ``rbf_cka`` (needs ``keep_arrays=True``, N <= 10,000).
        aoag_method: ``kl``, ``js``, ``top1`` or ``mse`` (default from ``task``).
        temperature: softmax temperature for the classification agreement.
        keep_arrays: also return the pooled features of the mapped layers, ``(N, D)`` each (for
            ``compute_krs``, ``evaluate`` or bootstrap intervals).
        accelerator: an ``accelerate.Accelerator``: the dataloader is sharded over its processes,
            the models are moved to ``accelerator.device`` and run under its autocast.
        distributed: create an ``Accelerator(mixed_precision=mixed_precision)`` when none is given.
        mixed_precision: ``"fp16"``/``"bf16"`` run the models under autocast (features and sums
            stay float64); with an accelerator it must match the accelerator's own setting.
        progress: show a tqdm bar over batches (main process only).
        trust_remote_code: allow custom model code when loading from paths (off by default).
        group_by_length: batch examples of similar token length (by the teacher's tokenizer,
            longest first) so that padding costs little compute; the sums do not depend on the
            order and every per-example row keeps its dataset index (default True; False keeps
            dataset order).
        teacher_cache: a :class:`TeacherCache` or a folder: the teacher's pooled features and
            logits are recorded there, and replayed (the teacher is not run) by a later call whose
            fingerprint (teacher weights, tokenizer, texts, options) matches; ``result.notes`` and
            ``result.options["teacher_cache"]`` say which happened.
        prompt_column: (causal-lm) a column of prompts put before each text; their tokens are not counted.
        generate: (causal-lm) ``{"max_new_tokens": n}``: the teacher continues each text greedily and
            both models are scored on the continuation tokens only.
        top_k: (causal-lm) the k of ``topk_overlap`` (default 5).
        average: (causal-lm) ``"token"`` (mean over counted tokens, default) or ``"sequence"`` (mean
            over texts of each text's mean).
        sequence_pooling: (causal-lm) None (every counted token is a CKA row, default), ``"mean"`` or
            ``"last"`` (one row per text).

    Returns:
        ``{name: ExtractionResult}`` in the order of ``students``; timings ``teacher_forward_s`` and
        ``tokenize_s`` count the one shared teacher pass in every result.

    Raises:
        TypeError: ``students`` is not a mapping of names to models, or an argument of the wrong type.
        ValueError: no students, an unknown name in ``student_tokenizers`` / ``cross_layer``, or
            any error of :func:`evaluate_pair`.

    Example:
        >>> from knowledge_retention import evaluate_students  # doctest: +SKIP
        >>> results = evaluate_students("teacher/", {"kd": "kd/", "pkd": "pkd/"}, dev,
        ...                             label_column="label", teacher_cache="~/.cache/krs")  # doctest: +SKIP
        >>> {name: r.krs for name, r in results.items()}  # doctest: +SKIP
    """
    opts = EvalOptions.build(options, where="evaluate_students")
    if not isinstance(students, Mapping):
        raise InputTypeError(f"`students` must be a mapping {{name: model or path}}, got {type(students).__name__}.")
    if not students:
        raise InputError("`students` is empty; give at least one {name: model or path}.")
    for name in students:
        if not isinstance(name, str):
            raise InputTypeError(f"`students` keys must be names (str), got {type(name).__name__} {name!r}.")
    if isinstance(student_tokenizers, Mapping):
        unknown = sorted(set(student_tokenizers) - set(students))
        if unknown:
            raise InputError(f"`student_tokenizers` names {unknown}, which are not in `students` {list(students)}.")
        tokenizers = {name: student_tokenizers.get(name) for name in students}
    else:
        tokenizers = {name: student_tokenizers for name in students}
    if isinstance(cross_layer, bool):
        crossed = set(students) if cross_layer else set()
    elif isinstance(cross_layer, Collection) and not isinstance(cross_layer, str):
        crossed = set(cross_layer)
        unknown = sorted(crossed - set(students))
        if unknown:
            raise InputError(f"`cross_layer` names {unknown}, which are not in `students` {list(students)}.")
    else:
        raise InputTypeError(f"`cross_layer` must be a bool or a collection of student names, got {type(cross_layer).__name__}.")
    specs = [
        ModelSpec(name, model, tokenizers[name], f"student {name!r}", f"students[{name!r}]",
                  f"student_tokenizers[{name!r}]", name in crossed)
        for name, model in students.items()
    ]
    task, opts = task_for(opts, teacher, students)
    return run(task, teacher, specs, dataset, opts)


def record_teacher(
    teacher: torch.nn.Module | str,
    dataset: Any,
    out_dir: Any,
    *,
    top_k: int | None = 128,
    layers: Any = "final",
    teacher_tokenizer: Any = None,
    batch_size: int = 32,
    progress: bool = True,
    logprob_dtype: str = "float32",
    hidden_dtype: str = "float32",
    **options: Any,
) -> dict[str, Any]:
    r"""Records a causal-LM teacher's side of an evaluation once, for students scored later without it.

    The teacher runs over the dataset through the same loop as :func:`evaluate_pair` (sharded over
    the processes of ``accelerate launch``, grouped by length, under mixed precision), and ``out_dir``
    receives, per counted token, the teacher's ``top_k`` most probable next tokens with their
    log-probabilities, the log of the remaining mass, the log-probability of the true next token and
    the hidden states of ``layers``, with a manifest (tokenizer, texts' fingerprint, options, k,
    storage size); the format is :mod:`knowledge_retention.extraction.recorded`'s. Then
    ``evaluate_pair(out_dir, student, dataset)`` / ``evaluate_students(out_dir, {...}, dataset)``
    score students against it without the teacher (:mod:`.tasks.recorded`): with k < V, KL and JS
    are lower bounds (the tail is one bucket), AOAg an upper bound and top-1 agreement exact; with
    ``top_k=None`` (k = V) the numbers equal the live teacher's.

    Args:
        teacher: a causal LM (object, or a local path / hub name).
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        out_dir: the recording's folder (created; must be absent or empty).
        top_k: k, next tokens recorded per counted token (default 128; None: the whole vocabulary).
        layers: teacher hidden states recorded for FSS: ``"final"`` (default: serves ``layers="final"``),
            ``"all"`` (serves any layer choice and the cross-layer matrix) or hidden-state indices.
        teacher_tokenizer: the teacher's tokenizer (default: its path's).
        batch_size: texts per batch (per process).
        progress: a progress bar (main process only).
        logprob_dtype: ``"float32"`` (default) or ``"float16"`` for the top-k log-probabilities.
        hidden_dtype: ``"float32"`` (default) or ``"float16"`` for the hidden states.
        **options: ``text_column``, ``prompt_column``, ``max_length``, ``max_examples``,
            ``sequence_pooling`` (an evaluation against the recording must use the same values),
            ``accelerator``, ``distributed``, ``mixed_precision``, ``trust_remote_code``,
            ``group_by_length``, as in :func:`evaluate_students`.

    Returns:
        The manifest (``num_tokens``, ``storage_bytes``, ``bytes_per_token``, ...), on every process.

    Raises:
        TypeError / ValueError (:class:`~knowledge_retention.InputError`): an option that does not
            concern the teacher, a ``top_k`` above the vocabulary, a non-empty ``out_dir``, ...

    Example:
        >>> from knowledge_retention import record_teacher, evaluate_pair  # doctest: +SKIP
        >>> record_teacher("big-teacher/", texts, "teacher_rec/", top_k=128, layers="all")  # doctest: +SKIP
        >>> evaluate_pair("teacher_rec/", "student/", texts).krs  # doctest: +SKIP
    """
    from .tasks.recorded import RecordingTask

    for key in options:
        if key not in RECORD_OPTIONS:
            known = key in EvalOptions.names()
            raise InputTypeError(f"record_teacher() got {'the student-side' if known else 'an unknown'} option `{key}`"
                                 f"{' (it is given when students are scored)' if known else ''}; its options are "
                                 f"{', '.join(RECORD_OPTIONS)}.")
    opts = EvalOptions.build({**options, "teacher_tokenizer": teacher_tokenizer, "batch_size": batch_size,
                              "progress": progress, "task": "causal-lm"}, where="record_teacher")
    task = RecordingTask(out_dir, top_k=top_k, layers=layers, logprob_dtype=logprob_dtype, hidden_dtype=hidden_dtype)
    run(task, teacher, [], dataset, opts)
    return task.manifest
