"""task="causal-lm": peak memory against the number of counted tokens and the vocabulary, and time overhead.

Small random Llama-style models (teacher 2 blocks, student 1 block, width 64) on synthetic texts of
``--length`` word-level tokens, so each text gives ``length - 1`` counted tokens. Every measurement
runs in a fresh subprocess and reports its peak resident memory (``ru_maxrss``) after the models are
built and warmed up (``base_mb``) and at the end (``peak_mb``):

* **flat in N**: 10^4, 10^5 and 10^6 counted tokens at V = 2,048;
* **bounded in V**: V = 131,072 (a Llama-3-sized vocabulary) at T = 512, batch 8, next to the
  ``(B, T, V)`` float32 logits one batch of a bare forward pass materialises, and that pass's own peak;
* **overhead**: evaluation time over the time of the two bare forward passes (teacher and student,
  full logits, ``torch.inference_mode``) on the same batches; times are the process's CPU time (one torch
  thread: other jobs on the shared machine stretch the wall clock, not the CPU time).

``python benchmarks/lm_memory.py`` writes ``benchmarks/results/lm_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
#: The command's tail when the N-sweep rows come from an earlier run's log (inside the table's backticks).
ROWS_FROM = "` for the N sweep, then `python benchmarks/lm_memory.py --rows-from LOG"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def _model(vocab: int, layers: int, seed: int, length: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=length)
    return LlamaForCausalLM(config).eval()


def child(tokens: int, vocab: int, length: int, batch_size: int, mode: str) -> dict[str, Any]:
    """One measurement (run in its own process)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from knowledge_retention.extraction import evaluate_pair

    n_texts = max(1, round(tokens / (length - 1)))
    rng = np.random.default_rng(0)
    tok = _tokenizer(vocab)
    teacher, student = _model(vocab, 2, 0, length), _model(vocab, 1, 1, length)
    texts = [" ".join(f"w{i}" for i in rng.integers(3, vocab, size=length)) for _ in range(n_texts)]
    input_mb = sum(len(t) for t in texts) / 2**20
    warm = texts[:2]
    if mode == "evaluate":
        evaluate_pair(teacher, student, warm, teacher_tokenizer=tok, student_tokenizer=tok, progress=False,
                      batch_size=batch_size)
        base = _rss_mb()
        tick = time.process_time()
        result = evaluate_pair(teacher, student, texts, teacher_tokenizer=tok, student_tokenizer=tok, progress=False,
                               batch_size=batch_size, cross_layer=True, layers="all")
        seconds = time.process_time() - tick
        counted = result.lm["num_tokens"] if result.lm else 0
        extra = {"aoag": result.aoag, "fss": result.fss}
    else:  # two bare forward passes with full logits, same batches (already equal length: no grouping needed)
        def run(batch: list[str]) -> None:
            enc = tok(batch, return_tensors="pt", padding=True)
            with torch.inference_mode():
                teacher(**enc)
                student(**enc)

        run(warm)
        base = _rss_mb()
        tick = time.process_time()
        for lo in range(0, n_texts, batch_size):
            run(texts[lo : lo + batch_size])
        seconds = time.process_time() - tick
        counted = n_texts * (length - 1)
        extra = {}
    return {"mode": mode, "tokens": counted, "texts": n_texts, "vocab": vocab, "length": length,
            "batch_size": batch_size, "seconds": seconds, "base_mb": base, "peak_mb": _rss_mb(),
            "input_texts_mb": input_mb, **extra}


