r"""``task="causal-lm"``: a teacher and student causal language model scored token by token.

Everything that the causal-LM task changes in extraction lives here:

* **Counted positions.** A text of L tokens (the special tokens its tokenizer adds included, e.g.
  Llama's BOS) gives L - 1 predictions: at every position whose *next* token is a real token of the
  text. Padding (left or right, any pad id) is never counted; with ``prompt_column`` the prompt is
  put before the text and only predictions of text tokens count; with ``generate`` the teacher
  continues each prompt greedily and only the continuation tokens count.
* **What is accumulated.** The hidden state of every counted position (the state that predicts
  the next token) goes into streamed linear CKA per layer pair and into the cross-layer matrix
  (``sequence_pooling="mean"``/``"last"`` pool a text's counted states to one row instead); the
  next-token distributions go into a
  :class:`~knowledge_retention.token_agreement.TokenAgreementAccumulator`.
* **Memory bounded in V and T.** The models run with ``logits_to_keep=1`` (no ``(B, T, V)`` logits);
  the logits of the counted positions are recomputed from the final hidden state with the model's
  own output layer, ``chunk`` rows at a time (:data:`LOGIT_BUDGET` float32 values per chunk), in
  float32 whatever the model's dtype; the per-token values are summed in float64. The head is
  checked against the model's full logits on the probe batch; a model whose logits are not its
  head applied to its last hidden state (e.g. logit soft-capping) falls back to full logits, with
  a note.
* **One vocabulary.** Teacher and student must share the tokenizer's vocabulary (size and token
  -> id map) and produce the same ids for every text; anything else is refused
  (:func:`check_same_vocabulary`): cross-tokenizer distillation is not scored.

:func:`evaluate_causal_lm` is called by :func:`~knowledge_retention.extraction.evaluate_pair` /
``evaluate_students`` for ``task="causal-lm"`` and when both models are causal LMs.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..._validation import InputError, InputTypeError, LoadError, check_choice, check_positive
from ...score import knowledge_retention_score, resolve_weights
from ...similarity import CrossLayerCKAAccumulator, LinearCKAAccumulator
from ...token_agreement import TOKEN_AVERAGES, TokenAgreementAccumulator
from ..batching import length_grouped_order
from ..inputs import (
    LOAD_FAILURES,
    TextSource,
    hub_unreachable,
    load_tokenizer,
    model_config,
    model_max_length,
)
from ..layers import LayerSpec, layer_names, resolve_layer_pairs
from ..result import ExtractionResult
from ..streams import IndexRange, collate_indices, real_rows

__all__ = [
    "LOGIT_BUDGET",
    "SEQUENCE_POOLINGS",
    "TASK",
    "CountedBatch",
    "check_same_vocabulary",
    "counted_positions",
    "evaluate_causal_lm",
    "is_causal_lm",
    "load_causal_lm",
    "token_step",
]

TASK = "causal-lm"
SequencePooling = Literal["mean", "last"]
SEQUENCE_POOLINGS: tuple[str, ...] = ("mean", "last")
#: float32 values per ``(chunk, V)`` logit block: the chunk has ``max(1, LOGIT_BUDGET // V)`` rows.
LOGIT_BUDGET = 1 << 20
_FSS_METHODS = ("linear_cka", "debiased_cka")
_AOAG = ("kl", "js", "top1")
_CONTEXT_TOKENS = 12  # tokens of context kept with each most-disagreeing token
_PROBE_POSITIONS = 4  # positions of the probe text whose logits check the head (not all: T x V would be large)
_LENGTH_CHUNK = 256  # texts tokenised per call when measuring lengths for the grouping


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


def load_causal_lm(model: Any, argument: str, *, trust_remote_code: bool = False) -> tuple[torch.nn.Module, str | None]:
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
        loaded_and_info: Any = AutoModelForCausalLM.from_pretrained(
            local if os.path.isdir(local) else path, trust_remote_code=trust_remote_code, output_loading_info=True)
        loaded, info = loaded_and_info
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
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
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
    _params: frozenset[str] = field(default_factory=frozenset)

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


# --------------------------------------------------------------------------------- per-batch maths
def token_step(
    teacher_logits: Any,
    student_logits: Any,
    targets: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    chunk: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token statistics of :data:`~knowledge_retention.token_agreement.STAT_KEYS`, ``(n,)`` each (float32
    from the float32 log-softmaxes; top-1/top-k matches as exact float64), plus ``teacher_top1``/``student_top1`` ids.

    ``teacher_logits``/``student_logits`` are either ``(n, V)`` tensors or callables ``(lo, hi) -> (hi-lo, V)``
    (the model heads applied to rows ``lo:hi``): the ``(chunk, V)`` blocks are made, used and freed one at
    a time, in float32 (log-softmax included), so memory is ``O(chunk * V)`` whatever n.
    """
    n = int(targets.shape[0])
    get_t = teacher_logits if callable(teacher_logits) else (lambda lo, hi: teacher_logits[lo:hi].float())
    get_s = student_logits if callable(student_logits) else (lambda lo, hi: student_logits[lo:hi].float())
    log2 = math.log(2.0)
    if chunk is None and n:  # the vocabulary size from one row, then blocks of LOGIT_BUDGET values
        chunk = max(1, LOGIT_BUDGET // int(get_t(0, 1).shape[-1]))
    # The outputs are allocated once, before the loop, and filled block by block: small tensors kept
    # between the (chunk, V) temporaries would pin the heap above them and RSS would grow with n
    # (measured: 3 GB for 1,024 rows at V = 131,072 with per-block torch.cat pieces).
    device = targets.device
    out = {k: torch.empty(n, dtype=torch.float32 if k in ("exp_neg_kl", "kl", "js", "teacher_nll", "student_nll")
                          else torch.float64, device=device)
           for k in ("exp_neg_kl", "kl", "js", "top1", "topk", "teacher_nll", "student_nll")}
    out["teacher_top1"] = torch.empty(n, dtype=torch.long, device=device)
    out["student_top1"] = torch.empty(n, dtype=torch.long, device=device)
    lo = 0
    while lo < n:
        assert chunk is not None
        zt = get_t(lo, min(n, lo + chunk))
        hi = lo + int(zt.shape[0])
        zs = get_s(lo, hi)
        y = targets[lo:hi].to(zt.device).unsqueeze(1)
        lt1, ls1 = torch.log_softmax(zt, dim=-1), torch.log_softmax(zs, dim=-1)
        out["teacher_nll"][lo:hi] = -lt1.gather(1, y).squeeze(1)
        out["student_nll"][lo:hi] = -ls1.gather(1, y).squeeze(1)
        if temperature != 1.0:
            lt, ls = torch.log_softmax(zt / temperature, dim=-1), torch.log_softmax(zs / temperature, dim=-1)
        else:
            lt, ls = lt1, ls1
        del lt1, ls1
        # few (chunk, V) temporaries: one difference buffer reused, dot products without products
        pt, ps = lt.exp(), ls.exp()
        diff = torch.sub(lt, ls)
        kl = torch.linalg.vecdot(pt, diff).clamp(min=0.0)
        lm = torch.logaddexp(lt, ls).sub_(log2)  # log of the mixture (p + q) / 2
        js = 0.5 * torch.linalg.vecdot(pt, torch.sub(lt, lm, out=diff))
        js += 0.5 * torch.linalg.vecdot(ps, torch.sub(ls, lm, out=diff))
        js /= log2
        del pt, ps, lm, lt, ls, diff
        kt, ks = zt.topk(top_k, dim=-1).indices, zs.topk(top_k, dim=-1).indices
        out["kl"][lo:hi] = kl
        out["exp_neg_kl"][lo:hi] = torch.exp(-kl)
        out["js"][lo:hi] = js.clamp(0.0, 1.0)
        out["top1"][lo:hi] = kt[:, 0] == ks[:, 0]  # exact counts: float64
        out["topk"][lo:hi] = (kt.unsqueeze(2) == ks.unsqueeze(1)).any(dim=2).sum(dim=1).double() / top_k
        out["teacher_top1"][lo:hi] = kt[:, 0]
        out["student_top1"][lo:hi] = ks[:, 0]
        del zt, zs, kt, ks, kl, js
        lo = hi
    return out


# ---------------------------------------------------------------------------------------- streams
@dataclass
class _ModelBatch:
    """One model's reduction of a batch: the needed layers' rows and the final states of counted tokens."""

    features: dict[int, torch.Tensor]  # layer -> (n_rows, D): counted tokens, or one row per text when pooled
    final: torch.Tensor  # (n_tokens, D) final hidden state of the counted tokens (or full logits rows)


def _reduce(
    hidden: tuple[torch.Tensor, ...],
    logits: Any,
    offsets: np.ndarray,
    rows: np.ndarray,
    src: np.ndarray,
    layers: Sequence[int],
    pooling: str | None,
    full_logits: bool,
) -> _ModelBatch:
    device = hidden[0].device
    r = torch.as_tensor(rows, device=device)
    t = torch.as_tensor(src + offsets[rows], device=device)
    features: dict[int, torch.Tensor] = {}
    for layer in layers:
        states = hidden[layer][r, t].float()
        if pooling is not None:
            states = _pool_rows(states, rows, pooling)
        features[layer] = states
    final = logits[r, t] if full_logits else hidden[-1][r, t]
    return _ModelBatch(features, final)


def _pool_rows(states: torch.Tensor, rows: np.ndarray, pooling: str) -> torch.Tensor:
    """Mean or last of each text's counted-token states: ``(n_texts_with_tokens, D)``."""
    unique, first, counts = np.unique(rows, return_index=True, return_counts=True)
    if pooling == "last":
        return states[torch.as_tensor(first + counts - 1, device=states.device)]
    group = torch.as_tensor(np.searchsorted(unique, rows), device=states.device)
    sums = torch.zeros((unique.shape[0], states.shape[1]), dtype=states.dtype, device=states.device)
    sums.index_add_(0, group, states)
    return sums / torch.as_tensor(counts, dtype=states.dtype, device=states.device).unsqueeze(1)


class _Streams:
    """One student's accumulators: CKA per pair, cross-layer CKA, token agreement; merged by ``+=``."""

    def __init__(self, pairs: list[tuple[int, int]], t_layers: list[int], s_layers: list[int], *, cross: bool,
                 debiased: bool, temperature: float, top_k: int, keep_worst: int) -> None:
        self.pairs, self.t_layers, self.s_layers = pairs, t_layers, s_layers
        self.cka = [LinearCKAAccumulator(track_debiased=debiased) for _ in pairs]
        self.cross = CrossLayerCKAAccumulator() if cross else None
        self.tokens = TokenAgreementAccumulator(temperature=temperature, top_k=top_k, keep_worst=keep_worst)
        self.indices: list[np.ndarray] = []

    def update(self, t: _ModelBatch, s: _ModelBatch, batch: CountedBatch, rows: np.ndarray, tgt: np.ndarray,
               t_runner: _LMRunner, s_runner: _LMRunner, full: tuple[bool, bool]) -> None:
        self.indices.append(np.asarray(batch.indices, dtype=np.int64))
        if rows.size == 0:
            return
        tf = {i: t.features[i].double().cpu().numpy() for i in self.t_layers}
        sf = {j: s.features[j].double().cpu().numpy() for j in self.s_layers}
        if tf[self.t_layers[0]].shape[0] > 0:
            for acc, (i, j) in zip(self.cka, self.pairs, strict=True):
                acc.update(tf[i], sf[j])
            if self.cross is not None:
                self.cross.update([tf[i] for i in self.t_layers], [sf[j] for j in self.s_layers])
        targets = torch.as_tensor([batch.ids[r][k] for r, k in zip(rows.tolist(), tgt.tolist(), strict=True)],
                                  dtype=torch.long)
        t_logits = t.final.float() if full[0] else (lambda lo, hi: t_runner.head(t.final[lo:hi]))
        s_logits = s.final.float() if full[1] else (lambda lo, hi: s_runner.head(s.final[lo:hi]))
        stats = token_step(t_logits, s_logits, targets, temperature=self.tokens.temperature, top_k=self.tokens.top_k)
        stats_np = {k: v.double().cpu().numpy() for k, v in stats.items()}
        starts = np.asarray(batch.starts)
        positions = tgt - starts[rows]
        examples = np.asarray(batch.indices, dtype=np.int64)[rows]
        worst = []
        if self.tokens.keep_worst:
            for k in np.argsort(-stats_np["kl"], kind="stable")[: self.tokens.keep_worst].tolist():
                r, target = int(rows[k]), int(tgt[k])
                worst.append({
                    "kl": float(stats_np["kl"][k]), "example": int(examples[k]), "position": int(positions[k]),
                    "context": batch.ids[r][max(0, target - _CONTEXT_TOKENS) : target],
                    "target": batch.ids[r][target], "teacher_top1": int(stats_np["teacher_top1"][k]),
                    "student_top1": int(stats_np["student_top1"][k]),
                    "teacher_nll": float(stats_np["teacher_nll"][k]), "student_nll": float(stats_np["student_nll"][k]),
                })
        self.tokens.add(stats_np, examples, positions, worst)

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        return {
            "cka": [acc.state_dict() for acc in self.cka], "cross": self.cross, "tokens": self.tokens,
            "index": np.concatenate(self.indices) if self.indices else np.zeros(0, dtype=np.int64),
            "counters": counters,
        }


def _merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    first = payloads[0]
    cka = [LinearCKAAccumulator.from_state_dict(state) for state in first["cka"]]
    cross, tokens = first["cross"], first["tokens"]
    counters = dict(first["counters"])
    for p in payloads[1:]:
        for k, state in enumerate(p["cka"]):
            cka[k] += LinearCKAAccumulator.from_state_dict(state)
        if cross is not None:
            cross += p["cross"]
        tokens += p["tokens"]
        for key, value in p["counters"].items():
            counters[key] = counters.get(key, 0) + value
    index = np.sort(np.concatenate([p["index"] for p in payloads]))
    return {"cka": cka, "cross": cross, "tokens": tokens, "counters": counters, "index": index}


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


# ------------------------------------------------------------------------------------------ evaluate
@dataclass
class LMStudent:
    """One student to score (the evaluator's ``_Student``, as seen by this task)."""

    name: str
    model: Any
    tokenizer: Any
    role: str
    argument: str
    tokenizer_argument: str
    cross_layer: bool


def evaluate_causal_lm(
    teacher: Any,
    students: list[LMStudent],
    dataset: Any,
    *,
    text_column: str = "sentence",
    prompt_column: str | None = None,
    teacher_tokenizer: Any = None,
    layers: LayerSpec = "final",
    sequence_pooling: SequencePooling | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    max_examples: int | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    fss_method: str = "linear_cka",
    aoag_method: str | None = None,
    temperature: float = 1.0,
    top_k: int = 5,
    average: str = "token",
    generate: Mapping[str, Any] | None = None,
    keep_worst: int = 20,
    accelerator: Any = None,
    mixed_precision: str | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    group_by_length: bool = True,
    autocast: Any = None,
) -> dict[str, ExtractionResult]:
    r"""Token-level KRS of causal-LM students against one teacher (see the module docstring).

    .. math::

        \mathrm{KRS} = \alpha\,\tfrac1L \textstyle\sum_{(t,s)} \mathrm{CKA}(H^T_t, H^S_s)
            + \beta\,\tfrac1n \textstyle\sum_{i} e^{-\mathrm{KL}(p^T_i \Vert p^S_i)}

    over the n counted tokens i (rows of :math:`H` are the counted tokens' hidden states), with the
    ``causal-lm`` preset (:data:`~knowledge_retention.score.TASK_PRESETS`) unless alpha/beta are given.

    Args:
        teacher: a causal LM object or path / hub name (``AutoModelForCausalLM``).
        students: the students (name, model, tokenizer, how messages name them).
        dataset: texts (list, dict of columns or ``datasets.Dataset``); with ``generate`` these are prompts.
        text_column: the column of texts.
        prompt_column: a column of prompts put before each text; their tokens are not counted.
        layers: layer pairs (as for classification); rows are the counted tokens.
        sequence_pooling: None (every counted token is a CKA row), ``"mean"`` or ``"last"`` (one row per
            text: its counted tokens' mean or last state).
        average: ``"token"`` (mean over all counted tokens) or ``"sequence"`` (mean of per-text means).
        top_k: k of ``topk_overlap``.
        generate: ``{"max_new_tokens": n}``: the teacher continues each text greedily and only the
            continuation tokens are scored (a trailing EOS that the tokenizer adds to a prompt is dropped).
        keep_worst: how many most-disagreeing tokens (largest KL) to keep, with context, for the report.
        (other options as in :func:`~knowledge_retention.extraction.evaluate_students`)

    Returns:
        ``{name: ExtractionResult}``; the token-level measures are fields of the result and, with the
        per-position agreement and the most-disagreeing tokens, in ``result.lm``.
    """
    started = time.perf_counter()
    check_choice(fss_method, "fss_method", _FSS_METHODS)
    method = aoag_method or "kl"
    check_choice(method, "aoag_method", _AOAG)
    check_choice(average, "average", TOKEN_AVERAGES)
    if sequence_pooling is not None:
        check_choice(sequence_pooling, "sequence_pooling", SEQUENCE_POOLINGS)
    temperature = check_positive(temperature, "temperature")
    max_new = _check_generate(generate)
    if generate is not None and prompt_column is not None:
        raise InputError("`generate` continues the texts themselves; do not also give `prompt_column`.")
    a, b = resolve_weights(TASK, alpha, beta)
    is_main = accelerator is None or accelerator.is_main_process
    world = 1 if accelerator is None else accelerator.num_processes
    precision = accelerator.mixed_precision if accelerator is not None else (mixed_precision or "no")
    try:  # the prompts are read as TextSource's second column
        source = TextSource(dataset, text_column, prompt_column, max_examples)
    except ValueError as err:
        raise InputError(str(err).replace("label_column", "prompt_column").replace("labels", "prompts")) from err

    t_model, t_path = load_causal_lm(teacher, "teacher", trust_remote_code=trust_remote_code)
    t_tok = load_tokenizer(teacher_tokenizer, t_path, "teacher", trust_remote_code=trust_remote_code)
    loaded = []
    for spec in students:
        model, path = load_causal_lm(spec.model, spec.argument, trust_remote_code=trust_remote_code)
        tok = load_tokenizer(spec.tokenizer, path, spec.role, trust_remote_code=trust_remote_code,
                             argument=spec.tokenizer_argument)
        check_same_vocabulary(t_tok, tok, t_model, model, student_role=spec.role)
        loaded.append((spec, model, tok, path))
    if prompt_column is not None and not getattr(t_tok, "is_fast", False):
        raise InputError("`prompt_column` needs a fast tokenizer (offsets tell which tokens are the prompt's).")
    models = [t_model] + [m for _, m, _, _ in loaded]
    modes = [m.training for m in models]
    for m in models:
        if accelerator is not None:
            m.to(accelerator.device)
        m.eval()
    t_runner = _LMRunner(t_model, t_tok, "teacher", _device(t_model))
    s_runners = {spec.name: _LMRunner(m, tok, spec.role, _device(m)) for spec, m, tok, _ in loaded}
    limits = [x for x in (max_length, *(model_max_length(m, tok) for m, tok in
                                         [(t_model, t_tok)] + [(m, tok) for _, m, tok, _ in loaded])) if x]
    limit = min(limits) if limits else None
    if max_new is not None and limit is not None and limit <= max_new:
        raise InputError(f"`generate['max_new_tokens']` ({max_new}) leaves no room for a prompt within {limit} tokens.")
    autocast = autocast or (lambda: _nullcontext())
    eos = getattr(t_tok, "eos_token_id", None)
    tokenize_s = generate_s = 0.0
    accumulate_s = dict.fromkeys(s_runners, 0.0)
    notes: list[str] = []

    def counted_batch(indices: list[int]) -> tuple[CountedBatch, int]:
        nonlocal tokenize_s, generate_s
        tick = time.perf_counter()
        texts, prompts = source.batch(indices)
        ids, starts = _encode(t_tok, texts, prompts)
        truncated = 0
        for spec, _, tok, _ in loaded:
            other, other_starts = _encode(tok, texts, prompts)
            for k, (x, y) in enumerate(zip(ids, other, strict=True)):
                if x != y or starts[k] != other_starts[k]:
                    raise InputError(
                        f"Example {indices[k]} tokenises differently for the teacher and the {spec.role} (same "
                        "vocabulary, different tokenizer settings): the token-level measures need the same tokens."
                    )
        if max_new is not None:  # prompts: drop a trailing EOS, keep room for the continuation
            room = None if limit is None else limit - max_new
            prompts_ids = []
            for row in ids:
                row = row[:-1] if eos is not None and len(row) > 1 and row[-1] == eos else row
                if room is not None and len(row) > room:
                    truncated += 1
                    row = row[:room]
                prompts_ids.append(row)
            tokenize_s += time.perf_counter() - tick
            tick = time.perf_counter()
            with autocast():
                conts = _generate(t_runner, prompts_ids, max_new, eos)
            generate_s += time.perf_counter() - tick
            ids = [p + c for p, c in zip(prompts_ids, conts, strict=True)]
            starts = [len(p) for p in prompts_ids]
        elif limit is not None:
            cut = []
            for row in ids:
                if len(row) > limit:
                    truncated += 1
                cut.append(row[:limit])
            ids = cut
            tokenize_s += time.perf_counter() - tick
        else:
            tokenize_s += time.perf_counter() - tick
        starts = [max(1, s) for s in starts]
        return CountedBatch(list(indices), ids, starts), truncated

    try:
        with torch.inference_mode():
            # probe: layer counts, and whether each model's logits are its head on its last hidden state
            probe, _ = counted_batch([0])
            probe_ids = [row if len(row) > 1 else row * 2 for row in probe.ids]
            with autocast():
                t_hidden, t_full, _ = t_runner(probe_ids, keep_logits=_PROBE_POSITIONS)
                t_runner.full_logits = not _head_matches(t_runner, t_hidden, t_full)
                s_hidden = {}
                for name, runner in s_runners.items():
                    hidden, full, _ = runner(probe_ids, keep_logits=_PROBE_POSITIONS)
                    runner.full_logits = not _head_matches(runner, hidden, full)
                    s_hidden[name] = hidden
            for runner in (t_runner, *s_runners.values()):
                runner.forward_s = 0.0
                if runner.full_logits:
                    notes.append(f"The {runner.role}'s logits are not its output layer applied to its last hidden "
                                 "state (e.g. soft-capping); its full (B, T, V) logits were used per batch.")
            tokenize_s = generate_s = 0.0
            n_t = len(t_hidden)
            names_t = layer_names(n_t)
            plans = {}
            for spec, _, _, _ in loaded:
                n_s = len(s_hidden[spec.name])
                pairs = resolve_layer_pairs(layers, n_t, n_s)
                if spec.cross_layer:
                    tl, sl = list(range(n_t)), list(range(n_s))
                else:
                    tl, sl = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
                plans[spec.name] = (pairs, tl, sl, layer_names(n_s))
            t_layers = sorted({t for p in plans.values() for t in p[1]})
            streams = {
                spec.name: _Streams(plans[spec.name][0], plans[spec.name][1], plans[spec.name][2],
                                    cross=spec.cross_layer, debiased=fss_method == "debiased_cka",
                                    temperature=temperature, top_k=top_k, keep_worst=keep_worst)
                for spec, _, _, _ in loaded
            }
            order = None
            if group_by_length:
                lengths = np.empty(len(source), dtype=np.int64)
                for lo in range(0, len(source), _LENGTH_CHUNK):  # a bounded slice of texts at a time
                    texts, prompts = source.batch(range(lo, min(lo + _LENGTH_CHUNK, len(source))))
                    joined = texts if prompts is None else [p + t for p, t in zip(prompts, texts, strict=True)]
                    lengths[lo : lo + len(texts)] = [len(r) for r in t_tok(joined, truncation=False)["input_ids"]]
                order = length_grouped_order(lengths)
            loader: Any = torch.utils.data.DataLoader(IndexRange(len(source), order), batch_size=batch_size,
                                                      shuffle=False, collate_fn=collate_indices)
            if accelerator is not None:
                loader = accelerator.prepare(loader)
            from tqdm.auto import tqdm

            truncated = 0
            n_tokens = 0
            for item in tqdm(loader, total=len(loader), disable=not (progress and is_main),
                             desc="knowledge retention (causal-lm)", unit="batch", file=sys.stderr):
                indices = item.tolist()
                if accelerator is not None:
                    indices = indices[: real_rows(accelerator, len(indices))]
                    if not indices:
                        continue
                batch, cut = counted_batch(indices)
                truncated += cut
                keep = [k for k, (row, start) in enumerate(zip(batch.ids, batch.starts, strict=True)) if len(row) > start]
                for stream in streams.values():  # texts without a counted token still count as evaluated
                    skipped = [batch.indices[k] for k in range(len(batch.ids)) if k not in set(keep)]
                    if skipped:
                        stream.indices.append(np.asarray(skipped, dtype=np.int64))
                if not keep:
                    continue
                run = CountedBatch([batch.indices[k] for k in keep], [batch.ids[k] for k in keep],
                                   [batch.starts[k] for k in keep])
                rows, src, tgt = counted_positions([len(r) for r in run.ids], run.starts)
                n_tokens += rows.size
                with autocast():
                    hidden, logits, offsets = t_runner(run.ids)
                    t_batch = _reduce(hidden, logits, offsets, rows, src, t_layers, sequence_pooling, t_runner.full_logits)
                    del hidden, logits
                    for spec, _, _, _ in loaded:
                        runner = s_runners[spec.name]
                        hidden, logits, offsets = runner(run.ids)
                        tick = time.perf_counter()
                        s_batch = _reduce(hidden, logits, offsets, rows, src, plans[spec.name][2], sequence_pooling,
                                          runner.full_logits)
                        del hidden, logits
                        streams[spec.name].update(t_batch, s_batch, run, rows, tgt, t_runner, runner,
                                                  (t_runner.full_logits, runner.full_logits))
                        accumulate_s[spec.name] += time.perf_counter() - tick
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)

    payloads = {name: s.payload({"truncated": truncated, "tokens": n_tokens}) for name, s in streams.items()}
    if accelerator is not None and world > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([payloads])
    else:
        gathered = [payloads]
    results = {}
    for spec, _, _, path in loaded:
        tick = time.perf_counter()
        merged = _merge([g[spec.name] for g in gathered])
        if merged["index"].shape[0] != len(source) or not np.array_equal(merged["index"], np.arange(len(source))):
            raise RuntimeError(f"The processes evaluated {merged['index'].shape[0]} rows for {len(source)} examples.")
        pairs, _, _, names_s = plans[spec.name]
        pair_scores = []
        for acc, (t, s) in zip(merged["cka"], pairs, strict=True):
            try:
                value = acc.compute(debiased=fss_method == "debiased_cka")
            except ValueError as err:
                raise InputError(f"Layer pair (teacher {t} = {names_t[t]}, student {s} = {names_s[s]}): {err}") from err
            pair_scores.append(min(max(value, 0.0), 1.0) if fss_method == "debiased_cka" else value)
        pair_linear = [_cka_or_nan(acc) for acc in merged["cka"]]
        fss = float(np.mean(pair_scores))
        measures = merged["tokens"].compute(average)  # type: ignore[arg-type]
        aoag = {"kl": measures["aoag"], "js": 1.0 - measures["js"], "top1": measures["top1_agreement"]}[method]
        krs = knowledge_retention_score(fss, aoag, alpha=a, beta=b)
        cross = None
        if merged["cross"] is not None:
            cross = np.array([[_cka_or_nan(merged["cross"].pair(i, j)) for j in range(len(merged["cross"].ss))]
                              for i in range(len(merged["cross"].tt))])
        n_trunc = int(merged["counters"]["truncated"])
        lm = {
            "num_tokens": merged["tokens"].n_tokens,
            "num_sequences": merged["tokens"].n_sequences,
            "average": average,
            "top_k": top_k,
            "mode": "generated" if max_new is not None else "teacher_forced",
            "token_average": merged["tokens"].compute("token"),
            "sequence_average": merged["tokens"].compute("sequence"),
            "by_position": merged["tokens"].by_position(),
            "most_disagreeing": [_decoded(r, t_tok) for r in merged["tokens"].worst],
        }
        timings = {
            "tokenize_s": tokenize_s, "generate_s": generate_s, "teacher_forward_s": t_runner.forward_s,
            "student_forward_s": s_runners[spec.name].forward_s, "accumulate_s": accumulate_s[spec.name],
            "merge_s": time.perf_counter() - tick,
        }
        results[spec.name] = ExtractionResult(
            fss=fss, aoag=aoag, krs=krs, alpha=a, beta=b, fss_method=fss_method, aoag_method=method,
            layer_pairs=pairs, pair_scores=pair_scores, pair_linear_cka=pair_linear, teacher_layer_names=names_t,
            student_layer_names=names_s, cross_layer_cka=cross, mean_kl=measures["mean_kl"],
            top1_agreement=measures["top1_agreement"], teacher_logits=None, student_logits=None, labels=None,
            example_indices=merged["index"], num_examples=len(source),
            options={
                "teacher": t_path or type(t_model).__name__, "student": path or type(s_runners[spec.name].model).__name__,
                "student_name": spec.name, "text_column": text_column, "prompt_column": prompt_column,
                "layers": layers if isinstance(layers, str) else [list(p) for p in layers],
                "layer_pairs": [list(p) for p in pairs], "sequence_pooling": sequence_pooling,
                "batch_size": batch_size, "max_length": max_length, "max_examples": max_examples, "task": TASK,
                "fss_method": fss_method, "aoag_method": method, "temperature": temperature, "top_k": top_k,
                "average": average, "generate": None if max_new is None else {"max_new_tokens": max_new},
                "cross_layer": spec.cross_layer, "mixed_precision": precision, "num_processes": world,
                "device": str(s_runners[spec.name].device), "group_by_length": group_by_length,
            },
            timings=timings,
            truncation={role: {"limit": limit, "limit_source": "max_length" if limit == max_length else "model",
                               "num_truncated": n_trunc} for role in ("teacher", "student")},
            notes=list(notes),
            js=measures["js"], topk_overlap=measures["topk_overlap"], logprob_gap=measures["logprob_gap"],
            teacher_perplexity=measures["teacher_perplexity"], student_perplexity=measures["student_perplexity"],
            perplexity_ratio=measures["perplexity_ratio"], lm=lm,
        )
    if truncated and is_main:
        warnings.warn(f"{truncated} texts were truncated to {limit} tokens.", UserWarning, stacklevel=3)
    total_s = time.perf_counter() - started
    for result in results.values():
        result.timings.update(total_s=total_s, examples_per_s=len(source) / total_s,
                              tokens_per_s=result.lm["num_tokens"] / total_s if result.lm else 0.0)
    return results


