r"""Confidence intervals for KRS, FSS, AOAg and accuracy retention, and paired comparisons of two students.

Output-based statistics (AOAg, mean KL, top-1 agreement, accuracy, accuracy retention): the
nonparametric bootstrap over examples (Efron & Tibshirani 1993).  Replicate r draws N examples with
replacement, i.e. gives example i the multiplicity :math:`w_{ri}`,
:math:`w_r \sim \mathrm{Multinomial}(N, \mathbf 1/N)`; each statistic is recomputed from
multiplicity-weighted sums (the agreement formula itself is
:class:`knowledge_retention.agreement.ClassificationAgreementAccumulator`, filled with those sums), and
the interval is the percentile interval :math:`[q_{(1-\gamma)/2}, q_{(1+\gamma)/2}]` of the replicates.
A replicate costs one ``(N,)`` dot product per statistic, so 1000 replicates (the default) are cheap.

Feature-based statistics (FSS, and KRS, which needs FSS and AOAg of the *same* resample): each
replicate is ``LinearCKAAccumulator().update(t, s, sample_weight=w_r).compute()`` per layer pair,
about :math:`N (D_t + D_s)^2` multiply-adds, hence fewer replicates (``n_feature_resamples=200``).
For biased linear CKA, while N is below about :math:`3 R D^2 / (2D + 3R)` (tens of thousands at
D = 384, R = 200), all replicates come at once from Gram-space quadratic forms instead
(:func:`_gram_linear_cka`: the same numbers, formed in blocks of rows so memory stays O(N)); the cheaper of the two is used, so the cost stays below the
feature-space line, linear in N.  Only linear CKA (biased or debiased)
can be resampled from weighted sums; other FSS methods get no interval, and without features there
is no FSS or KRS interval (``notes`` says so).  Two resampling schemes (``feature_resampling``):

* ``"half"`` (default): half-sampling, the delete-N/2 jackknife (Shao & Wu 1989): each replicate keeps
  a random half of the examples *without* replacement (0/1 weights).  For a smooth statistic,
  :math:`\theta^*_{N/2} - \hat\theta_N` has about the variance of :math:`\hat\theta_N`
  (finite-population factor :math:`1 - m/N = 1/2`).  The interval is
  :math:`\hat\theta + [q_{(1-\gamma)/2}, q_{(1+\gamma)/2}]` of :math:`\theta^* - \overline{\theta^*}`,
  i.e. the replicates' spread centred on the estimate (biased CKA has a larger small-sample bias
  on N/2 examples; centring removes that shift).
* ``"bootstrap"``: multinomial multiplicities as above, percentile interval.  **Caution**: CKA is a
  kernel statistic; a resample's duplicated rows act like extra diagonal Gram terms and push CKA
  *up*.  Simulated (N = 872, teacher width 384, student a weak linear map of the teacher plus noise):
  debiased CKA over fresh samples 0.539 ± 0.0015 (sd); bootstrap replicates 0.651 ± 0.0047, so the
  percentile interval misses the estimate entirely; half-samples 0.537 ± 0.0023.  When D is small
  against N (and CKA high) the two schemes agree.  ``replicate_mean`` is reported so that such a
  shift is visible.

The point ``estimate`` is always the statistic on the original data (all weights 1).  Replicates
where a statistic is undefined (constant features in a resample, a teacher accuracy of 0) are
dropped; ``n_valid`` counts the ones used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._validation import (
    ArrayLike,
    InputError,
    InputTypeError,
    as_float_array,
    as_layer_list,
    check_choice,
    check_unit_interval,
)
from ..agreement import (
    CLASSIFICATION_METHODS,
    ClassificationAgreementAccumulator,
    InputKind,
    js_divergence_rows,
    log_probabilities,
    per_example_kl,
)
from ..score import DEFAULT_AOAG, TASK_PRESETS, knowledge_retention_score, resolve_weights
from ..similarity import FSS_METHODS, LinearCKAAccumulator
from ._inputs import as_labels, check_int, check_lengths
from .comparison import mcnemar_test
from .quality import quality_retained

#: FSS methods whose bootstrap this module supports (feature-space linear CKA with sample weights).
BOOTSTRAP_FSS_METHODS: tuple[str, ...] = ("linear_cka", "debiased_cka")
_CHUNK = 50  # replicates drawn at once: memory _CHUNK x N integers

FeatureResampling = Literal["half", "bootstrap"]


@dataclass
class _Student:
    """Per-example terms of one student against the teacher, computed once."""

    terms: np.ndarray  # (N, 4): exp(-KL), KL, JS (bits), top-1 match
    correct: np.ndarray | None  # (N,) 0/1 against the labels
    layers: list[np.ndarray] | None  # student feature layers, (N, D_l) each


@dataclass
class _Setup:
    """Everything a bootstrap run needs, validated."""

    n: int
    method: str
    temperature: float
    inputs: InputKind
    alpha: float
    beta: float
    debiased: bool
    teacher_correct: np.ndarray | None
    teacher_layers: list[np.ndarray] | None


def _student_terms(
    teacher_logits: ArrayLike, student_logits: ArrayLike, name: str, temperature: float, inputs: InputKind
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example (exp(-KL), KL, JS, top-1 match) ``(N, 4)``, the student's and the teacher's argmax."""
    log_t = log_probabilities(teacher_logits, "teacher_logits", temperature=temperature, inputs=inputs)
    log_s = log_probabilities(student_logits, name, temperature=temperature, inputs=inputs)
    if log_t.shape != log_s.shape:
        raise InputError(f"`teacher_logits` and `{name}` must have the same shape (N, C), got {log_t.shape} and {log_s.shape}.")
    kl = per_example_kl(teacher_logits, student_logits, temperature=temperature, inputs=inputs)
    match = (np.argmax(log_t, axis=1) == np.argmax(log_s, axis=1)).astype(np.float64)
    terms = np.stack([np.exp(-kl), kl, js_divergence_rows(log_t, log_s), match], axis=1)
    return terms, np.argmax(log_s, axis=1), np.argmax(log_t, axis=1)


