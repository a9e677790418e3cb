"""Fixtures for the distillation tests: tiny models on one thread, tokenizer and templated data."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds synchronisation (much slower on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    from knowledge_retention.distillation.pretrained import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_data(tokenizer):
    """256 templated sentiment sentences, tokenised (with ``idx``), and the padding collator."""
    from knowledge_retention.distillation.data import make_collator, synthetic_sentiment, tokenize_dataset

    return tokenize_dataset(synthetic_sentiment(256, seed=1), tokenizer, max_length=32), make_collator(tokenizer)


def tiny_bert(tokenizer, *, layers=4, hidden=32, heads=4, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=2,
    )
    return BertForSequenceClassification(config)


@pytest.fixture
def make_bert(tokenizer):
    def make(**kwargs):
        return tiny_bert(tokenizer, **kwargs)

    return make


@pytest.fixture(scope="session")
def trained_teacher(tokenizer, tiny_data, tmp_path_factory):
    """A 4 x 32 teacher trained on the templated data (confident, non-uniform logits)."""
    from knowledge_retention.distillation.runs import make_training_args
    from knowledge_retention.distillation.trainer import DistillationTrainer

    torch.set_num_threads(1)
    dataset, collator = tiny_data
    teacher = tiny_bert(tokenizer)
    args = make_training_args(tmp_path_factory.mktemp("teacher"), learning_rate=5e-3, epochs=6, progress=False,
                              logging_steps=1000)
    DistillationTrainer(teacher, args, method="hard", train_dataset=dataset, data_collator=collator).train()
    return teacher.eval()
