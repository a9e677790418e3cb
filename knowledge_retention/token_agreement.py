r"""Token-level output agreement of two causal language models on the same tokens, as additive sums.

For every counted token :math:`i` (a position whose next token is a real token of the text) with
true next token :math:`y_i`, teacher and student next-token distributions
:math:`p^T_i, p^S_i = \mathrm{softmax}(z_i / T)` over one shared vocabulary of size V:

* ``aoag``           : :math:`\frac1n\sum_i \exp(-\mathrm{KL}(p^T_i \Vert p^S_i))` in [0, 1], higher is better;
* ``mean_kl``        : :math:`\frac1n\sum_i \mathrm{KL}(p^T_i \Vert p^S_i)` in nats, lower is better;
* ``js``             : :math:`\frac1n\sum_i \mathrm{JS}_2(p^T_i, p^S_i)`, Jensen-Shannon divergence in
  bits (each term in [0, 1]), lower is better;
* ``top1_agreement`` : :math:`\frac1n\sum_i [\arg\max p^T_i = \arg\max p^S_i]`;
* ``topk_overlap``   : :math:`\frac1n\sum_i |\mathrm{top}_k(p^T_i) \cap \mathrm{top}_k(p^S_i)| / k`;
* ``logprob_gap``    : :math:`\frac1n\sum_i \log q^T_i(y_i) - \log q^S_i(y_i)` in nats (teacher minus
  student; > 0 when the student gives the true token less probability), with :math:`q = \mathrm{softmax}(z)`
  at temperature 1;
* ``teacher_perplexity`` / ``student_perplexity``: :math:`\exp(-\frac1n\sum_i \log q_i(y_i))`;
* ``perplexity_ratio``: teacher perplexity / student perplexity (the retained ratio; 1 when the
  student predicts the text as well as the teacher, below 1 when worse).

``temperature`` applies to the distribution measures (KL, JS, AOAg); top-1/top-k do not depend on
it; perplexities and the log-prob gap are always at temperature 1 (they are the models' own).

Two averages: over all tokens (``average="token"``, the default: long texts weigh more) or over
sequences (``average="sequence"``: each text's mean, then the mean over texts; the perplexities
are then :math:`\exp` of the mean over texts of each text's mean NLL).

The state is a set of sums (float64), per-position sums (agreement by position in the sequence),
and a bounded list of the tokens where the two models disagree most: batches and processes merge
by ``+`` / ``+=``, and a state travels as :meth:`~TokenAgreementAccumulator.state_dict`. The heavy
per-token maths over V can run anywhere (a torch step on the models' device does it in
:mod:`knowledge_retention.extraction.token_step`); :func:`token_statistics` is the NumPy reference,
:meth:`TokenAgreementAccumulator.update` takes logits directly and
:meth:`~TokenAgreementAccumulator.update_statistics` the per-token values of such a step.

Measures can be skipped (``measures=``, a subset of :data:`TOKEN_MEASURES`): the per-token values of a
measure that did not run are NaN, and so is everything computed from them (``compute`` returns NaN
for them, never a number that was not measured).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import log_softmax

from ._validation import InputError, InputTypeError, as_float_array, check_choice, check_positive
from .agreement import js_divergence_rows, kl_divergence_rows

__all__ = [
    "MEASURE_KEYS",
    "STAT_KEYS",
    "TOKEN_AVERAGES",
    "TOKEN_MEASURES",
    "TokenAgreementAccumulator",
    "TokenAverage",
    "recorded_token_statistics",
    "resolve_measures",
    "token_agreement",
    "token_statistics",
]

TokenAverage = Literal["token", "sequence"]
TOKEN_AVERAGES: tuple[str, ...] = ("token", "sequence")

#: Per-token statistics summed by the accumulator (each an ``(n,)`` array in :func:`token_statistics`).
STAT_KEYS: tuple[str, ...] = ("exp_neg_kl", "kl", "js", "top1", "topk", "teacher_nll", "student_nll")
#: The measures a per-token step can compute or skip (``measures=``).
TOKEN_MEASURES: tuple[str, ...] = ("kl", "js", "top1", "topk", "nll")
#: The :data:`STAT_KEYS` each measure fills (``kl`` also gives AOAg; ``nll`` the perplexities and the log-prob gap).
MEASURE_KEYS: dict[str, tuple[str, ...]] = {
    "kl": ("exp_neg_kl", "kl"), "js": ("js",), "top1": ("top1",), "topk": ("topk",),
    "nll": ("teacher_nll", "student_nll"),
}


def resolve_measures(measures: Iterable[str] | str | None) -> tuple[str, ...]:
    """The requested measures in :data:`TOKEN_MEASURES` order (``None``: all of them).

    Raises:
        InputError: an unknown name, or no measure at all.

    Example:
        >>> resolve_measures(["top1", "kl"])
        ('kl', 'top1')
    """
    if measures is None:
        return TOKEN_MEASURES
    names = (measures,) if isinstance(measures, str) else tuple(measures)
    unknown = [m for m in names if m not in TOKEN_MEASURES]
    if unknown or not names:
        raise InputError(f"`measures` must be a non-empty subset of {list(TOKEN_MEASURES)}, got {list(names)!r}.")
    return tuple(m for m in TOKEN_MEASURES if m in names)


def token_statistics(
    teacher_logits: Any, student_logits: Any, targets: Any, *, temperature: float = 1.0, top_k: int = 5
) -> dict[str, np.ndarray]:
    """Per-token statistics from ``(n, V)`` logits and the ``(n,)`` true next tokens (NumPy reference).

    Returns:
        ``{key: (n,) float64}`` for every key of :data:`STAT_KEYS`, plus ``teacher_top1`` and
        ``student_top1`` (``(n,)`` int64 argmax ids).

    Example:
        >>> stats = token_statistics([[2.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]], [0], top_k=2)
        >>> stats["kl"].tolist(), stats["top1"].tolist(), stats["topk"].tolist()
        ([0.0], [1.0], [1.0])
    """
    t = as_float_array(teacher_logits, "teacher_logits", ndim=2, min_rows=0)
    s = as_float_array(student_logits, "student_logits", ndim=2, min_rows=0)
    if t.shape != s.shape:
        raise InputError(f"`teacher_logits` and `student_logits` must have the same shape (n, V), got {t.shape} and {s.shape}.")
    y = np.asarray(targets, dtype=np.int64).reshape(-1)
    if y.shape[0] != t.shape[0]:
        raise InputError(f"`targets` must hold one token id per row ({t.shape[0]}), got {y.shape[0]}.")
    if y.size and (y.min() < 0 or y.max() >= t.shape[1]):
        raise InputError(f"`targets` must be token ids in [0, {t.shape[1]}), got values in [{y.min()}, {y.max()}].")
    top_k = _check_top_k(top_k, t.shape[1])
    temperature = check_positive(temperature, "temperature")
    log_t, log_s = log_softmax(t / temperature, axis=1), log_softmax(s / temperature, axis=1)
    kl = kl_divergence_rows(log_t, log_s)
    nll_t = -log_softmax(t, axis=1)[np.arange(y.size), y]
    nll_s = -log_softmax(s, axis=1)[np.arange(y.size), y]
    # top-k by a stable sort of -logits: ties go to the lower id, as torch.topk on distinct values
    k_t = np.argsort(-t, axis=1, kind="stable")[:, :top_k]
    k_s = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
    overlap = np.array([len(set(a) & set(b)) for a, b in zip(k_t.tolist(), k_s.tolist(), strict=True)], dtype=np.float64)
    return {
        "exp_neg_kl": np.exp(-kl),
        "kl": kl,
        "js": js_divergence_rows(log_t, log_s),
        "top1": (k_t[:, 0] == k_s[:, 0]).astype(np.float64),
        "topk": overlap / top_k,
        "teacher_nll": nll_t,
        "student_nll": nll_s,
        "teacher_top1": k_t[:, 0].astype(np.int64),
        "student_top1": k_s[:, 0].astype(np.int64),
    }


def _check_top_k(top_k: Any, vocab: int | None = None) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InputError(f"`top_k` must be a positive int, got {top_k!r}.")
    if vocab is not None and top_k > vocab:
        raise InputError(f"`top_k` ({top_k}) cannot exceed the vocabulary size ({vocab}).")
    return int(top_k)


def _zeros() -> dict[str, float]:
    return dict.fromkeys(STAT_KEYS, 0.0)


def _count(state: Mapping[str, Any], key: str) -> int:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"`state['{key}']` must be a non-negative int, got {value!r}.")
    return int(value)


@dataclass
class TokenAgreementAccumulator:
    """Additive state of the token-level measures (see the module docstring).

    The verbs of every accumulator of the package: :meth:`update` (a batch of logits),
    :meth:`update_statistics` (a batch of per-token values), :meth:`compute`, :meth:`reset`,
    :meth:`state_dict` / :meth:`from_state_dict`, and ``+`` / ``+=`` to merge batches or processes.
    An empty batch changes nothing.

    Args:
        temperature: softmax temperature of the distribution measures (KL, JS, AOAg).
        top_k: the k of ``topk_overlap``.
        keep_worst: how many of the tokens with the largest KL to keep (for the report).
        measures: the measures summed (a subset of :data:`TOKEN_MEASURES`; None: all). The others are NaN.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> t, s = rng.normal(size=(6, 10)), rng.normal(size=(6, 10))
        >>> y = rng.integers(0, 10, size=6)
        >>> a = TokenAgreementAccumulator().update(t[:4], s[:4], y[:4])
        >>> a += TokenAgreementAccumulator().update(t[4:], s[4:], y[4:], sequence_ids=[1, 1])
        >>> b = TokenAgreementAccumulator().update(t, s, y)
        >>> bool(np.isclose(a.compute()["aoag"], b.compute()["aoag"]))
        True
        >>> c = TokenAgreementAccumulator.from_state_dict(a.state_dict())
        >>> c.compute() == a.compute(), c.reset().n_tokens
        (True, 0)
    """

    temperature: float = 1.0
    top_k: int = 5
    keep_worst: int = 20
    n_tokens: int = 0
    n_sequences: int = 0
    token_sums: dict[str, float] = field(default_factory=_zeros)
    sequence_sums: dict[str, float] = field(default_factory=_zeros)  # sums over sequences of sequence means
    position_count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    position_top1: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    position_exp_neg_kl: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    worst: list[dict[str, Any]] = field(default_factory=list)
    measures: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.temperature = check_positive(self.temperature, "temperature")
        self.top_k = _check_top_k(self.top_k)
        if isinstance(self.keep_worst, bool) or not isinstance(self.keep_worst, (int, np.integer)) or self.keep_worst < 0:
            raise InputError(f"`keep_worst` must be a non-negative int, got {self.keep_worst!r}.")
        self.keep_worst = int(self.keep_worst)
        self.measures = resolve_measures(self.measures)

    @property
    def stat_keys(self) -> tuple[str, ...]:
        """The :data:`STAT_KEYS` of the measures this state sums."""
        return tuple(key for m in resolve_measures(self.measures) for key in MEASURE_KEYS[m])

    def update_statistics(
        self,
        stats: Mapping[str, Any],
        sequence_ids: Any,
        positions: Any,
        worst: list[dict[str, Any]] | None = None,
    ) -> TokenAgreementAccumulator:
        """Adds precomputed per-token statistics (``{key: (n,)}`` for the :attr:`stat_keys`; others are NaN).

        Args:
            stats: per-token values, e.g. from :func:`token_statistics` or the extraction's torch step.
            sequence_ids: ``(n,)`` which sequence each token belongs to; every sequence's tokens
                must all be in this one call (a sequence is never split across calls).
            positions: ``(n,)`` the token's index among its sequence's counted tokens (0 = first).
            worst: candidate records for the largest-KL list (each with a ``kl`` key).
        """
        missing = [key for key in self.stat_keys if key not in stats]
        if missing:
            raise InputError(f"`stats` lacks {missing} (measures {list(self.measures or ())}).")
        seq = np.asarray(sequence_ids).reshape(-1)
        n = seq.shape[0]
        values = {key: (np.asarray(stats[key], dtype=np.float64).reshape(-1) if key in self.stat_keys
                        else np.full(n, np.nan)) for key in STAT_KEYS}
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.shape[0] != n or any(v.shape[0] != n for v in values.values()):
            raise InputError(f"Every per-token array must have {n} entries (one per token).")
        if n == 0:
            return self
        if pos.min() < 0:
            raise InputError(f"`positions` must be >= 0, got {int(pos.min())}.")
        self.n_tokens += n
        for key, v in values.items():
            self.token_sums[key] += float(np.sum(v))
        _, group = np.unique(seq, return_inverse=True)
        counts = np.bincount(group).astype(np.float64)
        self.n_sequences += counts.shape[0]
        for key, v in values.items():
            self.sequence_sums[key] += float(np.sum(np.bincount(group, weights=v) / counts))
        size = int(pos.max()) + 1
        self._grow(size)
        self.position_count[:size] += np.bincount(pos, minlength=size)
        self.position_top1[:size] += np.bincount(pos, weights=values["top1"], minlength=size)
        self.position_exp_neg_kl[:size] += np.bincount(pos, weights=values["exp_neg_kl"], minlength=size)
        if worst:
            self._keep(worst)
        return self

    def add(
        self,
        stats: Mapping[str, Any],
        sequence_ids: Any,
        positions: Any,
        worst: list[dict[str, Any]] | None = None,
    ) -> TokenAgreementAccumulator:
        """The former name of :meth:`update_statistics` (FutureWarning)."""
        warnings.warn("TokenAgreementAccumulator.add is deprecated; use update_statistics.", FutureWarning, stacklevel=2)
        return self.update_statistics(stats, sequence_ids, positions, worst)

    def update(
        self,
        teacher_logits: Any,
        student_logits: Any,
        targets: Any,
        *,
        sequence_ids: Any = None,
        positions: Any = None,
    ) -> TokenAgreementAccumulator:
        """Adds tokens from ``(n, V)`` logits and ``(n,)`` targets (default: all one sequence, positions 0..n-1).

        An empty batch (no rows) changes nothing.
        """
        if np.size(teacher_logits) == 0 and np.size(student_logits) == 0 and np.size(targets) == 0:
            return self
        stats = token_statistics(teacher_logits, student_logits, targets, temperature=self.temperature, top_k=self.top_k)
        n = stats["kl"].shape[0]
        seq = np.zeros(n, dtype=np.int64) if sequence_ids is None else sequence_ids
        pos = np.arange(n) if positions is None else positions
        return self.update_statistics(stats, seq, pos)

    def _grow(self, size: int) -> None:
        if self.position_count.shape[0] < size:
            extra = size - self.position_count.shape[0]
            self.position_count = np.concatenate([self.position_count, np.zeros(extra, dtype=np.int64)])
            self.position_top1 = np.concatenate([self.position_top1, np.zeros(extra)])
            self.position_exp_neg_kl = np.concatenate([self.position_exp_neg_kl, np.zeros(extra)])

    def _keep(self, records: list[dict[str, Any]]) -> None:
        merged = self.worst + list(records)
        merged.sort(key=lambda r: (-float(r["kl"]), r.get("example", 0), r.get("position", 0)))
        self.worst = merged[: self.keep_worst]

    def __iadd__(self, other: TokenAgreementAccumulator) -> TokenAgreementAccumulator:
        if not isinstance(other, TokenAgreementAccumulator):
            raise InputTypeError(f"Only a TokenAgreementAccumulator can be added to one, got {type(other).__name__}.")
        if (self.temperature, self.top_k) != (other.temperature, other.top_k):
            raise InputError("Cannot merge token-agreement states computed with a different temperature or top_k.")
        if self.measures != other.measures:
            raise InputError(f"Cannot merge token-agreement states of different measures: {list(self.measures or ())} "
                             f"and {list(other.measures or ())}.")
        self.n_tokens += other.n_tokens
        self.n_sequences += other.n_sequences
        for key in STAT_KEYS:
            self.token_sums[key] += other.token_sums[key]
            self.sequence_sums[key] += other.sequence_sums[key]
        size = other.position_count.shape[0]
        self._grow(size)
        self.position_count[:size] += other.position_count
        self.position_top1[:size] += other.position_top1
        self.position_exp_neg_kl[:size] += other.position_exp_neg_kl
        self._keep(other.worst)
        return self

    def __add__(self, other: TokenAgreementAccumulator) -> TokenAgreementAccumulator:
        return copy.deepcopy(self).__iadd__(other)

    def reset(self) -> TokenAgreementAccumulator:
        """Forgets every token (the options are kept)."""
        fresh = TokenAgreementAccumulator(temperature=self.temperature, top_k=self.top_k, keep_worst=self.keep_worst,
                                          measures=self.measures)
        self.__dict__.update(fresh.__dict__)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The options, counts, sums, per-position sums and the worst tokens (plain Python and NumPy values)."""
        return {
            "temperature": self.temperature, "top_k": self.top_k, "keep_worst": self.keep_worst,
            "measures": list(self.measures or ()), "n_tokens": self.n_tokens, "n_sequences": self.n_sequences,
            "token_sums": dict(self.token_sums), "sequence_sums": dict(self.sequence_sums),
            "position_count": self.position_count.copy(), "position_top1": self.position_top1.copy(),
            "position_exp_neg_kl": self.position_exp_neg_kl.copy(), "worst": copy.deepcopy(self.worst),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> TokenAgreementAccumulator:
        """Inverse of :meth:`state_dict`; a damaged state is refused naming the entry (:class:`InputError`)."""
        if not isinstance(state, Mapping):
            raise InputTypeError(f"A TokenAgreementAccumulator state must be a dict, got {type(state).__name__}.")
        missing = [k for k in ("temperature", "top_k", "n_tokens", "n_sequences", "token_sums", "sequence_sums",
                               "position_count", "position_top1", "position_exp_neg_kl") if k not in state]
        if missing:
            raise InputError(f"The TokenAgreementAccumulator state lacks {missing}.")
        acc = cls(temperature=state["temperature"], top_k=state["top_k"], keep_worst=state.get("keep_worst", 20),
                  measures=state.get("measures") or None)
        acc.n_tokens, acc.n_sequences = _count(state, "n_tokens"), _count(state, "n_sequences")
        if acc.n_sequences > acc.n_tokens:
            raise InputError(f"`state['n_sequences']` ({acc.n_sequences}) cannot exceed `state['n_tokens']` ({acc.n_tokens}).")
        for name in ("token_sums", "sequence_sums"):
            sums = state[name]
            if not isinstance(sums, Mapping) or set(sums) != set(STAT_KEYS):
                raise InputError(f"`state['{name}']` must map each of {list(STAT_KEYS)} to a float.")
            try:
                setattr(acc, name, {key: float(sums[key]) for key in STAT_KEYS})
            except (TypeError, ValueError) as err:
                raise InputError(f"`state['{name}']` must map each of {list(STAT_KEYS)} to a float: {err}") from err
        arrays = [np.asarray(state[k]) for k in ("position_count", "position_top1", "position_exp_neg_kl")]
        if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays) or not all(
                np.issubdtype(a.dtype, np.number) for a in arrays):
            raise InputError("`state['position_count']`, `state['position_top1']` and `state['position_exp_neg_kl']` "
                             "must be 1-D numeric arrays of one length.")
        if arrays[0].size and (arrays[0].min() < 0 or int(arrays[0].sum()) != acc.n_tokens):
            raise InputError(f"`state['position_count']` must be counts summing to n_tokens ({acc.n_tokens}).")
        acc.position_count = arrays[0].astype(np.int64)
        acc.position_top1, acc.position_exp_neg_kl = arrays[1].astype(np.float64), arrays[2].astype(np.float64)
        worst = state.get("worst", [])
        if not isinstance(worst, list) or not all(isinstance(r, Mapping) and "kl" in r for r in worst):
            raise InputError("`state['worst']` must be a list of records with a 'kl' entry.")
        acc.worst = copy.deepcopy([dict(r) for r in worst])
        return acc

    def compute(self, average: TokenAverage = "token") -> dict[str, float]:
        """The measures of the module docstring, averaged over tokens or over sequences."""
        check_choice(average, "average", TOKEN_AVERAGES)
        if self.n_tokens == 0:
            raise InputError(
                "Token agreement needs at least 1 counted token, got 0 (every text is a single token, or all "
                "tokens are prompt tokens)."
            )
        sums, n = (self.token_sums, self.n_tokens) if average == "token" else (self.sequence_sums, self.n_sequences)
        mean = {key: sums[key] / n for key in STAT_KEYS}
        t_ppl, s_ppl = math.exp(mean["teacher_nll"]), math.exp(mean["student_nll"])
        return {
            "aoag": mean["exp_neg_kl"],
            "mean_kl": mean["kl"],
            "js": mean["js"],
            "top1_agreement": mean["top1"],
            "topk_overlap": mean["topk"],
            "logprob_gap": mean["student_nll"] - mean["teacher_nll"],
            "teacher_nll": mean["teacher_nll"],
            "student_nll": mean["student_nll"],
            "teacher_perplexity": t_ppl,
            "student_perplexity": s_ppl,
            "perplexity_ratio": math.exp(mean["teacher_nll"] - mean["student_nll"]),
        }

    def by_position(self) -> dict[str, list[float]]:
        """Top-1 agreement and mean exp(-KL) at each position (index among a text's counted tokens)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "count": self.position_count.tolist(),
                "top1_agreement": (self.position_top1 / self.position_count).tolist(),
                "aoag": (self.position_exp_neg_kl / self.position_count).tolist(),
            }


def token_agreement(
    teacher_logits: Any,
    student_logits: Any,
    targets: Any,
    *,
    sequence_ids: Any = None,
    temperature: float = 1.0,
    top_k: int = 5,
    average: TokenAverage = "token",
) -> dict[str, float]:
    """One-shot token-level measures from ``(n, V)`` logits: ``TokenAgreementAccumulator().update(...).compute()``.

    Example:
        >>> out = token_agreement([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [0, 0], top_k=1)
        >>> out["aoag"], out["top1_agreement"], out["perplexity_ratio"]
        (1.0, 1.0, 1.0)
    """
    acc = TokenAgreementAccumulator(temperature=temperature, top_k=top_k)
    if sequence_ids is not None:
        seq = np.asarray(sequence_ids).reshape(-1)
        positions = np.zeros(seq.shape[0], dtype=np.int64)
        for value in np.unique(seq):
            where = np.flatnonzero(seq == value)
            positions[where] = np.arange(where.size)
        return acc.update(teacher_logits, student_logits, targets, sequence_ids=seq, positions=positions).compute(average)
    return acc.update(teacher_logits, student_logits, targets).compute(average)


# ------------------------------------------------------------------------------ a recorded teacher
def recorded_token_statistics(
    teacher_ids: Any,
    teacher_logprobs: Any,
    teacher_tail: Any,
    student_logits: Any,
    targets: Any,
    *,
    teacher_target_logprob: Any = None,
    top_k: int = 5,
    measures: Iterable[str] | str | None = None,
) -> dict[str, np.ndarray]:
    r"""Per-token statistics against a teacher recorded as its top-k tokens (NumPy reference).

    A recorded teacher is, for each counted token, its k most probable next tokens :math:`I` (sorted by
    probability, a tie at the top going to the lowest id), their log-probabilities :math:`\log p_j` and the
    log of the remaining mass :math:`\log p_\text{tail} = \log(1 - \sum_{j \in I} p_j)` (``-inf`` when
    k = V), all at temperature 1. The student's distribution :math:`q` is grouped into the same k + 1
    buckets (:math:`q_j` for :math:`j \in I`, :math:`q_\text{tail} = \sum_{v \notin I} q_v`) and:

    * ``kl`` / ``js`` are those of the two (k + 1)-bucket distributions. Grouping outcomes never
      increases an f-divergence, so they are **lower bounds** of the full-vocabulary KL and JS, and
      ``exp_neg_kl`` (AOAg) an **upper bound**; with k = V they are the full ones;
    * ``top1`` is exact (the teacher's argmax is the first recorded id);
    * ``topk`` is exact for ``top_k <= k`` and NaN otherwise (the teacher's top ``top_k`` are unknown);
    * ``teacher_nll`` is ``-teacher_target_logprob`` (the recorded log-probability of the true token),
      ``student_nll`` the student's own: both exact.

    Args:
        teacher_ids: ``(n, k)`` recorded token ids (distinct in each row).
        teacher_logprobs: ``(n, k)`` their log-probabilities under the teacher.
        teacher_tail: ``(n,)`` log of the teacher's mass outside ``teacher_ids`` (``-inf``: none).
        student_logits: ``(n, V)`` the student's logits.
        targets: ``(n,)`` the true next tokens.
        teacher_target_logprob: ``(n,)`` the teacher's log-probability of each target (needed for ``nll``).
        top_k: the k of the top-k overlap.
        measures: which of :data:`TOKEN_MEASURES` to compute (default: all).

    Returns:
        ``{key: (n,) float64}`` for the keys of the measures, ``teacher_top1`` / ``student_top1`` (int64)
        with ``top1``, and ``teacher_tail_mass`` (:math:`p_\text{tail}`) always.

    Raises:
        InputError: shapes that disagree, ids out of range or repeated in a row, log-probabilities above 0
            or whose masses (the tail included) do not sum to 1 within 1e-2 (a damaged recording).

    Example:
        >>> import numpy as np
        >>> from scipy.special import log_softmax
        >>> t = np.array([[3.0, 1.0, 0.0, -1.0]]); s = np.array([[2.0, 2.0, 0.0, -1.0]])
        >>> lt = log_softmax(t, axis=1); ids = np.argsort(-lt, axis=1)[:, :2]
        >>> tail = np.log(1 - np.exp(np.take_along_axis(lt, ids, 1)).sum(1))
        >>> rec = recorded_token_statistics(ids, np.take_along_axis(lt, ids, 1), tail, s, [0],
        ...                                 teacher_target_logprob=lt[:, 0], top_k=2)
        >>> live = token_statistics(t, s, [0], top_k=2)
        >>> bool(rec["kl"][0] <= live["kl"][0]), bool(rec["top1"][0] == live["top1"][0])
        (True, True)
    """
    wanted = resolve_measures(measures)
    s = as_float_array(student_logits, "student_logits", ndim=2, min_rows=0)
    n, vocab = s.shape
    ids, log_p, log_tail = _recorded_teacher(teacher_ids, teacher_logprobs, teacher_tail, n, vocab)
    y = np.asarray(targets, dtype=np.int64).reshape(-1)
    if y.shape[0] != n:
        raise InputError(f"`targets` must hold one token id per row ({n}), got {y.shape[0]}.")
    if y.size and (y.min() < 0 or y.max() >= vocab):
        raise InputError(f"`targets` must be token ids in [0, {vocab}), got values in [{y.min()}, {y.max()}].")
    top_k = _check_top_k(top_k, vocab)
    log_q = log_softmax(s, axis=1)
    rows = np.arange(n)[:, None]
    out: dict[str, np.ndarray] = {"teacher_tail_mass": np.exp(log_tail)}
    if "kl" in wanted or "js" in wanted:
        outside = np.ones((n, vocab), dtype=bool)
        outside[rows, ids] = False
        with np.errstate(divide="ignore"):  # an empty tail (k = V): log 0 = -inf
            q_tail = np.log(np.sum(np.where(outside, np.exp(log_q), 0.0), axis=1))
        bucket_p = np.concatenate([log_p, log_tail[:, None]], axis=1)
        bucket_q = np.concatenate([log_q[rows, ids], q_tail[:, None]], axis=1)
        if "kl" in wanted:
            kl = np.maximum(kl_divergence_rows(bucket_p, bucket_q), 0.0)
            out["kl"], out["exp_neg_kl"] = kl, np.exp(-kl)
        if "js" in wanted:
            out["js"] = js_divergence_rows(bucket_p, bucket_q)
    if "top1" in wanted:
        out["teacher_top1"], out["student_top1"] = ids[:, 0].copy(), np.argmax(s, axis=1).astype(np.int64)
        out["top1"] = (out["teacher_top1"] == out["student_top1"]).astype(np.float64)
    if "topk" in wanted:
        if top_k > ids.shape[1]:
            out["topk"] = np.full(n, np.nan)
        else:
            k_s = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
            out["topk"] = np.array([len(set(a) & set(b)) for a, b in zip(ids[:, :top_k].tolist(), k_s.tolist(),
                                                                          strict=True)], dtype=np.float64) / top_k
    if "nll" in wanted:
        if teacher_target_logprob is None:
            raise InputError("`teacher_target_logprob` is needed for the log-likelihood measures ('nll').")
        target_lp = as_float_array(teacher_target_logprob, "teacher_target_logprob", ndim=1, min_rows=0)
        if target_lp.shape[0] != n:
            raise InputError(f"`teacher_target_logprob` must hold one value per row ({n}), got {target_lp.shape[0]}.")
        out["teacher_nll"], out["student_nll"] = -target_lp, -log_q[np.arange(n), y]
    return out


def _recorded_teacher(ids: Any, logprobs: Any, tail: Any, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(ids (n, k) int64, log-probs (n, k) float64, log tail (n,) float64)``."""
    ids_a = np.asarray(ids)
    if ids_a.ndim != 2 or ids_a.shape[0] != n or ids_a.shape[1] < 1 or not np.issubdtype(ids_a.dtype, np.integer):
        raise InputError(f"`teacher_ids` must be an (n, k) int array with n = {n} rows and k >= 1, got "
                         f"{ids_a.dtype} of shape {ids_a.shape}.")
    ids_a = ids_a.astype(np.int64)
    k = ids_a.shape[1]
    if k > vocab:
        raise InputError(f"`teacher_ids` records k = {k} tokens per row, more than the vocabulary ({vocab}).")
    if ids_a.size and (ids_a.min() < 0 or ids_a.max() >= vocab):
        raise InputError(f"`teacher_ids` must be token ids in [0, {vocab}), got values in [{ids_a.min()}, {ids_a.max()}].")
    ordered = np.sort(ids_a, axis=1)
    if np.any(ordered[:, 1:] == ordered[:, :-1]):
        raise InputError("`teacher_ids` repeats a token id within a row (a damaged recording).")
    log_p = as_float_array(logprobs, "teacher_logprobs", ndim=2, min_rows=0)
    if log_p.shape != ids_a.shape:
        raise InputError(f"`teacher_logprobs` must have the shape of `teacher_ids` {ids_a.shape}, got {log_p.shape}.")
    log_tail = np.asarray(tail, dtype=np.float64).reshape(-1)
    if log_tail.shape[0] != n or np.isnan(log_tail).any() or np.isposinf(log_tail).any():
        raise InputError(f"`teacher_tail` must hold one log-mass (a number or -inf) per row ({n}).")
    if n and (log_p.max() > 1e-3 or log_tail.max() > 1e-3):
        raise InputError("`teacher_logprobs` and `teacher_tail` must be log-probabilities (<= 0).")
    log_p, log_tail = np.minimum(log_p, 0.0), np.minimum(log_tail, 0.0)
    if n:
        total = np.logaddexp(np.logaddexp.reduce(log_p, axis=1), log_tail)
        if np.abs(total).max() > 1e-2:
            raise InputError(f"The recorded masses (top {k} and tail) must sum to 1; a row sums to "
                             f"{np.exp(total[np.argmax(np.abs(total))]):.4f} (a damaged recording).")
    return ids_a, log_p, log_tail
