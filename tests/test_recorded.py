"""A recorded teacher: the (k + 1)-bucket maths against the live measures, and the folder format."""

from __future__ import annotations

import json
import math

import lm_fixtures as fx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax

from knowledge_retention import InputError
from knowledge_retention.token_agreement import STAT_KEYS, recorded_token_statistics, token_statistics


def _pair(n=30, v=40, seed=0, scale=2.5):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, v)) * scale
    s = 0.6 * t + rng.normal(size=(n, v)) * scale * 0.7
    return t, s, rng.integers(0, v, size=n)


def _record(t, k):
    """What a recorder keeps of teacher logits: the top k (most probable first, ties to the lowest id), the tail."""
    lt = log_softmax(t, axis=1)
    ids = np.argsort(-lt, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(lt, ids, axis=1)
    outside = np.ones_like(lt, dtype=bool)
    np.put_along_axis(outside, ids, False, axis=1)
    with np.errstate(divide="ignore"):
        tail = np.log(np.sum(np.where(outside, np.exp(lt), 0.0), axis=1))
    return ids, top, tail, lt


def _recorded(t, s, y, k, **kw):
    ids, top, tail, lt = _record(t, k)
    return recorded_token_statistics(ids, top, tail, s, y, teacher_target_logprob=lt[np.arange(y.size), y], **kw)


@pytest.mark.parametrize("top_k", [1, 5])
def test_k_equal_to_v_is_the_live_computation(top_k):
    t, s, y = _pair()
    live, rec = token_statistics(t, s, y, top_k=top_k), _recorded(t, s, y, k=t.shape[1], top_k=top_k)
    for key in (*STAT_KEYS, "teacher_top1", "student_top1"):
        np.testing.assert_allclose(rec[key], live[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert np.all(rec["teacher_tail_mass"] == 0.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 39), scale=st.floats(0.1, 6.0))
def test_fewer_tokens_bound_the_divergences(seed, k, scale):
    t, s, y = _pair(n=12, v=40, seed=seed, scale=scale)
    live, rec = token_statistics(t, s, y, top_k=min(k, 5)), _recorded(t, s, y, k=k, top_k=min(k, 5))
    np.testing.assert_array_equal(rec["top1"], live["top1"])  # exact
    np.testing.assert_array_equal(rec["topk"], live["topk"])  # top_k <= k: exact
    np.testing.assert_allclose(rec["teacher_nll"], live["teacher_nll"], rtol=1e-12)
    np.testing.assert_allclose(rec["student_nll"], live["student_nll"], rtol=1e-12)
    assert np.all(rec["kl"] <= live["kl"] + 1e-12)  # grouping never raises an f-divergence
    assert np.all(rec["js"] <= live["js"] + 1e-12)
    assert np.all(rec["exp_neg_kl"] >= live["exp_neg_kl"] - 1e-12)  # AOAg: an upper bound


def test_more_recorded_tokens_tighten_the_bound():
    t, s, y = _pair(seed=3)
    kls = [_recorded(t, s, y, k=k)["kl"].mean() for k in (1, 4, 16, 40)]
    assert kls == sorted(kls) and kls[-1] == pytest.approx(token_statistics(t, s, y)["kl"].mean(), rel=1e-9)


def test_top_k_beyond_the_recording_is_nan_and_measures_can_be_skipped():
    t, s, y = _pair(n=5)
    rec = _recorded(t, s, y, k=3, top_k=5)
    assert np.isnan(rec["topk"]).all() and not np.isnan(rec["kl"]).any()
    ids, top, tail, _ = _record(t, 3)
    part = recorded_token_statistics(ids, top, tail, s, y, measures=["kl", "top1"])
    assert set(part) == {"kl", "exp_neg_kl", "top1", "teacher_top1", "student_top1", "teacher_tail_mass"}
    with pytest.raises(InputError, match="teacher_target_logprob"):
        recorded_token_statistics(ids, top, tail, s, y, measures=["nll"])


def test_a_damaged_recording_is_refused_by_the_maths():
    t, s, y = _pair(n=4)
    ids, top, tail, lt = _record(t, 3)
    cases = [
        ((np.c_[ids[:, :2], ids[:, :1]], top, tail), "repeats"),
        ((ids, top + 0.5, tail), "sum to 1|<= 0"),
        ((ids, top - 1.0, tail), "sum to 1"),
        ((ids + 100, top, tail), "token ids"),
        ((ids, top[:, :2], tail), "shape"),
        ((ids, top, tail[:2]), "teacher_tail"),
        ((ids.astype(float), top, tail), "int array"),
    ]
    for (bad_ids, bad_top, bad_tail), match in cases:
        with pytest.raises(InputError, match=match):
            recorded_token_statistics(bad_ids, bad_top, bad_tail, s, y, teacher_target_logprob=lt[:, 0])


# ----------------------------------------------------------------------------------------- the folder
from knowledge_retention.extraction.recorded import (  # noqa: E402
    RecordedBatch,
    RecordedTeacher,
    RecordingWriter,
    finalize_recording,
)


def _texts_tokens(n_texts=9, v=40, seed=0):
    """Counted tokens per text (text 4 has none), teacher logits and hidden states of two layers."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=n_texts)
    counts[4] = 0
    example = np.repeat(np.arange(n_texts), counts)
    position = np.concatenate([np.arange(c) for c in counts])
    t, s, y = _pair(n=example.size, v=v, seed=seed)
    hidden = {0: rng.normal(size=(example.size, 6)), 2: rng.normal(size=(example.size, 3))}
    return example, position, t, s, y, hidden


def _write(folder, k, *, ranks=2, logprob_dtype="float32", shard_tokens=7, pooled=False):
    example, position, t, s, y, hidden = _texts_tokens()
    ids, top, tail, lt = _record(t, k)
    n_texts = 9
    for rank in range(ranks):
        writer = RecordingWriter(folder, top_k=k, vocab_size=t.shape[1], rank=rank, logprob_dtype=logprob_dtype,
                                 layers=[0, 2], pooled=pooled, shard_tokens=shard_tokens)
        for texts in np.array_split(np.arange(rank, n_texts, ranks), 3):  # batches of whole texts
            rows = np.isin(example, texts)
            if pooled:
                with_tokens = [e for e in texts.tolist() if (example == e).any()]
                states = {layer: np.stack([h[example == e].mean(0) for e in with_tokens]) if with_tokens
                          else np.zeros((0, h.shape[1])) for layer, h in hidden.items()}
                extra = {"pooled_example": np.asarray(with_tokens, dtype=np.int64)}
            else:
                states, extra = {layer: h[rows] for layer, h in hidden.items()}, {}
            writer.write(RecordedBatch(example=example[rows], position=position[rows], target=y[rows],
                                       topk_ids=ids[rows], topk_logprobs=top[rows], tail_logmass=tail[rows],
                                       target_logprob=lt[rows, y[rows]], hidden=states, examples=texts, **extra))
        writer.close()
    tok = fx.tokenizer(bos=False, pad=None)
    manifest = finalize_recording(folder, num_processes=ranks, num_examples=n_texts, top_k=k, vocab_size=t.shape[1],
                                  tokenizer=tok, texts_fingerprint="texts-sha", options={"max_length": None, "layers": [0, 2]},
                                  logprob_dtype=logprob_dtype, layers=[0, 2], sequence_pooling="mean" if pooled else None)
    return manifest, (example, position, t, s, y, hidden, ids, top, tail, lt)


def test_round_trip(tmp_path):
    manifest, (example, position, t, s, y, hidden, ids, top, tail, lt) = _write(tmp_path, k=5)
    assert manifest["num_tokens"] == example.size and manifest["num_examples"] == 9
    assert len(manifest["shards"]) > 2  # several parts per rank
    assert manifest["storage_bytes"] == sum((tmp_path / p["file"]).stat().st_size for p in manifest["shards"])
    assert manifest["bytes_per_token_outputs"] == 8 + 4 * 4 + 5 * 8
    assert not list(tmp_path.glob("rank*.json"))  # the per-process summaries are folded into the manifest
    reader = RecordedTeacher(tmp_path)
    order = [7, 0, 4, 3]  # any order; text 4 has no counted token
    got = reader.batch(order)
    rows = np.concatenate([np.flatnonzero(example == e) for e in order])
    np.testing.assert_array_equal(got.example, example[rows])
    np.testing.assert_array_equal(got.position, position[rows])
    np.testing.assert_array_equal(got.target, y[rows])
    np.testing.assert_array_equal(got.topk_ids, ids[rows])
    np.testing.assert_array_equal(got.topk_logprobs, top[rows].astype(np.float32))
    np.testing.assert_array_equal(got.tail_logmass, tail[rows].astype(np.float32))
    np.testing.assert_array_equal(got.target_logprob, lt[rows, y[rows]].astype(np.float32))
    for layer in (0, 2):
        np.testing.assert_array_equal(got.hidden[layer], hidden[layer][rows].astype(np.float32))
    assert got.examples.tolist() == order
    every = list(reader.batches(4))
    assert [b.examples.tolist() for b in every] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert sum(b.num_tokens for b in every) == example.size
    # scored from the files, k = 5 < V: the bounds hold; the same recording read twice gives the same numbers
    stats = recorded_token_statistics(got.topk_ids, got.topk_logprobs, got.tail_logmass, s[rows], got.target,
                                      teacher_target_logprob=got.target_logprob)
    live = token_statistics(t[rows], s[rows], y[rows])
    np.testing.assert_array_equal(stats["top1"], live["top1"])
    assert np.all(stats["kl"] <= live["kl"] + 1e-5)


def test_k_equal_to_v_through_the_folder_is_live(tmp_path):
    _, (example, _, t, s, y, *_rest) = _write(tmp_path, k=40)
    got = RecordedTeacher(tmp_path).batch(range(9))
    stats = recorded_token_statistics(got.topk_ids, got.topk_logprobs, got.tail_logmass, s, got.target,
                                      teacher_target_logprob=got.target_logprob)
    live = token_statistics(t, s, y)
    for key in STAT_KEYS:  # float32 storage: float32 rounding
        np.testing.assert_allclose(stats[key], live[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_float16_log_probabilities_and_pooled_states(tmp_path):
    manifest, (example, _, t, s, y, hidden, ids, top, *_rest) = _write(tmp_path, k=4, logprob_dtype="float16",
                                                                      pooled=True)
    assert manifest["dtypes"]["topk_logprobs"] == "float16" and manifest["bytes_per_token_outputs"] == 8 + 16 + 4 * 6
    got = RecordedTeacher(tmp_path).batch([2, 4, 1])
    rows = np.concatenate([np.flatnonzero(example == e) for e in (2, 4, 1)])
    assert got.topk_logprobs.dtype == np.float16
    np.testing.assert_array_equal(got.topk_logprobs, top[rows].astype(np.float16))
    assert got.pooled_example.tolist() == [2, 1]
    np.testing.assert_allclose(got.hidden[0], np.stack([hidden[0][example == e].mean(0) for e in (2, 1)]), rtol=1e-6)


def _damage(folder, what):
    manifest = json.loads((folder / "manifest.json").read_text())
    shard = folder / manifest["shards"][1]["file"]
    if what == "no manifest":
        (folder / "manifest.json").unlink()
    elif what == "format":
        manifest["format"] = "something-else"
    elif what == "version":
        manifest["format_version"] = 99
    elif what == "missing shard":
        shard.unlink()
    elif what == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-16])
    elif what == "altered shard":
        data = bytearray(shard.read_bytes())
        data[-3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif what == "token count":
        manifest["num_tokens"] += 1
    elif what == "lost part":
        del manifest["shards"][1]
    elif what == "not json":
        (folder / "manifest.json").write_text("{not json")
    if what in ("format", "version", "token count", "lost part"):
        (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("what, match", [
    ("no manifest", "not a finished"), ("format", "not a teacher recording"), ("version", "format version 99"),
    ("missing shard", "missing"), ("truncated shard", "bytes"), ("altered shard", "SHA-256"),
    ("token count", "manifest says"), ("lost part", "each once"), ("not json", "JSON"),
])
def test_a_damaged_folder_is_refused(tmp_path, what, match):
    _write(tmp_path, k=3)
    _damage(tmp_path, what)
    with pytest.raises(InputError, match=match):
        RecordedTeacher(tmp_path).batch(range(9))


def test_a_mismatched_evaluation_is_refused(tmp_path):
    _write(tmp_path, k=3)
    reader = RecordedTeacher(tmp_path)
    same = fx.tokenizer(bos=False, pad=None)
    reader.check_compatible(tokenizer=same, texts_fingerprint="texts-sha", vocab_size=40,
                            options={"max_length": None, "layers": (0, 2), "other": 1}, layers=[2])
    cases = [
        ({"tokenizer": fx.tokenizer(bos=False, pad=None, extra=("zebra",))}, "vocabulary"),
        ({"texts_fingerprint": "other"}, "texts"),
        ({"vocab_size": 41}, "41 logits"),
        ({"options": {"max_length": 16}}, "max_length=None there, 16 here"),
        ({"layers": [1]}, r"layers \[1\] were not recorded"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InputError, match=match):
            reader.check_compatible(**kwargs)
    with pytest.raises(InputError, match="not in the recording"):
        reader.batch([9])


def test_writer_refusals(tmp_path):
    _write(tmp_path / "done", k=3)
    with pytest.raises(InputError, match="already holds a finished recording"):
        RecordingWriter(tmp_path / "done", top_k=3, vocab_size=40)
    with pytest.raises(InputError, match="`top_k`"):
        RecordingWriter(tmp_path / "x", top_k=41, vocab_size=40)
    with pytest.raises(InputError, match="`logprob_dtype`"):
        RecordingWriter(tmp_path / "x", top_k=3, vocab_size=40, logprob_dtype="int8")
    writer = RecordingWriter(tmp_path / "y", top_k=2, vocab_size=40)
    one = RecordedBatch(example=np.array([0, 0]), position=np.array([0, 1]), target=np.array([1, 2]),
                        topk_ids=np.array([[1, 2], [3, 4]]), topk_logprobs=np.log([[0.5, 0.25], [0.5, 0.25]]),
                        tail_logmass=np.log([0.25, 0.25]), target_logprob=np.log([0.5, 0.25]))
    writer.write(one)
    with pytest.raises(InputError, match="recorded twice"):
        writer.write(one)
    writer.close()
    with pytest.raises(InputError, match="Process 1 of 2 wrote no summary"):
        finalize_recording(tmp_path / "y", num_processes=2, num_examples=1, top_k=2, vocab_size=40,
                           tokenizer=fx.tokenizer(bos=False, pad=None), texts_fingerprint="x", options={})
    with pytest.raises(InputError, match="each once"):  # text 1 was never written
        finalize_recording(tmp_path / "y", num_processes=1, num_examples=2, top_k=2, vocab_size=40,
                           tokenizer=fx.tokenizer(bos=False, pad=None), texts_fingerprint="x", options={})
    assert math.isfinite(finalize_recording(tmp_path / "y", num_processes=1, num_examples=1, top_k=2, vocab_size=40,
                                            tokenizer=fx.tokenizer(bos=False, pad=None), texts_fingerprint="x",
                                            options={})["bytes_per_token"])
