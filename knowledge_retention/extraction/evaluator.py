r"""Teacher vs student on a text dataset, streamed batch by batch into the core accumulators.

Each batch is tokenised by each model's own tokenizer (dynamic padding), both models run under
``torch.inference_mode()`` with ``output_hidden_states=True``, every needed hidden state is pooled
to one vector per example, and the pooled features and logits go straight into

* one :class:`~knowledge_retention.similarity.LinearCKAAccumulator` per mapped layer pair
  (plus a :class:`~knowledge_retention.similarity.CosineAccumulator` for ``fss_method="cosine"``),
* a :class:`~knowledge_retention.similarity.CrossLayerCKAAccumulator` over all teacher x student
  hidden states (the heatmap), and
* a :class:`~knowledge_retention.agreement.ClassificationAgreementAccumulator` (or the regression
  one for ``aoag_method="mse"``),

so memory does not grow with N apart from the per-example logits/labels ``(N, C)`` that the
diagnostics need. Then :math:`\mathrm{FSS} = \frac1L\sum_l \mathrm{sim}_l` and
:math:`\mathrm{KRS} = \alpha\,\mathrm{FSS} + \beta\,\mathrm{AOAg}` by the core functions.

With ``accelerate``, each process runs its shard of the prepared dataloader; the duplicates that
pad an uneven last round are dropped *before* the forward pass by the rule ``gather_for_metrics``
applies (the first ``gradient_state.remainder`` rows of the gathered last round are real), and the
accumulator states and per-example rows are merged with ``gather_object`` and ``+=``. The
distributed numbers equal the single-process ones up to float64 summation order.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from .._validation import InputError, InputTypeError, check_choice, check_positive
from ..agreement import ClassificationAgreementAccumulator, RegressionAgreementAccumulator
from ..score import DEFAULT_AOAG, TASK_PRESETS, knowledge_retention_score, resolve_weights
from ..similarity import (
    FSS_METHODS,
    CrossLayerCKAAccumulator,
    LinearCKAAccumulator,
    layer_similarity,
)
from .batching import length_grouped_order, token_lengths
from .inputs import ModelOutputs, ModelRunner, TextSource, load_model, load_tokenizer
from .layers import LayerSpec, layer_names, resolve_layer_pairs
from .pooling import POOLINGS, Pooling
from .result import ExtractionResult
from .streams import IndexRange, Streams, collate_indices, merge, pool_outputs, real_rows
from .tasks import causal_lm as _causal_lm
from .teacher_cache import (
    CACHE_VERSION,
    TeacherBatch,
    TeacherCache,
    as_cache,
    fingerprint,
    model_fingerprint,
    new_meta,
    texts_fingerprint,
    tokenizer_fingerprint,
)

__all__ = ["MixedPrecision", "evaluate_pair", "evaluate_students"]

MixedPrecision = Literal["no", "fp16", "bf16"]
_STREAMING_AOAG = ("kl", "js", "top1", "mse")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
_TEACHER = "\x00teacher"  # the teacher's key next to student names (which are any str)


def _check_count(value: int | None, name: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"`{name}` must be a positive int{' or None' if optional else ''}, got {type(value).__name__}.")
    if value < 1:
        raise InputError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def _pair_value(compute: Callable[[], float], pair: tuple[int, int], names: tuple[list[str], list[str]]) -> float:
    try:
        return compute()
    except ValueError as err:
        t, s = pair
        raise InputError(
            f"Layer pair (teacher {t} = {names[0][t]}, student {s} = {names[1][s]}): {err} With pooling='cls' "
            "the embedding output of the first token is the same for every example; exclude layer 0 or use "
            "pooling='mean'."
            if t == 0 or s == 0
            else f"Layer pair (teacher {t} = {names[0][t]}, student {s} = {names[1][s]}): {err}"
        ) from err


def _cka_or_nan(acc: LinearCKAAccumulator) -> float:
    try:
        return acc.compute()
    except ValueError:  # constant features: CKA undefined
        return float("nan")


def _cross_matrix(cross: CrossLayerCKAAccumulator) -> np.ndarray:
    """The ``(L_t, L_s)`` linear-CKA matrix; NaN where a layer is constant over examples (CKA undefined)."""
    return np.array([[_cka_or_nan(cross.pair(i, j)) for j in range(len(cross.ss))] for i in range(len(cross.tt))])


def _autocast(accelerator: Any, mixed_precision: str | None, devices: set[str]) -> ExitStack:
    stack = ExitStack()
    if accelerator is not None:
        stack.enter_context(accelerator.autocast())
    elif mixed_precision in _HALF:
        for device_type in sorted(devices):
            stack.enter_context(torch.autocast(device_type=device_type, dtype=_HALF[mixed_precision]))
    return stack


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@dataclass
class _Student:
    """One student to score: its model argument, tokenizer, and how messages name it."""

    name: str
    model: Any
    tokenizer: Any
    role: str  # in messages: "student" or "student 'name'"
    argument: str  # the argument holding the model: "student" or "students['name']"
    tokenizer_argument: str
    cross_layer: bool


def evaluate_pair(
    teacher: torch.nn.Module | str,
    student: torch.nn.Module | str,
    dataset: Any,
    *,
    text_column: str = "sentence",
    label_column: str | None = None,
    teacher_tokenizer: Any = None,
    student_tokenizer: Any = None,
    layers: LayerSpec = "final",
    pooling: Pooling = "cls",
    batch_size: int = 32,
    max_length: int | None = None,
    max_examples: int | None = None,
    task: str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    fss_method: str = "linear_cka",
    aoag_method: str | None = None,
    temperature: float = 1.0,
    cross_layer: bool = True,
    keep_arrays: bool = False,
    accelerator: Any = None,
    distributed: bool = False,
    mixed_precision: MixedPrecision | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    group_by_length: bool = True,
    teacher_cache: Any = None,
    prompt_column: str | None = None,
    generate: Mapping[str, Any] | None = None,
    top_k: int = 5,
    average: str = "token",
    sequence_pooling: str | None = None,
) -> ExtractionResult:
    r"""Runs a teacher and a student over a text dataset and scores how much the student retained.

    A one-student call of :func:`evaluate_students` (same options, same numbers).

    .. math::

        \mathrm{KRS} = \alpha\,\underbrace{\tfrac1L \textstyle\sum_{(t,s)} \mathrm{CKA}(H^T_t, H^S_s)}_{\mathrm{FSS}}
            + \beta\,\underbrace{\tfrac1N \textstyle\sum_i e^{-\mathrm{KL}(p^T_i \Vert p^S_i)}}_{\mathrm{AOAg}}

    Args:
        teacher: a model object, or a local path / hub name loaded with
            ``AutoModelForSequenceClassification`` when its config names a classification head and
            with ``AutoModel`` otherwise (then there are no logits: no AOAg, no KRS; see ``notes``).
        student: likewise.
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        student_tokenizer: the student's own tokenizer (each model tokenises the texts itself).
        cross_layer: also accumulate the ``(L_t, L_s)`` linear-CKA matrix of all hidden states
            (memory :math:`L_t L_s D_t D_s` float64 values, independent of N).
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
    spec = _Student("student", student, student_tokenizer, "student", "student", "student_tokenizer", bool(cross_layer))
    lm = dict(prompt_column=prompt_column, generate=generate, top_k=top_k, average=average,
              sequence_pooling=sequence_pooling)
    if _causal_lm.wanted(task, teacher, [student], trust_remote_code=trust_remote_code):
        return _causal_lm.dispatch(
            teacher, [spec], dataset, text_column=text_column, label_column=label_column,
            teacher_tokenizer=teacher_tokenizer, layers=layers, pooling=pooling, batch_size=batch_size,
            max_length=max_length, max_examples=max_examples, alpha=alpha, beta=beta, fss_method=fss_method,
            aoag_method=aoag_method, temperature=temperature, keep_arrays=keep_arrays, accelerator=accelerator,
            distributed=distributed, mixed_precision=mixed_precision, progress=progress,
            trust_remote_code=trust_remote_code, group_by_length=group_by_length, teacher_cache=teacher_cache, **lm,
        )["student"]
    task = task or "nlp"
    _causal_lm.refuse_lm_options(task, lm)
    results = _evaluate(
        teacher, [spec], dataset, text_column=text_column, label_column=label_column,
        teacher_tokenizer=teacher_tokenizer, layers=layers, pooling=pooling, batch_size=batch_size,
        max_length=max_length, max_examples=max_examples, task=task, alpha=alpha, beta=beta,
        fss_method=fss_method, aoag_method=aoag_method, temperature=temperature, keep_arrays=keep_arrays,
        accelerator=accelerator, distributed=distributed, mixed_precision=mixed_precision, progress=progress,
        trust_remote_code=trust_remote_code, group_by_length=group_by_length, teacher_cache=teacher_cache,
    )
    return results["student"]


