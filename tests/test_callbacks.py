"""KRSCallback in a real transformers.Trainer run with tiny random models (CPU, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
import text_fixtures as fx  # noqa: E402
import torch  # noqa: E402
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from knowledge_retention import KRSCallback, evaluate_pair  # noqa: E402


class _Logger(TrainerCallback):
    """Stands in for a report_to integration: records every on_log call (it is listed *before* KRSCallback)."""

    def __init__(self) -> None:
        self.logged: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs or {}))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_set(tok, n=24):
    import datasets

    texts = fx.sentences(n, seed=21)
    enc = tok(texts, truncation=True, max_length=32)
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                       "labels": [i % 2 for i in range(n)]})


def test_krs_callback_logs_what_evaluate_pair_gives_on_the_final_student(tmp_path):
    tok = fx.bert_tokenizer()
    teacher = fx.tiny_bert(num_layers=4, hidden=48, seed=0)
    student = fx.tiny_bert(num_layers=2, hidden=32, seed=1).float().train()
    eval_texts = {"sentence": fx.sentences(19, seed=22), "label": [i % 2 for i in range(19)]}
    logger = _Logger()
    callback = KRSCallback(teacher, eval_texts, tok, layers="uniform", pooling="mean", batch_size=4,
                           label_column="label")
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3,
        eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2, metric_for_best_model="krs",
        greater_is_better=True, report_to=[], use_cpu=True, logging_steps=2, disable_tqdm=True, seed=0,
    )
    train = _train_set(tok)
    trainer = Trainer(model=student, args=args, train_dataset=train, eval_dataset=train.select(range(8)),
                      data_collator=DataCollatorWithPadding(tok), callbacks=[logger, callback])
    calls = {"n": 0}
    forward = teacher.forward

    def counted(*a, **k):
        calls["n"] += 1
        return forward(*a, **k)

    teacher.forward = counted
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2, 4]
    for entry in evals:
        assert {"eval_krs", "eval_fss", "eval_aoag", "eval_cka_t2_s1", "eval_cka_t4_s2"} <= set(entry)
        assert 0.0 <= entry["eval_krs"] <= 1.0
    assert len({e["eval_krs"] for e in evals}) == 2  # the student changes between evaluations
    # the teacher ran for one pass over the 19 texts (5 batches + the probe), not once per evaluation
    assert calls["n"] == 1 + 5
    # the values reach a report_to-style logger listed before the callback, and the best-model tracking
    logged = [e for e in logger.logged if "eval_loss" in e]
    assert [e["eval_krs"] for e in logged] == [e["eval_krs"] for e in evals]
    assert trainer.state.best_metric == pytest.approx(max(e["eval_krs"] for e in evals), abs=0)
    assert [h["step"] for h in callback.history] == [2, 4]
    # the last evaluation is what evaluate_pair gives on the final student (live teacher, no cache)
    direct = evaluate_pair(teacher, trainer.model, eval_texts, teacher_tokenizer=tok, student_tokenizer=tok,
                           layers="uniform", pooling="mean", batch_size=4, label_column="label", cross_layer=False,
                           progress=False)
    last = evals[-1]
    for key in ("krs", "fss", "aoag"):
        assert abs(last[f"eval_{key}"] - getattr(direct, key)) < 1e-12, key
    np.testing.assert_allclose([last["eval_cka_t2_s1"], last["eval_cka_t4_s2"]], direct.pair_linear_cka, atol=1e-12)


def test_krs_callback_options_are_checked():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['layer'\]"):
        KRSCallback(None, ["a"], layer="final")
    with pytest.raises(TypeError, match=r"sets \['teacher_cache'\] itself"):
        KRSCallback(None, ["a"], teacher_cache="x")
    # the evaluation texts are checked when the callback is built, not at the first evaluation
    with pytest.raises(TypeError, match=r"`eval_dataset` must be a datasets.Dataset, a list of strings"):
        KRSCallback(None, None)
    with pytest.raises(ValueError, match=r"`text_column='sentence'` is not a column of `eval_dataset`; "
                                         r"available columns: \['text'\]"):
        KRSCallback(None, {"text": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=r"`eval_dataset` is empty"):
        KRSCallback(None, [])
    KRSCallback(fx.tiny_bert(1, 16), {"text": ["a", "b", "c"]}, text_column="text")  # the option is honoured
    with pytest.raises(TypeError, match=r"`teacher` must be a torch.nn.Module or a local path"):
        KRSCallback(None, {"text": ["a", "b", "c"]}, text_column="text")  # and the teacher is checked too


def test_preserved_random_state_restores_every_generator():
    """What KRSCallback.score and DistillationTrainer.evaluate run inside: draws from Python's, NumPy's and
    torch's global generators inside the block leave the next draws outside it unchanged."""
    import random

    from knowledge_retention._random import preserved_random_state

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = draws()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with preserved_random_state():
        draws()
        list(torch.utils.data.DataLoader(list(range(4))))  # a DataLoader iterator takes a seed from torch's
    assert draws() == expected


@pytest.mark.slow
def test_krs_callback_under_ddp_gathers_the_shards(tmp_path, torchrun):
    """2 processes (the ``callback`` scenario: torchrun, CPU, gloo): each process scores its shard of the
    evaluation texts and the sums are gathered, so every process logs the KRS that one process gives on
    the final student (evaluate_pair, float32 models: 1e-6)."""
    from distributed import callback as launch
    from transformers import AutoModelForSequenceClassification

    ranks = torchrun("callback", tmp_path).ranks
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["history"] == ranks[1]["history"] and [h["step"] for h in ranks[0]["history"]] == [2, 4]
    final = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    direct = evaluate_pair(fx.tiny_bert(num_layers=4, hidden=48, seed=0), final, launch.EVAL_TEXTS,
                           teacher_tokenizer=fx.bert_tokenizer(), student_tokenizer=fx.bert_tokenizer(),
                           cross_layer=False, progress=False, **launch.OPTIONS)
    for rank in ranks:
        last = rank["evals"][-1]
        assert last["step"] == 4
        for key in ("krs", "fss", "aoag"):
            assert last[f"eval_{key}"] == pytest.approx(getattr(direct, key), rel=1e-6), key
