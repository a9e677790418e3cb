"""Training-run plumbing: ``TrainingArguments`` presets, timing, saving with ``run_config.json``, accuracy."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["RUN_CONFIG", "make_training_args", "predict_accuracy", "run_training", "save_run"]

RUN_CONFIG = "run_config.json"


def make_training_args(
    output_dir: str | Path,
    *,
    learning_rate: float,
    epochs: float,
    batch_size: int = 32,
    eval_batch_size: int = 128,
    seed: int = 42,
    warmup: float = 0.06,
    weight_decay: float = 0.01,
    max_steps: int = -1,
    logging_steps: int = 50,
    use_cpu: bool = True,
    bf16: bool = False,
    group_by_length: bool = False,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """``TrainingArguments`` for one run: linear warm-up/decay AdamW, no checkpoints, no trackers.

    Only the final model is saved (by :func:`save_run`): ``save_strategy="no"``, ``eval_strategy="no"``,
    ``report_to=[]``.

    Args:
        output_dir: the Trainer's scratch directory.
        learning_rate: peak learning rate.
        epochs: number of epochs (ignored when ``max_steps > 0``).
        batch_size: per-device training batch size.
        eval_batch_size: per-device batch size for evaluation and teacher caching.
        seed: seed for model init, data order and dropout.
        warmup: warm-up as a fraction of the total steps, in ``[0, 1)``.
        weight_decay: AdamW weight decay.
        max_steps: if ``> 0``, stop after this many optimizer steps.
        logging_steps: log every this many steps.
        use_cpu: force the CPU even when an accelerator is present.
        bf16: bfloat16 mixed precision.
        group_by_length: batch sentences of similar length together (``LengthGroupedSampler``: random
            mega-batches sorted by length), which cuts padding about threefold on SST-2.
        progress: show the tqdm progress bar.
        extra: further ``TrainingArguments`` fields (e.g. ``ddp_find_unused_parameters``).

    Returns:
        ``transformers.TrainingArguments``.
    """
    from transformers import TrainingArguments

    if not 0 <= warmup < 1:
        raise ValueError(f"`warmup` must be a fraction in [0, 1), got {warmup}")
    if learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}")
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": eval_batch_size,
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup,
        "weight_decay": weight_decay,
        "seed": seed,
        "data_seed": seed,
        "logging_strategy": "steps",
        "logging_steps": logging_steps,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "use_cpu": use_cpu,
        "bf16": bf16,
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        "train_sampling_strategy": "group_by_length" if group_by_length else "random",
    }
    kwargs.update(extra or {})
    return TrainingArguments(**kwargs)


def _quiet_logs(trainer: Any) -> None:
    """The training bar stays, the raw ``{'loss': ...}`` dicts the Trainer prints at each log step go
    (they are kept in ``log_history``, returned as ``log``)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarsOnly(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    trainer.remove_callback(PrinterCallback)
    if any(type(c) is ProgressCallback for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarsOnly)


def run_training(trainer: Any) -> dict[str, Any]:
    """``trainer.train()``, timed.

    Returns:
        ``{"train_loss", "seconds", "cpu_seconds", "steps", "examples", "epochs", "log"}`` (``seconds`` is
        wall time, ``cpu_seconds`` this process's CPU time, all threads) where ``log`` is the
        Trainer's log history (per-term losses included for a ``DistillationTrainer``).
    """
    _quiet_logs(trainer)
    start, cpu_start = time.perf_counter(), time.process_time()
    output = trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    cache = getattr(trainer, "teacher_cache", None)
    result: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "steps": int(output.global_step),
        "examples": len(trainer.train_dataset),
        "epochs": trainer.args.num_train_epochs if trainer.args.max_steps <= 0 else None,
        "log": [entry for entry in trainer.state.log_history if "loss" in entry],
    }
    if cache is not None:
        result["teacher_cache"] = {"examples": len(cache), "seconds": round(cache.seconds, 2), "mb": round(cache.nbytes / 2**20, 1)}
    return result


def save_run(trainer: Any, output_dir: str | Path, run_config: Mapping[str, Any]) -> Path:
    """Save the final model and tokenizer (``trainer.save_model``) and ``run_config.json`` beside them.

    Args:
        trainer: the Trainer holding the trained model (and ``processing_class``).
        output_dir: target directory.
        run_config: JSON-serialisable description of the run (seed, method, hyper-parameters, data
            size, wall time, train loss, ...).

    Returns:
        ``output_dir`` as a ``Path``.
    """
    output_dir = Path(output_dir)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per saved model
    try:
        trainer.save_model(str(output_dir))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if trainer.is_world_process_zero():
        text = json.dumps(_jsonable(run_config), indent=2, sort_keys=True)
        (output_dir / RUN_CONFIG).write_text(text + "\n", encoding="utf-8")
    return output_dir


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


@torch.no_grad()
def predict_accuracy(model: Any, dataset: Any, collator: Any, *, batch_size: int = 128) -> float:
    """Accuracy of ``model`` on a tokenised, labelled dataset (eval mode, on the model's device).

    Args:
        model: a sequence classifier.
        dataset: tokenised dataset with a ``label`` column.
        collator: pads a list of rows into a batch.
        batch_size: inference batch size.

    Returns:
        Fraction of correct argmax predictions, in ``[0, 1]``.
    """
    if len(dataset) == 0:
        raise ValueError("`dataset` must not be empty")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # similar lengths: little padding
    for start in range(0, len(order), batch_size):
        batch = collator(list(dataset.select(order[start : start + batch_size])))
        labels = batch.pop("labels")
        batch.pop("idx", None)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        correct += int((logits.argmax(dim=-1).cpu() == labels).sum())
    model.train(was_training)
    return correct / len(dataset)
