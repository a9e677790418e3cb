"""Hostile and valid array inputs for the array entry points (compute_krs, the functions, KRSAccumulator,
the evaluate module, ``knowledge-retention arrays``, the Space's upload): shapes, dtypes, scales,
offsets, options and files.

Each generator returns :class:`Case` objects; ``CASES`` is what the suite runs. A case that an entry
point cannot express (a list of layers of different widths in an ``.npz``, an option the Space has no
control for) leaves that entry out, and says why in the comment beside it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from contract_registry import ARRAY_ENTRIES, CLI_OPTIONS, SPACE_OPTIONS, Case, reference, reference_on

N, L, D_T, D_S, C = 40, 2, 10, 6, 3
IN_PROCESS = ("compute_krs", "functions", "accumulator")  # entries that take Python objects as they are
NOT_FUNCTIONS = tuple(e for e in ARRAY_ENTRIES if e != "functions")  # the separate functions do not cross-check N


def base(seed: int = 0, n: int = N, task: str = "nlp") -> dict[str, Any]:
    """(N, L, D) features, and outputs for ``task``: logits, values or label maps."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, L, D_T))
    s = t[..., :D_S] @ rng.normal(size=(D_S, D_S)) + 0.8 * rng.normal(size=(n, L, D_S))
    if task == "regression":
        out_t = rng.normal(size=(n, 2))
        out_s = out_t + 0.4 * rng.normal(size=(n, 2))
    elif task == "segmentation":
        out_t = rng.integers(0, 4, size=(n, 4, 4))
        out_s = np.where(rng.random((n, 4, 4)) < 0.7, out_t, rng.integers(0, 4, size=(n, 4, 4)))
    else:
        out_t = 2 * rng.normal(size=(n, C))
        out_s = out_t + rng.normal(size=(n, C))
    return {"teacher_features": t, "student_features": s, "teacher_outputs": out_t, "student_outputs": out_s}


def changed(task: str = "nlp", **edits: Callable[[Any], Any]) -> Callable[[], dict[str, Any]]:
    """The base data of ``task`` with some inputs transformed."""
    def make() -> dict[str, Any]:
        data = base(task=task)
        for key, edit in edits.items():
            data[key] = edit(data[key])
        return data
    return make


