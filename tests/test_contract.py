"""One input contract at every entry point: the same arrays give the same dict, the same mistake the same error.

The entry points: ``compute_krs`` (stacked ``(N, L, D)`` and a list of ``(N, D)`` layers), the evaluate
module (``compute`` at once, ``add_batch`` in uneven batches, ``add`` one example at a time), the
command line (``knowledge-retention arrays`` on a saved ``.npz``) and the Space's upload path
(``space_io.read_array_files`` -> ``parse_arrays`` -> ``space_results.score_arrays``). The report
takes an extraction result with the scores already computed and so is not an array entry point.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import knowledge_retention
from knowledge_retention import InputError, InputTypeError, compute_krs
from knowledge_retention._validation import as_layers
from knowledge_retention.cli import main as cli_main

evaluate = pytest.importorskip("evaluate")

SPACE = Path(__file__).resolve().parents[1] / "spaces_app"
N, L, D_T, D_S, C = 50, 3, 12, 6, 3


def _case(n_outputs: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """float64 arrays: (N, L, D) stacked features, (N, C) logits."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(N, L, D_T))
    s = t[..., :D_S] @ rng.normal(size=(D_S, D_S)) + 0.7 * rng.normal(size=(N, L, D_S))
    lt = rng.normal(size=(n_outputs, C)) * 2
    ls = lt + 0.8 * rng.normal(size=(n_outputs, C))
    return {"teacher_features": t, "student_features": s, "teacher_outputs": lt, "student_outputs": ls}


def _assert_same(result: dict[str, Any], expected: dict[str, Any], keys: tuple[str, ...] | None = None) -> None:
    for key in keys or tuple(expected):
        if isinstance(expected[key], float):
            assert abs(float(result[key]) - expected[key]) <= 1e-12, (key, result[key], expected[key])
        else:
            assert result[key] == expected[key], key


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    data = _case()
    # the reference: compute_krs on the layers given as a list, one (N, D) array per layer
    return compute_krs([data["teacher_features"][:, i] for i in range(L)],
                       [data["student_features"][:, i] for i in range(L)],
                       data["teacher_outputs"], data["student_outputs"], task="nlp")


@pytest.fixture
def metric(tmp_path: Path) -> Any:
    return evaluate.load(knowledge_retention.module_path(), cache_dir=str(tmp_path))


@pytest.fixture
def space_io_modules() -> tuple[Any, Any]:
    sys.path.insert(0, str(SPACE))
    try:
        import space_io
        import space_results
    finally:
        sys.path.remove(str(SPACE))
    return space_io, space_results


