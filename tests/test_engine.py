"""The one engine: every engine feature works for the causal-LM task as for classifiers.

Teacher cache (memory and disk: the second call never runs the teacher, same numbers), ``keep_arrays``
(the kept rows give the result's FSS and AOAg by direct computation), bootstrap intervals over texts,
``KRSCallback`` with a causal-LM student, and the options object (unknown keywords refused by name).
"""

from __future__ import annotations

import lm_fixtures as fx
import numpy as np
import pytest
import torch

from knowledge_retention import InputError
from knowledge_retention.extraction import TeacherCache, evaluate_pair, evaluate_students
from knowledge_retention.extraction.options import EvalOptions
from knowledge_retention.similarity import linear_cka

TEXTS = fx.sentences(13, seed=3)
TOK = fx.tokenizer(bos=True, pad="<pad>", side="left")
OPTIONS = dict(teacher_tokenizer=TOK, student_tokenizer=TOK, batch_size=4, progress=False, layers="uniform")


def _same(a, b, tol=1e-12):
    for name in ("fss", "aoag", "krs", "mean_kl", "top1_agreement", "js", "topk_overlap", "logprob_gap"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=tol), name
    for name in ("teacher_perplexity", "student_perplexity"):  # exp of a mean NLL: relative
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=tol), name
    np.testing.assert_allclose(a.pair_scores, b.pair_scores, atol=tol)
    np.testing.assert_array_equal(a.example_indices, b.example_indices)
    assert a.lm["num_tokens"] == b.lm["num_tokens"]


def _counting(monkeypatch, model):
    calls = {"n": 0}
    forward = model.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    return calls


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_causal_lm_teacher_cache_replays_the_teacher(tmp_path, monkeypatch, where):
    teacher, student = fx.tiny_llama(layers=3, seed=0), fx.tiny_llama(layers=2, seed=1)
    cache = TeacherCache() if where == "memory" else TeacherCache(tmp_path / "cache")
    if where == "disk":  # several chunks, and rows of features and logits that differ from the examples
        monkeypatch.setattr("knowledge_retention.extraction.teacher_cache.CHUNK_ROWS", 5)
    live = evaluate_pair(teacher, student, TEXTS, **OPTIONS)
    first = evaluate_pair(teacher, student, TEXTS, teacher_cache=cache, **OPTIONS)
    assert first.options["teacher_cache"]["reused"] is False
    _same(first, live, tol=1e-12)  # recorded logits are made by the head in the live step's own blocks
    calls = _counting(monkeypatch, teacher)
    second = evaluate_pair(teacher, student, TEXTS, teacher_cache=cache, **OPTIONS)
    assert calls["n"] == 0 and second.options["teacher_cache"]["reused"] is True
    assert any("replayed from the teacher cache" in note for note in second.notes)
    _same(second, first, tol=1e-12)
    # another student (other depth, all layers) is served by the same entry
    other = evaluate_students(teacher, {"b": fx.tiny_llama(layers=1, seed=4)}, TEXTS, teacher_cache=cache,
                              student_tokenizers=TOK, teacher_tokenizer=TOK, batch_size=4, progress=False,
                              layers="all")["b"]
    assert calls["n"] == 0 and other.options["teacher_cache"]["reused"] is True
    fresh = evaluate_pair(teacher, fx.tiny_llama(layers=1, seed=4), TEXTS, **{**OPTIONS, "layers": "all"})
    _same(other, fresh, tol=1e-6)


def test_causal_lm_teacher_cache_refuses_generation():
    teacher, student = fx.tiny_gpt2(), fx.tiny_gpt2(seed=1)
    tok = fx.tokenizer(bos=False, pad=None)
    with pytest.raises(InputError, match="`teacher_cache` cannot replay `generate`"):
        evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, progress=False,
                      generate={"max_new_tokens": 2}, teacher_cache=TeacherCache())


