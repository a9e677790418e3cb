"""A recorded teacher on the LM demo pair: bytes per token and the gap to the exact measures for k = 8, 32, 128.

The teacher of ``python -m knowledge_retention.lm_demo`` (GPT-2 style, V = 2,048) is recorded on the 872
SST-2 dev sentences, teacher-forced, with :func:`~knowledge_retention.extraction.token_step.record_step`
and :class:`~knowledge_retention.extraction.recorded.RecordingWriter` (the hidden states of the layers the
demo's ``layers="uniform"`` pairs use), for k = 8, 32, 128 and k = V, with float32 log-probabilities and
hidden states (exact) and with float16 ones (half the bytes). Each student (before / after KD) is then
scored from the files read back by :class:`~knowledge_retention.extraction.recorded.RecordedTeacher`
with :func:`~knowledge_retention.token_agreement.recorded_token_statistics`, and against the live
teacher with :func:`~knowledge_retention.token_agreement.token_statistics`; FSS is the mean linear CKA
over the uniform layer pairs, from the recorded teacher states. KRS uses the causal-lm preset
(alpha = beta = 0.5). With k < V the recorded KL can only be lower (AOAg higher): the gap is that bias.

``python benchmarks/lm_recorded.py --checkpoints results/lm/checkpoints`` (the demo's checkpoints, made
by ``python -m knowledge_retention.lm_demo train``) writes ``benchmarks/results/lm_recorded.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
KS = (8, 32, 128)
BATCH = 64


def _teacher_forced(model: Any, ids: list[list[int]], pad: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per counted token (every position whose next token is in the text): float32 logits and hidden states."""
    import torch

    length = max(len(r) for r in ids)
    inputs = torch.full((len(ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, row in enumerate(ids):
        inputs[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    with torch.inference_mode():
        out = model(input_ids=inputs, attention_mask=mask, output_hidden_states=True)
    rows = torch.tensor([i for i, r in enumerate(ids) for _ in range(len(r) - 1)])
    cols = torch.tensor([p for r in ids for p in range(len(r) - 1)])
    return out.logits[rows, cols].float().numpy(), [h[rows, cols].float().numpy() for h in out.hidden_states]


def measure(checkpoints: Path, max_dev: int | None = None, names: tuple[str, ...] = ("before", "after")) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from knowledge_retention.extraction.layers import resolve_layer_pairs
    from knowledge_retention.extraction.recorded import (
        RecordedBatch,
        RecordedTeacher,
        RecordingWriter,
        finalize_recording,
    )
    from knowledge_retention.extraction.token_step import record_step
    from knowledge_retention.lm_demo import _sentences
    from knowledge_retention.similarity import LinearCKAAccumulator
    from knowledge_retention.token_agreement import recorded_token_statistics, token_statistics

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(checkpoints / "teacher")
    teacher = GPT2LMHeadModel.from_pretrained(checkpoints / "teacher").eval()
    students = {name: GPT2LMHeadModel.from_pretrained(checkpoints / f"student_{name}").eval() for name in names}
    dev = _sentences("validation")[:max_dev]
    limit = int(teacher.config.n_positions)  # the models' length limit: longer texts are cut, as the evaluation does
    ids = [list(r)[:limit] for r in tok(dev, add_special_tokens=True)["input_ids"]]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    vocab = int(teacher.get_output_embeddings().weight.shape[0])
    pairs = resolve_layer_pairs("uniform", teacher.config.n_layer + 1, next(iter(students.values())).config.n_layer + 1)
    layers = sorted({t for t, _ in pairs})
    configs = [(k, dtype) for k in (*KS, vocab) for dtype in ("float32", "float16")]
    work = Path(tempfile.mkdtemp(prefix="lm_recorded-"))
    try:
        writers = {c: RecordingWriter(work / f"k{c[0]}-{c[1]}", top_k=c[0], vocab_size=vocab, logprob_dtype=c[1],
                                      hidden_dtype=c[1], layers=layers) for c in configs}
        live_rows: dict[str, list[Any]] = {name: [] for name in students}
        for lo in range(0, len(ids), BATCH):
            batch = [r for r in ids[lo : lo + BATCH]]
            z_t, h_t = _teacher_forced(teacher, batch, pad)
            example = np.concatenate([np.full(len(r) - 1, lo + i) for i, r in enumerate(batch)])
            position = np.concatenate([np.arange(len(r) - 1) for r in batch])
            target = np.concatenate([r[1:] for r in batch])
            for (k, _), writer in writers.items():
                rec = record_step(torch.from_numpy(z_t), torch.from_numpy(target), k=k)
                writer.write(RecordedBatch(example=example, position=position, target=target,
                                           topk_ids=rec["topk_ids"].numpy(), topk_logprobs=rec["topk_logprobs"].numpy(),
                                           tail_logmass=rec["tail_logmass"].numpy(),
                                           target_logprob=rec["target_logprob"].numpy(),
                                           hidden={layer: h_t[layer] for layer in layers},
                                           examples=np.arange(lo, lo + len(batch))))
            for name, student in students.items():
                z_s, h_s = _teacher_forced(student, batch, pad)
                live_rows[name].append((z_t, z_s, target, h_t, h_s))
        manifests = {}
        for (k, dtype), writer in writers.items():
            writer.close()
            manifests[(k, dtype)] = finalize_recording(
                work / f"k{k}-{dtype}", num_processes=1, num_examples=len(ids), top_k=k, vocab_size=vocab, tokenizer=tok,
                texts_fingerprint="sst2-dev", options={"layers": "uniform"}, logprob_dtype=dtype, hidden_dtype=dtype,
                layers=layers)
        rows = []
        for name in students:
            z_t = np.concatenate([r[0] for r in live_rows[name]])
            z_s = np.concatenate([r[1] for r in live_rows[name]])
            target = np.concatenate([r[2] for r in live_rows[name]])
            h_s = [np.concatenate([r[4][j] for r in live_rows[name]]) for j in range(len(live_rows[name][0][4]))]
            live = token_statistics(z_t, z_s, target)
            h_t_live = {t: np.concatenate([r[3][t] for r in live_rows[name]]) for t in layers}
            fss_live = _fss(LinearCKAAccumulator, pairs, h_t_live, h_s)
            exact = {"aoag": float(live["exp_neg_kl"].mean()), "kl": float(live["kl"].mean()),
                     "js": float(live["js"].mean()), "top1": float(live["top1"].mean()), "fss": fss_live}
            exact["krs"] = 0.5 * exact["fss"] + 0.5 * exact["aoag"]
            exact["teacher_perplexity"] = float(np.exp(live["teacher_nll"].mean()))
            for (k, dtype), manifest in manifests.items():
                got = RecordedTeacher(work / f"k{k}-{dtype}").batch(range(len(ids)))
                stats = recorded_token_statistics(got.topk_ids, got.topk_logprobs, got.tail_logmass, z_s, got.target,
                                                  teacher_target_logprob=got.target_logprob)
                fss = _fss(LinearCKAAccumulator, pairs, got.hidden, h_s)
                aoag = float(stats["exp_neg_kl"].mean())
                rows.append({
                    "student": name, "k": k, "dtype": dtype, "tokens": manifest["num_tokens"],
                    "bytes_per_token": manifest["bytes_per_token"],
                    "bytes_per_token_outputs": manifest["bytes_per_token_outputs"],
                    "tail_mass": float(stats["teacher_tail_mass"].mean()), "aoag": aoag, "kl": float(stats["kl"].mean()),
                    "js": float(stats["js"].mean()), "top1": float(stats["top1"].mean()), "fss": fss,
                    "krs": 0.5 * fss + 0.5 * aoag, "exact": exact,
                })
                print({k2: v for k2, v in rows[-1].items() if k2 != "exact"}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows, "vocab": vocab, "dev_sentences": len(ids), "layers": layers,
            "layer_pairs": [list(p) for p in pairs], "machine": f"{platform.machine()} CPU, float32 models",
            "command": "python benchmarks/lm_recorded.py --checkpoints results/lm/checkpoints"
                       + ("" if names == ("before", "after") else " --students " + " ".join(names))}


def _fss(acc_class: Any, pairs: list[tuple[int, int]], teacher: dict[int, np.ndarray], student: list[np.ndarray]) -> float:
    scores = []
    for t, s in pairs:
        acc = acc_class()
        acc.update(np.asarray(teacher[t], dtype=np.float64), student[s].astype(np.float64))
        scores.append(acc.compute())
    return float(np.mean(scores))


def table(record: dict[str, Any]) -> str:
    """The Markdown summary of ``lm_recorded.json``."""
    lines = [
        "| student | k | stored as | bytes / token (outputs; with hidden states) | mean tail mass | AOAg recorded "
        "(exact) | KRS recorded (exact) | KRS gap | top-1 recorded = exact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        e = r["exact"]
        k = f"{r['k']:,}" + (" = V" if r["k"] == record["vocab"] else "")
        lines.append(
            f"| {r['student']} | {k} | {r['dtype']} | {r['bytes_per_token_outputs']:,}; {r['bytes_per_token']:,.0f} | "
            f"{r['tail_mass']:.4f} | {r['aoag']:.4f} ({e['aoag']:.4f}) | {r['krs']:.4f} ({e['krs']:.4f}) | "
            f"{round(r['krs'] - e['krs'], 4) + 0.0:+.4f} | {'yes' if abs(r['top1'] - e['top1']) < 1e-12 else 'no'} |")
    lines += [
        "",
        f"The LM demo's teacher recorded on the {record['dev_sentences']} SST-2 dev sentences (teacher-forced, "
        f"V = {record['vocab']:,}, hidden states of teacher layers {record['layers']} for the uniform layer pairs "
        f"{record['layer_pairs']}); each student scored from the recording read back, and against the live teacher "
        "(exact). With k < V the teacher's tail is one bucket: KL can only be underestimated, so AOAg and KRS are upper "
        "bounds; top-1 agreement is exact. float16 stores log-probabilities and hidden states in half the bytes.",
        "",
        f"Measured with `{record['command']}` ({record['machine']}). {record.get('note', '')}".rstrip(),
        "",
        f"The teacher's perplexity on these texts: {record['rows'][0]['exact']['teacher_perplexity']:.2f} "
        f"(`results/lm/demo.json`: {record['committed_teacher_perplexity']:.2f}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "results" / "lm" / "checkpoints")
    parser.add_argument("--max-dev", type=int, default=None)
    parser.add_argument("--students", nargs="+", default=["before", "after"], choices=["before", "after"])
    parser.add_argument("--note", default="", help="a sentence on where the checkpoints come from (into the results)")
    args = parser.parse_args(argv)
    record = measure(args.checkpoints, args.max_dev, tuple(args.students))
    record["note"] = args.note
    demo = ROOT / "results" / "lm" / "demo.json"
    record["committed_teacher_perplexity"] = json.loads(demo.read_text(encoding="utf-8"))["before"]["teacher_forced"][
        "teacher_perplexity"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lm_recorded.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (OUT / "lm_recorded.md").write_text(table(record), encoding="utf-8")
    print(table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
