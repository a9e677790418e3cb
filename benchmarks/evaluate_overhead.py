"""What going through `evaluate` costs, vs calling the maths directly.

At N = 872 (SST-2 dev) and N = 10,000, teacher features 768 wide, student features 384 wide, 2-class
logits, three ways, in the same run, best (minimum) of repeats:

* direct        — ``knowledge_retention.compute_krs`` on the numpy arrays;
* evaluate      — ``evaluate.load(...).compute(...)`` as shipped: fixed-size float64 Arrow lists
                  written from the array buffers, read back from the Arrow buffers;
* evaluate-std  — the same module, but inputs encoded by evaluate's default ``add_batch`` (one
                  Python conversion per example), i.e. what a plain evaluate metric with these
                  inputs costs.

Times are CPU seconds of the process by default (``--clock cpu``: other jobs on a shared machine
do not inflate them; the Arrow cache files go to a temporary folder, i.e. the page cache), elapsed
seconds with ``--clock wall``. Writes ``benchmarks/results/evaluate_overhead.{json,md}``.

Run:  OMP_NUM_THREADS=1 python benchmarks/evaluate_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import datasets
import evaluate
import numpy as np

import knowledge_retention
from knowledge_retention import compute_krs

OUT = Path(__file__).resolve().parent / "results"


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 768)).astype(np.float32)
    s = (t[:, :384] + 0.5 * rng.normal(size=(n, 384))).astype(np.float32)
    lt = rng.normal(size=(n, 2)).astype(np.float32)
    ls = (lt + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)
    return {"teacher_features": t, "student_features": s, "teacher_outputs": lt, "student_outputs": ls}


def run_direct(data: dict[str, np.ndarray], cache: str) -> float:
    return compute_krs(data["teacher_features"], data["student_features"], data["teacher_outputs"],
                       data["student_outputs"], task="nlp")["krs"]


def run_evaluate(data: dict[str, np.ndarray], cache: str) -> float:
    module = evaluate.load(knowledge_retention.module_path(), cache_dir=cache)
    return module.compute(**data, task="nlp")["krs"]


def run_evaluate_std(data: dict[str, np.ndarray], cache: str) -> float:
    module = evaluate.load(knowledge_retention.module_path(), cache_dir=cache)
    # the same fixed-shape float64 features, but evaluate's own per-example encoding (bypassing the fast path)
    feature_for = sys.modules[type(module).__module__]._feature_for
    module.selected_feature_format = datasets.Features({k: feature_for(v.shape[1:]) for k, v in data.items()})
    module._init_writer()
    evaluate.Metric.add_batch(module, **data)
    return module.compute(task="nlp")["krs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[872, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    load_start = os.getloadavg()[0]
    runners = {"direct": run_direct, "evaluate": run_evaluate, "evaluate_std": run_evaluate_std}
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for n in args.sizes:
            data = make_data(n)
            times: dict[str, list[float]] = {k: [] for k in runners}
            values = {}
            for name, fn in runners.items():  # warm-up: module loading, BLAS threads
                values[name] = fn({k: v[:64] for k, v in data.items()}, cache)
            for _ in range(args.repeats):
                for name, fn in runners.items():
                    start = clock()
                    values[name] = fn(data, cache)
                    times[name].append(clock() - start)
            med = {k: float(np.min(v)) for k, v in times.items()}
            if not np.allclose(list(values.values()), values["direct"], rtol=1e-6):
                raise AssertionError(f"paths disagree: {values}")
            row = {"n": n, **{f"{k}_s": v for k, v in med.items()},
                   "evaluate_over_direct": med["evaluate"] / med["direct"],
                   "evaluate_std_over_direct": med["evaluate_std"] / med["direct"], "krs": values["direct"]}
            rows.append(row)
            print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluate_overhead.json").write_text(json.dumps({
        "benchmark": "evaluate_overhead", "clock": args.clock, "repeats": args.repeats,
        "machine": {"cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "rows": rows}, indent=2) + "\n")
    lines = [
        f"`evaluate` vs direct call, features 768/384, best of {args.repeats}, {'CPU' if args.clock == 'cpu' else 'elapsed'} "
        f"seconds (`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python benchmarks/evaluate_overhead.py`; "
        f"{os.cpu_count()} CPU cores, load average {load_start:.1f} at start and {os.getloadavg()[0]:.1f} at the end, "
        "shared with other jobs).",
        "",
        "| N | direct s | evaluate (shipped) s | ratio | evaluate default encoding s | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['direct_s']:.3f} | {r['evaluate_s']:.3f} | {r['evaluate_over_direct']:.1f}x | "
                     f"{r['evaluate_std_s']:.3f} | {r['evaluate_std_over_direct']:.1f}x |")
    (args.out / "evaluate_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
