"""Image extraction: its cost over the bare forward passes, memory against N, and flatten's memory.

Teacher: a transformers ResNet (stages 32/64/128/256 channels, depths 1/1/2/1) at 96 x 96 pixels;
student: a ViT (4 blocks, width 96, 16-pixel patches) at 64 x 64; random weights (nothing can be
downloaded here), CPU, float32. Images: synthetic 100 x 120 RGB, made from their index on access
(the dataset takes no memory that grows with N).

1. Overhead, one process: a *bare loop* (the same batches of 32 images, each model's own image
   processor, both forward passes with ``output_hidden_states=True`` under ``inference_mode``) vs
   ``evaluate_pair`` on the same images (``layers="uniform"``, cross-layer matrix on), interleaved
   over ``--repeats`` rounds; ratio of the medians (goal <= 1.10), for ``pooling="mean"`` and for
   ``pooling="flatten", flatten_grid=2``.
2. Memory against N for ``"mean"``: one fresh process per N; peak RSS during the evaluation (the
   kernel's high-water mark, reset after loading the models) and the tracemalloc peak.
3. ``"flatten"``: for the final stage/block pair and each grid k, the widths D_t, D_s, the streaming
   accumulator's D_t^2 + D_s^2 + D_t D_s float64 sums (what ``evaluate_pair`` holds, whatever N),
   the tracemalloc peak of ``evaluate_pair`` on N images, and which form ``linear_cka`` on all N rows
   takes (feature space, or N x N Gram matrices when the sums would be larger than the Gram matrices
   and than ``feature_cka._GRAM_SWITCH_BYTES``) with its own tracemalloc peak. The switch lives in
   ``knowledge_retention/feature_cka.py`` (not in this benchmark); the engine's streams do not switch.

Writes ``benchmarks/results/image_extraction.json`` and ``.md``::

    python benchmarks/image_extraction.py            # several minutes on 2 cores
    python benchmarks/image_extraction.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_overhead import _reset_peak_rss, _rss_mib  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32
CONFIGS: dict[str, dict[str, Any]] = {
    "mean (default), uniform layers, cross-layer": {"layers": "uniform"},
    "flatten, flatten_grid=2, uniform layers, cross-layer": {"layers": "uniform", "pooling": "flatten", "flatten_grid": 2},
}


class SyntheticImages(Sequence):  # type: ignore[type-arg]
    """``n`` RGB images of 100 x 120 pixels, each drawn from its index when read."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.random.default_rng(i).integers(0, 256, (100, 120, 3), dtype=np.uint8)


