r"""A causal-LM distillation demonstration that runs on a CPU: teacher, student before and after KD.

No pretrained decoder installs offline here, so the demonstration trains its own:

1. a byte-level BPE tokenizer (``vocab_size`` tokens, ``<bos>``/``<eos>`` added to every text, no
   pad token, as GPT-2) on the SST-2 train sentences;
2. a GPT-2-style **teacher** (``teacher_layers`` blocks, width ``width``) as a language model on
   those sentences for ``teacher_steps`` steps;
3. a half-depth **student** twice, from the *same* random initialisation, the same batches in the
   same order and the same optimiser settings:

   * ``before``: plain next-token cross-entropy;
   * ``after``: token-level knowledge distillation,
     :math:`\tfrac12\,\mathrm{CE}(y, p_S) + \tfrac12\,\mathrm{KL}(p_T \Vert p_S)` per real next
     token (Hinton et al. 2015 at :math:`T = 1`; the forward KL of supervised KD in GKD).

Every model is written with ``save_pretrained`` and read back with ``from_pretrained``, so the
evaluation step (``python -m knowledge_retention.lm_demo evaluate``) is the command that runs on a
Llama/Qwen/SmolLM pair where the Hub is reachable. The checkpoints go to
``results/lm/checkpoints/`` (not committed); the measured numbers to ``results/lm/``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["evaluate_demo", "main", "train_demo"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "lm"
MAX_TOKENS = 64
RECORDED_TOP_K = 128  # the recorded-teacher run: top-128 log-probs per token, as DistillKit records


def _sentences(split: str) -> list[str]:
    from .distillation.data import SPLIT_FILES, find_sst2_dir

    directory = find_sst2_dir()
    if directory is None:
        raise FileNotFoundError("SST-2 TSV files not found: set SST2_DIR to a folder holding train.tsv and dev.tsv.")
    lines = (directory / SPLIT_FILES[split]).read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0].strip() for line in lines if line.strip()]


def train_tokenizer(sentences: list[str], vocab_size: int, out_dir: Path) -> Any:
    """A byte-level BPE tokenizer that adds ``<bos>`` and ``<eos>`` to every text, saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sentences, trainer=trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", bos),
                                                                                                 ("<eos>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   model_max_length=MAX_TOKENS)
    fast.save_pretrained(out_dir)
    return fast


def _config(tokenizer: Any, layers: int, width: int) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), n_positions=MAX_TOKENS, n_embd=width, n_layer=layers,
                      n_head=max(1, width // 64), bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)


def _batches(encoded: list[list[int]], batch_size: int, steps: int, seed: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    order: list[int] = []
    out = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order.extend(fresh)
        out.append([encoded[i] for i in order[:batch_size]])
        del order[:batch_size]
    return out


def _pad(batch: list[list[int]]) -> tuple[Any, Any, Any]:
    import torch

    length = max(len(ids) for ids in batch)
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _train(model: Any, batches: list[list[list[int]]], *, lr: float, teacher: Any = None, kd_weight: float = 0.5,
           log: Any = print, name: str = "model") -> dict[str, Any]:
    """AdamW with 5% linear warm-up then linear decay; KD against ``teacher`` when given."""
    import torch
    import torch.nn.functional as F

    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = len(batches)
    warm = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    for step, batch in enumerate(batches):
        ids, mask, labels = _pad(batch)
        out = model(input_ids=ids, attention_mask=mask)
        logits = out.logits[:, :-1].float()
        target = labels[:, 1:]
        real = target != -100
        ce = F.cross_entropy(logits[real], target[real])
        loss = ce
        if teacher is not None:
            with torch.inference_mode():
                t_logits = teacher(input_ids=ids, attention_mask=mask).logits[:, :-1].float()[real]
            t_logp = torch.log_softmax(t_logits, dim=-1).clone()
            kl = F.kl_div(torch.log_softmax(logits[real], dim=-1), t_logp, log_target=True, reduction="batchmean")
            loss = (1 - kd_weight) * ce + kd_weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(ce.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            recent = sum(losses[-100:]) / len(losses[-100:])
            log(f"[{name}] step {step + 1}/{steps}  train CE {recent:.3f}  {time.perf_counter() - started:.0f} s")
    model.eval()
    return {"steps": steps, "train_s": time.perf_counter() - started, "final_train_ce": sum(losses[-100:]) / len(losses[-100:])}


def train_demo(
    out_dir: Path = DEFAULT_OUT,
    *,
    vocab_size: int = 2048,
    width: int = 256,
    teacher_layers: int = 4,
    teacher_steps: int = 600,
    student_steps: int = 400,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Trains the tokenizer, the teacher and both students; returns (and writes) the training record."""
    import torch
    from transformers import GPT2LMHeadModel

    ckpt = out_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    sentences = _sentences("train")
    if max_train is not None:
        sentences = sentences[:max_train]
    tokenizer = train_tokenizer(sentences, vocab_size, ckpt / "tokenizer")
    encoded = tokenizer(sentences, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    record: dict[str, Any] = {
        "train_sentences": len(sentences), "vocab_size": len(tokenizer), "width": width, "batch_size": batch_size,
        "lr": lr, "seed": seed, "max_tokens": MAX_TOKENS, "teacher_layers": teacher_layers,
        "student_layers": teacher_layers // 2, "kd_loss": "0.5 CE + 0.5 KL(teacher || student), T = 1",
        "note": "trained on 2 shared CPU cores (other jobs running at the same time): times are indicative",
    }
    torch.manual_seed(seed)
    teacher = GPT2LMHeadModel(_config(tokenizer, teacher_layers, width))
    record["teacher"] = _train(teacher, _batches(encoded, batch_size, teacher_steps, seed), lr=lr, name="teacher")
    teacher.save_pretrained(ckpt / "teacher")
    tokenizer.save_pretrained(ckpt / "teacher")
    torch.manual_seed(seed + 1)
    init = GPT2LMHeadModel(_config(tokenizer, teacher_layers // 2, width))
    init.save_pretrained(ckpt / "student_init")
    student_batches = _batches(encoded, batch_size, student_steps, seed + 1)
    for name, kd in (("before", None), ("after", teacher)):
        student = GPT2LMHeadModel.from_pretrained(ckpt / "student_init")
        torch.manual_seed(seed + 2)  # same dropout stream for both
        record[f"student_{name}"] = _train(student, student_batches, lr=lr, teacher=kd, name=f"student_{name}")
        student.save_pretrained(ckpt / f"student_{name}")
        tokenizer.save_pretrained(ckpt / f"student_{name}")
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def evaluate_demo(out_dir: Path = DEFAULT_OUT, *, batch_size: int = 64, generate_tokens: int = 16,
                  prompt_tokens: int = 4, max_dev: int | None = None) -> dict[str, Any]:
    """Scores both students against the teacher on the SST-2 dev sentences (teacher-forced) and on
    greedy teacher continuations of their first words; writes ``results/lm/demo.json``, ``demo.md`` and the
    teacher-forced LM report of each student (``report_before/``, ``report_after/``)."""
    from .extraction import evaluate_pair
    from .reporting import build_report, write_report

    ckpt = out_dir / "checkpoints"
    dev = _sentences("validation")[:max_dev]
    prompts = [" ".join(s.split()[:prompt_tokens]) for s in dev]
    out: dict[str, Any] = {"dev_sentences": len(dev), "batch_size": batch_size, "generate": {"max_new_tokens": generate_tokens,
                                                                     "prompt_words": prompt_tokens}}
    timing: dict[str, Any] = {"bare_forward": _clocked(lambda: _bare_forward(ckpt, dev, batch_size))[0]}
    for name in ("before", "after"):
        clock, forced = _clocked(partial(evaluate_pair, str(ckpt / "teacher"), str(ckpt / f"student_{name}"), dev,
                                         task="causal-lm", layers="uniform", batch_size=batch_size, progress=False))
        timing[f"score_{name}"] = clock
        gen = evaluate_pair(str(ckpt / "teacher"), str(ckpt / f"student_{name}"), prompts, task="causal-lm",
                            layers="uniform", batch_size=batch_size, progress=False,
                            generate={"max_new_tokens": generate_tokens})
        out[name] = _relative({"teacher_forced": forced.to_dict(), "generated": gen.to_dict()}, out_dir)
        report = build_report(forced, options={"command": "python -m knowledge_retention.lm_demo evaluate"})
        write_report(_relative(report, out_dir), out_dir / f"report_{name}")
    out["recorded_teacher"] = _recorded_run(ckpt, dev, batch_size, out, timing)
    out["timing"] = timing
    (out_dir / "demo.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (out_dir / "demo.md").write_text(demo_table(out), encoding="utf-8")
    return out


def _clocked(run: Any) -> tuple[dict[str, float], Any]:
    """``({"wall_s", "cpu_s"}, value)`` of ``run()``: wall clock and the process's CPU time (every thread)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = run()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}, value


def _bare_forward(ckpt: Path, texts: list[str], batch_size: int) -> None:
    """What any evaluation runs at least: the teacher and a student over the texts, full logits, nothing kept."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt / "teacher")
    models = [AutoModelForCausalLM.from_pretrained(ckpt / name).eval() for name in ("teacher", "student_after")]
    tok.pad_token = tok.pad_token or tok.eos_token
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            enc = tok(texts[lo : lo + batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=MAX_TOKENS)
            for model in models:
                model(**enc)


def _recorded_run(ckpt: Path, dev: list[str], batch_size: int, out: dict[str, Any], timing: dict[str, Any],
                  top_k: int = RECORDED_TOP_K) -> dict[str, Any]:
    """The teacher recorded once (top ``top_k``, the layers of ``layers="uniform"``) and both students scored
    against the recording, teacher-forced (``record_teacher``; the recording stays in the checkpoints folder)."""
    import shutil

    from .extraction import evaluate_students, record_teacher

    folder = ckpt / f"teacher_recorded_top{top_k}"
    if folder.exists():
        shutil.rmtree(folder)
    pairs = out["before"]["teacher_forced"]["layer_pairs"]
    timing["record"], manifest = _clocked(lambda: record_teacher(
        str(ckpt / "teacher"), dev, folder, top_k=top_k, batch_size=batch_size, progress=False,
        layers=sorted({p["teacher"] for p in pairs})))
    timing["score_recorded_both"], got = _clocked(lambda: evaluate_students(
        str(folder), {name: str(ckpt / f"student_{name}") for name in ("before", "after")}, dev, layers="uniform",
        batch_size=batch_size, progress=False))
    keys = ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement")
    return {"top_k": top_k, "vocab_size": manifest["vocab_size"], "num_tokens": manifest["num_tokens"],
            "bytes_per_token": manifest["bytes_per_token"], "bytes_per_token_outputs": manifest["bytes_per_token_outputs"],
            "mean_tail_mass": got["before"].options["recorded_teacher"]["mean_tail_mass"],
            **{name: {key: getattr(r, key) for key in keys} for name, r in got.items()}}


def _relative(value: Any, base: Path) -> Any:
    """Checkpoint paths relative to the results folder (no machine-specific paths in committed files)."""
    prefix = str(Path(base).resolve()) + "/"
    if isinstance(value, str):
        return value.replace(prefix, "")
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    return value


_ROWS = (
    ("krs", "KRS (causal-lm preset)"),
    ("fss", "FSS (token-level linear CKA)"),
    ("aoag", "token AOAg = mean exp(-KL)"),
    ("mean_kl", "mean KL(teacher ‖ student), nats"),
    ("js", "mean JS divergence, bits"),
    ("top1_agreement", "top-1 agreement"),
    ("topk_overlap", "top-5 overlap"),
    ("logprob_gap", "log-prob gap on the true token (teacher - student)"),
    ("teacher_perplexity", "teacher perplexity"),
    ("student_perplexity", "student perplexity"),
    ("perplexity_ratio", "retained ratio (teacher ppl / student ppl)"),
)


def demo_table(out: dict[str, Any]) -> str:
    """The before/after table (Markdown) from the ``demo.json`` dict."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    lines = []
    for mode, title in (("teacher_forced", f"teacher-forced, {out['dev_sentences']} SST-2 dev sentences"),
                        ("generated", f"greedy teacher continuations ({out['generate']['max_new_tokens']} new "
                                      f"tokens after the first {out['generate']['prompt_words']} words)")):
        tokens = out["before"][mode]["lm"]["num_tokens"]
        lines += [f"**{title}** ({tokens:,} counted tokens)", "",
                  "| measure | student before (LM loss) | student after (token KD) |", "|---|---|---|"]
        for key, label in _ROWS:
            b, a = out["before"][mode].get(key), out["after"][mode].get(key)
            if b is None:
                b, a = out["before"][mode]["lm"].get(key), out["after"][mode]["lm"].get(key)
            lines.append(f"| {label} | {fmt(b)} | {fmt(a)} |")
        lines.append("")
    timing = out.get("timing")
    if timing:
        bare = timing["bare_forward"]["cpu_s"]
        rows = (("bare_forward", "the two bare forward passes (teacher, student after; full logits, nothing kept)"),
                ("score_before", "scoring student before against the live teacher (`evaluate_pair`)"),
                ("score_after", "scoring student after against the live teacher (`evaluate_pair`)"),
                ("record", f"recording the teacher once (`record_teacher(top_k={out['recorded_teacher']['top_k']})`)"),
                ("score_recorded_both", "scoring both students against the recording (`evaluate_students`)"))
        lines += [f"**time, teacher-forced dev set** ({out['dev_sentences']} sentences, batches of "
                  f"{out.get('batch_size', 64)}; CPU time of the process over every thread, and wall clock). The bare "
                  "passes run the texts in their order, padded to each batch's longest, with logits at every "
                  "position, as a naive evaluation does; scoring groups texts of similar lengths and makes logits "
                  "only where a token is counted, which is why it can cost less.", "",
                  "| run | CPU (s) | wall (s) | CPU / bare forward passes |", "|---|---|---|---|"]
        for key, label in rows:
            t = timing[key]
            lines.append(f"| {label} | {t['cpu_s']:.1f} | {t['wall_s']:.1f} | {t['cpu_s'] / bare:.2f}x |")
        lines.append("")
    rec = out.get("recorded_teacher")
    if rec:
        lines += [f"**recorded teacher** (`record_teacher(top_k={rec['top_k']})`: top-{rec['top_k']} of {rec['vocab_size']:,} "
                  f"next tokens, {rec['bytes_per_token']:,.0f} bytes a token with the hidden states; mean tail mass "
                  f"{rec['mean_tail_mass']:.3f}), teacher-forced: recorded / live teacher. KL and JS can only be lower, "
                  "AOAg and KRS only higher; top-1 agreement is exact.", "",
                  "| measure | student before: recorded / live | student after: recorded / live |", "|---|---|---|"]
        for key, label in _ROWS[:6]:
            live = {n: out[n]["teacher_forced"] for n in ("before", "after")}
            cells = [f"{fmt(rec[n][key])} / {fmt(live[n].get(key, live[n]['lm'].get(key)))}" for n in ("before", "after")]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knowledge_retention.lm_demo", description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("train", "evaluate", "all"))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N train sentences")
    args = parser.parse_args(argv)
    if args.step in ("train", "all"):
        train_demo(args.out_dir, teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                   max_train=args.max_train)
    if args.step in ("evaluate", "all"):
        print(demo_table(evaluate_demo(args.out_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
