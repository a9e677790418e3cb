r"""Knowledge Retention Score: :math:`\mathrm{KRS} = \alpha\,\mathrm{FSS} + \beta\,\mathrm{AOAg}`.

Alba & Villaverde (2025) weight the two components per task.  Presets (α, β):

===============  =====  =====  ==========================================================
task             α      β      source
===============  =====  =====  ==========================================================
classification   0.3    0.7    the paper (image classification)
detection        0.7    0.3    the paper
segmentation     0.7    0.3    the paper
nlp              0.5    0.5    the paper (SST-2 experiments)
regression       0.5    0.5    **our choice**: the paper gives no preset for time series
causal-lm        0.5    0.5    **our choice**: the paper has no LM preset; as ``nlp`` (token-level FSS/AOAg)
===============  =====  =====  ==========================================================

α and β must lie in [0, 1] and sum to 1, so KRS is in [0, 1] like its components.  The paper's
vision tables print KRS on 0-100; :func:`combine_krs` returns 0-1 and ``scale=100`` gives the other form.

Two functions, two names: :func:`combine_krs` combines two numbers (FSS and AOAg) into KRS;
:func:`compute_krs` computes all three from the features and outputs. (``knowledge_retention_score``
is the former name of :func:`combine_krs`.) :class:`~knowledge_retention.streaming.KRSAccumulator`
is :func:`compute_krs` batch by batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ._validation import (
    ArrayLike,
    InputError,
    as_layers,
    check_choice,
    check_num_examples,
    check_positive,
    check_unit_interval,
    num_rows,
)
from .agreement import AOAG_METHODS, AOAgMethod, InputKind, check_agreement_options, output_agreement
from .methods import (
    AOAG_METHODS_BY_TASK,
    ARRAY_AOAG_METHODS,
    FSS_METHODS,
    STREAMING_FSS_METHODS,
    aoag_methods_for,
)
from .similarity import FSSMethod, feature_similarity_score

Task = Literal["classification", "detection", "segmentation", "nlp", "regression", "causal-lm"]

TASK_PRESETS: dict[str, tuple[float, float]] = {
    "classification": (0.3, 0.7),
    "detection": (0.7, 0.3),
    "segmentation": (0.7, 0.3),
    "nlp": (0.5, 0.5),
    "regression": (0.5, 0.5),
    "causal-lm": (0.5, 0.5),
}

#: The AOAg measure used for each task when none is named.
DEFAULT_AOAG: dict[str, str] = {
    "classification": "kl",
    "nlp": "kl",
    "regression": "mse",
    "segmentation": "mask_iou",
    "detection": "box_iou",
    "causal-lm": "kl",  # over counted tokens: rows of (n_tokens, V) logits
}

__all__ = [
    "AOAG_METHODS",
    "AOAG_METHODS_BY_TASK",
    "ARRAY_AOAG_METHODS",
    "DEFAULT_AOAG",
    "FSS_METHODS",
    "STREAMING_FSS_METHODS",
    "TASK_PRESETS",
    "alpha_sensitivity",
    "aoag_methods_for",
    "check_krs_options",
    "combine_krs",
    "compute_krs",
    "knowledge_retention_score",
    "resolve_weights",
]

_SUM_TOL = 1e-9


def _sum_tolerance(*values: float | None) -> float:
    """How far α + β may be from 1: 1e-9, or a few units of the coarsest float format given (float32: 2.4e-7)."""
    tolerance = _SUM_TOL
    for value in values:
        if isinstance(value, np.floating):
            tolerance = max(tolerance, 2 * float(np.finfo(value.dtype).eps))
    return tolerance


def resolve_weights(
    task: str | None = None, alpha: float | None = None, beta: float | None = None
) -> tuple[float, float]:
    """Returns (α, β) from a task preset and/or explicit values.

    Explicit values win over the preset; one of α/β alone implies the other (1 - it).

    Raises:
        InputError: unknown task; α or β outside [0, 1]; α + β != 1 (to 1e-9, or to the precision of
            float32/float16 weights, which are then renormalised to sum to 1); nothing given at all.

    Example:
        >>> resolve_weights("classification")
        (0.3, 0.7)
        >>> resolve_weights(alpha=0.2)
        (0.2, 0.8)
    """
    if task is not None:
        check_choice(task, "task", tuple(TASK_PRESETS))
    tolerance = _sum_tolerance(alpha, beta)
    if alpha is None and beta is None:
        if task is None:
            raise InputError(f"Give a `task` preset (one of {sorted(TASK_PRESETS)}) or `alpha`/`beta`.")
        return TASK_PRESETS[task]
    if alpha is not None:
        alpha = check_unit_interval(alpha, "alpha")
    if beta is not None:
        beta = check_unit_interval(beta, "beta")
    if alpha is None:
        alpha = 1.0 - beta  # type: ignore[operator]
    if beta is None:
        beta = 1.0 - alpha
    if abs(alpha + beta - 1.0) > tolerance:
        raise InputError(f"`alpha` + `beta` must equal 1, got {alpha} + {beta} = {alpha + beta}.")
    if abs(alpha + beta - 1.0) > _SUM_TOL:  # float32 (or half) weights: their sum is 1 to their own precision
        alpha, beta = alpha / (alpha + beta), beta / (alpha + beta)
    return float(alpha), float(beta)


def combine_krs(
    fss: float,
    aoag: float,
    *,
    task: str | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    scale: float = 1.0,
) -> float:
    r"""KRS = α·FSS + β·AOAg, times ``scale`` (1 for 0-1, 100 for the paper's 0-100 tables).

    Args:
        fss: Feature Similarity Score in [0, 1].
        aoag: Average Output Agreement in [0, 1].
        task: preset for (α, β); see :data:`TASK_PRESETS`.
        alpha: weight of FSS in [0, 1] (overrides the preset).
        beta: weight of AOAg in [0, 1]; α + β = 1.
        scale: multiply the result (1 or 100).

    Returns:
        KRS in [0, scale]; higher is better.

    Example:
        >>> combine_krs(0.8, 0.6, task="nlp")
        0.7
        >>> combine_krs(0.8, 0.6, alpha=0.3, scale=100)
        66.0
    """
    fss = check_unit_interval(fss, "fss")
    aoag = check_unit_interval(aoag, "aoag")
    scale = check_positive(scale, "scale")
    a, b = resolve_weights(task, alpha, beta)
    return round(scale * (a * fss + b * aoag), 12)


#: The former name of :func:`combine_krs` (kept: it combines two numbers; :func:`compute_krs` takes the data).
knowledge_retention_score = combine_krs


def alpha_sensitivity(fss: float, aoag: float, *, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    r"""KRS for α from 0 to 1 (β = 1 - α), the paper's α-sensitivity curve.

    Returns:
        ``(alphas, krs)``, two arrays of length ``round(1 / step) + 1``.

    Example:
        >>> alphas, krs = alpha_sensitivity(1.0, 0.0, step=0.5)
        >>> alphas.tolist(), krs.tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    """
    fss = check_unit_interval(fss, "fss")
    aoag = check_unit_interval(aoag, "aoag")
    step = check_positive(step, "step")
    count = int(round(1.0 / step))
    if not np.isclose(count * step, 1.0) or count < 1:
        raise InputError(f"`step` must divide 1 evenly (e.g. 0.01, 0.05, 0.1), got {step}.")
    alphas = np.linspace(0.0, 1.0, count + 1)
    return alphas, alphas * fss + (1.0 - alphas) * aoag


def check_krs_options(
    *,
    task: str = "classification",
    alpha: float | None = None,
    beta: float | None = None,
    fss_method: str = "linear_cka",
    aoag_method: str | None = None,
    temperature: float = 1.0,
    inputs: str = "logits",
    max_mse: float | None = None,
    ignore_index: int | None = None,
    scale: float = 1.0,
) -> tuple[float, float, str]:
    """Validates every option of :func:`compute_krs`, whether the task uses it or not.

    Returns:
        ``(alpha, beta, aoag_method)``: the weights and the measure that will be used.

    Raises:
        InputError: an unknown ``task``, ``fss_method`` or ``aoag_method``; weights outside [0, 1] or
            not summing to 1; ``temperature``/``max_mse``/``scale`` not finite and > 0; ``inputs`` not
            ``logits``/``probabilities``; ``ignore_index`` not an integer.
    """
    check_choice(task, "task", tuple(TASK_PRESETS))
    check_choice(fss_method, "fss_method", FSS_METHODS)
    method = aoag_method if aoag_method is not None else DEFAULT_AOAG[task]
    check_choice(method, "aoag_method", AOAG_METHODS)
    check_agreement_options(temperature=temperature, inputs=inputs, max_mse=max_mse, ignore_index=ignore_index)
    check_positive(scale, "scale")
    a, b = resolve_weights(task, alpha, beta)
    return a, b, method


def compute_krs(
    teacher_features: ArrayLike | Sequence[ArrayLike],
    student_features: ArrayLike | Sequence[ArrayLike],
    teacher_outputs: Any,
    student_outputs: Any,
    *,
    task: Task = "classification",
    alpha: float | None = None,
    beta: float | None = None,
    fss_method: FSSMethod = "linear_cka",
    aoag_method: AOAgMethod | None = None,
    temperature: float = 1.0,
    inputs: InputKind = "logits",
    max_mse: float | None = None,
    ignore_index: int | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """FSS, AOAg and KRS from arrays in one call: the function every front end uses.

    **Options a task does not use** (the package's one rule, at every entry point): every option is
    validated whatever the task, and refused by name when invalid (``max_mse=-5`` with ``nlp``,
    ``temperature=-1`` with ``regression``, ``inputs='bogus'`` with ``segmentation``); a valid option
    the task's measure does not use is then ignored (``temperature`` with ``regression``, ``max_mse``
    with ``nlp``, ``ignore_index`` with anything but ``mask_iou``).

    Args:
        teacher_features: ``(N, D_t)`` pooled teacher features, an ``(N, L, D_t)`` stack of L
            layers, or a list of ``(N, D_t^l)`` arrays, one per layer pair (the package's one layout:
            :func:`knowledge_retention._validation.as_layers`).
        student_features: the student's, paired with the teacher's by position.
        teacher_outputs: ``(N, C)`` logits (classification/nlp), ``(N,)``/``(N, K)`` values
            (regression), ``(N, H, W)`` label maps (segmentation), or a list of ``(M_i, 4)`` boxes
            (detection).
        student_outputs: the student's, same layout. Every input must have the same N.
        task: preset for α/β and the default AOAg method.
        alpha: FSS weight (overrides the preset).
        beta: AOAg weight (overrides the preset).
        fss_method: ``linear_cka``, ``debiased_cka``, ``rbf_cka`` or ``cosine``.
        aoag_method: ``kl``, ``js``, ``top1``, ``mse``, ``mask_iou`` or ``box_iou`` (default by task).
        temperature: softmax temperature for the classification measures.
        inputs: ``logits`` or ``probabilities`` (classification).
        max_mse: regression MSE that maps to zero agreement (default: teacher output variance).
        ignore_index: segmentation: a void label (e.g. 255) whose pixels are left out of the IoU.
        scale: 1 (KRS in 0-1) or 100 (the paper's tables).

    Returns:
        dict with ``krs``, ``fss``, ``aoag``, ``alpha``, ``beta``, ``fss_method``, ``aoag_method``,
        ``task`` and ``num_examples``.

    Raises:
        InputError: bad options; features and outputs with different numbers of rows; bad layouts
            (and the data checks of the FSS and AOAg measures).
        InputTypeError: ``None``, strings, complex or non-numeric inputs.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> feats, logits = rng.normal(size=(64, 16)), rng.normal(size=(64, 2))
        >>> out = compute_krs(feats, feats, logits, logits, task="nlp")
        >>> out["krs"], out["fss"], out["aoag"]
        (1.0, 1.0, 1.0)
    """
    a, b, method = check_krs_options(
        task=task, alpha=alpha, beta=beta, fss_method=fss_method, aoag_method=aoag_method, temperature=temperature,
        inputs=inputs, max_mse=max_mse, ignore_index=ignore_index, scale=scale,
    )
    teachers = as_layers(teacher_features, "teacher_features")
    students = as_layers(student_features, "student_features")
    ragged = method == "box_iou"  # detection: one (M_i, 4) array of boxes per image
    num_examples = check_num_examples({
        "teacher_features": teachers[0].shape[0],
        "student_features": students[0].shape[0],
        "teacher_outputs": num_rows(teacher_outputs, "teacher_outputs", ragged=ragged),
        "student_outputs": num_rows(student_outputs, "student_outputs", ragged=ragged),
    })
    fss = feature_similarity_score(teachers, students, method=fss_method)
    aoag = output_agreement(
        teacher_outputs, student_outputs, method=method, temperature=temperature, inputs=inputs, max_mse=max_mse,  # type: ignore[arg-type]
        ignore_index=ignore_index,
    )
    return {
        "krs": combine_krs(fss, aoag, alpha=a, beta=b, scale=scale),
        "fss": fss,
        "aoag": aoag,
        "alpha": a,
        "beta": b,
        "task": task,
        "fss_method": fss_method,
        "aoag_method": method,
        "num_examples": num_examples,
    }
