"""Tests of `knowledge_retention.extraction`: tiny random models (float64, no download) and MiniLM.

References are independent of the streaming code: the core functions on the kept full arrays
(`compute_krs`, `cross_layer_cka`, `per_example_kl`), and each sentence run alone through the model
(no padding) for the pooled features and logits.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import text_fixtures as fx
import torch
from distributed import extraction as launch

from knowledge_retention import compute_krs, cross_layer_cka, per_example_kl
from knowledge_retention.extraction import (
    ExtractionResult,
    evaluate_pair,
    layer_names,
    pool_hidden_states,
    resolve_layer_pairs,
    uniform_layer_mapping,
)

TOL = 1e-10


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two threads on two shared, busy cores are ~30x slower than one for these tiny models.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return fx.bert_tokenizer()


@pytest.fixture(scope="module")
def teacher():
    return fx.tiny_bert(num_layers=4, hidden=48)


@pytest.fixture(scope="module")
def student():
    return fx.tiny_distilbert(num_layers=2, dim=32)


@pytest.fixture(scope="module")
def data():
    texts = fx.sentences(37, seed=3)
    return {"sentence": texts, "label": [i % 2 for i in range(37)], "idx": list(range(37))}


def _run(teacher, student, dataset, tok, **kwargs) -> ExtractionResult:
    kwargs.setdefault("progress", False)
    return evaluate_pair(teacher, student, dataset, teacher_tokenizer=tok, student_tokenizer=tok, **kwargs)


def _alone(model, tokenizer, text, layer, pooling):
    """Reference: one sentence through the model without any padding -> (pooled feature, logits)."""
    enc = tokenizer([text], return_tensors="pt")
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask") or model.config.model_type == "bert"}
    with torch.inference_mode():
        out = model(**enc, output_hidden_states=True)
    pooled = pool_hidden_states(out.hidden_states[layer], enc["attention_mask"], pooling)
    return pooled[0].numpy(), out.logits[0].numpy()


# --- layer selection ---------------------------------------------------------------------------------


def test_uniform_layer_mapping():
    assert uniform_layer_mapping(12, 6) == [(2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]
    assert uniform_layer_mapping(6, 3) == [(2, 1), (4, 2), (6, 3)]
    assert uniform_layer_mapping(4, 4, include_embeddings=True) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert uniform_layer_mapping(12, 4) == [(3, 1), (6, 2), (9, 3), (12, 4)]
    with pytest.raises(ValueError, match="student_layers"):
        uniform_layer_mapping(3, 6)


def test_resolve_layer_pairs():
    assert resolve_layer_pairs("final", 13, 7) == [(12, 6)]
    assert resolve_layer_pairs("uniform", 13, 7) == uniform_layer_mapping(12, 6)
    assert resolve_layer_pairs("all", 13, 7) == [(0, 0), *uniform_layer_mapping(12, 6)]
    assert resolve_layer_pairs("all", 5, 5) == [(i, i) for i in range(5)]
    assert resolve_layer_pairs([(-1, -1), (0, 1)], 5, 3) == [(4, 2), (0, 1)]
    assert layer_names(3) == ["embeddings", "layer_1", "layer_2"]
    with pytest.raises(ValueError, match=r"teacher layer 5 is out of range; the teacher has 5 hidden states"):
        resolve_layer_pairs([(5, 0)], 5, 3)
    with pytest.raises(ValueError, match=r"`layers`\[1\]: student layer -4 is out of range"):
        resolve_layer_pairs([(0, 0), (1, -4)], 5, 3)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_layer_pairs("last", 5, 3)
    with pytest.raises(ValueError, match="no deeper than the teacher"):
        resolve_layer_pairs("uniform", 3, 5)
    with pytest.raises(TypeError, match="must be an int"):
        resolve_layer_pairs([(1.0, 0)], 5, 3)
    with pytest.raises(ValueError, match="empty list"):
        resolve_layer_pairs([], 5, 3)


# --- pooling ----------------------------------------------------------------------------------------


def test_pooling_picks_real_tokens_under_right_and_left_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float64).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool_hidden_states(hidden, right, "last").tolist() == [hidden[0, 1].tolist(), hidden[1, 3].tolist()]
    assert pool_hidden_states(hidden, left, "last").tolist() == [hidden[0, 3].tolist(), hidden[1, 3].tolist()]
    assert pool_hidden_states(hidden, right, "cls").tolist() == [hidden[0, 0].tolist(), hidden[1, 0].tolist()]
    assert pool_hidden_states(hidden, left, "cls").tolist() == [hidden[0, 2].tolist(), hidden[1, 0].tolist()]
    assert torch.equal(pool_hidden_states(hidden, left, "mean")[0], hidden[0, 2:].mean(0))
    half = pool_hidden_states(hidden.half(), right, "mean")
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="no real token"):
        pool_hidden_states(hidden, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), "mean")
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        pool_hidden_states(hidden, right, "max")  # type: ignore[arg-type]


def test_mean_pooling_ignores_padding(teacher, tok):
    """A sentence padded inside a batch pools to the same vector as the sentence alone."""
    texts = ["good", "the film was never very good but the music was warm and clever", "a b c"]
    result = _run(teacher, teacher, texts, tok, pooling="mean", layers=[(4, 4), (2, 2)], keep_arrays=True,
                  cross_layer=False, batch_size=3)
    for i, text in enumerate(texts):
        for k, layer in enumerate((4, 2)):
            alone, logits = _alone(teacher, tok, text, layer, "mean")
            np.testing.assert_allclose(result.teacher_features[k][i], alone, rtol=0, atol=TOL)
        np.testing.assert_allclose(result.teacher_logits[i], logits, rtol=0, atol=TOL)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_pooling_on_gpt2_under_right_and_left_padding(teacher, tok, padding_side):
    """GPT-2 gets a pad token (EOS) and, pooled at its last real token, matches each sentence run alone."""
    gpt2, gtok = fx.tiny_gpt2(), fx.word_tokenizer(padding_side=padding_side)
    assert gtok.pad_token is None and gpt2.config.pad_token_id is None
    texts = fx.sentences(6, seed=5, min_words=1, max_words=9)
    result = evaluate_pair(teacher, gpt2, texts, teacher_tokenizer=tok, student_tokenizer=gtok, pooling="last",
                           keep_arrays=True, batch_size=6, progress=False)
    assert gtok.pad_token == gtok.eos_token and gpt2.config.pad_token_id == gtok.eos_token_id
    for i, text in enumerate(texts):
        alone, logits = _alone(gpt2, gtok, text, -1, "last")
        np.testing.assert_allclose(result.student_features[0][i], alone, rtol=0, atol=TOL)
        np.testing.assert_allclose(result.student_logits[i], logits, rtol=0, atol=TOL)


# --- streaming == arrays, batch-size invariance ----------------------------------------------------------


def test_streaming_equals_arrays(teacher, student, tok, data, monkeypatch):
    monkeypatch.setattr("knowledge_retention.extraction.streams.FLUSH_ROWS", 10)
    all_pairs = [(i, j) for i in range(5) for j in range(3)]
    result = _run(teacher, student, data, tok, label_column="label", pooling="mean", layers=all_pairs,
                  keep_arrays=True, batch_size=5)
    assert result.num_examples == 37 and result.example_indices.tolist() == list(range(37))
    assert result.teacher_logits.shape == (37, 2) and result.labels.tolist() == data["label"]
    reference = compute_krs(result.teacher_features, result.student_features, result.teacher_logits,
                            result.student_logits, task="nlp")
    for key in ("fss", "aoag", "krs"):
        assert abs(getattr(result, key) - reference[key]) < TOL, key
    teacher_layers = [result.teacher_features[3 * i] for i in range(5)]
    student_layers = result.student_features[:3]
    np.testing.assert_allclose(result.cross_layer_cka, cross_layer_cka(teacher_layers, student_layers), rtol=0, atol=TOL)
    assert result.cross_layer_cka.shape == (5, 3)
    assert result.teacher_layer_names == layer_names(5) and result.student_layer_names == layer_names(3)
    kl = per_example_kl(result.teacher_logits, result.student_logits)
    assert abs(result.mean_kl - kl.mean()) < TOL
    top1 = np.mean(result.teacher_logits.argmax(1) == result.student_logits.argmax(1))
    assert abs(result.top1_agreement - top1) < TOL
    # the kept features are the models' own outputs for each sentence alone
    for i in (0, 17, 36):
        alone, logits = _alone(student, tok, data["sentence"][i], 2, "mean")
        np.testing.assert_allclose(result.student_features[2][i], alone, rtol=0, atol=TOL)
        np.testing.assert_allclose(result.student_logits[i], logits, rtol=0, atol=TOL)


def test_batch_size_does_not_change_the_result(teacher, student, tok, data, monkeypatch):
    monkeypatch.setattr("knowledge_retention.extraction.streams.FLUSH_ROWS", 7)  # several flushes per run
    runs = [_run(teacher, student, data, tok, layers="uniform", pooling="cls", batch_size=bs) for bs in (3, 16, 37)]
    base = runs[0]
    assert base.layer_pairs == [(2, 1), (4, 2)]
    for other in runs[1:]:
        for key in ("fss", "aoag", "krs", "mean_kl", "top1_agreement"):
            assert abs(getattr(other, key) - getattr(base, key)) < TOL, key
        np.testing.assert_allclose(other.pair_scores, base.pair_scores, rtol=0, atol=TOL)
        np.testing.assert_allclose(other.cross_layer_cka, base.cross_layer_cka, rtol=0, atol=TOL, equal_nan=True)
        np.testing.assert_allclose(other.teacher_logits, base.teacher_logits, rtol=0, atol=TOL)
    # cls pooling: the embedding output of [CLS] is the same for every example, CKA undefined there
    assert np.isnan(base.cross_layer_cka[0]).all() and np.isnan(base.cross_layer_cka[:, 0]).all()


@pytest.mark.parametrize("fss_method", ["debiased_cka", "cosine", "rbf_cka"])
def test_other_fss_methods_equal_arrays(teacher, tok, data, fss_method):
    narrow_twin = fx.tiny_bert(num_layers=2, hidden=48, seed=7)
    result = _run(teacher, narrow_twin, data, tok, layers="uniform", pooling="mean", fss_method=fss_method,
                  aoag_method="js", keep_arrays=True, cross_layer=False, batch_size=8)
    assert result.cross_layer_cka is None and result.aoag_method == "js"
    reference = compute_krs(result.teacher_features, result.student_features, result.teacher_logits,
                            result.student_logits, task="nlp", fss_method=fss_method, aoag_method="js")
    for key in ("fss", "aoag", "krs"):
        assert abs(getattr(result, key) - reference[key]) < TOL, key


def test_alpha_beta_and_regression_heads(teacher, tok, data):
    t, s = fx.tiny_bert(num_labels=1, seed=4), fx.tiny_bert(num_layers=2, num_labels=1, seed=5)
    result = _run(t, s, data, tok, task="regression", alpha=0.2, keep_arrays=True, batch_size=10)
    assert (result.alpha, result.beta, result.aoag_method, result.mean_kl) == (0.2, 0.8, "mse", None)
    reference = compute_krs(result.teacher_features, result.student_features, result.teacher_logits,
                            result.student_logits, task="regression", alpha=0.2)
    assert abs(result.krs - reference["krs"]) < TOL
    with pytest.raises(ValueError, match="aoag_method='mse'"):
        _run(t, s, data, tok, task="nlp")


# --- inputs, heads, loading, result ---------------------------------------------------------------------


def test_dataset_kinds_and_max_examples(teacher, student, tok, data):
    """A datasets.Dataset, a dict of columns and a list of strings give the same numbers."""
    import datasets

    arrow = datasets.Dataset.from_dict(data)
    runs = {
        "arrow": _run(teacher, student, arrow, tok, label_column="label", max_examples=30, batch_size=8),
        "dict": _run(teacher, student, data, tok, label_column="label", max_examples=30, batch_size=8),
        "list": _run(teacher, student, data["sentence"][:30], tok, batch_size=8),
    }
    for run in runs.values():
        assert run.num_examples == 30 and run.teacher_logits.shape == (30, 2)
        for key in ("fss", "aoag", "krs"):
            assert abs(getattr(run, key) - getattr(runs["dict"], key)) < TOL, key
    assert runs["arrow"].labels.tolist() == data["label"][:30] and runs["list"].labels is None
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['validation'\]; pass one split"):
        _run(teacher, student, datasets.DatasetDict({"validation": arrow}), tok)



def test_headless_student_gives_fss_only(teacher, tok, data):
    bare = fx.tiny_bert(num_layers=2, head=False, seed=6)
    with pytest.warns(UserWarning, match="AOAg and KRS were not computed .*the student .* returns no `logits`"):
        result = _run(teacher, bare, data, tok)
    assert result.aoag is None and result.krs is None and result.student_logits is None
    assert 0.0 <= result.fss <= 1.0
    assert any("AOAg and KRS were not computed" in note and "student" in note for note in result.notes)
    with pytest.warns(UserWarning, match="not computed"):
        fss_only = _run(teacher, bare, data, tok, alpha=1.0)
    assert fss_only.krs == pytest.approx(result.fss, abs=1e-12)  # beta = 0: KRS is FSS


def test_loading_from_paths(tmp_path, teacher, student, tok, data):
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    student.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    fx.tiny_bert(num_layers=2, head=False).save_pretrained(tmp_path / "bare")
    tok.save_pretrained(tmp_path / "bare")
    from_paths = evaluate_pair(str(tmp_path / "teacher"), tmp_path / "student", data, progress=False)
    from_objects = _run(teacher, student, data, tok)
    for key in ("fss", "aoag", "krs"):
        assert getattr(from_paths, key) == pytest.approx(getattr(from_objects, key), abs=1e-6), key
    assert from_paths.options["teacher"] == str(tmp_path / "teacher")
    with pytest.warns(UserWarning, match="no classification head and was loaded with AutoModel"):
        headless = evaluate_pair(str(tmp_path / "teacher"), str(tmp_path / "bare"), data, progress=False)
    assert headless.aoag is None
    assert any("no classification head and was loaded with AutoModel" in note for note in headless.notes)


def test_to_dict_is_json_safe(teacher, student, tok, data):
    result = _run(teacher, student, data, tok, label_column="label", keep_arrays=True, batch_size=16)
    plain = json.loads(json.dumps(result.to_dict(include_arrays=True), allow_nan=False))
    assert plain["krs"] == result.krs and plain["num_examples"] == 37
    assert plain["cross_layer_cka"]["matrix"][0][0] is None  # NaN (constant [CLS] embeddings) -> null
    assert plain["layer_pairs"][0]["teacher_layer"] == "layer_4"
    assert plain["options"]["batch_size"] == 16 and plain["options"]["layer_pairs"] == [[4, 2]]
    assert set(plain["timings"]) >= {"teacher_forward_s", "student_forward_s", "examples_per_s"}
    assert len(plain["student_logits"]) == 37
    assert "teacher_logits" not in result.to_dict()


# --- errors ---------------------------------------------------------------------------------------------


class _NoHiddenStates(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return {"logits": self.linear(input_ids[:, :1].float())}


def test_errors(teacher, student, tok, data):
    with pytest.raises(ValueError, match="The student model returned no hidden states"):
        _run(teacher, _NoHiddenStates(), data, tok)
    with pytest.raises(ValueError, match="The teacher predicts 2 labels and the student 3"):
        _run(teacher, fx.tiny_distilbert(num_labels=3), data, tok)
    with pytest.raises(ValueError, match="`dataset` is empty"):
        _run(teacher, student, [], tok)
    with pytest.raises(ValueError, match=r"`text_column='sentence'` is not a column of `dataset`; available columns: \['text'\]"):
        _run(teacher, student, {"text": ["a b"]}, tok)
    with pytest.raises(ValueError, match=r"`label_column='gold'` is not a column.*'sentence', 'label', 'idx'"):
        _run(teacher, student, data, tok, label_column="gold")
    with pytest.raises(ValueError, match="plain list of texts"):
        _run(teacher, student, ["a b"], tok, label_column="label")
    with pytest.raises(ValueError, match="teacher layer 9 is out of range; the teacher has 5 hidden states"):
        _run(teacher, student, data, tok, layers=[(9, 1)])
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        _run(teacher, student, data, tok, pooling="max")
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        _run(teacher, student, data, tok, batch_size=0)
    with pytest.raises(ValueError, match="keep_arrays=True"):
        _run(teacher, student, data, tok, fss_method="rbf_cka")
    with pytest.raises(ValueError, match="`aoag_method` must be one of"):
        _run(teacher, student, data, tok, aoag_method="mask_iou")
    with pytest.raises(ValueError, match="needs equal widths"):
        _run(teacher, student, data, tok, fss_method="cosine")
    with pytest.raises(ValueError, match="`mixed_precision` must be one of"):
        _run(teacher, student, data, tok, mixed_precision="fp8")
    with pytest.raises(TypeError, match="`teacher` must be a torch.nn.Module or a local path"):
        _run(42, student, data, tok)
    with pytest.raises(TypeError, match="`dataset` must be a datasets.Dataset"):
        _run(teacher, student, 3.5, tok)
    with pytest.raises(TypeError, match=r"`dataset\['sentence'\]` must hold strings; example 1"):
        _run(teacher, student, {"sentence": ["a", 2, "c"]}, tok)
    with pytest.raises(TypeError, match="`student_tokenizer` is required"):
        evaluate_pair(teacher, student, data, teacher_tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="Layer pair .*embeddings.*pooling='mean'"):
        _run(teacher, student, data, tok, layers=[(0, 0)])


def test_truncation_warns_once_with_the_count(teacher, tok):
    gpt2, gtok = fx.tiny_gpt2(n_positions=16), fx.word_tokenizer()
    texts = fx.sentences(10, seed=8, min_words=2, max_words=8)
    texts[2] = texts[5] = texts[9] = " ".join(["good"] * 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_pair(teacher, gpt2, texts, teacher_tokenizer=tok, student_tokenizer=gtok, pooling="last",
                               batch_size=2, progress=False)
    ours = [w for w in caught if "truncated" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "3 of 10 examples for the student (limit 16 tokens)" in str(ours[0].message)
    assert result.truncation["student"] == {"limit": 16, "limit_source": "model", "num_truncated": 3}
    assert result.truncation["teacher"]["num_truncated"] == 0
    # a user-chosen max_length truncates silently, and is recorded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = evaluate_pair(teacher, gpt2, texts, teacher_tokenizer=tok, student_tokenizer=gtok, pooling="last",
                              max_length=4, progress=False)
    assert quiet.truncation["student"]["limit_source"] == "max_length"
    assert quiet.truncation["student"]["num_truncated"] >= 3


# --- real weights ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_teacher_from_path_vs_layer_subset_student():
    """MiniLM (BertModel, no head) loaded by path vs a 3-layer student made of its blocks 0, 2, 4."""
    from transformers import AutoModel, AutoTokenizer, BertModel

    path = fx.minilm_dir()
    full = AutoModel.from_pretrained(str(path))
    config = full.config.to_dict() | {"num_hidden_layers": 3}
    student = BertModel(type(full.config).from_dict(config), add_pooling_layer=False).eval()
    state = {}
    for key, value in full.state_dict().items():
        if key.startswith("encoder.layer."):
            block = int(key.split(".")[2])
            if block % 2:
                continue
            key = key.replace(f"encoder.layer.{block}.", f"encoder.layer.{block // 2}.", 1)
        state[key] = value
    student.load_state_dict(state, strict=False)
    texts = [line.split("\t")[0] for line in _sst2_lines(24)] or fx.sentences(24)
    with pytest.warns(UserWarning, match="the teacher .* has no classification head"):
        result = evaluate_pair(str(path), student, texts, student_tokenizer=AutoTokenizer.from_pretrained(str(path)),
                               layers="uniform", pooling="mean", batch_size=8, progress=False)
    assert result.layer_pairs == [(2, 1), (4, 2), (6, 3)]
    assert result.aoag is None and result.krs is None
    assert result.cross_layer_cka.shape == (7, 4)
    # identical embeddings and first block -> CKA 1; later blocks see different inputs -> below 1
    assert result.cross_layer_cka[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert result.cross_layer_cka[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < result.fss < 1.0


def _sst2_lines(n: int) -> list[str]:
    path = fx.sst2_dev()
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8").splitlines()[1 : n + 1]


# --- accelerate: two processes == one -------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, torchrun):
    """2 CPU processes (torchrun, gloo: the ``extraction`` scenario of ``tests/distributed``, which asks
    for ``Accelerator(cpu=True)``) on 37 examples, batch 4 (and 3 examples, batch 4); every process
    returns the full result, and the test also checks that two really ran.
    """
    ranks = torchrun("extraction", tmp_path).ranks
    cases = {**launch.CASES, "own_accelerator": launch.CASES["uneven"]}
    for name, (n, batch_size) in cases.items():
        single = launch.run_case(n, batch_size)
        assert single["num_processes"] == 1
        for dist in ranks:  # every process returns the full result
            assert dist[name]["num_processes"] == 2
            assert dist[name]["num_examples"] == single["num_examples"] == n
            assert dist[name]["example_indices"] == list(range(n))
            assert dist[name]["labels"] == single["labels"]
            for key in ("fss", "aoag", "krs", "mean_kl", "top1_agreement"):
                assert math.isclose(dist[name][key], single[key], rel_tol=1e-6), (name, key)
            for got, want in zip(dist[name]["layer_pairs"], single["layer_pairs"], strict=True):
                assert math.isclose(got["score"], want["score"], rel_tol=1e-6)
            np.testing.assert_allclose(dist[name]["student_logits"], single["student_logits"], rtol=1e-6)
            np.testing.assert_allclose(dist[name]["teacher_features"], single["teacher_features"], rtol=1e-6)
            np.testing.assert_allclose(np.array(dist[name]["cross_layer_cka"]["matrix"], dtype=float),
                                       np.array(single["cross_layer_cka"]["matrix"], dtype=float), rtol=1e-6)
    # evaluate_students over 2 processes == one evaluate_pair per student in one process; the teacher
    # cache recorded by 2 processes is replayed by both (the teacher is not run) with the same numbers
    n, batch_size = launch.STUDENTS_CASE
    texts = fx.sentences(n, seed=3)
    dataset = {"sentence": texts, "label": [i % 2 for i in range(n)]}
    for name, model in launch.students().items():
        single = evaluate_pair(fx.tiny_bert(), model, dataset, teacher_tokenizer=fx.bert_tokenizer(),
                               student_tokenizer=fx.bert_tokenizer(), label_column="label", layers="uniform",
                               pooling="mean", batch_size=batch_size, keep_arrays=True, progress=False)
        single = single.to_dict(include_arrays=True)
        for dist in ranks:
            for case in ("students", "students_recorded", "students_replayed"):
                got = dist[case][name]
                assert got["num_processes"] == 2 and got["example_indices"] == list(range(n)), (case, name)
                for key in ("fss", "aoag", "krs", "mean_kl", "top1_agreement"):
                    assert math.isclose(got[key], single[key], rel_tol=1e-6), (case, name, key)
                np.testing.assert_allclose(got["student_logits"], single["student_logits"], rtol=1e-6)
                np.testing.assert_allclose(got["teacher_features"], single["teacher_features"], rtol=1e-6)
            assert dist["students_recorded"][name]["teacher_cache"]["reused"] is False
            assert dist["students_replayed"][name]["teacher_cache"]["reused"] is True
            for key in ("fss", "aoag", "krs"):
                assert dist["students_replayed"][name][key] == dist["students_recorded"][name][key]


def test_bf16_autocast_on_cpu_stays_close_to_fp32(tok, data):
    """Mixed precision runs the models in bf16; pooled features and sums stay float64."""
    t32, s32 = fx.tiny_bert().float(), fx.tiny_distilbert().float()
    full = _run(t32, s32, data, tok, pooling="mean", keep_arrays=True, batch_size=16)
    low = _run(t32, s32, data, tok, pooling="mean", keep_arrays=True, batch_size=16, mixed_precision="bf16")
    assert low.options["mixed_precision"] == "bf16" and low.teacher_features[0].dtype == np.float64
    assert not np.array_equal(low.teacher_features[0], full.teacher_features[0])  # bf16 really ran
    assert low.fss == pytest.approx(full.fss, abs=2e-2) and low.aoag == pytest.approx(full.aoag, abs=2e-2)


# --- several students, length grouping, teacher cache ------------------------------------------------------

_SCALARS = ("fss", "aoag", "krs", "mean_kl", "top1_agreement")


def _assert_same(got: ExtractionResult, want: ExtractionResult, tol: float = 1e-12) -> None:
    for key in _SCALARS:
        assert abs(getattr(got, key) - getattr(want, key)) <= tol, key
    np.testing.assert_allclose(got.pair_scores, want.pair_scores, rtol=0, atol=tol)
    np.testing.assert_allclose(got.pair_linear_cka, want.pair_linear_cka, rtol=0, atol=tol)
    if want.cross_layer_cka is None:
        assert got.cross_layer_cka is None
    else:
        np.testing.assert_allclose(got.cross_layer_cka, want.cross_layer_cka, rtol=0, atol=tol, equal_nan=True)
    assert got.example_indices.tolist() == want.example_indices.tolist()
    np.testing.assert_allclose(got.teacher_logits, want.teacher_logits, rtol=0, atol=tol)
    np.testing.assert_allclose(got.student_logits, want.student_logits, rtol=0, atol=tol)
    if want.labels is not None:
        assert got.labels.tolist() == want.labels.tolist()
    if want.teacher_features is not None:
        for g, w in zip(got.teacher_features + got.student_features, want.teacher_features + want.student_features,
                        strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=tol)


def test_evaluate_students_equals_one_evaluate_pair_per_student(teacher, student, tok, data, monkeypatch):
    """The teacher runs once for three students of different depth, width and head; every student's
    result equals its own evaluate_pair call (which recomputes the teacher) to 1e-12."""
    from knowledge_retention import evaluate_students as exported
    from knowledge_retention.extraction import evaluate_students

    assert exported is evaluate_students
    monkeypatch.setattr("knowledge_retention.extraction.streams.FLUSH_ROWS", 9)
    students = {"distil": student, "bert2": fx.tiny_bert(num_layers=2, hidden=32, seed=11),
                "bert3": fx.tiny_bert(num_layers=3, hidden=48, seed=12)}
    calls = {"n": 0}
    forward = teacher.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(teacher, "forward", counted)
    options = dict(label_column="label", layers="uniform", pooling="mean", keep_arrays=True, batch_size=5,
                   progress=False)
    together = evaluate_students(teacher, students, data, teacher_tokenizer=tok, student_tokenizers=tok,
                                 cross_layer=["distil", "bert3"], **options)
    assert calls["n"] == 1 + math.ceil(37 / 5)  # the probe + one pass over the batches, for all three
    assert list(together) == list(students)
    for name, model in students.items():
        alone = evaluate_pair(teacher, model, data, teacher_tokenizer=tok, student_tokenizer=tok,
                              cross_layer=name != "bert2", **options)
        _assert_same(together[name], alone)
        assert together[name].options["student_name"] == name
    assert together["bert2"].cross_layer_cka is None and together["bert3"].cross_layer_cka.shape == (5, 4)
    with pytest.raises(ValueError, match=r"`cross_layer` names \['nope'\]"):
        evaluate_students(teacher, students, data, teacher_tokenizer=tok, student_tokenizers=tok,
                          cross_layer=["nope"], progress=False)
    with pytest.raises(ValueError, match="`students` is empty"):
        evaluate_students(teacher, {}, data, teacher_tokenizer=tok, progress=False)
    with pytest.raises(TypeError, match=r"`students\['x'\]` must be a torch.nn.Module"):
        evaluate_students(teacher, {"x": 3}, data, teacher_tokenizer=tok, progress=False)
    with pytest.raises(TypeError, match=r"`student_tokenizers\['x'\]` is required"):
        evaluate_students(teacher, {"x": student}, data, teacher_tokenizer=tok, progress=False)


def test_length_grouping_gives_the_same_results_and_indices(teacher, student, tok, monkeypatch):
    """Grouped batches (longest first) vs dataset order: same sums to 1e-12, rows in example order,
    the per-example logits of example i are those of sentence i alone; and grouping really cuts padding."""
    from knowledge_retention.extraction.batching import length_grouped_order, token_lengths
    from knowledge_retention.extraction.inputs import TextSource

    monkeypatch.setattr("knowledge_retention.extraction.streams.FLUSH_ROWS", 6)
    texts = fx.sentences(41, seed=9, min_words=1, max_words=30)
    dataset = {"sentence": texts, "label": [i % 2 for i in range(41)]}
    options = dict(label_column="label", layers=[(4, 2), (2, 1)], pooling="mean", keep_arrays=True, batch_size=4)
    grouped = _run(teacher, student, dataset, tok, group_by_length=True, **options)
    ordered = _run(teacher, student, dataset, tok, group_by_length=False, **options)
    _assert_same(grouped, ordered)
    assert grouped.example_indices.tolist() == list(range(41)) and grouped.labels.tolist() == dataset["label"]
    for i in (0, 13, 40):
        _, logits = _alone(student, tok, texts[i], 2, "mean")
        np.testing.assert_allclose(grouped.student_logits[i], logits, rtol=0, atol=TOL)
    assert grouped.options["group_by_length"] and not ordered.options["group_by_length"]
    lengths = token_lengths(tok, TextSource(dataset), None)
    assert lengths.tolist() == [len(tok(t)["input_ids"]) for t in texts]
    order = length_grouped_order(lengths)
    assert sorted(order.tolist()) == list(range(41)) and np.all(np.diff(lengths[order]) <= 0)

    def padded(idx):
        return sum(4 * max(lengths[idx[k:k + 4]]) for k in range(0, 41, 4))

    assert padded(order) < 0.8 * padded(np.arange(41))  # the point of it: far fewer padded tokens


def test_teacher_cache_on_disk_replays_the_teacher(tmp_path, teacher, student, tok, data, monkeypatch):
    """The first call records safetensors chunks; the second never runs the teacher and gives the same
    numbers; a changed teacher weight, text or option misses the cache."""
    from knowledge_retention.extraction import TeacherCache, evaluate_students

    monkeypatch.setattr("knowledge_retention.extraction.teacher_cache.CHUNK_ROWS", 10)  # several chunks
    options = dict(label_column="label", layers="uniform", pooling="mean", keep_arrays=True, batch_size=4,
                   progress=False, teacher_tokenizer=tok, student_tokenizer=tok)
    first = evaluate_pair(teacher, student, data, teacher_cache=tmp_path / "cache", **options)
    assert first.options["teacher_cache"]["reused"] is False
    entry = tmp_path / "cache" / first.options["teacher_cache"]["key"]
    files = sorted(p.name for p in entry.iterdir())
    assert "meta.json" in files and len([f for f in files if f.endswith(".safetensors")]) >= 4
    assert not any(f.endswith((".pkl", ".pt", ".bin")) for f in files)
    calls = {"n": 0}
    forward = teacher.forward

    def counted(*args, **kwargs):
        calls["n"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(teacher, "forward", counted)
    second = evaluate_pair(teacher, student, data, teacher_cache=TeacherCache(tmp_path / "cache"), **options)
    assert calls["n"] == 0 and second.options["teacher_cache"]["reused"] is True
    assert any("replayed from the teacher cache" in n for n in second.notes)
    _assert_same(second, first, tol=0.0)
    assert second.timings["teacher_forward_s"] == pytest.approx(first.timings["teacher_forward_s"])
    # other layers and students are served by the same entry (every teacher hidden state is recorded)
    other = evaluate_students(teacher, {"b": fx.tiny_bert(num_layers=2, seed=3)}, data, teacher_cache=tmp_path / "cache",
                              student_tokenizers=tok, **{k: v for k, v in options.items() if k != "student_tokenizer"}
                              | {"layers": "all"})["b"]
    assert calls["n"] == 0 and other.options["teacher_cache"]["reused"] is True
    fresh = evaluate_pair(teacher, fx.tiny_bert(num_layers=2, seed=3), data, **options | {"layers": "all"})
    _assert_same(other, fresh)
    # a change in the teacher's weights, the texts or an option misses it
    changed = {**data, "sentence": [*data["sentence"][:-1], "a different last sentence"]}
    evaluate_pair(teacher, student, changed, teacher_cache=tmp_path / "cache", **options)
    assert calls["n"] > 0
    calls["n"] = 0
    evaluate_pair(teacher, student, data, teacher_cache=tmp_path / "cache", **options | {"batch_size": 5})
    assert calls["n"] > 0
    calls["n"] = 0
    with torch.no_grad():
        teacher.classifier.bias.add_(1.0)
    try:
        evaluate_pair(teacher, student, data, teacher_cache=tmp_path / "cache", **options)
        assert calls["n"] > 0
    finally:
        with torch.no_grad():
            teacher.classifier.bias.sub_(1.0)
    with pytest.raises(TypeError, match="`teacher_cache` must be None, a folder path or a TeacherCache"):
        evaluate_pair(teacher, student, data, teacher_cache=3, **options)


def test_teacher_cache_in_memory(teacher, student, tok, data, monkeypatch):
    from knowledge_retention.extraction import TeacherCache

    cache = TeacherCache()
    options = dict(pooling="cls", batch_size=8, progress=False, teacher_tokenizer=tok, student_tokenizer=tok)
    first = evaluate_pair(teacher, student, data, teacher_cache=cache, **options)
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: pytest.fail("the teacher ran"))
    second = evaluate_pair(teacher, student, data, teacher_cache=cache, **options)
    assert second.options["teacher_cache"] == {"location": "memory", "key": first.options["teacher_cache"]["key"],
                                               "reused": True}
    _assert_same(second, first, tol=0.0)
