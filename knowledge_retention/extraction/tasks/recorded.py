r"""A recorded causal-LM teacher: its side of the evaluation written once, and students scored against it later.

Two tasks of the one engine, both the causal-LM task with the teacher's side changed:

* :class:`RecordingTask` (:func:`~knowledge_retention.extraction.record_teacher`, ``knowledge-retention
  record-teacher``): the engine runs the teacher alone over the dataset (sharded over the processes of
  an ``accelerate`` launch, grouped by length, under its autocast) and the task's *teacher stream*
  writes, per counted token, the teacher's top-k ids and log-probabilities, the log of the remaining
  mass, the log-probability of the true next token and the hidden states of the recorded layers
  (:class:`~knowledge_retention.extraction.recorded.RecordingWriter`, one set of shard files per
  process); after the gather, the main process writes the manifest (one folder).
* :class:`RecordedTeacherTask`: a recording folder given where a teacher goes
  (``evaluate_pair(folder, student, dataset)``). The teacher is never loaded: the students' tokenizer
  encodes the texts (after its vocabulary, the texts and the extraction options are checked against
  the recording's manifest), each batch's teacher side is read from the recording (its counted tokens
  must be the students' exactly), and the students are scored with
  :func:`~knowledge_retention.extraction.token_step.recorded_step`: KL and JS over the k recorded
  tokens and one tail bucket (lower bounds of the full-vocabulary values, so AOAg is an upper bound
  when k < V), top-1 agreement and perplexities exact. The result's ``options["recorded_teacher"]``,
  ``lm["recorded_teacher"]`` and notes say so, with the mean tail mass. With k = V the numbers are the
  live teacher's.

A recording at evaluation may use any number of processes: the batches are read by text index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._validation import InputError, InputTypeError, check_choice
from ..options import EvalOptions
from ..recorded import (
    FORMAT,
    HIDDEN_DTYPES,
    LOGPROB_DTYPES,
    MANIFEST,
    RecordedBatch,
    RecordedTeacher,
    RecordingWriter,
    finalize_recording,
)
from ..result import ExtractionResult
from ..streams import PooledBatch
from ..teacher_cache import texts_fingerprint
from ..token_step import record_step, recorded_step
from .base import Batch, ModelSpec, Plan
from .causal_lm import TASK, CausalLMTask, _merge, _Streams
from .lm_inputs import CountedBatch, _head_size, _LMRunner

__all__ = ["RECORDING_OPTIONS", "RecordedTeacherTask", "RecordingTask", "is_recording"]

#: what an evaluation against a recording must share with it besides the texts (their fingerprint) and the
#: vocabulary: the options that change the counted tokens or the rows, and the prompts' fingerprint
RECORDING_OPTIONS = ("max_length", "sequence_pooling", "prompts")
_LAYER_PRESETS = ("final", "all")


def is_recording(teacher: Any) -> bool:
    """Whether ``teacher`` names a teacher-recording folder (finished, or shards of an unfinished one)."""
    if not isinstance(teacher, (str, os.PathLike)):
        return False
    path = Path(os.path.expanduser(os.fspath(teacher)))
    if not path.is_dir():
        return False
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            return bool(json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT)
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return False
    return any(path.glob("rank*-part*.safetensors"))


def _checked_options(opts: EvalOptions, source: Any) -> dict[str, Any]:
    """The values of :data:`RECORDING_OPTIONS` for this evaluation (``prompts``: SHA-256 of the prompts, or None)."""
    prompts = None
    if opts.prompt_column is not None:
        import hashlib

        digest = hashlib.sha256()
        for lo in range(0, len(source), 4096):
            for prompt in source.batch(range(lo, min(lo + 4096, len(source))))[1]:
                data = prompt.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little") + data)
        prompts = digest.hexdigest()
    return {"max_length": opts.max_length, "sequence_pooling": opts.sequence_pooling, "prompts": prompts}


def _targets(run: CountedBatch, rows: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    return np.asarray([run.ids[r][k] for r, k in zip(rows.tolist(), tgt.tolist(), strict=True)], dtype=np.int64)


# ------------------------------------------------------------------------------------------ recording
class _RecordingStream:
    """The teacher stream of :class:`RecordingTask`: one :class:`RecordingWriter` per process."""

    def __init__(self, writer: RecordingWriter, layers: list[int], widths: list[int], k: int, pooled: bool) -> None:
        self.writer, self.layers, self.widths, self.k, self.pooled = writer, layers, widths, k, pooled

    def skip(self, batch: Batch) -> None:
        """A batch without a counted token: its texts are recorded as evaluated."""
        none = np.zeros(0, dtype=np.int64)
        self.writer.write(RecordedBatch(
            example=none, position=none, target=none, topk_ids=np.zeros((0, self.k), np.int64),
            topk_logprobs=np.zeros((0, self.k), np.float32), tail_logmass=np.zeros(0, np.float32),
            target_logprob=np.zeros(0, np.float32),
            hidden={layer: np.zeros((0, self.widths[layer]), np.float32) for layer in self.layers},
            pooled_example=none if self.pooled else None, examples=np.asarray(batch.indices, dtype=np.int64)))

    def update(self, t: PooledBatch, s: Any, batch: Batch) -> None:
        d = batch.data
        run: CountedBatch = d["run"]
        rows, tgt = d["rows"], d["tgt"]
        targets = _targets(run, rows, tgt)
        rec = record_step(t.logits, torch.as_tensor(targets), k=self.k)
        starts = np.asarray(run.starts)
        self.writer.write(RecordedBatch(
            example=np.asarray(run.indices, dtype=np.int64)[rows], position=tgt - starts[rows], target=targets,
            **{key: value.numpy() for key, value in rec.items()},
            hidden={layer: t.features[layer].float().cpu().numpy() for layer in self.layers},
            pooled_example=np.asarray(run.indices, dtype=np.int64) if self.pooled else None,
            examples=np.asarray(batch.indices, dtype=np.int64)))

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        return {"summary": self.writer.close(), "counters": counters}


class RecordingTask(CausalLMTask):
    """``record_teacher``: the causal-LM teacher run alone, its outputs written to ``out_dir`` (module docstring).

    Args:
        out_dir: the recording's folder (created; must be empty or absent).
        top_k: k, the most probable next tokens recorded per counted token (None: the whole vocabulary).
        layers: the teacher hidden states recorded for FSS: ``"final"``, ``"all"`` or hidden-state indices
            (0 = embeddings, -1 = the last).
        logprob_dtype: ``"float32"`` or ``"float16"`` for the top-k log-probabilities.
        hidden_dtype: ``"float32"`` or ``"float16"`` for the hidden states.
    """

    name = "causal-lm-record"

    @classmethod
    def claims(cls, task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> bool:
        return False  # only record_teacher builds it

    def __init__(self, out_dir: str | os.PathLike[str], *, top_k: int | None, layers: Any,
                 logprob_dtype: str = "float32", hidden_dtype: str = "float32") -> None:
        super().__init__()
        if not isinstance(out_dir, (str, os.PathLike)):
            raise InputTypeError(f"`out_dir` must be a folder path, got {type(out_dir).__name__}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise InputError(f"`top_k` must be a positive int (or None: the whole vocabulary), got {top_k!r}.")
        if isinstance(layers, str):
            check_choice(layers, "layers", _LAYER_PRESETS)
        elif not isinstance(layers, Sequence) or not all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in layers):
            raise InputTypeError(f"`layers` must be 'final', 'all' or a list of teacher hidden-state indices, got {layers!r}.")
        check_choice(logprob_dtype, "logprob_dtype", LOGPROB_DTYPES)
        check_choice(hidden_dtype, "hidden_dtype", HIDDEN_DTYPES)
        self.out_dir = Path(os.path.expanduser(os.fspath(out_dir)))
        self.top_k, self.layers_spec = top_k, layers
        self.logprob_dtype, self.hidden_dtype = logprob_dtype, hidden_dtype
        self.manifest: dict[str, Any] = {}

    def check_options(self, opts: EvalOptions) -> None:
        super().check_options(opts)
        if opts.generate is not None or opts.teacher_cache is not None:
            raise InputError("record_teacher records teacher-forced texts: leave `generate` and `teacher_cache` unset.")
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise InputError(f"`out_dir` {str(self.out_dir)!r} is not an empty folder; choose a new one "
                             "(a recording is never written over another).")
        self.opts = opts

    def make_source(self, dataset: Any, opts: EvalOptions) -> Any:
        self.source = super().make_source(dataset, opts)
        return self.source

    def _layers(self, n_states: int) -> list[int]:
        if self.layers_spec == "final":
            return [n_states - 1]
        if self.layers_spec == "all":
            return list(range(n_states))
        bad = [int(i) for i in self.layers_spec if not -n_states <= int(i) < n_states]
        if bad:
            raise InputError(f"`layers` {bad} are out of range: the teacher has {n_states} hidden states "
                             f"(0 = embeddings, {n_states - 1} or -1 = the last).")
        return sorted({int(i) % n_states for i in self.layers_spec})

    def teacher_stream(self, t_info: dict[str, Any], opts: EvalOptions, runtime: Any) -> _RecordingStream:
        n_states, vocab = int(t_info["n_states"]), int(t_info["num_outputs"])
        k = vocab if self.top_k is None else int(self.top_k)
        if k > vocab:
            raise InputError(f"`top_k` ({k}) exceeds the teacher's vocabulary of {vocab} tokens (None records all of them).")
        self.k, self.vocab, self.t_info, self.rt = k, vocab, t_info, runtime
        layers = self._layers(n_states)
        if runtime.world > 1:  # every process checked the folder empty before any writes to it
            runtime.accelerator.wait_for_everyone()
        writer = RecordingWriter(self.out_dir, top_k=k, vocab_size=vocab, rank=runtime.rank,
                                 logprob_dtype=self.logprob_dtype, hidden_dtype=self.hidden_dtype, layers=layers,
                                 pooled=opts.sequence_pooling is not None)
        return _RecordingStream(writer, layers, [int(w) for w in t_info["widths"]], k, opts.sequence_pooling is not None)

    def finish_teacher_stream(self, payloads: list[Any], runtime: Any) -> None:
        """The main process writes the manifest once every process closed its shards; all wait for it."""
        opts, t_info = self.opts, self.t_info
        options: dict[str, Any] = {"text_column": opts.text_column, "prompt_column": opts.prompt_column,
                                   "max_examples": opts.max_examples, **_checked_options(opts, self.source)}
        truncated = sum(int(p["counters"]["teacher_truncated"]) for p in payloads)
        options.update(limit=self.limit(opts), num_hidden_states=int(t_info["n_states"]),
                       widths=[int(w) for w in t_info["widths"]], temperature=1.0,
                       teacher=self.model_name(self.teacher_runner, ModelSpec("teacher", None, None, "", "", "")),
                       mixed_precision=runtime.precision, num_processes=runtime.world, batch_size=opts.batch_size,
                       group_by_length=opts.group_by_length, layers=self.layers_spec, num_truncated=truncated,
                       full_logits=bool(t_info.get("full_logits")))
        if runtime.is_main:
            finalize_recording(self.out_dir, num_processes=runtime.world, num_examples=len(self.source), top_k=self.k,
                               vocab_size=self.vocab, tokenizer=self.teacher_runner.tokenizer,
                               texts_fingerprint=texts_fingerprint(self.source), options=options,
                               logprob_dtype=self.logprob_dtype, hidden_dtype=self.hidden_dtype,
                               layers=self._layers(int(t_info["n_states"])), sequence_pooling=opts.sequence_pooling,
                               tokenizer_name=getattr(self.teacher_runner.tokenizer, "name_or_path", None) or None)
        if runtime.world > 1:
            runtime.accelerator.wait_for_everyone()
        self.manifest = json.loads((self.out_dir / MANIFEST).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------- replay
@dataclass
class _RecordedRunner(_LMRunner):
    """The teacher's runner when the teacher is a recording: no model, batches read from the folder."""

    reader: Any = None


