"""Reading and validating the arrays a visitor uploads to the Space.

What an upload may hold (one ``.npz`` / ``.safetensors`` with several arrays, or several files;
a ``.npy`` holds one array and is named after its key, e.g. ``teacher_features.npy``):

==========================  ===========================================  =========
key                         shape                                        required
==========================  ===========================================  =========
``teacher_features``        ``(N, D_t)`` one layer, ``(N, L, D_t)`` L    yes
``student_features``        ``(N, D_s)`` or ``(N, L, D_s)``              yes
``teacher_logits``          ``(N, C)`` logits; ``(N,)``/``(N, K)``       yes
                            regression outputs; ``(N, H, W)`` label
                            maps (segmentation). Alias
                            ``teacher_outputs``.
``student_logits``          same layout as the teacher's. Alias          yes
                            ``student_outputs``.
``labels``                  ``(N,)`` integer class ids (regression:      no
                            ``(N,)``/``(N, K)`` targets)
``layer_map``               ``(L_s,)`` integers: the teacher layer       no
                            paired with each student layer
``ignore_index``            one integer (``np.savez(..., ignore_index=    no
                            255)``): segmentation's void label, whose
                            pixels are left out of the IoU
==========================  ===========================================  =========

Layers of different widths can be given as numbered keys instead: ``teacher_features_0``,
``teacher_features_1``, ... (also ``teacher_features.0``).

Pickles are never loaded: ``np.load(..., allow_pickle=False)``; object arrays are refused.
Nothing here computes a score: it turns files into validated arrays for ``knowledge_retention``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knowledge_retention._io import read_arrays
from knowledge_retention._validation import InputError, as_layers, check_num_examples

__all__ = [
    "ALIASES",
    "MAX_ARRAY_BYTES",
    "MAX_UPLOAD_BYTES",
    "REQUIRED_KEYS",
    "SUPPORTED_SUFFIXES",
    "ArrayInputs",
    "InputError",
    "parse_arrays",
    "read_array_file",
    "read_array_files",
    "synthetic_example",
]

#: Largest accepted upload, per request (all files together). Override with ``KRS_MAX_UPLOAD_MB``.
MAX_UPLOAD_BYTES = int(float(os.environ.get("KRS_MAX_UPLOAD_MB", "200")) * 1024**2)
#: Largest total size of the arrays once decompressed (a small ``.npz`` can inflate a lot).
MAX_ARRAY_BYTES = 4 * MAX_UPLOAD_BYTES  # the CLI's `arrays` default too (knowledge_retention._io.DEFAULT_MAX_ARRAY_BYTES)
SUPPORTED_SUFFIXES: tuple[str, ...] = (".npz", ".npy", ".safetensors")
REQUIRED_KEYS: tuple[str, ...] = ("teacher_features", "student_features", "teacher_logits", "student_logits")
OPTIONAL_KEYS: tuple[str, ...] = ("labels", "layer_map", "ignore_index")
#: Alternative names accepted for the output arrays.
ALIASES: dict[str, str] = {"teacher_outputs": "teacher_logits", "student_outputs": "student_logits"}
_LAYER_KEY = re.compile(r"^(teacher|student)_features[._/-]?(\d+)$")


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 1024**2:.1f} MB"


def read_array_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> dict[str, np.ndarray]:
    """Reads one uploaded file into named arrays, never unpickling anything.

    Args:
        path: a ``.npz``, ``.npy`` or ``.safetensors`` file.
        max_bytes: largest accepted file size.
        max_array_bytes: largest accepted decompressed size (``.npz``).

    Returns:
        ``{key: array}``; a ``.npy`` file gives one array named after the file's stem.

    Raises:
        InputError: missing file, unsupported extension (pickles included), too large, unreadable,
            or an object array.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     np.savez(f"{tmp}/x.npz", labels=np.arange(3))
        ...     read_array_file(f"{tmp}/x.npz")["labels"].tolist()
        [0, 1, 2]
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"The uploaded file {file.name} could not be found on the server; upload it again.")
    # the package's one loader (the CLI's too): says what a damaged or mislabelled file is not
    return read_arrays(file, suffixes=SUPPORTED_SUFFIXES, npy_key=file.stem, max_bytes=max_bytes,
                       max_array_bytes=max_array_bytes, display_name=file.name)


