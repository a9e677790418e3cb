"""KRS batch by batch: :class:`KRSAccumulator`, :func:`~knowledge_retention.score.compute_krs` as a stream.

The verbs of torchmetrics and scikit-learn's partial fits: ``update`` with each batch of
``(teacher_features, student_features, teacher_outputs, student_outputs)``, ``compute`` the result
(the dict :func:`~knowledge_retention.score.compute_krs` returns on all the batches concatenated),
``reset``, ``state_dict`` / ``from_state_dict``, and ``+`` to merge the states of other processes.
Every state is a set of sums (one accumulator per layer pair and one for the outputs), so merging is
adding; memory does not grow with N.

Example:
    >>> import numpy as np
    >>> from knowledge_retention import compute_krs
    >>> rng = np.random.default_rng(0)
    >>> feats, logits = rng.normal(size=(90, 8)), rng.normal(size=(90, 3))
    >>> student = feats @ rng.normal(size=(8, 4))
    >>> acc = KRSAccumulator(task="nlp")
    >>> for lo in range(0, 90, 32):
    ...     _ = acc.update(feats[lo:lo + 32], student[lo:lo + 32], logits[lo:lo + 32], logits[lo:lo + 32] / 2)
    >>> out = acc.compute()
    >>> ref = compute_krs(feats, student, logits, logits / 2, task="nlp")
    >>> bool(abs(out["krs"] - ref["krs"]) < 1e-12), out["num_examples"]
    (True, 90)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._state import check_state_mapping, state_int
from ._validation import ArrayLike, InputError, InputTypeError, as_layers, check_num_examples, num_rows
from .agreement import (
    BoxIoUAccumulator,
    ClassificationAgreementAccumulator,
    MaskIoUAccumulator,
    RegressionAgreementAccumulator,
)
from .methods import CLASSIFICATION_METHODS
from .score import check_krs_options, combine_krs
from .similarity import CosineAccumulator, LinearCKAAccumulator, _clip_unit

__all__ = ["KRSAccumulator"]

_OPTIONS = ("task", "alpha", "beta", "fss_method", "aoag_method", "temperature", "inputs", "max_mse",
            "ignore_index", "scale")
FeatureAccumulator = LinearCKAAccumulator | CosineAccumulator
OutputAccumulator = (ClassificationAgreementAccumulator | RegressionAgreementAccumulator | MaskIoUAccumulator
                     | BoxIoUAccumulator)


class KRSAccumulator:
    """Streams ``(teacher_features, student_features, teacher_outputs, student_outputs)`` batches into KRS.

    Takes the options of :func:`~knowledge_retention.score.compute_krs`, validated when built (the same
    rule: every option checked, those the task does not use ignored). Features are ``(B, D)``,
    ``(B, L, D)`` or a list of L ``(B, D_l)`` arrays, the same layout in every batch; outputs as
    ``compute_krs`` takes them. An empty batch (B = 0) changes nothing; a refused batch changes nothing.

    ``fss_method='rbf_cka'`` cannot stream (its N x N Gram matrices need every row at once) and is
    refused here: use ``compute_krs`` on the whole arrays.
    """

    def __init__(
        self,
        task: str = "classification",
        *,
        alpha: float | None = None,
        beta: float | None = None,
        fss_method: str = "linear_cka",
        aoag_method: str | None = None,
        temperature: float = 1.0,
        inputs: str = "logits",
        max_mse: float | None = None,
        ignore_index: int | None = None,
        scale: float = 1.0,
    ) -> None:
        self.alpha, self.beta, self.aoag_method = check_krs_options(
            task=task, alpha=alpha, beta=beta, fss_method=fss_method, aoag_method=aoag_method, temperature=temperature,
            inputs=inputs, max_mse=max_mse, ignore_index=ignore_index, scale=scale,
        )
        if fss_method == "rbf_cka":
            raise InputError(
                "`fss_method='rbf_cka'` cannot stream: RBF CKA needs the N x N Gram matrices of all examples at once. "
                "Use compute_krs on the whole arrays, or fss_method='linear_cka' / 'debiased_cka' / 'cosine'."
            )
        self.task, self.fss_method = task, fss_method
        self.temperature, self.inputs, self.max_mse = float(temperature), inputs, max_mse
        self.ignore_index, self.scale = ignore_index, float(scale)
        self.reset()

    # --- state -------------------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The options this accumulator was built with (as ``compute_krs`` takes them)."""
        return {"task": self.task, "alpha": self.alpha, "beta": self.beta, "fss_method": self.fss_method,
                "aoag_method": self.aoag_method, "temperature": self.temperature, "inputs": self.inputs,
                "max_mse": self.max_mse, "ignore_index": self.ignore_index, "scale": self.scale}

    def _new_feature_accumulator(self) -> FeatureAccumulator:
        if self.fss_method == "cosine":
            return CosineAccumulator()
        return LinearCKAAccumulator(track_debiased=self.fss_method == "debiased_cka")

    def _new_output_accumulator(self) -> OutputAccumulator:
        if self.aoag_method in CLASSIFICATION_METHODS:
            return ClassificationAgreementAccumulator(temperature=self.temperature, inputs=self.inputs)  # type: ignore[arg-type]
        if self.aoag_method == "mse":
            return RegressionAgreementAccumulator()
        if self.aoag_method == "mask_iou":
            return MaskIoUAccumulator(ignore_index=self.ignore_index)
        return BoxIoUAccumulator()

    def reset(self) -> KRSAccumulator:
        """Forgets every batch (the options are kept)."""
        self.n = 0
        self.features: list[FeatureAccumulator] = []
        self.outputs: OutputAccumulator = self._new_output_accumulator()
        return self

    # --- batches -----------------------------------------------------------------------------------

    def update(
        self,
        teacher_features: ArrayLike | Sequence[ArrayLike],
        student_features: ArrayLike | Sequence[ArrayLike],
        teacher_outputs: Any,
        student_outputs: Any,
    ) -> KRSAccumulator:
        """Adds one batch (see the class docstring for the layouts); returns ``self``."""
        teachers = as_layers(teacher_features, "teacher_features", allow_empty=True)
        students = as_layers(student_features, "student_features", allow_empty=True)
        if len(teachers) != len(students):
            raise InputError(
                f"`teacher_features` and `student_features` must pair layers one to one: got {len(teachers)} "
                f"teacher layer(s) and {len(students)} student layer(s)."
            )
        if self.features and len(teachers) != len(self.features):
            raise InputError(f"The number of layers changed between batches: {len(self.features)} then {len(teachers)}.")
        ragged = self.aoag_method == "box_iou"
        rows = check_num_examples({
            "teacher_features": teachers[0].shape[0],
            "student_features": students[0].shape[0],
            "teacher_outputs": num_rows(teacher_outputs, "teacher_outputs", ragged=ragged),
            "student_outputs": num_rows(student_outputs, "student_outputs", ragged=ragged),
        })
        # the batch goes into fresh accumulators first: a refused batch leaves the state as it was
        features = [self._new_feature_accumulator().update(t, s) for t, s in zip(teachers, students, strict=True)]
        outputs = self._new_output_accumulator()
        if rows:
            outputs.update(teacher_outputs, student_outputs)
        if not self.features:
            self.features = [self._new_feature_accumulator() for _ in teachers]
        for mine, batch in zip(self.features, features, strict=True):
            mine += batch  # type: ignore[operator]
        self.outputs += outputs  # type: ignore[operator]
        self.n += rows
        return self

    def compute(self) -> dict[str, Any]:
        """The result of :func:`~knowledge_retention.score.compute_krs` on every batch so far.

        Raises:
            InputError: no example yet, or what ``compute_krs`` refuses (too few examples for CKA,
                constant features, a constant teacher for the default ``max_mse``, ...).
        """
        if self.n == 0 or not self.features:
            raise InputError("KRSAccumulator has no examples: call update() with at least one batch first.")
        scores = []
        for acc in self.features:
            if isinstance(acc, CosineAccumulator):
                scores.append(max(0.0, acc.compute()))
            elif self.fss_method == "debiased_cka":
                scores.append(_clip_unit(acc.compute(debiased=True)))
            else:
                scores.append(acc.compute())
        fss = float(np.mean(scores))  # as feature_similarity_score
        if isinstance(self.outputs, ClassificationAgreementAccumulator):
            aoag = self.outputs.compute(self.aoag_method)  # type: ignore[arg-type]
        elif isinstance(self.outputs, RegressionAgreementAccumulator):
            aoag = self.outputs.compute(max_mse=self.max_mse)
        else:
            aoag = self.outputs.compute()
        return {
            "krs": combine_krs(fss, aoag, alpha=self.alpha, beta=self.beta, scale=self.scale),
            "fss": fss,
            "aoag": aoag,
            "alpha": self.alpha,
            "beta": self.beta,
            "task": self.task,
            "fss_method": self.fss_method,
            "aoag_method": self.aoag_method,
            "num_examples": self.n,
        }

    # --- merging and saving ------------------------------------------------------------------------

    def __iadd__(self, other: KRSAccumulator) -> KRSAccumulator:
        if not isinstance(other, KRSAccumulator):
            raise InputTypeError(f"Only a KRSAccumulator can be added to one, got {type(other).__name__}.")
        if other.options() != self.options():
            differ = [k for k in _OPTIONS if other.options()[k] != self.options()[k]]
            raise InputError(f"Cannot merge KRS states built with different options: {', '.join(differ)}.")
        if other.n == 0:
            return self
        if self.features and len(self.features) != len(other.features):
            raise InputError(f"Cannot merge KRS states over {len(self.features)} and {len(other.features)} layers.")
        if not self.features:
            self.features = [self._new_feature_accumulator() for _ in other.features]
        for mine, theirs in zip(self.features, other.features, strict=True):
            mine += theirs  # type: ignore[operator]
        self.outputs += other.outputs  # type: ignore[operator]
        self.n += other.n
        return self

    def __add__(self, other: KRSAccumulator) -> KRSAccumulator:
        merged = KRSAccumulator(**self.options())
        merged += self
        merged += other
        return merged

    def state_dict(self) -> dict[str, Any]:
        """Options and sums as nested dicts (numpy arrays inside), for saving or sending between processes."""
        return {"options": self.options(), "n": self.n, "features": [acc.state_dict() for acc in self.features],
                "outputs": self.outputs.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> KRSAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry."""
        check_state_mapping(state, "KRSAccumulator")
        options = state.get("options")
        if not isinstance(options, dict) or set(options) != set(_OPTIONS):
            raise InputError(f"`state['options']` must be a dict of the options {list(_OPTIONS)}.")
        acc = cls(**options)
        acc.n = state_int(state, "n", minimum=0)
        features = state.get("features")
        if not isinstance(features, list):
            raise InputError("`state['features']` must be a list of per-layer states.")
        kind = type(acc._new_feature_accumulator())
        acc.features = [kind.from_state_dict(item) for item in features]  # type: ignore[attr-defined]
        acc.outputs = type(acc.outputs).from_state_dict(state.get("outputs"))  # type: ignore[arg-type]
        if any(getattr(f, "n", acc.n) != acc.n for f in acc.features):
            raise InputError("`state['features']` count other numbers of examples than `state['n']`: the state is damaged.")
        return acc
