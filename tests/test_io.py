"""knowledge_retention._io.read_arrays: the one loader of saved arrays (CLI and Space), its messages."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from knowledge_retention import InputError
from knowledge_retention._io import read_arrays


@pytest.fixture
def saved(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    arrays = {"teacher_features": rng.normal(size=(20, 5)), "labels": np.arange(20)}
    np.savez(tmp_path / "ok.npz", **arrays)
    save_file(arrays, str(tmp_path / "ok.safetensors"))
    np.save(tmp_path / "one.npy", arrays["teacher_features"])
    return tmp_path, arrays


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_good_files_round_trip_exactly(saved, suffix):
    root, arrays = saved
    out = read_arrays(root / f"ok{suffix}")
    assert sorted(out) == sorted(arrays)
    for key, value in arrays.items():
        assert out[key].dtype == value.dtype and np.array_equal(out[key], value)


def _expect(path, *fragments, **kwargs):
    with pytest.raises(InputError) as info:
        read_arrays(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_npz_failures_each_say_what_the_file_is_not(saved):
    root, _ = saved
    good = (root / "ok.npz").read_bytes()
    not_npz = "not a valid .npz (zip) archive"
    (root / "trunc.npz").write_bytes(good[: len(good) // 2])
    _expect(root / "trunc.npz", not_npz, "cut short")
    (root / "empty.npz").write_bytes(b"")
    _expect(root / "empty.npz", not_npz, "empty (0 bytes)")
    broken = bytearray(good)
    broken[len(good) // 3] ^= 0xFF
    (root / "crc.npz").write_bytes(bytes(broken))
    _expect(root / "crc.npz", not_npz, "damaged", "CRC")
    (root / "text.npz").write_text("a,b\n1,2\n")
    message = _expect(root / "text.npz", not_npz, "text file")
    assert "pickle" not in message
    (root / "st.npz").write_bytes((root / "ok.safetensors").read_bytes())
    _expect(root / "st.npz", not_npz, "a .safetensors file")
    with open(root / "evil.npz", "wb") as handle:
        pickle.dump({"teacher_features": 1}, handle)
    _expect(root / "evil.npz", not_npz, "pickle (pickled data is never loaded)")
    (root / "npy.npz").write_bytes((root / "one.npy").read_bytes())
    _expect(root / "npy.npz", not_npz, "single .npy array")
    assert read_arrays(root / "npy.npz", npy_key="teacher_features")["teacher_features"].shape == (20, 5)


def test_object_arrays_are_refused_without_unpickling(saved):
    root, _ = saved
    obj = np.empty(1, dtype=object)
    obj[0] = {"a": 1}
    np.savez(root / "obj.npz", teacher_features=obj)
    _expect(root / "obj.npz", "`teacher_features`", "object array", "without unpickling")


def test_safetensors_failures_each_say_what_the_file_is_not(saved):
    root, _ = saved
    good = (root / "ok.safetensors").read_bytes()
    not_st = "not a valid .safetensors file"
    (root / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    _expect(root / "trunc.safetensors", not_st, "cut short")
    (root / "short.safetensors").write_bytes(good[:5])
    _expect(root / "short.safetensors", not_st, "8-byte header")
    (root / "empty.safetensors").write_bytes(b"")
    _expect(root / "empty.safetensors", not_st, "empty")
    broken = bytearray(good)
    broken[20] ^= 0xFF
    (root / "bad.safetensors").write_bytes(bytes(broken))
    message = _expect(root / "bad.safetensors", not_st, "header is not valid JSON")
    assert "bfloat16" not in message
    (root / "npz.safetensors").write_bytes((root / "ok.npz").read_bytes())
    _expect(root / "npz.safetensors", not_st, "zip archive")


def test_bfloat16_tensors_get_the_float32_advice(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"teacher_features": torch.ones(3, 2, dtype=torch.bfloat16)}, str(tmp_path / "bf.safetensors"))
    _expect(tmp_path / "bf.safetensors", "`teacher_features` is bfloat16", "float32")


def test_names_suffixes_and_limits(saved):
    root, _ = saved
    _expect(root / "missing.npz", "missing.npz: no such file")
    _expect(root / "one.npy", "unsupported file type '.npy'; expected .npz or .safetensors")
    assert read_arrays(root / "one.npy", suffixes=(".npy",))["one"].shape == (20, 5)
    _expect(root / "ok.npz", "the limit is", max_bytes=10)
    _expect(root / "ok.npz", "decompresses to", max_array_bytes=10)
    message = _expect(root / "empty-name.npz", "upload.npz: no such file", display_name="upload.npz")
    assert str(root) not in message


# ---- issue 20 item 3: declared sizes are checked against the file before anything is allocated -------------------


def _header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(10**6, 10**6), (2**40,), (1000, 1000)])
def test_a_declared_shape_larger_than_the_file_is_refused_before_allocating(tmp_path, shape):
    import tracemalloc
    import zipfile

    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("teacher_features.npy", _header(shape) + b"\0" * 64)
    single = tmp_path / "crafted.npy"
    single.write_bytes(_header(shape) + b"\0" * 64)
    tracemalloc.start()
    with pytest.raises(InputError, match=r"declares an array of shape .* but holds only"):
        read_arrays(path)
    with pytest.raises(InputError, match=r"its header declares an array of shape .* but the file holds only"):
        read_arrays(single, suffixes=(".npy",))
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()


def test_a_zip_entry_claiming_more_than_compression_allows_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "x.npz"
    np.savez(path, teacher_features=np.arange(10.0))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    # the central directory's uncompressed size (offset 24 of its entry) set to 10**12
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24: central + 28] = (2**32 - 1).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    assert info.file_size < 2**32 - 1
    with pytest.raises(InputError, match="claims|not a valid .npz"):
        read_arrays(path)


def test_the_decompressed_ceiling_counts_declared_sizes(tmp_path):
    path = tmp_path / "big.npz"
    np.savez_compressed(path, teacher_features=np.zeros((1000, 1000)))  # 8 MB of zeros, a few KB on disk
    with pytest.raises(InputError, match="decompresses to 7.6 MB, more than the 1.0 MB accepted"):
        read_arrays(path, max_array_bytes=2**20)
    assert read_arrays(path)["teacher_features"].shape == (1000, 1000)
