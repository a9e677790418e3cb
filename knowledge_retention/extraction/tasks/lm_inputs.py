"""What the causal-LM task reads before anything is scored: which models are causal LMs (from the object or
the folder's config, before loading), the one-vocabulary check, the token ids every model shares
(:func:`counted_positions`: which predictions count), the runner that pads them for each model, greedy
teacher continuations, and the probe that checks a model's logits are its output layer on its last state."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..._validation import InputError, InputTypeError, LoadError
from ..inputs import LOAD_FAILURES, hub_unreachable, model_config

__all__ = ["CountedBatch", "check_same_vocabulary", "counted_positions", "is_causal_lm", "load_causal_lm",
           "scored_examples"]

_PROBE_POSITIONS = 4  # positions of the probe text whose logits check the head (not all: T x V would be large)


# ----------------------------------------------------------------------------------------- loading
def _causal_lm_class_names() -> frozenset[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _is_lm_class_name(name: str) -> bool:
    return name.endswith(("ForCausalLM", "LMHeadModel")) or name in _causal_lm_class_names()


def is_causal_lm(model: Any, *, trust_remote_code: bool = False) -> bool:
    """True for a causal-LM object (``*ForCausalLM``, ``GPT2LMHeadModel``, ...) or a path / hub name
    whose ``config.architectures`` names one; False otherwise (and for anything unreadable)."""
    if isinstance(model, torch.nn.Module):
        named = any(_is_lm_class_name(cls.__name__) for cls in type(model).__mro__)  # subclasses too
        return named and callable(getattr(model, "get_output_embeddings", None))
    if not isinstance(model, (str, os.PathLike)):
        return False
    from transformers import AutoConfig

    path = os.path.expanduser(os.fspath(model))
    try:  # a folder, or a Hub name in the local cache
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError):
        if os.path.exists(path) or hub_unreachable() is not None:  # no retries against a Hub that cannot answer
            return False
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            return False
    if getattr(config, "is_encoder_decoder", False):
        return False
    return any(_is_lm_class_name(str(a)) for a in (getattr(config, "architectures", None) or []))


def load_causal_lm(model: Any, argument: str, *, trust_remote_code: bool = False,
                   load_kwargs: Mapping[str, Any] | None = None) -> tuple[torch.nn.Module, str | None]:
    """A causal-LM object as is, or ``AutoModelForCausalLM.from_pretrained(path)``; ``(model, path)``."""
    if isinstance(model, torch.nn.Module):
        get_head = getattr(model, "get_output_embeddings", None)
        if not callable(get_head) or get_head() is None:
            raise InputTypeError(
                f"`{argument}` must be a causal language model with an output layer (e.g. *ForCausalLM) for "
                f"task='causal-lm', got {type(model).__name__}."
            )
        return model, getattr(getattr(model, "config", None), "name_or_path", None) or None
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(f"`{argument}` must be a torch.nn.Module or a local path / hub name, got {type(model).__name__}.")
    from transformers import AutoModelForCausalLM

    path = os.fspath(model)
    config = model_config(path, argument, trust_remote_code=trust_remote_code)
    architectures = [str(a) for a in getattr(config, "architectures", None) or []]
    if getattr(config, "is_encoder_decoder", False) or (architectures and not any(map(_is_lm_class_name, architectures))):
        # read from the config, before loading: an encoder would get a random, untrained output layer
        kind = ", ".join(architectures) or f"an encoder-decoder ({config.model_type})"
        raise InputTypeError(
            f"`{argument}` ({path}) is a {kind}, not a causal language model: task='causal-lm' needs a "
            "*ForCausalLM / *LMHeadModel checkpoint with its trained output layer."
        )
    local = os.path.expanduser(path)
    try:
        outcome: Any = AutoModelForCausalLM.from_pretrained(
            local if os.path.isdir(local) else path, trust_remote_code=trust_remote_code, output_loading_info=True,
            **(load_kwargs or {}))
        loaded, info = outcome
    except LOAD_FAILURES as err:
        raise LoadError(f"`{argument}`: the model at {path} could not be loaded as a causal LM: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    head = loaded.get_output_embeddings()
    head_names = {f"{name}.weight" for name, module in loaded.named_modules() if module is head}
    if head_names & set(info.get("missing_keys", ())):
        raise InputTypeError(
            f"`{argument}` ({path}) holds no weights for its output layer ({', '.join(sorted(head_names))}): "
            "it would be random. task='causal-lm' needs a causal language model saved with its output layer."
        )
    return loaded, path


def scored_examples(num_texts: int, num_sequences: int) -> tuple[int, str | None]:
    """How many texts a causal-LM result may report as evaluated, and the note that says what was left out.

    A text with no counted token (empty, or nothing after its prompt) adds nothing to any token sum or
    sequence average: it was not scored, so ``num_examples`` counts only the ``num_sequences`` texts
    that were, and the note says how many were dropped.

    Example:
        >>> scored_examples(5, 4)
        (4, '1 of 5 texts had no token to score (empty, or nothing after its prompt) and were left out: num_examples counts the 4 scored.')
        >>> scored_examples(3, 3)
        (3, None)
    """
    if num_sequences >= num_texts:
        return num_texts, None
    dropped = num_texts - num_sequences
    return num_sequences, (f"{dropped} of {num_texts} texts had no token to score (empty, or nothing after its "
                           f"prompt) and were left out: num_examples counts the {num_sequences} scored.")


def check_same_vocabulary(
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    teacher_model: Any = None,
    student_model: Any = None,
    *,
    student_role: str = "student",
) -> int:
    """Refuses a teacher and student that do not share one vocabulary; returns its size.

    The tokenizers must have the same size and the same token -> id map; the models' output layers
    must cover it with the same number of logits (an output layer padded beyond the tokenizer, as
    in many checkpoints, is fine when both are padded alike).

    Raises:
        InputError: one message naming both sizes (and the first differing token when the sizes match).
    """
    # one tokenizer object for both (the usual case of a shared tokenizer): nothing to compare
    t_vocab = teacher_tokenizer.get_vocab()
    s_vocab = t_vocab if student_tokenizer is teacher_tokenizer else student_tokenizer.get_vocab()
    tail = ("Teacher and student must share one tokenizer vocabulary: token-level agreement compares the "
            "same next token; cross-tokenizer distillation is not scored.")
    if len(t_vocab) != len(s_vocab):
        raise InputError(
            f"The teacher's tokenizer has a vocabulary of {len(t_vocab)} tokens and the {student_role}'s "
            f"{len(s_vocab)}. {tail}"
        )
    if t_vocab != s_vocab:
        differing = sorted(tok for tok in t_vocab if s_vocab.get(tok) != t_vocab[tok])
        example = differing[0] if differing else next(iter(set(s_vocab) - set(t_vocab)))
        raise InputError(
            f"The teacher's and the {student_role}'s tokenizers both have {len(t_vocab)} tokens but map "
            f"{max(1, len(differing))} of them differently (e.g. {example!r}: {t_vocab.get(example)} vs "
            f"{s_vocab.get(example)}). {tail}"
        )
    if teacher_model is not None and student_model is not None:
        v_t = _head_size(teacher_model)
        v_s = _head_size(student_model)
        if v_t is not None and v_s is not None and v_t != v_s:
            raise InputError(
                f"The teacher's output layer has {v_t} logits and the {student_role}'s {v_s} (tokenizer "
                f"vocabulary: {len(t_vocab)} tokens for both). {tail}"
            )
        if v_t is not None and v_t < len(t_vocab):
            raise InputError(f"The teacher's output layer has {v_t} logits, fewer than its tokenizer's {len(t_vocab)} tokens.")
    return len(t_vocab)


def _head_size(model: Any) -> int | None:
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    return None if weight is None else int(weight.shape[0])


# -------------------------------------------------------------------------------- counted positions
@dataclass
class CountedBatch:
    """The token ids of a batch and which predictions count.

    Attributes:
        indices: dataset index of each row.
        ids: each row's token ids (unpadded, special tokens included).
        starts: each row's first counted *target* index (>= 1): predictions of tokens
            ``ids[starts[i]:]`` count, so row i gives ``len(ids[i]) - starts[i]`` counted tokens.
    """

    indices: list[int]
    ids: list[list[int]]
    starts: list[int]

    @property
    def num_tokens(self) -> int:
        return sum(max(0, len(ids) - start) for ids, start in zip(self.ids, self.starts, strict=True))


def counted_positions(lengths: Sequence[int], starts: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, source positions and target positions of the counted predictions (unpadded coordinates).

    Example:
        >>> rows, src, tgt = counted_positions([3, 2], [1, 1])
        >>> rows.tolist(), src.tolist(), tgt.tolist()
        ([0, 0, 1], [0, 1, 0], [1, 2, 1])
    """
    rows, src = [], []
    for row, (length, start) in enumerate(zip(lengths, starts, strict=True)):
        n = max(0, length - start)
        rows.append(np.full(n, row, dtype=np.int64))
        src.append(np.arange(start - 1, start - 1 + n, dtype=np.int64))
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    s = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    return r, s, s + 1


