"""knowledge_retention.token_agreement: per-token statistics against direct formulas, and the additive state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from knowledge_retention import InputError
from knowledge_retention.token_agreement import (
    TokenAgreementAccumulator,
    token_agreement,
    token_statistics,
)


def _data(n=40, v=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, v)) * 2, rng.normal(size=(n, v)) * 2, rng.integers(0, v, size=n)


def test_statistics_match_direct_formulas():
    t, s, y = _data()
    stats = token_statistics(t, s, y, temperature=1.7, top_k=4)
    for i in range(t.shape[0]):
        p, q = softmax(t[i] / 1.7), softmax(s[i] / 1.7)
        assert stats["kl"][i] == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-10)
        assert stats["js"][i] == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-8)
        assert stats["top1"][i] == float(np.argmax(t[i]) == np.argmax(s[i]))
        top_t, top_s = set(np.argsort(t[i])[-4:]), set(np.argsort(s[i])[-4:])
        assert stats["topk"][i] == len(top_t & top_s) / 4
        assert stats["teacher_nll"][i] == pytest.approx(-np.log(softmax(t[i])[y[i]]), rel=1e-10)  # temperature 1
        assert stats["student_nll"][i] == pytest.approx(-np.log(softmax(s[i])[y[i]]), rel=1e-10)


def test_batches_and_merges_equal_one_shot():
    t, s, y = _data(60)
    seq = np.repeat(np.arange(12), 5)
    pos = np.tile(np.arange(5), 12)
    whole = TokenAgreementAccumulator(top_k=3).update(t, s, y, sequence_ids=seq, positions=pos)
    parts = TokenAgreementAccumulator(top_k=3)
    for lo in range(0, 60, 15):  # whole sequences per batch
        other = TokenAgreementAccumulator(top_k=3).update(t[lo:lo + 15], s[lo:lo + 15], y[lo:lo + 15],
                                                          sequence_ids=seq[lo:lo + 15], positions=pos[lo:lo + 15])
        parts += other
    for average in ("token", "sequence"):
        a, b = whole.compute(average), parts.compute(average)
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert parts.n_tokens == 60 and parts.n_sequences == 12
    np.testing.assert_array_equal(parts.position_count, [12] * 5)


def test_token_and_sequence_averages():
    t, s, y = _data(9)
    seq = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])
    stats = token_statistics(t, s, y)
    token = token_agreement(t, s, y, sequence_ids=seq)
    by_seq = token_agreement(t, s, y, sequence_ids=seq, average="sequence")
    assert token["mean_kl"] == pytest.approx(stats["kl"].mean())
    assert by_seq["mean_kl"] == pytest.approx((stats["kl"][:7].mean() + stats["kl"][7:].mean()) / 2)
    nll_t = (stats["teacher_nll"][:7].mean() + stats["teacher_nll"][7:].mean()) / 2
    assert by_seq["teacher_perplexity"] == pytest.approx(math.exp(nll_t))
    assert token["perplexity_ratio"] == pytest.approx(token["teacher_perplexity"] / token["student_perplexity"])
    assert token["logprob_gap"] == pytest.approx(np.mean(stats["student_nll"] - stats["teacher_nll"]))


def test_identical_models_agree_fully():
    t, _, y = _data()
    out = token_agreement(t, t, y)
    assert out["aoag"] == 1.0 and out["mean_kl"] == 0.0 and out["top1_agreement"] == 1.0
    assert out["topk_overlap"] == 1.0 and out["perplexity_ratio"] == 1.0 and out["js"] == pytest.approx(0.0, abs=1e-12)


def test_positions_and_worst_tokens_merge():
    acc = TokenAgreementAccumulator(keep_worst=2)
    stats = {k: np.zeros(3) for k in ("exp_neg_kl", "kl", "js", "top1", "topk", "teacher_nll", "student_nll")}
    stats["top1"] = np.array([1.0, 0.0, 1.0])
    acc.add(stats, [0, 0, 1], [0, 1, 0], [{"kl": 0.5, "example": 0}, {"kl": 0.1, "example": 1}])
    other = TokenAgreementAccumulator(keep_worst=2)
    other.add(stats, [2, 2, 2], [0, 1, 2], [{"kl": 0.9, "example": 2}])
    acc += other
    assert [r["kl"] for r in acc.worst] == [0.9, 0.5]
    by_pos = acc.by_position()
    assert by_pos["count"] == [3, 2, 1] and by_pos["top1_agreement"] == [1.0, 0.0, 1.0]


def test_bad_input_is_refused():
    t, s, y = _data(4)
    with pytest.raises(InputError, match="same shape"):
        token_statistics(t, s[:, :5], y)
    with pytest.raises(InputError, match="token ids in"):
        token_statistics(t, s, y + 100)
    with pytest.raises(InputError, match="`top_k`"):
        token_statistics(t, s, y, top_k=0)
    with pytest.raises(InputError, match="at least 1 counted token"):
        TokenAgreementAccumulator().compute()
    with pytest.raises(InputError, match="different temperature"):
        acc = TokenAgreementAccumulator(temperature=2.0)
        acc += TokenAgreementAccumulator()
    with pytest.raises(InputError, match="`average`"):
        TokenAgreementAccumulator().update(t, s, y).compute("word")  # type: ignore[arg-type]
