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

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..._validation import InputError, InputTypeError, check_choice
from ...methods import CLASSIFICATION_METHODS, STREAMING_FSS_METHODS
from ...score import knowledge_retention_score, resolve_weights
from ...similarity import CrossLayerCKAAccumulator, LinearCKAAccumulator
from ...token_agreement import TOKEN_AVERAGES, TOKEN_MEASURES, TokenAgreementAccumulator, resolve_measures
from ..inputs import TextSource, load_tokenizer, model_max_length
from ..layers import layer_names, resolve_layer_pairs
from ..options import EvalOptions
from ..result import ExtractionResult
from ..runtime import model_device
from ..streams import PooledBatch
from ..teacher_cache import CACHE_VERSION, model_fingerprint, texts_fingerprint, tokenizer_fingerprint
from ..token_step import row_blocks, token_step
from .base import Batch, ModelSpec, Plan, Task, _load_kwargs
from .lm_inputs import (
    _PROBE_POSITIONS,
    CountedBatch,
    _check_generate,
    _decoded,
    _encode,
    _generate,
    _head_matches,
    _LMRunner,
    check_same_vocabulary,
    counted_positions,
    is_causal_lm,
    load_causal_lm,
    scored_examples,
)
from .text import cka_or_nan, cross_matrix

__all__ = [
    "LOGIT_BUDGET",
    "SEQUENCE_POOLINGS",
    "TASK",
    "CountedBatch",
    "check_same_vocabulary",
    "counted_positions",
    "CausalLMTask",
    "is_causal_lm",
    "load_causal_lm",
    "token_step",
]