def test_causal_lm_keep_arrays_rows_give_the_scores():
    teacher, student = fx.tiny_llama(layers=3, seed=0), fx.tiny_llama(layers=2, seed=1)
    result = evaluate_pair(teacher, student, TEXTS, keep_arrays=True, **OPTIONS)
    rows = result.lm["rows"]
    assert rows["token_example"].shape[0] == result.lm["num_tokens"]
    assert np.all(np.diff(rows["token_example"]) >= 0)  # example order
    for t, s, score in zip(result.teacher_features, result.student_features, result.pair_scores, strict=True):
        assert t.shape[0] == result.lm["num_tokens"] == s.shape[0]
        assert linear_cka(t, s) == pytest.approx(score, abs=1e-9)
    assert float(np.mean(rows["exp_neg_kl"])) == pytest.approx(result.aoag, abs=1e-9)
    assert float(np.mean(rows["top1"])) == pytest.approx(result.top1_agreement, abs=1e-12)
    # per-text rows with sequence pooling: one row per text with counted tokens
    pooled = evaluate_pair(teacher, student, TEXTS, keep_arrays=True, sequence_pooling="mean", **OPTIONS)
    n_texts = np.unique(pooled.lm["rows"]["token_example"]).size
    assert pooled.teacher_features[0].shape[0] == n_texts
    assert linear_cka(pooled.teacher_features[0], pooled.student_features[0]) == pytest.approx(pooled.pair_scores[0],
                                                                                                abs=1e-9)


def test_causal_lm_intervals_resample_texts():
    from knowledge_retention.diagnostics.token_bootstrap import token_bootstrap_intervals

    teacher, student = fx.tiny_llama(layers=3, seed=0), fx.tiny_llama(layers=2, seed=1)
    result = evaluate_pair(teacher, student, fx.sentences(24, seed=5, min_words=3), keep_arrays=True, **OPTIONS)
    ci = token_bootstrap_intervals(result, n_resamples=300, n_feature_resamples=40, seed=0)
    assert ci["resampling_unit"] == "text" and ci["num_examples"] == 24
    for name, point in (("aoag", result.aoag), ("fss", result.fss), ("krs", result.krs),
                        ("top1_agreement", result.top1_agreement)):
        interval = ci["intervals"][name]
        assert interval["estimate"] == pytest.approx(point, abs=1e-9)
        assert interval["low"] <= interval["estimate"] <= interval["high"], name
        assert interval["n_valid"] > 0
    # a direct replicate: all weights 1 gives the estimate back
    again = token_bootstrap_intervals(result, n_resamples=300, n_feature_resamples=40, seed=0)
    assert again["intervals"] == ci["intervals"]
    with pytest.raises(InputError, match="keep_arrays=True"):
        token_bootstrap_intervals(evaluate_pair(teacher, student, TEXTS, **OPTIONS))


def test_krs_callback_scores_a_causal_lm_student_with_the_teacher_cached(monkeypatch):
    from knowledge_retention.integrations import KRSCallback

    teacher, student = fx.tiny_llama(layers=3, seed=0), fx.tiny_llama(layers=2, seed=1)
    callback = KRSCallback(teacher, TEXTS, TOK, teacher_tokenizer=TOK, batch_size=4, layers="uniform")
    first = callback.score(student)
    calls = _counting(monkeypatch, teacher)
    second = callback.score(student)
    assert calls["n"] == 0 and second.options["teacher_cache"]["reused"] is True
    reference = evaluate_pair(teacher, student, TEXTS, **{**OPTIONS, "cross_layer": False})
    _same(first, reference, tol=1e-6)
    _same(second, first, tol=1e-12)


def test_unknown_options_are_refused_by_name_with_the_closest_option():
    teacher, student = fx.tiny_gpt2(), fx.tiny_gpt2(seed=1)
    with pytest.raises(InputError, match=r"unknown option `pooing`\. Did you mean `pooling`\?"):
        evaluate_pair(teacher, student, TEXTS, pooing="mean")
    with pytest.raises(TypeError, match="evaluate_students\\(\\) got an unknown option `bogus`"):
        evaluate_students(teacher, {"s": student}, TEXTS, bogus=1)
    assert "image_column" not in EvalOptions.names() or EvalOptions().is_default("image_column")
    assert EvalOptions.build({"batch_size": 3}).batch_size == 3
    with pytest.raises(InputError, match="`batch_size` must be >= 1"):
        EvalOptions.build({"batch_size": 0})


