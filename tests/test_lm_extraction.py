"""task="causal-lm": every measure against a direct computation from each text's own, unpadded logits.

The reference runs each text alone (batch of one, no padding, full logits) and computes the measures
with NumPy/SciPy formulas written here; the evaluator pads batches on either side with different
pad ids, recomputes logits from the last hidden state in chunks and sums streamed.
"""

from __future__ import annotations

import json
import math

import lm_fixtures as fx
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax

from knowledge_retention import InputError
from knowledge_retention.extraction import evaluate_pair, evaluate_students
from knowledge_retention.extraction import token_step as token_step_module
from knowledge_retention.extraction.tasks.causal_lm import token_step
from knowledge_retention.similarity import linear_cka

TEXTS = fx.sentences(11, seed=1)  # 1..12 words: with the GPT-2-style tokenizer, 1-word texts count nothing


def _reference(teacher, student, tok, texts, *, temperature=1.0, k=5, starts=None, layer_pairs=((-1, -1),),
               ids_override=None):
    """Per-token values and CKA from one forward pass per text (no padding at all)."""
    rows = {key: [] for key in ("kl", "js", "top1", "topk", "nll_t", "nll_s", "seq")}
    feats_t, feats_s = {p: [] for p in layer_pairs}, {p: [] for p in layer_pairs}
    for i, text in enumerate(texts):
        ids = ids_override[i] if ids_override is not None else tok(text)["input_ids"]
        start = 1 if starts is None else starts[i]
        if len(ids) <= start:
            continue
        x = torch.tensor([ids])
        with torch.no_grad():
            out_t = teacher(input_ids=x, output_hidden_states=True)
            out_s = student(input_ids=x, output_hidden_states=True)
        zt, zs = out_t.logits[0].double().numpy(), out_s.logits[0].double().numpy()
        src = np.arange(start - 1, len(ids) - 1)
        y = np.asarray(ids)[src + 1]
        lt, ls = log_softmax(zt[src] / temperature, axis=1), log_softmax(zs[src] / temperature, axis=1)
        pt, ps = np.exp(lt), np.exp(ls)
        rows["kl"] += list(np.sum(pt * (lt - ls), axis=1))
        rows["js"] += [jensenshannon(a, b, base=2) ** 2 for a, b in zip(pt, ps, strict=True)]
        rows["top1"] += list(np.argmax(zt[src], 1) == np.argmax(zs[src], 1))
        top_t, top_s = np.argsort(-zt[src], 1)[:, :k], np.argsort(-zs[src], 1)[:, :k]
        rows["topk"] += [len(set(a) & set(b)) / k for a, b in zip(top_t, top_s, strict=True)]
        rows["nll_t"] += list(-log_softmax(zt[src], axis=1)[np.arange(src.size), y])
        rows["nll_s"] += list(-log_softmax(zs[src], axis=1)[np.arange(src.size), y])
        rows["seq"] += [i] * src.size
        for t, s in layer_pairs:
            feats_t[(t, s)].append(out_t.hidden_states[t][0].numpy()[src])
            feats_s[(t, s)].append(out_s.hidden_states[s][0].numpy()[src])
    ref = {key: np.asarray(v, dtype=float) for key, v in rows.items()}
    cka = [linear_cka(np.concatenate(feats_t[p]), np.concatenate(feats_s[p])) for p in layer_pairs]
    return ref, cka


def _check(result, ref, cka, *, atol=1e-5):
    assert result.lm["num_tokens"] == ref["kl"].size
    assert result.aoag == pytest.approx(np.mean(np.exp(-ref["kl"])), abs=atol)
    assert result.mean_kl == pytest.approx(np.mean(ref["kl"]), abs=atol)
    assert result.js == pytest.approx(np.mean(ref["js"]), abs=atol)
    assert result.top1_agreement == pytest.approx(np.mean(ref["top1"]), abs=1e-12)
    assert result.topk_overlap == pytest.approx(np.mean(ref["topk"]), abs=1e-12)
    assert result.logprob_gap == pytest.approx(np.mean(ref["nll_s"] - ref["nll_t"]), abs=atol)
    assert result.teacher_perplexity == pytest.approx(math.exp(np.mean(ref["nll_t"])), rel=atol)
    assert result.student_perplexity == pytest.approx(math.exp(np.mean(ref["nll_s"])), rel=atol)
    assert result.perplexity_ratio == pytest.approx(math.exp(np.mean(ref["nll_t"]) - np.mean(ref["nll_s"])), rel=atol)
    np.testing.assert_allclose(result.pair_scores, cka, atol=1e-6)
    assert result.fss == pytest.approx(float(np.mean(cka)), abs=1e-6)
    assert result.krs == pytest.approx(0.5 * result.fss + 0.5 * result.aoag, abs=1e-12)


