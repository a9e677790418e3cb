"""knowledge_retention.extraction.token_step: the one-pass per-token step against the NumPy reference,
against the step of commit e97f089 it replaces, block by block, measure by measure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from knowledge_retention import InputError  # noqa: E402
from knowledge_retention.extraction import token_step as module  # noqa: E402
from knowledge_retention.extraction.token_step import measure_keys, token_step  # noqa: E402
from knowledge_retention.token_agreement import STAT_KEYS, TOKEN_MEASURES, token_statistics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _old_step():
    """The step of commit e97f089, as the cost benchmark keeps it."""
    spec = importlib.util.spec_from_file_location("lm_cost_benchmark", ROOT / "benchmarks" / "lm_cost.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench._token_step_e97f089


def _logits(n=37, v=300, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    zt = torch.randn(n, v, generator=gen) * scale
    zs = zt * 0.7 + torch.randn(n, v, generator=gen) * scale * 0.5  # correlated: some top-1/top-k matches
    y = torch.randint(0, v, (n,), generator=gen)
    return zt, zs, y


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("top_k", [1, 4])
def test_matches_the_numpy_reference(temperature, top_k):
    zt, zs, y = _logits()
    out = token_step(zt, zs, y, temperature=temperature, top_k=top_k)
    ref = token_statistics(zt.double().numpy(), zs.double().numpy(), y.numpy(), temperature=temperature, top_k=top_k)
    assert set(out) == set(STAT_KEYS) | {"teacher_top1", "student_top1"}
    for key in ("kl", "exp_neg_kl", "js", "teacher_nll", "student_nll"):
        np.testing.assert_allclose(out[key].double().numpy(), ref[key], rtol=2e-5, atol=2e-6, err_msg=key)
    for key in ("top1", "topk", "teacher_top1", "student_top1"):
        np.testing.assert_array_equal(out[key].numpy(), ref[key], err_msg=key)
    assert 0 < out["top1"].sum() < y.shape[0]  # the data has both matches and misses


@pytest.mark.parametrize("temperature", [1.0, 1.5])
@pytest.mark.parametrize("chunk", [None, 5, 16])
@pytest.mark.parametrize("math_rows", [2, 3, 64])
def test_equals_the_step_it_replaces(temperature, chunk, math_rows, monkeypatch):
    # head blocks of `chunk` rows, vocabulary sub-blocks of `math_rows` rows: float32 rounding at most
    v = 500
    monkeypatch.setattr(module, "MATH_BUDGET", math_rows * v)
    zt, zs, y = _logits(n=41, v=v, seed=3)
    old = _old_step()(zt, zs, y, temperature=temperature, top_k=5)
    calls = []

    def head_t(lo, hi):
        calls.append((lo, hi))
        return zt[lo:hi].clone()

    new = token_step(head_t, lambda lo, hi: zs[lo:hi].clone(), y, temperature=temperature, top_k=5, chunk=chunk)
    assert set(new) == set(old)
    for key, value in old.items():
        if value.dtype == torch.float32:
            torch.testing.assert_close(new[key], value, rtol=2e-6, atol=1e-6, msg=key)
        else:
            torch.testing.assert_close(new[key], value, rtol=0, atol=0, msg=key)
    # the blocks cover the rows once, in order, never more than the block size
    assert [lo for lo, _ in calls] == [0] + [hi for _, hi in calls[:-1]] and calls[-1][1] == 41
    limit = chunk if chunk is not None else module._first_rows()
    assert calls[0][1] - calls[0][0] <= limit


def test_head_blocks_follow_the_budget(monkeypatch):
    v = 64
    monkeypatch.setattr(module, "HEAD_BUDGET", 5 * v)
    zt, zs, y = _logits(n=50, v=v, seed=4)
    sizes = []

    def head(lo, hi):
        sizes.append(hi - lo)
        return zt[lo:hi]

    token_step(head, lambda lo, hi: zs[lo:hi], y, temperature=1.0, top_k=3)
    # the first block tells V (its rows assume V <= 262,144), then HEAD_BUDGET // V rows at a time
    assert sizes[0] == module._first_rows() == 1 and set(sizes[1:-1]) == {5} and sum(sizes) == 50
    monkeypatch.setattr(module, "HEAD_BUDGET", 1 << 25)
    assert module._first_rows() == 128 and 128 * 151_936 <= module.HEAD_BUDGET


def test_head_blocks_are_even_when_the_callable_tells_the_vocabulary(monkeypatch):
    v = 64
    monkeypatch.setattr(module, "HEAD_BUDGET", 20 * v)
    zt, zs, y = _logits(n=45, v=v, seed=4)
    sizes = []

    class Head:
        vocab_size = v  # what LazyLogits carries once the probe has told the number of logits

        def __call__(self, lo, hi):
            sizes.append(hi - lo)
            return zt[lo:hi]

    out = token_step(Head(), lambda lo, hi: zs[lo:hi], y, temperature=1.0, top_k=3)
    assert sizes == [15, 15, 15]  # 45 rows within 20 a block: three blocks of 15, not 20 + 20 + 5
    for key, value in token_step(zt, zs, y, temperature=1.0, top_k=3).items():
        torch.testing.assert_close(out[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("vocab", [20_480, 50_021, 151_936])
def test_wide_rows_rank_like_torch(vocab):
    # wide rows take the block-maxima path of _top_k / _argmax: the same ids as torch.topk / torch.argmax,
    # with the largest values in the narrow last block, ties across blocks and -inf logits
    gen = torch.Generator().manual_seed(vocab)
    z = torch.randn(9, vocab, generator=gen) * 4
    z[1, -1] = z[1].max() + 1.0  # the maximum in the last (narrow) block
    z[2, 5], z[2, vocab - 3] = 50.0, 50.0  # a tie at the top, far apart: the lowest id wins
    z[3, :1000] = float("-inf")
    z[4, 300:310] = 60.0  # ten equal largest values in one block
    z[5, [7, 4_000, 9_000, 13_000, 17_000]] = torch.tensor([30.0, 29.0, 28.0, 27.0, 26.0])  # the top 5 in 5 blocks
    assert vocab >= 16 * 5 * module._RANK_BLOCK
    np.testing.assert_array_equal(module._argmax(z).numpy(), z.argmax(dim=-1).numpy())
    values, ids = module._top_k(z, 5)
    ref_values, ref_ids = z.topk(5, dim=-1)
    torch.testing.assert_close(values, ref_values, rtol=0, atol=0)
    for row in (0, 1, 3, 5, 6, 7, 8):  # rows without ties among their top 5: the same ids in the same order
        assert ids[row].tolist() == ref_ids[row].tolist(), row
    assert set(ids[4].tolist()) <= set(range(300, 310))
    assert ids[5].tolist() == [7, 4_000, 9_000, 13_000, 17_000]


def test_wide_rows_match_the_numpy_reference():
    vocab = 30_011  # not a multiple of the rank blocks
    zt, zs, y = _logits(n=6, v=vocab, seed=8)
    zs[0, 17] = zt[0, 17] = zt[0].max() + 2.0  # one row where teacher and student agree
    out = token_step(zt, zs, y, temperature=1.0, top_k=5)
    ref = token_statistics(zt.double().numpy(), zs.double().numpy(), y.numpy(), temperature=1.0, top_k=5)
    for key in ("kl", "exp_neg_kl", "js", "teacher_nll", "student_nll"):
        np.testing.assert_allclose(out[key].double().numpy(), ref[key], rtol=2e-5, atol=2e-6, err_msg=key)
    for key in ("top1", "topk", "teacher_top1", "student_top1"):
        np.testing.assert_array_equal(out[key].numpy(), ref[key], err_msg=key)
    assert out["top1"][0] == 1


@pytest.mark.parametrize("measures", [["kl"], ["js"], ["top1"], ["topk"], ["nll"], ["kl", "nll"], ["js", "topk", "top1"]])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_a_subset_of_measures_gives_the_same_values(measures, temperature):
    zt, zs, y = _logits(seed=5)
    full = token_step(zt, zs, y, temperature=temperature, top_k=3)
    part = token_step(zt, zs, y, temperature=temperature, top_k=3, measures=measures)
    assert set(part) == set(measure_keys(measures))
    for key, value in part.items():
        torch.testing.assert_close(value, full[key], rtol=0, atol=0, msg=key)


def test_ties_at_the_top_go_to_the_lowest_id():
    v = 40
    zt, zs, y = _logits(n=6, v=v, seed=6)
    zt[:, 7] = zt[:, 31] = zt.max() + 1.0  # teacher: ids 7 and 31 tie at the top of every row
    zs[:3, 12] = zs[:3, 2] = zs.max() + 1.0  # student: ids 2 and 12 in the first rows
    zs[3:, 7] = zs.max() + 1.0
    ref = token_statistics(zt.double().numpy(), zs.double().numpy(), y.numpy(), top_k=2)
    for top_k in (1, 2, 5):
        out = token_step(zt, zs, y, temperature=1.0, top_k=top_k)
        assert out["teacher_top1"].tolist() == [7] * 6
        assert out["student_top1"].tolist() == [2, 2, 2, 7, 7, 7]
        np.testing.assert_array_equal(out["top1"].numpy(), ref["top1"])
    assert token_step(zt, zs, y, temperature=1.0, top_k=2)["topk"].tolist() == ref["topk"].tolist()


def test_no_tokens_and_bad_measures():
    def never(lo, hi):
        raise AssertionError("no block for no token")

    out = token_step(never, never, torch.zeros(0, dtype=torch.long), temperature=1.0, top_k=5)
    assert set(out) == set(measure_keys(None)) and all(v.shape == (0,) for v in out.values())
    zt, zs, y = _logits(n=3, v=10)
    with pytest.raises(InputError, match="`measures`"):
        token_step(zt, zs, y, temperature=1.0, top_k=2, measures=["kl", "entropy"])
    with pytest.raises(InputError, match="`measures`"):
        token_step(zt, zs, y, temperature=1.0, top_k=2, measures=[])
    assert measure_keys(TOKEN_MEASURES) == measure_keys(None)


def test_bfloat16_logits_are_scored_in_float32():
    zt, zs, y = _logits(seed=7)
    low = token_step(zt.bfloat16(), zs.bfloat16(), y, temperature=1.0, top_k=3)
    ref = token_step(zt.bfloat16().float(), zs.bfloat16().float(), y, temperature=1.0, top_k=3)
    for key, value in ref.items():
        torch.testing.assert_close(low[key], value, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------------ a recorded teacher
from knowledge_retention.extraction.token_step import record_step, recorded_step  # noqa: E402
from knowledge_retention.token_agreement import recorded_token_statistics  # noqa: E402


def test_recording_with_k_equal_to_v_scores_as_the_live_teacher():
    zt, zs, y = _logits(n=29, v=120, seed=8)
    rec = record_step(lambda lo, hi: zt[lo:hi], y, k=120, chunk=7)
    assert torch.isinf(rec["tail_logmass"]).all()
    live = token_step(zt, zs, y, temperature=1.0, top_k=5)
    got = recorded_step(rec, lambda lo, hi: zs[lo:hi], y, top_k=5, chunk=6)
    for key, value in live.items():
        torch.testing.assert_close(got[key].to(value.dtype), value, rtol=1e-5, atol=1e-6, msg=key)


def test_recorded_step_is_the_numpy_maths():
    zt, zs, y = _logits(n=31, v=90, seed=9)
    rec = record_step(zt, y, k=6)
    # the recording: most probable first, masses (the tail included) summing to 1
    assert (rec["topk_logprobs"][:, :-1] >= rec["topk_logprobs"][:, 1:]).all()
    total = torch.logaddexp(rec["topk_logprobs"].double().logsumexp(dim=1), rec["tail_logmass"].double())
    torch.testing.assert_close(total, torch.zeros(31, dtype=torch.float64), rtol=0, atol=1e-6)
    got = recorded_step(rec, zs, y, top_k=4)
    ref = recorded_token_statistics(rec["topk_ids"].numpy(), rec["topk_logprobs"].numpy(), rec["tail_logmass"].numpy(),
                                    zs.double().numpy(), y.numpy(), teacher_target_logprob=rec["target_logprob"].numpy(),
                                    top_k=4)
    for key, value in ref.items():
        np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-5, atol=1e-6, err_msg=key)
    beyond = recorded_step(rec, zs, y, top_k=7, measures=["topk", "kl"])
    assert torch.isnan(beyond["topk"]).all() and set(beyond) == {"topk", "kl", "exp_neg_kl", "teacher_tail_mass"}


def test_a_tie_at_the_top_is_recorded_with_the_lowest_id_first():
    zt, zs, y = _logits(n=4, v=30, seed=10)
    zt[:, [25, 3, 17]] = zt.max() + 2.0  # three ids tie at the top, wider than k = 2
    rec = record_step(zt, y, k=2)
    assert rec["topk_ids"][:, 0].tolist() == [3] * 4
    assert set(rec["topk_ids"][:, 1].tolist()) <= {17, 25}
    live = token_step(zt, zs, y, temperature=1.0, top_k=2)
    assert recorded_step(rec, zs, y, top_k=2)["teacher_top1"].tolist() == live["teacher_top1"].tolist()
