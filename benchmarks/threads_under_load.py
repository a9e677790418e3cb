"""Training-step time of a 3-layer x 384 BERT student with 1 and 2 torch threads, alone and next to a
busy neighbour, on this machine's cores: why the cpu-scale reproduction runs one thread per process.

The neighbour is a second process doing single-threaded float32 matrix products in a loop (what any
other job on a shared 2-core machine looks like). Each configuration runs in a fresh process (torch's
thread count is set before the first op); the reported figure is the median seconds per step over
``--steps`` steps after 3 warm-up steps, batch 32 x 32 tokens. Writes
``benchmarks/results/threads_under_load.{json,md}``.

    python benchmarks/threads_under_load.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_STEP = r"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from transformers import BertConfig, BertForSequenceClassification
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(num_hidden_layers=3, hidden_size=384, num_attention_heads=12,
                                                 intermediate_size=1536, num_labels=2))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(1000, 30000, (32, 32)); labels = torch.randint(0, 2, (32,))
times = []
for i in range(int(sys.argv[2]) + 3):
    t = time.perf_counter()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad()
    if i >= 3:
        times.append(time.perf_counter() - t)
print(" ".join(f"{x:.5f}" for x in times))
"""


def _neighbour(stop: Any) -> None:  # pragma: no cover - runs in a child process
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    while not stop.is_set():
        a = (a @ a) / 512.0


def _measure(threads: int, steps: int) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _STEP, str(threads), str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return [float(x) for x in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    rows = []
    for load in ("no added neighbour", "busy neighbour"):
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        neighbour = None
        if load != "no added neighbour":
            neighbour = ctx.Process(target=_neighbour, args=(stop,), daemon=True)
            neighbour.start()
            time.sleep(1.0)
        try:
            for threads in (1, 2):
                times = _measure(threads, args.steps)
                rows.append({"load": load, "threads": threads, "median_step_seconds": statistics.median(times),
                             "steps": len(times)})
        finally:
            stop.set()
            if neighbour is not None:
                neighbour.join(timeout=5)
                if neighbour.is_alive():
                    neighbour.terminate()
    by = {(r["load"], r["threads"]): r["median_step_seconds"] for r in rows}
    ratios = {load: by[(load, 2)] / by[(load, 1)] for load in ("no added neighbour", "busy neighbour")}
    result = {"cpu_count": os.cpu_count(), "rows": rows, "two_over_one_thread": ratios,
              "note": "the machine was shared with other jobs while this ran (their load varies: compare rows of one run only)"}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads_under_load.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["# Training step of a 3 x 384 BERT student: 1 vs 2 torch threads", "",
             f"{os.cpu_count()} cores, shared with other jobs while this ran; median seconds per step "
             f"(batch 32 x 32 tokens, {args.steps} steps; `python benchmarks/threads_under_load.py`).", "",
             "| load | 1 thread | 2 threads | 2 threads / 1 thread |", "|---|---:|---:|---:|"]
    for load in ("no added neighbour", "busy neighbour"):
        lines.append(f"| {load} | {by[(load, 1)]:.3f} s | {by[(load, 2)]:.3f} s | {ratios[load]:.2f}x |")
    (out / "threads_under_load.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
