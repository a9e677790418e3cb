"""task="causal-lm": the cost of scoring over the two bare forward passes, before and after the one-pass step.

A naive evaluation runs the teacher and the student with full ``(B, T, V)`` logits. Scoring a pair
(``evaluate_pair(..., task="causal-lm")`` with its defaults: final-layer CKA on every counted token, KL, JS,
top-1, top-5, the log-likelihoods and the cross-layer CKA matrix when its state fits
``CROSS_LAYER_STATE_BUDGET``) should cost little more than that. Four shapes of random Llama-style models
built from ``LlamaConfig``; the first three with 2 teacher blocks and 1 student block (the output layer and
the softmax over V weigh more than in a deep model), the fourth at full depth:

* ``demo-like``: V = 2,048, widths 256 / 256 (the LM demo pair's shape);
* ``SmolLM-like``: V = 49,152, teacher width 960 (SmolLM-360M), student 576 (SmolLM-135M);
* ``Qwen-like``: V = 151,936 (Qwen2.5's vocabulary), teacher width 896 (Qwen2.5-0.5B), student 576;
* ``SmolLM-deep``: SmolLM-like with SmolLM-360M's 32 blocks and SmolLM-135M's 30: its cross-layer matrix
  (33 x 31 hidden states, 4.5 GB of float64 sums) is beyond the budget and skipped with a note; what it would
  cost, the default before the budget, is measured once with the budget lifted.

In one process per shape the three runs alternate ``--repeats`` times on the same texts: the bare forward
passes (teacher then student, full logits, ``torch.inference_mode``), the evaluation with the per-token step
of commit e97f089 (``_token_step_e97f089`` below, its code kept here, patched in where the task imports it)
= **before**, and the evaluation with :func:`knowledge_retention.extraction.token_step.token_step` =
**after**. Times are the process's CPU time (one torch thread: other jobs on the machine slow the wall clock
but barely the CPU time), the minimum over the repeats; the wall-clock minimum is kept in the JSON too. The
results of before and after are compared: every measure must agree to float32 rounding.

``python benchmarks/lm_cost.py`` writes ``benchmarks/results/lm_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
#: name: (V, teacher width, student width, teacher MLP, student MLP, texts, tokens per text, batch size,
#: teacher blocks, student blocks)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int, int, int, int]] = {
    "demo-like": (2_048, 256, 256, 1_024, 1_024, 64, 64, 32, 2, 1),
    "SmolLM-like": (49_152, 960, 576, 2_560, 1_536, 32, 128, 4, 2, 1),
    "Qwen-like": (151_936, 896, 576, 4_864, 1_536, 32, 128, 4, 2, 1),
    "SmolLM-deep": (49_152, 960, 576, 2_560, 1_536, 8, 128, 4, 32, 30),
}
_KV_HEADS = {256: 1, 576: 3, 896: 2, 960: 5}  # SmolLM-135M: 9 / 3 heads, SmolLM-360M: 15 / 5, Qwen2.5-0.5B: 14 / 2
#: measures in [0, 1] (compared by their absolute difference) and unbounded ones (by their relative difference)
BOUNDED = ("krs", "fss", "aoag", "js", "top1_agreement", "topk_overlap")
COMPARED = ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement", "topk_overlap", "logprob_gap",
            "teacher_perplexity", "student_perplexity")


def _token_step_e97f089(teacher_logits: Any, student_logits: Any, targets: Any, *, temperature: float, top_k: int,
                        chunk: int | None = None, measures: Any = None) -> dict[str, Any]:
    """``knowledge_retention/extraction/tasks/causal_lm.py::token_step`` at commit e97f089 (its code; comments
    dropped, ``LOGIT_BUDGET`` inlined). It computes every measure: ``measures`` (which the engine passes since
    ``measures=`` exists) must be the default."""
    import torch

    if measures is not None:
        raise ValueError("the step of commit e97f089 computes every measure")

    logit_budget = 1 << 20
    n = int(targets.shape[0])
    get_t = teacher_logits if callable(teacher_logits) else (lambda lo, hi: teacher_logits[lo:hi].float())
    get_s = student_logits if callable(student_logits) else (lambda lo, hi: student_logits[lo:hi].float())
    log2 = math.log(2.0)
    if chunk is None and n:
        chunk = max(1, logit_budget // int(get_t(0, 1).shape[-1]))
    device = targets.device
    out = {k: torch.empty(n, dtype=torch.float32 if k in ("exp_neg_kl", "kl", "js", "teacher_nll", "student_nll")
                          else torch.float64, device=device)
           for k in ("exp_neg_kl", "kl", "js", "top1", "topk", "teacher_nll", "student_nll")}
    out["teacher_top1"] = torch.empty(n, dtype=torch.long, device=device)
    out["student_top1"] = torch.empty(n, dtype=torch.long, device=device)
    lo = 0
    while lo < n:
        assert chunk is not None
        zt = get_t(lo, min(n, lo + chunk))
        hi = lo + int(zt.shape[0])
        zs = get_s(lo, hi)
        y = targets[lo:hi].to(zt.device).unsqueeze(1)
        lt1, ls1 = torch.log_softmax(zt, dim=-1), torch.log_softmax(zs, dim=-1)
        out["teacher_nll"][lo:hi] = -lt1.gather(1, y).squeeze(1)
        out["student_nll"][lo:hi] = -ls1.gather(1, y).squeeze(1)
        if temperature != 1.0:
            lt, ls = torch.log_softmax(zt / temperature, dim=-1), torch.log_softmax(zs / temperature, dim=-1)
        else:
            lt, ls = lt1, ls1
        del lt1, ls1
        pt, ps = lt.exp(), ls.exp()
        diff = torch.sub(lt, ls)
        kl = torch.linalg.vecdot(pt, diff).clamp(min=0.0)
        lm = torch.logaddexp(lt, ls).sub_(log2)
        js = 0.5 * torch.linalg.vecdot(pt, torch.sub(lt, lm, out=diff))
        js += 0.5 * torch.linalg.vecdot(ps, torch.sub(ls, lm, out=diff))
        js /= log2
        del pt, ps, lm, lt, ls, diff
        kt, ks = zt.topk(top_k, dim=-1).indices, zs.topk(top_k, dim=-1).indices
        out["kl"][lo:hi] = kl
        out["exp_neg_kl"][lo:hi] = torch.exp(-kl)
        out["js"][lo:hi] = js.clamp(0.0, 1.0)
        out["top1"][lo:hi] = kt[:, 0] == ks[:, 0]
        out["topk"][lo:hi] = (kt.unsqueeze(2) == ks.unsqueeze(1)).any(dim=2).sum(dim=1).double() / top_k
        out["teacher_top1"][lo:hi] = kt[:, 0]
        out["student_top1"][lo:hi] = ks[:, 0]
        del zt, zs, kt, ks, kl, js
        lo = hi
    return out


def _tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def _model(vocab: int, width: int, mlp: int, layers: int, seed: int, length: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=width // 64, num_key_value_heads=_KV_HEADS[width],
                         max_position_embeddings=length, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def _patched(step: Callable[..., Any]) -> Callable[[], None]:
    """Puts ``step`` wherever a loaded module of the package holds the current ``token_step``; returns the undo."""
    from knowledge_retention.extraction.token_step import token_step

    undo = []
    for name, module in list(sys.modules.items()):
        if name.startswith("knowledge_retention.") and not name.endswith(".token_step"):
            if getattr(module, "token_step", None) is token_step:
                module.token_step = step
                undo.append(module)
    if not undo:
        raise RuntimeError("token_step is imported by no module of the package: nothing to patch")

    def restore() -> None:
        for module in undo:
            module.token_step = token_step

    return restore


def _clock(run: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = run()
    return time.process_time() - cpu, time.perf_counter() - wall, value


def child(shape: str, repeats: int) -> dict[str, Any]:
    """One shape (run in its own process): bare / before / after, alternating ``repeats`` times."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import knowledge_retention.extraction.tasks.causal_lm  # noqa: F401  (the module the step is patched into)
    from knowledge_retention.extraction import evaluate_pair

    vocab, d_t, d_s, mlp_t, mlp_s, n_texts, length, batch, blocks_t, blocks_s = SHAPES[shape]
    tok = _tokenizer(vocab)
    teacher = _model(vocab, d_t, mlp_t, blocks_t, 0, length)
    student = _model(vocab, d_s, mlp_s, blocks_s, 1, length)
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(3, vocab, size=length)) for _ in range(n_texts)]

    def bare() -> None:
        for lo in range(0, n_texts, batch):
            enc = tok(texts[lo : lo + batch], return_tensors="pt", padding=True)
            with torch.inference_mode():
                teacher(**enc)
                student(**enc)

    def evaluate() -> Any:
        return evaluate_pair(teacher, student, texts, teacher_tokenizer=tok, student_tokenizer=tok, progress=False,
                             batch_size=batch)

    def before() -> Any:
        restore = _patched(_token_step_e97f089)
        try:
            return evaluate()
        finally:
            restore()

    # where the time of `after` goes: CPU seconds inside the models' forward calls, inside the token step
    # (the output layer on the counted tokens and the vocabulary maths), and the rest (CKA sums, tokenisation...)
    spent = {"forward": 0.0, "step": 0.0}
    for model in (teacher, student):
        model.register_forward_pre_hook(lambda *_: spent.__setitem__("tick", time.process_time()))
        model.register_forward_hook(lambda *_: spent.__setitem__("forward", spent["forward"] + time.process_time()
                                                                 - spent["tick"]))
    from knowledge_retention.extraction.token_step import token_step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        tick = time.process_time()
        try:
            return token_step(*args, **kwargs)
        finally:
            spent["step"] += time.process_time() - tick

    def after() -> Any:
        spent.update(forward=0.0, step=0.0)
        restore = _patched(timed_step)
        try:
            return evaluate()
        finally:
            restore()
            parts["after"].append((spent["forward"], spent["step"]))

    def bare_timed() -> None:
        spent.update(forward=0.0, step=0.0)
        bare()
        parts["bare"].append((spent["forward"], 0.0))

    parts: dict[str, list[tuple[float, float]]] = {"bare": [], "after": []}
    runs: dict[str, Callable[[], Any]] = {"bare": bare_timed, "before": before, "after": after}
    for run in (bare, evaluate):  # warm-up (the step before shares everything else with after)
        run()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            cpu, wall, value = _clock(run)
            times[name].append((cpu, wall))
            print(f"{shape} {name}: cpu {cpu:.2f} s, wall {wall:.2f} s", file=sys.stderr, flush=True)
            if value is not None:
                results[name] = value
    # a pair whose cross-layer CKA matrix is beyond the budget scores without it (a note says so): what computing
    # it anyway would cost, the default before that budget, is measured once with the budget lifted
    from knowledge_retention.extraction.tasks import causal_lm

    with_matrix = None
    if results["after"].cross_layer_cka is None:
        budget = causal_lm.CROSS_LAYER_STATE_BUDGET
        causal_lm.CROSS_LAYER_STATE_BUDGET = 1 << 62
        try:
            cpu, wall, forced = _clock(evaluate)
        finally:
            causal_lm.CROSS_LAYER_STATE_BUDGET = budget
        with_matrix = {"cpu_s": cpu, "wall_s": wall, "fss_difference": abs(forced.fss - results["after"].fss)}
        print(f"{shape} with the cross-layer matrix: cpu {cpu:.2f} s, wall {wall:.2f} s", file=sys.stderr, flush=True)
    agree = {key: abs(getattr(results["after"], key) - getattr(results["before"], key)) for key in COMPARED}
    counted = results["after"].lm["num_tokens"]
    best = min(range(repeats), key=lambda i: times["after"][i][0])  # the breakdown of the fastest `after`
    forward, step = parts["after"][best]
    return {
        "shape": shape, "vocab": vocab, "teacher_width": d_t, "student_width": d_s, "texts": n_texts,
        "length": length, "batch_size": batch, "counted_tokens": counted, "repeats": repeats,
        "cpu_s": {name: min(c for c, _ in t) for name, t in times.items()},
        "wall_s": {name: min(w for _, w in t) for name, t in times.items()},
        "all_cpu_s": {name: [c for c, _ in t] for name, t in times.items()},
        "max_abs_difference": max(agree.values()), "aoag": results["after"].aoag, "differences": agree,
        "bounded_abs_difference": max(agree[k] for k in BOUNDED),
        "unbounded_rel_difference": max(agree[k] / max(abs(getattr(results["before"], k)), 1e-300)
                                        for k in COMPARED if k not in BOUNDED),
        "after_cpu_s": {"forward": forward, "token_step": step, "rest": times["after"][best][0] - forward - step},
        "bare_forward_cpu_s": min(f for f, _ in parts["bare"]),
        "blocks": [blocks_t, blocks_s], "cross_layer_matrix": results["after"].cross_layer_cka is not None,
        "with_cross_layer_matrix": with_matrix,
    }


