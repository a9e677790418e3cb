"""Reading saved arrays (``.npz``, ``.npy``, ``.safetensors``) with errors that say what a file is not.

One function, :func:`read_arrays`, used by ``knowledge-retention arrays`` and by the Space's upload:
a truncated, empty, byte-corrupted or mislabelled file is refused with one
:class:`~knowledge_retention.InputError` line ("bad.npz: not a valid .npz (zip) archive: it is a text
file"), never a ``BadZipFile``/``EOFError``/``SafetensorError`` stack trace. Pickles are never loaded
(``allow_pickle=False``; object arrays are refused).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import InputError

__all__ = ["ARRAY_SUFFIXES", "DEFAULT_MAX_ARRAY_BYTES", "read_arrays"]

#: The ceiling on the decompressed size of an ``.npz`` that the Space and ``knowledge-retention arrays``
#: apply by default (4 x the Space's 200 MB upload limit); the CLI lifts it with ``--max-decompressed-mb 0``.
DEFAULT_MAX_ARRAY_BYTES = 800 * 2**20
#: Deflate cannot compress better than about 1032:1; a member claiming more is damaged or crafted.
_MAX_DEFLATE_RATIO = 1100

#: The formats :func:`read_arrays` knows; callers choose which of them they accept.
ARRAY_SUFFIXES: tuple[str, ...] = (".npz", ".npy", ".safetensors")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_DAMAGE = (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 1024**2:.1f} MB"


def _what_it_is(path: Path) -> str | None:
    """What the file's first bytes say it is (a pickle, a zip, a .npy, a .safetensors, text), or None."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if head.startswith(_ZIP_MAGIC):
        return "a zip archive"
    if head.startswith(_NPY_MAGIC):
        return "a single .npy array"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # pickle protocol 2+ opcode
        return "a Python pickle (pickled data is never loaded)"
    if len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return "a .safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and "\x00" not in text:
        return "a text file"
    return None


def _object_array(key: str, name: str) -> InputError:
    return InputError(
        f"{name}: `{key}` is a pickled object array (dtype=object), refused: it cannot be read without "
        "unpickling. Save plain numeric arrays (np.savez(path, teacher_features=np.asarray(x, dtype=np.float32), ...))."
    )