def _npz(tmp_path: Path, data: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "case.npz"
    np.savez(path, **data)
    return path


def test_the_layout_is_examples_first_everywhere() -> None:
    """(N, L, D) is read as L layers of (N, D); the old (L, N, D) reading of compute_krs is gone."""
    data = _case()
    layers = as_layers(data["teacher_features"], "teacher_features")
    assert len(layers) == L and all(np.array_equal(x, data["teacher_features"][:, i]) for i, x in enumerate(layers))
    stacked = compute_krs(data["teacher_features"], data["student_features"], data["teacher_outputs"],
                          data["student_outputs"], task="nlp")
    one_layer = compute_krs(data["teacher_features"][:, 0], data["student_features"][:, 0], data["teacher_outputs"],
                            data["student_outputs"], task="nlp")
    assert stacked["fss"] != pytest.approx(one_layer["fss"])  # several layers really were averaged
    with pytest.raises(InputError, match=r"`teacher_features` must be \(N, D\) for one layer, \(N, L, D\)"):
        compute_krs(np.zeros((2, 3, 4, 5)), data["student_features"], data["teacher_outputs"],
                    data["student_outputs"])
    with pytest.raises(InputError, match=r"`student_features\[1\]` must be one layer's \(N, D\) features"):
        compute_krs([data["teacher_features"][:, 0]] * 2, [data["student_features"][:, 0], data["student_features"]],
                    data["teacher_outputs"], data["student_outputs"])
    with pytest.raises(InputTypeError, match="`teacher_features` mixes arrays with other values"):
        as_layers([data["teacher_features"][:, 0], "layer 2"], "teacher_features")


def test_one_case_gives_the_same_dict_through_every_entry_point(
    expected: dict[str, Any], metric: Any, tmp_path: Path, space_io_modules: tuple[Any, Any], capsys: Any
) -> None:
    data = _case()
    results: dict[str, dict[str, Any]] = {}
    results["compute_krs (N, L, D)"] = compute_krs(*data.values(), task="nlp")
    results["evaluate compute"] = metric.compute(**data, task="nlp")
    for lo, hi in ((0, 7), (7, 31), (31, N)):
        metric.add_batch(**{k: v[lo:hi] for k, v in data.items()})
    results["evaluate add_batch"] = metric.compute(task="nlp")
    for i in range(N):
        metric.add(**{k: v[i] for k, v in data.items()})
    results["evaluate add"] = metric.compute(task="nlp")
    path = _npz(tmp_path, data)
    assert cli_main(["arrays", str(path), "--task", "nlp", "--json"]) == 0
    results["cli arrays"] = json.loads(capsys.readouterr().out)
    space_io, space_results = space_io_modules
    inputs = space_io.parse_arrays(space_io.read_array_files([path]))
    space = space_results.score_arrays(inputs, task="nlp", alpha=0.5)
    results["space upload"] = {"fss": space.fss, "aoag": space.aoag, "num_examples": space.num_examples,
                               "fss_method": space.fss_method, "aoag_method": space.aoag_method}
    for where, result in results.items():
        keys = tuple(result) if where == "space upload" else None
        try:
            _assert_same(result, expected, keys)
        except AssertionError as err:
            raise AssertionError(f"{where}: {err}") from None


def _bad_case() -> dict[str, np.ndarray]:
    return _case(n_outputs=40)  # 50 feature rows, 40 output rows


BAD_MESSAGE = ("Features and outputs must describe the same examples, one row each; got `teacher_features`: 50, "
               "`student_features`: 50, `teacher_outputs`: 40, `student_outputs`: 40 rows.")


def test_rows_of_features_and_outputs_must_match_with_one_message(metric: Any, tmp_path: Path, capsys: Any) -> None:
    data = _bad_case()
    messages = {}
    for where, call in {
        "compute_krs": lambda: compute_krs(*data.values(), task="nlp"),
        "compute_krs lists": lambda: compute_krs(list(np.moveaxis(data["teacher_features"], 1, 0)),
                                                 list(np.moveaxis(data["student_features"], 1, 0)),
                                                 data["teacher_outputs"], data["student_outputs"], task="nlp"),
        "evaluate compute": lambda: metric.compute(**data, task="nlp"),
        "evaluate add_batch": lambda: metric.add_batch(**data),
    }.items():
        with pytest.raises(InputError) as info:
            call()
        messages[where] = str(info.value)
    path = _npz(tmp_path, data)
    assert cli_main(["arrays", str(path), "--task", "nlp"]) == 2
    messages["cli arrays"] = capsys.readouterr().err.strip().removeprefix("knowledge-retention: error: ")
    assert messages == dict.fromkeys(messages, BAD_MESSAGE)


def test_the_space_refuses_the_same_case_with_the_same_message(tmp_path: Path, space_io_modules: tuple[Any, Any]) -> None:
    space_io, _ = space_io_modules
    path = _npz(tmp_path, _bad_case())
    with pytest.raises(ValueError) as info:
        space_io.parse_arrays(space_io.read_array_files([path]))
    assert str(info.value) == BAD_MESSAGE


def test_two_examples_are_refused_and_three_are_scored_with_the_small_n_warning(
    metric: Any, space_io_modules: tuple[Any, Any]
) -> None:
    space_io, space_results = space_io_modules
    data = _case()
    two = {k: v[:2] for k, v in data.items()}
    why = "needs at least 3 examples, got 2: two centred points are always aligned"
    with pytest.raises(InputError, match=why):
        compute_krs(*two.values(), task="nlp")
    with pytest.raises(InputError, match=why):
        metric.compute(**two, task="nlp")
    with pytest.raises(ValueError, match=why):
        space_results.score_arrays(space_io.parse_arrays(two), task="nlp", alpha=0.5)
    three = {k: v[:3] for k, v in data.items()}
    result = space_results.score_arrays(space_io.parse_arrays(three), task="nlp", alpha=0.5)
    assert abs(result.fss - compute_krs(*three.values(), task="nlp")["fss"]) <= 1e-12
    assert "Only 3 examples: linear CKA is biased upwards" in space_results.summary_markdown(result, 0.5)


# ---- issue 20: `knowledge-retention arrays` flags: segmentation's void label, the decompressed ceiling, ambiguity ----


def _segmentation_case(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = _case(seed=seed)
    masks = rng.integers(0, 3, size=(N, 4, 4))
    masks[:, 0, 0] = 255
    return {**data, "teacher_outputs": masks, "student_outputs": np.where(rng.random((N, 4, 4)) < 0.8, masks, 1)}


def test_cli_arrays_takes_ignore_index_like_compute_krs(tmp_path: Path, capsys: Any) -> None:
    data = _segmentation_case()
    path = _npz(tmp_path, data)
    assert cli_main(["arrays", str(path), "--task", "segmentation", "--ignore-index", "255", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    _assert_same(got, compute_krs(*data.values(), task="segmentation", ignore_index=255))
    assert got["aoag"] != compute_krs(*data.values(), task="segmentation")["aoag"]


@pytest.mark.parametrize("flags, match", [
    (["--task", "nlp", "--max-mse", "-5"], "`--max-mse` must be a finite number > 0"),
    (["--task", "regression", "--temperature", "-1"], "`--temperature` must be a finite number > 0"),
    (["--max-decompressed-mb", "-1"], "--max-decompressed-mb: expected a size in MB >= 0"),
])
def test_cli_arrays_checks_every_flag_before_reading_the_file(tmp_path: Path, capsys: Any, flags: list[str],
                                                              match: str) -> None:
    assert cli_main(["arrays", str(tmp_path / "absent.npz"), *flags]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "absent.npz" not in err and err.count("\n") == 1


def test_cli_arrays_has_the_space_s_decompressed_ceiling_and_a_flag_to_lift_it(
    tmp_path: Path, capsys: Any, space_io_modules: tuple[Any, Any]
) -> None:
    from knowledge_retention._io import DEFAULT_MAX_ARRAY_BYTES
    from knowledge_retention.cli import build_parser

    default = build_parser().parse_args(["arrays", "x.npz"]).max_decompressed_mb
    assert default * 2**20 == DEFAULT_MAX_ARRAY_BYTES == space_io_modules[0].MAX_ARRAY_BYTES  # the Space's ceiling
    data = _case()
    path = tmp_path / "big.npz"
    np.savez_compressed(path, **data, padding=np.zeros((300, 1000)))  # 2.4 MB once decompressed, a few KB on disk
    assert cli_main(["arrays", str(path), "--task", "nlp", "--max-decompressed-mb", "1"]) == 2
    assert "more than the 1.0 MB accepted" in capsys.readouterr().err
    assert cli_main(["arrays", str(path), "--task", "nlp", "--max-decompressed-mb", "0", "--json"]) == 0
    _assert_same(json.loads(capsys.readouterr().out.splitlines()[-1]), compute_krs(*data.values(), task="nlp"))


def test_cli_arrays_refuses_two_names_for_one_array_as_the_space_does(tmp_path: Path, capsys: Any) -> None:
    data = _case()
    path = _npz(tmp_path, {**data, "teacher_logits": data["teacher_outputs"]})
    assert cli_main(["arrays", str(path), "--task", "nlp"]) == 2
    assert "both 'teacher_outputs' and 'teacher_logits'" in capsys.readouterr().err
