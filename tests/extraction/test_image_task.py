"""The image task's pieces against direct computations from the models' own outputs.

Tiny random models built from configs (ViT, DeiT with its distillation token, ResNet, ConvNeXt, Swin)
are saved with an image processor to temporary folders and loaded back by path, as a user would.
Pooled features are checked against the model's ``hidden_states`` pooled by hand for every pooling;
FSS (the package's streamed linear CKA over batches of pooled rows) against an O(N^2) Gram-space CKA
of the hand-pooled states; AOAg against exp(-KL) computed from the logits with numpy.
timm and torchvision models are checked the same way where those libraries import.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowledge_retention._validation import InputError, InputTypeError
from knowledge_retention.agreement import ClassificationAgreementAccumulator
from knowledge_retention.extraction.layers import resolve_layer_pairs
from knowledge_retention.extraction.tasks.image import ImageClassificationTask
from knowledge_retention.extraction.tasks.image_inputs import (
    ImageSource,
    check_grids,
    pool_image_state,
    resolve_image_layers,
)
from knowledge_retention.extraction.tasks.image_models import import_torchvision
from knowledge_retention.similarity import LinearCKAAccumulator

import_torchvision()  # before transformers' image processors, which import torchvision when it is installed
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")

N_IMAGES = 10
NUM_LABELS = 5


# --- references --------------------------------------------------------------------------------------


def naive_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in Gram space: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with an explicit centring matrix."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: float(np.trace(a @ h @ b @ h))  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def exp_neg_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> float:
    """mean over examples of exp(-KL(softmax(teacher) || softmax(student)))."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lt, ls = log_softmax(teacher_logits.astype(np.float64)), log_softmax(student_logits.astype(np.float64))
    kl = (np.exp(lt) * (lt - ls)).sum(axis=1)
    return float(np.mean(np.exp(-kl)))


def by_hand(state: np.ndarray, pooling: str, prefix: int, grid: tuple[int, int] | None, k: int | None) -> np.ndarray:
    """Each pooling written out on numpy arrays, independently of the package."""
    if state.ndim == 3:  # ViT tokens: drop or take the prefix, lay the patches on their grid
        if pooling == "cls":
            return state[:, 0]
        patches = state[:, prefix:]
        if pooling == "mean":
            return patches.sum(axis=1) / patches.shape[1]
        assert grid is not None
        state = patches.reshape(state.shape[0], grid[0], grid[1], state.shape[2]).transpose(0, 3, 1, 2)
    b, c, h, w = state.shape
    if pooling == "mean":
        return state.sum(axis=(2, 3)) / (h * w)
    if pooling == "positions":
        return np.stack([state[i, :, y, x] for i in range(b) for y in range(h) for x in range(w)])
    if k is not None:  # adaptive average pool, written as PyTorch defines its bins
        pooled = np.empty((b, c, k, k))
        for i in range(k):
            for j in range(k):
                y0, y1 = (i * h) // k, -((-(i + 1) * h) // k)
                x0, x1 = (j * w) // k, -((-(j + 1) * w) // k)
                pooled[:, :, i, j] = state[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
        state = pooled
    return state.reshape(b, -1)


# --- fixtures ----------------------------------------------------------------------------------------


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (36 + 2 * (i % 3), 44, 3), dtype=np.uint8) for i in range(N_IMAGES)]