def build_models() -> tuple[Any, Any, Any, Any]:
    from knowledge_retention.extraction.tasks.image_models import import_torchvision

    import_torchvision()
    import transformers as t

    torch.manual_seed(0)
    teacher = t.ResNetForImageClassification(t.ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256],
                                                            depths=[1, 1, 2, 1], num_labels=10)).eval()
    student = t.ViTForImageClassification(t.ViTConfig(image_size=64, patch_size=16, hidden_size=96, num_hidden_layers=4,
                                                      num_attention_heads=4, intermediate_size=192, num_labels=10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_proc = t.ViTImageProcessor(size={"height": 96, "width": 96})
        s_proc = t.ViTImageProcessor(size={"height": 64, "width": 64})
    return teacher, student, t_proc, s_proc


def bare_loop(teacher: Any, student: Any, t_proc: Any, s_proc: Any, images: SyntheticImages) -> float:
    """Both models' processors and forward passes over the batches, nothing else."""
    from PIL import Image

    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(images), BATCH):
            batch = [Image.fromarray(images[i]) for i in range(lo, min(lo + BATCH, len(images)))]
            for model, proc in ((teacher, t_proc), (student, s_proc)):
                model(pixel_values=proc(images=batch, return_tensors="pt")["pixel_values"], output_hidden_states=True)
    return time.perf_counter() - start


def evaluator(teacher: Any, student: Any, t_proc: Any, s_proc: Any, images: Any, **options: Any) -> tuple[float, Any]:
    from knowledge_retention.extraction import evaluate_pair

    start = time.perf_counter()
    result = evaluate_pair(teacher, student, images, teacher_tokenizer=t_proc, student_tokenizer=s_proc,
                           batch_size=BATCH, progress=False, **options)
    return time.perf_counter() - start, result


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    teacher, student, t_proc, s_proc = build_models()
    images = SyntheticImages(args.n_overhead)
    bare_loop(teacher, student, t_proc, s_proc, SyntheticImages(BATCH))  # warm-up
    times: dict[str, list[float]] = {"bare": [], **{name: [] for name in CONFIGS}}
    for _ in range(args.repeats):
        times["bare"].append(bare_loop(teacher, student, t_proc, s_proc, images))
        for name, options in CONFIGS.items():
            times[name].append(evaluator(teacher, student, t_proc, s_proc, images, **options)[0])
    bare = statistics.median(times["bare"])
    return {
        "n_images": args.n_overhead, "batch_size": BATCH, "repeats": args.repeats, "seconds": times,
        "ratio_of_medians": {name: statistics.median(times[name]) / bare for name in CONFIGS},
        "ratio_of_minima": {name: min(times[name]) / min(times["bare"]) for name in CONFIGS},
    }


def memory_child(n: int) -> dict[str, Any]:
    """In a fresh process: one ``"mean"`` evaluation of ``n`` images, peak RSS reset after loading."""
    import gc

    teacher, student, t_proc, s_proc = build_models()
    evaluator(teacher, student, t_proc, s_proc, SyntheticImages(BATCH), layers="uniform")  # imports, first-call buffers
    gc.collect()
    reset = _reset_peak_rss()
    before, _ = _rss_mib()
    tracemalloc.start()
    seconds, result = evaluator(teacher, student, t_proc, s_proc, SyntheticImages(n), layers="uniform")
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    _, peak = _rss_mib()
    return {"n_images": n, "seconds": seconds, "images_per_s": n / seconds, "peak_mark_reset": reset,
            "rss_mib_before": before, "peak_rss_mib": peak, "tracemalloc_peak_mib": traced / 2**20, "krs": result.krs}


def memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in (args.n_small, args.n_large):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit(f"memory run N={n} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"memory N={n}: peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB, {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def _state_mib(d_t: int, d_s: int) -> float:
    return 8 * (d_t * d_t + d_s * d_s + d_t * d_s) / 2**20


def flatten(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The final pair (and one wide teacher stage) flattened at several grids: streaming sums vs N x N."""
    from knowledge_retention import feature_cka
    from knowledge_retention.extraction.tasks.image import ImageClassificationTask
    from knowledge_retention.extraction.tasks.image_inputs import ImageSource

    teacher, student, t_proc, s_proc = build_models()
    n = args.n_flatten
    rows = []
    cases: list[tuple[str, int | None, list[tuple[int, int]], bool]] = [
        ("final stage / final block", k, [(-1, -1)], True) for k in (1, 2, None)]
    cases.append(("teacher stage 2 (64 x 12 x 12) / final block", None, [(2, -1)], False))
    for what, k, layers, run_engine in cases:
        row: dict[str, Any] = {"pair": what, "flatten_grid": k, "n_images": n}
        task = ImageClassificationTask(flatten_grid=k)
        source = ImageSource(SyntheticImages(n))
        runners = (task.make_runner(teacher, role="teacher", preprocessor=t_proc),
                   task.make_runner(student, role="student", preprocessor=s_proc))
        feats: list[list[np.ndarray]] = [[], []]
        with torch.inference_mode():
            for lo in range(0, n, BATCH):
                images, _ = source.batch(range(lo, min(lo + BATCH, n)))
                for side, (runner, layer) in enumerate(zip(runners, layers[0], strict=True)):
                    out = runner(images, list(range(lo, lo + len(images))))
                    index = layer % len(out.hidden_states)
                    feats[side].append(task.pool(out, [index], "flatten").features[index].double().numpy())
        t, s = np.concatenate(feats[0]), np.concatenate(feats[1])
        row.update(d_teacher=int(t.shape[1]), d_student=int(s.shape[1]),
                   streaming_state_mib=_state_mib(t.shape[1], s.shape[1]), gram_mib=3 * 8 * n * n / 2**20)
        if run_engine:
            tracemalloc.start()
            options = {"flatten_grid": k} if k else {}
            seconds, result = evaluator(teacher, student, t_proc, s_proc, SyntheticImages(n), pooling="flatten",
                                        layers=layers, cross_layer=False, **options)
            _, traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            row.update(evaluate_pair_tracemalloc_peak_mib=traced / 2**20, evaluate_pair_s=seconds, fss=result.fss)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracemalloc.start()
            tick = time.perf_counter()
            value = feature_cka.linear_cka(t, s)
            row["linear_cka_s"] = time.perf_counter() - tick
            _, traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        row.update(linear_cka=value, linear_cka_tracemalloc_peak_mib=traced / 2**20,
                   linear_cka_form="N x N Gram" if any("example space" in str(w.message) for w in caught) else "feature space")
        rows.append(row)
        print(f"flatten {what} k={k}: D {row['d_teacher']}/{row['d_student']}, {row['linear_cka_form']}", flush=True)
    return rows


def markdown(report: dict[str, Any]) -> str:
    env, ov = report["environment"], report["overhead"]
    lines = [
        "# Image extraction: overhead, memory against N, flatten", "",
        f"Machine: {env['machine']}, {env['cpus']} CPU cores (shared), Python {env['python']}, torch {env['torch']}, "
        f"transformers {env['transformers']}; torch threads 1; {env['date']}; load average {env['load']:.1f} at start.",
        "Teacher: transformers ResNet (32/64/128/256 channels, depths 1/1/2/1) at 96 px; student: ViT (4 blocks, "
        "width 96, patch 16) at 64 px; random weights, CPU, float32; synthetic 100 x 120 images.", "",
        f"## Overhead: `evaluate_pair` vs the bare loop (both processors + both forward passes), "
        f"{ov['n_images']} images, batch {ov['batch_size']}, {ov['repeats']} interleaved repeats", "",
        "| run | median s | ratio of medians | ratio of minima |", "|---|---|---|---|",
        f"| bare loop (2 processors + 2 forwards) | {statistics.median(ov['seconds']['bare']):.2f} | 1.00 | 1.00 |",
    ]
    for name in CONFIGS:
        lines.append(f"| evaluate_pair: {name} | {statistics.median(ov['seconds'][name]):.2f} | "
                     f"{ov['ratio_of_medians'][name]:.3f} | {ov['ratio_of_minima'][name]:.3f} |")
    mem = report["memory"]
    lines += ["", "## Memory against N: `pooling=\"mean\"`, uniform layers, cross-layer matrix; one fresh process per N", "",
              "| N | seconds | images/s | RSS before (MiB) | peak RSS during evaluation (MiB) | tracemalloc peak (MiB) |",
              "|---|---|---|---|---|---|"]
    for row in mem:
        lines.append(f"| {row['n_images']:,} | {row['seconds']:.0f} | {row['images_per_s']:.0f} | {row['rss_mib_before']:.0f} | "
                     f"{row['peak_rss_mib']:.0f} | {row['tracemalloc_peak_mib']:.1f} |")
    if len(mem) == 2:
        growth = mem[1]["peak_rss_mib"] / mem[0]["peak_rss_mib"] - 1
        lines.append(f"\n- Peak RSS at N={mem[1]['n_images']:,} vs N={mem[0]['n_images']:,}: {100 * growth:+.1f}% "
                     f"for {mem[1]['n_images'] / mem[0]['n_images']:.0f}x the images.")
    lines += ["", f"## `pooling=\"flatten\"`: streaming sums vs N x N Gram matrices ({report['flatten'][0]['n_images']} images)", "",
              "| pair | flatten_grid | D_t | D_s | streaming sums (MiB) | 3 N x N Gram (MiB) | evaluate_pair tracemalloc peak (MiB) "
              "| linear_cka on all rows: form | its tracemalloc peak (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["flatten"]:
        engine = f"{row['evaluate_pair_tracemalloc_peak_mib']:.1f}" if "evaluate_pair_tracemalloc_peak_mib" in row else "not run"
        lines.append(f"| {row['pair']} | {row['flatten_grid'] or 'full map'} | {row['d_teacher']:,} | {row['d_student']:,} | "
                     f"{row['streaming_state_mib']:.1f} | {row['gram_mib']:.1f} | {engine} | {row['linear_cka_form']} | "
                     f"{row['linear_cka_tracemalloc_peak_mib']:.1f} |")
    lines += ["",
              "- `evaluate_pair` streams: its float64 sums grow as D^2 whatever N, and do not switch form; the last "
              "row's pair was not run through it (its sums are the column 'streaming sums').",
              "- `linear_cka` on all rows (the function of `knowledge_retention/feature_cka.py`, as on this branch) "
              "computes from N x N Gram matrices when the feature-space sums would exceed both the Gram matrices "
              "and its switch size; `flatten_grid=k` bounds D at C k^2 instead."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-overhead", type=int, default=512)
    parser.add_argument("--n-small", type=int, default=256)
    parser.add_argument("--n-large", type=int, default=2048)
    parser.add_argument("--n-flatten", type=int, default=256)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    if args.quick:
        args.repeats, args.n_overhead, args.n_small, args.n_large, args.n_flatten = 1, 64, 64, 128, 64
    import transformers

    report = {
        "environment": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0]},
        "overhead": overhead(args),
    }
    print("overhead:", report["overhead"]["ratio_of_medians"], flush=True)
    report["memory"] = memory(args)
    report["flatten"] = flatten(args)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"image_extraction{suffix}.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / f"image_extraction{suffix}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
