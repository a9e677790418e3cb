"""A recorded teacher on the LM demo pair: bytes per token and the gap to the exact KRS at k = 8, 32, 128.

The pair is the causal-LM demonstration's (``python -m knowledge_retention.lm_demo all``: a GPT-2-style
teacher of 4 blocks, width 256, vocabulary 2,048, and its two 2-block students, before and after token
KD), on the 872 SST-2 dev sentences, teacher-forced, ``layers="uniform"`` as in ``results/lm/``. For each k
the teacher is recorded once (``record_teacher(top_k=k)``, the teacher layers the uniform pairing needs,
float32) and the students are scored against the folder (``evaluate_students``); the exact numbers are
the live teacher's (``evaluate_students`` with the teacher). With k < V the recorded KL can only be
lower and AOAg / KRS only higher (the tail is one bucket); top-1 agreement is exact.

    python benchmarks/recorded_teacher.py [--checkpoints results/lm/checkpoints] [--max-dev N]

writes ``benchmarks/results/recorded_teacher.{json,md}``; ``python benchmarks/sync_readme.py`` copies the
table into the README's causal-LM section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
KS = (8, 32, 128)
STUDENTS = ("before", "after")
_KEYS = ("krs", "aoag", "mean_kl", "js", "top1_agreement", "fss")


def _numbers(result: Any) -> dict[str, float]:
    return {key: float(getattr(result, key)) for key in _KEYS}


def measure(checkpoints: Path, max_dev: int | None, batch_size: int, names: tuple[str, ...] = STUDENTS) -> dict[str, Any]:
    import torch

    from knowledge_retention.extraction import evaluate_students, record_teacher, resolve_layer_pairs
    from knowledge_retention.lm_demo import _sentences

    torch.set_num_threads(1)
    dev = _sentences("validation")[:max_dev]
    teacher = str(checkpoints / "teacher")
    students = {name: str(checkpoints / f"student_{name}") for name in names}
    common = {"task": "causal-lm", "layers": "uniform", "batch_size": batch_size, "progress": False}
    tick = time.perf_counter()
    exact = evaluate_students(teacher, students, dev, **common)
    exact_s = time.perf_counter() - tick
    first = exact[names[0]]
    n_t, n_s = len(first.teacher_layer_names), len(first.student_layer_names)
    t_layers = sorted({t for t, _ in resolve_layer_pairs("uniform", n_t, n_s)})
    out: dict[str, Any] = {
        "pair": {"teacher": "lm_demo teacher (GPT-2 style, 4 blocks, width 256)", "students": list(names),
                 "vocab_size": None, "texts": len(dev), "num_tokens": int(first.lm["num_tokens"]), "layers": "uniform",
                 "recorded_teacher_layers": t_layers},
        "exact": {name: _numbers(r) for name, r in exact.items()}, "exact_s": exact_s, "k": {},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for k in KS:
            folder = Path(tmp) / f"top{k}"
            tick = time.perf_counter()
            manifest = record_teacher(teacher, dev, folder, top_k=k, layers=t_layers, batch_size=batch_size,
                                      progress=False)
            record_s = time.perf_counter() - tick
            tick = time.perf_counter()
            got = evaluate_students(str(folder), students, dev, **{k2: v for k2, v in common.items() if k2 != "task"})
            score_s = time.perf_counter() - tick
            out["pair"]["vocab_size"] = int(manifest["vocab_size"])
            hidden = sum(int(w) for w in manifest["hidden_widths"].values()) * 4
            out["k"][str(k)] = {
                "bytes_per_token": manifest["bytes_per_token"],
                "bytes_per_token_outputs": manifest["bytes_per_token_outputs"],
                "bytes_per_token_hidden": hidden, "storage_bytes": manifest["storage_bytes"],
                "num_tokens": manifest["num_tokens"], "record_s": record_s, "score_s": score_s,
                "mean_tail_mass": got[names[0]].options["recorded_teacher"]["mean_tail_mass"],
                "students": {name: _numbers(r) for name, r in got.items()},
            }
    return out


def table(out: dict[str, Any]) -> str:
    pair = out["pair"]
    names = pair["students"]
    lines = [
        f"The LM demo pair (`knowledge_retention/lm_demo.py`, vocabulary {pair['vocab_size']:,}), {pair['texts']} SST-2 dev "
        f"sentences teacher-forced ({pair['num_tokens']:,} counted tokens), `layers=\"uniform\"` (teacher hidden states "
        f"{pair['recorded_teacher_layers']} recorded, float32). Each k: the teacher recorded once with "
        "`record_teacher(top_k=k)`, the students scored against the folder; *gap* = recorded − exact (live teacher).",
        "",
        "| k | bytes / token (top-k + tail + ids) | bytes / token with hidden states | mean tail mass | student | "
        "KRS exact | KRS gap | AOAg gap | KL gap (nats) | top-1 gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, row in out["k"].items():
        for i, name in enumerate(names):
            ex, got = out["exact"][name], row["students"][name]
            head = (f"| {k} | {row['bytes_per_token_outputs']:,} | {row['bytes_per_token']:,.0f} | "
                    f"{row['mean_tail_mass']:.4f} |" if i == 0 else "| | | | |")
            lines.append(f"{head} {name} | {ex['krs']:.4f} | {got['krs'] - ex['krs']:+.4f} | "
                         f"{got['aoag'] - ex['aoag']:+.4f} | {got['mean_kl'] - ex['mean_kl']:+.4f} | "
                         f"{got['top1_agreement'] - ex['top1_agreement']:+.4f} |")
    took = ", ".join(f"{r['record_s']:.0f} s (k = {k})" for k, r in out["k"].items())
    demo = out.get("committed_demo") or {}
    if demo:
        same = all(abs(demo[n] - out["exact"][n]["krs"]) < 1e-12 for n in names)
        here = ", ".join(f"{n} {out['exact'][n]['krs']:.4f}" for n in names)
        there = ", ".join(f"{n} {demo[n]:.4f}" for n in names)
        lines += ["", "The exact KRS above are those of `results/lm/demo.json` (same checkpoints)." if same else
                  "These checkpoints were retrained (the committed ones are not in the repository, and retraining here "
                  "gave other weights): their exact KRS "
                  f"({here}) differ from `results/lm/demo.json`'s ({there}); the gaps "
                  "compare the recorded and the live teacher on the same checkpoints."]
    if out.get("note"):
        lines += ["", out["note"]]
    low, high = (f"{f(r['score_s'] for r in out['k'].values()):.0f}" for f in (min, max))
    lines += ["", f"Recording took {took}; "
              f"scoring the students against a recording {low if low == high else low + '–' + high} s, against the "
              f"live teacher {out['exact_s']:.0f} s "
              f"(CPU, {out['machine']['cpus']} shared cores, load average {out['machine']['load_average']:.1f}: "
              "indicative). Script: `python benchmarks/recorded_teacher.py`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "results" / "lm" / "checkpoints",
                        help="the demo's checkpoints (python -m knowledge_retention.lm_demo train)")
    parser.add_argument("--max-dev", type=int, default=None, help="only the first N dev sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS),
                        help="the demo students to score (default: both)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    parser.add_argument("--note", help="where the checkpoints come from (kept in the results and shown under the table)")
    args = parser.parse_args(argv)
    if args.render:
        out = json.loads((args.out / "recorded_teacher.json").read_text(encoding="utf-8"))
        if args.note:
            out["note"] = args.note
            (args.out / "recorded_teacher.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        (args.out / "recorded_teacher.md").write_text(table(out), encoding="utf-8")
        return 0
    if not (args.checkpoints / "teacher").is_dir():
        print(f"no demo checkpoints in {args.checkpoints}: run `python -m knowledge_retention.lm_demo train` first",
              file=sys.stderr)
        return 2
    out = measure(args.checkpoints, args.max_dev, args.batch_size, tuple(args.students))
    if args.note:
        out["note"] = args.note
    committed = ROOT / "results" / "lm" / "demo.json"
    if committed.is_file() and args.max_dev is None:
        demo = json.loads(committed.read_text(encoding="utf-8"))
        out["committed_demo"] = {n: demo[n]["teacher_forced"]["krs"] for n in args.students}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recorded_teacher.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (args.out / "recorded_teacher.md").write_text(table(out), encoding="utf-8")
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