def _tiny(kind: str) -> tuple[torch.nn.Module, int]:
    """A tiny random classifier of each family and the image size its processor resizes to."""
    t = transformers
    vit = dict(patch_size=8, hidden_size=32, num_attention_heads=2, intermediate_size=64, num_labels=NUM_LABELS)
    if kind == "vit":
        return t.ViTForImageClassification(t.ViTConfig(image_size=32, num_hidden_layers=3, **vit)), 32
    if kind == "deit":
        return t.DeiTForImageClassificationWithTeacher(t.DeiTConfig(image_size=24, num_hidden_layers=2, **vit)), 24
    if kind == "resnet":
        config = t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], num_labels=NUM_LABELS)
        return t.ResNetForImageClassification(config), 40
    if kind == "convnext":
        config = t.ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], num_labels=NUM_LABELS)
        return t.ConvNextForImageClassification(config), 32
    config = t.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4,
                          num_labels=NUM_LABELS)
    return t.SwinForImageClassification(config), 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each tiny model saved with its image processor, as a local folder."""
    out = {}
    for kind in ("vit", "deit", "resnet", "convnext", "swin"):
        torch.manual_seed(len(out))
        model, size = _tiny(kind)
        folder = tmp_path_factory.mktemp(kind)
        model.save_pretrained(folder)
        transformers.ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
        out[kind] = str(folder)
    return out


def _direct(folder: str, images: list[np.ndarray]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Every hidden state and the logits, run by hand: the folder's processor, then the model."""
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    pixels = processor(images=[PIL.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    hidden = getattr(out, "reshaped_hidden_states", None) or out.hidden_states
    return tuple(h.double().numpy() for h in hidden), out.logits.double().numpy()


PREFIX = {"vit": 1, "deit": 2, "resnet": 0, "convnext": 0, "swin": 0}


def _run(task: ImageClassificationTask, runner, images, batch: int = 4):  # type: ignore[no-untyped-def]
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            idx = list(range(start, min(start + batch, len(images))))
            outs.append(runner([PIL.fromarray(images[i]) for i in idx], idx))
    return outs


# --- pooled features equal the hand-pooled hidden states ---------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "deit", "resnet", "convnext", "swin"])
def test_every_pooling_equals_the_hidden_states_pooled_by_hand(folders: dict[str, str], kind: str) -> None:
    images = _images()
    hidden, logits = _direct(folders[kind], images)
    poolings = ["mean", "flatten", "positions"] + (["cls"] if PREFIX[kind] else [])
    for pooling, grid_k in [(p, None) for p in poolings] + [("flatten", 2)]:
        task = ImageClassificationTask(flatten_grid=grid_k)
        runner = task.make_runner(folders[kind], role="teacher")
        outs = _run(task, runner, images)
        layers = list(range(len(hidden)))
        for layer in layers:
            got = np.concatenate([task.pool(o, [layer], pooling, runner=runner).features[layer].double().numpy()
                                  for o in outs])
            assert outs[0].prefix_tokens[layer] == (PREFIX[kind] if hidden[layer].ndim == 3 else 0)
            grid = outs[0].grids[layer]
            want = by_hand(hidden[layer], pooling, PREFIX[kind], grid, grid_k)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{kind} {pooling} layer {layer}")
        got_logits = np.concatenate([o.logits.double().numpy() for o in outs])
        np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)


def test_each_model_sees_its_own_image_size(folders: dict[str, str]) -> None:
    task = ImageClassificationTask()
    images = [PIL.fromarray(a) for a in _images()[:2]]
    sizes = {}
    for kind in ("resnet", "deit"):
        runner = task.make_runner(folders[kind], role=kind)
        with torch.inference_mode():
            runner(images, [0, 1])
        sizes[kind] = task.describe(runner, pooling="mean")["image_size"]
    assert sizes == {"resnet": [40, 40], "deit": [24, 24]}


def test_describe_says_what_was_pooled(folders: dict[str, str]) -> None:
    task = ImageClassificationTask()
    runner = task.make_runner(folders["deit"], role="student")
    _run(task, runner, _images()[:2])
    described = task.describe(runner, pooling="mean")
    assert described["prefix_tokens"] == 2 and described["prefix_tokens_pooled"] is False
    assert described["layer_names"] == ["embeddings", "layer_1", "layer_2"]
    assert described["backend"] == "transformers" and described["pooling"] == "mean"
    assert task.describe(runner, pooling="cls")["prefix_tokens_pooled"] is True


# --- FSS and AOAg against independent references -----------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "flatten", "cls"])
def test_fss_of_a_cnn_teacher_and_vit_student_equals_gram_cka(folders: dict[str, str], pooling: str) -> None:
    """ResNet teacher (5 states) vs ViT student (4 states): uniform pairs, CKA streamed over batches."""
    images = _images()
    teacher_kind, student_kind = ("vit", "deit") if pooling == "cls" else ("resnet", "vit")
    th, tl = _direct(folders[teacher_kind], images)
    sh, sl = _direct(folders[student_kind], images)
    task = ImageClassificationTask()
    teacher, student = task.make_runner(folders[teacher_kind], role="teacher"), task.make_runner(folders[student_kind], role="student")
    t_out, s_out = _run(task, teacher, images), _run(task, student, images)
    pairs = task.resolve_layers("uniform", len(th), len(sh))
    assert pairs == resolve_layer_pairs("uniform", len(th), len(sh))
    agreement = ClassificationAgreementAccumulator()
    for (t, s) in pairs:
        acc = LinearCKAAccumulator()
        for to, so in zip(t_out, s_out, strict=True):
            check_grids(to, so, pairs, pooling)
            acc.update(task.pool(to, [t], pooling).features[t].double().numpy(),
                       task.pool(so, [s], pooling).features[s].double().numpy())
        want = naive_cka(by_hand(th[t], pooling, PREFIX[teacher_kind], t_out[0].grids[t], None),
                         by_hand(sh[s], pooling, PREFIX[student_kind], s_out[0].grids[s], None))
        assert acc.compute() == pytest.approx(want, abs=1e-6)
    for to, so in zip(t_out, s_out, strict=True):
        agreement.update(to.logits.numpy(), so.logits.numpy())
    assert agreement.compute("kl") == pytest.approx(exp_neg_kl(tl, sl), abs=1e-6)


def test_positions_pairs_position_with_position_on_equal_grids(folders: dict[str, str]) -> None:
    images = _images()
    th, _ = _direct(folders["vit"], images)
    sh, _ = _direct(folders["convnext"], images)  # 32-px ConvNeXt stage 2: 4 x 4, as the ViT's 4 x 4 patches
    task = ImageClassificationTask()
    t_out = _run(task, task.make_runner(folders["vit"], role="teacher"), images)
    s_out = _run(task, task.make_runner(folders["convnext"], role="student"), images)
    acc = LinearCKAAccumulator()
    for to, so in zip(t_out, s_out, strict=True):
        check_grids(to, so, [(3, 2)], "positions")
        acc.update(task.pool(to, [3], "positions").features[3].numpy(), task.pool(so, [2], "positions").features[2].numpy())
    want = naive_cka(by_hand(th[3], "positions", 1, (4, 4), None), by_hand(sh[2], "positions", 0, None, None))
    assert acc.compute() == pytest.approx(want, abs=1e-6)
    with pytest.raises(InputError, match="equal grids.*teacher hidden state 3 is \\(4, 4\\).*student hidden state 1 is \\(8, 8\\)"):
        check_grids(t_out[0], s_out[0], [(3, 1)], "positions")
    check_grids(t_out[0], s_out[0], [(3, 1)], "mean")  # only positions needs equal grids


# --- layers ------------------------------------------------------------------------------------------


def test_uniform_layers_pair_a_deeper_student_with_every_teacher_stage() -> None:
    assert resolve_image_layers("uniform", 5, 13) == [(1, 3), (2, 6), (3, 9), (4, 12)]
    assert resolve_image_layers("all", 5, 13) == [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    assert resolve_image_layers("uniform", 13, 5) == resolve_layer_pairs("uniform", 13, 5)
    assert resolve_image_layers("final", 5, 13) == [(4, 12)]
    assert resolve_image_layers([(-1, 0)], 5, 13) == [(4, 0)]


# --- the sources -------------------------------------------------------------------------------------


def _pixels(source: ImageSource) -> list[np.ndarray]:
    images, _ = source.batch(range(len(source)))
    return [np.asarray(im.convert("RGB")) for im in images]


def test_every_dataset_layout_gives_the_same_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    arrays = _images()[:4]
    labels = [0, 1, 0, 1]
    for i, (array, label) in enumerate(zip(arrays, labels, strict=True)):
        (tmp_path / f"c{label}").mkdir(exist_ok=True)
        PIL.fromarray(array).save(tmp_path / f"c{label}" / f"{i}.png")
    folder = ImageSource(str(tmp_path), label_column="label")
    table = datasets.Dataset.from_dict({"image": [PIL.fromarray(a) for a in arrays], "label": labels})
    table = table.cast_column("image", datasets.Image())
    layouts = [
        ImageSource(table, label_column="label"),
        ImageSource({"image": arrays, "label": labels}, label_column="label"),
        ImageSource(arrays),
        ImageSource([PIL.fromarray(a) for a in arrays]),
    ]
    first = _pixels(layouts[0])
    for source in layouts[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(first, _pixels(source), strict=True))
    assert layouts[0].fingerprint() == layouts[1].fingerprint()  # images and labels
    assert layouts[2].fingerprint() == layouts[3].fingerprint()  # images only
    assert sorted(map(lambda a: a.tobytes(), _pixels(folder))) == sorted(map(lambda a: a.tobytes(), first))
    assert sorted(folder.batch(range(4))[1]) == sorted(labels)
    assert ImageSource(arrays, max_examples=2).fingerprint() != layouts[2].fingerprint()
    stacked = np.stack([a[:36] for a in arrays])  # one (N, H, W, C) array
    assert ImageSource(stacked).fingerprint() == ImageSource([a[:36] for a in arrays]).fingerprint()


def test_grey_images_are_converted_to_the_models_channels(folders: dict[str, str]) -> None:
    grey = [a[..., 0] for a in _images()[:2]]
    task = ImageClassificationTask()
    runner = task.make_runner(folders["resnet"], role="teacher")
    with torch.inference_mode():
        got = runner(ImageSource(grey).batch([0, 1])[0], [0, 1])
        want = runner([PIL.fromarray(g).convert("RGB") for g in grey], [0, 1])
    assert torch.equal(got.hidden_states[-1], want.hidden_states[-1])


def test_the_sources_refuse_what_they_cannot_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    with pytest.raises(InputTypeError, match="uint8"):
        ImageSource([np.zeros((4, 4, 3), dtype=np.float32)]).batch([0])
    with pytest.raises(InputError, match="shape"):
        ImageSource([np.zeros((4, 4, 2), dtype=np.uint8)]).batch([0])
    with pytest.raises(InputTypeError, match="DatasetDict with splits \\['train'\\]"):
        ImageSource(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [1]})}))
    with pytest.raises(InputError, match="`image_column='img'` is not a column.*\\['image'\\]"):
        ImageSource({"image": [np.zeros((2, 2), np.uint8)]}, image_column="img")
    with pytest.raises(InputError, match="no image folder"):
        ImageSource(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="empty"):
        ImageSource([])
    with pytest.raises(InputError, match="label_column"):
        ImageSource([np.zeros((2, 2), np.uint8)], label_column="label")