def _spawn(*args: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                          "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                          "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=5, metavar=("TOKENS", "VOCAB", "LENGTH", "BATCH", "MODE"))
    parser.add_argument("--quick", action="store_true", help="10^3..10^5 tokens only (a smoke run)")
    parser.add_argument("--rows-from", type=Path, metavar="LOG",
                        help="take the N-sweep rows from the log of an earlier run of this script (its printed dicts) "
                             "and measure only the large-vocabulary point")
    parser.add_argument("--table-only", action="store_true", help="rewrite lm_memory.md from lm_memory.json")
    args = parser.parse_args(argv)
    if args.table_only:
        record = json.loads((OUT / "lm_memory.json").read_text(encoding="utf-8"))
        record["command"] = record["command"].replace(
            "` (the N sweep), then `python benchmarks/lm_memory.py --rows-from LOG` (the large-vocabulary point)",
            ROWS_FROM)  # the form an earlier version of this script wrote
        (OUT / "lm_memory.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (OUT / "lm_memory.md").write_text(table(record), encoding="utf-8")
        return 0
    if args.child:
        t, v, n, b, mode = args.child
        print(json.dumps(child(int(t), int(v), int(n), int(b), mode)))
        return 0
    sizes = (1_000, 10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    rows = []
    if args.rows_from is not None:
        import ast

        for line in args.rows_from.read_text(encoding="utf-8").splitlines():
            if line.startswith("{'mode'"):
                rows.append(ast.literal_eval(line))
    else:
        for tokens in sizes:
            for mode in ("evaluate", "bare"):
                rows.append(_spawn(tokens, 2048, 128, 32, mode))
                print(rows[-1], flush=True)
    big_tokens = 4_000 if not args.quick else 1_000
    big = [_spawn(big_tokens, 131_072, 512, 8, mode) for mode in ("evaluate", "bare")]
    print(big, flush=True)
    record = {
        "rows": rows, "large_vocab": big,
        "machine": f"{platform.machine()}, torch 1 thread per process; 2 CPU cores shared with other jobs running "
                   "at the same time (times are CPU seconds of each process)",
        "command": "python benchmarks/lm_memory.py" + (ROWS_FROM if args.rows_from is not None else ""),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lm_memory.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (OUT / "lm_memory.md").write_text(table(record), encoding="utf-8")
    print(table(record))
    return 0


def table(record: dict[str, Any]) -> str:
    """The Markdown summary of ``lm_memory.json``."""
    ev = [r for r in record["rows"] if r["mode"] == "evaluate"]
    bare = {r["tokens"]: r for r in record["rows"] if r["mode"] == "bare"}
    lines = [
        "| counted tokens | texts | V | peak RSS (MB) | growth over warm-up (MB) | time (s) | time / two bare forward passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ev:
        b = bare.get(r["tokens"])
        ratio = f"{r['seconds'] / b['seconds']:.2f}x" if b else "n/a"
        lines.append(f"| {r['tokens']:,} | {r['texts']:,} | {r['vocab']:,} | {r['peak_mb']:.0f} | "
                     f"{r['peak_mb'] - r['base_mb']:.0f} | {r['seconds']:.1f} | {ratio} |")
    e, b = record["large_vocab"]
    logits_mb = b["batch_size"] * b["length"] * b["vocab"] * 4 / 2**20
    lines += [
        "",
        f"Large vocabulary (V = {e['vocab']:,}, T = {e['length']}, batch {e['batch_size']}, {e['tokens']:,} counted "
        f"tokens): evaluation peak RSS {e['peak_mb']:.0f} MB ({e['peak_mb'] - e['base_mb']:.0f} MB over warm-up); "
        f"the two bare forward passes with full logits peak at {b['peak_mb']:.0f} MB "
        f"({b['peak_mb'] - b['base_mb']:.0f} MB over warm-up); one batch's (B, T, V) float32 logits alone are "
        f"{logits_mb:.0f} MB. Time: {e['seconds']:.1f} s vs {b['seconds']:.1f} s bare "
        f"({e['seconds'] / b['seconds']:.2f}x).",
        "",
        f"Measured with `{record['command']}` ({record['machine']}). Each row is a fresh process; the input texts "
        f"themselves (a Python list, up to {max(r['input_texts_mb'] for r in record['rows']):.0f} MB) are the only "
        "thing that grows with N.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
