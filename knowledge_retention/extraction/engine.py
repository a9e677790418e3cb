r"""The one extraction loop: a teacher and its students over a dataset, for every task.

Per batch: the task prepares the examples once; the teacher runs once (or its batch is replayed
from the teacher cache) and is pooled once; then each student runs and its pooled batch is folded,
with the shared teacher batch, into that student's stream. What a batch *is* (texts, counted
tokens, images), how a model is run and pooled, and which accumulators a stream holds belong to the
task (:mod:`knowledge_retention.extraction.tasks`); loading, sharding, length grouping, the teacher
cache, mixed precision, gathering and the coverage check are written here once.

With ``accelerate``, each process runs its shard of the prepared dataloader; the duplicates that
pad an uneven last round are dropped *before* the forward pass by the rule ``gather_for_metrics``
applies (the first ``gradient_state.remainder`` rows of the gathered last round are real), and the
streams of every process are merged with ``gather_object`` and ``+=``. The distributed numbers equal
the single-process ones up to float64 summation order.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from .options import EvalOptions
from .result import ExtractionResult
from .runtime import Runtime
from .tasks.base import ModelSpec, Plan, Task
from .teacher_cache import TeacherBatch, TeacherCache, as_cache, fingerprint, new_meta

__all__ = ["run"]


def run(task: Task, teacher: Any, specs: Sequence[ModelSpec], dataset: Any, opts: EvalOptions) -> dict[str, ExtractionResult]:
    """Scores every student of ``specs`` against ``teacher`` (see the module docstring)."""
    started = time.perf_counter()
    task.check_options(opts)
    cache = as_cache(opts.teacher_cache)
    rt = Runtime.create(opts)
    source = task.make_source(dataset, opts)
    t_spec = ModelSpec("teacher", teacher, opts.teacher_tokenizer, "teacher", "teacher", "teacher_tokenizer")
    t_runner = task.load(t_spec, opts, rt)
    s_runners = {}
    for spec in specs:
        s_runners[spec.name] = task.load(spec, opts, rt)
        task.check_pair(t_runner, s_runners[spec.name], spec)
    runners = [t_runner, *s_runners.values()]
    modes = [runner.model.training for runner in runners]
    for runner in runners:
        runner.model.eval()
    names = {"teacher": task.model_name(t_runner, t_spec),
             **{spec.name: task.model_name(s_runners[spec.name], spec) for spec in specs}}
    autocast: Callable[[], AbstractContextManager[Any]] = lambda: rt.autocast({r.device.type for r in runners})  # noqa: E731
    notes: list[str] = []
    try:
        with torch.inference_mode():
            key = parts = replay = None
            if cache is not None:
                parts = {**task.cache_parts(t_runner, source, opts, in_memory=cache.in_memory),
                         "num_processes": rt.world, "precision": rt.precision}
                key = fingerprint(parts)
                replay = cache.lookup(key, rt.rank, rt.world)
            with autocast():
                s_infos = {spec.name: task.probe(source, s_runners[spec.name], opts) for spec in specs}
                t_info = replay[0]["teacher"] if replay is not None else task.probe(source, t_runner, opts)
            for runner in runners:
                runner.reset_counters()
            plans = {spec.name: task.plan(spec, t_info, s_infos[spec.name], opts, names) for spec in specs}
            for plan in plans.values():
                for note in plan.extra.get("warn", []):
                    if rt.is_main:
                        warnings.warn(note, UserWarning, stacklevel=4)
            recorder = None
            if cache is not None and replay is None:
                assert key is not None
                recorder = cache.recorder(key, rt.rank)
                t_layers = list(range(int(t_info["n_states"])))  # a recorded entry serves any later choice of layers
            else:
                t_layers = sorted({t for plan in plans.values() for t in plan.t_layers})
            t_stream = task.teacher_stream(t_info, opts, rt)  # the teacher's own outputs (record_teacher)
            if t_stream is not None:
                t_layers = sorted(set(t_layers) | set(t_stream.layers))
            t_info["layers"] = t_layers
            grouping_s = 0.0
            if replay is not None:
                assert cache is not None and key is not None
                rank_meta = replay[0]["ranks"][rt.rank]
                batches: Any = replay[1]
                n_batches_total, capacity = int(rank_meta["n_batches"]), int(rank_meta["n_rows"])
                where = cache.where(key)
                notes.append(f"Teacher outputs replayed from the teacher cache ({where}, written "
                             f"{replay[0]['created_at']}): the teacher was not run; its timings are the ones recorded then.")
                if opts.progress and rt.is_main:
                    print(f"knowledge retention: teacher outputs reused from the teacher cache ({where})",
                          file=sys.stderr, flush=True)
            else:
                order = None
                if opts.group_by_length:
                    tick = time.perf_counter()
                    lengths = task.lengths(source, t_runner, opts)
                    if lengths is not None:
                        from .batching import length_grouped_order

                        order = length_grouped_order(lengths)
                    grouping_s = time.perf_counter() - tick
                batches = rt.loader(len(source), order, opts.batch_size)
                n_batches_total = len(batches)
                capacity = min(len(source), n_batches_total * opts.batch_size)
            streams = {spec.name: task.new_stream(plans[spec.name], spec, opts, capacity=capacity) for spec in specs}
            from tqdm.auto import tqdm

            accumulate_s = dict.fromkeys(plans, 0.0)
            n_batches = 0
            for item in tqdm(batches, total=n_batches_total, disable=not (opts.progress and rt.is_main),
                             desc=f"knowledge retention: teacher vs {', '.join(plans)}" if plans else
                             "knowledge retention: recording the teacher", unit="batch", file=sys.stderr):
                if replay is not None:
                    teacher_batch: TeacherBatch = item
                    indices = list(teacher_batch.indices)
                else:
                    indices = rt.real(item)
                    if not indices:
                        continue
                with autocast():  # a task may run the teacher to prepare (causal-lm `generate`)
                    batch = task.prepare(source, indices, opts)
                n_batches += 1
                if not batch.runs:
                    if recorder is not None:
                        recorder.add(TeacherBatch(indices, task.empty_teacher(t_info)))
                    if t_stream is not None:
                        t_stream.skip(batch)
                    for stream in streams.values():
                        stream.skip(batch)
                    continue
                tick = time.perf_counter()
                if replay is None:
                    with autocast():
                        pooled = task.teacher(t_runner, batch, t_layers, opts, record=recorder is not None)
                    tick = time.perf_counter()
                    teacher_batch = TeacherBatch(indices, pooled)
                    if recorder is not None:
                        recorder.add(teacher_batch)
                if t_stream is not None:
                    t_stream.update(teacher_batch.pooled, None, batch)
                teacher_pool_s = time.perf_counter() - tick
                for spec in specs:
                    with autocast():
                        s_pooled = task.student(s_runners[spec.name], batch, plans[spec.name], opts)
                    tick = time.perf_counter()
                    streams[spec.name].update(teacher_batch.pooled, s_pooled, batch)
                    accumulate_s[spec.name] += teacher_pool_s + time.perf_counter() - tick
    finally:
        for runner, mode in zip(runners, modes, strict=True):
            runner.model.train(mode)
    return _finish(task, source, specs, plans, streams, t_runner, s_runners, rt, opts, cache, key, parts, replay,
                   recorder, t_info, names, notes, accumulate_s, grouping_s, n_batches, started, t_stream)


def _finish(task: Task, source: Any, specs: Sequence[ModelSpec], plans: dict[str, Plan], streams: dict[str, Any],
            t_runner: Any, s_runners: dict[str, Any], rt: Runtime, opts: EvalOptions, cache: TeacherCache | None,
            key: str | None, parts: dict[str, Any] | None, replay: Any, recorder: Any, t_info: dict[str, Any],
            names: dict[str, str], notes: list[str], accumulate_s: dict[str, float], grouping_s: float,
            n_batches: int, started: float, t_stream: Any = None) -> dict[str, ExtractionResult]:
    """Gathers every process's streams, completes the teacher cache and builds each student's result."""
    if replay is not None:
        t_timing = {k: float(replay[0]["ranks"][rt.rank][k]) for k in ("truncated", "tokenize_s", "forward_s")}
    else:
        t_timing = {"truncated": t_runner.num_truncated, "tokenize_s": t_runner.tokenize_s, "forward_s": t_runner.forward_s}
    tick = time.perf_counter()
    payloads = {
        spec.name: streams[spec.name].payload({"teacher_truncated": int(t_timing["truncated"]),
                                               "student_truncated": s_runners[spec.name].num_truncated})
        for spec in specs
    }
    rank_info = None
    meta: dict[str, Any] = {}
    if recorder is not None:
        assert key is not None and parts is not None
        meta = new_meta(key, parts, t_info, rt.world)
        rank_info = recorder.close(meta, {**t_timing, "n_forward_batches": n_batches})
    t_payload = None if t_stream is None else t_stream.payload({"teacher_truncated": int(t_timing["truncated"])})
    gathered = rt.gather({"students": payloads, "teacher_cache": rank_info, "teacher_stream": t_payload})
    if t_stream is not None:
        task.finish_teacher_stream([g["teacher_stream"] for g in gathered], rt)
    cache_state = None
    if cache is not None and key is not None:
        if recorder is not None:
            meta["ranks"] = [g["teacher_cache"] for g in gathered]
            if rt.is_main or cache.in_memory:
                cache.finalize(key, meta)
            if rt.world > 1:
                rt.accelerator.wait_for_everyone()  # the entry is complete before any process looks again
            notes.append(f"Teacher outputs recorded in the teacher cache ({cache.where(key)}).")
        cache_state = {"location": cache.where(key), "key": key, "reused": replay is not None}
    gather_s = time.perf_counter() - tick
    results: dict[str, ExtractionResult] = {}
    warned: set[str] = set()
    for spec in specs:
        tick = time.perf_counter()
        merged = task.merge([g["students"][spec.name] for g in gathered])
        index = merged["index"]
        if index.shape[0] != len(source) or not np.array_equal(index, np.arange(len(source))):
            raise RuntimeError(
                f"The processes evaluated {index.shape[0]} rows for {len(source)} examples (duplicated or "
                "missing examples). Use an Accelerator with even_batches=True (the default) or without "
                "dispatch_batches."
            )
        s_runner = s_runners[spec.name]
        context = {
            "spec": spec, "names": names, "source": source, "t_runner": t_runner, "s_runner": s_runner,
            "t_info": t_info, "notes": list(notes), "warned": warned, "is_main": rt.is_main,
            "precision": rt.precision, "world": rt.world, "cache_state": cache_state,
            "timings": {
                "tokenize_s": float(t_timing["tokenize_s"]) + s_runner.tokenize_s,
                "teacher_forward_s": float(t_timing["forward_s"]),
                "student_forward_s": s_runner.forward_s,
                "accumulate_s": accumulate_s[spec.name],
                "grouping_s": grouping_s,
                "forward_batches": float(n_batches),
            },
            "merge_started": tick - gather_s,
        }
        results[spec.name] = task.result(merged, plans[spec.name], context, opts)
    total_s = time.perf_counter() - started
    for result in results.values():
        result.timings.update(total_s=total_s, examples_per_s=len(source) / total_s)
        if result.lm is not None:
            result.timings["tokens_per_s"] = result.lm["num_tokens"] / total_s
    return results