def test_poolings_refuse_what_they_cannot_do() -> None:
    cnn, tokens = torch.zeros(2, 4, 3, 3), torch.zeros(2, 10, 4)
    with pytest.raises(InputError, match="one of \\['mean', 'cls', 'flatten', 'positions'\\]"):
        pool_image_state(cnn, "last")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="CNN stage"):
        pool_image_state(cnn, "cls")
    with pytest.raises(InputError, match="no prefix token"):
        pool_image_state(tokens, "cls", prefix_tokens=0)
    with pytest.raises(InputError, match="grid"):
        pool_image_state(tokens, "flatten", prefix_tokens=1, grid=None, flatten_grid=2)
    with pytest.raises(InputError, match="positive int"):
        ImageClassificationTask(flatten_grid=0)
    with pytest.raises(InputTypeError, match="not an image model"):
        ImageClassificationTask().make_runner(torch.nn.Linear(2, 2), role="teacher")
    with pytest.raises(InputError, match="no model folder"):
        ImageClassificationTask().make_runner("/nonexistent/model", role="teacher")


def test_a_model_object_without_a_folder_needs_its_processor(folders: dict[str, str]) -> None:
    model, _ = _tiny("resnet")
    task = ImageClassificationTask()
    with pytest.raises(InputTypeError, match="`teacher_preprocessor` is required"):
        task.make_runner(model, role="teacher")
    processor = transformers.ViTImageProcessor(size={"height": 40, "width": 40})
    runner = task.make_runner(model, role="teacher", preprocessor=processor)
    assert runner.preprocessor is processor
    assert task.accepts(model) and task.accepts(folders["vit"]) and not task.accepts(torch.nn.Linear(2, 2))


def test_mean_pooling_ignores_the_order_of_positions() -> None:
    """An invariance: permuting the spatial positions (or the patches after the prefix) leaves mean unchanged."""
    gen = torch.Generator().manual_seed(0)
    cnn = torch.randn(3, 5, 4, 4, generator=gen, dtype=torch.float64)
    perm = torch.randperm(16, generator=gen)
    shuffled = cnn.flatten(2)[:, :, perm].reshape(3, 5, 4, 4)
    torch.testing.assert_close(pool_image_state(cnn, "mean"), pool_image_state(shuffled, "mean"))
    tokens = torch.randn(3, 18, 5, generator=gen, dtype=torch.float64)
    moved = torch.cat([tokens[:, :2], tokens[:, 2:][:, perm]], dim=1)
    torch.testing.assert_close(pool_image_state(tokens, "mean", prefix_tokens=2),
                               pool_image_state(moved, "mean", prefix_tokens=2))
    assert not torch.allclose(pool_image_state(tokens, "mean", prefix_tokens=2), tokens.mean(dim=1))
