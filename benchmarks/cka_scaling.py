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
              centred, ``⟨K̃, L̃⟩ / (‖K̃‖‖L̃‖)``), where it fits in memory: it runs when its estimated
              peak, ``3·8·N² + 8·N·(D_t + D_s)`` bytes (K, L and one N x N temporary, plus the
              concatenated features; the measured peaks match it within 1%), is below
              ``--gram-memory-fraction`` of the memory available at that moment; otherwise the table
              shows that estimate, labelled as one, instead of a measurement.
* single call — ``linear_cka(X, Y)`` on the whole ``(N, D)`` arrays in float32 (as a model hands them
              over), against the float64 three-product floor on the same arrays already in float64
              (``XᵀX``, ``YᵀY``, ``YᵀX`` in three BLAS calls), interleaved, best of repeats; its peak
              memory against that of one float64 copy of the inputs, ``8·N·(D_t + D_s)`` bytes.

Times are CPU seconds of the process by default (``--clock cpu``: other jobs on a shared machine
do not inflate them; with one BLAS thread that is the work done), elapsed seconds with
``--clock wall``. The batches are generated before timing (they stand for a model's output), so time and peak
memory (``tracemalloc``: numpy reports its buffers to it) are those of the CKA work alone.  Writes ``benchmarks/results/cka_scaling.{json,md}``.

Run:  OMP_NUM_THREADS=1 python benchmarks/cka_scaling.py [--sizes 2000 8000 20000 67349] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from knowledge_retention.similarity import LinearCKAAccumulator, linear_cka

OUT = Path(__file__).resolve().parent / "results"
BATCH = 1024
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def gram_peak_bytes(n: int, dt: int, ds: int) -> int:
    """Estimated peak of :func:`run_gram`: K, L and one N x N temporary (``k * l``), plus X and Y."""
    return 3 * 8 * n * n + 8 * n * (dt + ds)


def available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), or None where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


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
            start = _clock()
            if which == 0:
                tt += x.T @ x
                ss += y.T @ y
                st += y.T @ x
            elif which == 1:
                acc.update(x, y)
            else:
                acc_debiased.update(x, y)
            seconds[which] += _clock() - start
    start = _clock()
    value = acc.compute()
    seconds[1] += _clock() - start
    start = _clock()
    acc_debiased.compute(debiased=True)
    seconds[2] += _clock() - start
    return seconds[0], seconds[1], seconds[2], value


def time_single_call(x32: np.ndarray, y32: np.ndarray, x64: np.ndarray, y64: np.ndarray,
                     start_with: int) -> tuple[float, float, float]:
    """Seconds of the float64 three-product floor on ``x64``/``y64`` and of one ``linear_cka(x32, y32)``.

    ``start_with`` alternates which of the two runs first. Returns (floor s, single call s, CKA).
    """
    seconds = [0.0, 0.0]
    value = float("nan")
    for which in ((0, 1) if start_with % 2 == 0 else (1, 0)):
        start = _clock()
        if which == 0:
            checksum = float((x64.T @ x64)[0, 0] + (y64.T @ y64)[0, 0] + (y64.T @ x64)[0, 0])
            assert np.isfinite(checksum)
        else:
            value = linear_cka(x32, y32)
        seconds[which] = _clock() - start
    return seconds[0], seconds[1], value