FAMILIES = {
    # GPT-2 style: nothing added to a text, no pad token (EOS pads), teacher right / student left padding
    "gpt2": (fx.tiny_gpt2, dict(bos=False, pad=None, side="right"), dict(bos=False, pad=None, side="left")),
    # Llama style: BOS added (and counted), pad tokens that differ, teacher left / student right padding
    "llama": (fx.tiny_llama, dict(bos=True, pad="<pad>", side="left"), dict(bos=True, pad="<pad2>", side="right")),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_measure_matches_the_logits(family, monkeypatch):
    # logit blocks of 7 rows: the chunked path over the counted tokens is what is checked
    monkeypatch.setattr(token_step_module, "HEAD_BUDGET", 7 * fx.vocab_size())
    build, t_kw, s_kw = FAMILIES[family]
    teacher, student = build(layers=3, seed=1), build(layers=2, seed=2)
    t_tok, s_tok = fx.tokenizer(**t_kw), fx.tokenizer(**s_kw)
    result = evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=t_tok, student_tokenizer=s_tok,
                           layers=[(-1, -1), (1, 1), (0, 0)], batch_size=4, progress=False)
    assert result.options["task"] == "causal-lm"  # chosen automatically: both are causal LMs
    ref, cka = _reference(teacher, student, fx.tokenizer(**t_kw), TEXTS, layer_pairs=((-1, -1), (1, 1), (0, 0)))
    # L - 1 predictions per text of L tokens, the BOS of the Llama-style tokenizer included
    lengths = [len(fx.tokenizer(**t_kw)(t)["input_ids"]) for t in TEXTS]
    assert result.lm["num_tokens"] == sum(n - 1 for n in lengths)
    _check(result, ref, cka)
    assert result.cross_layer_cka.shape == (4, 3)
    assert result.cross_layer_cka[3, 2] == pytest.approx(cka[0], abs=1e-6)
    out = result.to_dict()
    assert out["teacher_perplexity"] == result.teacher_perplexity and out["lm"]["num_tokens"] == ref["kl"].size
    json.dumps(out)


def test_temperature_top_k_and_sequence_average():
    teacher, student = fx.tiny_llama(layers=2, seed=3), fx.tiny_llama(layers=1, seed=4)
    tok = fx.tokenizer(bos=True, pad="<pad>")
    result = evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, temperature=2.0,
                           top_k=3, average="sequence", batch_size=5, progress=False)
    ref, _ = _reference(teacher, student, tok, TEXTS, temperature=2.0, k=3)
    per_seq = {key: np.array([ref[key][ref["seq"] == i].mean() for i in np.unique(ref["seq"])])
               for key in ("kl", "top1", "topk", "nll_t", "nll_s")}
    assert result.lm["num_sequences"] == len(TEXTS)
    assert result.aoag == pytest.approx(np.mean([np.exp(-ref["kl"][ref["seq"] == i]).mean()
                                                 for i in np.unique(ref["seq"])]), abs=1e-5)
    assert result.mean_kl == pytest.approx(per_seq["kl"].mean(), abs=1e-5)
    assert result.topk_overlap == pytest.approx(per_seq["topk"].mean(), abs=1e-12)
    assert result.teacher_perplexity == pytest.approx(math.exp(per_seq["nll_t"].mean()), rel=1e-5)
    # the token average is still reported beside it
    assert result.lm["token_average"]["aoag"] == pytest.approx(np.mean(np.exp(-ref["kl"])), abs=1e-5)
    by_pos = result.lm["by_position"]
    assert by_pos["count"][0] == len(TEXTS) and sum(by_pos["count"]) == ref["kl"].size


def test_sequence_pooling_mean_and_last():
    teacher, student = fx.tiny_gpt2(layers=2, seed=5), fx.tiny_gpt2(layers=1, seed=6)
    tok = fx.tokenizer(bos=True, pad=None)
    texts = fx.sentences(9, seed=2, min_words=2)
    feats = {"mean": ([], []), "last": ([], [])}
    for text in texts:
        x = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            ht = teacher(input_ids=x, output_hidden_states=True).hidden_states[-1][0, :-1].numpy()
            hs = student(input_ids=x, output_hidden_states=True).hidden_states[-1][0, :-1].numpy()
        feats["mean"][0].append(ht.mean(0)), feats["mean"][1].append(hs.mean(0))
        feats["last"][0].append(ht[-1]), feats["last"][1].append(hs[-1])
    for pooling, (ft, fs) in feats.items():
        result = evaluate_pair(teacher, student, texts, teacher_tokenizer=tok, student_tokenizer=tok,
                               sequence_pooling=pooling, batch_size=4, progress=False)
        assert result.fss == pytest.approx(linear_cka(np.stack(ft), np.stack(fs)), abs=1e-6)


