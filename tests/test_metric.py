"""The evaluate module: loading, streaming, evaluate's multi-process mode and errors."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate")

import knowledge_retention  # noqa: E402
from knowledge_retention import compute_krs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _data(n=45, layers=None, seed=0):
    rng = np.random.default_rng(seed)
    shape_t = (n, 16) if layers is None else (n, layers, 16)
    shape_s = (n, 8) if layers is None else (n, layers, 8)
    t = rng.normal(size=shape_t).astype(np.float32)
    s = (t[..., :8] + 0.5 * rng.normal(size=shape_s)).astype(np.float32)
    lt = rng.normal(size=(n, 3)).astype(np.float32)
    ls = (lt + 0.4 * rng.normal(size=(n, 3))).astype(np.float32)
    return {"teacher_features": t, "student_features": s, "teacher_outputs": lt, "student_outputs": ls}


def _direct(data, **options):
    t, s = data["teacher_features"], data["student_features"]
    if t.ndim == 3:
        t, s = list(np.moveaxis(t, 1, 0)), list(np.moveaxis(s, 1, 0))
    return compute_krs(t, s, data["teacher_outputs"], data["student_outputs"], **options)


@pytest.fixture
def metric(tmp_path):
    return evaluate.load(knowledge_retention.module_path(), cache_dir=str(tmp_path))


def test_load_from_repository_root_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    module = evaluate.load("knowledge_retention", cache_dir=str(tmp_path))
    assert type(module).__name__ == "KnowledgeRetention"
    assert "teacher_features" in module.features


@pytest.mark.parametrize("layers", [None, 3])
def test_compute_equals_direct_call(metric, layers):
    data = _data(layers=layers)
    out = metric.compute(**data, task="nlp")
    expected = _direct(data, task="nlp")
    for key in ("krs", "fss", "aoag"):
        assert out[key] == pytest.approx(expected[key], rel=1e-6)
    assert out["alpha"] == 0.5 and out["num_examples"] == 45


def test_add_batch_and_add_equal_one_compute(metric):
    data = _data(n=50)
    for lo in range(0, 48, 16):
        metric.add_batch(**{k: v[lo : lo + 16] for k, v in data.items()})
    for i in range(48, 50):
        metric.add(**{k: v[i] for k, v in data.items()})
    out = metric.compute(task="classification", fss_method="debiased_cka", aoag_method="js", temperature=2.0)
    expected = _direct(data, task="classification", fss_method="debiased_cka", aoag_method="js", temperature=2.0)
    assert out["krs"] == pytest.approx(expected["krs"], rel=1e-6)


def test_torch_tensors_and_lists(metric):
    torch = pytest.importorskip("torch")
    data = _data(n=20)
    metric.add_batch(**{k: torch.from_numpy(v[:10]) for k, v in data.items()})
    metric.add_batch(**{k: v[10:].tolist() for k, v in data.items()})
    assert metric.compute(task="nlp")["krs"] == pytest.approx(_direct(data, task="nlp")["krs"], rel=1e-6)


def _worker(args):
    process_id, cache_dir, shard = args
    module = evaluate.load(
        knowledge_retention.module_path(), num_process=2, process_id=process_id, experiment_id="krs-test", cache_dir=cache_dir
    )
    module.add_batch(**shard)
    return module.compute(task="nlp")


def test_multi_process_mode_equals_single_process(tmp_path):
    data = _data(n=37)
    shards = [{k: v[:20] for k, v in data.items()}, {k: v[20:] for k, v in data.items()}]
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_worker, [(i, str(tmp_path), shards[i]) for i in range(2)])
    assert results[1] is None
    expected = _direct(data, task="nlp")
    assert results[0]["num_examples"] == 37
    assert results[0]["krs"] == pytest.approx(expected["krs"], rel=1e-6)


def test_regression_and_segmentation_through_evaluate(metric, tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(30, 5))
    y = rng.normal(size=30)
    out = metric.compute(teacher_features=feats, student_features=feats, teacher_outputs=y, student_outputs=y + 0.2, task="regression")
    assert out["aoag"] == pytest.approx(compute_krs(feats, feats, y, y + 0.2, task="regression")["aoag"], rel=1e-6)
    seg = evaluate.load(knowledge_retention.module_path(), cache_dir=str(tmp_path / "seg"))
    masks = rng.integers(0, 3, size=(30, 4, 4))
    noisy = np.where(rng.random(masks.shape) < 0.8, masks, 0)
    res = seg.compute(teacher_features=feats, student_features=feats, teacher_outputs=masks, student_outputs=noisy, task="segmentation")
    assert res["aoag"] == pytest.approx(compute_krs(feats, feats, masks, noisy, task="segmentation")["aoag"])


@pytest.mark.parametrize(
    ("change", "options", "match"),
    [
        ({"student_features": np.ones((44, 8))}, {}, "same examples, one row each; got .*`student_features`: 44"),
        ({"teacher_outputs": np.full((45, 3), 1 / 3)}, {}, "look like probabilities"),
        ({"student_outputs": np.zeros((45, 2))}, {}, "same classes"),
        ({}, {"alpha": 0.5, "beta": 0.7}, "must equal 1"),
        ({}, {"fss_method": "svcca"}, "`fss_method` must be one of"),
        ({"teacher_features": np.ones((45, 16))}, {}, "`teacher_features` are constant"),
        ({"teacher_features": np.full((45, 16), np.nan)}, {}, "NaN or Inf"),
    ],
)
def test_errors_reach_the_user_with_names(metric, change, options, match):
    data = {**_data(), **change}
    with pytest.raises(ValueError, match=match):
        metric.compute(**data, task="nlp", **options)


def test_shape_change_between_batches_is_refused(metric):
    data = _data(n=20)
    metric.add_batch(**{k: v[:10] for k, v in data.items()})
    with pytest.raises(ValueError, match="per-example shapes differ"):
        metric.add_batch(**{**{k: v[10:] for k, v in data.items()}, "student_features": np.ones((10, 4))})


def test_float64_inputs_keep_their_precision(metric):
    """float64 in, the same numbers as compute_krs out (float32 storage differed by up to 2.5e-5)."""
    data = {k: v.astype(np.float64) + 1e-3 * np.random.default_rng(1).normal(size=v.shape) for k, v in _data().items()}
    out = metric.compute(**data, task="nlp", fss_method="debiased_cka")
    expected = _direct(data, task="nlp", fss_method="debiased_cka")
    for key in ("krs", "fss", "aoag"):
        assert abs(out[key] - expected[key]) <= 1e-12


def test_finite_values_beyond_float32_range_are_scored(metric):
    data = _data()
    big = {**data, "teacher_features": data["teacher_features"].astype(np.float64) * 1e39}
    out = metric.compute(**big, task="nlp")  # float32 storage turned these into Inf ("NaN or Inf")
    assert out["fss"] == pytest.approx(_direct(data, task="nlp")["fss"], rel=1e-9)  # CKA is scale invariant


def test_a_dtype_change_between_batches_is_not_a_shape_change(metric):
    data = {k: np.round(4 * v) for k, v in _data(n=20).items()}  # whole numbers: exact in every dtype below
    metric.add_batch(**{k: v[:10].astype(np.int64) for k, v in data.items()})  # int, then floats
    metric.add_batch(**{k: v[10:19].astype(np.float64) for k, v in data.items()})
    metric.add_batch(**{k: v[19:].astype(np.float16) for k, v in data.items()})
    expected = _direct(data, task="nlp")
    assert metric.compute(task="nlp")["krs"] == pytest.approx(expected["krs"], abs=1e-12)


@pytest.mark.parametrize("how", ["compute", "add_batch", "add"])
def test_complex_input_is_refused_not_truncated(metric, how):
    data = _data(n=10)
    data["student_features"] = data["student_features"] + 1j
    call = getattr(metric, how)
    with pytest.raises(knowledge_retention.InputTypeError, match="`student_features` must hold real numbers, got complex"):
        call(**({k: v[0] for k, v in data.items()} if how == "add" else data))


@pytest.mark.parametrize("how", ["compute", "add_batch", "add"])
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (None, knowledge_retention.InputTypeError, "`teacher_outputs` is required, got None"),
        ("logits", knowledge_retention.InputTypeError, "`teacher_outputs` must be an array of numbers, got a str"),
        ("empty", knowledge_retention.InputError, r"`teacher_outputs` is empty: shape \(0"),
        ("scalar", knowledge_retention.InputError, "`teacher_outputs` must be a batch with one row per example; got a scalar"),
    ],
)
def test_empty_scalar_and_none_inputs_get_named_errors(metric, how, value, error, match):
    data = _data(n=10)
    if how == "add":
        example = {k: v[0] for k, v in data.items()}
        if value == "scalar":
            example["teacher_features"] = np.float32(1.0)
            error, match = knowledge_retention.InputError, "`teacher_features` for one example must be a 1-D array or a 2-D"
        else:
            example["teacher_outputs"] = np.zeros(0) if value == "empty" else value
            if value == "empty":
                match = r"`teacher_outputs` is empty: shape \(1, 0\)"
        with pytest.raises(error, match=match):
            metric.add(**example)
        return
    data["teacher_outputs"] = {"empty": np.zeros((0, 3)), "scalar": np.float32(2.0)}.get(value, value)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        getattr(metric, how)(**data)


def test_compute_with_nothing_added_says_so(metric):
    with pytest.raises(knowledge_retention.InputError, match="No examples to score: pass `teacher_features`"):
        metric.compute(task="nlp")
    with pytest.raises(knowledge_retention.InputError, match="This metric takes `teacher_features`.*got `predictions`"):
        metric.add_batch(predictions=[1, 2], references=[1, 2])


def test_add_accepts_what_add_batch_accepts(metric, tmp_path):
    torch = pytest.importorskip("torch")
    data = _data(n=12)
    tensors = {k: torch.from_numpy(v).to(torch.bfloat16).requires_grad_(True) for k, v in data.items()}
    for i in range(12):
        metric.add(**{k: v[i] for k, v in tensors.items()})
    one_by_one = metric.compute(task="nlp")
    batched = evaluate.load(knowledge_retention.module_path(), cache_dir=str(tmp_path / "b"))
    batched.add_batch(**tensors)
    assert one_by_one == batched.compute(task="nlp")
    as_float = {k: v.detach().float().numpy() for k, v in tensors.items()}
    assert one_by_one["krs"] == pytest.approx(_direct(as_float, task="nlp")["krs"], abs=1e-12)


def test_module_folder_is_pushable_as_is():
    folder = Path(knowledge_retention.module_path())
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "tags:" in card.split("---")[1]
    assert (folder / "knowledge_retention.py").exists()
    assert os.path.exists(folder / "requirements.txt")


def test_metric_card_examples_run():
    import doctest

    card = Path(knowledge_retention.module_path()) / "README.md"
    result = doctest.testfile(str(card), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# ---- issue 20: layers are layers, options checked first, examples kept after a refusal ---------------------------

from knowledge_retention import InputError  # noqa: E402


def test_a_list_of_per_layer_arrays_is_layers_even_when_n_equals_l(metric):
    """The issue's case: L = N = 5 arrays of (N, D) were read as 5 examples of (L, D)."""
    rng = np.random.default_rng(3)
    t = [rng.normal(size=(5, 4)) for _ in range(5)]
    s = [x[:, :3] + 0.5 * rng.normal(size=(5, 3)) for x in t]
    lt, ls = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    out = metric.compute(teacher_features=t, student_features=s, teacher_outputs=lt, student_outputs=ls, task="nlp")
    assert out == compute_krs(t, s, lt, ls, task="nlp")
    with pytest.raises(InputError, match="every layer must have the same width"):
        metric.add_batch(teacher_features=[t[0], t[1][:, :2]], student_features=s[:2], teacher_outputs=lt,
                         student_outputs=ls)


