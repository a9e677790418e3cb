"""SST-2 loading from TSV files, subsets, tokenisation with dynamic padding, and clear errors."""

from __future__ import annotations

import pytest

from knowledge_retention.distillation import data as sst2_data


def _write_tsv(folder, name, rows, header="sentence\tlabel"):
    folder.mkdir(parents=True, exist_ok=True)
    text = header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
    (folder / name).write_text(text, encoding="utf-8")


ROWS = [
    ("it 's a charming and often affecting journey . ", 1),
    ("null", 0),  # must stay a string, not a missing value
    ('he said " no " and left', 0),  # a stray quote must not swallow the next rows
    ("a gorgeous , witty , seductive movie .", 1),
]


def test_load_from_tmp_tsv(tmp_path):
    _write_tsv(tmp_path, "train.tsv", ROWS)
    _write_tsv(tmp_path, "dev.tsv", ROWS[:2])
    train = sst2_data.load_sst2("train", data_dir=tmp_path)
    assert train.column_names == ["sentence", "label"]
    assert train["sentence"] == [s for s, _ in ROWS]
    assert train["label"] == [1, 0, 0, 1]
    assert len(sst2_data.load_sst2("validation", data_dir=tmp_path)) == 2


def test_sst2_dir_environment_variable(tmp_path, monkeypatch):
    _write_tsv(tmp_path, "dev.tsv", ROWS)
    monkeypatch.setenv("SST2_DIR", str(tmp_path))
    assert sst2_data.find_sst2_dir() == tmp_path
    assert len(sst2_data.load_sst2("validation")) == 4


@pytest.mark.skipif(not (sst2_data.default_sst2_dir() / "dev.tsv").is_file(), reason="shared SST-2 data not present")
def test_shared_dev_tsv(monkeypatch):
    monkeypatch.delenv("SST2_DIR", raising=False)
    dev = sst2_data.load_sst2("validation")
    assert len(dev) == 872
    assert sorted(set(dev["label"])) == [0, 1]
    assert dev[0]["sentence"].strip() == "it 's a charming and often affecting journey ."
    assert dev[0]["label"] == 1


def test_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SST2_DIR", raising=False)
    with pytest.raises(ValueError, match="`data_dir` must be an existing directory"):
        sst2_data.load_sst2("train", data_dir=tmp_path / "missing")
    monkeypatch.setenv("SST2_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="`SST2_DIR` must be an existing directory"):
        sst2_data.load_sst2("train")
    with pytest.raises(ValueError, match="expected the SST-2 train split at .*train.tsv"):
        sst2_data.load_sst2("train", data_dir=tmp_path)
    _write_tsv(tmp_path, "train.tsv", [("x", 1)], header="text\tlabel")
    with pytest.raises(ValueError, match=r"missing \['sentence'\]"):
        sst2_data.load_sst2("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="`split` must be one of"):
        sst2_data.load_sst2("test", data_dir=tmp_path)


def test_subset_is_seeded_and_nested():
    pool = sst2_data.synthetic_sentiment(100, seed=0)
    a, b = sst2_data.subset(pool, 10, seed=3), sst2_data.subset(pool, 10, seed=3)
    assert a["sentence"] == b["sentence"]
    assert sst2_data.subset(pool, 20, seed=3)["sentence"][:10] == a["sentence"]
    assert sst2_data.subset(pool, None) is pool
    with pytest.raises(ValueError, match=r"`size` must be in \[1, 100\]"):
        sst2_data.subset(pool, 101)
    with pytest.raises(TypeError, match="`size` must be an int"):
        sst2_data.subset(pool, 1.5)


def test_tokenize_and_dynamic_padding(tokenizer):
    pool = sst2_data.synthetic_sentiment(8, seed=0)
    encoded = sst2_data.tokenize_dataset(pool, tokenizer, max_length=8)
    assert set(encoded.column_names) >= {"input_ids", "attention_mask", "label", "idx"}
    assert "sentence" not in encoded.column_names
    assert encoded["idx"] == list(range(8))
    assert max(len(ids) for ids in encoded["input_ids"]) <= 8
    rows = [encoded[i] for i in range(4)]
    batch = sst2_data.make_collator(tokenizer)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (4, longest)  # padded to the batch's longest, not to max_length
    assert batch["labels"].tolist() == [r["label"] for r in rows]
    with pytest.raises(ValueError, match="`dataset` must have columns"):
        sst2_data.tokenize_dataset(pool.rename_column("sentence", "text"), tokenizer)
