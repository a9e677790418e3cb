"""KRS during training: a student distilled with ``transformers.Trainer`` and :class:`KRSCallback`.

Teacher: the main job's SST-2 teacher (all-MiniLM-L6-v2 fine-tuned on 4,000 SST-2 sentences, the
cached default pair). Student: 3 layers (blocks 0, 2, 4) of the *pretrained* MiniLM with a new random
classification head, so it starts far from the teacher. Loss: vanilla KD, ``0.5 * CE(labels) +
0.5 * T^2 KL(teacher_T || student_T)`` with T = 2, the teacher run live under ``no_grad``. AdamW,
lr 1e-4, batch 32, on the first ``--train`` SST-2 training sentences. Every ``--eval-steps`` steps the
Trainer evaluates on SST-2 dev (its loss and accuracy) and the callback adds ``eval_krs``,
``eval_fss``, ``eval_aoag`` and the per-layer CKA of the uniform layer map (``layers="uniform"``).

Writes ``results/krs_during_training/history.json`` (the Trainer's ``log_history``) and
``krs_during_training.png``::

    python benchmarks/krs_during_training.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extraction_overhead as eo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "krs_during_training"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000, help="SST-2 training sentences")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eval-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--teacher", type=Path, help="an SST-2 teacher folder (default: the main job's, trained if needed)")
    args = parser.parse_args()

    import datasets
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from knowledge_retention import KRSCallback
    from knowledge_retention.distillation.defaults import ensure_default_pair
    from knowledge_retention.distillation.pretrained import minilm_dir
    from knowledge_retention.distillation.students import every_other_layer_student

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher_dir = str(args.teacher) if args.teacher else ensure_default_pair(progress=False)["teacher"]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    pretrained = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    student = every_other_layer_student(pretrained, 3)
    train_cols = eo.read_sst2("train.tsv", args.train)
    dev_cols = eo.read_sst2("dev.tsv", 872)

    def tokenised(cols: dict[str, list[Any]]) -> Any:
        enc = tok(cols["sentence"], truncation=True, max_length=64)
        return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                           "token_type_ids": enc["token_type_ids"], "labels": cols["label"]})

    class KDTrainer(Trainer):  # type: ignore[misc]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any) -> Any:
            labels = inputs["labels"]
            outputs = model(**inputs)
            if not model.training:  # evaluation: the plain CE loss
                return (outputs.loss, outputs) if return_outputs else outputs.loss
            with torch.no_grad():
                t_logits = teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            temp = 2.0
            kd = F.kl_div(F.log_softmax(outputs.logits / temp, -1), F.softmax(t_logits / temp, -1),
                          reduction="batchmean") * temp * temp
            loss = 0.5 * F.cross_entropy(outputs.logits, labels) + 0.5 * kd
            return (loss, outputs) if return_outputs else loss

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.argmax(pred.predictions, -1) == pred.label_ids))}

    callback = KRSCallback(teacher, dev_cols, tok, layers="uniform", label_column="label", batch_size=32)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    training = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=args.epochs, per_device_train_batch_size=32,
        per_device_eval_batch_size=32, learning_rate=1e-4, warmup_steps=6, weight_decay=0.01, eval_strategy="steps",
        eval_steps=args.eval_steps, logging_steps=args.eval_steps, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, seed=0, metric_for_best_model="krs",
    )
    trainer = KDTrainer(model=student, args=training, train_dataset=tokenised(train_cols),
                        eval_dataset=tokenised(dev_cols), data_collator=DataCollatorWithPadding(tok),
                        compute_metrics=accuracy, callbacks=[callback])
    tick = time.perf_counter()
    trainer.evaluate()  # the student before training: printed, but train() starts a new log_history, so not drawn
    trainer.train()
    seconds = time.perf_counter() - tick
    history = [e for e in trainer.state.log_history if "eval_krs" in e]
    payload = {
        # the teacher's folder is named by what it is, not by this machine's path
        "command": "python benchmarks/krs_during_training.py"
                   + "".join(f" {a}" for a in sys.argv[1:] if a != str(args.teacher))
                   .replace(" --teacher", " --teacher <main job's teacher>"),
        "teacher": "default pair teacher (all-MiniLM-L6-v2 fine-tuned on 4,000 SST-2 sentences)",
        "student": "3 blocks (0, 2, 4) of pretrained all-MiniLM-L6-v2, new random head; vanilla KD (T = 2, 0.5/0.5)",
        "train_sentences": args.train, "epochs": args.epochs, "eval_steps": args.eval_steps,
        "wall_seconds": seconds, "evaluations": history, "log_history": trainer.state.log_history,
        "callback_seconds_per_evaluation_note": "see benchmarks/results/teacher_once.md for the callback's cost",
    }
    (out / "history.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    plot(history, out / "krs_during_training.png")
    print(f"{len(history)} evaluations in {seconds:.0f} s; final KRS {history[-1]['eval_krs']:.3f}")


def plot(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for key, label, style in (("eval_krs", "KRS", "-o"), ("eval_fss", "FSS (mean CKA, uniform layers)", "--s"),
                              ("eval_aoag", "AOAg (mean exp(−KL))", ":^"), ("eval_accuracy", "dev accuracy", "-.d")):
        if all(key in e for e in history):
            left.plot(steps, [e[key] for e in history], style, label=label, markersize=4)
    left.set_xlabel("training step")
    left.set_ylabel("score (higher is better)")
    left.set_title("KRS during distillation (SST-2 dev, 872 sentences)")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    cka_keys = sorted({k for e in history for k in e if k.startswith("eval_cka_")})
    for key in cka_keys:
        t, s = key.removeprefix("eval_cka_").split("_")
        right.plot(steps, [e[key] for e in history], "-o", markersize=3,
                   label=f"teacher layer {t[1:]} vs student layer {s[1:]}")
    right.set_xlabel("training step")
    right.set_ylabel("linear CKA of the [CLS] state")
    right.set_title("Per-layer CKA (uniform layer map)")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
