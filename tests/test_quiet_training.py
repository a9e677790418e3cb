"""The first run of the main job trains the default pair: no raw Trainer log dicts and no "Writing model
shards" bars on the terminal (the training bar stays; the losses stay in ``log_history``)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from knowledge_retention.distillation.runs import make_training_args, run_training, save_run  # noqa: E402


class _Rows(torch.utils.data.Dataset):  # type: ignore[misc]
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"input_ids": torch.tensor([101, 7 + i, 102]), "attention_mask": torch.ones(3, dtype=torch.long),
                "labels": torch.tensor(i % 2)}


def test_training_prints_no_log_dicts_and_saving_no_shard_bars(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = transformers.BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    args = make_training_args(tmp_path / "run", learning_rate=1e-3, epochs=1, batch_size=4, seed=0, logging_steps=1,
                              progress=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Rows())
    result = run_training(trainer)
    save_run(trainer, tmp_path / "model", {"seed": 0})
    out, err = capfd.readouterr()
    assert len(result["log"]) >= 2  # the losses are kept ...
    assert "{'loss'" not in out + err and "'loss':" not in out + err  # ... and not printed
    assert "Writing model shards" not in out + err
    assert (tmp_path / "model" / "config.json").is_file()