def read_array_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> dict[str, np.ndarray]:
    """Reads and merges several uploaded files (see :func:`read_array_file`).

    Raises:
        InputError: no file, files larger than ``max_bytes`` together, a key present in two files, or
            any per-file problem.
    """
    files = [Path(p) for p in paths if p]
    if not files:
        raise InputError("No file uploaded. Upload an .npz/.safetensors file (or .npy files), or press "
                         "'Load example'.")
    total = sum(f.stat().st_size for f in files if f.is_file())
    if total > max_bytes:
        raise InputError(
            f"The uploaded files add up to {_megabytes(total)}; the limit is {_megabytes(max_bytes)}."
        )
    merged: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for file in files:
        for key, array in read_array_file(file, max_bytes=max_bytes, max_array_bytes=max_array_bytes).items():
            if key in merged:
                raise InputError(f"`{key}` appears in both {origin[key]} and {file.name}; upload it once.")
            merged[key] = array
            origin[key] = file.name
    return merged


@dataclass(frozen=True)
class ArrayInputs:
    """Validated arrays, ready for ``knowledge_retention.compute_krs``.

    Attributes:
        teacher_layers: one ``(N, D_t)`` array per teacher layer.
        student_layers: one ``(N, D_s)`` array per student layer.
        teacher_outputs: the teacher's logits / outputs / label maps (first axis N).
        student_outputs: the student's, same layout.
        labels: ``(N,)`` class ids (or regression targets), or None.
        layer_map: for each student layer, the index of its teacher layer, or None (pair by position).
        ignored_keys: keys in the upload that the app does not use.
        ignore_index: segmentation's void label (pixels left out of the IoU), or None.
    """

    teacher_layers: list[np.ndarray]
    student_layers: list[np.ndarray]
    teacher_outputs: np.ndarray
    student_outputs: np.ndarray
    labels: np.ndarray | None = None
    layer_map: list[int] | None = None
    ignored_keys: tuple[str, ...] = field(default_factory=tuple)
    ignore_index: int | None = None

    @property
    def num_examples(self) -> int:
        """N, the number of examples."""
        return int(self.teacher_outputs.shape[0])

    def paired_teacher_layers(self) -> list[np.ndarray]:
        """The teacher layers paired one to one with :attr:`student_layers` (through ``layer_map``)."""
        if self.layer_map is None:
            return list(self.teacher_layers)
        return [self.teacher_layers[i] for i in self.layer_map]

    def describe(self) -> str:
        """One Markdown line describing the shapes, for the status box."""
        widths_t = sorted({x.shape[1] for x in self.teacher_layers})
        widths_s = sorted({x.shape[1] for x in self.student_layers})
        parts = [
            f"N = {self.num_examples}",
            f"teacher: {len(self.teacher_layers)} layer(s) of width {'/'.join(map(str, widths_t))}",
            f"student: {len(self.student_layers)} layer(s) of width {'/'.join(map(str, widths_s))}",
            f"outputs of shape {('N',) + tuple(self.teacher_outputs.shape[1:])}".replace("'", ""),
        ]
        if self.labels is not None:
            parts.append("labels present")
        if self.layer_map is not None:
            parts.append(f"layer_map {self.layer_map}")
        if self.ignore_index is not None:
            parts.append(f"ignore_index {self.ignore_index}")
        return "; ".join(parts)


