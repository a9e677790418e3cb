r"""Text classifiers (``task`` = ``nlp``, ``classification``, ``regression``...): one row per example.

Each batch is tokenised by each model's own tokenizer (dynamic padding), both models run with
``output_hidden_states=True``, every needed hidden state is pooled to one vector per example
(:func:`~knowledge_retention.extraction.pooling.pool_hidden_states`), and the pooled features and
logits go into one :class:`~knowledge_retention.extraction.streams.Streams` per student: linear CKA
per mapped layer pair (plus cosine for ``fss_method="cosine"``), the cross-layer matrix, and the
classification (or regression) agreement. Memory does not grow with N apart from the per-example
logits/labels ``(N, C)`` that the diagnostics need. Then
:math:`\mathrm{FSS} = \frac1L\sum_l \mathrm{sim}_l` and :math:`\mathrm{KRS} = \alpha\,\mathrm{FSS} + \beta\,\mathrm{AOAg}`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from ..._validation import InputError, check_choice
from ...agreement import ClassificationAgreementAccumulator, RegressionAgreementAccumulator
from ...methods import CLASSIFICATION_METHODS
from ...score import DEFAULT_AOAG, TASK_PRESETS, knowledge_retention_score, resolve_weights
from ...similarity import FSS_METHODS, CrossLayerCKAAccumulator, LinearCKAAccumulator, layer_similarity
from ..batching import token_lengths
from ..inputs import ModelRunner, TextSource, load_model, load_tokenizer
from ..layers import layer_names, resolve_layer_pairs
from ..options import EvalOptions
from ..pooling import POOLINGS
from ..result import ExtractionResult
from ..runtime import model_device
from ..streams import PooledBatch, Streams, merge, pool_outputs
from ..teacher_cache import CACHE_VERSION, model_fingerprint, texts_fingerprint, tokenizer_fingerprint
from .base import Batch, ModelSpec, Plan, Task, _load_kwargs

__all__ = ["TextClassificationTask", "cka_or_nan", "cross_matrix"]

#: the agreement measures of per-example outputs that stream (classes, or one regression output)
_STREAMING_AOAG = (*CLASSIFICATION_METHODS, "mse")
#: options of the causal-lm task (refused here when set)
LM_ONLY = ("prompt_column", "generate", "top_k", "average", "sequence_pooling", "measures")


def cka_or_nan(acc: LinearCKAAccumulator) -> float:
    """Linear CKA, NaN where it is undefined (a constant layer)."""
    try:
        return acc.compute()
    except ValueError:
        return float("nan")


def cross_matrix(cross: CrossLayerCKAAccumulator) -> np.ndarray:
    """The ``(L_t, L_s)`` linear-CKA matrix; NaN where a layer is constant over examples (CKA undefined)."""
    return np.array([[cka_or_nan(cross.pair(i, j)) for j in range(len(cross.ss))] for i in range(len(cross.tt))])


def pair_value(compute: Callable[[], float], pair: tuple[int, int], names: tuple[list[str], list[str]]) -> float:
    """A layer pair's similarity; its error names the pair (and the cls/embeddings pitfall)."""
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