TASK = "causal-lm"
SequencePooling = Literal["mean", "last"]
SEQUENCE_POOLINGS: tuple[str, ...] = ("mean", "last")
#: float32 values per ``(chunk, V)`` logit block: the chunk has ``max(1, LOGIT_BUDGET // V)`` rows.
LOGIT_BUDGET = 1 << 20
_FSS_METHODS = STREAMING_FSS_METHODS  # token rows stream: no N x N kernels
_AOAG = CLASSIFICATION_METHODS
_CONTEXT_TOKENS = 12  # tokens of context kept with each most-disagreeing token
_LENGTH_CHUNK = 256  # texts tokenised per call when measuring lengths for the grouping
_KEEP_WORST = 20  # most-disagreeing tokens kept, with context, for the report
_PROBE_TOKENS = 4 * _PROBE_POSITIONS  # leading tokens of the first text the probe runs (a full text costs a batch row)


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
    """One student's accumulators: CKA per pair, cross-layer CKA, token agreement; merged by ``+=``.

    With ``keep_arrays`` it also keeps the rows of the paired layers (counted tokens, or texts with
    ``sequence_pooling``), each row's example index, and every counted token's agreement statistics.
    """

    def __init__(self, pairs: list[tuple[int, int]], t_layers: list[int], s_layers: list[int], *, cross: bool,
                 debiased: bool, temperature: float, top_k: int, keep_worst: int, keep_arrays: bool = False,
                 measures: tuple[str, ...] | None = None) -> None:
        self.pairs, self.t_layers, self.s_layers = pairs, t_layers, s_layers
        self.cross = CrossLayerCKAAccumulator() if cross else None
        # a pair the cross-layer matrix holds reads its (biased) CKA sums there instead of making them twice
        self.cka: list[LinearCKAAccumulator | None] = [
            None if cross and not debiased and i in t_layers and j in s_layers else LinearCKAAccumulator(track_debiased=debiased)
            for i, j in pairs]
        # the most-disagreeing tokens are ranked by KL and show both top-1 tokens and NLLs: kept when those ran
        if measures is not None and not {"kl", "top1", "nll"} <= set(measures):
            keep_worst = 0
        self.measures = measures
        self.tokens = TokenAgreementAccumulator(temperature=temperature, top_k=top_k, keep_worst=keep_worst,
                                                measures=measures)
        self.indices: list[np.ndarray] = []
        self.keep_arrays = keep_arrays
        self.kept: dict[str, list[Any]] = {"teacher": [], "student": [], "row_example": [], "token_example": [],
                                           "exp_neg_kl": [], "kl": [], "js": [], "top1": []}

    def skip(self, batch: Batch) -> None:
        """A batch without counted tokens: its texts still count as evaluated."""
        self.indices.append(np.asarray(batch.indices, dtype=np.int64))

    def update(self, t: PooledBatch, s: PooledBatch, batch: Batch) -> None:
        d = batch.data
        if d["skipped"]:  # texts without a counted token still count as evaluated
            self.indices.append(np.asarray(d["skipped"], dtype=np.int64))
        run: CountedBatch = d["run"]
        rows, tgt = d["rows"], d["tgt"]
        self.indices.append(np.asarray(run.indices, dtype=np.int64))
        if rows.size == 0:
            return
        tf = {i: t.features[i].double().cpu().numpy() for i in self.t_layers}
        sf = {j: s.features[j].double().cpu().numpy() for j in self.s_layers}
        if tf[self.t_layers[0]].shape[0] > 0:
            for acc, (i, j) in zip(self.cka, self.pairs, strict=True):
                if acc is not None:
                    acc.update(tf[i], sf[j])
            if self.cross is not None:
                self.cross.update([tf[i] for i in self.t_layers], [sf[j] for j in self.s_layers])
        targets = torch.as_tensor([run.ids[r][k] for r, k in zip(rows.tolist(), tgt.tolist(), strict=True)],
                                  dtype=torch.long)
        stats = self.statistics(t.logits, s.logits, targets)
        stats_np = {k: v.double().cpu().numpy() for k, v in stats.items()}
        starts = np.asarray(run.starts)
        positions = tgt - starts[rows]
        examples = np.asarray(run.indices, dtype=np.int64)[rows]
        if self.keep_arrays:
            n_rows = tf[self.t_layers[0]].shape[0]
            row_examples = examples if n_rows == examples.shape[0] else np.unique(examples)
            self.kept["teacher"].append({i: tf[i] for i, _ in self.pairs})
            self.kept["student"].append({j: sf[j] for _, j in self.pairs})
            self.kept["row_example"].append(row_examples)
            self.kept["token_example"].append(examples)
            for key in ("exp_neg_kl", "kl", "js", "top1"):  # NaN for a measure that was not computed
                self.kept[key].append(stats_np.get(key, np.full(examples.shape[0], np.nan)))
        worst = []
        if self.tokens.keep_worst:
            for k in np.argsort(-stats_np["kl"], kind="stable")[: self.tokens.keep_worst].tolist():
                r, target = int(rows[k]), int(tgt[k])
                worst.append({
                    "kl": float(stats_np["kl"][k]), "example": int(examples[k]), "position": int(positions[k]),
                    "context": run.ids[r][max(0, target - _CONTEXT_TOKENS) : target],
                    "target": run.ids[r][target], "teacher_top1": int(stats_np["teacher_top1"][k]),
                    "student_top1": int(stats_np["student_top1"][k]),
                    "teacher_nll": float(stats_np["teacher_nll"][k]), "student_nll": float(stats_np["student_nll"][k]),
                })
        self.tokens.update_statistics(stats_np, examples, positions, worst)

    def statistics(self, teacher: Any, student: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token statistics of the counted tokens (a recorded teacher's stream overrides it)."""
        return token_step(teacher, student, targets, temperature=self.tokens.temperature, top_k=self.tokens.top_k,
                          measures=self.measures)

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        kept = None
        if self.keep_arrays:
            kept = {
                "teacher": {i: _cat([b[i] for b in self.kept["teacher"]]) for i, _ in self.pairs},
                "student": {j: _cat([b[j] for b in self.kept["student"]]) for _, j in self.pairs},
                **{k: _cat(self.kept[k]) for k in ("row_example", "token_example", "exp_neg_kl", "kl", "js", "top1")},
            }
        return {
            "cka": [None if acc is None else acc.state_dict() for acc in self.cka], "cross": self.cross,
            "pairs": self.pairs, "layers": (self.t_layers, self.s_layers), "tokens": self.tokens,
            "index": np.concatenate(self.indices) if self.indices else np.zeros(0, dtype=np.int64),
            "counters": counters, "kept": kept,
        }


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def _merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    first = payloads[0]
    cka = [None if state is None else LinearCKAAccumulator.from_state_dict(state) for state in first["cka"]]
    cross, tokens = first["cross"], first["tokens"]
    counters = dict(first["counters"])
    for p in payloads[1:]:
        for k, state in enumerate(p["cka"]):
            if state is not None:
                cka[k] += LinearCKAAccumulator.from_state_dict(state)  # type: ignore[operator]
        if cross is not None:
            cross += p["cross"]
        tokens += p["tokens"]
        for key, value in p["counters"].items():
            counters[key] = counters.get(key, 0) + value
    t_layers, s_layers = first["layers"]
    for k, (i, j) in enumerate(first["pairs"]):  # a pair the cross-layer matrix holds: its entry, once merged
        if cka[k] is None:
            cka[k] = LinearCKAAccumulator() if cross.n == 0 else cross.pair(t_layers.index(i), s_layers.index(j))
    index = np.sort(np.concatenate([p["index"] for p in payloads]))
    features: dict[str, dict[int, np.ndarray]] = {"teacher": {}, "student": {}}
    rows = None
    if first["kept"] is not None:  # rows in example order (stable within an example: token order)
        row_example = np.concatenate([p["kept"]["row_example"] for p in payloads])
        token_example = np.concatenate([p["kept"]["token_example"] for p in payloads])
        order, token_order = np.argsort(row_example, kind="stable"), np.argsort(token_example, kind="stable")
        for role in features:
            for layer in first["kept"][role]:
                features[role][layer] = np.concatenate([p["kept"][role][layer] for p in payloads])[order]
        rows = {"row_example": row_example[order], "token_example": token_example[token_order],
                **{k: np.concatenate([p["kept"][k] for p in payloads])[token_order]
                   for k in ("exp_neg_kl", "kl", "js", "top1")}}
    return {"cka": cka, "cross": cross, "tokens": tokens, "counters": counters, "index": index,
            "features": features, "rows": rows}


#: the largest streamed state of the cross-layer CKA matrix of a causal-LM pair, in bytes (see cross_layer_skipped)
CROSS_LAYER_STATE_BUDGET = 256 << 20


def cross_layer_skipped(teacher_widths: Sequence[int], student_widths: Sequence[int]) -> str | None:
    """Why a causal-LM pair's cross-layer CKA matrix is not computed, or None when it is.

    Every counted token adds to ``(sum of teacher widths) x (sum of student widths)`` float64 sums, as many
    multiply-adds per token: beyond :data:`CROSS_LAYER_STATE_BUDGET` (256 MiB) this costs more than the
    forward passes (SmolLM-360M against SmolLM-135M, 33 x 31 hidden states: 4.5 GB of sums, and several times
    the two forward passes: ``benchmarks/results/lm_cost.md``, the deep shape).

    Example:
        >>> cross_layer_skipped([256] * 5, [256] * 3) is None  # the LM demo pair: 7.9 MB
        True
    """
    state = 8 * sum(int(w) for w in teacher_widths) * sum(int(w) for w in student_widths)
    if state <= CROSS_LAYER_STATE_BUDGET:
        return None
    return (f"The cross-layer CKA matrix was not computed: {len(teacher_widths)} x {len(student_widths)} hidden states "
            f"would stream {state / 2**30:.1f} GiB of float64 sums, as many multiply-adds for every counted token (more "
            f"than the forward passes; the limit is {CROSS_LAYER_STATE_BUDGET >> 20} MiB). FSS and the layer pairs of "
            "`layers` are computed as usual: name the pairs to compare with layers=[(teacher, student), ...].")


# ------------------------------------------------------------------------------------------ the task
class LazyLogits:
    """The logits of counted tokens, made ``(hi - lo, V)`` rows at a time by the model's output layer."""

    def __init__(self, final: torch.Tensor, runner: _LMRunner, vocab_size: int | None = None) -> None:
        self.final, self.runner = final, runner
        self.vocab_size = vocab_size  # the number of logits, when the probe told it (token_step plans its blocks)

    def __call__(self, lo: int, hi: int) -> torch.Tensor:
        return self.runner.head(self.final[lo:hi])

    def materialize(self) -> torch.Tensor:
        """All rows ``(n, V)`` float32 (for the teacher cache), made by the head in the blocks of
        :func:`~knowledge_retention.extraction.token_step.row_blocks` (enough rows per matrix product)."""
        n = int(self.final.shape[0])
        out = None
        for lo, hi, block in row_blocks(self, n, None):
            if out is None:
                out = torch.empty((n, int(block.shape[-1])), dtype=block.dtype, device=block.device)
            out[lo:hi] = block
        return self(0, 0) if out is None else out


class CausalLMTask(Task):
    """``task="causal-lm"``: teacher and students scored token by token on the same token ids."""

    name = TASK
    presets = (TASK,)
    unused = {
        "label_column": ": a causal LM's targets are the next tokens of each text",
        "pooling": " (use sequence_pooling='mean'/'last' for per-text FSS rows)",
    }

    default_preset = TASK

    @classmethod
    def claims(cls, task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> bool:
        return wanted(task, teacher, list(students.values()), trust_remote_code=trust_remote_code,
                      names=None if list(students) == ["student"] else list(students))

    def __init__(self) -> None:
        self.runners: list[_LMRunner] = []
        self.generate_s = 0.0
        self.max_new: int | None = None

    def check_options(self, opts: EvalOptions) -> None:
        for name, reason in self.unused.items():
            if not opts.is_default(name):
                raise InputError(f"`{name}={getattr(opts, name)!r}` is not used by task='causal-lm'{reason}; leave it unset.")
        check_choice(opts.fss_method, "fss_method", _FSS_METHODS)
        self.method = opts.aoag_method or "kl"
        check_choice(self.method, "aoag_method", _AOAG)
        check_choice(opts.average, "average", TOKEN_AVERAGES)
        if opts.sequence_pooling is not None:
            check_choice(opts.sequence_pooling, "sequence_pooling", SEQUENCE_POOLINGS)
        self.max_new = _check_generate(opts.generate)
        if opts.generate is not None and opts.prompt_column is not None:
            raise InputError("`generate` continues the texts themselves; do not also give `prompt_column`.")
        if opts.generate is not None and opts.teacher_cache is not None:
            raise InputError("`teacher_cache` cannot replay `generate`: the teacher writes the continuations at "
                             "every call; leave teacher_cache unset.")
        self.weights = resolve_weights(TASK, opts.alpha, opts.beta)
        self.measures = None if opts.measures is None else resolve_measures(opts.measures)
        if self.measures is not None and self.method not in self.measures:
            raise InputError(f"`measures={list(self.measures)}` leaves out {self.method!r}, which `aoag_method="
                             f"{self.method!r}` needs; add it (or choose another aoag_method).")

    def make_source(self, dataset: Any, opts: EvalOptions) -> TextSource:
        try:  # the prompts are read as TextSource's second column
            return TextSource(dataset, opts.text_column, opts.prompt_column, opts.max_examples)
        except ValueError as err:
            raise InputError(str(err).replace("label_column", "prompt_column").replace("labels", "prompts")) from err

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> _LMRunner:
        model, path = load_causal_lm(spec.model, spec.argument, trust_remote_code=opts.trust_remote_code,
                                     load_kwargs=_load_kwargs(spec, opts))
        tok = load_tokenizer(spec.preprocessor, path, spec.role, trust_remote_code=opts.trust_remote_code,
                             argument=spec.preprocessor_argument)
        if not self.runners and opts.prompt_column is not None and not getattr(tok, "is_fast", False):
            raise InputError("`prompt_column` needs a fast tokenizer (offsets tell which tokens are the prompt's).")
        device.place(model)
        runner = _LMRunner(model, tok, spec.role, model_device(model))
        runner.path = path
        runner.model_limit = model_max_length(model, tok)
        self.runners.append(runner)
        return runner

    def check_pair(self, teacher: _LMRunner, student: _LMRunner, spec: ModelSpec) -> None:
        check_same_vocabulary(teacher.tokenizer, student.tokenizer, teacher.model, student.model, student_role=spec.role)

    @property
    def teacher_runner(self) -> _LMRunner:
        return self.runners[0]

    def limit(self, opts: EvalOptions) -> int | None:
        limits = [x for x in (opts.max_length, *(r.model_limit for r in self.runners)) if x]
        return min(limits) if limits else None

    def probe(self, source: TextSource, runner: _LMRunner, opts: EvalOptions) -> dict[str, Any]:
        limit = self.limit(opts)
        if self.max_new is not None and limit is not None and limit <= self.max_new:
            raise InputError(f"`generate['max_new_tokens']` ({self.max_new}) leaves no room for a prompt within {limit} tokens.")
        # the first tokens of the first text (no generation, no truncation): enough to tell the layers, widths
        # and the number of logits, and to check the output layer on _PROBE_POSITIONS positions
        texts, prompts = source.batch([0])
        ids, _ = _encode(self.teacher_runner.tokenizer, texts, prompts)
        probe_ids = [row[:_PROBE_TOKENS] if len(row) > 1 else row * 2 for row in ids]
        hidden, full, _ = runner(probe_ids, keep_logits=_PROBE_POSITIONS)
        runner.full_logits = not _head_matches(runner, hidden, full)
        runner.num_outputs = int(full.shape[-1])
        return {"n_states": len(hidden), "widths": [int(h.shape[-1]) for h in hidden],
                "num_outputs": int(full.shape[-1]), "full_logits": runner.full_logits}

    def plan(self, spec: ModelSpec, t_info: dict[str, Any], s_info: dict[str, Any], opts: EvalOptions,
             names: dict[str, str]) -> Plan:
        self.generate_s = 0.0
        for runner in self.runners:
            runner.num_truncated = 0
        n_t, n_s = int(t_info["n_states"]), int(s_info["n_states"])
        pairs = resolve_layer_pairs(opts.layers, n_t, n_s)
        skipped = cross_layer_skipped(t_info["widths"], s_info["widths"]) if spec.cross_layer else None
        if spec.cross_layer and skipped is None:
            tl, sl = list(range(n_t)), list(range(n_s))
        else:
            tl, sl = sorted({t for t, _ in pairs}), sorted({s for _, s in pairs})
        plan = Plan(pairs, layer_names(n_s), tl, sl)
        if skipped is not None:
            plan.extra.update(no_cross=True, warn=[f"{names.get(spec.name, spec.name)}: {skipped}"], cross_note=skipped)
        return plan

    def lengths(self, source: TextSource, teacher: _LMRunner, opts: EvalOptions) -> np.ndarray:
        lengths = np.empty(len(source), dtype=np.int64)
        for lo in range(0, len(source), _LENGTH_CHUNK):  # a bounded slice of texts at a time
            texts, prompts = source.batch(range(lo, min(lo + _LENGTH_CHUNK, len(source))))
            joined = texts if prompts is None else [p + t for p, t in zip(prompts, texts, strict=True)]
            lengths[lo : lo + len(texts)] = [len(r) for r in teacher.tokenizer(joined, truncation=False)["input_ids"]]
        return lengths

    def prepare(self, source: TextSource, indices: Sequence[int], opts: EvalOptions) -> Batch:
        """The counted token ids of a batch (the same for every model), with the positions that count."""
        indices = list(indices)
        t_runner = self.teacher_runner
        tick = time.perf_counter()
        texts, prompts = source.batch(indices)
        ids, starts = _encode(t_runner.tokenizer, texts, prompts)
        for runner in self.runners[1:]:
            other, other_starts = _encode(runner.tokenizer, texts, prompts)
            for k, (x, y) in enumerate(zip(ids, other, strict=True)):
                if x != y or starts[k] != other_starts[k]:
                    raise InputError(
                        f"Example {indices[k]} tokenises differently for the teacher and the {runner.role} (same "
                        "vocabulary, different tokenizer settings): the token-level measures need the same tokens."
                    )
        limit, truncated = self.limit(opts), 0
        eos = getattr(t_runner.tokenizer, "eos_token_id", None)
        if self.max_new is not None:  # prompts: drop a trailing EOS, keep room for the continuation
            room = None if limit is None else limit - self.max_new
            prompts_ids = []
            for row in ids:
                row = row[:-1] if eos is not None and len(row) > 1 and row[-1] == eos else row
                if room is not None and len(row) > room:
                    truncated += 1
                    row = row[:room]
                prompts_ids.append(row)
            t_runner.tokenize_s += time.perf_counter() - tick
            tick = time.perf_counter()
            conts = _generate(t_runner, prompts_ids, self.max_new, eos)
            self.generate_s += time.perf_counter() - tick
            ids = [p + c for p, c in zip(prompts_ids, conts, strict=True)]
            starts = [len(p) for p in prompts_ids]
        else:
            if limit is not None:
                truncated = sum(len(row) > limit for row in ids)
                ids = [row[:limit] for row in ids]
            t_runner.tokenize_s += time.perf_counter() - tick
        for runner in self.runners:
            runner.num_truncated += truncated
        starts = [max(1, s) for s in starts]
        batch = CountedBatch(indices, ids, starts)
        keep = [k for k, (row, start) in enumerate(zip(ids, starts, strict=True)) if len(row) > start]
        run = CountedBatch([indices[k] for k in keep], [ids[k] for k in keep], [starts[k] for k in keep])
        rows, src, tgt = counted_positions([len(r) for r in run.ids], run.starts)
        data = {"batch": batch, "run": run, "rows": rows, "src": src, "tgt": tgt,
                "skipped": [indices[k] for k in range(len(ids)) if k not in set(keep)]}
        return Batch(indices, None, data, runs=bool(keep))

    def _pooled(self, runner: _LMRunner, batch: Batch, layers: list[int], opts: EvalOptions, *, materialize: bool) -> PooledBatch:
        d = batch.data
        hidden, logits, offsets = runner(d["run"].ids)
        reduced = _reduce(hidden, logits, offsets, d["rows"], d["src"], layers, opts.sequence_pooling, runner.full_logits)
        del hidden, logits
        if runner.full_logits:
            return PooledBatch(reduced.features, reduced.final.float())
        lazy = LazyLogits(reduced.final, runner, runner.num_outputs)
        return PooledBatch(reduced.features, lazy.materialize() if materialize else lazy)  # type: ignore[arg-type]

    def teacher(self, runner: _LMRunner, batch: Batch, layers: list[int], opts: EvalOptions, *, record: bool) -> PooledBatch:
        return self._pooled(runner, batch, layers, opts, materialize=record)

    def student(self, runner: _LMRunner, batch: Batch, plan: Plan, opts: EvalOptions) -> PooledBatch:
        return self._pooled(runner, batch, plan.s_layers, opts, materialize=False)

    def empty_teacher(self, t_info: dict[str, Any]) -> PooledBatch:
        features = {layer: torch.zeros((0, int(t_info["widths"][layer]))) for layer in t_info["layers"]}
        return PooledBatch(features, torch.zeros((0, int(t_info["num_outputs"]))))

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> _Streams:
        return _Streams(plan.pairs, plan.t_layers, plan.s_layers, cross=spec.cross_layer and not plan.extra.get("no_cross"),
                        debiased=opts.fss_method == "debiased_cka", temperature=opts.temperature, top_k=opts.top_k,
                        keep_worst=_KEEP_WORST, keep_arrays=opts.keep_arrays, measures=self.measures)

    def merge(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        return _merge(payloads)

    def cache_parts(self, teacher: _LMRunner, source: TextSource, opts: EvalOptions, *, in_memory: bool) -> dict[str, Any]:
        import transformers

        if in_memory:
            model_part, tokenizer_part = f"object {id(teacher.model)}", f"object {id(teacher.tokenizer)}"
        else:
            model_part, tokenizer_part = model_fingerprint(teacher.model), tokenizer_fingerprint(teacher.tokenizer)
        return {
            "cache_version": CACHE_VERSION, "task": TASK, "teacher": model_part, "teacher_tokenizer": tokenizer_part,
            "texts": texts_fingerprint(source), "num_examples": len(source), "limit": self.limit(opts),
            "device_type": teacher.device.type, "torch": torch.__version__, "transformers": transformers.__version__,
            "text_column": opts.text_column, "prompt_column": opts.prompt_column,
            "sequence_pooling": opts.sequence_pooling, "max_length": opts.max_length, "batch_size": opts.batch_size,
            "group_by_length": opts.group_by_length,
        }

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        return lm_result(self, merged, plan, context, opts)


def lm_result(task: CausalLMTask, merged: dict[str, Any], plan: Plan, context: dict[str, Any],
              opts: EvalOptions) -> ExtractionResult:
    """One student's token-level result from its merged streams."""
    tick = time.perf_counter()
    spec: ModelSpec = context["spec"]
    t_info = context["t_info"]
    names_t = layer_names(int(t_info["n_states"]))
    pairs, names_s = plan.pairs, plan.names_s
    debiased = opts.fss_method == "debiased_cka"
    pair_scores = []
    for acc, (t, s) in zip(merged["cka"], pairs, strict=True):
        try:
            value = acc.compute(debiased=debiased)
        except ValueError as err:
            raise InputError(f"Layer pair (teacher {t} = {names_t[t]}, student {s} = {names_s[s]}): {err}") from err
        pair_scores.append(min(max(value, 0.0), 1.0) if debiased else value)
    pair_linear = [cka_or_nan(acc) for acc in merged["cka"]]
    fss = float(np.mean(pair_scores))
    tokens: TokenAgreementAccumulator = merged["tokens"]
    measures = tokens.compute(opts.average)  # type: ignore[arg-type]
    aoag = {"kl": measures["aoag"], "js": 1.0 - measures["js"], "top1": measures["top1_agreement"]}[task.method]
    a, b = task.weights
    krs = knowledge_retention_score(fss, aoag, alpha=a, beta=b)
    cross = None if merged["cross"] is None else cross_matrix(merged["cross"])
    notes = list(context["notes"])
    if plan.extra.get("cross_note"):
        notes.append(plan.extra["cross_note"])
    roles = [("teacher", bool(t_info.get("full_logits"))), (context["s_runner"].role, context["s_runner"].full_logits)]
    for role, full in roles:
        if full:
            notes.append(f"The {role}'s logits are not its output layer applied to its last hidden "
                         "state (e.g. soft-capping); its full (B, T, V) logits were used per batch.")
    n_trunc = int(merged["counters"]["teacher_truncated"])
    limit = task.limit(opts)
    if n_trunc:
        message = f"{n_trunc} texts were truncated to {limit} tokens."
        if context["is_main"] and message not in context["warned"]:
            context["warned"].add(message)
            warnings.warn(message, UserWarning, stacklevel=5)
    if task.measures is not None and len(task.measures) < len(TOKEN_MEASURES):
        skipped = [m for m in TOKEN_MEASURES if m not in task.measures]
        notes.append(f"Token measures computed: {', '.join(task.measures)}; skipped (measures=...): "
                     f"{', '.join(skipped)}, reported as NaN.")
    num_examples, dropped = scored_examples(len(context["source"]), tokens.n_sequences)
    if dropped:
        notes.append(dropped)
    t_tok = task.teacher_runner.tokenizer
    lm = {
        "num_tokens": tokens.n_tokens, "num_sequences": tokens.n_sequences, "average": opts.average,
        "top_k": opts.top_k, "mode": "generated" if task.max_new is not None else "teacher_forced",
        "measures": list(task.measures or TOKEN_MEASURES),
        "token_average": tokens.compute("token"), "sequence_average": tokens.compute("sequence"),
        "by_position": tokens.by_position(), "most_disagreeing": [_decoded(r, t_tok) for r in tokens.worst],
    }
    if opts.keep_arrays:
        lm["rows"] = merged["rows"]
    timings = dict(context["timings"])
    timings["generate_s"] = task.generate_s
    timings["merge_s"] = time.perf_counter() - tick
    names = context["names"]
    features = merged["features"]
    return ExtractionResult(
        fss=fss, aoag=aoag, krs=krs, alpha=a, beta=b, fss_method=opts.fss_method, aoag_method=task.method,
        layer_pairs=pairs, pair_scores=pair_scores, pair_linear_cka=pair_linear, teacher_layer_names=names_t,
        student_layer_names=names_s, cross_layer_cka=cross, mean_kl=measures["mean_kl"],
        top1_agreement=measures["top1_agreement"], teacher_logits=None, student_logits=None, labels=None,
        example_indices=merged["index"], num_examples=num_examples,
        options={
            "teacher": names["teacher"], "student": names[spec.name], "student_name": spec.name,
            "text_column": opts.text_column, "prompt_column": opts.prompt_column,
            "layers": opts.layers if isinstance(opts.layers, str) else [list(p) for p in opts.layers],
            "layer_pairs": [list(p) for p in pairs], "sequence_pooling": opts.sequence_pooling,
            "batch_size": opts.batch_size, "max_length": opts.max_length, "max_examples": opts.max_examples,
            "task": TASK, "fss_method": opts.fss_method, "aoag_method": task.method, "temperature": opts.temperature,
            "top_k": opts.top_k, "average": opts.average,
            "generate": None if task.max_new is None else {"max_new_tokens": task.max_new},
            "cross_layer": spec.cross_layer and not plan.extra.get("no_cross"), "keep_arrays": opts.keep_arrays, "mixed_precision": context["precision"],
            "num_processes": context["world"], "device": str(context["s_runner"].device),
            "group_by_length": opts.group_by_length, "teacher_cache": context["cache_state"],
        },
        timings=timings,
        truncation={role: {"limit": limit, "limit_source": "max_length" if limit == opts.max_length else "model",
                           "num_truncated": n_trunc} for role in ("teacher", "student")},
        notes=notes,
        teacher_features=[features["teacher"][t] for t, _ in pairs] if opts.keep_arrays else None,
        student_features=[features["student"][s] for _, s in pairs] if opts.keep_arrays else None,
        js=measures["js"], topk_overlap=measures["topk_overlap"], logprob_gap=measures["logprob_gap"],
        teacher_perplexity=measures["teacher_perplexity"], student_perplexity=measures["student_perplexity"],
        perplexity_ratio=measures["perplexity_ratio"], lm=lm,
    )


# ------------------------------------------------------------------------------- task choice
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