def entries_for(options: dict[str, Any], *, files: bool = True, in_process_only: bool = False,
                exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The entry points that can express these options (and inputs that can be saved to a file)."""
    chosen = []
    for entry in (IN_PROCESS if in_process_only else ARRAY_ENTRIES):
        if entry in exclude or (entry in ("cli", "space") and not files):
            continue
        if entry == "cli" and not set(options) <= CLI_OPTIONS:
            continue
        if entry == "space" and (not set(options) <= SPACE_OPTIONS or options.get("alpha") is None and "beta" in options):
            continue
        chosen.append(entry)
    return tuple(chosen)


def scored(name: str, data: Callable[[], dict[str, Any]], options: dict[str, Any] | None = None, *,
           ref: Callable[..., dict[str, float]] = reference, rel: float = 1e-9, **kwargs: Any) -> Case:
    options = options or {"task": "nlp"}
    return Case(name, data, options, reference=ref, rel=rel, entries=kwargs.pop("entries", None) or entries_for(options, **kwargs))


def refused(name: str, data: Callable[[], dict[str, Any]], options: dict[str, Any] | None, pattern: str, **kwargs: Any) -> Case:
    options = options if options is not None else {"task": "nlp"}
    return Case(name, data, options, refused=pattern, entries=kwargs.pop("entries", None) or entries_for(options, **kwargs))


# ---- valid inputs, scored equal to an independent reference ----------------------------------------------------


def _scale(k: float, which: tuple[str, ...] = ("teacher_features", "student_features")) -> Callable[[], dict[str, Any]]:
    return changed(**{key: (lambda x, k=k: x * 10.0**k) for key in which})


def _unscaled(k: float, which: tuple[str, ...] = ("teacher_features", "student_features")) -> Callable[..., dict[str, float]]:
    return reference_on(lambda d: {**d, **{key: d[key] / 10.0**k for key in which}})


SCALES = [
    scored(f"features-x1e{k}", _scale(k), ref=_unscaled(k)) for k in (-150, -100, -45, -20, 20, 38, 100, 150)
] + [
    scored(f"teacher-x1e{k}-student-x1", _scale(k, ("teacher_features",)), ref=_unscaled(k, ("teacher_features",)))
    for k in (-150, 150)
] + [
    scored(f"student-x1e{k}", _scale(k, ("student_features",)), ref=_unscaled(k, ("student_features",)))
    for k in (-60, 60)
] + [
    scored(f"regression-outputs-x1e{k}", changed("regression", teacher_outputs=lambda y, k=k: y * 10.0**k,
                                                 student_outputs=lambda y, k=k: y * 10.0**k),
           {"task": "regression"}, ref=reference_on(lambda d, k=k: {**d, "teacher_outputs": d["teacher_outputs"] / 10.0**k,
                                                                     "student_outputs": d["student_outputs"] / 10.0**k}),
           rel=1e-6)
    for k in (-150, -30, 30, 150)
]


def _offset(o: float) -> Callable[[], dict[str, Any]]:
    # features on a grid of 2**-20: adding the offset is exact up to 1e9; beyond, float64's own rounding
    grid = 2.0**20
    return changed(teacher_features=lambda x: np.round(x * grid) / grid + o,
                   student_features=lambda x: np.round(x * grid) / grid - o)


OFFSETS = [
    scored(f"features-offset-1e{k}", _offset(10.0**k),
           ref=reference_on(lambda d, o=10.0**k: {**d, "teacher_features": d["teacher_features"] - o,
                                                   "student_features": d["student_features"] + o}),
           rel=max(1e-9, 1e-15 * 10.0**k * 20))
    for k in (3, 6, 9, 12)
] + [
    scored("regression-offset-1e8", changed("regression", teacher_outputs=lambda y: np.round(y * 2**20) / 2**20 + 1e8,
                                            student_outputs=lambda y: np.round(y * 2**20) / 2**20 + 1e8),
           {"task": "regression"}, rel=1e-6),
]

DTYPES = [
    scored("float32-features", changed(teacher_features=lambda x: x.astype(np.float32),
                                       student_features=lambda x: x.astype(np.float32))),
    scored("float16-features", changed(teacher_features=lambda x: x.astype(np.float16),
                                       student_features=lambda x: x.astype(np.float16)), rel=1e-6),
    scored("int-features", changed(teacher_features=lambda x: np.round(4 * x).astype(np.int64),
                                   student_features=lambda x: np.round(4 * x).astype(np.int32))),
    scored("float32-logits", changed(teacher_outputs=lambda z: z.astype(np.float32),
                                     student_outputs=lambda z: z.astype(np.float32))),
    scored("int-logits", changed(teacher_outputs=lambda z: np.round(z).astype(np.int64),
                                 student_outputs=lambda z: np.round(z).astype(np.int64))),
    scored("uint8-label-maps", changed("segmentation", teacher_outputs=lambda m: m.astype(np.uint8),
                                       student_outputs=lambda m: m.astype(np.uint8)), {"task": "segmentation"}),
]


def _list_of_layers(widths: tuple[int, ...], n: int = N) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        rng = np.random.default_rng(5)
        t = [rng.normal(size=(n, w)) for w in widths]
        s = [x[:, :3] @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(n, 4)) for x in t]
        logits = rng.normal(size=(n, C))
        return {"teacher_features": t, "student_features": s, "teacher_outputs": logits,
                "student_outputs": logits + rng.normal(size=(n, C))}
    return make


LAYOUTS = [
    # issue 20: a list of L per-layer arrays with N == L was read as N examples by the evaluate module
    scored("list-of-layers-N-equals-L", _list_of_layers((8,) * 12, n=12)),
    scored("list-of-layers", _list_of_layers((8, 8, 8))),
    # widths that differ per layer: an .npz/evaluate table cannot hold them as one array
    scored("list-of-layers-of-different-widths", _list_of_layers((8, 5, 12)), entries=IN_PROCESS),
    scored("one-layer-2d", changed(teacher_features=lambda x: x[:, 0], student_features=lambda x: x[:, 1])),
    scored("regression-1d-outputs", changed("regression", teacher_outputs=lambda y: y[:, 0],
                                            student_outputs=lambda y: y[:, 0]), {"task": "regression"}),
    scored("three-examples", lambda: {k: v[:3] for k, v in base().items()}),
]

METHODS = [
    scored(f"fss-{m}", base if m != "cosine"
           else changed(student_features=lambda x: np.concatenate([x, x[..., :D_T - D_S]], axis=-1) + 0.5),
           {"task": "nlp", "fss_method": m}, exclude=("accumulator",) if m == "rbf_cka" else ())
    for m in ("linear_cka", "debiased_cka", "rbf_cka", "cosine")
] + [
    scored(f"aoag-{m}", base, {"task": "classification", "aoag_method": m}) for m in ("kl", "js", "top1")
] + [
    scored("aoag-kl-temperature-2.5", base, {"task": "nlp", "temperature": 2.5}),
    scored("aoag-kl-temperature-1e-3", base, {"task": "nlp", "temperature": 1e-3}),
    scored("probabilities", changed(teacher_outputs=lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True),
                                    student_outputs=lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)),
           {"task": "nlp", "inputs": "probabilities"}),
    scored("regression-max-mse", changed("regression"), {"task": "regression", "max_mse": 2.0}),
    scored("segmentation-default", changed("segmentation"), {"task": "segmentation"}),
    scored("segmentation-void-255-ignored", changed("segmentation", teacher_outputs=lambda m: np.where(m == 3, 255, m)),
           {"task": "segmentation", "ignore_index": 255}),
    scored("segmentation-label-100000", changed("segmentation", teacher_outputs=lambda m: np.where(m == 3, 100_000, m)),
           {"task": "segmentation"}),
    scored("alpha-float32-beta-float64", base, {"task": "nlp", "alpha": np.float32(0.3), "beta": 0.7},
           exclude=("cli", "space")),  # flags and the Space's slider are float64 already
    scored("alpha-only", base, {"task": "nlp", "alpha": 0.2}),
    scored("beta-only", base, {"task": "classification", "beta": 0.4}),
    scored("scale-100", base, {"task": "nlp", "scale": 100.0}),
    # valid options the task does not use are ignored (the rule in compute_krs's docstring)
    scored("regression-ignores-temperature", changed("regression"), {"task": "regression", "temperature": 3.0}),
    scored("nlp-ignores-max-mse", base, {"task": "nlp", "max_mse": 2.0}),
    scored("segmentation-ignores-inputs", changed("segmentation"), {"task": "segmentation", "inputs": "probabilities"}),
    scored("nlp-ignores-ignore-index", base, {"task": "nlp", "ignore_index": 255}),
]

# ---- invalid inputs, refused by name -----------------------------------------------------------------------------


def _nan_at(key: str, value: float = np.nan) -> Callable[[], dict[str, Any]]:
    def edit(x: Any) -> Any:
        x = np.array(x, dtype=np.float64)
        x.flat[7] = value
        return x
    return changed(**{key: edit})


OUTPUT_NAMES = "(teacher|student)_(outputs|logits)"


def _meta(shape: tuple[int, ...]) -> Any:
    import torch

    return torch.empty(shape, device="meta")
SHAPES = [
    refused("features-1d", changed(teacher_features=lambda x: x[:, 0, 0]), None, "`teacher_features`"),
    refused("features-4d", changed(teacher_features=lambda x: x[..., None]), None, "`teacher_features`"),
    refused("features-N-L0-D", changed(teacher_features=lambda x: x[:, :0]), None, "`teacher_features`"),
    refused("features-N-L-D0", changed(student_features=lambda x: x[..., :0]), None, "`student_features(\\[0\\])?` is empty"),
    refused("no-examples", lambda: {k: v[:0] for k, v in base().items()}, None, "(teacher|student)_(features|outputs|logits)|examples"),
    refused("features-vs-outputs-rows", changed(teacher_outputs=lambda z: z[:-1], student_outputs=lambda z: z[:-1]), None,
            "Features and outputs must describe the same examples", entries=NOT_FUNCTIONS),
    refused("teacher-vs-student-rows", changed(student_features=lambda x: x[:-2]), None, "`student_features`"),
    refused("layers-3-vs-2", changed(teacher_features=lambda x: np.concatenate([x, x[:, :1]], axis=1)), None,
            "layer"),
    refused("two-examples", lambda: {k: v[:2] for k, v in base().items()}, None, "at least (2|3) examples"),
    refused("one-example", lambda: {k: v[:1] for k, v in base().items()}, None, "at least (2|3) examples"),
    refused("one-class", changed(teacher_outputs=lambda z: z[:, :1], student_outputs=lambda z: z[:, :1]), None,
            "at least 2 classes"),
    refused("classes-3-vs-2", changed(student_outputs=lambda z: z[:, :2]), None, "same classes|student_(outputs|logits)"),
    refused("regression-outputs-2-vs-1", changed("regression", student_outputs=lambda y: y[:, :1]), {"task": "regression"},
            "same number of outputs"),
    refused("segmentation-maps-shape", changed("segmentation", student_outputs=lambda m: m[:, :3]),
            {"task": "segmentation"}, "same shape|student_(masks|outputs)"),
    refused("cosine-widths-differ", base, {"task": "nlp", "fss_method": "cosine"}, "same width"),
    refused("logits-look-like-probabilities", changed(teacher_outputs=lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)),
            None, "`teacher_(outputs|logits)` look like probabilities"),
    refused("probabilities-that-are-not", base, {"task": "nlp", "inputs": "probabilities"}, "must be probabilities"),
    refused("scalar-outputs", changed(teacher_outputs=lambda z: z[0, 0], student_outputs=lambda z: z[0, 0]), None,
            OUTPUT_NAMES, entries=IN_PROCESS + ("evaluate",)),
]

DTYPE_ERRORS = [
    refused("complex-features", changed(teacher_features=lambda x: x + 1j), None, "`teacher_features(\\[0\\])?`.*(real|complex)"),
    refused("string-outputs", changed(teacher_outputs=lambda z: z.astype(str)), None, OUTPUT_NAMES),
    refused("object-features", changed(student_features=lambda x: np.array([None] * len(x), dtype=object)), None,
            "`student_features`"),
    refused("none-teacher-features", changed(teacher_features=lambda x: None), None, "`teacher_features`",
            entries=IN_PROCESS + ("evaluate",)),
    refused("string-features", changed(teacher_features=lambda x: "features"), None, "`teacher_features`",
            entries=IN_PROCESS + ("evaluate",)),
    refused("meta-device-tensor", changed(teacher_features=lambda x: _meta(x.shape)), None,
            "`teacher_features`.*'meta' device", entries=IN_PROCESS + ("evaluate",)),
    refused("meta-device-layer-list", changed(student_features=lambda x: [_meta(x[:, 0].shape)] * 2), None,
            "`student_features\\[0\\]`.*'meta' device", entries=IN_PROCESS + ("evaluate",)),
    refused("ragged-list-features", changed(teacher_features=lambda x: [[1.0, 2.0], [3.0]] * 20), None,
            "`teacher_features`", entries=IN_PROCESS + ("evaluate",)),
    refused("bool-label-maps-nan", changed("segmentation", teacher_outputs=lambda m: np.where(m == 1, np.nan, m)),
            {"task": "segmentation"}, "(teacher_(masks|outputs)|NaN)"),
    refused("float-label-maps", changed("segmentation", teacher_outputs=lambda m: m + 0.5), {"task": "segmentation"},
            "`teacher_(masks|outputs)` must be integer"),
    refused("negative-label", changed("segmentation", teacher_outputs=lambda m: m - 1), {"task": "segmentation"},
            ">= 0.*ignore_index|ignore-index"),
] + [
    refused(f"nan-in-{key}", _nan_at(key), None, f"`{key.replace('outputs', '(outputs|logits)')}`.*NaN|NaN.*{key.split('_')[0]}")
    for key in ("teacher_features", "student_features", "teacher_outputs", "student_outputs")
] + [
    refused(f"inf-in-{key}", _nan_at(key, np.inf), None, f"`{key.replace('outputs', '(outputs|logits)')}`.*(NaN|Inf)")
    for key in ("teacher_features", "student_outputs")
] + [
    refused("nan-in-regression-outputs",
            changed("regression", teacher_outputs=lambda y: np.where(np.arange(y.size).reshape(y.shape) == 3, np.nan, y)),
            {"task": "regression"}, "`teacher_outputs`.*NaN"),
]

NUMERIC_LIMITS = [
    # a spread of 1 at an offset of 1e17: float64 cannot tell the values apart
    refused("offset-1e17-is-constant", changed(teacher_features=lambda x: x + 1e17), None,
            "`teacher_features` are constant.*float64's resolution"),
    refused("constant-features", changed(student_features=lambda x: np.ones_like(x)), None, "`student_features` are constant"),
    refused("constant-regression-teacher", changed("regression", teacher_outputs=lambda y: np.full_like(y, 3.0)),
            {"task": "regression"}, "teacher's outputs are constant.*max_mse|max-mse"),
    refused("temperature-1e-308", base, {"task": "nlp", "temperature": 1e-308}, "`(temperature|--temperature)`=1e-308 is too small"),
    refused("rbf-huge-threshold-equivalent", changed(teacher_features=lambda x: np.repeat(x[:1], len(x), axis=0)),
            {"task": "nlp", "fss_method": "rbf_cka"}, "`teacher_features` are constant|median pairwise distance is 0",
            exclude=("accumulator",)),
    refused("debiased-three-examples", lambda: {k: v[:3] for k, v in base().items()}, {"task": "nlp", "fss_method": "debiased_cka"},
            "at least 4 examples"),
    refused("rbf-cannot-stream", base, {"task": "nlp", "fss_method": "rbf_cka"}, "cannot stream", entries=("accumulator",)),
]

_TASKS_FOR_OPTIONS = ("nlp", "regression", "segmentation")


def _task_data(task: str) -> Callable[[], dict[str, Any]]:
    return changed(task)


OPTION_ERRORS = [
    refused(f"{option}-{value!r}-with-{task}", _task_data(task), {"task": task, option: value}, pattern)
    for task in _TASKS_FOR_OPTIONS
    for option, value, pattern in (
        ("max_mse", -5.0, "max_mse|max-mse"),
        ("max_mse", 0.0, "max_mse|max-mse"),
        ("temperature", -1.0, "temperature"),
        ("temperature", 0.0, "temperature"),
        ("temperature", float("nan"), "temperature"),
        ("temperature", float("inf"), "temperature"),
        ("inputs", "bogus", "inputs"),
        ("ignore_index", 1.5, "ignore_index|ignore-index"),
        ("alpha", 1.5, "alpha"),
        ("alpha", -0.1, "alpha"),
        ("fss_method", "bogus", "fss_method|fss-method|FSS method"),
        ("aoag_method", "bogus", "aoag_method|aoag-method|AOAg method"),
        ("scale", 0.0, "scale"),
    )
] + [
    refused("task-bogus", base, {"task": "bogus"}, "task"),
    refused("alpha-plus-beta-not-1", base, {"task": "nlp", "alpha": 0.3, "beta": 0.6}, "alpha.*beta.*must equal 1"),
    refused("alpha-float32-beta-off", base, {"task": "nlp", "alpha": np.float32(0.3), "beta": 0.71}, "must equal 1",
            exclude=("cli", "space")),
    refused("alpha-string", base, {"task": "nlp", "alpha": "0.3"}, "alpha", in_process_only=True),
    refused("alpha-bool", base, {"task": "nlp", "alpha": True}, "alpha", in_process_only=True),
    refused("ignore-index-string", changed("segmentation"), {"task": "segmentation", "ignore_index": "void"},
            "ignore_index|ignore-index"),
]

# ---- files: the command line and the Space read them -------------------------------------------------------------

FILE_ENTRIES = ("cli", "space")


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path
    return make


def _npz(name: str = "case.npz", **arrays: Any) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path
    return make


def _crafted_header(tmp_path: Path) -> Path:
    """A 1 KB .npz whose member declares 10**6 x 10**6 float64 values (8 TB)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    buf.write(b"\0" * 64)
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in ("teacher_features", "student_features", "teacher_outputs", "student_outputs"):
            archive.writestr(f"{key}.npy", buf.getvalue())
    return path


def _truncated(tmp_path: Path) -> Path:
    good = _npz(**base())(tmp_path)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    return good


_B = base()
FILES = [
    Case("file-truncated-npz", file=_truncated, refused="not a valid .npz", entries=FILE_ENTRIES),
    Case("file-text-named-npz", file=_write("case.npz", b"teacher_features,student_features\n1,2\n"),
         refused="not a valid .npz.*text file", entries=FILE_ENTRIES),
    Case("file-empty", file=_write("case.npz", b""), refused="empty", entries=FILE_ENTRIES),
    Case("file-crafted-8TB-header", file=_crafted_header, refused="declares an array of shape \\(1000000, 1000000\\)",
         entries=FILE_ENTRIES),
    Case("file-both-logits-and-outputs", file=_npz(**_B, teacher_logits=_B["teacher_outputs"]),
         refused="teacher_logits.*teacher_outputs|teacher_outputs.*teacher_logits", entries=FILE_ENTRIES),
    Case("file-missing-student-features", file=_npz(**{k: v for k, v in _B.items() if k != "student_features"}),
         refused="student_features", entries=FILE_ENTRIES),
    Case("file-object-array", file=_npz(**{**_B, "teacher_features": np.array([None, 1.0], dtype=object)}),
         refused="teacher_features.*(object|pickle)", entries=FILE_ENTRIES),
    Case("file-pickle-suffix", file=_write("case.pkl", b"\x80\x04K\x01."), refused="\\.pkl|unsupported file type",
         entries=FILE_ENTRIES),
    Case("file-complex-features", file=_npz(**{**_B, "teacher_features": _B["teacher_features"] + 1j}),
         refused="teacher_features", entries=FILE_ENTRIES),
]

CASES: list[Case] = [*SCALES, *OFFSETS, *DTYPES, *LAYOUTS, *METHODS, *SHAPES, *DTYPE_ERRORS, *NUMERIC_LIMITS,
                     *OPTION_ERRORS, *FILES]
