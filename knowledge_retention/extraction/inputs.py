"""What goes into the models: texts read batch by batch, each model with its own tokenizer.

* :class:`TextSource` reads a ``datasets.Dataset``, a list of strings or a dict of columns by
  example index, so only one batch of texts is materialised at a time (an Arrow-backed dataset
  stays on disk).
* :func:`load_model` / :func:`load_tokenizer` accept objects or local paths / hub names.
* :class:`ModelRunner` tokenises a batch for one model (dynamic padding, truncation at the model's
  limit, counted), runs it with ``output_hidden_states=True`` and returns hidden states and logits.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import InputError, InputTypeError, LoadError

__all__ = ["ModelOutputs", "ModelRunner", "TextSource", "hub_unreachable", "load_model", "load_tokenizer", "model_config",
           "model_max_length"]

# Model families whose position ids start after the padding index and are derived from the input ids
# themselves (so they must not be overridden, and the usable length is shorter by that offset).
_PADDING_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "ibert", "data2vec-text",
     "roberta-prelayernorm", "luke", "mpnet"}
)
_NO_LIMIT = 1_000_000  # tokenizers without a real limit report 1e30
#: Files that hold a tokenizer in a saved model folder (one is enough).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model", "merges.txt")


def read_rows(arrow: Any, columns: Mapping[str, Sequence[Any]] | None, value_column: str, label_column: str | None,
              indices: Sequence[int]) -> tuple[list[Any], list[Any] | None]:
    """The values and labels (None without a label column) of the given example indices, from an Arrow
    dataset (``arrow``) or a dict of columns (``columns``): what the text and image sources read."""
    if arrow is not None:
        rows = arrow[list(indices)]
        return list(rows[value_column]), list(rows[label_column]) if label_column else None
    assert columns is not None
    values = [columns[value_column][i] for i in indices]
    return values, [columns[label_column][i] for i in indices] if label_column else None


class TextSource:
    """Random access to the texts (and optional labels) of a dataset, by example index.

    Args:
        dataset: a ``datasets.Dataset``, a list of strings, or a dict of equal-length columns.
        text_column: the column holding the input texts (ignored for a list of strings).
        label_column: optional column of labels (ints or floats).
        max_examples: keep only the first ``max_examples`` examples.

    Raises:
        TypeError: an unsupported dataset type (a ``DatasetDict`` must be indexed by split first).
        ValueError: a missing column (the available ones are listed), columns of unequal length,
            or an empty dataset.
    """

    def __init__(
        self,
        dataset: Any,
        text_column: str = "sentence",
        label_column: str | None = None,
        max_examples: int | None = None,
    ) -> None:
        self.text_column = text_column
        self.label_column = label_column
        self._arrow = None
        self._columns: Mapping[str, Sequence[Any]] | None = None
        try:
            import datasets

            if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
                raise InputTypeError(
                    f"`dataset` is a DatasetDict with splits {sorted(dataset)}; pass one split, e.g. "
                    f"dataset[{sorted(dataset)[0]!r}]."
                )
            if isinstance(dataset, datasets.IterableDataset):
                raise InputTypeError("`dataset` is an IterableDataset; pass a map-style datasets.Dataset (it needs a length).")
            is_arrow = isinstance(dataset, datasets.Dataset)
        except ImportError:  # pragma: no cover - datasets is an extra
            is_arrow = False
        if is_arrow:
            self._check_columns(list(dataset.column_names))
            self._check_text_feature(dataset.features.get(text_column))
            self._check_label_feature(dataset.features.get(label_column) if label_column else None)
            wanted = [text_column] + ([label_column] if label_column else [])
            self._arrow = dataset.select_columns(wanted)
            length = len(dataset)
        elif isinstance(dataset, Mapping):
            self._check_columns(list(dataset))
            lengths = {name: len(dataset[name]) for name in dataset}
            if len(set(lengths.values())) > 1:
                raise InputError(f"`dataset` columns must have the same length, got {lengths}.")
            self._columns = dataset
            length = len(dataset[text_column])
        elif isinstance(dataset, Sequence) and not isinstance(dataset, (str, bytes)):
            if label_column is not None:
                raise InputError(
                    f"`label_column={label_column!r}` was given but `dataset` is a plain list of texts; pass a "
                    "dict of columns or a datasets.Dataset to provide labels."
                )
            self._columns = {text_column: dataset}
            length = len(dataset)
        else:
            raise InputTypeError(
                "`dataset` must be a datasets.Dataset, a list of strings or a dict of columns, got "
                f"{type(dataset).__name__}."
            )
        if max_examples is not None:
            length = min(length, max_examples)
        if length == 0:
            raise InputError("`dataset` is empty: there are no examples to evaluate.")
        self.length = length

    def _check_columns(self, available: list[str]) -> None:
        for role, name in (("text_column", self.text_column), ("label_column", self.label_column)):
            if name is not None and not isinstance(name, str):
                raise InputTypeError(f"`{role}` must be a column name (str), got {type(name).__name__}.")
            if name is not None and name not in available:
                raise InputError(f"`{role}={name!r}` is not a column of `dataset`; available columns: {available}.")

    def _check_text_feature(self, feature: Any) -> None:
        """An Arrow column of numbers (a CSV's numeric column) is refused before any batch is read."""
        dtype = getattr(feature, "dtype", None)
        if dtype is not None and dtype not in ("string", "large_string", "null"):
            raise InputTypeError(
                f"`text_column={self.text_column!r}` holds {dtype} values, not texts; name the column of input "
                "texts."
            )

    def _check_label_feature(self, feature: Any) -> None:
        """Labels that are words (``pos``/``neg``) are refused before any model runs."""
        dtype = getattr(feature, "dtype", None)
        if dtype in ("string", "large_string"):
            raise InputTypeError(
                f"`label_column={self.label_column!r}` holds strings; labels must be integer class ids (or numbers "
                "for regression) in the order of the models' outputs."
            )

    def __len__(self) -> int:
        return self.length

    def batch(self, indices: Sequence[int]) -> tuple[list[str], list[Any] | None]:
        """The texts and labels (None without a label column) of the given example indices."""
        texts, labels = read_rows(self._arrow, self._columns, self.text_column, self.label_column, indices)
        for i, text in zip(indices, texts, strict=True):
            if not isinstance(text, str):
                what = "empty (a missing value)" if text is None else f"a {type(text).__name__} ({text!r:.40})"
                raise InputTypeError(
                    f"`dataset[{self.text_column!r}]` must hold strings; example {i} is {what}. Every example needs "
                    "a text in the column that `text_column` names."
                )
        if labels is not None:
            missing = [i for i, label in zip(indices, labels, strict=True) if label is None]
            if missing:
                raise InputError(f"`label_column={self.label_column!r}`: example {missing[0]} has no label (a missing "
                                 f"value; {len(missing)} in this batch); give every example a label or leave "
                                 "`label_column` unset.")
        return list(texts), labels


class _NoModelFolder(LoadError, FileNotFoundError):
    """A model path that names no folder (and is not a Hub name that could be tried)."""


def hub_unreachable(offline_variables: Sequence[str] = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")) -> str | None:
    """Why the Hugging Face Hub cannot be used now (one of ``offline_variables`` set, or no connection
    within 3 s), or None."""
    for name in offline_variables:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=3):
            return None
    except OSError as err:
        return f"{endpoint.hostname} is unreachable ({err.__class__.__name__})"


def _load_failures() -> tuple[type[BaseException], ...]:
    failures: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError]
    try:
        from safetensors import SafetensorError

        failures.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        pass
    import pickle

    failures.append(pickle.UnpicklingError)
    return tuple(failures)