def _layers(value: ArrayLike | Sequence[ArrayLike], name: str, n: int) -> list[np.ndarray]:
    layers = [as_float_array(x, f"{name}[{i}]", ndim=2, min_rows=2) for i, x in enumerate(as_layer_list(value, name))]
    for i, layer in enumerate(layers):
        if layer.shape[0] != n:
            raise InputError(f"`{name}[{i}]` has {layer.shape[0]} rows but the logits describe {n} examples.")
    return layers


def _resample_counts(n: int, total: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yields ``(R_chunk, N)`` multiplicity matrices: row r counts how often each example was drawn."""
    done = 0
    while done < total:
        size = min(_CHUNK, total - done)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        yield np.bincount((draws + offsets).ravel(), minlength=size * n).reshape(size, n)
        done += size


def _half_samples(n: int, total: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yields ``(R_chunk, N)`` 0/1 matrices, each row keeping a random N // 2 examples (no replacement)."""
    done = 0
    while done < total:
        size = min(_CHUNK, total - done)
        keep = np.argsort(rng.random((size, n)), axis=1)[:, : n // 2]
        weights = np.zeros((size, n), dtype=np.int64)
        np.put_along_axis(weights, keep, 1, axis=1)
        yield weights
        done += size


def _logit_statistics(student: _Student, setup: _Setup, weights: np.ndarray) -> dict[str, np.ndarray]:
    """AOAg, mean KL, top-1 agreement (and accuracy, accuracy retention) for each row of ``weights``."""
    n = weights.sum(axis=1)  # examples in each resample: N, or N // 2 for half-samples
    sums = weights @ student.terms  # (R, 4)
    aoag = np.empty(len(weights))
    mean_kl = np.empty(len(weights))
    for r, (s_exp, s_kl, s_js, s_match) in enumerate(sums):
        acc = ClassificationAgreementAccumulator(
            temperature=setup.temperature, inputs=setup.inputs, n=int(n[r]), sum_exp_neg_kl=float(s_exp),
            sum_kl=float(s_kl), sum_js=float(s_js), top1_matches=int(round(s_match)),
        )
        aoag[r] = acc.compute(setup.method)  # type: ignore[arg-type]
        mean_kl[r] = acc.mean_kl
    out = {"aoag": aoag, "mean_kl": mean_kl, "top1_agreement": sums[:, 3] / n}
    if student.correct is not None and setup.teacher_correct is not None:
        s_acc = weights @ student.correct / n
        t_acc = weights @ setup.teacher_correct / n
        out["student_accuracy"] = s_acc
        out["accuracy_retention"] = np.array(
            [quality_retained(float(s), float(t)) if t > 0 else np.nan for s, t in zip(s_acc, t_acc, strict=True)]
        )
    return out


def _fss_statistic(teacher_layers: list[np.ndarray], student_layers: list[np.ndarray], weights: np.ndarray, debiased: bool) -> float:
    """FSS (mean over layer pairs of linear CKA, clipped to [0, 1]) with example multiplicities ``weights``."""
    scores = []
    used = weights > 0  # rows drawn 0 times add nothing: leave them out of the products
    for t, s in zip(teacher_layers, student_layers, strict=True):
        try:
            cka = (LinearCKAAccumulator(track_debiased=debiased)
                   .update(t[used], s[used], sample_weight=weights[used]).compute(debiased=debiased))
        except ValueError:  # e.g. a resample whose features are constant
            return float("nan")
        scores.append(min(max(cka, 0.0), 1.0))
    return float(np.mean(scores))


_GRAM_BLOCK = 128  # Gram rows formed at once in the Gram-space path: memory 5 x _GRAM_BLOCK x N floats


def _gram_path_is_cheaper(n: int, widths: Sequence[tuple[int, int]], n_replicates: int, debiased: bool) -> bool:
    r"""Whether the Gram-space replicates (:func:`_gram_linear_cka`) cost fewer multiply-adds than one
    feature-space CKA per replicate: about :math:`N^2 (D_t + D_s + 3R) / 2` (the upper triangle of the
    Grams and of three quadratic forms) against :math:`R \, \tfrac N2 (D_t^2 + D_s^2 + D_t D_s)` per
    layer pair (R replicates of about N/2 used rows). The first is quadratic in N, the second linear,
    so taking the cheaper one keeps the cost below the feature-space line, linear in N, and far lower
    at N of a few thousand."""
    if debiased:
        return False
    gram = sum(n * n * (dt + ds + 3 * n_replicates) / 2 + 2 * n * n_replicates * (dt + ds) for dt, ds in widths)
    feature = sum(n_replicates * (n / 2) * (dt * dt + ds * ds + dt * ds) for dt, ds in widths)
    return gram < feature


def _gram_linear_cka(teacher: np.ndarray, student: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r"""Linear CKA of ``(teacher, student)`` under every row of ``weights`` ``(R, N)`` (multiplicities),
    from Gram-space quadratic forms: the same statistic as
    ``LinearCKAAccumulator().update(t, s, sample_weight=w).compute()``.

    With :math:`K = XX^\top`, :math:`L = YY^\top` (features centred on the full sample first, so the
    corrections below are small), :math:`n = \sum_i w_i` and the weighted centred cross-product
    :math:`C = X^\top W Y - n\,\mu_x\mu_y^\top`:

    .. math::

        \lVert C \rVert_F^2 = w^\top (K \circ L)\, w - \tfrac{2}{n} \textstyle\sum_i w_i (Kw)_i (Lw)_i
            + \tfrac{1}{n^2} (w^\top K w)(w^\top L w)

    and likewise :math:`\lVert C_{xx} \rVert_F^2`, :math:`\lVert C_{yy} \rVert_F^2` with :math:`K \circ K`,
    :math:`L \circ L`; CKA :math:`= \lVert C\rVert_F^2 / (\lVert C_{xx}\rVert_F \lVert C_{yy}\rVert_F)`.
    :math:`Kw = X(X^\top w)` comes from the features; the Grams are formed :data:`_GRAM_BLOCK` rows at
    a time, upper triangle only (memory O(N), not O(N^2)).
    NaN where a replicate's features are constant (a zero denominator).
    """
    x = teacher - teacher.mean(axis=0)
    y = student - student.mean(axis=0)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    wt = np.ascontiguousarray(w.T)  # (N, R)
    n_rows = w.shape[1]
    # K w and L w through the features (K w = X (Xᵀ w)): N·D·R multiply-adds, not N²·R
    kw = x @ (x.T @ wt)
    lw = y @ (y.T @ wt)
    # w^T M w for M = K∘L, K∘K, L∘L from the upper triangle of row blocks (M is symmetric): each
    # block row of K and L from its diagonal block on, the part right of the diagonal counted twice
    quad = np.zeros((3, w.shape[0]))  # xy, xx, yy
    block = min(_GRAM_BLOCK, n_rows)
    buf = np.empty((3 * block, n_rows))  # the three products of a block row, stacked: one GEMM each
    for lo in range(0, n_rows, block):
        hi = min(lo + block, n_rows)
        b, width = hi - lo, n_rows - lo
        k = x[lo:hi] @ x[lo:].T  # (b, N - lo)
        gram_l = y[lo:hi] @ y[lo:].T
        prods = buf[: 3 * b, :width]
        np.multiply(k, gram_l, out=prods[:b])
        np.multiply(k, k, out=prods[b : 2 * b])
        np.multiply(gram_l, gram_l, out=prods[2 * b :])
        block_w = wt[lo:hi]  # (b, R)
        total = prods[:, :b] @ block_w  # the diagonal block, once: (3b, R)
        if hi < n_rows:
            total += 2.0 * (prods[:, b:] @ wt[hi:])
        quad += np.einsum("br,kbr->kr", block_w, total.reshape(3, b, -1))
    n = w.sum(axis=1)
    wkw = np.einsum("nr,nr->r", wt, kw)
    wlw = np.einsum("nr,nr->r", wt, lw)

    def centred(q: np.ndarray, a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
        return q - 2.0 / n * np.einsum("nr,nr,nr->r", wt, a, b) + wa * wb / (n * n)

    xy = centred(quad[0], kw, lw, wkw, wlw)
    xx = centred(quad[1], kw, kw, wkw, wkw)
    yy = centred(quad[2], lw, lw, wlw, wlw)
    # constant features in a replicate: its centred sums vanish against their size about the mean
    # (trace of the weighted second moment), up to rounding
    size_x = wt.T @ np.einsum("ij,ij->i", x, x)
    size_y = wt.T @ np.einsum("ij,ij->i", y, y)
    tiny = 1e-10
    constant = (np.sqrt(np.clip(xx, 0.0, None)) <= tiny * size_x) | (np.sqrt(np.clip(yy, 0.0, None)) <= tiny * size_y)
    with np.errstate(divide="ignore", invalid="ignore"):
        cka = xy / np.sqrt(np.clip(xx, 0.0, None) * np.clip(yy, 0.0, None))
    return np.where(constant, np.nan, cka)


def _fss_replicates(teacher_layers: list[np.ndarray], student_layers: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """FSS (mean over layer pairs of linear CKA, clipped to [0, 1]) of every row of ``weights``, Gram space."""
    scores = [np.clip(_gram_linear_cka(t, s, weights), 0.0, 1.0)
              for t, s in zip(teacher_layers, student_layers, strict=True)]
    return np.mean(scores, axis=0)  # NaN where any pair is undefined


def _feature_statistics(student: _Student, setup: _Setup, weights: np.ndarray, aoag: np.ndarray) -> dict[str, np.ndarray]:
    """FSS and KRS (with the AOAg of the same resample) for each row of ``weights``."""
    assert setup.teacher_layers is not None and student.layers is not None
    widths = [(t.shape[1], s.shape[1]) for t, s in zip(setup.teacher_layers, student.layers, strict=True)]
    if len(weights) > 1 and _gram_path_is_cheaper(setup.n, widths, len(weights), setup.debiased):
        fss = _fss_replicates(setup.teacher_layers, student.layers, weights)
    else:
        fss = np.array([_fss_statistic(setup.teacher_layers, student.layers, w, setup.debiased) for w in weights])
    krs = np.array([
        knowledge_retention_score(f, float(g), alpha=setup.alpha, beta=setup.beta) if np.isfinite(f) else np.nan
        for f, g in zip(fss, aoag, strict=True)
    ])
    return {"fss": fss, "krs": krs}


def _run(
    students: list[_Student],
    setup: _Setup,
    n_resamples: int,
    n_feature_resamples: int,
    feature_resampling: str,
    seed: int | None,
) -> tuple[list[dict[str, float]], list[dict[str, np.ndarray]]]:
    """Point estimates and replicates of every statistic, for each student, on shared resamples.

    Output-based statistics use ``n_resamples`` multinomial replicates; ``fss`` and ``krs`` use
    ``n_feature_resamples`` replicates of ``feature_resampling`` (AOAg recomputed on the same ones).
    """
    with_features = setup.teacher_layers is not None and all(s.layers is not None for s in students)
    ones = np.ones((1, setup.n))
    points: list[dict[str, float]] = []
    for student in students:
        point = _logit_statistics(student, setup, ones)
        if with_features:
            point.update(_feature_statistics(student, setup, ones, point["aoag"]))
        points.append({k: float(v[0]) for k, v in point.items()})
    reps: list[dict[str, list[np.ndarray]]] = [{k: [] for k in p} for p in points]
    rng = np.random.default_rng(seed)
    for counts in _resample_counts(setup.n, n_resamples, rng):
        for student, rep in zip(students, reps, strict=True):
            for k, v in _logit_statistics(student, setup, counts).items():
                rep[k].append(v)
    if with_features:
        draw = _half_samples if feature_resampling == "half" else _resample_counts
        chunks: Iterator[np.ndarray] | list[np.ndarray] = draw(setup.n, n_feature_resamples, rng)
        assert setup.teacher_layers is not None
        widths = [(t.shape[1], t.shape[1]) for t in setup.teacher_layers]
        if _gram_path_is_cheaper(setup.n, widths, n_feature_resamples, setup.debiased):
            chunks = [np.concatenate(list(chunks))]  # the same draws, in one (R, N) matrix for the Gram path
        for weights in chunks:
            for student, rep in zip(students, reps, strict=True):
                aoag = _logit_statistics(student, setup, weights)["aoag"]
                for k, v in _feature_statistics(student, setup, weights, aoag).items():
                    rep[k].append(v)
    return points, [{k: np.concatenate(v) for k, v in rep.items()} for rep in reps]


def _interval(estimate: float, replicates: np.ndarray, level: float, *, centred: bool = False) -> dict[str, Any]:
    """Percentile interval of the replicates, or (``centred``) the estimate plus their centred quantiles."""
    valid = replicates[np.isfinite(replicates)]
    quantiles = [50 * (1 - level), 50 * (1 + level)]
    if not valid.size:
        low = high = mean = float("nan")
    else:
        mean = float(np.mean(valid))
        low, high = np.percentile(valid - mean, quantiles) + estimate if centred else np.percentile(valid, quantiles)
    return {
        "estimate": float(estimate),
        "low": float(low),
        "high": float(high),
        "replicate_mean": mean,
        "n_resamples": int(replicates.size),
        "n_valid": int(valid.size),
    }


_FEATURE_STATISTICS = ("fss", "krs")


def _intervals(points: dict[str, float], reps: dict[str, np.ndarray], level: float, feature_resampling: str) -> dict[str, Any]:
    return {
        k: _interval(points[k], reps[k], level, centred=k in _FEATURE_STATISTICS and feature_resampling == "half")
        for k in points
    }


def _check_options(
    task: str, aoag_method: str | None, fss_method: str, n_resamples: int, n_feature_resamples: int,
    confidence_level: float, seed: int | None, feature_resampling: str,
) -> tuple[str, int, int, float]:
    check_choice(task, "task", tuple(TASK_PRESETS))
    check_choice(feature_resampling, "feature_resampling", ("half", "bootstrap"))
    method = aoag_method if aoag_method is not None else DEFAULT_AOAG[task]
    if method not in CLASSIFICATION_METHODS:
        raise InputError(
            f"The bootstrap works on classification logits: `aoag_method` must be one of "
            f"{sorted(CLASSIFICATION_METHODS)}, got {method!r} (task {task!r})."
        )
    check_choice(fss_method, "fss_method", FSS_METHODS)
    n_resamples = check_int(n_resamples, "n_resamples")
    n_feature_resamples = check_int(n_feature_resamples, "n_feature_resamples")
    level = check_unit_interval(confidence_level, "confidence_level")
    if not 0.0 < level < 1.0:
        raise InputError(f"`confidence_level` must lie strictly between 0 and 1, got {confidence_level}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputTypeError(f"`seed` must be an int or None, got {type(seed).__name__}.")
    return method, n_resamples, n_feature_resamples, level


def _correctness(labels: ArrayLike | None, predictions: list[np.ndarray], num_classes: int) -> list[np.ndarray] | None:
    """Per-example 0/1 correctness of each model's predictions (None without labels)."""
    if labels is None:
        return None
    y = as_labels(labels, "labels", num_classes=num_classes)
    check_lengths([("teacher_logits", len(predictions[0])), ("labels", len(y))])
    return [(p == y).astype(np.float64) for p in predictions]


def _features_usable(
    teacher_features: Any, student_features: Sequence[Any], student_names: Sequence[str], fss_method: str, notes: list[str]
) -> bool:
    given = [teacher_features is not None] + [f is not None for f in student_features]
    if not any(given):
        notes.append(
            "No per-example features: intervals for the output-based figures (AOAg, KL, top-1, accuracy) only; "
            "FSS and KRS need the pooled features of both models."
        )
        return False
    if not all(given):
        names = ", ".join(f"`{n}`" for n in ("teacher_features", *student_names))
        raise InputError(f"Give all of {names}, or none of them.")
    if fss_method not in BOOTSTRAP_FSS_METHODS:
        notes.append(
            f"fss_method={fss_method!r} cannot be resampled from additive sums; FSS and KRS intervals are given "
            f"only for {list(BOOTSTRAP_FSS_METHODS)}."
        )
        return False
    return True


def _prepare(
    teacher_logits: ArrayLike,
    students_logits: Sequence[tuple[str, ArrayLike]],
    labels: ArrayLike | None,
    teacher_features: Any,
    students_features: Sequence[tuple[str, Any]],
    task: str, alpha: float | None, beta: float | None, method: str, fss_method: str,
    temperature: float, inputs: InputKind, notes: list[str],
) -> tuple[list[_Student], _Setup]:
    a, b = resolve_weights(task, alpha, beta)
    parts = [_student_terms(teacher_logits, logits, name, temperature, inputs) for name, logits in students_logits]
    n = parts[0][0].shape[0]
    num_classes = int(log_probabilities(teacher_logits, "teacher_logits", inputs=inputs).shape[1])
    correct = _correctness(labels, [parts[0][2]] + [p[1] for p in parts], num_classes)
    usable = _features_usable(
        teacher_features, [f for _, f in students_features], [name for name, _ in students_features], fss_method, notes
    )
    t_layers = _layers(teacher_features, "teacher_features", n) if usable else None
    students = []
    for i, ((terms, _, _), (name, feats)) in enumerate(zip(parts, students_features, strict=True)):
        s_layers = _layers(feats, name, n) if usable else None
        if t_layers is not None and s_layers is not None and len(t_layers) != len(s_layers):
            raise InputError(
                f"`teacher_features` and `{name}` must pair layers one to one: got {len(t_layers)} and {len(s_layers)}."
            )
        students.append(_Student(terms, None if correct is None else correct[i + 1], s_layers))
    if labels is None:
        notes.append("No labels: no interval for accuracy or accuracy retention.")
    setup = _Setup(
        n=n, method=method, temperature=temperature, inputs=inputs, alpha=a, beta=b,
        debiased=fss_method == "debiased_cka", teacher_correct=None if correct is None else correct[0],
        teacher_layers=t_layers,
    )
    return students, setup


def bootstrap_confidence_intervals(
    teacher_logits: ArrayLike,
    student_logits: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    teacher_features: ArrayLike | Sequence[ArrayLike] | None = None,
    student_features: ArrayLike | Sequence[ArrayLike] | None = None,
    task: str = "classification",
    alpha: float | None = None,
    beta: float | None = None,
    aoag_method: str | None = None,
    fss_method: str = "linear_cka",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
    n_resamples: int = 1000,
    n_feature_resamples: int = 200,
    feature_resampling: FeatureResampling = "half",
    confidence_level: float = 0.95,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for AOAg, mean KL, top-1 agreement, accuracy retention, FSS and KRS.

    Args:
        teacher_logits: ``(N, C)`` teacher logits.
        student_logits: ``(N, C)`` student logits.
        labels: optional ``(N,)`` gold labels (adds ``student_accuracy`` and ``accuracy_retention``).
        teacher_features: optional pooled features ``(N, D_t)`` or a list of layers, paired by position
            with ``student_features`` (adds ``fss`` and ``krs``).
        student_features: the student's, ``(N, D_s)`` or a list of layers.
        task: preset for (α, β) and the default AOAg method (classification or nlp).
        alpha: FSS weight (overrides the preset).
        beta: AOAg weight.
        aoag_method: ``kl``, ``js`` or ``top1`` (default by task).
        fss_method: ``linear_cka`` or ``debiased_cka`` give an FSS interval; others are noted and skipped.
        temperature: softmax temperature.
        inputs: ``"logits"`` or ``"probabilities"``.
        n_resamples: replicates for the logit-based statistics (default 1000).
        n_feature_resamples: replicates for FSS and KRS (default 200; each costs a CKA per layer pair).
        feature_resampling: ``"half"`` (default: half-samples without replacement, centred interval) or
            ``"bootstrap"`` (multinomial, percentile; biased upward for CKA, see the module notes).
        confidence_level: γ in (0, 1), default 0.95.
        seed: seed of the ``numpy.random.Generator`` (same seed, same intervals).

    Returns:
        ``{"method": "percentile", "confidence_level", "seed", "num_examples", "n_resamples",
        "n_feature_resamples", "feature_resampling", "aoag_method", "fss_method", "alpha", "beta",
        "intervals": {name: {"estimate", "low", "high", "replicate_mean", "n_resamples", "n_valid"}},
        "notes": [str]}`` with names among
        ``aoag``, ``mean_kl``, ``top1_agreement``, ``student_accuracy``, ``accuracy_retention``,
        ``fss``, ``krs``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = rng.normal(size=(200, 3)); s = t + 0.3 * rng.normal(size=(200, 3))
        >>> ci = bootstrap_confidence_intervals(t, s, n_resamples=200)["intervals"]["aoag"]
        >>> ci["low"] <= ci["estimate"] <= ci["high"]
        True
    """
    method, n_resamples, n_feature_resamples, level = _check_options(
        task, aoag_method, fss_method, n_resamples, n_feature_resamples, confidence_level, seed, feature_resampling
    )
    notes: list[str] = []
    students, setup = _prepare(
        teacher_logits, [("student_logits", student_logits)], labels, teacher_features,
        [("student_features", student_features)], task, alpha, beta, method, fss_method, temperature, inputs, notes,
    )
    if setup.teacher_layers is not None and setup.n // 2 < (4 if setup.debiased else 2) and feature_resampling == "half":
        raise InputError(f"Half-sampling needs at least {8 if setup.debiased else 4} examples for FSS, got {setup.n}.")
    points, reps = _run(students, setup, n_resamples, n_feature_resamples, feature_resampling, seed)
    return {
        "method": "percentile",
        "confidence_level": level,
        "seed": seed,
        "num_examples": setup.n,
        "n_resamples": n_resamples,
        "n_feature_resamples": n_feature_resamples,
        "aoag_method": method,
        "fss_method": fss_method,
        "alpha": setup.alpha,
        "beta": setup.beta,
        "feature_resampling": feature_resampling,
        "intervals": _intervals(points[0], reps[0], level, feature_resampling),
        "notes": notes,
    }


def paired_bootstrap_difference(
    teacher_logits: ArrayLike,
    student_a_logits: ArrayLike,
    student_b_logits: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    teacher_features: ArrayLike | Sequence[ArrayLike] | None = None,
    student_a_features: ArrayLike | Sequence[ArrayLike] | None = None,
    student_b_features: ArrayLike | Sequence[ArrayLike] | None = None,
    task: str = "classification",
    alpha: float | None = None,
    beta: float | None = None,
    aoag_method: str | None = None,
    fss_method: str = "linear_cka",
    temperature: float = 1.0,
    inputs: InputKind = "logits",
    n_resamples: int = 1000,
    n_feature_resamples: int = 200,
    feature_resampling: FeatureResampling = "half",
    confidence_level: float = 0.95,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Two students on the same data: bootstrap intervals of the difference B - A, and McNemar's test.

    Both students are scored on the *same* resampled examples in every replicate, so the interval
    reflects the paired design (much narrower than comparing two separate intervals).

    Args:
        teacher_logits: ``(N, C)`` teacher logits.
        student_a_logits: ``(N, C)`` logits of student A (e.g. the plain fine-tuned baseline).
        student_b_logits: ``(N, C)`` logits of student B (e.g. the distilled student).
        labels: optional gold labels: adds accuracy differences and McNemar's test.
        teacher_features: optional teacher features (for FSS/KRS differences), with
            ``student_a_features`` and ``student_b_features``.
        student_a_features: student A's features.
        student_b_features: student B's features.
        task: preset for (α, β) and the AOAg method.
        alpha: FSS weight.
        beta: AOAg weight.
        aoag_method: ``kl``, ``js`` or ``top1``.
        fss_method: ``linear_cka`` or ``debiased_cka`` for FSS/KRS differences.
        temperature: softmax temperature.
        inputs: ``"logits"`` or ``"probabilities"``.
        n_resamples: replicates for output-based statistics.
        n_feature_resamples: replicates for FSS and KRS.
        feature_resampling: ``"half"`` or ``"bootstrap"`` for FSS and KRS (see the module notes).
        confidence_level: γ in (0, 1).
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``{"method", "confidence_level", "seed", "num_examples", "differences": {name: {"a", "b",
        "difference" (b - a), "low", "high", "replicate_mean", "n_resamples", "n_valid", "excludes_zero"}},
        "mcnemar": {...} or None, "notes"}``.  For ``mean_kl`` a negative difference favours B; for
        every other statistic a positive one does.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> t = rng.normal(size=(300, 2))
        >>> out = paired_bootstrap_difference(t, t + rng.normal(size=(300, 2)), t + 0.1 * rng.normal(size=(300, 2)),
        ...                                   n_resamples=200)
        >>> out["differences"]["aoag"]["low"] > 0
        True
    """
    method, n_resamples, n_feature_resamples, level = _check_options(
        task, aoag_method, fss_method, n_resamples, n_feature_resamples, confidence_level, seed, feature_resampling
    )
    notes: list[str] = []
    students, setup = _prepare(
        teacher_logits, [("student_a_logits", student_a_logits), ("student_b_logits", student_b_logits)], labels,
        teacher_features, [("student_a_features", student_a_features), ("student_b_features", student_b_features)],
        task, alpha, beta, method, fss_method, temperature, inputs, notes,
    )
    check_lengths([("student_a_logits", students[0].terms.shape[0]), ("student_b_logits", students[1].terms.shape[0])])
    if setup.teacher_layers is not None and setup.n // 2 < (4 if setup.debiased else 2) and feature_resampling == "half":
        raise InputError(f"Half-sampling needs at least {8 if setup.debiased else 4} examples for FSS, got {setup.n}.")
    points, reps = _run(students, setup, n_resamples, n_feature_resamples, feature_resampling, seed)
    differences = {}
    for k in points[0]:
        centred = k in _FEATURE_STATISTICS and feature_resampling == "half"
        interval = _interval(points[1][k] - points[0][k], reps[1][k] - reps[0][k], level, centred=centred)
        differences[k] = {
            "a": points[0][k],
            "b": points[1][k],
            "difference": interval.pop("estimate"),
            **interval,
            "excludes_zero": bool(interval["low"] > 0 or interval["high"] < 0),
        }
    mcnemar = None
    if students[0].correct is not None and students[1].correct is not None:
        mcnemar = mcnemar_test(students[0].correct.astype(bool), students[1].correct.astype(bool))
    return {
        "method": "percentile",
        "confidence_level": level,
        "seed": seed,
        "num_examples": setup.n,
        "n_resamples": n_resamples,
        "n_feature_resamples": n_feature_resamples,
        "feature_resampling": feature_resampling,
        "differences": differences,
        "mcnemar": mcnemar,
        "notes": notes,
    }