def _checked(array: np.ndarray, key: str, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == object:
        raise _object_array(key, name)
    return array


def _declared_npy(handle: Any) -> tuple[int, int, str]:
    """``(declared data bytes, header bytes, shape text)`` from a .npy header, read without loading the data.

    Raises:
        ValueError: not a .npy header (numpy's own message).
    """
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    count = 1
    for size in shape:
        count *= int(size)
    return count * int(dtype.itemsize), int(handle.tell()), f"{tuple(int(d) for d in shape)} {dtype}"


def _check_declared_sizes(archive: Any, name: str, max_array_bytes: int | None) -> None:
    """Compares every member's declared sizes with what the file holds, before anything is allocated.

    A zip entry claims its decompressed size, and a .npy header its shape: a 3 KB file can claim
    10**6 x 10**6 float64 values (8 TB), which numpy would allocate before reading a byte.
    """
    not_npz = f"{name}: not a valid .npz (zip) archive"
    total = 0
    for info in archive.zip.infolist():
        member = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise InputError(f"{not_npz}: member `{member}` claims {info.file_size} bytes but stores {info.compress_size}.")
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise InputError(
                f"{not_npz}: member `{member}` claims to decompress to {info.file_size} bytes from {info.compress_size}, "
                "more than compression allows (damaged or crafted)."
            )
        try:
            with archive.zip.open(info) as handle:
                declared, header, shape = _declared_npy(handle)
        except ValueError:
            continue  # not a .npy member: reported by the reader below with numpy's own words
        except _DAMAGE as err:
            raise InputError(f"{not_npz}: member `{member}` is damaged ({err}).") from None
        if declared > info.file_size - header:
            raise InputError(
                f"{not_npz}: member `{member}` declares an array of shape {shape} ({_megabytes(declared)}) but holds "
                f"only {_megabytes(max(info.file_size - header, 0))} of data (cut short, damaged or crafted)."
            )
        total += declared
    if max_array_bytes is not None and total > max_array_bytes:
        raise InputError(
            f"{name} decompresses to {_megabytes(total)}, more than the {_megabytes(max_array_bytes)} "
            "accepted. Use fewer examples or float16/float32 arrays."
        )


def _read_npz(path: Path, name: str, *, npy_key: str | None, max_array_bytes: int | None) -> dict[str, np.ndarray]:
    not_npz = f"{name}: not a valid .npz (zip) archive"
    what = _what_it_is(path)
    if what == "a single .npy array":
        if npy_key is None:
            raise InputError(f"{not_npz}: it is {what}; save all arrays in one file with np.savez(path, key=array, ...).")
        return _read_npy(path, name, key=npy_key)
    if not zipfile.is_zipfile(path):
        if what == "a zip archive":
            raise InputError(f"{not_npz}: it starts like one but has no zip directory at its end (cut short or damaged).")
        if what is not None:
            raise InputError(f"{not_npz}: it is {what}. Save the arrays with np.savez.")
        raise InputError(f"{not_npz}: its content is not a zip archive (damaged, or another format).")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise InputError(f"{not_npz}: {err}") from None
    except _DAMAGE as err:
        raise InputError(f"{not_npz}: it is damaged ({err}).") from None
    with archive:
        if archive.zip is not None:
            _check_declared_sizes(archive, name, max_array_bytes)
        if max_array_bytes is not None and archive.zip is not None:
            declared = int(sum(info.file_size for info in archive.zip.infolist()))
            if declared > max_array_bytes:
                raise InputError(
                    f"{name} decompresses to {_megabytes(declared)}, more than the {_megabytes(max_array_bytes)} "
                    "accepted. Use fewer examples or float16/float32 arrays."
                )
        arrays: dict[str, np.ndarray] = {}
        for key in archive.files:
            try:
                value = archive[key]
            except ValueError as err:
                if "pickle" in str(err).lower() or "object" in str(err).lower():
                    raise _object_array(key, name) from None
                raise InputError(f"{not_npz}: member `{key}` is not a valid .npy array ({err}).") from None
            except _DAMAGE as err:
                raise InputError(f"{not_npz}: member `{key}` is damaged ({err}).") from None
            if not isinstance(value, np.ndarray):  # NpzFile hands back raw bytes for non-.npy members
                raise InputError(f"{not_npz}: member `{key}` is not a NumPy array (.npy).")
            arrays[key] = _checked(value, key, name)
    if not arrays:
        raise InputError(f"{name}: the .npz archive holds no arrays.")
    return arrays


def _read_npy(path: Path, name: str, *, key: str) -> dict[str, np.ndarray]:
    not_npy = f"{name}: not a valid .npy file"
    what = _what_it_is(path)
    if what not in (None, "a single .npy array"):
        raise InputError(f"{not_npy}: it is {what}.")
    try:
        with path.open("rb") as handle:
            declared, header, shape = _declared_npy(handle)
    except ValueError:
        declared = header = 0  # numpy's own message, below
        shape = ""
    if declared > path.stat().st_size - header:
        raise InputError(
            f"{not_npy}: its header declares an array of shape {shape} ({_megabytes(declared)}) but the file holds "
            f"only {_megabytes(max(path.stat().st_size - header, 0))} of data (cut short, damaged or crafted)."
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise _object_array(key, name) from None
        raise InputError(f"{not_npy}: {err}") from None
    except _DAMAGE as err:
        raise InputError(f"{not_npy}: it is damaged or cut short ({err}).") from None
    if not isinstance(array, np.ndarray):  # pragma: no cover - zip content is caught above
        raise InputError(f"{not_npy}: it is an .npz archive; rename it to .npz.")
    return {key: _checked(array, key, name)}


def _read_safetensors(path: Path, name: str) -> dict[str, np.ndarray]:
    """The 8-byte header length and the JSON header are checked first, so each failure has its own words."""
    not_st = f"{name}: not a valid .safetensors file"
    size = path.stat().st_size
    what = _what_it_is(path)
    if what not in (None, "a .safetensors file"):
        raise InputError(f"{not_st}: it is {what}.")
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InputError(f"{not_st}: {size} bytes, shorter than the 8-byte header length it starts with.")
        length = int.from_bytes(head, "little")
        if length > size - 8:
            raise InputError(
                f"{not_st}: its header claims {length} bytes but only {size - 8} follow (cut short or damaged)."
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{not_st}: its header is not valid JSON (the file is damaged or another format).") from None
    if not isinstance(header, dict):
        raise InputError(f"{not_st}: its header is not a JSON object.")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    bf16 = sorted(k for k, v in tensors.items() if isinstance(v, dict) and v.get("dtype") == "BF16")
    if bf16:
        raise InputError(
            f"{name}: `{bf16[0]}` is bfloat16, which NumPy cannot represent; save the tensors as float32 "
            "(tensor.float()) and try again."
        )
    ends = [v["data_offsets"][1] for v in tensors.values() if isinstance(v, dict) and len(v.get("data_offsets", ())) == 2]
    needed = max((int(e) for e in ends if isinstance(e, int)), default=0)
    if needed > size - 8 - length:
        raise InputError(
            f"{not_st}: its tensors need {needed} bytes of data but only {size - 8 - length} follow the header "
            "(cut short)."
        )
    from safetensors.numpy import load_file

    try:
        loaded = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors' own SafetensorError has no importable base
        raise InputError(f"{not_st}: {err}") from None
    if not loaded:
        raise InputError(f"{name}: the .safetensors file holds no tensors.")
    return {key: _checked(value, key, name) for key, value in loaded.items()}


def read_arrays(
    path: str | os.PathLike[str],
    *,
    suffixes: tuple[str, ...] = (".npz", ".safetensors"),
    npy_key: str | None = None,
    max_bytes: int | None = None,
    max_array_bytes: int | None = None,
    display_name: str | None = None,
) -> dict[str, np.ndarray]:
    """Reads a file of named arrays into numpy, never unpickling anything.

    Args:
        path: a ``.npz`` (``np.savez``), ``.npy`` (one array) or ``.safetensors`` file.
        suffixes: the formats accepted (default ``.npz`` and ``.safetensors``).
        npy_key: the key a single ``.npy`` array is returned under (a ``.npy`` file, or a ``.npy``
            saved under an ``.npz`` name); None refuses the latter.
        max_bytes: largest accepted file size (None: no limit).
        max_array_bytes: largest accepted decompressed size of an ``.npz`` (None: no limit).
        display_name: how messages name the file (default: the path as given).

    Returns:
        ``{key: array}``.

    Raises:
        InputError: no such file, an unsupported suffix, too large, empty, or a file that is not
            what its suffix says (with what it is instead when its first bytes tell: a text file,
            a pickle, a zip cut short, ...), a damaged member, an object array, bfloat16 tensors.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     np.savez(f"{tmp}/x.npz", labels=np.arange(3))
        ...     read_arrays(f"{tmp}/x.npz")["labels"].tolist()
        [0, 1, 2]
    """
    file = Path(path)
    name = display_name or str(path)
    suffix = file.suffix.lower()
    if not file.is_file():
        raise InputError(f"{name}: no such file" + (" (it is a folder)" if file.is_dir() else ""))
    if suffix not in suffixes:
        hint = " Pickle-based files are refused (never loaded)." if suffix in _PICKLE_SUFFIXES else ""
        expected = " or ".join(suffixes) if len(suffixes) < 3 else ", ".join(suffixes[:-1]) + " or " + suffixes[-1]
        raise InputError(f"{name}: unsupported file type {suffix or '(no extension)'!r}; expected {expected}.{hint}")
    size = file.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(
            f"{name} is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}. Use fewer examples, pooled "
            "features or float16 arrays."
        )
    if size == 0:
        kind = {".npz": "a valid .npz (zip) archive", ".npy": "a valid .npy file"}.get(suffix, "a valid .safetensors file")
        raise InputError(f"{name}: not {kind}: the file is empty (0 bytes).")
    if suffix == ".npz":
        return _read_npz(file, name, npy_key=npy_key, max_array_bytes=max_array_bytes)
    if suffix == ".npy":
        return _read_npy(file, name, key=npy_key or file.stem)
    return _read_safetensors(file, name)