#: What ``from_pretrained`` raises for a checkpoint that is damaged or does not match its config (a truncated
#: ``model.safetensors``: SafetensorError; a truncated ``.bin``: RuntimeError/EOFError/UnpicklingError).
LOAD_FAILURES = _load_failures()

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def model_config(model: str | os.PathLike[str], argument: str, *, trust_remote_code: bool = False) -> Any:
    """The ``transformers`` config of a model folder or Hub name, read before any weight is loaded.

    A path that names no folder is said to be one (a relative path is not sent to the Hub unless it is a
    valid Hub name and the Hub can be reached); a folder without ``config.json`` is not a model.

    Raises:
        LoadError: naming ``argument`` (a ``FileNotFoundError`` too when the path names nothing).
    """
    from transformers import AutoConfig

    path = os.fspath(model)
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "config.json")):
            found = sorted(os.listdir(local))[:8]
            raise LoadError(f"`{argument}`: the folder {path} is not a model: it has no config.json (it holds "
                            f"{found or 'nothing'}); give the folder written by save_pretrained().")
        try:
            return AutoConfig.from_pretrained(local, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise LoadError(f"`{argument}`: {path}/config.json is not a transformers model config: "
                            f"{_first_line(err)}") from None
    if os.path.exists(local):
        raise LoadError(f"`{argument}`: {path} is a file; give the model's folder (the one with config.json) "
                        "or a Hub name.")
    if os.path.isabs(path) or path.startswith((".", "~")) or not _REPO_ID.match(path):
        # say it plainly instead of huggingface_hub's "Repo id must be in the form ..."
        raise _NoModelFolder(f"`{argument}`: there is no model folder at {path}.")
    try:  # a Hub name already in the local cache loads without the network
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError):
        pass
    reason = hub_unreachable()
    if reason is not None:
        raise _NoModelFolder(f"`{argument}`: there is no model folder at {path} (relative to {os.getcwd()}), and "
                             f"it cannot be looked up as a Hub model name: {reason}.")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _NoModelFolder(f"`{argument}`: there is no model folder at {path} (relative to {os.getcwd()}), and "
                             f"the Hub gave no model of that name: {_first_line(err)}") from None