@pytest.mark.parametrize("kind", ["causal-lm", "classifier"])
def test_a_teacher_offloaded_to_disk_by_accelerate_gives_the_in_memory_numbers(tmp_path, kind):
    """accelerate's big-model inference (``device_map`` with ``max_memory`` forcing disk offload): the
    engine takes the dispatched model as it is (inputs to its first block, nothing moved) - same numbers,
    and the same teacher-cache fingerprint, as the teacher in memory."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
    )

    from knowledge_retention.extraction.teacher_cache import model_fingerprint

    texts = fx.sentences(9, seed=2)
    if kind == "causal-lm":
        teacher, student = fx.tiny_llama(layers=3, seed=0).float(), fx.tiny_llama(layers=2, seed=1).float()
        auto, options = AutoModelForCausalLM, dict(OPTIONS)
    else:
        config = dict(vocab_size=fx.vocab_size(), hidden_size=16, num_attention_heads=2, intermediate_size=32,
                      num_labels=2)
        torch.manual_seed(0)
        teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=3, **config)).eval()
        student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, **config)).eval()
        auto, options = AutoModelForSequenceClassification, {**OPTIONS, "pooling": "mean"}
    teacher.save_pretrained(tmp_path / "teacher")
    offloaded = auto.from_pretrained(tmp_path / "teacher", device_map="auto", max_memory={"cpu": "1KB"},
                                     offload_folder=str(tmp_path / "offload"))
    assert set(offloaded.hf_device_map.values()) == {"disk"}
    assert any(p.is_meta for p in offloaded.parameters())
    live = evaluate_pair(teacher, student, texts, **options)
    dispatched = evaluate_pair(offloaded, student, texts, **options)
    assert dispatched.krs == live.krs and dispatched.fss == live.fss and dispatched.aoag == live.aoag
    # the fingerprint reads the offloaded weights module by module: the same as the folder loaded in memory
    assert model_fingerprint(offloaded) == model_fingerprint(auto.from_pretrained(tmp_path / "teacher"))
    # a teacher given as a folder is loaded the same way with `teacher_load_kwargs`
    from_path = evaluate_pair(str(tmp_path / "teacher"), student, texts, **options, teacher_load_kwargs={
        "device_map": "auto", "max_memory": {"cpu": "1KB"}, "offload_folder": str(tmp_path / "offload2")})
    assert from_path.krs == live.krs and from_path.fss == live.fss
    cached = evaluate_pair(offloaded, student, texts, teacher_cache=tmp_path / "cache", **options)
    again = evaluate_pair(offloaded, student, texts, teacher_cache=tmp_path / "cache", **options)
    assert again.options["teacher_cache"]["reused"] is True and again.krs == pytest.approx(cached.krs, abs=1e-12)


def test_causal_lm_measures_skip_what_is_not_asked_and_keep_the_rest_exact():
    """``measures=`` reaches the token step: the measures asked for equal the full run's, the others are NaN and
    the notes say so; the AOAg method's measure cannot be left out; classifiers refuse the option."""
    teacher, student = fx.tiny_llama(layers=3, seed=0), fx.tiny_llama(layers=2, seed=1)
    full = evaluate_pair(teacher, student, TEXTS, **OPTIONS)
    some = evaluate_pair(teacher, student, TEXTS, measures=["kl", "top1"], keep_arrays=True, **OPTIONS)
    assert some.aoag == full.aoag and some.mean_kl == full.mean_kl and some.krs == full.krs
    assert some.top1_agreement == full.top1_agreement and some.fss == full.fss
    for name in ("js", "topk_overlap", "logprob_gap", "teacher_perplexity"):
        assert np.isnan(getattr(some, name)), name
    assert some.lm["measures"] == ["kl", "top1"] and full.lm["measures"] == ["kl", "js", "top1", "topk", "nll"]
    assert any("skipped (measures=...): js, topk, nll" in note for note in some.notes)
    assert np.all(np.isnan(some.lm["rows"]["js"])) and float(np.mean(some.lm["rows"]["exp_neg_kl"])) == pytest.approx(
        full.aoag, abs=1e-9)
    with pytest.raises(InputError, match="leaves out 'kl'"):
        evaluate_pair(teacher, student, TEXTS, measures=["top1"], **OPTIONS)
    with pytest.raises(InputError, match="must be a non-empty subset"):
        evaluate_pair(teacher, student, TEXTS, measures=["bogus"], **OPTIONS)
    from transformers import BertConfig, BertForSequenceClassification

    classifier = BertForSequenceClassification(BertConfig(vocab_size=fx.vocab_size(), hidden_size=16,
                                                          num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=32)).eval()
    with pytest.raises(InputError, match="`measures` apply to task='causal-lm' only"):
        evaluate_pair(classifier, classifier, TEXTS, teacher_tokenizer=TOK, student_tokenizer=TOK, progress=False,
                      measures=["kl"])