def test_prompt_column_counts_only_text_tokens():
    teacher, student = fx.tiny_llama(layers=2, seed=7), fx.tiny_llama(layers=1, seed=8)
    tok = fx.tokenizer(bos=True, pad="<pad>", side="left")
    prompts = fx.sentences(6, seed=3, min_words=1, max_words=4)
    texts = [" " + t for t in fx.sentences(6, seed=4, min_words=1, max_words=5)]
    data = {"prompt": prompts, "sentence": texts}
    result = evaluate_pair(teacher, student, data, teacher_tokenizer=tok, student_tokenizer=tok,
                           prompt_column="prompt", batch_size=4, progress=False)
    ids = [tok(p + t)["input_ids"] for p, t in zip(prompts, texts, strict=True)]
    starts = [1 + len(p.split()) for p in prompts]  # BOS + one token per prompt word
    ref, cka = _reference(teacher, student, tok, None or [""] * 6, starts=starts, ids_override=ids)
    assert result.lm["num_tokens"] == sum(len(t.split()) for t in texts)
    _check(result, ref, cka)


def test_generation_scores_only_the_teachers_greedy_continuation():
    teacher, student = fx.tiny_llama(layers=2, seed=9), fx.tiny_llama(layers=1, seed=10)
    tok = fx.tokenizer(bos=True, pad="<pad>", side="right")
    prompts = fx.sentences(5, seed=6, min_words=1, max_words=4)
    result = evaluate_pair(teacher, student, prompts, teacher_tokenizer=tok, student_tokenizer=tok,
                           generate={"max_new_tokens": 6}, batch_size=2, progress=False)
    # the continuation by hand: argmax of the teacher's next-token logits, one token at a time
    ids, starts = [], []
    for prompt in prompts:
        seq = tok(prompt)["input_ids"]
        starts.append(len(seq))
        for _ in range(6):
            with torch.no_grad():
                nxt = int(teacher(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == tok.eos_token_id:
                break
        ids.append(seq)
    ref, cka = _reference(teacher, student, tok, [""] * 5, starts=starts, ids_override=ids)
    assert result.lm["mode"] == "generated" and result.options["generate"] == {"max_new_tokens": 6}
    assert result.lm["num_tokens"] == sum(len(s) - st for s, st in zip(ids, starts, strict=True))
    _check(result, ref, cka)


def test_vocabulary_mismatch_is_refused_with_both_sizes():
    teacher, tok = fx.tiny_gpt2(), fx.tokenizer(bos=False, pad=None)
    bigger = fx.tokenizer(bos=False, pad=None, extra=("extra", "words"))
    student = fx.tiny_gpt2(vocab=fx.vocab_size() + 2)
    n = fx.vocab_size()
    with pytest.raises(InputError, match=rf"vocabulary of {n} tokens and the student's {n + 2}.*cross-tokenizer"):
        evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=bigger, progress=False)
    # same size, different token -> id map
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(tok.get_vocab())
    vocab["film"], vocab["movie"] = vocab["movie"], vocab["film"]
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    swapped = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    with pytest.raises(InputError, match=rf"both have {n} tokens but map 2 of them differently"):
        evaluate_pair(teacher, fx.tiny_gpt2(seed=1), TEXTS, teacher_tokenizer=tok, student_tokenizer=swapped,
                      progress=False)
    # same tokenizer, output layers of different sizes
    with pytest.raises(InputError, match=rf"output layer has {n} logits and the student's {n + 2}"):
        evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, progress=False)


