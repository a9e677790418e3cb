"""Scenario ``callback``: a ``transformers.Trainer`` under DDP (2 CPU processes, gloo) with
:class:`KRSCallback`, for ``tests/test_callbacks.py::test_krs_callback_under_ddp_gathers_the_shards``;
each process scores its shard of the 19 evaluation texts and the sums are gathered. Returns the logged
values and the world size per process and, from rank 0, saves the final student to ``<out_dir>/student``
for a single-process check.
"""

from __future__ import annotations

from pathlib import Path

import text_fixtures as fx

from distributed import scenario

EVAL_TEXTS = {"sentence": fx.sentences(19, seed=22), "label": [i % 2 for i in range(19)]}
OPTIONS = {"layers": "uniform", "pooling": "mean", "batch_size": 4, "label_column": "label"}


@scenario("callback")
def main(out: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from knowledge_retention import KRSCallback

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
    evals = [{k: v for k, v in e.items() if k.startswith("eval_") or k == "step"}
             for e in trainer.state.log_history if "eval_loss" in e]
    if trainer.args.process_index == 0:
        trainer.model.save_pretrained(out / "student")
    return {
        "world_size": trainer.args.world_size, "evals": evals, "history": callback.history,
        "num_processes": callback.last_result.options.get("num_processes") if callback.last_result else None,
    }