@pytest.mark.parametrize("options, match", [
    ({"bogus": 1}, "Unknown option\\(s\\) `bogus`"),
    ({"task": "nlp", "max_mse": -5}, "`max_mse` must be a finite number > 0"),
    ({"task": "regression", "temperature": -1}, "`temperature` must be a finite number > 0"),
    ({"task": "segmentation", "inputs": "bogus"}, "`inputs` must be one of"),
    ({"task": "nlp", "fss_method": "debiased_cka"}, "at least 4 examples"),
])
def test_examples_stay_after_a_refused_compute(metric, options, match):
    data = _data(n=3)
    metric.add_batch(**data)
    with pytest.raises(InputError, match=match):
        metric.compute(**options)
    assert metric.compute(task="nlp") == _direct(data, task="nlp")  # the three examples were kept


def test_ignore_index_reaches_the_evaluate_module(metric):
    rng = np.random.default_rng(4)
    data = _data(n=20)
    masks_t = rng.integers(0, 3, size=(20, 4, 4))
    masks_t[:, 0, 0] = 255
    masks_s = np.where(rng.random((20, 4, 4)) < 0.8, masks_t, rng.integers(0, 3, size=(20, 4, 4)))
    out = metric.compute(teacher_features=data["teacher_features"], student_features=data["student_features"],
                         teacher_outputs=masks_t, student_outputs=masks_s, task="segmentation", ignore_index=255)
    assert out == _direct({**data, "teacher_outputs": masks_t, "student_outputs": masks_s}, task="segmentation",
                          ignore_index=255)


def test_an_empty_batch_is_a_no_op(metric):
    data = _data(n=12)
    metric.add_batch(**{k: v[:0] for k, v in data.items()})
    metric.add_batch(**data)
    metric.add_batch(**{k: v[:0] for k, v in data.items()})
    assert metric.compute(task="nlp") == _direct(data, task="nlp")
    with pytest.raises(InputError, match="No examples to score"):
        metric.compute(**{k: v[:0] for k, v in data.items()})
