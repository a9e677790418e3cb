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

import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from .._validation import check_choice, check_positive
from ..agreement import ClassificationAgreementAccumulator, RegressionAgreementAccumulator
from ..score import DEFAULT_AOAG, TASK_PRESETS, knowledge_retention_score, resolve_weights
from ..similarity import (
    FSS_METHODS,
    CrossLayerCKAAccumulator,
    LinearCKAAccumulator,
    layer_similarity,
)
from .inputs import ModelOutputs, ModelRunner, TextSource, load_model, load_tokenizer
from .layers import LayerSpec, layer_names, resolve_layer_pairs
from .pooling import POOLINGS, Pooling
from .result import ExtractionResult
from .streams import IndexRange, Streams, collate_indices, merge, real_rows

__all__ = ["MixedPrecision", "evaluate_pair"]

MixedPrecision = Literal["no", "fp16", "bf16"]
_STREAMING_AOAG = ("kl", "js", "top1", "mse")
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _check_count(value: int | None, name: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a positive int{' or None' if optional else ''}, got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


def _pair_value(compute: Callable[[], float], pair: tuple[int, int], names: tuple[list[str], list[str]]) -> float:
    try:
        return compute()
    except ValueError as err:
        t, s = pair
        raise ValueError(
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
    task: str = "nlp",
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
) -> ExtractionResult:
    r"""Runs a teacher and a student over a text dataset and scores how much the student retained.

    .. math::

        \mathrm{KRS} = \alpha\,\underbrace{\tfrac1L \textstyle\sum_{(t,s)} \mathrm{CKA}(H^T_t, H^S_s)}_{\mathrm{FSS}}
            + \beta\,\underbrace{\tfrac1N \textstyle\sum_i e^{-\mathrm{KL}(p^T_i \Vert p^S_i)}}_{\mathrm{AOAg}}

    Args:
        teacher: a model object, or a local path / hub name loaded with
            ``AutoModelForSequenceClassification`` when its config names a classification head and
            with ``AutoModel`` otherwise (then there are no logits: no AOAg, no KRS; see ``notes``).
        student: likewise.
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of columns.
        text_column: the column of input texts.
        label_column: optional column of labels, kept per example (``result.labels``).
        teacher_tokenizer: the teacher's tokenizer (default: ``AutoTokenizer`` of its path). A
            missing pad token is set to the EOS token (GPT-2), on the tokenizer and the model config.
        student_tokenizer: the student's own tokenizer (each model tokenises the texts itself).
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
        alpha: FSS weight in [0, 1] (overrides the preset).
        beta: AOAg weight in [0, 1]; alpha + beta = 1.
        fss_method: ``linear_cka`` (default), ``debiased_cka``, ``cosine`` (equal widths) — all
            streamed — or ``rbf_cka`` (needs ``keep_arrays=True``, N <= 10,000).
        aoag_method: ``kl``, ``js``, ``top1`` or ``mse`` (default from ``task``).
        temperature: softmax temperature for the classification agreement.
        cross_layer: also accumulate the ``(L_t, L_s)`` linear-CKA matrix of all hidden states
            (memory :math:`L_t L_s D_t D_s` float64 values, independent of N).
        keep_arrays: also return the pooled features of the mapped layers, ``(N, D)`` each (for
            ``compute_krs``, ``evaluate`` or bootstrap intervals).
        accelerator: an ``accelerate.Accelerator``: the dataloader is sharded over its processes,
            the models are moved to ``accelerator.device`` and run under its autocast.
        distributed: create an ``Accelerator(mixed_precision=mixed_precision)`` when none is given.
        mixed_precision: ``"fp16"``/``"bf16"`` run the models under autocast (features and sums
            stay float64); with an accelerator it must match the accelerator's own setting.
        progress: show a tqdm bar over batches (main process only).
        trust_remote_code: allow custom model code when loading from paths (off by default).

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

    source = TextSource(dataset, text_column, label_column, max_examples)
    notes: list[str] = []
    runners: dict[str, ModelRunner] = {}
    names: dict[str, str | None] = {}
    headless: dict[str, bool] = {}
    modes: dict[str, bool] = {}
    for role, model_arg, tok_arg in (("teacher", teacher, teacher_tokenizer), ("student", student, student_tokenizer)):
        model, path, headless[role] = load_model(model_arg, role, trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(tok_arg, path, role, trust_remote_code=trust_remote_code)
        names[role] = path or type(model).__name__
        if accelerator is not None:
            model.to(accelerator.device)
        modes[role] = model.training
        model.eval()
        runners[role] = ModelRunner(model, tokenizer, role, max_length, _model_device(model))
    try:
        with torch.inference_mode():
            autocast = partial(
                _autocast, accelerator, mixed_precision, {runners["teacher"].device.type, runners["student"].device.type}
            )
            # Probe with the first example: hidden-state counts, widths and heads, before the real work.
            texts, _ = source.batch([0])
            with autocast():
                probe = {role: runner(texts, [0]) for role, runner in runners.items()}
            for runner in runners.values():
                runner.reset_counters()
            n_states = {role: len(out.hidden_states) for role, out in probe.items()}
            names_t, names_s = layer_names(n_states["teacher"]), layer_names(n_states["student"])
            pairs = resolve_layer_pairs(layers, n_states["teacher"], n_states["student"])
            if fss_method == "cosine":
                for t, s in pairs:
                    dt, ds = probe["teacher"].hidden_states[t].shape[-1], probe["student"].hidden_states[s].shape[-1]
                    if dt != ds:
                        raise ValueError(
                            f"`fss_method='cosine'` needs equal widths, but teacher layer {t} has width {dt} and "
                            f"student layer {s} has {ds}; use 'linear_cka'."
                        )
            agreement = _agreement(probe, method, temperature, headless, names, notes)
            method_used = None if agreement is None else method
            if agreement is None and is_main:
                warnings.warn(notes[-1], UserWarning, stacklevel=2)
            if cross_layer:
                t_layers, s_layers = list(range(n_states["teacher"])), list(range(n_states["student"]))
            else:
                t_layers, s_layers = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
            loader: Any = torch.utils.data.DataLoader(
                IndexRange(len(source)), batch_size=batch_size, shuffle=False, collate_fn=collate_indices
            )
            if accelerator is not None:
                loader = accelerator.prepare(loader)
            streams = Streams(
                pairs, t_layers, s_layers, capacity=min(len(source), len(loader) * batch_size),
                batch_size=batch_size, fss_method=fss_method, cross_layer=cross_layer, agreement=agreement,
                keep_arrays=keep_arrays, keep_labels=label_column is not None,
            )
            from tqdm.auto import tqdm

            accumulate_s = 0.0
            for batch in tqdm(loader, total=len(loader), disable=not (progress and is_main),
                              desc="knowledge retention", unit="batch"):
                indices = batch.tolist()
                if accelerator is not None:
                    indices = indices[: real_rows(accelerator, len(indices))]
                    if not indices:
                        continue
                texts, labels = source.batch(indices)
                with autocast():
                    outputs = {role: runner(texts, indices) for role, runner in runners.items()}
                tick = time.perf_counter()
                streams.update(outputs["teacher"], outputs["student"], pooling, indices, labels)
                accumulate_s += time.perf_counter() - tick
    finally:
        for role, runner in runners.items():
            runner.model.train(modes[role])

    counters = {
        "teacher_truncated": runners["teacher"].num_truncated,
        "student_truncated": runners["student"].num_truncated,
    }
    timings = {
        "tokenize_s": runners["teacher"].tokenize_s + runners["student"].tokenize_s,
        "teacher_forward_s": runners["teacher"].forward_s,
        "student_forward_s": runners["student"].forward_s,
        "accumulate_s": accumulate_s,
    }
    tick = time.perf_counter()
    payload = streams.payload(counters)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        merged = merge(gather_object([payload]))
    else:
        merged = merge([payload])
    if merged["index"].shape[0] != len(source) or not np.array_equal(merged["index"], np.arange(len(source))):
        raise RuntimeError(
            f"The processes evaluated {merged['index'].shape[0]} rows for {len(source)} examples (duplicated or "
            "missing examples). Use an Accelerator with even_batches=True (the default) or without "
            "dispatch_batches."
        )

    pair_names = (names_t, names_s)
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
    merge_s = time.perf_counter() - tick

    truncation = {}
    too_long = []
    for role in ("teacher", "student"):
        runner = runners[role]
        count = int(merged["counters"][f"{role}_truncated"])
        truncation[role] = {"limit": runner.limit, "limit_source": runner.limit_source, "num_truncated": count}
        if count and runner.limit_source == "model":
            too_long.append(f"{count} of {len(source)} examples for the {role} (limit {runner.limit} tokens)")
    if too_long:
        message = "Inputs longer than the model allows were truncated: " + "; ".join(too_long) + "."
        notes.append(message)
        if is_main:
            warnings.warn(message, UserWarning, stacklevel=2)

    total_s = time.perf_counter() - started
    timings.update(merge_s=merge_s, total_s=total_s, examples_per_s=len(source) / total_s)
    features = merged["features"]
    return ExtractionResult(
        fss=fss,
        aoag=aoag,
        krs=krs,
        alpha=a,
        beta=b,
        fss_method=fss_method,
        aoag_method=method_used,
        layer_pairs=pairs,
        pair_scores=scores,
        pair_linear_cka=pair_linear,
        teacher_layer_names=names_t,
        student_layer_names=names_s,
        cross_layer_cka=cross,
        mean_kl=mean_kl,
        top1_agreement=top1,
        teacher_logits=merged["teacher_logits"],
        student_logits=merged["student_logits"],
        labels=merged["labels"],
        example_indices=merged["index"],
        num_examples=len(source),
        options={
            "teacher": names["teacher"],
            "student": names["student"],
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
            "aoag_method": method_used,
            "temperature": temperature,
            "cross_layer": cross_layer,
            "keep_arrays": keep_arrays,
            "mixed_precision": accelerator.mixed_precision if accelerator is not None else (mixed_precision or "no"),
            "num_processes": 1 if accelerator is None else accelerator.num_processes,
            "device": str(runners["teacher"].device),
        },
        timings=timings,
        truncation=truncation,
        notes=notes,
        teacher_features=[features["teacher"][t] for t, _ in pairs] if keep_arrays else None,
        student_features=[features["student"][s] for _, s in pairs] if keep_arrays else None,
    )


def _agreement(
    probe: dict[str, ModelOutputs],
    method: str,
    temperature: float,
    headless: dict[str, bool],
    names: dict[str, str | None],
    notes: list[str],
) -> ClassificationAgreementAccumulator | RegressionAgreementAccumulator | None:
    """The agreement accumulator for these heads, or None (with a note) when a model has no logits."""
    missing = [role for role in ("teacher", "student") if probe[role].logits is None]
    if missing:
        why = "; ".join(
            f"the {role} ({names[role]}) "
            + ("has no classification head and was loaded with AutoModel" if headless[role] else "returns no `logits`")
            for role in missing
        )
        notes.append(f"AOAg and KRS were not computed (FSS only): {why}.")
        return None
    t_logits, s_logits = probe["teacher"].logits, probe["student"].logits
    assert t_logits is not None and s_logits is not None
    c_t, c_s = t_logits.shape[-1], s_logits.shape[-1]
    if c_t != c_s:
        raise ValueError(
            f"The teacher predicts {c_t} labels and the student {c_s}: output agreement (AOAg) needs the same "
            "label set. Pass models with the same num_labels."
        )
    if method == "mse":
        return RegressionAgreementAccumulator()
    if c_t < 2:
        raise ValueError(
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
