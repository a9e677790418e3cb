"""The teacher runs once: what several students, length grouping, the training callback and the report cost.

Every figure is a ratio of two timings taken in the same run, interleaved over ``--repeats`` rounds
(the machine may be shared: the results file records the load average). Models: all-MiniLM-L6-v2
with a random 2-class head as the teacher, its 3-layer every-other-block copies as students (heads
copied, then perturbed per student so that they differ); CPU, float32; SST-2 dev (872 sentences),
batch 32.

Sections (``--only`` runs some of them; the results file keeps the others' last numbers):

* ``students``  - ``evaluate_students`` with 3 students vs 3 ``evaluate_pair`` calls (goal <= 0.6x).
* ``grouping``  - ``evaluate_pair`` with length-grouped batches vs the bare random-order loop (the two
  forward passes over the batches in dataset order; goal <= 0.75x), and vs ``evaluate_pair`` in
  dataset order; the largest difference between the grouped and the ordered results.
* ``callback``  - one ``KRSCallback`` evaluation (teacher side already cached, as at every evaluation
  after the first) vs a plain student pass over the same texts (tokenise + forward, batch 32,
  dataset order, no hidden states; goal <= 1.1x).
* ``report``    - ``build_report`` + ``write_report`` (figures included) with a baseline, 1000 bootstrap
  replicates and 200 feature replicates, at N = 872 and N = 10,000 (synthetic arrays of the main
  job's shapes: 384-wide features, 2 logits; speed from the extraction's timings), goal <= 2 s at 872.
* ``main-job``  - ``knowledge-retention`` (the main job, default pair cached) run twice in fresh
  processes: the first records the teacher cache, the second replays it; vs the bare forward passes
  the job needs (teacher, student and baseline over the 872 sentences, batch 32, ``torch.no_grad``,
  dataset order), goal <= 1.3x.

    python benchmarks/teacher_once.py                 # everything (~15 min on 2 busy cores)
    python benchmarks/teacher_once.py --only report   # one section
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extraction_overhead as eo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("students", "grouping", "callback", "report", "main-job")
_HEADER = ("machine", "date", "load_average_at_start")


def _cpu() -> float:
    """CPU seconds of this process and its finished children. With one thread this is the work done,
    whatever else runs on the shared cores; wall time under a varying load is not comparable."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _students(n: int, seed: int = 1) -> dict[str, Any]:
    """``n`` 3-layer students: the every-other-block copy of a MiniLM teacher, weights perturbed per student."""
    import torch

    teacher, base, _ = eo.build_models()
    out = {}
    for k in range(n):
        student = eo.build_models(seed=0)[1]
        torch.manual_seed(seed + k)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.02 * p.std() * torch.randn_like(p))
        out[f"student_{k + 1}"] = student.eval()
    return out


