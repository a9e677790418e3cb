"""KRS while a student trains: a ``transformers.TrainerCallback`` that scores the student at every evaluation.

The paper (§4.4) uses KRS as a tuning signal during training. :class:`KRSCallback` computes, at every
``Trainer`` evaluation, the student's KRS, FSS, AOAg and the linear CKA of each compared layer pair
against a fixed teacher on its own evaluation texts, and puts them into the evaluation's metrics:
``eval_krs``, ``eval_fss``, ``eval_aoag`` and ``eval_cka_t<i>_s<j>`` (teacher hidden state ``i`` vs
student hidden state ``j``; 0 = embeddings). They then reach ``trainer.state.log_history``, the
``report_to`` loggers and ``metric_for_best_model="krs"`` like the Trainer's own metrics.

How: the Trainer logs the evaluation's metrics dict (``Trainer.log``) *before* it calls the callbacks'
``on_evaluate``, and the logging integrations (``report_to``) come first in the callback list. So
the callback moves itself to the front of its Trainer's callback list when the Trainer is built (or
at the start of training) and fills the metrics in ``on_log``, which receives the very dict that
``evaluate()`` returns and the integrations see next; it also updates the entry just appended to
``log_history``. Without a Trainer it finds, ``on_evaluate`` fills the metrics dict (best-model
tracking) and ``log_history`` only.

Cost: the teacher's side (pooled features of every teacher hidden state and logits) is computed once,
at the first evaluation, and kept in memory (:class:`~knowledge_retention.extraction.TeacherCache`);
each evaluation then runs only the student over the set (length-grouped batches), about one plain
student pass. Under DDP/accelerate each process scores its shard and the sums are gathered (the
Trainer's own ``Accelerator``).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from transformers import TrainerCallback

from .._random import preserved_random_state
from .._validation import InputError, InputTypeError
from ..extraction import ExtractionResult, TeacherCache, evaluate_students
from ..extraction.inputs import TextSource, model_config
from ..extraction.options import EvalOptions
from ..extraction.tasks.image import ImageSource, is_image_model

__all__ = ["KRSCallback", "check_options"]

_RESERVED = ("accelerator", "distributed", "teacher_cache", "progress", "student_tokenizers", "teacher_tokenizer")


def _find_trainer() -> Any:
    """The ``transformers.Trainer`` whose method is calling us (walks up the call stack), or None."""
    from transformers import Trainer

    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner
        frame = frame.f_back
    return None


def check_options(options: Mapping[str, Any], teacher: Any = None) -> None:
    """Validates the options of :func:`~knowledge_retention.extraction.evaluate_students` without running a
    model, by the engine's own validation: :class:`~knowledge_retention.extraction.EvalOptions` (every
    value, whether the task uses it or not) and the checks of the task that will score ``teacher``'s
    students (causal LM or classifier, told from the teacher object or its folder's config).

    Raises:
        InputError / InputTypeError: naming the option and what was expected.
    """
    from ..extraction.evaluator import task_for
    from ..extraction.layers import resolve_layer_pairs

    cross = options.get("cross_layer", False)
    if not isinstance(cross, bool) and (isinstance(cross, str) or not set(cross) <= {"student"}):
        raise InputError(f"`cross_layer` must be a bool here (the callback scores one student), got {cross!r}.")
    opts = EvalOptions.build({k: v for k, v in options.items() if k not in ("cross_layer", "student_tokenizers")},
                             where="KRSCallback")
    task, opts = task_for(opts, teacher, {})
    task.check_options(opts)
    resolve_layer_pairs(opts.layers, 1 << 20, 1 << 20)  # the form; the range needs the models


def _same(a: Any, b: Any) -> bool:
    return bool(a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)))


class KRSCallback(TrainerCallback):  # type: ignore[misc]
    """Adds ``eval_krs``, ``eval_fss``, ``eval_aoag`` and per-layer-pair CKA to every Trainer evaluation.

    Args:
        teacher: the teacher model (or path); it is not trained and must not change.
        eval_dataset: the texts to score on: a ``datasets.Dataset``, a dict of columns or a list of
            strings (raw texts in ``text_column``, not the Trainer's tokenised eval set).
        tokenizer: the student's tokenizer (default: the Trainer's ``processing_class``).
        teacher_tokenizer: the teacher's tokenizer (default: ``tokenizer``).
        **options: options of :func:`~knowledge_retention.extraction.evaluate_pair` (``layers``,
            ``pooling``, ``batch_size``, ``task``, ``alpha``/``beta``, ``text_column``, ...);
            ``cross_layer`` defaults to False here (the full matrix costs more per evaluation).

    Attributes:
        history: one ``{"step", "epoch", <metric>: value}`` dict per evaluation.
        last_result: the :class:`ExtractionResult` of the latest evaluation.

    Example:
        >>> from knowledge_retention import KRSCallback  # doctest: +SKIP
        >>> callback = KRSCallback(teacher, dev, tokenizer, layers="uniform")  # doctest: +SKIP
        >>> trainer = Trainer(model=student, args=TrainingArguments(..., eval_strategy="steps",
        ...                   metric_for_best_model="krs"), callbacks=[callback], ...)  # doctest: +SKIP
        >>> trainer.train(); trainer.state.log_history[-2]["eval_krs"]  # doctest: +SKIP
    """

    def __init__(self, teacher: Any, eval_dataset: Any, tokenizer: Any = None, *, teacher_tokenizer: Any = None,
                 **options: Any) -> None:
        allowed = {*EvalOptions.names(), "cross_layer", "student_tokenizers"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputTypeError(f"KRSCallback got unknown option(s) {unknown}; it takes evaluate_pair's options "
                            f"{sorted(allowed - set(_RESERVED))}.")
        reserved = sorted(set(options) & set(_RESERVED))
        if reserved:
            raise InputTypeError(f"KRSCallback sets {reserved} itself (it scores under the Trainer's accelerator, "
                            "with the teacher cached in memory); tokenizers go in `tokenizer` / `teacher_tokenizer`.")
        check_options(options, teacher)  # every option now, not at the first evaluation, hours into training
        try:
            if is_image_model(teacher):  # image models read `image_column`
                source: TextSource | ImageSource = ImageSource(
                    eval_dataset, image_column=options.get("image_column", "image"),
                    label_column=options.get("label_column"), max_examples=options.get("max_examples"))
            else:
                source = TextSource(eval_dataset, text_column=options.get("text_column", "sentence"),
                                    label_column=options.get("label_column"), max_examples=options.get("max_examples"))
            for lo in range(0, len(source), 4096):  # every text (image), once: a None or a number fails here
                source.batch(range(lo, min(lo + 4096, len(source))))
        except (TypeError, ValueError) as err:
            kind = InputTypeError if isinstance(err, TypeError) else InputError
            raise kind(str(err).replace("`dataset`", "`eval_dataset`").replace("`dataset[", "`eval_dataset[")) from None
        if isinstance(teacher, (str, os.PathLike)):
            model_config(teacher, "teacher")  # a path that names no model is refused now
        elif not isinstance(teacher, torch.nn.Module):
            raise InputTypeError(f"`teacher` must be a torch.nn.Module or a local path / hub name, got "
                                 f"{type(teacher).__name__}.")
        for name, value in (("tokenizer", tokenizer), ("teacher_tokenizer", teacher_tokenizer)):
            if value is not None and not callable(value):
                raise InputTypeError(f"`{name}` must be a transformers tokenizer, got {type(value).__name__}.")
        self.teacher = teacher
        self.eval_dataset = eval_dataset
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer
        self.options = {"cross_layer": False, **options}
        self.history: list[dict[str, Any]] = []
        self.last_result: ExtractionResult | None = None
        self._cache = TeacherCache()
        self._trainer: Any = None
        self._scored: dict[int, dict[str, float]] = {}  # global step -> metrics (one scoring per step)

    # --- where the Trainer is -----------------------------------------------------------------------

    def _attach(self) -> None:
        if self._trainer is not None:
            return
        trainer = _find_trainer()
        if trainer is None:
            return
        self._trainer = trainer
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks and callbacks[0] is not self:  # before the report_to loggers
            callbacks.remove(self)
            callbacks.insert(0, self)

    def on_init_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                    **kwargs: Any) -> None:
        """When the Trainer is built: what needs the student is checked now, not at the first evaluation."""
        self._attach()
        if model is None:
            return
        if self.tokenizer is None and processing_class is None:
            raise InputTypeError("KRSCallback needs the student's tokenizer: pass `tokenizer=` or give the Trainer a "
                                 "processing_class.")
        self._check_layers(model)

    def _check_layers(self, student: Any) -> None:
        """``layers`` against the two models' depths, read from their configs (``num_hidden_layers`` + 1 hidden
        states, the embeddings included); skipped when a config does not say."""
        from ..extraction.layers import resolve_layer_pairs

        layers = self.options.get("layers", "final")
        if isinstance(layers, str) and layers == "final":
            return
        teacher_config = (getattr(self.teacher, "config", None) if isinstance(self.teacher, torch.nn.Module)
                          else model_config(self.teacher, "teacher"))
        depths = [getattr(c, "num_hidden_layers", None) for c in (teacher_config, getattr(student, "config", None))]
        if all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths):
            resolve_layer_pairs(layers, depths[0] + 1, depths[1] + 1)  # type: ignore[operator]

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._attach()

    # --- scoring ------------------------------------------------------------------------------------

    def score(self, model: Any, processing_class: Any = None) -> ExtractionResult:
        """The student ``model`` scored against the teacher now (the teacher's side is computed once)."""
        tokenizer = self.tokenizer if self.tokenizer is not None else processing_class
        if tokenizer is None:
            raise InputTypeError("KRSCallback needs the student's tokenizer: pass `tokenizer=` or give the Trainer a "
                            "processing_class.")
        accelerator = None
        if self._trainer is not None and getattr(self._trainer, "accelerator", None) is not None \
                and self._trainer.accelerator.num_processes > 1:
            accelerator = self._trainer.accelerator
        with preserved_random_state():  # scoring leaves the training's batch order and dropout as they were
            result = evaluate_students(
                self.teacher, {"student": model}, self.eval_dataset,
                teacher_tokenizer=self.teacher_tokenizer if self.teacher_tokenizer is not None else tokenizer,
                student_tokenizers=tokenizer,
                # with `generate` the teacher writes the continuations: nothing to replay
                teacher_cache=None if self.options.get("generate") else self._cache, accelerator=accelerator,
                progress=False,
                **self.options,
            )["student"]
        self.last_result = result
        return result

    def _metrics(self, state: Any, model: Any, processing_class: Any) -> dict[str, float]:
        step = int(state.global_step)
        if step not in self._scored:
            result = self.score(model, processing_class)
            values: dict[str, float] = {"krs": result.krs, "fss": result.fss, "aoag": result.aoag}  # type: ignore[dict-item]
            for (t, s), cka in zip(result.layer_pairs, result.pair_linear_cka, strict=True):
                values[f"cka_t{t}_s{s}"] = cka
            values = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
            self._scored[step] = values
            self.history.append({"step": step, "epoch": state.epoch, **values})
        return self._scored[step]

    @staticmethod
    def _eval_prefixes(logs: Mapping[str, Any]) -> list[str]:
        """Metric prefixes of an evaluation's logs (``eval`` from ``eval_runtime``), not training's."""
        return sorted({k[: -len("_runtime")] for k in logs if k.endswith("_runtime")} - {"train"})

    def _fill(self, metrics: dict[str, Any], prefix: str, values: Mapping[str, float], state: Any) -> None:
        last = state.log_history[-1] if state.log_history else None
        matches = last is not None and all(_same(last.get(k), v) for k, v in metrics.items())
        for name, value in values.items():
            metrics[f"{prefix}_{name}"] = value
            if matches and last is not None:
                last[f"{prefix}_{name}"] = value

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, model: Any = None,
               processing_class: Any = None, **kwargs: Any) -> None:
        if not logs or model is None:
            return
        prefixes = [p for p in self._eval_prefixes(logs) if f"{p}_krs" not in logs]
        if prefixes:
            values = self._metrics(state, model, processing_class)
            for prefix in prefixes:
                self._fill(logs, prefix, values, state)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    model: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        if metrics is None or model is None:
            return
        prefixes = [p for p in self._eval_prefixes(metrics) if f"{p}_krs" not in metrics] or (
            [] if any(k.endswith("_krs") for k in metrics) else ["eval"])
        if prefixes:  # nobody logged these metrics through on_log (no Trainer found): fill them here
            values = self._metrics(state, model, processing_class)
            for prefix in prefixes:
                self._fill(metrics, prefix, values, state)