def test_options_of_the_other_task_are_refused():
    teacher, tok = fx.tiny_gpt2(), fx.tokenizer(bos=False, pad=None)
    with pytest.raises(InputError, match="sequence_pooling"):
        evaluate_pair(teacher, fx.tiny_gpt2(seed=1), TEXTS, teacher_tokenizer=tok, student_tokenizer=tok,
                      pooling="mean", progress=False)
    from transformers import BertConfig, BertForSequenceClassification

    classifier = BertForSequenceClassification(BertConfig(
        vocab_size=fx.vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2)).eval()
    with pytest.raises(InputError, match="`generate` apply to task='causal-lm' only"):
        evaluate_pair(classifier, classifier, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok,
                      task="nlp", generate={"max_new_tokens": 2}, progress=False)
    with pytest.raises(InputError, match="max_new_tokens"):
        evaluate_pair(teacher, fx.tiny_gpt2(seed=1), TEXTS, teacher_tokenizer=tok, student_tokenizer=tok,
                      generate={"max_new_tokens": 0}, progress=False)


def test_a_causal_lm_beside_a_classifier_or_under_another_task_is_refused_by_name(tmp_path):
    """A causal LM paired with a classifier would have its vocabulary read as a label set, and causal
    LMs under task='classification' their (N, T, V) logits as (N, C) outputs: both are refused up
    front, naming the models and the task to use."""
    from transformers import BertConfig, BertForSequenceClassification

    from knowledge_retention import InputTypeError

    lm, tok = fx.tiny_gpt2(), fx.tokenizer(bos=False, pad=None)
    classifier = BertForSequenceClassification(BertConfig(
        vocab_size=fx.vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2)).eval()
    kwargs = dict(teacher_tokenizer=tok, student_tokenizer=tok, progress=False)
    with pytest.raises(InputTypeError, match=r"both causal LMs: `teacher` \(GPT2LMHeadModel\) is a causal LM, "
                                             r"`student` \(BertForSequenceClassification\) is not"):
        evaluate_pair(lm, classifier, TEXTS, **kwargs)
    with pytest.raises(InputTypeError, match=r"`student` \(GPT2LMHeadModel\) is a causal LM, `teacher`"):
        evaluate_pair(classifier, lm, TEXTS, **kwargs)
    with pytest.raises(InputTypeError, match=r"student 'b' \(GPT2LMHeadModel\) is a causal LM"):
        evaluate_students(classifier, {"a": classifier, "b": lm}, TEXTS, teacher_tokenizer=tok,
                          student_tokenizers=tok, progress=False)
    lm.save_pretrained(tmp_path / "lm")  # a local folder is recognised too, without the Hub
    for task in ("classification", "nlp"):
        with pytest.raises(InputTypeError, match=rf"task='{task}' scores classifier outputs, but `teacher` "
                                                 r"\(GPT2LMHeadModel\), `student` \('.*lm'\) are causal LMs: "
                                                 r"use task='causal-lm'"):
            evaluate_pair(lm, str(tmp_path / "lm"), TEXTS, task=task, **kwargs)


def test_several_students_equal_separate_pairs():
    teacher, tok = fx.tiny_gpt2(layers=3, seed=11), fx.tokenizer(bos=True, pad=None)
    students = {"a": fx.tiny_gpt2(layers=1, seed=12), "b": fx.tiny_gpt2(layers=2, seed=13)}
    together = evaluate_students(teacher, students, TEXTS, teacher_tokenizer=tok, student_tokenizers=tok,
                                 batch_size=3, progress=False)
    for name, model in students.items():
        alone = evaluate_pair(teacher, model, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, batch_size=5,
                              group_by_length=False, progress=False)
        for key in ("krs", "fss", "aoag", "js", "top1_agreement", "topk_overlap", "teacher_perplexity"):
            assert getattr(together[name], key) == pytest.approx(getattr(alone, key), rel=1e-6), key  # float32 per batch


def test_chunked_token_step_equals_one_block():
    rng = np.random.default_rng(0)
    zt, zs = torch.tensor(rng.normal(size=(23, 50)) * 3), torch.tensor(rng.normal(size=(23, 50)) * 3)
    y = torch.tensor(rng.integers(0, 50, size=23))
    whole = token_step(zt, zs, y, temperature=1.5, top_k=4)
    chunked = token_step(lambda lo, hi: zt[lo:hi].float(), lambda lo, hi: zs[lo:hi].float(), y, temperature=1.5,
                         top_k=4, chunk=5)
    for key, value in whole.items():
        torch.testing.assert_close(chunked[key], value)