class TextClassificationTask(Task):
    """A text classifier (or regressor) teacher and students: pooled hidden states, per-example logits."""

    name = "text-classification"
    presets = tuple(k for k in TASK_PRESETS if k != "causal-lm")

    def __init__(self) -> None:
        self.headless: dict[str, bool] = {}

    def check_options(self, opts: EvalOptions) -> None:
        given = [k for k in LM_ONLY if not opts.is_default(k)]
        if given:
            raise InputError(f"{', '.join(f'`{k}`' for k in given)} apply to task='causal-lm' only; got task={opts.task!r}.")
        check_choice(opts.pooling, "pooling", POOLINGS)
        task = str(opts.task)
        check_choice(task, "task", tuple(TASK_PRESETS))
        self.weights = resolve_weights(task, opts.alpha, opts.beta)
        check_choice(opts.fss_method, "fss_method", FSS_METHODS)
        if opts.fss_method == "rbf_cka" and not opts.keep_arrays:
            raise InputError(
                "`fss_method='rbf_cka'` needs the full N x N Gram matrices and cannot stream: pass keep_arrays=True "
                "(N <= 10,000), or use 'linear_cka' / 'debiased_cka'."
            )
        self.temperature = float(opts.temperature)
        self.method = opts.aoag_method if opts.aoag_method is not None else DEFAULT_AOAG[task]
        check_choice(self.method, "aoag_method", _STREAMING_AOAG)

    def make_source(self, dataset: Any, opts: EvalOptions) -> TextSource:
        return TextSource(dataset, opts.text_column, opts.label_column, opts.max_examples)

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> ModelRunner:
        model, path, headless = load_model(spec.model, spec.role, trust_remote_code=opts.trust_remote_code,
                                           argument=spec.argument, load_kwargs=_load_kwargs(spec, opts))
        tokenizer = load_tokenizer(spec.preprocessor, path, spec.role, trust_remote_code=opts.trust_remote_code,
                                   argument=spec.preprocessor_argument)
        device.place(model)
        runner = ModelRunner(model, tokenizer, spec.role, opts.max_length, model_device(model),
                             tokenizer_arg=spec.preprocessor_argument)
        runner.path = path  # type: ignore[attr-defined]
        self.headless[spec.name] = headless
        return runner

    def probe(self, source: TextSource, runner: ModelRunner, opts: EvalOptions) -> dict[str, Any]:
        texts, _ = source.batch([0])
        out = runner(texts, [0])
        return {
            "n_states": len(out.hidden_states),
            "widths": [int(h.shape[-1]) for h in out.hidden_states],
            "num_outputs": None if out.logits is None else int(out.logits.shape[-1]),
            "pooling": opts.pooling,
        }

    def plan(self, spec: ModelSpec, t_info: dict[str, Any], s_info: dict[str, Any], opts: EvalOptions,
             names: dict[str, str]) -> Plan:
        n_t, n_s = int(t_info["n_states"]), int(s_info["n_states"])
        pairs = resolve_layer_pairs(opts.layers, n_t, n_s)
        if opts.fss_method == "cosine":
            for t, s in pairs:
                dt, ds = int(t_info["widths"][t]), int(s_info["widths"][s])
                if dt != ds:
                    raise InputError(
                        f"`fss_method='cosine'` needs equal widths, but teacher layer {t} has width {dt} and "
                        f"{spec.role} layer {s} has {ds}; use 'linear_cka'."
                    )
        notes: list[str] = []
        agreement = self._agreement(t_info["num_outputs"], s_info["num_outputs"], spec, names, notes)
        if spec.cross_layer:
            t_layers, s_layers = list(range(n_t)), list(range(n_s))
        else:
            t_layers, s_layers = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
        extra = {"agreement": agreement, "method_used": None if agreement is None else self.method,
                 "warn": [notes[-1]] if agreement is None else []}
        return Plan(pairs, layer_names(n_s), t_layers, s_layers, notes, extra)

    def _agreement(self, teacher_outputs: int | None, student_outputs: int | None, spec: ModelSpec,
                   names: dict[str, str], notes: list[str]) -> ClassificationAgreementAccumulator | RegressionAgreementAccumulator | None:
        """The agreement accumulator for these heads, or None (with a note) when a model has no logits."""
        missing = [(role, key) for role, key, width in (("teacher", "teacher", teacher_outputs),
                                                       (spec.role, spec.name, student_outputs)) if width is None]
        if missing:
            why = "; ".join(
                f"the {role} ({names[key]}) "
                + ("has no classification head and was loaded with AutoModel" if self.headless.get(key)
                   else "returns no `logits`")
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
        if self.method == "mse":
            return RegressionAgreementAccumulator()
        if c_t < 2:
            raise InputError(
                f"The models have {c_t} output (a regression head): `aoag_method={self.method!r}` needs class logits; "
                "use aoag_method='mse' (or task='regression')."
            )
        return ClassificationAgreementAccumulator(temperature=self.temperature)

    def lengths(self, source: TextSource, teacher: ModelRunner, opts: EvalOptions) -> np.ndarray:
        return token_lengths(teacher.tokenizer, source, teacher.limit)

    def prepare(self, source: TextSource, indices: Sequence[int], opts: EvalOptions) -> Batch:
        texts, labels = source.batch(indices)
        return Batch(list(indices), labels, texts)

    def teacher(self, runner: ModelRunner, batch: Batch, layers: list[int], opts: EvalOptions, *, record: bool) -> PooledBatch:
        out = runner(batch.data, batch.indices)
        return pool_outputs(out, layers, opts.pooling)  # type: ignore[arg-type]

    def student(self, runner: ModelRunner, batch: Batch, plan: Plan, opts: EvalOptions) -> PooledBatch:
        return pool_outputs(runner(batch.data, batch.indices), plan.s_layers, opts.pooling)  # type: ignore[arg-type]

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> Streams:
        return Streams(plan.pairs, plan.t_layers, plan.s_layers, capacity=capacity, batch_size=opts.batch_size,
                       fss_method=opts.fss_method, cross_layer=spec.cross_layer, agreement=plan.extra["agreement"],
                       keep_arrays=opts.keep_arrays, keep_labels=opts.label_column is not None)

    def merge(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        return merge(payloads)

    def cache_parts(self, teacher: ModelRunner, source: TextSource, opts: EvalOptions, *, in_memory: bool) -> dict[str, Any]:
        import transformers

        if in_memory:  # one process's lifetime: the objects themselves (the teacher must not change)
            model_part, tokenizer_part = f"object {id(teacher.model)}", f"object {id(teacher.tokenizer)}"
        else:
            model_part, tokenizer_part = model_fingerprint(teacher.model), tokenizer_fingerprint(teacher.tokenizer)
        return {
            "cache_version": CACHE_VERSION, "teacher": model_part, "teacher_tokenizer": tokenizer_part,
            "texts": texts_fingerprint(source), "num_examples": len(source), "teacher_limit": teacher.limit,
            "device_type": teacher.device.type, "torch": torch.__version__, "transformers": transformers.__version__,
            "text_column": opts.text_column, "pooling": opts.pooling, "max_length": opts.max_length,
            "batch_size": opts.batch_size, "group_by_length": opts.group_by_length,
        }

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        """Scores of one student from its merged states."""
        spec: ModelSpec = context["spec"]
        names_t = layer_names(int(context["t_info"]["n_states"]))
        pairs = plan.pairs
        pair_names = (names_t, plan.names_s)
        cka: list[LinearCKAAccumulator] = merged["cka"]
        if opts.fss_method in ("linear_cka", "debiased_cka"):
            pair_linear = [pair_value(acc.compute, pair, pair_names) for acc, pair in zip(cka, pairs, strict=True)]
        else:  # only informative next to cosine / RBF scores: NaN where undefined
            pair_linear = [cka_or_nan(acc) for acc in cka]
        scores = _pair_scores(opts.fss_method, pairs, pair_linear, cka, merged, pair_names)
        fss = float(np.mean(scores))
        a, b = self.weights
        aoag = mean_kl = top1 = None
        agreement = merged["agreement"]
        if isinstance(agreement, ClassificationAgreementAccumulator):
            aoag = agreement.compute(self.method)  # type: ignore[arg-type]
            mean_kl, top1 = agreement.mean_kl, agreement.compute("top1")
        elif isinstance(agreement, RegressionAgreementAccumulator):
            aoag = agreement.compute()
        if aoag is not None:
            krs: float | None = knowledge_retention_score(fss, aoag, alpha=a, beta=b)
        elif b == 0.0:
            krs = knowledge_retention_score(fss, 0.0, alpha=a, beta=b)
        else:
            krs = None
        cross = None if merged["cross"] is None else cross_matrix(merged["cross"])
        notes = [*context["notes"], *plan.notes]
        truncation = self._truncation(merged, context, notes)
        timings = dict(context["timings"])
        timings["merge_s"] = time.perf_counter() - context["merge_started"]
        features = merged["features"]
        names = context["names"]
        return ExtractionResult(
            fss=fss, aoag=aoag, krs=krs, alpha=a, beta=b, fss_method=opts.fss_method,
            aoag_method=plan.extra["method_used"], layer_pairs=pairs, pair_scores=scores, pair_linear_cka=pair_linear,
            teacher_layer_names=names_t, student_layer_names=plan.names_s, cross_layer_cka=cross, mean_kl=mean_kl,
            top1_agreement=top1, teacher_logits=merged["teacher_logits"], student_logits=merged["student_logits"],
            labels=merged["labels"], example_indices=merged["index"], num_examples=len(context["source"]),
            options={
                "teacher": names["teacher"], "student": names[spec.name], "student_name": spec.name,
                "text_column": opts.text_column, "label_column": opts.label_column,
                "layers": opts.layers if isinstance(opts.layers, str) else [list(p) for p in opts.layers],
                "layer_pairs": [list(p) for p in pairs], "pooling": opts.pooling, "batch_size": opts.batch_size,
                "max_length": opts.max_length, "max_examples": opts.max_examples, "task": opts.task,
                "fss_method": opts.fss_method, "aoag_method": plan.extra["method_used"],
                "temperature": opts.temperature, "cross_layer": spec.cross_layer, "keep_arrays": opts.keep_arrays,
                "mixed_precision": context["precision"], "num_processes": context["world"],
                "device": str(context["s_runner"].device), "group_by_length": opts.group_by_length,
                "teacher_cache": context["cache_state"],
            },
            timings=timings, truncation=truncation, notes=notes,
            teacher_features=[features["teacher"][t] for t, _ in pairs] if opts.keep_arrays else None,
            student_features=[features["student"][s] for _, s in pairs] if opts.keep_arrays else None,
        )

    def _truncation(self, merged: dict[str, Any], context: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """Each model's token limit and truncation count; truncation at a model's own limit is warned once."""
        truncation, too_long = {}, []
        n = len(context["source"])
        for role, runner in (("teacher", context["t_runner"]), ("student", context["s_runner"])):
            count = int(merged["counters"][f"{role}_truncated"])
            truncation[role] = {"limit": runner.limit, "limit_source": runner.limit_source, "num_truncated": count}
            if count and runner.limit_source == "model":
                who = role if role == "teacher" else context["spec"].role
                too_long.append(f"{count} of {n} examples for the {who} (limit {runner.limit} tokens)")
        if too_long:
            message = "Inputs longer than the model allows were truncated: " + "; ".join(too_long) + "."
            notes.append(message)
            if context["is_main"] and message not in context["warned"]:
                context["warned"].add(message)
                warnings.warn(message, UserWarning, stacklevel=5)
        return truncation


def _pair_scores(fss_method: str, pairs: list[tuple[int, int]], pair_linear: list[float], cka: list[LinearCKAAccumulator],
                 merged: dict[str, Any], names: tuple[list[str], list[str]]) -> list[float]:
    """Per-pair similarity on the FSS scale, with the clipping rules of ``similarity.layer_similarity``."""
    if fss_method == "linear_cka":
        return pair_linear
    if fss_method == "debiased_cka":
        return [min(max(pair_value(partial(acc.compute, debiased=True), pair, names), 0.0), 1.0)
                for acc, pair in zip(cka, pairs, strict=True)]
    if fss_method == "cosine":
        return [max(0.0, acc.compute()) for acc in merged["cosine"]]
    features = merged["features"]
    return [pair_value(partial(layer_similarity, features["teacher"][t], features["student"][s], method="rbf_cka"),
                       (t, s), names) for t, s in pairs]