def _nullcontext() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def _device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _cka_or_nan(acc: LinearCKAAccumulator) -> float:
    try:
        return acc.compute()
    except ValueError:
        return float("nan")


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


# ------------------------------------------------------------------------------- evaluator hook
#: The causal-lm options of evaluate_pair / evaluate_students and their defaults.
LM_OPTIONS: dict[str, Any] = {"prompt_column": None, "generate": None, "top_k": 5, "average": "token",
                              "sequence_pooling": None}


def wanted(task: str | None, teacher: Any, students: Sequence[Any], *, trust_remote_code: bool = False,
           names: Sequence[str] | None = None) -> bool:
    """Whether the evaluator hands this call to the causal-lm task: ``task="causal-lm"``, or no task
    given and the teacher and every student are causal LMs (objects or paths).

    Raises :class:`InputTypeError` for a call the classification path would only fail on later with a
    misleading message: a causal LM paired with a classifier (its vocabulary read as a label set), or
    causal LMs under another ``task`` (their (N, T, V) logits read as (N, C) outputs).
    """
    if task == TASK:
        return True
    if task is None:
        flags = [is_causal_lm(m, trust_remote_code=trust_remote_code) for m in (teacher, *students)]
    else:  # only what can be told without the Hub: objects and local folders
        flags = [(isinstance(m, torch.nn.Module) or (isinstance(m, (str, os.PathLike)) and os.path.isdir(m)))
                 and is_causal_lm(m, trust_remote_code=trust_remote_code) for m in (teacher, *students)]
    if task is None and all(flags):
        return True
    if not any(flags):
        return False
    labels = ["`teacher`", *(f"student {n!r}" for n in (names or [f"{i}" for i in range(len(students))]))]
    if names is None and len(students) == 1:
        labels[1] = "`student`"

    def kind(model: Any) -> str:
        return type(model).__name__ if isinstance(model, torch.nn.Module) else repr(os.fspath(model))

    models = (teacher, *students)
    lms = [f"{label} ({kind(m)})" for label, m, flag in zip(labels, models, flags, strict=True) if flag]
    if task is None:
        others = [f"{label} ({kind(m)})" for label, m, flag in zip(labels, models, flags, strict=True) if not flag]
        raise InputTypeError(
            f"Both models of a pair must be classifiers or both causal LMs: {', '.join(lms)} "
            f"{'is a causal LM' if len(lms) == 1 else 'are causal LMs'}, {', '.join(others)} "
            f"{'is' if len(others) == 1 else 'are'} not."
        )
    raise InputTypeError(
        f"task={task!r} scores classifier outputs, but {', '.join(lms)} {'is a causal LM' if len(lms) == 1 else 'are causal LMs'}: "
        f"use task='causal-lm' (or leave `task` unset when every model is a causal LM)."
    )


