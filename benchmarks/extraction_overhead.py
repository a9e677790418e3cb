"""Cost of `evaluate_pair` over the bare forward passes, and its peak memory as N grows.

Teacher: all-MiniLM-L6-v2 (6 layers x 384) with a random 2-class head; student: 3 layers made of
its blocks 0, 2, 4 (`every_other_layer_student`, head copied). Both run on CPU in float32.

1. Overhead, in one process: a *bare loop* (the same batches of 32 texts, each tokenised by each
   model's tokenizer exactly as the evaluator does - dynamic padding, truncation at the model
   limit - and both forward passes with ``output_hidden_states=True`` under ``inference_mode``)
   vs ``evaluate_pair`` on the same texts, interleaved over ``--repeats`` rounds; the ratio of the
   medians is reported (target <= 1.10) for the default options and for a heavier setting.
2. Memory: one fresh subprocess per N (``--n-small`` vs ``--n-large`` SST-2 train sentences,
   ``--memory-max-length`` tokens): the peak RSS during the evaluation (the kernel's high-water
   mark, reset after model loading; ``resource.getrusage`` where that is unavailable), and the peak
   of Python/numpy allocations during it (``tracemalloc``; torch's own buffers are not traced, RSS
   covers them). Target: peak RSS flat within 10%.

Writes ``benchmarks/results/extraction_overhead.json`` and ``.md``::

    python benchmarks/extraction_overhead.py            # full run (several minutes on 2 cores)
    python benchmarks/extraction_overhead.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _threads_from_argv(default: str = "1") -> str:
    argv = sys.argv[1:]
    for k, arg in enumerate(argv):
        if arg == "--threads" and k + 1 < len(argv):
            return argv[k + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return default


# numpy's BLAS (the accumulators) gets as many threads as torch, before numpy is imported: on two
# shared, busy cores a second spinning BLAS thread makes the D x D products several times slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads_from_argv())

RESULTS = Path(__file__).resolve().parent / "results"
# dataset order (group_by_length=False): the same batches as the bare loop, so the ratio is the
# evaluator's own overhead; what length grouping saves is measured by benchmarks/teacher_once.py
CONFIGS: dict[str, dict[str, Any]] = {
    "default (final layer, cls, cross-layer 7x4)": {"group_by_length": False},
    "uniform layers, mean pooling, labels, cross-layer": {"layers": "uniform", "pooling": "mean", "label_column": "label",
                                                          "group_by_length": False},
}


def sst2_file(name: str) -> Path:
    """``train.tsv`` / ``dev.tsv`` under ``$SST2_DIR`` (default /work/shared/data/sst2)."""
    path = Path(os.environ.get("SST2_DIR", "/work/shared/data/sst2")) / name
    if not path.is_file():
        raise SystemExit(f"SST-2 file not found: {path} (set SST2_DIR)")
    return path


def read_sst2(name: str, n: int) -> dict[str, list[Any]]:
    """The first ``n`` rows of an SST-2 tsv as columns ``sentence`` and ``label``."""
    rows = sst2_file(name).read_text(encoding="utf-8").splitlines()[1:]
    if n > len(rows):
        raise SystemExit(f"{name} has {len(rows)} rows, {n} requested")
    sentences, labels = zip(*(row.split("\t") for row in rows[:n]), strict=True)
    return {"sentence": [s.strip() for s in sentences], "label": [int(x) for x in labels]}


def build_models(seed: int = 0) -> tuple[Any, Any, Any]:
    """(teacher, student, tokenizer): MiniLM with a random head and its 3-layer every-other-block copy."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from knowledge_retention.distillation.pretrained import minilm_dir
    from knowledge_retention.distillation.students import every_other_layer_student

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    teacher = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2).eval()
    student = every_other_layer_student(teacher, 3).eval()
    return teacher, student, AutoTokenizer.from_pretrained(str(minilm_dir()))


def bare_loop(teacher: Any, student: Any, tokenizer: Any, texts: list[str], batch_size: int,
              max_length: int | None) -> float:
    """Seconds for tokenising and running both models on every batch, nothing else."""
    import torch

    from knowledge_retention.extraction.inputs import model_max_length

    limits = [max_length or model_max_length(m, tokenizer) for m in (teacher, student)]
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            batch = texts[lo : lo + batch_size]
            for model, limit in zip((teacher, student), limits, strict=True):
                enc = tokenizer(batch, padding=True, truncation=True, max_length=limit, return_tensors="pt")
                model(**enc, output_hidden_states=True, return_dict=True)
    return time.perf_counter() - start


