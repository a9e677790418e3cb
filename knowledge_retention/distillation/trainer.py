r"""``DistillationTrainer``: a ``transformers.Trainer`` whose loss is a distillation recipe.

Recipes (default weights :math:`w` and temperature :math:`T`; override with ``loss_weights`` /
``temperature``). Terms are the functions of :mod:`.losses`; :math:`z` are logits, :math:`y` labels.

=========================  ===================================================================  =====
recipe                     loss                                                                 T
=========================  ===================================================================  =====
``hard``                   :math:`\mathcal{L}_{hard}` (no teacher: the "before" baseline)        -
``vanilla`` (Hinton)       :math:`0.5\,\mathcal{L}_{soft} + 0.5\,\mathcal{L}_{hard}`             2
``distilbert``             :math:`5\,\mathcal{L}_{soft} + 2\,\mathcal{L}_{hard} + 1\,\mathcal{L}_{cos}`  2
``pkd``                    :math:`0.5\,\mathcal{L}_{soft} + 0.5\,\mathcal{L}_{hard} + 100\,\mathcal{L}_{PT}`  5
``tinybert`` intermediate  :math:`\mathcal{L}_{embd} + \sum_m \mathcal{L}_{hidn}^{(m)} + \sum_m \mathcal{L}_{attn}^{(m)}`  -
``tinybert`` prediction    :math:`\mathcal{L}_{soft}`                                            1
=========================  ===================================================================  =====

* ``distilbert`` keeps DistilBERT's weights (:math:`\alpha_{ce}=5, \alpha_{mlm}=2, \alpha_{cos}=1`,
  Sanh et al. 2019) with the MLM term replaced by the task's hard-label loss; the cosine loss is on
  the last hidden layer (student and teacher widths must match).
* ``pkd`` follows Sun et al. (2019): :math:`(1-\alpha)\mathcal{L}_{hard} + \alpha\mathcal{L}_{soft}
  + \beta\mathcal{L}_{PT}` with :math:`\alpha=0.5, T=5, \beta=100` from the paper's grid; the patient
  loss uses student layers :math:`1..M-1` against the mapped teacher layers (``layer_map_strategy``:
  ``"skip"`` = PKD-Skip, ``"last"`` = PKD-Last); the top layer is left to :math:`\mathcal{L}_{soft}`.
* ``tinybert`` (Jiao et al. 2020) runs in two stages, i.e. two trainer runs on the same student:
  ``stage="intermediate"`` (embedding, hidden states through one learned projection :math:`W` when
  the widths differ, attention probabilities of layers :math:`g(m)`), then ``stage="prediction"``.
  The projection lives in the trainer (added to the optimizer, not saved with the student).

The teacher is frozen (``eval()``, no grad). Hidden states / attentions are requested only when a
term needs them. With ``cache_teacher_outputs=True`` (or a prebuilt ``teacher_cache``) the teacher
runs once over the training set before the first step, logged as such; evaluation always runs the
teacher live. Losses are per-batch means (``loss_is_scaled_for_ga = False``: the Trainer divides by
the gradient-accumulation steps; ``num_items_in_batch`` is not used).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from . import losses
from .layer_maps import LayerMapStrategy, layer_map
from .targets import TargetSpec, TrainingTargetCache, teacher_targets

__all__ = ["LOSS_TERMS", "RECIPES", "DistillationTrainer", "Recipe", "plan_targets", "recipe_for"]

logger = logging.getLogger(__name__)

Method = Literal["hard", "vanilla", "distilbert", "pkd", "tinybert"]
Stage = Literal["intermediate", "prediction"]
LOSS_TERMS = ("hard", "soft", "cosine", "patient", "embedding", "hidden", "attention")


@dataclass(frozen=True)
class Recipe:
    """Loss weights and temperature of one distillation recipe."""

    name: str
    weights: Mapping[str, float] = field(default_factory=dict)
    temperature: float = 1.0


RECIPES: dict[str, Recipe] = {
    "hard": Recipe("hard", {"hard": 1.0}),
    "vanilla": Recipe("vanilla", {"soft": 0.5, "hard": 0.5}, 2.0),
    "distilbert": Recipe("distilbert", {"soft": 5.0, "hard": 2.0, "cosine": 1.0}, 2.0),
    "pkd": Recipe("pkd", {"soft": 0.5, "hard": 0.5, "patient": 100.0}, 5.0),
    "tinybert-intermediate": Recipe("tinybert-intermediate", {"embedding": 1.0, "hidden": 1.0, "attention": 1.0}),
    "tinybert-prediction": Recipe("tinybert-prediction", {"soft": 1.0}, 1.0),
}


def recipe_for(method: str, stage: str | None = None) -> Recipe:
    """The default :class:`Recipe` for ``method`` (and TinyBERT's ``stage``).

    Args:
        method: ``"hard"``, ``"vanilla"``, ``"distilbert"``, ``"pkd"`` or ``"tinybert"``.
        stage: ``"intermediate"`` or ``"prediction"`` for ``tinybert``; ``None`` otherwise.

    Returns:
        The recipe.

    Example:
        >>> recipe_for("tinybert", "prediction").weights
        {'soft': 1.0}
    """
    if method == "tinybert":
        if stage not in ("intermediate", "prediction"):
            raise ValueError(f"`stage` must be 'intermediate' or 'prediction' for method 'tinybert', got {stage!r}")
        return RECIPES[f"tinybert-{stage}"]
    if method not in RECIPES:
        raise ValueError(f"`method` must be one of ['hard', 'vanilla', 'distilbert', 'pkd', 'tinybert'], got {method!r}")
    if stage is not None:
        raise ValueError(f"`stage` is only for method 'tinybert'; got stage={stage!r} with method={method!r}")
    return RECIPES[method]


def plan_targets(
    student_config: Any,
    teacher_config: Any,
    weights: Mapping[str, float],
    *,
    strategy: LayerMapStrategy = "skip",
) -> tuple[TargetSpec, dict[str, Any]]:
    """Teacher targets and student layers that the weighted terms need.

    Args:
        student_config: the student's config (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``).
        teacher_config: the teacher's config.
        weights: loss terms with non-zero weight (keys from ``LOSS_TERMS``).
        strategy: layer map, see :func:`~.layer_maps.layer_map`.

    Returns:
        ``(spec, student)``: the :class:`TargetSpec` to read from the teacher, and a dict with the
        student's ``cls_layers`` / ``hidden_layers`` and whether a width ``projection`` is needed.

    Example:
        >>> from transformers import BertConfig
        >>> spec, student = plan_targets(BertConfig(num_hidden_layers=3), BertConfig(num_hidden_layers=6),
        ...                              {"soft": 0.5, "hard": 0.5, "patient": 100.0})
        >>> spec.cls_layers, student["cls_layers"]
        ((2, 4), (1, 2))
    """
    m, n = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    mapping = layer_map(n, m, strategy=strategy)
    spec: dict[str, Any] = {"logits": "soft" in weights}
    student: dict[str, Any] = {}
    if "cosine" in weights:
        if student_config.hidden_size != teacher_config.hidden_size:
            raise ValueError(
                f"the cosine loss needs equal widths; student hidden_size={student_config.hidden_size}, "
                f"teacher hidden_size={teacher_config.hidden_size}"
            )
        spec["last"] = True
    if "patient" in weights:
        if m < 2:
            raise ValueError(f"the patient loss needs a student with >= 2 layers (top layer excluded), got {m}")
        spec["cls_layers"] = tuple(mapping[:-1])
        student["cls_layers"] = tuple(range(1, m))
    if "embedding" in weights or "hidden" in weights:
        spec["hidden_layers"] = (0, *mapping)
        student["hidden_layers"] = tuple(range(m + 1))
        student["projection"] = student_config.hidden_size != teacher_config.hidden_size
    if "attention" in weights:
        if student_config.num_attention_heads != teacher_config.num_attention_heads:
            raise ValueError(
                "the attention loss needs equal head counts; student num_attention_heads="
                f"{student_config.num_attention_heads}, teacher {teacher_config.num_attention_heads}"
            )
        spec["attention_layers"] = tuple(mapping)
    return TargetSpec(**spec), student


def _layers(model: Any, name: str) -> int:
    value = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(value, int):
        raise TypeError(f"`{name}` must be a transformers model whose config has `num_hidden_layers`")
    return value


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` that trains ``model`` (the student) with a distillation recipe.

    Args:
        model: the student (e.g. ``BertForSequenceClassification``).
        args: ``TrainingArguments`` (see ``runs.make_training_args``).
        teacher: the teacher; required unless ``method="hard"``.
        method: recipe name (see the module table).
        stage: TinyBERT stage, ``"intermediate"`` or ``"prediction"``.
        temperature: overrides the recipe's :math:`T`.
        loss_weights: overrides some recipe weights, e.g. ``{"patient": 500.0}``; keys from ``LOSS_TERMS``.
        layer_map_strategy: teacher layer for each student layer: ``"skip"``, ``"lower"`` or ``"last"``.
        cache_teacher_outputs: run the teacher once over ``train_dataset`` before training.
        teacher_cache: a prebuilt :class:`TrainingTargetCache` over ``train_dataset`` (e.g. shared by runs).
        cache_token_dtype: storage dtype of token-level cached targets.
        **trainer_kwargs: passed to ``transformers.Trainer`` (``train_dataset``, ``data_collator``,
            ``processing_class``, ...). The dataset needs an ``idx`` column when the cache is used.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: Any,
        args: Any,
        *,
        teacher: Any = None,
        method: Method = "vanilla",
        stage: Stage | None = None,
        temperature: float | None = None,
        loss_weights: Mapping[str, float] | None = None,
        layer_map_strategy: LayerMapStrategy = "skip",
        cache_teacher_outputs: bool = False,
        teacher_cache: TrainingTargetCache | None = None,
        cache_token_dtype: torch.dtype = torch.float16,
        **trainer_kwargs: Any,
    ) -> None:
        recipe = recipe_for(method, stage)
        unknown = sorted(set(loss_weights or {}) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"`loss_weights` keys must be in {list(LOSS_TERMS)}, got unknown {unknown}")
        weights = {k: float(v) for k, v in {**recipe.weights, **(loss_weights or {})}.items() if v}
        if not weights:
            raise ValueError("`loss_weights` leaves no term with a non-zero weight")
        self.temperature = float(recipe.temperature if temperature is None else temperature)
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}")
        if teacher is None and set(weights) - {"hard"}:
            raise ValueError(f"`teacher` is required for method {method!r} (terms {sorted(weights)})")
        self.method, self.stage, self.loss_weights = method, stage, weights
        self.teacher = teacher
        self.projection: nn.Module | None = None
        self._student_layers: dict[str, Any]
        if teacher is None:
            self._teacher_spec, self._student_layers = TargetSpec(), {}
        else:
            _layers(model, "model")
            _layers(teacher, "teacher")
            self._teacher_spec, self._student_layers = plan_targets(
                model.config, teacher.config, weights, strategy=layer_map_strategy
            )
        if self._student_layers.get("projection"):
            self.projection = nn.Linear(model.config.hidden_size, teacher.config.hidden_size)
        if self._teacher_spec.needs_attentions:
            for net in (model, teacher):
                net.set_attn_implementation("eager")  # sdpa cannot return attention probabilities
        super().__init__(model=model, args=args, **trainer_kwargs)
        if teacher is not None:
            teacher.to(self.args.device).eval().requires_grad_(False)
        if self.projection is not None:
            self.projection.to(self.args.device)
        self.cache_teacher_outputs = cache_teacher_outputs
        self.cache_token_dtype = cache_token_dtype
        self.krs_callback: Any = None  # the KRSCallback a reproduction run attaches (KRS during training)
        if teacher_cache is not None and not teacher_cache.spec.covers(self._teacher_spec):
            raise ValueError(f"`teacher_cache` holds {teacher_cache.spec}, but this run needs {self._teacher_spec}")
        self.teacher_cache = teacher_cache
        self._term_sums: dict[str, Tensor] = {}
        self._term_batches = 0

    @property
    def teacher_spec(self) -> TargetSpec:
        """The teacher targets this run reads (what a cache must cover)."""
        return self._teacher_spec

    # ---- teacher outputs --------------------------------------------------------------------------
    def build_teacher_cache(self) -> TrainingTargetCache:
        """Run the teacher once over ``train_dataset`` and keep what the recipe needs."""
        if self.train_dataset is None:
            raise ValueError("`train_dataset` is required to cache the teacher's outputs")
        cache = TrainingTargetCache.build(
            self.teacher,
            self.train_dataset,
            self.data_collator,
            self._teacher_spec,
            batch_size=self.args.per_device_eval_batch_size,
            device=self.args.device,
            token_dtype=self.cache_token_dtype,
        )
        logger.info(
            "teacher outputs cached once for this run: %d examples, %s, %.1f MB, %.1f s",
            len(cache), ", ".join(cache.spec.keys), cache.nbytes / 2**20, cache.seconds,
        )
        return cache

    def _teacher_batch(self, inputs: dict[str, Tensor], idx: Tensor | None, training: bool) -> dict[str, Tensor]:
        spec = self._teacher_spec
        if self.teacher_cache is not None and training and idx is not None:
            seq_len = inputs["input_ids"].shape[1]
            return self.teacher_cache.lookup(idx, seq_len, spec=spec, device=inputs["input_ids"].device)
        with torch.no_grad():
            outputs = self.teacher(
                **inputs, output_hidden_states=spec.needs_hidden_states, output_attentions=spec.needs_attentions
            )
        return teacher_targets(outputs, spec)

    # ---- loss -------------------------------------------------------------------------------------
    def _loss_terms(
        self, outputs: Any, targets: dict[str, Tensor], labels: Tensor | None, mask: Tensor
    ) -> dict[str, Tensor]:
        w, terms = self.loss_weights, {}
        hidden, student = outputs.hidden_states, self._student_layers
        if "hard" in w:
            if labels is None:
                raise ValueError("the batch has no `labels`, but the recipe has a hard-label term")
            terms["hard"] = losses.hard_cross_entropy(outputs.logits, labels)
        if "soft" in w:
            terms["soft"] = losses.soft_cross_entropy(outputs.logits, targets["logits"], temperature=self.temperature)
        if "cosine" in w:
            terms["cosine"] = losses.hidden_cosine_loss(hidden[-1], targets["last"], attention_mask=mask)
        if "patient" in w:
            student_cls = torch.stack([hidden[k][:, 0] for k in student["cls_layers"]], dim=1)
            terms["patient"] = losses.patient_loss(student_cls, targets["cls"])
        if "embedding" in w:
            terms["embedding"] = losses.tinybert_embedding_loss(
                hidden[0], targets["hidden"][:, 0], projection=self.projection, attention_mask=mask
            )
        if "hidden" in w:
            terms["hidden"] = torch.stack([
                losses.tinybert_hidden_loss(
                    hidden[k], targets["hidden"][:, k], projection=self.projection, attention_mask=mask
                )
                for k in student["hidden_layers"][1:]
            ]).sum()
        if "attention" in w:
            terms["attention"] = torch.stack([
                losses.tinybert_attention_loss(att, targets["attention"][:, k], attention_mask=mask)
                for k, att in enumerate(outputs.attentions)
            ]).sum()
        return terms

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """Weighted sum of the recipe's terms on one batch (``num_items_in_batch`` unused: batch means)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        idx = inputs.pop("idx", None)
        if "attention_mask" not in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        needs_hidden = any(t in self.loss_weights for t in ("cosine", "patient", "embedding", "hidden"))
        outputs = model(
            **inputs, output_hidden_states=needs_hidden, output_attentions="attention" in self.loss_weights
        )
        targets = self._teacher_batch(inputs, idx, model.training) if self._teacher_spec.keys else {}
        terms = self._loss_terms(outputs, targets, labels, inputs["attention_mask"])
        loss = torch.stack([self.loss_weights[name] * value for name, value in terms.items()]).sum()
        if model.training:
            for name, value in terms.items():
                self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach()
            self._term_batches += 1
        if return_outputs:
            return loss, SequenceClassifierOutput(loss=loss, logits=outputs.logits)
        return loss

    # ---- Trainer hooks ----------------------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Build the teacher cache first when ``cache_teacher_outputs`` asks for one, then train."""
        if self.cache_teacher_outputs and self.teacher_cache is None and self._teacher_spec.keys:
            self.teacher_cache = self.build_teacher_cache()
        return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.evaluate``, leaving the random state as it found it: evaluating during training
        (``eval_strategy``, :class:`~knowledge_retention.KRSCallback`) then changes nothing of the
        training itself (its batch order and dropout), which the evaluation's ``DataLoader`` would
        otherwise shift by drawing a seed from torch's global generator."""
        from .._random import preserved_random_state

        with preserved_random_state():
            return super().evaluate(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and "idx" not in self._signature_columns:
            self._signature_columns.append("idx")  # keep the cache key through column removal

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer, plus the TinyBERT projection (no weight decay) when there is one."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.projection is not None:
            params = list(self.projection.parameters())
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if not any(id(p) in known for p in params):
                optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Tensor:
        """One step; under data parallelism the projection's gradients are averaged by hand (it is not
        part of the wrapped model)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.projection is not None and self.accelerator.num_processes > 1:
            world = self.accelerator.num_processes
            for param in self.projection.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad)
                    param.grad /= world
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log (``loss_<term>``) to training logs."""
        if "loss" in logs and self._term_batches:
            for name, total in self._term_sums.items():
                logs[f"loss_{name}"] = round(float(total) / self._term_batches, 6)
            self._term_sums, self._term_batches = {}, 0
        super().log(logs, start_time)