def _spawn(shape: str, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", shape, str(repeats)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env={
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("SHAPE", "REPEATS"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--table-only", action="store_true", help="rewrite lm_cost.md from lm_cost.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    if args.table_only:
        (OUT / "lm_cost.md").write_text(table(json.loads((OUT / "lm_cost.json").read_text(encoding="utf-8"))),
                                        encoding="utf-8")
        return 0
    rows = []
    for shape in args.shapes:
        rows.append(_spawn(shape, args.repeats))
        print(rows[-1], flush=True)
    import torch

    record = {
        "rows": rows,
        "machine": f"{platform.machine()} CPU, float32, torch {torch.__version__} with 1 thread; 2 cores shared with "
                   "other jobs (CPU time of the process, the minimum over the repeats)",
        "command": "python benchmarks/lm_cost.py" + ("" if args.repeats == 2 else f" --repeats {args.repeats}"),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lm_cost.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (OUT / "lm_cost.md").write_text(table(record), encoding="utf-8")
    print(table(record))
    return 0


def _difference(row: dict[str, Any]) -> str:
    if "bounded_abs_difference" not in row:  # a run before the two were told apart
        return f"{row['max_abs_difference']:.1e} (absolute)"
    return f"{row['bounded_abs_difference']:.1e} / {row['unbounded_rel_difference']:.1e}"


def table(record: dict[str, Any]) -> str:
    """The Markdown summary of ``lm_cost.json``."""
    lines = [
        "| shape | V | widths teacher / student | counted tokens | two bare forward passes (s) | scoring before (s) "
        "| before / bare | scoring after (s) | after / bare | after: forward passes / token step / rest (s) "
        "| largest difference, after vs before: absolute / relative | cross-layer matrix |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        c, a = r["cpu_s"], r["after_cpu_s"]
        blocks = r.get("blocks", [2, 1])
        forced = r.get("with_cross_layer_matrix")
        matrix = ("computed" if forced is None else
                  f"skipped (computed anyway: {forced['cpu_s']:.2f} s, {forced['cpu_s'] / c['bare']:.2f}x)")
        lines.append(
            f"| {r['shape']} ({blocks[0]} / {blocks[1]} blocks) | {r['vocab']:,} | {r['teacher_width']} / "
            f"{r['student_width']} | {r['counted_tokens']:,} | "
            f"{c['bare']:.2f} | {c['before']:.2f} | {c['before'] / c['bare']:.2f}x | {c['after']:.2f} | "
            f"**{c['after'] / c['bare']:.2f}x** | {a['forward']:.2f} / {a['token_step']:.2f} / {a['rest']:.2f} | "
            f"{_difference(r)} | {matrix} |"
        )
    lines += [
        "",
        "Scoring = `evaluate_pair(teacher, student, texts, ...)` with its defaults (final-layer token CKA, KL, JS, "
        "top-1, top-5, log-likelihoods, and the cross-layer CKA matrix when its streamed state fits 256 MiB) on "
        "random Llama-style models (2 teacher blocks and 1 student block: the output layer weighs more than in a "
        "deep model; the deep shape has SmolLM-360M's and SmolLM-135M's depths); *before* is the per-token step of "
        "commit e97f089, *after* the one-pass step of `knowledge_retention/extraction/token_step.py`; *largest "
        "difference* is the largest absolute difference of the two results' measures in [0, 1] (KRS, FSS, AOAg, JS, "
        "top-1, top-5) and the largest relative difference of the others (KL, log-prob gap, perplexities). The last "
        "column: whether the cross-layer matrix was computed, and where it was skipped, the time of scoring with it "
        "(the default before the budget; measured once). The "
        "breakdown of *after*: CPU time inside the two models' forward calls (hidden states, no full logits), inside "
        "the token step (the output layer on the counted tokens and the vocabulary maths), and the rest (linear and "
        "cross-layer CKA sums in float64, tokenisation, gathering).",
        "",
        f"Measured with `{record['command']}` ({record['machine']}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