def refuse_lm_options(task: str, options: Mapping[str, Any]) -> None:
    """Raises when a causal-lm option is set for another task."""
    given = sorted(k for k, default in LM_OPTIONS.items() if k in options and options[k] != default)
    if given:
        raise InputError(f"{', '.join(f'`{k}`' for k in given)} apply to task='causal-lm' only; got task={task!r}.")


def dispatch(
    teacher: Any,
    specs: Sequence[Any],
    dataset: Any,
    *,
    label_column: str | None,
    pooling: str,
    keep_arrays: bool,
    teacher_cache: Any,
    distributed: bool,
    accelerator: Any,
    mixed_precision: str | None,
    **options: Any,
) -> dict[str, ExtractionResult]:
    """Runs :func:`evaluate_causal_lm` for the evaluator's students (refusing classification-only options)."""
    refused = {"label_column": (label_column, None), "pooling": (pooling, "cls"), "keep_arrays": (keep_arrays, False),
               "teacher_cache": (teacher_cache, None)}
    hints = {"pooling": " (use sequence_pooling='mean'/'last' for per-text FSS rows)"}
    for name, (value, default) in refused.items():
        if value != default:
            raise InputError(f"`{name}={value!r}` is not used by task='causal-lm'{hints.get(name, '')}; leave it unset.")
    from ..evaluator import _autocast

    if accelerator is None and distributed:
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=mixed_precision or "no", cpu=not torch.cuda.is_available())
    if accelerator is not None and mixed_precision is not None and mixed_precision != accelerator.mixed_precision:
        raise InputError(f"`mixed_precision={mixed_precision!r}` conflicts with the accelerator's "
                         f"mixed_precision={accelerator.mixed_precision!r}; set it on the Accelerator only.")
    devices = {"cuda" if torch.cuda.is_available() and accelerator is not None else "cpu"}
    if accelerator is not None:
        devices = {accelerator.device.type}
    else:
        devices = {_device(m).type for m in (teacher, *(s.model for s in specs)) if isinstance(m, torch.nn.Module)} or {"cpu"}

    def autocast() -> Any:
        return _autocast(accelerator, mixed_precision, devices)

    students = [LMStudent(s.name, s.model, s.tokenizer, s.role, s.argument, s.tokenizer_argument, s.cross_layer)
                for s in specs]
    return evaluate_causal_lm(teacher, students, dataset, accelerator=accelerator, mixed_precision=mixed_precision,
                              autocast=autocast, **options)