# ------------------------------------------------------------------------------------------ runner
@dataclass
class _LMRunner:
    """Pads shared token ids for one model (its own pad id and padding side) and runs it."""

    model: torch.nn.Module
    tokenizer: Any
    role: str
    device: torch.device
    forward_s: float = 0.0
    full_logits: bool = False
    num_outputs: int | None = None  # the number of logits, set by the probe
    tokenize_s: float = 0.0
    num_truncated: int = 0
    path: str | None = None
    model_limit: int | None = None
    _params: frozenset[str] = field(default_factory=frozenset)

    def reset_counters(self) -> None:
        """Zeroes the timers and the truncation count (after the probe)."""
        self.forward_s = self.tokenize_s = 0.0
        self.num_truncated = 0

    def __post_init__(self) -> None:
        params = inspect.signature(self.model.forward).parameters
        self._params = frozenset(params)
        self.pad_id = next((int(v) for v in (getattr(self.tokenizer, "pad_token_id", None),
                                             getattr(self.tokenizer, "eos_token_id", None)) if v is not None), 0)
        self.left = getattr(self.tokenizer, "padding_side", "right") == "left"

    def pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """``(input_ids, attention_mask)`` of shape ``(B, T)`` and each row's offset of its first token."""
        length = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.long)
        offsets = np.zeros(len(ids), dtype=np.int64)
        for i, row in enumerate(ids):
            lo = length - len(row) if self.left else 0
            offsets[i] = lo
            input_ids[i, lo : lo + len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, lo : lo + len(row)] = 1
        return input_ids, mask, offsets

    def __call__(self, ids: list[list[int]], *, keep_logits: int = 1) -> tuple[tuple[torch.Tensor, ...], Any, np.ndarray]:
        """Hidden states, logits (of the last ``keep_logits`` positions where the model allows it, else all;
        all of them in full-logits mode) and each row's padding offset."""
        input_ids, mask, offsets = self.pad(ids)
        inputs: dict[str, Any] = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if "position_ids" in self._params:  # the positions each text would have alone, under either padding
            inputs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0).to(self.device)
        if "logits_to_keep" in self._params and not self.full_logits:
            inputs["logits_to_keep"] = keep_logits
        if "use_cache" in self._params:
            inputs["use_cache"] = False
        tick = time.perf_counter()
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_s += time.perf_counter() - tick
        hidden = getattr(out, "hidden_states", None)
        if not hidden:
            raise InputError(f"The {self.role} model returned no hidden states with output_hidden_states=True.")
        return tuple(hidden), out.logits, offsets

    def head(self, states: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, V)`` float32 of final hidden states ``(n, D)`` by the model's output layer."""
        model: Any = self.model
        head = model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        if weight is not None and states.dtype != weight.dtype and not torch.is_autocast_enabled(states.device.type):
            states = states.to(weight.dtype)
        return head(states).float()