def load_model(
    model: Any, role: str, *, trust_remote_code: bool = False, argument: str | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
) -> tuple[torch.nn.Module, str | None, bool]:
    """A model object as is, or a local path / hub name loaded with its classification head if it has one.

    A checkpoint whose ``config.architectures`` names a ``*ForSequenceClassification`` class is
    loaded with ``AutoModelForSequenceClassification``; anything else with ``AutoModel`` (a random
    classification head would make the output agreement meaningless): FSS only, said in the notes.

    Args:
        model: a ``torch.nn.Module`` or a path / hub name.
        role: ``"teacher"`` or ``"student"`` (for error messages).
        trust_remote_code: passed to ``from_pretrained``.
        argument: the argument's name in error messages (default: ``role``).
        load_kwargs: more keyword arguments of ``from_pretrained`` (``device_map``, ``max_memory``,
            ``offload_folder``: accelerate's big-model inference for a teacher larger than the device).

    Returns:
        ``(model, path, loaded_without_head)``; ``path`` is None for objects without a
        ``name_or_path``.

    Raises:
        InputTypeError: ``model`` is neither a module nor a path.
        LoadError: no such folder, a folder that is not a model, weights that do not load.
    """
    argument = argument or role
    if isinstance(model, torch.nn.Module):
        name = getattr(getattr(model, "config", None), "name_or_path", None) or None
        return model, name, False
    if not isinstance(model, (str, os.PathLike)):
        raise InputTypeError(
            f"`{argument}` must be a torch.nn.Module or a local path / hub name, got {type(model).__name__}."
        )
    from transformers import AutoModel, AutoModelForSequenceClassification

    path = os.fspath(model)
    config = model_config(path, argument, trust_remote_code=trust_remote_code)
    local = os.path.expanduser(path)
    source = local if os.path.isdir(local) else path
    architectures = getattr(config, "architectures", None) or []
    try:
        if any(str(a).endswith("ForSequenceClassification") for a in architectures):
            try:
                loaded = AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                                            **(load_kwargs or {}))
                return loaded, path, False
            except ValueError:  # the config's model type has no sequence-classification class
                pass
        return AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, **(load_kwargs or {})), path, True
    except LOAD_FAILURES as err:  # damaged or inconsistent weights: the checkpoint's fault, named as such
        raise LoadError(f"`{argument}`: the model at {path} could not be loaded: {_first_line(err)}") from None


def load_tokenizer(
    tokenizer: Any, path: str | None, role: str, *, trust_remote_code: bool = False, argument: str | None = None
) -> Any:
    """The given tokenizer, or ``AutoTokenizer.from_pretrained(path)``.

    ``argument`` names the tokenizer argument in error messages (default ``<role>_tokenizer``).

    Raises:
        TypeError: no tokenizer was given and the model has no path to load one from.
    """
    argument = argument or f"{role}_tokenizer"
    if tokenizer is not None:
        if not callable(tokenizer):
            raise InputTypeError(f"`{argument}` must be a transformers tokenizer, got {type(tokenizer).__name__}.")
        return tokenizer
    if not path:
        raise InputTypeError(
            f"`{argument}` is required: the {role} model object has no `config.name_or_path` to load "
            "its tokenizer from."
        )
    from transformers import AutoTokenizer

    model_argument = argument.replace("_tokenizers[", "s[").removesuffix("_tokenizer")
    local = os.path.expanduser(path)
    if os.path.isdir(local) and not any(os.path.isfile(os.path.join(local, name)) for name in _TOKENIZER_FILES):
        # transformers would build an empty tokenizer from the config alone: every word would be [UNK]
        raise LoadError(f"`{model_argument}`: {path} holds no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
                        f"save the tokenizer with the model (tokenizer.save_pretrained) or pass `{argument}`.")
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise LoadError(f"`{model_argument}`: no tokenizer loads from {path} ({_first_line(err)}); save the "
                        f"tokenizer with the model (tokenizer.save_pretrained) or pass `{argument}`.") from None


