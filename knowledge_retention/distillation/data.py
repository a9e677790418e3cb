"""SST-2 loading, subsetting and tokenisation with dynamic padding.

Where the data comes from, in order: the ``data_dir`` argument, the ``SST2_DIR`` environment
variable, ``<repo root>/../shared/data/sst2`` when it exists (GLUE's ``train.tsv`` / ``dev.tsv`` with a
``sentence\\tlabel`` header), otherwise ``datasets.load_dataset("glue", "sst2")`` (needs the Hub).
The data files are never part of the repository.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any, Literal

from .._validation import InputError, InputTypeError

__all__ = [
    "MAX_LENGTH",
    "SPLIT_FILES",
    "default_sst2_dir",
    "find_sst2_dir",
    "load_sst2",
    "make_collator",
    "subset",
    "synthetic_sentiment",
    "tokenize_dataset",
]

Split = Literal["train", "validation"]
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
MAX_LENGTH = 64
_COLUMNS = ("sentence", "label")


def default_sst2_dir() -> Path:
    """``<repo root>/../shared/data/sst2``, resolved from this file's location (may not exist)."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data" / "sst2"


def find_sst2_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local SST-2 directory to use, or ``None`` when only the online GLUE path is left.

    Args:
        data_dir: explicit directory; wins over ``$SST2_DIR`` and the shared default.

    Returns:
        An existing directory, or ``None``.

    Raises:
        ValueError: if ``data_dir`` or ``$SST2_DIR`` is given but is not a directory.
    """
    for source, value in (("data_dir", data_dir), ("SST2_DIR", os.environ.get("SST2_DIR") or None)):
        if value is not None:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise InputError(f"`{source}` must be an existing directory holding train.tsv/dev.tsv, got {str(path)!r}")
            return path
    shared = default_sst2_dir()
    return shared if shared.is_dir() else None


def load_sst2(split: Split, *, data_dir: str | os.PathLike[str] | None = None) -> Any:
    """Load one SST-2 split as a ``datasets.Dataset`` with columns ``sentence`` (str) and ``label`` (int).

    Args:
        split: ``"train"`` (``train.tsv``) or ``"validation"`` (``dev.tsv``).
        data_dir: directory with the GLUE TSV files; see the module docstring for the fallbacks.

    Returns:
        ``datasets.Dataset``.

    Raises:
        ValueError: for an unknown split, a missing directory or file, or missing columns.
    """
    if split not in SPLIT_FILES:
        raise InputError(f"`split` must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    import datasets

    directory = find_sst2_dir(data_dir)
    if directory is None:
        dataset = datasets.load_dataset("glue", "sst2", split=split)
        return dataset.select_columns(list(_COLUMNS))
    path = directory / SPLIT_FILES[split]
    if not path.is_file():
        raise InputError(f"expected the SST-2 {split} split at {str(path)!r}, but the file does not exist")
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"{str(path)!r} must have a tab-separated header with columns {list(_COLUMNS)}, "
            f"got {header}; missing {missing}"
        )
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.Value("int64")})
    dataset = datasets.load_dataset(
        "csv",
        data_files={split: str(path)},
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,  # a sentence such as "null" must stay a string
        usecols=list(_COLUMNS),
        features=features,
        split=split,
    )
    return dataset


def subset(dataset: Any, size: int | None, *, seed: int = 42) -> Any:
    """A fixed random subset of ``size`` examples (shuffled with ``seed``); ``None`` keeps everything.

    Args:
        dataset: ``datasets.Dataset``.
        size: number of examples, ``1 <= size <= len(dataset)``, or ``None``.
        seed: shuffling seed; the same seed gives the same subset, and a smaller size gives a prefix
            of a larger one.

    Returns:
        ``datasets.Dataset``.
    """
    if size is None:
        return dataset
    if isinstance(size, bool) or not isinstance(size, int):
        raise InputTypeError(f"`size` must be an int or None, got {type(size).__name__}")
    if not 1 <= size <= len(dataset):
        raise InputError(f"`size` must be in [1, {len(dataset)}] (the dataset size), got {size}")
    return dataset.shuffle(seed=seed).select(range(size))


def tokenize_dataset(dataset: Any, tokenizer: Any, *, max_length: int = MAX_LENGTH) -> Any:
    """Tokenise ``sentence`` (truncated to ``max_length``, unpadded) and add a positional ``idx``.

    Padding happens per batch in :func:`make_collator` (dynamic padding). ``idx`` is the row number
    in ``dataset``; the distillation trainer uses it to look up cached teacher outputs.

    Args:
        dataset: ``datasets.Dataset`` with ``sentence`` and ``label`` columns.
        tokenizer: a ``transformers`` tokenizer.
        max_length: maximum number of tokens, including [CLS] and [SEP].

    Returns:
        ``datasets.Dataset`` with ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the
        tokenizer makes them), ``label`` and ``idx``.
    """
    missing = [c for c in _COLUMNS if c not in dataset.column_names]
    if missing:
        raise InputError(f"`dataset` must have columns {list(_COLUMNS)}, got {dataset.column_names}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise InputError(f"`max_length` must be an int >= 3, got {max_length!r}")

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=max_length)
        return {**encoded, "idx": indices}

    drop = [c for c in dataset.column_names if c not in ("label",)]
    return dataset.map(encode, batched=True, with_indices=True, remove_columns=drop, desc="tokenize")


def make_collator(tokenizer: Any) -> Any:
    """``DataCollatorWithPadding``: pads each batch to its longest sentence (renames ``label`` -> ``labels``)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer=tokenizer)


_POSITIVE = ["good", "great", "wonderful", "moving", "funny", "charming", "brilliant", "delightful"]
_NEGATIVE = ["bad", "dull", "boring", "awful", "tedious", "clumsy", "lifeless", "painful"]
_FRAMES = [
    "a {} film .",
    "the story is {} and the acting is {} .",
    "it 's a {} movie from start to finish .",
    "{} , {} , and ultimately {} .",
    "what a {} way to spend two hours .",
]


def synthetic_sentiment(size: int, *, seed: int = 0) -> Any:
    """Templated SST-2-like sentences (label 1 = positive), for smoke runs and tests without SST-2.

    Args:
        size: number of examples.
        seed: random seed.

    Returns:
        ``datasets.Dataset`` with columns ``sentence`` and ``label``.
    """
    import datasets

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"`size` must be an int >= 1, got {size!r}")
    rng = random.Random(seed)
    sentences, labels = [], []
    for _ in range(size):
        label = rng.randint(0, 1)
        words = _POSITIVE if label else _NEGATIVE
        frame = rng.choice(_FRAMES)
        sentences.append(frame.format(*(rng.choice(words) for _ in range(frame.count("{}")))))
        labels.append(label)
    return datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