class _RecordedStreams(_Streams):
    """A student's streams against a recorded teacher: :func:`recorded_step` instead of the live step."""

    tail_sum = 0.0
    tail_tokens = 0

    def statistics(self, teacher: Any, student: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        stats = recorded_step(teacher, student, targets, top_k=self.tokens.top_k)
        self.tail_sum += float(stats.pop("teacher_tail_mass").sum())
        self.tail_tokens += int(targets.shape[0])
        return stats

    def payload(self, counters: dict[str, Any]) -> dict[str, Any]:
        return {**super().payload(counters), "tail": (self.tail_sum, self.tail_tokens)}


def _named(err: InputError, folder: Path) -> InputError:
    return InputError(f"`teacher` (the recording in {str(folder)!r}): {err}")


class RecordedTeacherTask(CausalLMTask):
    """``evaluate_pair(recording_folder, student, dataset)``: students scored against a recorded teacher."""

    name = "causal-lm-recorded"

    @classmethod
    def claims(cls, task: str | None, teacher: Any, students: Mapping[str, Any], *, trust_remote_code: bool = False) -> bool:
        if not is_recording(teacher):
            return False
        if task not in (None, TASK):
            raise InputError(f"`teacher` {os.fspath(teacher)!r} is a recorded causal-LM teacher: use task='causal-lm' "
                             f"(or leave `task` unset), not task={task!r}.")
        return True

    def check_options(self, opts: EvalOptions) -> None:
        super().check_options(opts)
        refused = {"generate": "the teacher cannot continue the texts: it is not run",
                   "teacher_cache": "the recording already holds the teacher's outputs",
                   "teacher_tokenizer": "the students' tokenizers are checked against the recording's vocabulary",
                   "temperature": "the recording holds temperature-1 log-probabilities",
                   "measures": "the recorded step computes every measure from the top-k buckets"}
        for name, reason in refused.items():
            if not opts.is_default(name):
                value = getattr(opts, name)
                shown = repr(value) if isinstance(value, (str, int, float, dict)) else type(value).__name__
                raise InputError(f"`{name}={shown}` cannot be used with a recorded `teacher` ({reason}); leave it unset.")
        self.opts = opts

    def make_source(self, dataset: Any, opts: EvalOptions) -> Any:
        self.source = super().make_source(dataset, opts)
        self._texts: str | None = None
        return self.source

    def load(self, spec: ModelSpec, opts: EvalOptions, device: Any) -> _LMRunner:
        if spec.name == "teacher" and spec.argument == "teacher":
            folder = Path(os.path.expanduser(os.fspath(spec.model)))
            try:
                reader = RecordedTeacher(folder)
            except InputError as err:
                raise _named(err, folder) from None
            accelerator = getattr(device, "accelerator", None)
            where = accelerator.device if accelerator is not None else torch.device("cpu")
            recorded = _RecordedRunner(torch.nn.Module(), None, "teacher", where, reader=reader)
            recorded.path, recorded.model_limit = str(folder), reader.manifest["options"].get("limit")
            self.runners.append(recorded)
            return recorded
        runner = super().load(spec, opts, device)
        if self.teacher_runner.tokenizer is None:  # the texts are encoded by the (first) student's tokenizer
            self.teacher_runner.tokenizer = runner.tokenizer
        return runner

    def check_pair(self, teacher: _LMRunner, student: _LMRunner, spec: ModelSpec) -> None:
        reader: RecordedTeacher = teacher.reader  # type: ignore[attr-defined]
        if self._texts is None:
            self._texts = texts_fingerprint(self.source)
        try:
            reader.check_compatible(tokenizer=student.tokenizer, texts_fingerprint=self._texts,
                                    vocab_size=_head_size(student.model),
                                    options=_checked_options(self.opts, self.source))
        except InputError as err:
            raise _named(err, reader.folder) from None

    def probe(self, source: Any, runner: _LMRunner, opts: EvalOptions) -> dict[str, Any]:
        if not isinstance(runner, _RecordedRunner):
            return super().probe(source, runner, opts)
        options = runner.reader.manifest["options"]
        return {"n_states": int(options["num_hidden_states"]), "widths": [int(w) for w in options["widths"]],
                "num_outputs": runner.reader.vocab_size, "full_logits": False}

    def plan(self, spec: ModelSpec, t_info: dict[str, Any], s_info: dict[str, Any], opts: EvalOptions,
             names: dict[str, str]) -> Plan:
        plan = super().plan(spec, t_info, s_info, opts, names)
        reader: RecordedTeacher = self.teacher_runner.reader  # type: ignore[attr-defined]
        needed = sorted({t for t, _ in plan.pairs})
        missing = sorted(set(needed) - set(reader.layers))
        if missing:
            raise InputError(f"`teacher` (the recording in {str(reader.folder)!r}) holds the hidden states of teacher "
                             f"layers {reader.layers}; `layers`={opts.layers!r} needs {needed}: choose layers among the "
                             "recorded ones, or record these (record_teacher(layers=...)).")
        if set(plan.t_layers) - set(reader.layers):  # the cross-layer matrix needs every teacher layer
            plan.t_layers = needed
            plan.extra["no_cross"] = spec.cross_layer
        return plan

    def teacher(self, runner: _LMRunner, batch: Batch, layers: list[int], opts: EvalOptions, *, record: bool) -> PooledBatch:
        reader: RecordedTeacher = runner.reader  # type: ignore[attr-defined]
        d = batch.data
        run: CountedBatch = d["run"]
        rec = reader.batch(run.indices)
        targets = _targets(run, d["rows"], d["tgt"])
        pooled_ok = rec.pooled_example is None or rec.pooled_example.tolist() == list(run.indices)
        if rec.num_tokens != targets.shape[0] or not np.array_equal(rec.target, targets) or not pooled_ok:
            raise InputError(
                f"`teacher` (the recording in {str(reader.folder)!r}): texts {list(run.indices)[:5]}... give "
                f"{targets.shape[0]} counted tokens with the students' tokenizer, the recording {rec.num_tokens} "
                f"other ones (texts truncated to {reader.manifest['options'].get('limit')} tokens there): the "
                "students' tokenizer settings or length limit differ from the recorded teacher's.")
        features = {layer: torch.from_numpy(np.asarray(rec.hidden[layer], dtype=np.float32)) for layer in layers}
        outputs = {"topk_ids": rec.topk_ids, "topk_logprobs": rec.topk_logprobs, "tail_logmass": rec.tail_logmass,
                   "target_logprob": rec.target_logprob}
        return PooledBatch(features, outputs)  # type: ignore[arg-type]

    def new_stream(self, plan: Plan, spec: ModelSpec, opts: EvalOptions, *, capacity: int) -> _RecordedStreams:
        return _RecordedStreams(plan.pairs, plan.t_layers, plan.s_layers,
                                cross=spec.cross_layer and not plan.extra.get("no_cross"),
                                debiased=opts.fss_method == "debiased_cka", temperature=opts.temperature,
                                top_k=opts.top_k, keep_worst=20, keep_arrays=opts.keep_arrays)

    def merge(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        merged = _merge(payloads)
        merged["tail"] = (sum(p["tail"][0] for p in payloads), sum(p["tail"][1] for p in payloads))
        return merged

    def result(self, merged: dict[str, Any], plan: Plan, context: dict[str, Any], opts: EvalOptions) -> ExtractionResult:
        result = super().result(merged, plan, context, opts)
        reader: RecordedTeacher = self.teacher_runner.reader  # type: ignore[attr-defined]
        k, vocab = reader.top_k, reader.vocab_size
        tail_sum, tail_tokens = merged["tail"]
        mean_tail = tail_sum / tail_tokens if tail_tokens else float("nan")
        manifest = reader.manifest
        info = {"path": str(reader.folder), "top_k": k, "vocab_size": vocab, "exact": k >= vocab,
                "mean_tail_mass": mean_tail, "teacher": manifest["options"].get("teacher"),
                "bytes_per_token": manifest.get("bytes_per_token"), "num_tokens": manifest["num_tokens"],
                "logprob_dtype": manifest["dtypes"]["topk_logprobs"], "hidden_dtype": manifest["dtypes"]["hidden"]}
        if k >= vocab:
            note = (f"Recorded teacher ({reader.folder}): all {vocab} tokens recorded per counted token, so every "
                    "measure equals the live teacher's; the teacher was not run.")
        else:
            note = (f"Recorded teacher ({reader.folder}, top-{k} of {vocab} tokens): the teacher was not run. KL and JS "
                    f"are computed over the {k} recorded tokens and one tail bucket, so they are lower bounds of the "
                    "full-vocabulary values and AOAg (mean exp(-KL)) and the KRS are upper bounds; top-1 agreement "
                    f"and the perplexities are exact. Mean teacher tail mass (outside the top {k}): {mean_tail:.4g}.")
        notes = [note]
        if opts.top_k > k:
            notes.append(f"top-{opts.top_k} overlap needs the teacher's top {opts.top_k}; the recording has {k}: n/a.")
        if plan.extra.get("no_cross"):
            notes.append(f"No cross-layer CKA: the recording holds teacher layers {reader.layers}, not all of them.")
        result.notes[:0] = notes
        result.options["recorded_teacher"] = info
        if result.lm is not None:
            result.lm["recorded_teacher"] = info
        return result
