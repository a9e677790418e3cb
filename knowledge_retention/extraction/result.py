"""The outcome of one teacher-vs-student evaluation run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._json import jsonable

__all__ = ["ExtractionResult"]


@dataclass
class ExtractionResult:
    """Scores, per-layer similarities and the small per-example arrays of one evaluation.

    Under ``accelerate`` every process holds the same, complete result (all rows, in example
    order), except ``timings``.

    Attributes:
        fss: Feature Similarity Score in [0, 1] (mean of ``pair_scores``); higher is better.
        aoag: Average Output Agreement in [0, 1], or None when a model has no logits.
        krs: ``alpha * fss + beta * aoag`` in [0, 1], or None without ``aoag`` (unless beta = 0).
        alpha: weight of FSS.
        beta: weight of AOAg.
        fss_method: the per-pair similarity (``linear_cka``, ``debiased_cka``, ``rbf_cka``, ``cosine``).
        aoag_method: the agreement measure (``kl``, ``js``, ``top1``, ``mse``), None without logits.
        layer_pairs: ``(teacher, student)`` hidden-state indices compared (0 = embeddings).
        pair_scores: the similarity of each pair by ``fss_method`` (FSS scale, clipped to [0, 1]).
        pair_linear_cka: linear CKA of each pair (equal to ``pair_scores`` for ``linear_cka``; next
            to cosine / RBF scores it is NaN where undefined, e.g. constant features).
        teacher_layer_names: names of all teacher hidden states (``embeddings``, ``layer_1``, ...).
        student_layer_names: names of all student hidden states.
        cross_layer_cka: ``(L_t, L_s)`` linear CKA of every teacher vs every student hidden state
            (None with ``cross_layer=False``).
        mean_kl: mean KL(teacher || student) in nats over examples (classification), lower is better.
        top1_agreement: fraction of examples where both models predict the same class.
        teacher_logits: ``(N, C)`` teacher logits in example order (None without logits).
        student_logits: ``(N, C)`` student logits.
        labels: ``(N,)`` labels from ``label_column`` (None without one).
        example_indices: ``(N,)`` dataset index of each row (``0..N-1``).
        num_examples: N.
        options: the options used (JSON-safe), for reports; ``student_name`` (the key given to
            ``evaluate_students``, ``"student"`` for ``evaluate_pair``), ``group_by_length`` and
            ``teacher_cache`` (None, or ``{"location", "key", "reused"}``) among them.
        timings: seconds spent tokenising, in each model's forward pass, pooling and accumulating
            (``accumulate_s``), ordering the examples by length (``grouping_s``), merging and
            computing the scores (``merge_s``), in total; ``forward_batches`` (batches each model
            ran, the probe excluded) and ``examples_per_s``. With ``evaluate_students`` the teacher's
            figures are its one shared pass; replayed from a teacher cache, they are the ones recorded
            with it. Under ``accelerate`` these are the returning process's own.
        truncation: per model, the token limit, where it came from (``max_length`` or ``model``)
            and how many examples were truncated.
        notes: plain-language remarks (e.g. why AOAg is missing).
        teacher_features: with ``keep_arrays=True``, the pooled ``(N, D_t)`` teacher features of
            each pair in ``layer_pairs``; None otherwise.
        student_features: likewise ``(N, D_s)`` for the student.
        js: (causal-lm) mean Jensen-Shannon divergence in bits over counted tokens; lower is better.
        topk_overlap: (causal-lm) mean share of the teacher's top-k next tokens among the student's top k.
        logprob_gap: (causal-lm) mean log-prob of the true next token, teacher minus student (nats).
        teacher_perplexity: (causal-lm) exp of the teacher's mean NLL of the true next token.
        student_perplexity: (causal-lm) likewise for the student.
        perplexity_ratio: (causal-lm) teacher / student perplexity (1 = as good as the teacher).
        lm: (causal-lm) counted tokens and texts, both averages (per token, per text), agreement by
            position, the tokens where the models disagree most (with context), the mode.
    """

    fss: float
    aoag: float | None
    krs: float | None
    alpha: float
    beta: float
    fss_method: str
    aoag_method: str | None
    layer_pairs: list[tuple[int, int]]
    pair_scores: list[float]
    pair_linear_cka: list[float]
    teacher_layer_names: list[str]
    student_layer_names: list[str]
    cross_layer_cka: np.ndarray | None
    mean_kl: float | None
    top1_agreement: float | None
    teacher_logits: np.ndarray | None
    student_logits: np.ndarray | None
    labels: np.ndarray | None
    example_indices: np.ndarray
    num_examples: int
    options: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    truncation: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    teacher_features: list[np.ndarray] | None = field(default=None, repr=False)
    student_features: list[np.ndarray] | None = field(default=None, repr=False)
    # task="causal-lm" only (None otherwise): token-level measures, see knowledge_retention.token_agreement
    js: float | None = None
    topk_overlap: float | None = None
    logprob_gap: float | None = None
    teacher_perplexity: float | None = None
    student_perplexity: float | None = None
    perplexity_ratio: float | None = None
    lm: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self, *, include_arrays: bool = False) -> dict[str, Any]:
        """A JSON-safe dict of the scores, layer details, options, timings and notes.

        Args:
            include_arrays: also include the per-example logits, labels and indices (and the
                kept features), as nested lists.

        Returns:
            A dict of plain Python values (``json.dumps`` works on it).
        """
        pairs = [
            {
                "teacher": t,
                "student": s,
                "teacher_layer": self.teacher_layer_names[t],
                "student_layer": self.student_layer_names[s],
                "score": score,
                "linear_cka": self.pair_linear_cka[k],
            }
            for k, ((t, s), score) in enumerate(zip(self.layer_pairs, self.pair_scores, strict=True))
        ]
        out: dict[str, Any] = {
            "krs": self.krs,
            "fss": self.fss,
            "aoag": self.aoag,
            "alpha": self.alpha,
            "beta": self.beta,
            "fss_method": self.fss_method,
            "aoag_method": self.aoag_method,
            "num_examples": self.num_examples,
            "mean_kl": self.mean_kl,
            "top1_agreement": self.top1_agreement,
            "layer_pairs": pairs,
            "cross_layer_cka": None
            if self.cross_layer_cka is None
            else {
                "teacher_layers": self.teacher_layer_names,
                "student_layers": self.student_layer_names,
                "matrix": self.cross_layer_cka,
            },
            "options": self.options,
            "timings": self.timings,
            "truncation": self.truncation,
            "notes": self.notes,
        }
        if self.lm is not None:  # causal-lm: the token-level measures under the same names as above
            for key in ("js", "topk_overlap", "logprob_gap", "teacher_perplexity", "student_perplexity",
                        "perplexity_ratio"):
                out[key] = getattr(self, key)
            out["lm"] = self.lm
        if include_arrays:
            out["example_indices"] = self.example_indices
            out["teacher_logits"] = self.teacher_logits
            out["student_logits"] = self.student_logits
            out["labels"] = self.labels
            out["teacher_features"] = self.teacher_features
            out["student_features"] = self.student_features
        return jsonable(out)