def evaluator(teacher: Any, student: Any, tokenizer: Any, data: dict[str, list[Any]], batch_size: int,
              max_length: int | None, **options: Any) -> tuple[float, Any]:
    from knowledge_retention.extraction import evaluate_pair

    start = time.perf_counter()
    result = evaluate_pair(teacher, student, data, teacher_tokenizer=tokenizer, student_tokenizer=tokenizer,
                           batch_size=batch_size, max_length=max_length, progress=False, **options)
    return time.perf_counter() - start, result


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    teacher, student, tokenizer = build_models()
    data = read_sst2("dev.tsv", args.n_overhead)
    texts = data["sentence"]
    evaluator(teacher, student, tokenizer, {k: v[:64] for k, v in data.items()}, args.batch_size, None)  # warm-up
    bare_loop(teacher, student, tokenizer, texts[:64], args.batch_size, None)
    times: dict[str, list[float]] = {"bare": [], **{name: [] for name in CONFIGS}}
    breakdown: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        times["bare"].append(bare_loop(teacher, student, tokenizer, texts, args.batch_size, None))
        for name, options in CONFIGS.items():
            seconds, result = evaluator(teacher, student, tokenizer, data, args.batch_size, None, **options)
            times[name].append(seconds)
            breakdown[name] = {k: round(v, 3) for k, v in result.timings.items()}
            breakdown[name]["krs"] = result.krs
    bare = statistics.median(times["bare"])
    return {
        "n_examples": len(texts),
        "source": "SST-2 dev.tsv",
        "batch_size": args.batch_size,
        "max_length": "model limit (512)",
        "repeats": args.repeats,
        "bare_loop_s": {"median": bare, "all": times["bare"]},
        "evaluator": {
            name: {
                "median_s": statistics.median(times[name]),
                "all_s": times[name],
                "ratio_of_medians": statistics.median(times[name]) / bare,
                "ratio_of_minima": min(times[name]) / min(times["bare"]),
                "last_run_timings": breakdown[name],
            }
            for name in CONFIGS
        },
    }


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS since start or the last reset) of this process, in MiB.

    The peak is ``VmHWM`` of ``/proc/self/status``, which a reset clears; ``getrusage``'s
    ``ru_maxrss`` also keeps the high-water marks of exited threads, so it cannot be reset.
    """
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    if "VmHWM" not in status:  # not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return float(status["VmRSS"].split()[0]) / 1024, float(status["VmHWM"].split()[0]) / 1024


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (Linux >= 4.0, ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(n: int, max_length: int, batch_size: int) -> dict[str, Any]:
    """Runs in a fresh process: one evaluation of ``n`` train sentences, with memory measured.

    Model loading peaks higher than the evaluation itself, so the peak-RSS mark is reset after
    loading: ``peak_rss_mib`` is the highest RSS *during* the evaluation.
    """
    import gc

    import datasets

    teacher, student, tokenizer = build_models()
    data = datasets.Dataset.from_dict(read_sst2("train.tsv", n))
    gc.collect()
    _, loading_peak = _rss_mib()
    reset = _reset_peak_rss()
    rss_before, _ = _rss_mib()
    trajectory: list[float] = []
    done = threading.Event()

    def sample() -> None:  # current RSS every second, to tell a plateau from a steady climb
        while not done.wait(1.0):
            trajectory.append(_rss_mib()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    seconds, result = evaluator(teacher, student, tokenizer, data, batch_size, max_length, label_column="label")
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    done.set()
    sampler.join()
    _, peak = _rss_mib()
    quarters = [trajectory[min(len(trajectory) - 1, round(q * (len(trajectory) - 1)))] for q in (0.25, 0.5, 0.75, 1.0)]
    return {
        "n_examples": n,
        "max_length": max_length,
        "batch_size": batch_size,
        "seconds": seconds,
        "examples_per_s": n / seconds,
        "peak_rss_mib_loading": loading_peak,
        "peak_mark_reset": reset,
        "rss_mib_before": rss_before,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - rss_before,
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "rss_mib_at_25_50_75_100pct": quarters if trajectory else None,
        "truncated": result.truncation,
        "krs": result.krs,
    }


#: Environments for the memory runs (name -> extra variables). Add e.g. ``{"MALLOC_MMAP_THRESHOLD_":
#: "131072"}`` to see how much of the RSS comes from glibc keeping freed buffers in the heap.
MALLOC_SETTINGS: dict[str, dict[str, str]] = {"glibc default": {}}


def memory(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for setting, extra_env in MALLOC_SETTINGS.items():
        runs[setting] = []
        for n in (args.n_small, args.n_large):
            cmd = [sys.executable, __file__, "--memory-child", str(n), "--memory-max-length",
                   str(args.memory_max_length), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ | extra_env)
            if proc.returncode != 0:
                raise SystemExit(f"memory run N={n} ({setting}) failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[setting].append(row)
            print(f"memory N={n} ({setting}): {row['peak_rss_mib']:.0f} MiB peak RSS, {row['seconds']:.0f} s", flush=True)
    return runs


def markdown(report: dict[str, Any]) -> str:
    ov, mem = report["overhead"], report["memory"]
    lines = [
        "# Extraction overhead and memory",
        "",
        f"Machine: {report['machine']}; torch threads: {report['torch_threads']}, BLAS threads: "
        f"{report['blas_threads']}; {report['date']}; load average {report['load_average_at_start'][0]:.1f} at start.",
        "Teacher all-MiniLM-L6-v2 + random 2-class head, student = its blocks 0, 2, 4 (3 layers); CPU, float32.",
        "",
        f"## Overhead: `evaluate_pair` vs a bare loop of the two forward passes ({ov['n_examples']} {ov['source']} "
        f"sentences, batch {ov['batch_size']}, same tokenisation, {ov['repeats']} interleaved repeats)",
        "",
        "| run | median s | ratio of medians | ratio of minima |",
        "|---|---|---|---|",
        f"| bare loop (tokenise + 2 forwards) | {ov['bare_loop_s']['median']:.2f} | 1.00 | 1.00 |",
    ]
    for name, row in ov["evaluator"].items():
        lines.append(f"| evaluate_pair: {name} | {row['median_s']:.2f} | {row['ratio_of_medians']:.3f} | "
                     f"{row['ratio_of_minima']:.3f} |")
    first = next(iter(mem.values()))[0]
    lines += [
        "",
        f"## Memory: one fresh process per N (SST-2 train sentences, max_length {first['max_length']}, "
        f"batch {first['batch_size']}, default options + labels)",
        "",
        "| malloc | N | seconds | examples/s | RSS before (MiB) | peak RSS during evaluation (MiB) | growth (MiB) "
        "| RSS at 25/50/75/100% of the run (MiB) | tracemalloc peak (MiB) | truncated (teacher/student) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, rows in mem.items():
        for row in rows:
            trunc = row["truncated"]
            path = "/".join(f"{x:.0f}" for x in row["rss_mib_at_25_50_75_100pct"] or [])
            lines.append(
                f"| {setting} | {row['n_examples']:,} | {row['seconds']:.0f} | {row['examples_per_s']:.0f} | "
                f"{row['rss_mib_before']:.0f} | {row['peak_rss_mib']:.0f} | {row['rss_growth_mib']:.0f} | {path} | "
                f"{row['tracemalloc_peak_mib']:.1f} | {trunc['teacher']['num_truncated']}/{trunc['student']['num_truncated']} |"
            )
    lines += [""]
    for setting, growth in report["rss_growth"].items():
        small, large = mem[setting][0]["n_examples"], mem[setting][-1]["n_examples"]
        lines.append(f"- {setting}: peak RSS during evaluation, N={large:,} vs N={small:,}: {100 * growth:+.1f}% "
                     "(target: within 10%).")
    lines += [
        f"- Model loading peaked at {first['peak_rss_mib_loading']:.0f} MiB; the peak mark is reset after loading.",
        "- tracemalloc counts Python and numpy allocations only (the 7 x 4 cross-layer CKA sums, ~46 MB, are "
        "among them); torch's and the tokenizer's buffers show in RSS only.",
        "- The RSS columns at 25/50/75/100% of the run tell a plateau from a climb. An earlier version that "
        "appended small per-batch arrays (logits, indices) to lists climbed steadily (~5 KB/example, heap "
        "fragmentation: 719 -> 940 MiB over 20,000 examples while a bare forward loop stayed flat); the rows "
        "are now preallocated once.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-overhead", type=int, default=872)
    parser.add_argument("--n-small", type=int, default=872)
    parser.add_argument("--n-large", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-max-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1: steadier timings when the cores are shared)")
    parser.add_argument("--quick", action="store_true", help="small smoke run; results are not written")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.memory_max_length, args.batch_size)))
        return
    if args.quick:
        args.n_overhead, args.n_small, args.n_large, args.repeats = 96, 64, 256, 1
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), Python {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "torch_threads": args.threads,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": os.getloadavg(),
    }
    report["overhead"] = overhead(args)
    print(json.dumps(report["overhead"]["evaluator"], indent=1), flush=True)
    report["memory"] = memory(args)
    report["rss_growth"] = {
        setting: rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1.0 for setting, rows in report["memory"].items()
    }
    report["load_average_at_end"] = os.getloadavg()
    text = markdown(report)
    print(text)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "extraction_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "extraction_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
