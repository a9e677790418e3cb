"""knowledge_retention.token_agreement: per-token statistics against direct formulas, and the additive state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from knowledge_retention import InputError
from knowledge_retention.token_agreement import (
    STAT_KEYS,
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
    acc.update_statistics(stats, [0, 0, 1], [0, 1, 0], [{"kl": 0.5, "example": 0}, {"kl": 0.1, "example": 1}])
    other = TokenAgreementAccumulator(keep_worst=2)
    other.update_statistics(stats, [2, 2, 2], [0, 1, 2], [{"kl": 0.9, "example": 2}])
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


# ------------------------------------------------------------------------- the verbs of every accumulator
def _filled(seed=0, n=30, top_k=3, **options):
    t, s, y = _data(n, seed=seed)
    seq = np.repeat(np.arange(n // 5), 5)
    pos = np.tile(np.arange(5), n // 5)
    return TokenAgreementAccumulator(top_k=top_k, keep_worst=4, **options), (t, s, y, seq, pos)


def test_update_compute_reset():
    acc, (t, s, y, seq, pos) = _filled()
    acc.update(t, s, y, sequence_ids=seq, positions=pos)
    first = acc.compute()
    assert acc.reset() is acc and acc.n_tokens == 0 and acc.n_sequences == 0 and acc.worst == []
    assert (acc.top_k, acc.keep_worst) == (3, 4)  # the options are kept
    with pytest.raises(InputError, match="at least 1 counted token"):
        acc.compute()
    assert acc.update(t, s, y, sequence_ids=seq, positions=pos).compute() == first


def test_empty_batches_change_nothing():
    acc, (t, s, y, seq, pos) = _filled()
    acc.update(t, s, y, sequence_ids=seq, positions=pos)
    before = acc.state_dict()
    acc.update(t[:0], s[:0], y[:0])
    acc.update([], [], [])
    acc.update_statistics({k: np.zeros(0) for k in STAT_KEYS}, [], [])
    acc += TokenAgreementAccumulator(top_k=3)
    after = acc.state_dict()
    for key, value in before.items():
        np.testing.assert_equal(after[key], value, err_msg=key)


def test_state_dict_round_trip_and_plus():
    a, (t, s, y, seq, pos) = _filled()
    b = TokenAgreementAccumulator(top_k=3, keep_worst=4)
    a.update(t[:15], s[:15], y[:15], sequence_ids=seq[:15], positions=pos[:15])
    b.update(t[15:], s[15:], y[15:], sequence_ids=seq[15:], positions=pos[15:])
    whole = TokenAgreementAccumulator(top_k=3, keep_worst=4).update(t, s, y, sequence_ids=seq, positions=pos)
    a_state = a.state_dict()
    merged = a + b
    assert a.state_dict()["n_tokens"] == 15 and b.n_tokens == 15  # `+` leaves both operands alone
    restored = TokenAgreementAccumulator.from_state_dict(merged.state_dict())
    for average in ("token", "sequence"):
        for key, value in whole.compute(average).items():
            assert merged.compute(average)[key] == pytest.approx(value, rel=1e-12), key
            assert restored.compute(average)[key] == merged.compute(average)[key], key
    assert restored.by_position() == merged.by_position() and restored.worst == merged.worst
    copy_of_a = TokenAgreementAccumulator.from_state_dict(a_state)
    copy_of_a += b
    assert copy_of_a.compute() == merged.compute() and a.n_tokens == 15  # the state is a copy
    import pickle

    assert pickle.loads(pickle.dumps(merged)).compute() == merged.compute()


def test_add_is_a_deprecated_alias():
    stats = {k: np.full(3, 0.25) for k in STAT_KEYS}
    new = TokenAgreementAccumulator().update_statistics(stats, [0, 0, 1], [0, 1, 0])
    with pytest.warns(FutureWarning, match="update_statistics"):
        old = TokenAgreementAccumulator().add(stats, [0, 0, 1], [0, 1, 0])
    assert old.compute() == new.compute()


def test_a_damaged_state_is_refused():
    acc, (t, s, y, seq, pos) = _filled()
    state = acc.update(t, s, y, sequence_ids=seq, positions=pos).state_dict()
    damaged = [
        ({k: v for k, v in state.items() if k != "token_sums"}, "lacks"),
        ({**state, "n_tokens": -1}, "n_tokens"),
        ({**state, "n_tokens": 3.5}, "n_tokens"),
        ({**state, "n_sequences": 10**6}, "n_sequences"),
        ({**state, "token_sums": {"kl": 1.0}}, "token_sums"),
        ({**state, "position_count": state["position_count"][:-1]}, "position_count"),
        ({**state, "position_count": state["position_count"] * 2}, "position_count"),
        ({**state, "worst": [{"example": 1}]}, "worst"),
        ({**state, "measures": ["kl", "perplexity"]}, "measures"),
        ({**state, "top_k": 0}, "top_k"),
    ]
    for bad, match in damaged:
        with pytest.raises(InputError, match=match):
            TokenAgreementAccumulator.from_state_dict(bad)
    with pytest.raises(TypeError, match="must be a dict"):
        TokenAgreementAccumulator.from_state_dict([state])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Only a TokenAgreementAccumulator"):
        acc += 1  # type: ignore[operator]


def test_skipped_measures_are_nan_and_the_others_unchanged():
    t, s, y = _data(20)
    stats = token_statistics(t, s, y)
    full = TokenAgreementAccumulator().update_statistics(stats, np.zeros(20), np.arange(20)).compute()
    kl_only = TokenAgreementAccumulator(measures=["kl", "top1"])
    kl_only.update_statistics({k: stats[k] for k in ("kl", "exp_neg_kl", "top1")}, np.zeros(20), np.arange(20))
    out = kl_only.compute()
    assert out["aoag"] == full["aoag"] and out["mean_kl"] == full["mean_kl"]
    assert out["top1_agreement"] == full["top1_agreement"]
    for key in ("js", "topk_overlap", "teacher_perplexity", "logprob_gap", "perplexity_ratio"):
        assert math.isnan(out[key]), key
    with pytest.raises(InputError, match="lacks"):
        TokenAgreementAccumulator(measures=["js"]).update_statistics({"kl": stats["kl"]}, np.zeros(20), np.arange(20))
    with pytest.raises(InputError, match="different measures"):
        kl_only += TokenAgreementAccumulator()
    assert TokenAgreementAccumulator.from_state_dict(kl_only.state_dict()).measures == ("kl", "top1")