def test_bf16_autocast_stays_close_to_fp32():
    teacher, student = fx.tiny_llama(layers=2, seed=14).float(), fx.tiny_llama(layers=1, seed=15).float()
    tok = fx.tokenizer(bos=True, pad="<pad>")
    full = evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, progress=False)
    low = evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, progress=False,
                        mixed_precision="bf16")
    assert low.options["mixed_precision"] == "bf16"
    assert low.aoag != full.aoag  # bf16 really ran
    assert low.aoag == pytest.approx(full.aoag, abs=2e-2) and low.fss == pytest.approx(full.fss, abs=2e-2)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, torchrun):
    """2 CPU processes (the ``lm-extraction`` scenario) on 37 texts (batch 4) and 3 texts (process 1 gets only padding)."""
    ranks = torchrun("lm-extraction", tmp_path).ranks
    for name, (n, batch_size) in {**fx.CASES, "own_accelerator": fx.CASES["uneven"]}.items():
        single = fx.run_case(n, batch_size)
        assert single["num_processes"] == 1
        for dist in ranks:
            assert dist[name]["num_processes"] == 2 and dist[name]["example_indices"] == list(range(n))
            assert dist[name]["lm"]["num_tokens"] == single["lm"]["num_tokens"]
            for key in ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement", "topk_overlap", "logprob_gap",
                        "teacher_perplexity", "student_perplexity"):
                assert math.isclose(dist[name][key], single[key], rel_tol=1e-6, abs_tol=1e-12), (name, key)
            np.testing.assert_allclose(np.array(dist[name]["cross_layer_cka"]["matrix"], dtype=float),
                                       np.array(single["cross_layer_cka"]["matrix"], dtype=float), rtol=1e-6)
            assert dist[name]["lm"]["by_position"]["count"] == single["lm"]["by_position"]["count"]


def test_logits_that_are_not_the_head_fall_back_to_the_models_own():
    """A model whose logits are soft-capped (not its output layer on its last state) is scored from its own logits."""
    from transformers import GPT2LMHeadModel

    class SoftCapped(GPT2LMHeadModel):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 3.0 * torch.tanh(out.logits / 3.0)
            return out

    base = fx.tiny_gpt2(layers=2, seed=16)
    capped = SoftCapped(base.config).double().eval()
    capped.load_state_dict(base.state_dict())
    student, tok = fx.tiny_gpt2(layers=1, seed=17), fx.tokenizer(bos=True, pad=None)
    result = evaluate_pair(capped, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, batch_size=4,
                           progress=False)
    assert any("soft-capping" in note for note in result.notes)
    ref, cka = _reference(capped, student, tok, TEXTS)
    _check(result, ref, cka)
    plain = evaluate_pair(base, student, TEXTS, teacher_tokenizer=tok, student_tokenizer=tok, progress=False)
    assert plain.notes == [] and plain.aoag != pytest.approx(result.aoag)


def test_a_cross_layer_matrix_beyond_the_budget_is_skipped_with_a_note(monkeypatch):
    from knowledge_retention.extraction.tasks import causal_lm

    teacher, student = fx.tiny_llama(layers=2, seed=21), fx.tiny_llama(layers=1, seed=22)
    tok = fx.tokenizer(bos=True, pad="<pad>")
    kwargs = dict(teacher_tokenizer=tok, student_tokenizer=tok, progress=False, layers=[(2, 1), (1, 1)])
    full = evaluate_pair(teacher, student, TEXTS, **kwargs)
    assert full.cross_layer_cka is not None and full.options["cross_layer"] is True
    width = teacher.config.hidden_size
    state = 8 * (3 * width) * (2 * student.config.hidden_size)  # 3 x 2 hidden states
    assert causal_lm.cross_layer_skipped([width] * 3, [student.config.hidden_size] * 2) is None
    monkeypatch.setattr(causal_lm, "CROSS_LAYER_STATE_BUDGET", state - 1)
    with pytest.warns(UserWarning, match="cross-layer CKA matrix was not computed"):
        cut = evaluate_pair(teacher, student, TEXTS, **kwargs)
    assert cut.cross_layer_cka is None and cut.options["cross_layer"] is False
    assert any("cross-layer CKA matrix was not computed: 3 x 2 hidden states" in note for note in cut.notes)
    # the pairs asked for are computed as before, from their own sums (not the matrix's): equal to rounding
    for key in ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement"):
        assert getattr(cut, key) == pytest.approx(getattr(full, key), rel=1e-9, abs=1e-12), key
    assert cut.layer_pairs == full.layer_pairs == [(2, 1), (1, 1)]
    np.testing.assert_allclose(cut.pair_scores, full.pair_scores, rtol=1e-9)
    np.testing.assert_allclose([full.cross_layer_cka[2][1], full.cross_layer_cka[1][1]], full.pair_scores, rtol=1e-12)