def model_max_length(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """The longest input the model accepts: the tokenizer's ``model_max_length`` and the config's
    position embeddings, whichever is smaller; None when neither is known."""
    limits: list[int] = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _NO_LIMIT:
        limits.append(tok_limit)
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", None) in _PADDING_OFFSET_POSITIONS:
            positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
        limits.append(positions)
    return min(limits) if limits else None


@dataclass
class ModelOutputs:
    """One model's outputs for a batch: every hidden state ``(B, T, D)``, the mask ``(B, T)``, logits ``(B, C)``."""

    hidden_states: tuple[torch.Tensor, ...]
    attention_mask: torch.Tensor
    logits: torch.Tensor | None


@dataclass
class ModelRunner:
    """Tokenises and runs one model on batches of texts.

    Args:
        model: the model (already on its device, in eval mode).
        tokenizer: its tokenizer; a missing pad token is set to the EOS token (GPT-2), and the
            model's ``config.pad_token_id`` follows when unset.
        role: ``"teacher"`` or ``"student"`` (or ``"student 'name'"``), for messages.
        max_length: user truncation length (None: the model's own limit).
        device: where the inputs go.
        tokenizer_arg: the tokenizer's argument name in messages (default ``<role>_tokenizer``).
    """

    model: torch.nn.Module
    tokenizer: Any
    role: str
    max_length: int | None
    device: torch.device
    tokenizer_arg: str | None = None
    limit: int | None = field(init=False)
    limit_source: str = field(init=False)
    num_truncated: int = field(init=False, default=0)
    tokenize_s: float = field(init=False, default=0.0)
    forward_s: float = field(init=False, default=0.0)
    _input_names: frozenset[str] | None = field(init=False)
    _left_positions: bool = field(init=False)

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "pad_token", None) is None:
            eos = getattr(self.tokenizer, "eos_token", None)
            if eos is None:
                raise InputError(
                    f"`{self.tokenizer_arg or self.role + '_tokenizer'}` has neither a pad token nor an EOS token to pad with; set "
                    "tokenizer.pad_token before evaluating."
                )
            self.tokenizer.pad_token = eos
        config = getattr(self.model, "config", None)
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        model_limit = model_max_length(self.model, self.tokenizer)
        if self.max_length is not None and (model_limit is None or self.max_length <= model_limit):
            self.limit, self.limit_source = self.max_length, "max_length"
        else:
            self.limit, self.limit_source = model_limit, "model"
        params = inspect.signature(self.model.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self._input_names = None if takes_any else frozenset(params)
        # Decoders like GPT-2 number positions 0..T-1 regardless of the mask: under left padding,
        # give the real tokens the positions they would have alone.
        self._left_positions = (
            getattr(self.tokenizer, "padding_side", "right") == "left"
            and "position_ids" in params
            and getattr(config, "model_type", None) not in _PADDING_OFFSET_POSITIONS
        )

    def reset_counters(self) -> None:
        """Zeroes the truncation count and the timers (after the probe batch)."""
        self.num_truncated, self.tokenize_s, self.forward_s = 0, 0.0, 0.0

    def __call__(self, texts: list[str], indices: Sequence[int]) -> ModelOutputs:
        """Runs a batch (the caller holds ``torch.inference_mode`` and any autocast)."""
        start = time.perf_counter()
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=self.limit is not None,
            max_length=self.limit,
            return_tensors="pt",
        )
        if self.limit is not None:
            self.num_truncated += self._count_truncated(encoded, texts)
        mask = encoded["attention_mask"]
        empty = (mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise InputError(
                f"Example(s) {[indices[i] for i in empty]} tokenise to zero tokens for the {self.role}: "
                "empty texts cannot be evaluated."
            )
        inputs = {k: v for k, v in encoded.items() if self._input_names is None or k in self._input_names}
        if self._left_positions:
            inputs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        tokenized = time.perf_counter()
        outputs = self.model(**inputs, output_hidden_states=True, return_dict=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.tokenize_s += tokenized - start
        self.forward_s += time.perf_counter() - tokenized
        hidden = getattr(outputs, "hidden_states", None)
        if hidden is None and isinstance(outputs, Mapping):
            hidden = outputs.get("hidden_states")
        if not hidden:
            raise InputError(
                f"The {self.role} model returned no hidden states with output_hidden_states=True "
                f"({type(self.model).__name__}); pass a transformers model (or one whose forward returns "
                "`hidden_states`)."
            )
        logits = getattr(outputs, "logits", None)
        return ModelOutputs(tuple(hidden), inputs["attention_mask"], logits)

    def _count_truncated(self, encoded: Any, texts: list[str]) -> int:
        encodings = getattr(encoded, "encodings", None)
        if encodings:  # fast tokenizers keep what truncation cut off
            return sum(1 for enc in encodings if enc.overflowing)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        return int(np.sum(np.asarray(lengths) > (self.limit or 0)))
