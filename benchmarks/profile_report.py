"""Where the report build spends its time: cProfile of ``build_report`` + ``write_report``.

The same synthetic result and baseline as ``teacher_once.py``'s ``report`` section (the main job's
shapes, 1000 bootstrap and 200 feature replicates), after one small warm-up build; the top lines by
cumulative time for each N go to ``benchmarks/results/profile_report.txt``. Times under the profiler
are longer than ``teacher_once.py``'s (profiling overhead); read them as shares, not as the speed.

    OMP_NUM_THREADS=1 python benchmarks/profile_report.py [--sizes 872 10000] [--top 12]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_once import _synthetic  # noqa: E402 - the benchmark's own arrays, not a copy

OUT = Path(__file__).resolve().parent / "results" / "profile_report.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[872, 10_000])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    from knowledge_retention.reporting import build_report, write_report

    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        small, base_small, texts_small = _synthetic(64, 0)
        write_report(build_report(small, baseline=base_small, texts=texts_small, bootstrap=20, feature_bootstrap=5), tmp)
        for n in args.sizes:
            result, baseline, texts = _synthetic(n, 1)
            profile = cProfile.Profile()
            profile.enable()
            report = build_report(result, baseline=baseline, texts=texts, bootstrap=1000, feature_bootstrap=200)
            write_report(report, Path(tmp) / f"n{n}")
            profile.disable()
            stream = io.StringIO()
            stats = pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("cumulative")
            stats.print_stats(args.top)
            sections.append(f"## N = {n}\n{stream.getvalue().strip()}\n")
    OUT.write_text("\n".join(sections))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
