"""Tiny random causal LMs (GPT-2 and Llama configurations) and word-level tokenizers for the causal-lm tests.

Also the evaluation both sides of ``tests/test_lm_extraction.py::test_two_processes_equal_one`` run
(:func:`run_case`; the 2-process side is the ``lm-extraction`` scenario of ``tests/distributed``).
Tests import it as ``import lm_fixtures as fx`` (``tests/`` is on ``sys.path`` under pytest).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

WORDS = ("the a film movie story cast acting music plot scene is was are very quite rather good bad great dull "
         "slow funny sad long short and but or not it its this that with of to in on for by as").split()
CASES = {"uneven": (37, 4), "tiny": (3, 4)}  # 37 texts over 2 x 4 leave a last round of 5 real rows


def sentences(n: int, seed: int = 0, min_words: int = 1, max_words: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.integers(min_words, max_words + 1, size=n)]


def tokenizer(*, bos: bool, pad: str | None, side: str = "right", extra: tuple[str, ...] = ()) -> Any:
    """A word-level fast tokenizer over :data:`WORDS`; ``bos`` adds ``<s>`` to every text (Llama-style),
    ``pad`` names the pad token (None: none, as GPT-2), ``side`` the padding side."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<pad2>"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS, *extra])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    kwargs: dict[str, Any] = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if pad is not None:
        kwargs["pad_token"] = pad
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=side, **kwargs)
    return fast


def vocab_size() -> int:
    return 5 + len(WORDS)


def tiny_gpt2(layers: int = 2, width: int = 32, seed: int = 0, vocab: int | None = None) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab or vocab_size(), n_positions=64, n_embd=width, n_layer=layers, n_head=2,
                        bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).double().eval()


def tiny_llama(layers: int = 2, width: int = 32, seed: int = 0, vocab: int | None = None) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab or vocab_size(), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random init gives near-uniform next-token distributions: spread the logits
        model.lm_head.weight.mul_(20.0)
    return model.double().eval()


def run_case(n: int, batch_size: int, accelerator: Any = None, distributed: bool = False) -> dict[str, Any]:
    """The evaluation both sides of the 2-process test run, as a JSON-safe dict."""
    from knowledge_retention.extraction import evaluate_pair

    texts = sentences(n, seed=5)
    result = evaluate_pair(
        tiny_llama(layers=3, seed=1), tiny_llama(layers=2, seed=2), texts,
        teacher_tokenizer=tokenizer(bos=True, pad="<pad>", side="left"),
        student_tokenizer=tokenizer(bos=True, pad="<pad2>", side="right"),
        layers="all", batch_size=batch_size, accelerator=accelerator, distributed=distributed, progress=False,
    )
    out = result.to_dict(include_arrays=True)
    out["num_processes"] = result.options["num_processes"]
    return out