def _numeric(array: np.ndarray, key: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise InputError(f"`{key}` holds {array.dtype} values; expected real numbers (float or int).")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(f"`{key}` contains {bad} NaN or Inf value(s); every value must be finite.")
    return array


def _feature_layers(arrays: Mapping[str, np.ndarray], role: str) -> tuple[list[np.ndarray], list[str]]:
    """The layers of ``{role}_features`` (one key, or numbered keys) and the keys used."""
    key = f"{role}_features"
    numbered = sorted(
        ((int(m.group(2)), k) for k in arrays if (m := _LAYER_KEY.match(k)) and m.group(1) == role),
    )
    if key in arrays and numbered:
        raise InputError(f"Give `{key}` either as one array or as numbered keys (`{key}_0`, ...), not both.")
    if numbered:
        indices = [i for i, _ in numbered]
        if indices != list(range(len(indices))):
            raise InputError(f"Numbered `{key}_<i>` keys must run 0, 1, 2, ... without gaps; got {indices}.")
        layers = []
        for _, k in numbered:
            array = _numeric(arrays[k], k)
            if array.ndim != 2:
                raise InputError(f"`{k}` must be 2-D (N, D); got shape {array.shape}.")
            layers.append(array)
        return layers, [k for _, k in numbered]
    if key not in arrays:
        return [], []
    array = _numeric(arrays[key], key)
    return as_layers(array, key), [key]  # the package's layout rule: (N, D) or (N, L, D)


def _output(arrays: Mapping[str, np.ndarray], role: str) -> tuple[np.ndarray | None, str | None]:
    key = f"{role}_logits"
    alias = f"{role}_outputs"
    if key in arrays and alias in arrays:
        raise InputError(f"Both `{key}` and `{alias}` were given; they name the same array, keep one.")
    for name in (key, alias):
        if name in arrays:
            array = _numeric(arrays[name], name)
            if array.ndim == 0:
                raise InputError(f"`{name}` must have one row per example; got a scalar.")
            return array, name
    return None, None


def parse_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayInputs:
    """Checks the uploaded arrays and arranges them for ``compute_krs``.

    Checks: every required key present; numeric dtypes; no NaN/Inf; feature shapes ``(N, D)`` or
    ``(N, L, D)``; the same N everywhere; ``labels`` 1-D/2-D; ``layer_map`` valid indices.
    Width, class-count and method-specific checks are left to ``knowledge_retention`` itself.

    Raises:
        InputError: with the offending key, what was expected and what arrived.

    Example:
        >>> import numpy as np
        >>> x, z = np.ones((5, 3)), np.zeros((5, 2))
        >>> parse_arrays({"teacher_features": x, "student_features": x,
        ...               "teacher_logits": z, "student_logits": z}).num_examples
        5
    """
    teacher_layers, t_keys = _feature_layers(arrays, "teacher")
    student_layers, s_keys = _feature_layers(arrays, "student")
    teacher_out, t_out_key = _output(arrays, "teacher")
    student_out, s_out_key = _output(arrays, "student")
    missing = [
        name
        for name, present in (
            ("teacher_features", teacher_layers),
            ("student_features", student_layers),
            ("teacher_logits", teacher_out is not None),
            ("student_logits", student_out is not None),
        )
        if not present
    ]
    if missing:
        found = ", ".join(f"`{k}` {tuple(v.shape)}" for k, v in arrays.items()) or "nothing"
        raise InputError(
            f"Missing required array(s): {', '.join(f'`{m}`' for m in missing)}. Found: {found}. "
            f"Expected keys: {', '.join(f'`{k}`' for k in REQUIRED_KEYS)} (optional: `labels`, `layer_map`, "
            "`ignore_index`)."
        )
    assert teacher_out is not None and student_out is not None and t_out_key and s_out_key

    labels = None
    if "labels" in arrays:
        labels = _numeric(arrays["labels"], "labels")
        if labels.ndim not in (1, 2):
            raise InputError(
                f"`labels` must be (N,) class ids (or (N,)/(N, K) regression targets); got shape {labels.shape}."
            )

    if len(t_keys) > 1:
        as_layers(teacher_layers, "teacher_features")  # numbered layers: the same N in each
    if len(s_keys) > 1:
        as_layers(student_layers, "student_features")
    # The package's own row-count check, with compute_krs's argument names: the same message as there.
    count = check_num_examples({
        "teacher_features": teacher_layers[0].shape[0],
        "student_features": student_layers[0].shape[0],
        "teacher_outputs": teacher_out.shape[0],
        "student_outputs": student_out.shape[0],
    })
    if labels is not None and labels.shape[0] != count:
        raise InputError(
            f"`labels` must have one entry per example ({count}, as the features and outputs); got "
            f"`labels`: {labels.shape[0]}."
        )
    if count < 2:
        raise InputError("At least 2 examples are needed (CKA compares examples with each other).")

    layer_map = None
    if "layer_map" in arrays:
        raw = _numeric(arrays["layer_map"], "layer_map")
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise InputError(f"`layer_map` must be a 1-D integer array (one teacher index per student layer); "
                             f"got dtype {raw.dtype}, shape {raw.shape}.")
        if len(raw) != len(student_layers):
            raise InputError(f"`layer_map` must have one entry per student layer ({len(student_layers)}); "
                             f"got {len(raw)}.")
        if np.any(raw < 0) or np.any(raw >= len(teacher_layers)):
            raise InputError(f"`layer_map` entries must be teacher layer indices in 0..{len(teacher_layers) - 1}; "
                             f"got {raw.tolist()}.")
        layer_map = [int(i) for i in raw]
    elif len(teacher_layers) != len(student_layers):
        raise InputError(
            f"FSS pairs teacher and student layers one to one, but the upload has {len(teacher_layers)} teacher "
            f"layer(s) and {len(student_layers)} student layer(s). Upload only the paired layers, or add a "
            f"`layer_map` array of {len(student_layers)} teacher-layer indices (one per student layer)."
        )

    ignore_index = None
    if "ignore_index" in arrays:
        raw = _numeric(arrays["ignore_index"], "ignore_index")
        if raw.size != 1 or raw.dtype.kind not in "iu":
            raise InputError(f"`ignore_index` must be one integer label (e.g. 255); got dtype {raw.dtype}, shape {raw.shape}.")
        ignore_index = int(raw.reshape(-1)[0])

    used = set(t_keys) | set(s_keys) | {t_out_key, s_out_key, "labels", "layer_map", "ignore_index"}
    ignored = tuple(sorted(k for k in arrays if k not in used))
    return ArrayInputs(
        teacher_layers=teacher_layers,
        student_layers=student_layers,
        teacher_outputs=teacher_out,
        student_outputs=student_out,
        labels=labels,
        layer_map=layer_map,
        ignored_keys=ignored,
        ignore_index=ignore_index,
    )


def synthetic_example(*, num_examples: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """A made-up teacher/student pair with 4 layers each and 3 classes, built in memory.

    The student's layers are noisy, narrower random projections of the teacher's (noise growing
    with depth), its logits the teacher's plus noise, and the labels the teacher's predictions
    with 10% flipped: a plausible-looking upload that exercises every part of the page.

    Returns:
        ``{"teacher_features": (N, 4, 64), "student_features": (N, 4, 32), "teacher_logits": (N, 3),
        "student_logits": (N, 3), "labels": (N,)}``, float32 / int64.
    """
    rng = np.random.default_rng(seed)
    n, layers, d_t, d_s, classes = num_examples, 4, 64, 32, 3
    base = rng.normal(size=(n, d_t))
    teacher = np.empty((n, layers, d_t))
    student = np.empty((n, layers, d_s))
    hidden = base
    for layer in range(layers):
        hidden = np.tanh(hidden @ rng.normal(scale=1.0 / np.sqrt(d_t), size=(d_t, d_t)) + 0.3 * base)
        teacher[:, layer] = hidden
        projection = rng.normal(size=(d_t, d_s)) / np.sqrt(d_t)
        student[:, layer] = hidden @ projection + (0.15 + 0.1 * layer) * rng.normal(size=(n, d_s))
    teacher_logits = 2.0 * teacher[:, -1] @ rng.normal(size=(d_t, classes)) / np.sqrt(d_t) * 3.0
    student_logits = 0.8 * teacher_logits + 0.6 * rng.normal(size=(n, classes))
    labels = teacher_logits.argmax(axis=1)
    flip = rng.random(n) < 0.1
    labels[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return {
        "teacher_features": teacher.astype(np.float32),
        "student_features": student.astype(np.float32),
        "teacher_logits": teacher_logits.astype(np.float32),
        "student_logits": student_logits.astype(np.float32),
        "labels": labels.astype(np.int64),
    }