def evaluate_students(
    teacher: torch.nn.Module | str,
    students: Mapping[str, torch.nn.Module | str],
    dataset: Any,
    *,
    text_column: str = "sentence",
    label_column: str | None = None,
    teacher_tokenizer: Any = None,
    student_tokenizers: Any = None,
    layers: LayerSpec = "final",
    pooling: Pooling = "cls",
    batch_size: int = 32,
    max_length: int | None = None,
    max_examples: int | None = None,
    task: str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    fss_method: str = "linear_cka",
    aoag_method: str | None = None,
    temperature: float = 1.0,
    cross_layer: bool | Collection[str] = True,
    keep_arrays: bool = False,
    accelerator: Any = None,
    distributed: bool = False,
    mixed_precision: MixedPrecision | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    group_by_length: bool = True,
    teacher_cache: Any = None,
    prompt_column: str | None = None,
    generate: Mapping[str, Any] | None = None,
    top_k: int = 5,
    average: str = "token",
    sequence_pooling: str | None = None,
) -> dict[str, ExtractionResult]:
    r"""Scores several students against one teacher, running the teacher once.

    Every batch is tokenised and run through the teacher once; its pooled features and logits are
    folded into every student's accumulators (or replayed from ``teacher_cache``), so memory stays
    flat in N and the cost is one teacher pass plus one pass per student. Each student's result
    equals :func:`evaluate_pair` on that pair (same options) up to float64 summation order.

    Args:
        teacher: a model object, or a local path / hub name (see :func:`evaluate_pair`).
        students: ``{name: model or path}``, at least one.
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        student_tokenizers: None (each student's own, from its path), one tokenizer for every
            student, or ``{name: tokenizer}``.
        cross_layer: also accumulate each student's ``(L_t, L_s)`` cross-layer CKA matrix: True
            (every student), False, or the names of the students that get it.
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
    if not isinstance(students, Mapping):
        raise TypeError(f"`students` must be a mapping {{name: model or path}}, got {type(students).__name__}.")
    if not students:
        raise ValueError("`students` is empty; give at least one {name: model or path}.")
    for name in students:
        if not isinstance(name, str):
            raise TypeError(f"`students` keys must be names (str), got {type(name).__name__} {name!r}.")
    if isinstance(student_tokenizers, Mapping):
        unknown = sorted(set(student_tokenizers) - set(students))
        if unknown:
            raise ValueError(f"`student_tokenizers` names {unknown}, which are not in `students` {list(students)}.")
        tokenizers = {name: student_tokenizers.get(name) for name in students}
    else:
        tokenizers = {name: student_tokenizers for name in students}
    if isinstance(cross_layer, bool):
        crossed = set(students) if cross_layer else set()
    elif isinstance(cross_layer, Collection) and not isinstance(cross_layer, str):
        crossed = set(cross_layer)
        unknown = sorted(crossed - set(students))
        if unknown:
            raise ValueError(f"`cross_layer` names {unknown}, which are not in `students` {list(students)}.")
    else:
        raise TypeError(f"`cross_layer` must be a bool or a collection of student names, got {type(cross_layer).__name__}.")
    specs = [
        _Student(name, model, tokenizers[name], f"student {name!r}", f"students[{name!r}]",
                 f"student_tokenizers[{name!r}]", name in crossed)
        for name, model in students.items()
    ]
    lm = dict(prompt_column=prompt_column, generate=generate, top_k=top_k, average=average,
              sequence_pooling=sequence_pooling)
    if _causal_lm.wanted(task, teacher, list(students.values()), trust_remote_code=trust_remote_code, names=list(students)):
        return _causal_lm.dispatch(
            teacher, specs, dataset, text_column=text_column, label_column=label_column,
            teacher_tokenizer=teacher_tokenizer, layers=layers, pooling=pooling, batch_size=batch_size,
            max_length=max_length, max_examples=max_examples, alpha=alpha, beta=beta, fss_method=fss_method,
            aoag_method=aoag_method, temperature=temperature, keep_arrays=keep_arrays, accelerator=accelerator,
            distributed=distributed, mixed_precision=mixed_precision, progress=progress,
            trust_remote_code=trust_remote_code, group_by_length=group_by_length, teacher_cache=teacher_cache, **lm,
        )
    task = task or "nlp"
    _causal_lm.refuse_lm_options(task, lm)
    return _evaluate(
        teacher, specs, dataset, text_column=text_column, label_column=label_column,
        teacher_tokenizer=teacher_tokenizer, layers=layers, pooling=pooling, batch_size=batch_size,
        max_length=max_length, max_examples=max_examples, task=task, alpha=alpha, beta=beta,
        fss_method=fss_method, aoag_method=aoag_method, temperature=temperature, keep_arrays=keep_arrays,
        accelerator=accelerator, distributed=distributed, mixed_precision=mixed_precision, progress=progress,
        trust_remote_code=trust_remote_code, group_by_length=group_by_length, teacher_cache=teacher_cache,
    )


@dataclass
class _Plan:
    """What is compared for one student: layer pairs, pooled layers, agreement."""

    pairs: list[tuple[int, int]]
    names_s: list[str]
    t_layers: list[int]
    s_layers: list[int]
    agreement: ClassificationAgreementAccumulator | RegressionAgreementAccumulator | None
    method_used: str | None
    notes: list[str]


def _evaluate(
    teacher: Any,
    specs: list[_Student],
    dataset: Any,
    *,
    text_column: str,
    label_column: str | None,
    teacher_tokenizer: Any,
    layers: LayerSpec,
    pooling: Pooling,
    batch_size: int,
    max_length: int | None,
    max_examples: int | None,
    task: str,
    alpha: float | None,
    beta: float | None,
    fss_method: str,
    aoag_method: str | None,
    temperature: float,
    keep_arrays: bool,
    accelerator: Any,
    distributed: bool,
    mixed_precision: MixedPrecision | None,
    progress: bool,
    trust_remote_code: bool,
    group_by_length: bool,
    teacher_cache: Any,
) -> dict[str, ExtractionResult]:
    """The evaluator behind :func:`evaluate_pair` and :func:`evaluate_students`.

    Per batch: the texts are read once; the teacher runs once (or its batch is replayed from the
    cache) and is pooled once (:class:`PooledBatch`); then each student runs and its pooled batch
    is folded, with the shared teacher batch, into that student's :class:`Streams`.
    """
    started = time.perf_counter()
    check_choice(pooling, "pooling", POOLINGS)
    batch_size = _check_count(batch_size, "batch_size", optional=False)  # type: ignore[assignment]
    max_length = _check_count(max_length, "max_length", optional=True)
    max_examples = _check_count(max_examples, "max_examples", optional=True)
    check_choice(task, "task", tuple(TASK_PRESETS))
    a, b = resolve_weights(task, alpha, beta)
    check_choice(fss_method, "fss_method", FSS_METHODS)
    if fss_method == "rbf_cka" and not keep_arrays:
        raise ValueError(
            "`fss_method='rbf_cka'` needs the full N x N Gram matrices and cannot stream: pass keep_arrays=True "
            "(N <= 10,000), or use 'linear_cka' / 'debiased_cka'."
        )
    method = aoag_method if aoag_method is not None else DEFAULT_AOAG[task]
    check_choice(method, "aoag_method", _STREAMING_AOAG)
    temperature = check_positive(temperature, "temperature")
    if mixed_precision is not None:
        check_choice(mixed_precision, "mixed_precision", ("no", *_HALF))
    if not isinstance(group_by_length, bool):
        raise TypeError(f"`group_by_length` must be a bool, got {type(group_by_length).__name__}.")
    cache = as_cache(teacher_cache)
    if accelerator is None and distributed:
        from accelerate import Accelerator

        # without a GPU, accelerate joins a torchrun/`accelerate launch` process group only with
        # cpu=True (gloo); otherwise every process would see a world of one and redo all examples
        accelerator = Accelerator(mixed_precision=mixed_precision or "no", cpu=not torch.cuda.is_available())
    if accelerator is not None:
        if not hasattr(accelerator, "prepare") or not hasattr(accelerator, "gradient_state"):
            raise TypeError(f"`accelerator` must be an accelerate.Accelerator, got {type(accelerator).__name__}.")
        if mixed_precision is not None and mixed_precision != accelerator.mixed_precision:
            raise ValueError(
                f"`mixed_precision={mixed_precision!r}` conflicts with the accelerator's "
                f"mixed_precision={accelerator.mixed_precision!r}; set it on the Accelerator only."
            )
    is_main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    world = 1 if accelerator is None else accelerator.num_processes
    precision = accelerator.mixed_precision if accelerator is not None else (mixed_precision or "no")

    source = TextSource(dataset, text_column, label_column, max_examples)
    common_notes: list[str] = []
    headless: dict[str, bool] = {}
    names: dict[str, str | None] = {}
    t_model, t_path, t_headless = load_model(teacher, "teacher", trust_remote_code=trust_remote_code)
    t_tok = load_tokenizer(teacher_tokenizer, t_path, "teacher", trust_remote_code=trust_remote_code)
    headless[_TEACHER] = t_headless
    names[_TEACHER] = t_path or type(t_model).__name__
    models: list[tuple[torch.nn.Module, Any, str, str]] = [(t_model, t_tok, "teacher", "teacher_tokenizer")]
    for spec in specs:
        model, path, headless[spec.name] = load_model(spec.model, spec.role, trust_remote_code=trust_remote_code,
                                                      argument=spec.argument)
        tokenizer = load_tokenizer(spec.tokenizer, path, spec.role, trust_remote_code=trust_remote_code,
                                   argument=spec.tokenizer_argument)
        names[spec.name] = path or type(model).__name__
        models.append((model, tokenizer, spec.role, spec.tokenizer_argument))
    runners: list[ModelRunner] = []
    modes: list[bool] = []
    for model, tokenizer, role, tok_arg in models:
        if accelerator is not None:
            model.to(accelerator.device)
        modes.append(model.training)
        model.eval()
        runners.append(ModelRunner(model, tokenizer, role, max_length, _model_device(model), tokenizer_arg=tok_arg))
    t_runner = runners[0]
    s_runners = {spec.name: runner for spec, runner in zip(specs, runners[1:], strict=True)}
    try:
        with torch.inference_mode():
            autocast = partial(_autocast, accelerator, mixed_precision, {r.device.type for r in runners})
            key: str | None = None
            parts: dict[str, Any] | None = None
            replay = None
            if cache is not None:
                parts = _cache_parts(cache, t_runner, source, text_column=text_column, pooling=pooling,
                                     max_length=max_length, batch_size=batch_size, group_by_length=group_by_length,
                                     num_processes=world, precision=precision)
                key = fingerprint(parts)
                replay = cache.lookup(key, rank, world)
            # Probe with the first example: hidden-state counts, widths and heads, before the real work.
            texts, _ = source.batch([0])
            with autocast():
                probes = {name: runner(texts, [0]) for name, runner in s_runners.items()}
                t_probe = None if replay is not None else t_runner(texts, [0])
            for runner in runners:
                runner.reset_counters()
            if replay is not None:
                t_info = replay[0]["teacher"]
            else:
                assert t_probe is not None
                t_info = {
                    "n_states": len(t_probe.hidden_states),
                    "widths": [int(h.shape[-1]) for h in t_probe.hidden_states],
                    "num_outputs": None if t_probe.logits is None else int(t_probe.logits.shape[-1]),
                    "pooling": pooling,
                }
            n_t = int(t_info["n_states"])
            names_t = layer_names(n_t)
            plans = {spec.name: _plan(spec, probes[spec.name], t_info, layers, fss_method, method, temperature,
                                      headless, names) for spec in specs}
            for plan in plans.values():
                if plan.agreement is None and is_main:
                    warnings.warn(plan.notes[-1], UserWarning, stacklevel=3)
            recorder = None
            if cache is not None and replay is None:
                assert key is not None
                recorder = cache.recorder(key, rank)
                t_pool_layers = list(range(n_t))  # a recorded entry serves any later choice of layers
            else:
                t_pool_layers = sorted({t for plan in plans.values() for t in plan.t_layers})
            t_info["layers"] = t_pool_layers
            grouping_s = 0.0
            if replay is not None:
                rank_meta = replay[0]["ranks"][rank]
                batches: Any = replay[1]
                n_loader_batches, capacity = int(rank_meta["n_batches"]), int(rank_meta["n_rows"])
                where = cache.where(key) if cache is not None and key is not None else "?"
                common_notes.append(
                    f"Teacher outputs replayed from the teacher cache ({where}, written {replay[0]['created_at']}): "
                    "the teacher was not run; its timings are the ones recorded then."
                )
                if progress and is_main:
                    print(f"knowledge retention: teacher outputs reused from the teacher cache ({where})",
                          file=sys.stderr, flush=True)
            else:
                order = None
                if group_by_length:
                    tick = time.perf_counter()
                    order = length_grouped_order(token_lengths(t_runner.tokenizer, source, t_runner.limit))
                    grouping_s = time.perf_counter() - tick
                batches = torch.utils.data.DataLoader(
                    IndexRange(len(source), order), batch_size=batch_size, shuffle=False, collate_fn=collate_indices
                )
                if accelerator is not None:
                    batches = accelerator.prepare(batches)
                n_loader_batches = len(batches)
                capacity = min(len(source), n_loader_batches * batch_size)
            streams = {
                name: Streams(
                    plan.pairs, plan.t_layers, plan.s_layers, capacity=capacity, batch_size=batch_size,
                    fss_method=fss_method, cross_layer=_crossed(specs, name),
                    agreement=plan.agreement, keep_arrays=keep_arrays, keep_labels=label_column is not None,
                )
                for name, plan in plans.items()
            }
            from tqdm.auto import tqdm

            accumulate_s = dict.fromkeys(plans, 0.0)
            n_batches = 0
            for item in tqdm(batches, total=n_loader_batches, disable=not (progress and is_main),
                             desc=f"knowledge retention: teacher vs {', '.join(plans)}", unit="batch"):
                if replay is not None:
                    teacher_batch: TeacherBatch = item
                    indices = teacher_batch.indices
                else:
                    indices = item.tolist()
                    if accelerator is not None:
                        indices = indices[: real_rows(accelerator, len(indices))]
                        if not indices:
                            continue
                texts, labels = source.batch(indices)
                n_batches += 1
                tick = time.perf_counter()
                if replay is None:
                    with autocast():
                        t_out = t_runner(texts, indices)
                    tick = time.perf_counter()
                    teacher_batch = TeacherBatch(indices, pool_outputs(t_out, t_pool_layers, pooling))
                    del t_out  # the full hidden states: free them before the students run
                    if recorder is not None:
                        recorder.add(teacher_batch)
                teacher_pool_s = time.perf_counter() - tick
                for name, runner in s_runners.items():
                    with autocast():
                        s_out = runner(texts, indices)
                    tick = time.perf_counter()
                    plan = plans[name]
                    streams[name].update(teacher_batch.pooled, pool_outputs(s_out, plan.s_layers, pooling),
                                         indices, labels)
                    del s_out
                    accumulate_s[name] += teacher_pool_s + time.perf_counter() - tick
    finally:
        for runner, mode in zip(runners, modes, strict=True):
            runner.model.train(mode)

    if replay is not None:
        t_timing = {k: float(replay[0]["ranks"][rank][k]) for k in ("truncated", "tokenize_s", "forward_s")}
    else:
        t_timing = {"truncated": t_runner.num_truncated, "tokenize_s": t_runner.tokenize_s,
                    "forward_s": t_runner.forward_s}
    tick = time.perf_counter()
    payloads = {
        name: streams[name].payload({"teacher_truncated": int(t_timing["truncated"]),
                                     "student_truncated": s_runners[name].num_truncated})
        for name in plans
    }
    rank_info = None
    if recorder is not None:
        assert key is not None and parts is not None
        meta = new_meta(key, parts, t_info, world)
        rank_info = recorder.close(meta, {**t_timing, "n_forward_batches": n_batches})
    if accelerator is not None and world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([{"students": payloads, "teacher_cache": rank_info}])
    else:
        gathered = [{"students": payloads, "teacher_cache": rank_info}]
    cache_state = None
    if cache is not None and key is not None:
        if recorder is not None:
            meta["ranks"] = [g["teacher_cache"] for g in gathered]
            if is_main or cache.in_memory:
                cache.finalize(key, meta)
            if accelerator is not None and world > 1:
                accelerator.wait_for_everyone()  # the entry is complete before any process looks again
            common_notes.append(f"Teacher outputs recorded in the teacher cache ({cache.where(key)}).")
        cache_state = {"location": cache.where(key), "key": key, "reused": replay is not None}
    gather_s = time.perf_counter() - tick

    results: dict[str, ExtractionResult] = {}
    warned: set[str] = set()
    for spec in specs:
        name = spec.name
        tick = time.perf_counter()
        merged = merge([g["students"][name] for g in gathered])
        if merged["index"].shape[0] != len(source) or not np.array_equal(merged["index"], np.arange(len(source))):
            raise RuntimeError(
                f"The processes evaluated {merged['index'].shape[0]} rows for {len(source)} examples (duplicated or "
                "missing examples). Use an Accelerator with even_batches=True (the default) or without "
                "dispatch_batches."
            )
        plan = plans[name]
        notes = [*common_notes, *plan.notes]
        truncation = {}
        too_long = []
        for role, runner in (("teacher", t_runner), ("student", s_runners[name])):
            count = int(merged["counters"][f"{role}_truncated"])
            truncation[role] = {"limit": runner.limit, "limit_source": runner.limit_source, "num_truncated": count}
            if count and runner.limit_source == "model":
                who = role if role == "teacher" else spec.role
                too_long.append(f"{count} of {len(source)} examples for the {who} (limit {runner.limit} tokens)")
        if too_long:
            message = "Inputs longer than the model allows were truncated: " + "; ".join(too_long) + "."
            notes.append(message)
            if is_main and message not in warned:
                warned.add(message)
                warnings.warn(message, UserWarning, stacklevel=3)
        s_runner = s_runners[name]
        timings = {
            "tokenize_s": float(t_timing["tokenize_s"]) + s_runner.tokenize_s,
            "teacher_forward_s": float(t_timing["forward_s"]),
            "student_forward_s": s_runner.forward_s,
            "accumulate_s": accumulate_s[name],
            "grouping_s": grouping_s,
            "forward_batches": float(n_batches),
        }
        results[name] = _result(
            merged, plan, names_t, spec, names, source, text_column=text_column, label_column=label_column,
            layers=layers, pooling=pooling, batch_size=batch_size, max_length=max_length, max_examples=max_examples,
            task=task, fss_method=fss_method, method=method, temperature=temperature, keep_arrays=keep_arrays,
            precision=precision, world=world, device=str(s_runner.device), a=a, b=b, timings=timings,
            merge_s=gather_s + time.perf_counter() - tick, truncation=truncation, notes=notes,
            group_by_length=group_by_length, cache_state=cache_state,
        )
    total_s = time.perf_counter() - started
    for result in results.values():
        result.timings.update(total_s=total_s, examples_per_s=len(source) / total_s)
    return results


def _crossed(specs: list[_Student], name: str) -> bool:
    return next(spec.cross_layer for spec in specs if spec.name == name)


def _plan(
    spec: _Student,
    probe: ModelOutputs,
    t_info: Mapping[str, Any],
    layers: LayerSpec,
    fss_method: str,
    method: str,
    temperature: float,
    headless: dict[str, bool],
    names: dict[str, str | None],
) -> _Plan:
    """Layer pairs, the hidden states to pool and the agreement accumulator of one student."""
    n_t, n_s = int(t_info["n_states"]), len(probe.hidden_states)
    pairs = resolve_layer_pairs(layers, n_t, n_s)
    if fss_method == "cosine":
        for t, s in pairs:
            dt, ds = int(t_info["widths"][t]), probe.hidden_states[s].shape[-1]
            if dt != ds:
                raise InputError(
                    f"`fss_method='cosine'` needs equal widths, but teacher layer {t} has width {dt} and "
                    f"{spec.role} layer {s} has {ds}; use 'linear_cka'."
                )
    notes: list[str] = []
    s_outputs = None if probe.logits is None else int(probe.logits.shape[-1])
    agreement = _agreement(t_info["num_outputs"], s_outputs, method, temperature, headless, names, spec, notes)
    if spec.cross_layer:
        t_layers, s_layers = list(range(n_t)), list(range(n_s))
    else:
        t_layers, s_layers = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
    return _Plan(pairs, layer_names(n_s), t_layers, s_layers, agreement, None if agreement is None else method, notes)


def _cache_parts(
    cache: TeacherCache, runner: ModelRunner, source: TextSource, **options: Any
) -> dict[str, Any]:
    """What the teacher's recorded outputs depend on (the fingerprint's parts)."""
    import transformers

    if cache.in_memory:  # one process's lifetime: the objects themselves (the teacher must not change)
        model_part, tokenizer_part = f"object {id(runner.model)}", f"object {id(runner.tokenizer)}"
    else:
        model_part, tokenizer_part = model_fingerprint(runner.model), tokenizer_fingerprint(runner.tokenizer)
    return {
        "cache_version": CACHE_VERSION,
        "teacher": model_part,
        "teacher_tokenizer": tokenizer_part,
        "texts": texts_fingerprint(source),
        "num_examples": len(source),
        "teacher_limit": runner.limit,
        "device_type": runner.device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **options,
    }


def _result(
    merged: dict[str, Any],
    plan: _Plan,
    names_t: list[str],
    spec: _Student,
    names: dict[str, str | None],
    source: TextSource,
    *,
    text_column: str,
    label_column: str | None,
    layers: LayerSpec,
    pooling: str,
    batch_size: int,
    max_length: int | None,
    max_examples: int | None,
    task: str,
    fss_method: str,
    method: str,
    temperature: float,
    keep_arrays: bool,
    precision: str,
    world: int,
    device: str,
    a: float,
    b: float,
    timings: dict[str, float],
    merge_s: float,
    truncation: dict[str, Any],
    notes: list[str],
    group_by_length: bool,
    cache_state: dict[str, Any] | None,
) -> ExtractionResult:
    """Scores of one student from its merged states."""
    tick = time.perf_counter()
    pairs = plan.pairs
    pair_names = (names_t, plan.names_s)
    cka: list[LinearCKAAccumulator] = merged["cka"]
    if fss_method in ("linear_cka", "debiased_cka"):
        pair_linear = [_pair_value(acc.compute, pair, pair_names) for acc, pair in zip(cka, pairs, strict=True)]
    else:  # only informative next to cosine / RBF scores: NaN where undefined
        pair_linear = [_cka_or_nan(acc) for acc in cka]
    scores = _pair_scores(fss_method, pairs, pair_linear, cka, merged, pair_names)
    fss = float(np.mean(scores))
    aoag = mean_kl = top1 = None
    agreement = merged["agreement"]
    if isinstance(agreement, ClassificationAgreementAccumulator):
        aoag = agreement.compute(method)  # type: ignore[arg-type]
        mean_kl, top1 = agreement.mean_kl, agreement.compute("top1")
    elif isinstance(agreement, RegressionAgreementAccumulator):
        aoag = agreement.compute()
    if aoag is not None:
        krs: float | None = knowledge_retention_score(fss, aoag, alpha=a, beta=b)
    elif b == 0.0:
        krs = knowledge_retention_score(fss, 0.0, alpha=a, beta=b)
    else:
        krs = None
    cross = None if merged["cross"] is None else _cross_matrix(merged["cross"])
    timings["merge_s"] = merge_s + time.perf_counter() - tick
    features = merged["features"]
    return ExtractionResult(
        fss=fss,
        aoag=aoag,
        krs=krs,
        alpha=a,
        beta=b,
        fss_method=fss_method,
        aoag_method=plan.method_used,
        layer_pairs=pairs,
        pair_scores=scores,
        pair_linear_cka=pair_linear,
        teacher_layer_names=names_t,
        student_layer_names=plan.names_s,
        cross_layer_cka=cross,
        mean_kl=mean_kl,
        top1_agreement=top1,
        teacher_logits=merged["teacher_logits"],
        student_logits=merged["student_logits"],
        labels=merged["labels"],
        example_indices=merged["index"],
        num_examples=len(source),
        options={
            "teacher": names[_TEACHER],
            "student": names[spec.name],
            "student_name": spec.name,
            "text_column": text_column,
            "label_column": label_column,
            "layers": layers if isinstance(layers, str) else [list(p) for p in layers],
            "layer_pairs": [list(p) for p in pairs],
            "pooling": pooling,
            "batch_size": batch_size,
            "max_length": max_length,
            "max_examples": max_examples,
            "task": task,
            "fss_method": fss_method,
            "aoag_method": plan.method_used,
            "temperature": temperature,
            "cross_layer": spec.cross_layer,
            "keep_arrays": keep_arrays,
            "mixed_precision": precision,
            "num_processes": world,
            "device": device,
            "group_by_length": group_by_length,
            "teacher_cache": cache_state,
        },
        timings=timings,
        truncation=truncation,
        notes=notes,
        teacher_features=[features["teacher"][t] for t, _ in pairs] if keep_arrays else None,
        student_features=[features["student"][s] for _, s in pairs] if keep_arrays else None,
    )


def _agreement(
    teacher_outputs: int | None,
    student_outputs: int | None,
    method: str,
    temperature: float,
    headless: dict[str, bool],
    names: dict[str, str | None],
    spec: _Student,
    notes: list[str],
) -> ClassificationAgreementAccumulator | RegressionAgreementAccumulator | None:
    """The agreement accumulator for these heads, or None (with a note) when a model has no logits."""
    missing = [(role, key) for role, key, width in (("teacher", _TEACHER, teacher_outputs),
                                                   (spec.role, spec.name, student_outputs)) if width is None]
    if missing:
        why = "; ".join(
            f"the {role} ({names[key]}) "
            + ("has no classification head and was loaded with AutoModel" if headless[key] else "returns no `logits`")
            for role, key in missing
        )
        notes.append(f"AOAg and KRS were not computed (FSS only): {why}.")
        return None
    c_t, c_s = teacher_outputs, student_outputs
    assert c_t is not None and c_s is not None
    if c_t != c_s:
        raise InputError(
            f"The teacher predicts {c_t} labels and the {spec.role} {c_s}: output agreement (AOAg) needs the same "
            "label set. Pass models with the same num_labels."
        )
    if method == "mse":
        return RegressionAgreementAccumulator()
    if c_t < 2:
        raise InputError(
            f"The models have {c_t} output (a regression head): `aoag_method={method!r}` needs class logits; "
            "use aoag_method='mse' (or task='regression')."
        )
    return ClassificationAgreementAccumulator(temperature=temperature)


def _pair_scores(
    fss_method: str,
    pairs: list[tuple[int, int]],
    pair_linear: list[float],
    cka: list[LinearCKAAccumulator],
    merged: dict[str, Any],
    names: tuple[list[str], list[str]],
) -> list[float]:
    """Per-pair similarity on the FSS scale, with the clipping rules of ``similarity.layer_similarity``."""
    if fss_method == "linear_cka":
        return pair_linear
    if fss_method == "debiased_cka":
        return [
            min(max(_pair_value(partial(acc.compute, debiased=True), pair, names), 0.0), 1.0)
            for acc, pair in zip(cka, pairs, strict=True)
        ]
    if fss_method == "cosine":
        return [max(0.0, acc.compute()) for acc in merged["cosine"]]
    features = merged["features"]
    return [
        _pair_value(partial(layer_similarity, features["teacher"][t], features["student"][s], method="rbf_cka"),
                    (t, s), names)
        for t, s in pairs
    ]
