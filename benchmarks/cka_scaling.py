"""Linear CKA scaling: streamed feature-space CKA vs the bare three-product floor and Gram-based CKA.

For N from 2,000 to 67,349 (SST-2 train size), teacher width 768 and student width 384, features
arrive in batches (as from a model).  The floor and the streamed CKA are timed
batch by batch, interleaved (alternating which goes first), best (minimum) of repeats, the
convention of ``timeit``: other load on the machine only ever adds time:

* floor     — only ``XᵀX``, ``YᵀY``, ``YᵀX`` accumulated in float64 over the same batches;
* streamed  — ``LinearCKAAccumulator(track_debiased=False).update`` on every batch + ``compute``:
              what the library runs for linear CKA (shifted sums, NaN/Inf checks, merging);
* debiased  — the same with the debiased estimator's extra sums (``fss_method="debiased_cka"``);
* gram      — the O(N²) example-space CKA of common CKA packages (``K = XXᵀ``, ``L = YYᵀ``,
              centred, ``⟨K̃, L̃⟩ / (‖K̃‖‖L̃‖)``), where it fits in memory.

The batches are generated before timing (they stand for a model's output), so time and peak
memory (``tracemalloc``: numpy reports its buffers to it) are those of the CKA work alone.  Writes ``benchmarks/results/cka_scaling.{json,md}``.

Run:  python benchmarks/cka_scaling.py [--sizes 2000 8000 20000 67349] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from knowledge_retention.similarity import LinearCKAAccumulator

OUT = Path(__file__).resolve().parent / "results"
BATCH = 1024
GRAM_MAX_N = 10_000  # 4 N x N float64 matrices: 3.2 GB at 10,000; 20,000 would need 12.8 GB


def batches(n: int, dt: int, ds: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic correlated float64 teacher/student batches, generated on the fly."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dt, ds)) / np.sqrt(dt)
    for lo in range(0, n, BATCH):
        b = min(BATCH, n - lo)
        x = rng.normal(size=(b, dt))
        yield x, x @ mix + 0.5 * rng.normal(size=(b, ds))


Batches = list[tuple[np.ndarray, np.ndarray]]


def run_floor(data: Batches, dt: int, ds: int) -> float:
    tt, ss, st = np.zeros((dt, dt)), np.zeros((ds, ds)), np.zeros((ds, dt))
    for x, y in data:
        tt += x.T @ x
        ss += y.T @ y
        st += y.T @ x
    return float(st.sum() + tt.sum() + ss.sum())


def run_streamed(data: Batches, dt: int, ds: int) -> float:
    acc = LinearCKAAccumulator(track_debiased=False)
    for x, y in data:
        acc.update(x, y)
    return acc.compute()


def run_gram(data: Batches, dt: int, ds: int) -> float:
    x = np.concatenate([b[0] for b in data])
    y = np.concatenate([b[1] for b in data])
    k, l = x @ x.T, y @ y.T  # noqa: E741
    for g in (k, l):
        means = g.mean(0)
        g -= means[:, None]
        g -= means[None, :]
        g += means.mean()
    return float(np.sum(k * l) / (np.linalg.norm(k) * np.linalg.norm(l)))


def time_interleaved(data: Batches, dt: int, ds: int, start_with: int = 0) -> tuple[float, float, float, float]:
    """Seconds of the floor, the streamed CKA and the streamed debiased CKA, timed batch by batch,
    rotating which goes first.

    All three see the same batches at the same moments, so load from other processes hits them alike;
    ``start_with`` (the repeat's number) rotates who meets the first batch, cold caches included.
    Returns (floor seconds, streamed seconds, debiased seconds, CKA).
    """
    tt, ss, st = np.zeros((dt, dt)), np.zeros((ds, ds)), np.zeros((ds, dt))
    for a in (tt, ss, st):
        a.fill(0.0)  # first touch outside the timing: the floor is the three products, not page faults
    acc = LinearCKAAccumulator(track_debiased=False)
    acc_debiased = LinearCKAAccumulator()
    seconds = [0.0, 0.0, 0.0]
    for i, (x, y) in enumerate(data):
        for which in np.roll([0, 1, 2], i + start_with):
            start = time.perf_counter()
            if which == 0:
                tt += x.T @ x
                ss += y.T @ y
                st += y.T @ x
            elif which == 1:
                acc.update(x, y)
            else:
                acc_debiased.update(x, y)
            seconds[which] += time.perf_counter() - start
    start = time.perf_counter()
    value = acc.compute()
    seconds[1] += time.perf_counter() - start
    start = time.perf_counter()
    acc_debiased.compute(debiased=True)
    seconds[2] += time.perf_counter() - start
    return seconds[0], seconds[1], seconds[2], value


def peak_mib(fn: Callable[[Batches, int, int], float], data: Batches, dt: int, ds: int) -> float:
    """tracemalloc peak of ``fn`` (a separate, untimed pass)."""
    tracemalloc.start()
    fn(data, dt, ds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000, 67349])
    parser.add_argument("--teacher-width", type=int, default=768)
    parser.add_argument("--student-width", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    dt, ds = args.teacher_width, args.student_width

    rows = []
    for n in args.sizes:
        data = list(batches(n, dt, ds))
        time_interleaved(data[:2], dt, ds)  # warm-up (BLAS threads, page faults)
        # small N: more repeats, so that the best of them is not a matter of luck at the ms level
        repeats = args.repeats * max(1, int(np.ceil(20_000 / n)))
        runs = [time_interleaved(data, dt, ds, start_with=k) for k in range(repeats)]
        floor_s = min(r[0] for r in runs)
        streamed_s = min(r[1] for r in runs)
        debiased_s = min(r[2] for r in runs)
        gram_s = gram_value = gram_peak = None
        if n <= GRAM_MAX_N:
            gram_times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                gram_value = run_gram(data, dt, ds)
                gram_times.append(time.perf_counter() - start)
            gram_s = min(gram_times)
            gram_peak = peak_mib(run_gram, data, dt, ds)
        row = {
            "n": n,
            "floor_s": floor_s,
            "streamed_s": streamed_s,
            "ratio_streamed_to_floor": streamed_s / floor_s,
            "debiased_s": debiased_s,
            "ratio_debiased_to_floor": debiased_s / floor_s,
            "peak_mib_streamed": peak_mib(run_streamed, data, dt, ds),
            "peak_mib_floor": peak_mib(run_floor, data, dt, ds),
            "gram_s": gram_s,
            "ratio_gram_to_floor": gram_s / floor_s if gram_s is not None else None,
            "peak_mib_gram": gram_peak,
            "cka_streamed": runs[0][3],
            "cka_gram": gram_value,
        }
        rows.append(row)
        print(json.dumps(row))

    result = {
        "benchmark": "cka_scaling",
        "teacher_width": dt,
        "student_width": ds,
        "batch_size": BATCH,
        "repeats": args.repeats,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cka_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Linear CKA, teacher width {dt}, student width {ds}, batches of {BATCH}, best of {args.repeats} "
        f"(× 20,000 / N below N = 20,000) interleaved runs (`python benchmarks/cka_scaling.py`); "
        "streamed = linear CKA as the library runs it, debiased = with the debiased estimator's extra sums.",
        "",
        "| N | floor (3 products) s | streamed CKA s | streamed / floor | debiased / floor | peak MiB streamed "
        "| Gram CKA s | Gram / floor | peak MiB Gram |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gram = (f"{r['gram_s']:.2f} | {r['ratio_gram_to_floor']:.1f}x | {r['peak_mib_gram']:.0f}"
                if r["gram_s"] is not None else "does not fit | - | -")
        lines.append(
            f"| {r['n']:,} | {r['floor_s']:.3f} | {r['streamed_s']:.3f} | {r['ratio_streamed_to_floor']:.2f}x | "
            f"{r['ratio_debiased_to_floor']:.2f}x | {r['peak_mib_streamed']:.1f} | {gram} |"
        )
    (args.out / "cka_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
