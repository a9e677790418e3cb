r"""Confidence intervals for a causal-LM pair: the bootstrap over texts, tokens kept together.

The tokens of one text are not independent draws, so the resampling unit is the text (a cluster
bootstrap, Davison & Hinkley 1997, §3.8): replicate r gives text i the multiplicity :math:`w_{ri}`
and every counted token (or FSS row) of text i that weight. Then, per replicate,

.. math::

    \mathrm{AOAg}^*_r = \frac{\sum_j w_{r,e(j)}\, a_j}{\sum_j w_{r,e(j)}}, \qquad
    \mathrm{FSS}^*_r = \tfrac1L \textstyle\sum_{(t,s)} \mathrm{CKA}_{w_r}(H^T_t, H^S_s), \qquad
    \mathrm{KRS}^*_r = \alpha\,\mathrm{FSS}^*_r + \beta\,\mathrm{AOAg}^*_r

with :math:`a_j` the token's agreement (``exp(-KL)``, ``1 - JS`` or top-1 match; token average)
and the weighted linear CKA of :class:`~knowledge_retention.similarity.LinearCKAAccumulator`
(``sample_weight``). The schemes and the interval rules are those of
:func:`~knowledge_retention.diagnostics.bootstrap_confidence_intervals`: percentile intervals for the
output statistics, and for FSS/KRS half-sampling of the texts with the centred interval by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import InputError
from ..similarity import LinearCKAAccumulator
from .bootstrap import _half_samples, _interval, _resample_counts

__all__ = ["token_bootstrap_intervals"]

_AGREEMENT = {"kl": "exp_neg_kl", "js": "js", "top1": "top1"}


def _weighted_cka(teacher: np.ndarray, student: np.ndarray, weights: np.ndarray, debiased: bool) -> float:
    acc = LinearCKAAccumulator(track_debiased=debiased)
    keep = weights > 0
    acc.update(teacher[keep], student[keep], sample_weight=weights[keep])
    try:
        return float(acc.compute(debiased=debiased)) if debiased else float(acc.compute())
    except ValueError:
        return float("nan")


def token_bootstrap_intervals(
    result: Any,
    *,
    n_resamples: int = 1000,
    n_feature_resamples: int = 200,
    feature_resampling: str = "half",
    confidence_level: float = 0.95,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Intervals for AOAg, top-1 agreement, FSS and KRS of a causal-LM ``ExtractionResult``.

    Args:
        result: an :class:`~knowledge_retention.extraction.ExtractionResult` of ``task="causal-lm"`` made
            with ``keep_arrays=True`` (its ``lm["rows"]`` and the paired layers' rows).
        n_resamples: replicates of the output statistics (default 1000).
        n_feature_resamples: replicates of FSS and KRS (default 200; each costs one weighted CKA per pair).
        feature_resampling: ``"half"`` (half of the texts without replacement, centred interval; default)
            or ``"bootstrap"`` (multinomial over texts, percentile interval).
        confidence_level: in (0, 1).
        seed: seed of the generator (same seed, same intervals).

    Returns:
        The layout of :func:`~knowledge_retention.diagnostics.bootstrap_confidence_intervals`
        (``intervals`` with ``aoag``, ``top1_agreement``, ``fss``, ``krs``), resampling texts.

    Raises:
        InputError: not a causal-LM result with kept arrays, an option out of range, fewer than 4 texts.
    """
    lm = getattr(result, "lm", None)
    if not lm or lm.get("rows") is None or result.teacher_features is None:
        raise InputError("`result` must be a task='causal-lm' result made with keep_arrays=True (its per-token rows).")
    if feature_resampling not in ("half", "bootstrap"):
        raise InputError(f"`feature_resampling` must be 'half' or 'bootstrap', got {feature_resampling!r}.")
    if not 0 < confidence_level < 1:
        raise InputError(f"`confidence_level` must lie in (0, 1), got {confidence_level!r}.")
    for name, value in (("n_resamples", n_resamples), ("n_feature_resamples", n_feature_resamples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"`{name}` must be a positive int, got {value!r}.")
    if lm.get("average", "token") != "token":
        raise InputError("Intervals are computed for average='token' results (the agreement is a mean over tokens).")
    rows = lm["rows"]
    method = result.aoag_method
    values = np.asarray(rows[_AGREEMENT[method]], dtype=np.float64)
    if method == "js":
        values = 1.0 - values
    texts, token_text = np.unique(rows["token_example"], return_inverse=True)
    row_text = np.searchsorted(texts, rows["row_example"])
    n = texts.size
    if n < 4:
        raise InputError(f"Intervals need at least 4 texts with counted tokens, got {n}.")
    rng = np.random.default_rng(seed)
    top1 = np.asarray(rows["top1"], dtype=np.float64)
    reps: dict[str, list[float]] = {"aoag": [], "top1_agreement": []}
    for weights in _resample_counts(n, int(n_resamples), rng):
        w = weights[:, token_text].astype(np.float64)
        total = w.sum(axis=1)
        reps["aoag"].extend((w @ values) / total)
        reps["top1_agreement"].extend((w @ top1) / total)
    debiased = result.fss_method == "debiased_cka"
    sampler = _half_samples if feature_resampling == "half" else _resample_counts
    fss_reps, krs_reps = [], []
    for weights in sampler(n, int(n_feature_resamples), rng):
        for w_text in weights:
            w_rows = w_text[row_text]
            scores = [_weighted_cka(t, s, w_rows, debiased) for t, s in
                      zip(result.teacher_features, result.student_features, strict=True)]
            fss = float(np.mean(np.clip(scores, 0.0, 1.0) if debiased else scores))
            w_tok = w_text[token_text].astype(np.float64)
            aoag = float(w_tok @ values / w_tok.sum())
            fss_reps.append(fss)
            krs_reps.append(result.alpha * fss + result.beta * aoag)
    points = {"aoag": float(np.mean(values)), "top1_agreement": float(np.mean(top1)), "fss": result.fss,
              "krs": result.krs}
    arrays = {"aoag": np.asarray(reps["aoag"]), "top1_agreement": np.asarray(reps["top1_agreement"]),
              "fss": np.asarray(fss_reps), "krs": np.asarray(krs_reps)}
    centred = feature_resampling == "half"
    return {
        "method": "percentile", "confidence_level": confidence_level, "seed": seed, "num_examples": int(n),
        "resampling_unit": "text", "n_resamples": int(n_resamples), "n_feature_resamples": int(n_feature_resamples),
        "aoag_method": method, "fss_method": result.fss_method, "alpha": result.alpha, "beta": result.beta,
        "feature_resampling": feature_resampling,
        "intervals": {k: _interval(points[k], arrays[k], confidence_level, centred=centred and k in ("fss", "krs"))
                      for k in points},
        "notes": ["Texts are resampled (their tokens together): the tokens of a text are not independent draws."],
    }