def peak_mib_of(fn: Callable[[], object]) -> float:
    """tracemalloc peak of ``fn()`` (a separate, untimed pass)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def peak_mib(fn: Callable[[Batches, int, int], float], data: Batches, dt: int, ds: int) -> float:
    """tracemalloc peak of ``fn`` (a separate, untimed pass)."""
    tracemalloc.start()
    fn(data, dt, ds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def render(result: dict) -> str:
    """The Markdown tables of a result (``--render-only`` rewrites them from the JSON)."""
    machine = result["machine"]
    lines = [
        f"Linear CKA, teacher width {result['teacher_width']}, student width {result['student_width']}, batches of {result['batch_size']}, best of {result['repeats']} "
        f"(× 20,000 / N below N = 20,000) interleaved runs, {'CPU' if result['clock'] == 'cpu' else 'elapsed'} seconds "
        + (f"(`OMP_NUM_THREADS={machine['omp_num_threads']} python benchmarks/cka_scaling.py`; "
           if machine["omp_num_threads"] else "(`python benchmarks/cka_scaling.py`, BLAS's default threads; ")
        + f"{machine['cpu_count']} CPU cores, load average "
        f"{machine['load_average_start']:.1f} at start and {machine['load_average_end']:.1f} at the end, shared with other jobs); streamed = linear CKA as "
        "the library runs it on the batches, debiased = with the debiased estimator's extra sums.",
        "",
        "| N | floor (3 products) s | streamed CKA s | streamed / floor | debiased / floor | peak MiB streamed "
        "| Gram CKA s | Gram / floor | peak MiB Gram |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["gram_s"] is not None:
            gram = f"{r['gram_s']:.2f} | {r['ratio_gram_to_floor']:.1f}x | {r['peak_mib_gram']:.0f}"
        else:
            gram = (f"not run | - | estimate: {r['gram_peak_estimate_gib']:.1f} GiB > {result['gram_memory_fraction']:g} "
                    f"x {r['available_gib_at_gram_decision'] or 0:.1f} GiB available")
        lines.append(
            f"| {r['n']:,} | {r['floor_s']:.3f} | {r['streamed_s']:.3f} | {r['ratio_streamed_to_floor']:.2f}x | "
            f"{r['ratio_debiased_to_floor']:.2f}x | {r['peak_mib_streamed']:.1f} | {gram} |"
        )
    lines += [
        "",
        "Gram CKA runs where its estimated peak, 3·8·N² + 8·N·(D_t + D_s) bytes, is below "
        f"{result['gram_memory_fraction']:g} of the memory available then; elsewhere the cell is that estimate, not a "
        "measurement.",
        "",
        "One call, `linear_cka(X, Y)` on the whole float32 arrays, against the float64 three-product floor on the "
        f"same arrays in float64 (interleaved, best of {result['repeats']}):",
        "",
        "| N | floor (3 products, float64) s | single call s | single call / floor | peak MiB single call "
        "| MiB of one float64 copy of X, Y |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['single_call_floor_s']:.3f} | {r['single_call_s']:.3f} | "
            f"{r['ratio_single_call_to_floor']:.2f}x | {r['peak_mib_single_call']:.0f} | "
            f"{r['mib_float64_copy_of_inputs']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000, 67349])
    parser.add_argument("--teacher-width", type=int, default=768)
    parser.add_argument("--student-width", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu (default): CPU seconds of this process, which other jobs on a shared machine do "
                             "not inflate; wall: elapsed seconds")
    parser.add_argument("--gram-memory-fraction", type=float, default=0.4,
                        help="run the Gram CKA only if its estimated peak is below this share of the available memory")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json, measure nothing")
    args = parser.parse_args()
    if args.render_only:
        text = render(json.loads((args.out / "cka_scaling.json").read_text()))
        (args.out / "cka_scaling.md").write_text(text)
        print(text)
        return
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    dt, ds = args.teacher_width, args.student_width
    global _clock
    _clock = CLOCKS[args.clock]

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
        gram_estimate = gram_peak_bytes(n, dt, ds)
        available = available_bytes()
        gram_runs = available is not None and gram_estimate < args.gram_memory_fraction * available
        if gram_runs:
            gram_times = []
            for _ in range(args.repeats):
                start = _clock()
                gram_value = run_gram(data, dt, ds)
                gram_times.append(_clock() - start)
            gram_s = min(gram_times)
            gram_peak = peak_mib(run_gram, data, dt, ds)
        # one call on the whole arrays, float32 as a model hands them over
        x32 = np.concatenate([b[0] for b in data]).astype(np.float32)
        y32 = np.concatenate([b[1] for b in data]).astype(np.float32)
        x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
        time_single_call(x32[:BATCH], y32[:BATCH], x64[:BATCH], y64[:BATCH], 0)  # warm-up
        single_runs = [time_single_call(x32, y32, x64, y64, k) for k in range(args.repeats)]
        del x64, y64
        single_floor_s = min(r[0] for r in single_runs)
        single_s = min(r[1] for r in single_runs)
        single_peak = peak_mib_of(functools.partial(linear_cka, x32, y32))
        row = {
            "n": n,
            "floor_s": floor_s,
            "streamed_s": streamed_s,
            "ratio_streamed_to_floor": streamed_s / floor_s,
            "debiased_s": debiased_s,
            "ratio_debiased_to_floor": debiased_s / floor_s,
            "peak_mib_streamed": peak_mib(run_streamed, data, dt, ds),
            "peak_mib_floor": peak_mib(run_floor, data, dt, ds),
            "single_call_floor_s": single_floor_s,
            "single_call_s": single_s,
            "ratio_single_call_to_floor": single_s / single_floor_s,
            "peak_mib_single_call": single_peak,
            "mib_float64_copy_of_inputs": 8 * n * (dt + ds) / 2**20,
            "cka_single_call": single_runs[0][2],
            "gram_measured": gram_runs,
            "gram_peak_estimate_gib": gram_estimate / 2**30,
            "available_gib_at_gram_decision": None if available is None else available / 2**30,
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
        "clock": args.clock,
        "gram_memory_fraction": args.gram_memory_fraction,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__, "cpu_count": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_start": load_start,
                    "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cka_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (args.out / "cka_scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
