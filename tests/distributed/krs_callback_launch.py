"""Run by ``torchrun --nproc_per_node 2`` from ``tests/test_callbacks.py``: a ``transformers.Trainer``
under DDP (2 CPU processes, gloo) with :class:`KRSCallback`; each process scores its shard of the 19
evaluation texts and the sums are gathered. Writes ``<out_dir>/rank<k>.json`` (the logged values, the
world size) and, from rank 0, the final student to ``<out_dir>/student`` for a single-process check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import krs_extraction_fixtures as fx  # noqa: E402

EVAL_TEXTS = {"sentence": fx.sentences(19, seed=22), "label": [i % 2 for i in range(19)]}
OPTIONS = {"layers": "uniform", "pooling": "mean", "batch_size": 4, "label_column": "label"}


def main() -> None:
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from knowledge_retention import KRSCallback

    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", type=Path, required=True)
    out = parser.parse_args().out_dir
    torch.set_num_threads(1)
    tok = fx.bert_tokenizer()
    teacher = fx.tiny_bert(num_layers=4, hidden=48, seed=0)
    student = fx.tiny_bert(num_layers=2, hidden=32, seed=1).float().train()
    texts = fx.sentences(24, seed=21)
    enc = tok(texts, truncation=True, max_length=32)
    train = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                        "labels": [i % 2 for i in range(24)]})
    callback = KRSCallback(teacher, EVAL_TEXTS, tok, **OPTIONS)
    args = TrainingArguments(
        output_dir=str(out / "scratch"), max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3,
        eval_strategy="steps", eval_steps=2, save_strategy="no", report_to=[], use_cpu=True, logging_steps=2,
        disable_tqdm=True, seed=0, ddp_backend="gloo",
    )
    trainer = Trainer(model=student, args=args, train_dataset=train, eval_dataset=train.select(range(8)),
                      data_collator=DataCollatorWithPadding(tok), callbacks=[callback])
    trainer.train()
    rank = trainer.args.process_index
    evals = [{k: v for k, v in e.items() if k.startswith("eval_") or k == "step"}
             for e in trainer.state.log_history if "eval_loss" in e]
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world_size": trainer.args.world_size, "evals": evals, "history": callback.history,
        "num_processes": callback.last_result.options.get("num_processes") if callback.last_result else None,
    }))
    if rank == 0:
        trainer.model.save_pretrained(out / "student")


if __name__ == "__main__":
    main()