def _plain_pass(model: Any, tokenizer: Any, texts: list[str], batch_size: int, *, hidden: bool) -> float:
    """Seconds to tokenise and run ``model`` over ``texts`` in dataset order (no_grad)."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            enc = tokenizer(texts[lo : lo + batch_size], padding=True, truncation=True, return_tensors="pt")
            model(**enc, output_hidden_states=hidden, return_dict=True)
    return time.perf_counter() - start


def bench_students(args: argparse.Namespace) -> dict[str, Any]:
    from knowledge_retention.extraction import evaluate_pair, evaluate_students

    teacher, _, tok = eo.build_models()
    students = _students(3)
    data = eo.read_sst2("dev.tsv", args.n)
    opts = dict(teacher_tokenizer=tok, label_column="label", batch_size=args.batch_size, progress=False)
    evaluate_students(teacher, {"w": students["student_1"]}, {k: v[:64] for k, v in data.items()},
                      student_tokenizers=tok, **opts)  # warm-up
    together, apart, diffs = [], [], []
    for _ in range(args.repeats):
        tick = _cpu()
        joint = evaluate_students(teacher, students, data, student_tokenizers=tok, **opts)
        together.append(_cpu() - tick)
        tick = _cpu()
        single = {name: evaluate_pair(teacher, s, data, student_tokenizer=tok, **opts) for name, s in students.items()}
        apart.append(_cpu() - tick)
        diffs.append(max(abs(getattr(joint[n], k) - getattr(single[n], k)) for n in students for k in ("krs", "fss", "aoag")))
    return {
        "n_examples": args.n, "batch_size": args.batch_size, "repeats": args.repeats, "n_students": 3,
        "evaluate_students_s": together, "three_evaluate_pair_s": apart,
        "ratio_of_medians": statistics.median(together) / statistics.median(apart),
        "max_abs_difference_krs_fss_aoag": max(diffs),
    }


def bench_grouping(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from knowledge_retention.extraction import evaluate_pair

    teacher, student, tok = eo.build_models()
    data = eo.read_sst2("dev.tsv", args.n)
    texts = data["sentence"]
    opts = dict(teacher_tokenizer=tok, student_tokenizer=tok, label_column="label", batch_size=args.batch_size,
                progress=False)
    evaluate_pair(teacher, student, {k: v[:64] for k, v in data.items()}, **opts)  # warm-up
    eo.bare_loop(teacher, student, tok, texts[:64], args.batch_size, None)
    times: dict[str, list[float]] = {"bare random-order loop": [], "grouped": [], "dataset order": []}
    results = {}
    for _ in range(args.repeats):
        tick = _cpu()
        eo.bare_loop(teacher, student, tok, texts, args.batch_size, None)
        times["bare random-order loop"].append(_cpu() - tick)
        for name, grouped in (("grouped", True), ("dataset order", False)):
            tick = _cpu()
            results[name] = evaluate_pair(teacher, student, data, group_by_length=grouped, **opts)
            times[name].append(_cpu() - tick)
    bare = statistics.median(times["bare random-order loop"])
    g, o = results["grouped"], results["dataset order"]
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")

    def padded(idx: Any) -> int:
        return int(sum(len(idx[k : k + args.batch_size]) * max(lengths[i] for i in idx[k : k + args.batch_size])
                       for k in range(0, len(idx), args.batch_size)))

    return {
        "n_examples": args.n, "batch_size": args.batch_size, "repeats": args.repeats, "times_s": times,
        "grouped_vs_bare": statistics.median(times["grouped"]) / bare,
        "dataset_order_vs_bare": statistics.median(times["dataset order"]) / bare,
        "grouped_vs_dataset_order": statistics.median(times["grouped"]) / statistics.median(times["dataset order"]),
        "max_abs_difference": {
            "krs_fss_aoag": max(abs(getattr(g, k) - getattr(o, k)) for k in ("krs", "fss", "aoag")),
            "cross_layer_cka": float(np.nanmax(np.abs(g.cross_layer_cka - o.cross_layer_cka))),
            "student_logits": float(np.max(np.abs(g.student_logits - o.student_logits))),
        },
        "same_example_indices": bool(np.array_equal(g.example_indices, o.example_indices)),
        "tokens_padded_to": {"dataset order": padded(list(range(len(texts)))), "grouped": padded(order.tolist()),
                             "real": int(sum(lengths))},
    }


def bench_callback(args: argparse.Namespace) -> dict[str, Any]:
    from knowledge_retention import KRSCallback

    teacher, student, tok = eo.build_models()
    data = eo.read_sst2("dev.tsv", args.n)
    callback = KRSCallback(teacher, data, tok, batch_size=args.batch_size, label_column="label")
    callback.score(student)  # the first evaluation computes the teacher's side once
    _plain_pass(student, tok, data["sentence"][:64], args.batch_size, hidden=False)  # warm-up
    times: dict[str, list[float]] = {"plain student pass": [], "KRSCallback evaluation": []}
    for _ in range(args.repeats):
        tick = _cpu()
        _plain_pass(student, tok, data["sentence"], args.batch_size, hidden=False)
        times["plain student pass"].append(_cpu() - tick)
        tick = _cpu()
        callback.score(student)
        times["KRSCallback evaluation"].append(_cpu() - tick)
    return {
        "n_examples": args.n, "batch_size": args.batch_size, "repeats": args.repeats, "times_s": times,
        "ratio_of_medians": statistics.median(times["KRSCallback evaluation"]) / statistics.median(times["plain student pass"]),
        "options": "defaults (final layer, cls, no cross-layer matrix), labels kept",
    }


def _synthetic(n: int, seed: int) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """An extraction result and its baseline with the main job's shapes (features 384, 2 classes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    t_feat = rng.normal(size=(n, 384))
    t_logits = 3 * (labels[:, None] * 2 - 1) * np.array([[-1, 1]]) + rng.normal(size=(n, 2))

    def student(noise: float) -> tuple[Any, Any]:
        feats = t_feat @ rng.normal(size=(384, 384)) / 20 + noise * rng.normal(size=(n, 384))
        return feats, t_logits + noise * rng.normal(size=(n, 2))

    s_feat, s_logits = student(1.0)
    b_feat, b_logits = student(1.3)
    timings = {"teacher_forward_s": 6.0, "student_forward_s": 3.3, "forward_batches": float(-(-n // 32))}
    common = dict(alpha=0.5, beta=0.5, fss_method="linear_cka", aoag_method="kl", layer_pairs=[(6, 3)],
                  teacher_layer_names=[f"l{i}" for i in range(7)], student_layer_names=[f"l{i}" for i in range(4)],
                  labels=labels, example_indices=np.arange(n), num_examples=n, teacher_logits=t_logits,
                  options={"task": "nlp", "temperature": 1.0, "group_by_length": True}, timings=timings)
    from knowledge_retention import compute_krs

    def result(feats: Any, logits: Any, cross: bool) -> dict[str, Any]:
        scores = compute_krs(t_feat, feats, t_logits, logits, task="nlp")
        return {**common, "fss": scores["fss"], "aoag": scores["aoag"], "krs": scores["krs"],
                "pair_scores": [scores["fss"]], "pair_linear_cka": [scores["fss"]], "student_logits": logits,
                "teacher_features": [t_feat], "student_features": [feats],
                "cross_layer_cka": rng.uniform(0.2, 1.0, size=(7, 4)) if cross else None}

    texts = [f"sentence number {i} of the benchmark" for i in range(n)]
    return result(s_feat, s_logits, True), result(b_feat, b_logits, False), texts


def bench_report(args: argparse.Namespace) -> dict[str, Any]:
    from knowledge_retention.reporting import build_report, write_report

    out: dict[str, Any] = {"bootstrap": 1000, "feature_bootstrap": 200, "sizes": {}}
    small, base_small, texts_small = _synthetic(64, 0)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports, matplotlib's font cache
        write_report(build_report(small, baseline=base_small, texts=texts_small, bootstrap=20, feature_bootstrap=5), tmp)
        for n in args.report_sizes:
            result, baseline, texts = _synthetic(n, 1)
            build_s, write_s, cpu_s = [], [], []
            for _ in range(args.repeats):
                tick, cpu = time.perf_counter(), _cpu()
                report = build_report(result, baseline=baseline, texts=texts, bootstrap=1000, feature_bootstrap=200)
                build_s.append(time.perf_counter() - tick)
                tick = time.perf_counter()
                write_report(report, Path(tmp) / f"n{n}")
                write_s.append(time.perf_counter() - tick)
                cpu_s.append(_cpu() - cpu)
            total = [b + w for b, w in zip(build_s, write_s, strict=True)]
            out["sizes"][str(n)] = {"build_s": build_s, "write_s": write_s, "total_s": total, "cpu_s": cpu_s,
                                    "median_total_s": statistics.median(total), "median_cpu_s": statistics.median(cpu_s)}
    sizes = [str(n) for n in args.report_sizes]
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        out["time_ratio"] = out["sizes"][b]["median_total_s"] / out["sizes"][a]["median_total_s"]
        out["cpu_ratio"] = out["sizes"][b]["median_cpu_s"] / out["sizes"][a]["median_cpu_s"]
        out["size_ratio"] = int(b) / int(a)
    return out


def bench_main_job(args: argparse.Namespace) -> dict[str, Any]:
    """The main job twice (fresh processes), and the bare forward passes it needs, in one run."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from knowledge_retention.distillation.defaults import ensure_default_pair

    pair = ensure_default_pair(progress=False)
    cache = Path(pair["teacher"]).parents[2] / "teacher_outputs"
    data = eo.read_sst2("dev.tsv", 872)
    texts = data["sentence"]
    models = {role: AutoModelForSequenceClassification.from_pretrained(pair[role]).eval()
              for role in ("teacher", "student", "baseline")}
    tok = AutoTokenizer.from_pretrained(pair["teacher"])
    runs: list[dict[str, Any]] = []
    bare: list[float] = []
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for repeat in range(args.repeats):
        tick = _cpu()
        for m in models.values():
            _plain_pass(m, tok, texts, 32, hidden=False)
        bare.append(_cpu() - tick)
        for which in ("first (records the teacher cache)", "second (replays it)"):
            if which.startswith("first"):
                import shutil

                shutil.rmtree(cache, ignore_errors=True)
            with tempfile.TemporaryDirectory() as out_dir:
                tick, cpu = time.perf_counter(), _cpu()
                proc = subprocess.run([sys.executable, "-m", "knowledge_retention.cli", "--output-dir", out_dir,
                                       "--quiet"], env=env, capture_output=True, text=True, check=False, cwd=ROOT)
                wall, cpu = time.perf_counter() - tick, _cpu() - cpu
                if proc.returncode != 0:
                    raise SystemExit(f"main job failed:\n{proc.stderr[-3000:]}")
                report = json.loads((Path(out_dir) / "report.json").read_text())
            runs.append({"repeat": repeat, "run": which, "cpu_s": cpu, "wall_s": wall, "timings": report["timings"],
                         "teacher_cache_reused": (report["options"]["extraction"].get("teacher_cache") or {}).get("reused")})
    bare_median = statistics.median(bare)
    by_run = {which: [r["cpu_s"] for r in runs if r["run"] == which] for which in dict.fromkeys(r["run"] for r in runs)}
    return {
        "clock": "CPU seconds (1 thread; the job's whole process: start-up, loading, extraction, report)",
        "torch_threads": torch.get_num_threads(), "bare_forward_passes_s": bare, "runs": runs,
        "ratio_of_medians": {which: statistics.median(v) / bare_median for which, v in by_run.items()},
        "median_cpu_s": {which: statistics.median(v) for which, v in by_run.items()},
        "median_wall_s": {which: statistics.median([r["wall_s"] for r in runs if r["run"] == which]) for which in by_run},
    }


def markdown(res: dict[str, Any]) -> str:
    lines = ["# The teacher runs once", "",
             f"Machine: {res['machine']}; {res['date']}; load average {res['load_average_at_start'][0]:.1f} at start "
             f"(the 2 cores were shared with other jobs, at a varying load: every timing but the report's wall clock is the CPU time of the benchmark's process - one thread - and of its child processes, which "
             f"counts the work done whatever else runs).",
             "Teacher all-MiniLM-L6-v2 + 2-class head, 3-layer students (every other block), CPU float32, "
             "SST-2 dev, batch 32; `python benchmarks/teacher_once.py`.", "",
             "| what | measured | ratio | goal |", "|---|---|---|---|"]
    s = res.get("students")
    if s:
        lines.append(f"| `evaluate_students`, 3 students vs 3 `evaluate_pair` calls ({s['n_examples']} sentences) | "
                     f"{statistics.median(s['evaluate_students_s']):.1f} s vs {statistics.median(s['three_evaluate_pair_s']):.1f} s "
                     f"(max \\|Δ\\| of KRS/FSS/AOAg {s['max_abs_difference_krs_fss_aoag']:.1e}) | {s['ratio_of_medians']:.2f}x | <= 0.6x |")
    g = res.get("grouping")
    if g:
        t = {k: statistics.median(v) for k, v in g["times_s"].items()}
        pad = g["tokens_padded_to"]
        lines.append(f"| length-grouped `evaluate_pair` vs the bare random-order loop | {t['grouped']:.1f} s vs "
                     f"{t['bare random-order loop']:.1f} s (dataset-order `evaluate_pair` {t['dataset order']:.1f} s, "
                     f"{g['dataset_order_vs_bare']:.2f}x; tokens after padding {pad['grouped']:,} vs {pad['dataset order']:,}, "
                     f"real {pad['real']:,}) | {g['grouped_vs_bare']:.2f}x | <= 0.75x |")
        d = g["max_abs_difference"]
        lines.append(f"| grouped vs dataset order, same results | max \\|Δ\\| KRS/FSS/AOAg {d['krs_fss_aoag']:.1e}, "
                     f"cross-layer CKA {d['cross_layer_cka']:.1e}, student logits {d['student_logits']:.1e} "
                     f"(float32 models: padding changes the BLAS shapes); same example indices: "
                     f"{'yes' if g['same_example_indices'] else 'no'} | - | 1e-12 in float64 (tests) |")
    c = res.get("callback")
    if c:
        t = {k: statistics.median(v) for k, v in c["times_s"].items()}
        lines.append(f"| `KRSCallback` evaluation (teacher cached) vs a plain student pass ({c['n_examples']} sentences) | "
                     f"{t['KRSCallback evaluation']:.2f} s vs {t['plain student pass']:.2f} s | {c['ratio_of_medians']:.2f}x | <= 1.1x |")
    r = res.get("report")
    if r:
        for n, row in r["sizes"].items():
            cpu = f", {row['median_cpu_s']:.2f} CPU s" if "median_cpu_s" in row else ""
            lines.append(f"| report build + write (figures, baseline, {r['bootstrap']} + {r['feature_bootstrap']} "
                         f"bootstrap replicates), N = {int(n):,} | {row['median_total_s']:.2f} s wall{cpu} | - | "
                         f"{'<= 2 s' if n == '872' else 'linear in N'} |")
        if "time_ratio" in r:
            lines.append(f"| report time, N = {int(list(r['sizes'])[-1]):,} vs {int(list(r['sizes'])[0]):,} | "
                         f"{r['time_ratio']:.1f}x the wall time"
                         + (f", {r['cpu_ratio']:.1f}x the CPU time" if "cpu_ratio" in r else "")
                         + f" for {r['size_ratio']:.1f}x the examples | - | linear |")
    m = res.get("main-job")
    if m:
        bare = statistics.median(m["bare_forward_passes_s"])
        for which, ratio in m["ratio_of_medians"].items():
            lines.append(f"| main job `knowledge-retention` ({which}) vs its bare forward passes | "
                         f"{m['median_cpu_s'][which]:.1f} CPU s ({m['median_wall_s'][which]:.0f} s wall) vs {bare:.1f} CPU s | {ratio:.2f}x | <= 1.3x |")
    lines += ["", "Plain / bare passes: tokenise + forward under `torch.no_grad`/`inference_mode`, batches in dataset "
              "order, nothing kept. Report sizes use synthetic arrays of the main job's shapes; its speed figures come "
              "from the extraction's timings, so no model runs during the build.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--n", type=int, default=872)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report-sizes", type=int, nargs="+", default=[872, 10_000])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    path = RESULTS / "teacher_once.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    res.update(machine=f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), Python {platform.python_version()}, "
                       f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)",
               date=time.strftime("%Y-%m-%d %H:%M"), load_average_at_start=os.getloadavg())
    benches = {"students": bench_students, "grouping": bench_grouping, "callback": bench_callback,
               "report": bench_report, "main-job": bench_main_job}
    for name in args.only:
        print(f"--- {name}", flush=True)
        res[name] = benches[name](args)
        res[name]["load_average_after"] = os.getloadavg()
        print(json.dumps(res[name], indent=1, default=str)[:3000], flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        if path.is_file():  # another run may have written other sections meanwhile: keep them
            res = {**json.loads(path.read_text()), **{k: v for k, v in res.items() if k in (name, *_HEADER)}}
        path.write_text(json.dumps(res, indent=2, default=str) + "\n")
        (RESULTS / "teacher_once.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