# ------------------------------------------------------------------------------ tokenisation, generation
def _encode(tokenizer: Any, texts: list[str], prompts: list[str] | None) -> tuple[list[list[int]], list[int]]:
    """Token ids (special tokens included, untruncated) and the first counted target index of each text.

    With prompts, ``prompt + text`` is tokenised as one string and the leading tokens whose character
    span ends inside the prompt (a leading BOS included) are the prompt's: a token that straddles the
    boundary belongs to the text.
    """
    if prompts is None:
        ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [list(row) for row in ids], [1] * len(ids)
    joined = [p + t for p, t in zip(prompts, texts, strict=True)]
    enc = tokenizer(joined, add_special_tokens=True, truncation=False, return_offsets_mapping=True)
    starts = []
    for prompt, offsets in zip(prompts, enc["offset_mapping"], strict=True):
        n_prompt = 0
        for _, end in offsets:
            if end > len(prompt):
                break
            n_prompt += 1
        starts.append(max(1, n_prompt))
    return [list(row) for row in enc["input_ids"]], starts


def _generate(runner: _LMRunner, prompts: list[list[int]], max_new_tokens: int, eos: int | None) -> list[list[int]]:
    """Greedy teacher continuations (left-padded batch); each cut after its first EOS."""
    pad_id = runner.pad_id
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, length - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, length - len(p):] = 1
    model: Any = runner.model
    out = model.generate(input_ids=input_ids.to(runner.device), attention_mask=mask.to(runner.device),
                         max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False, num_beams=1,
                         pad_token_id=pad_id, eos_token_id=eos)
    continuations = []
    for row in out[:, length:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        continuations.append(row)
    return continuations


def _check_generate(generate: Any) -> int | None:
    if generate is None:
        return None
    if not isinstance(generate, Mapping):
        raise InputTypeError(f"`generate` must be a dict like {{'max_new_tokens': 32}} or None, got {type(generate).__name__}.")
    unknown = sorted(set(generate) - {"max_new_tokens"})
    if unknown:
        raise InputError(f"`generate` takes only 'max_new_tokens' (greedy decoding), got {unknown}.")
    n = generate.get("max_new_tokens")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"`generate['max_new_tokens']` must be a positive int, got {n!r}.")
    return int(n)


def _head_matches(runner: _LMRunner, hidden: tuple[torch.Tensor, ...], logits: torch.Tensor) -> bool:
    """Whether the model's logits are its output layer applied to its last hidden state (probe batch)."""
    if logits is None:
        raise InputError(f"The {runner.role} model returned no logits; task='causal-lm' needs a causal LM head.")
    k = min(_PROBE_POSITIONS, int(logits.shape[1]))  # the last k positions of the one probe text
    last = hidden[-1][:, -k:]
    mine = runner.head(last.reshape(-1, last.shape[-1])).reshape(last.shape[0], k, -1)
    ref = logits[:, -k:].float()
    scale = float(ref.abs().max()) or 1.0
    return bool(torch.allclose(mine, ref, rtol=1e-3, atol=1e-3 * scale))


def _decoded(record: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """A most-disagreeing token with its context decoded (the ids are kept too)."""
    def text(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=False))

    return {**record, "context_text": text(record["context"]), "target_text": text([record["target"]]),
            "teacher_top1_text": text([record["teacher_top1"]]), "student_top1_text": text([record["student_top1"]])}


