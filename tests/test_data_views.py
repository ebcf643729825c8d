"""Crop, reflection and ten-view geometry; the randomness; the colour noise (Sec. 4.1).

The batched device path (`views.cut`, `views.finish`, the loader) is checked against
`reference_batch`: one image at a time, numpy slicing at the drawn corner, reflection
by `[..., ::-1]`, minus the mean crop, plus the colour shift (issue 15).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from split_alexnet.compiled import native
from split_alexnet.data import PairLoader, dataset_stats, preprocess, views
from split_alexnet.data.folder import UnreadableImage, rescale_256
from split_alexnet.data.source import CacheSource
from split_alexnet.data.views import (
    TEN_VIEW_OFFSETS,
    augmentation,
    colour_shift,
    compile_finish,
    corners,
    crop,
    cut,
    finish,
    reflect,
)
from tests.operator_calls import OperatorCalls
from tests.test_data_helpers import make_folder

TEN = ((0, 0), (0, 32), (16, 16), (32, 0), (32, 32))  # convdata.py's order, then reflected


def coordinate_image() -> np.ndarray:
    """image[c, y, x] encodes (c, y, x) uniquely in two uint8 planes: y and x and c."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(256), np.arange(256), indexing="ij")
    return np.stack([y, x, c]).astype(np.uint8)  # (3 codes, 3, 256, 256)


def patch(image: np.ndarray, row: int, col: int, flip: bool) -> np.ndarray:
    """The reference crop: plain numpy slicing of one (3, 256, 256) image."""
    view = image[:, row : row + 224, col : col + 224]
    return view[..., ::-1] if flip else view


def reference_batch(source, indices, views, seed, epoch, stats, noise):
    """(images, labels) the loader must yield for sample `indices`, one image at a time:
    float32 patch minus the mean crop, plus the colour shift (then / 1.1 for the code's
    noise; `noise` "off" for none). Unreadable images are left out, as the loader does."""
    rows, cols, flips, alpha = augmentation(seed, epoch, indices)
    kept, samples = [], []
    for k, i in enumerate(indices):
        try:
            image = np.asarray(source.image(int(i)))
        except UnreadableImage:
            continue
        if views == "random":
            cuts = [patch(image, rows[k], cols[k], flips[k])]
        elif views == "center":
            cuts = [patch(image, 16, 16, False)]
        else:
            cuts = [patch(image, r, c, flip) for flip in (False, True) for r, c in TEN]
        samples.append(np.stack(cuts).astype(np.float32) - stats.mean_crop().numpy())
        kept.append(k)
    x = np.stack(samples)  # (n, views, 3, 224, 224)
    if noise != "off":
        shift = colour_shift(
            torch.from_numpy(alpha[kept]), stats.eigenvalues, stats.eigenvectors, noise
        ).numpy()
        x = x + shift[:, None, :, None, None]
        if noise == "code":
            x = x / np.float32(1.1)
    labels = torch.from_numpy(source.labels[indices[kept]])
    return torch.from_numpy(x if views == "ten" else x[:, 0]), labels


def expected_batches(source, loader: PairLoader, epoch: int, stats, noise: str):
    """reference_batch for every batch of `loader`'s epoch (one replica, no pair)."""
    order, size = loader.order(epoch), loader.batch_size
    return [
        reference_batch(source, order[b * size : (b + 1) * size], loader.views, loader.seed,
                        epoch, stats, noise)
        for b in range(len(loader))
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = make_folder(tmp_path_factory.mktemp("views"))
    return preprocess(folder, folder.parent / "cache")[0]


@pytest.mark.parametrize(
    "views, split, noise",
    [("random", "train", "paper"), ("random", "train", "code"), ("random", "train", "off"),
     ("center", "val", "off"), ("ten", "val", "off"), ("ten", "train", "code")],
)  # fmt: skip
def test_loader_batches_equal_the_image_by_image_reference(cache, views, split, noise):
    stats = dataset_stats(cache)
    train = noise != "off" or views == "random"
    loader = PairLoader(
        cache, split, 4, train=train, views=views, stats=stats, seed=5, colour_noise=noise
    )
    loader.set_epoch(2)
    expected = expected_batches(CacheSource(cache, split), loader, 2, stats, noise)
    got = list(loader)
    assert len(got) == len(expected) > 1
    for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
        assert torch.equal(y, y_ref)
        assert x.dtype == x_ref.dtype and torch.equal(x, x_ref)


def batch_of(images: np.ndarray, views: str, rows, cols, flips) -> torch.Tensor:
    """`cut` on a numpy batch, its draws given as the host makes them."""
    corner_rows, corner_cols = corners(views, np.asarray(rows), np.asarray(cols))
    draws = (corner_rows, corner_cols, np.asarray(flips, dtype=bool))
    return cut(torch.from_numpy(images), *map(torch.from_numpy, draws), views)


def test_cut_equals_numpy_slicing_of_each_image():
    rng = np.random.Generator(np.random.PCG64(3))
    images = rng.integers(0, 256, (9, 3, 256, 256), dtype=np.uint8)
    rows, cols = rng.integers(0, 33, 9), rng.integers(0, 33, 9)
    flips = np.arange(9) % 3 == 0
    drawn = batch_of(images, "random", rows, cols, flips)
    centre = batch_of(images, "center", rows, cols, flips)
    tens = batch_of(images, "ten", rows, cols, flips)
    assert drawn.shape == centre.shape == (9, 3, 224, 224) and tens.shape == (9, 10, 3, 224, 224)
    for k, image in enumerate(images):
        assert torch.equal(
            drawn[k], torch.from_numpy(patch(image, rows[k], cols[k], flips[k]).copy())
        )
        assert torch.equal(centre[k], torch.from_numpy(patch(image, 16, 16, False).copy()))
        ten = [patch(image, r, c, flip) for flip in (False, True) for r, c in TEN]
        assert torch.equal(tens[k], torch.from_numpy(np.stack(ten)))


def test_reflect_equals_numpy_reversal():
    rng = np.random.Generator(np.random.PCG64(4))
    cuts = rng.integers(0, 256, (6, 3, 224, 224), dtype=np.uint8)
    flips = np.array([True, False, True, True, False, False])
    expected = torch.from_numpy(np.where(flips[:, None, None, None], cuts[..., ::-1], cuts))
    assert torch.equal(reflect(torch.from_numpy(cuts), torch.from_numpy(flips)), expected)


def test_cut_of_no_images_is_empty():
    none = np.zeros((0, 3, 256, 256), dtype=np.uint8)
    assert batch_of(none, "random", [], [], []).shape == (0, 3, 224, 224)
    assert batch_of(none, "ten", [], [], []).shape == (0, 10, 3, 224, 224)


def where(patch: torch.Tensor):
    """(row, column) of the source pixel at each corner of a coded patch."""
    return patch[0].numpy(), patch[1].numpy()


def test_crop_reads_rows_and_columns_at_its_offset():
    codes = coordinate_image()
    rows, cols = (crop(codes[k], 5, 17, False) for k in (0, 1))
    assert rows[0, 0, 0] == 5 and cols[0, 0, 0] == 17
    assert rows[0, 223, 223] == 228 and cols[0, 223, 223] == 240
    assert torch.equal(rows[0], torch.arange(5, 229, dtype=torch.uint8)[:, None].expand(224, 224))


def test_reflection_reverses_columns_only():
    codes = coordinate_image()
    drawn = batch_of(codes, "random", [32, 32, 0], [0, 0, 5], [True, True, False])
    for rows, cols in ((crop(codes[0], 32, 0, True), crop(codes[1], 32, 0, True)), drawn[:2]):
        assert cols[0, 0, 0] == 223 and cols[0, 0, 223] == 0
        assert rows[0, 0, 0] == 32 and rows[0, 223, 0] == 255
    assert torch.equal(drawn[2, :, 0, 0], torch.tensor([0, 1, 2], dtype=torch.uint8))


def test_ten_views_are_corners_centre_then_reflections():
    assert TEN_VIEW_OFFSETS == TEN
    codes = coordinate_image()
    tens = batch_of(codes, "ten", [0, 0, 0], [0, 0, 0], [True, True, True])  # flips unused
    rows, cols = tens[0], tens[1]
    assert rows.shape == (10, 3, 224, 224)
    top_left = [(int(rows[v, 0, 0, 0]), int(cols[v, 0, 0, 0])) for v in range(10)]
    assert top_left == [
        (0, 0), (0, 32), (16, 16), (32, 0), (32, 32),        # as cut
        (0, 223), (0, 255), (16, 239), (32, 223), (32, 255),  # reflected: left column = old right
    ]  # fmt: skip
    assert torch.equal(tens[2][:, :, 0, 0], torch.tensor([[0, 1, 2]] * 10, dtype=torch.uint8))


def test_rescale_keeps_a_256_high_image_and_cuts_the_central_columns():
    image = torch.from_numpy(coordinate_image()[1][:, :, :256].repeat(2, axis=2)[:, :, :320].copy())
    out = rescale_256(image)
    assert out.shape == (3, 256, 256)
    assert torch.equal(out, image[:, :, 32:288])


def test_rescale_makes_the_shorter_side_256():
    assert rescale_256(torch.zeros(3, 375, 500, dtype=torch.uint8)).shape == (3, 256, 256)
    assert rescale_256(torch.zeros(3, 600, 200, dtype=torch.uint8)).shape == (3, 256, 256)


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    everything = augmentation(7, 3, np.arange(50))
    some = augmentation(7, 3, np.array([41, 2, 17]))
    for full, part in zip(everything, some, strict=True):
        np.testing.assert_array_equal(full[[41, 2, 17]], part)
    other_epoch = augmentation(7, 4, np.arange(50))
    assert not np.array_equal(everything[0], other_epoch[0])
    assert not np.array_equal(everything[3], augmentation(8, 3, np.arange(50))[3])


def test_crop_offsets_cover_0_to_32_uniformly_and_flip_half():
    rows, cols, flips, _ = augmentation(0, 0, np.arange(66_000))
    assert rows.min() == 0 and rows.max() == 32 and cols.max() == 32
    counts = np.bincount(rows, minlength=33)
    assert counts.min() > 1700 and counts.max() < 2300  # 2000 expected each
    assert abs(flips.mean() - 0.5) < 0.01


def pca_stats():
    eigenvalues = torch.tensor([9000.0, 900.0, 90.0])
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 0.3, 0.2], [0.9, -0.5, 0.1], [0.8, 0.2, -0.7]]))
    return eigenvalues, q


def test_alpha_is_normal_with_std_0_1():
    _, _, _, alpha = augmentation(1, 0, np.arange(200_000))
    assert alpha.shape == (200_000, 3)
    assert np.abs(alpha.mean(0)).max() < 0.001
    np.testing.assert_allclose(alpha.std(0), 0.1, rtol=0.01)
    assert abs(np.corrcoef(alpha.T)[0, 1]) < 0.01


def test_paper_colour_noise_has_std_0_1_lambda_along_p_in_unit_pixels():
    eigenvalues, vectors = pca_stats()
    _, _, _, alpha = augmentation(2, 0, np.arange(200_000))
    shift = colour_shift(torch.from_numpy(alpha), eigenvalues, vectors, "paper")
    along = (shift @ vectors).numpy() / 255.0  # coordinates along p_i, pixels in [0, 1]
    np.testing.assert_allclose(along.mean(0), 0.0, atol=0.1 * 9000 / 255**2 * 0.01)
    np.testing.assert_allclose(along.std(0), 0.1 * eigenvalues.numpy() / 255**2, rtol=0.01)


def test_code_colour_noise_has_std_0_1_sqrt_lambda_then_divides_by_1_1():
    eigenvalues, vectors = pca_stats()
    _, _, _, alpha = augmentation(3, 0, np.arange(200_000))
    shift = colour_shift(torch.from_numpy(alpha), eigenvalues, vectors, "code")
    np.testing.assert_allclose(
        (shift @ vectors).numpy().std(0), 0.1 * eigenvalues.sqrt(), rtol=0.01
    )
    views = torch.full((2, 3, 224, 224), 100, dtype=torch.uint8)
    mean = torch.full((3, 224, 224), 40.0)
    step = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    out = finish(views, mean, step, "code")
    assert torch.allclose(out[0, :, 5, 7], torch.tensor([61.0, 62.0, 63.0]) / 1.1)
    assert torch.equal(finish(views, mean, step, "paper")[0, :, 0, 0], torch.tensor([61.0, 62, 63]))
    assert torch.equal(finish(views, mean, step, "off"), torch.full((2, 3, 224, 224), 60.0))


@pytest.fixture
def compiled_finish(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    monkeypatch.setattr(views.KERNELS, "compiled", {})
    yield
    compile_finish(False)
    torch._dynamo.reset()


@pytest.mark.parametrize("shape, noise", [((3,), "paper"), ((3,), "code"), ((10, 3), "off")])
def test_compiled_finish_equals_the_eager_passes_bit_for_bit(compiled_finish, shape, noise):
    """One fused loop, (float(u8) - mean) + shift then / 1.1 per element, at two batch sizes."""
    generator = torch.Generator().manual_seed(6)
    mean = torch.rand(3, 224, 224, generator=generator) * 255
    for n in (4, 3):
        cuts = torch.randint(0, 256, (n, *shape, 224, 224), dtype=torch.uint8, generator=generator)
        step = torch.randn(n, 3, generator=generator) * 20
        compile_finish(False)
        eager = finish(cuts, mean, step, noise)
        compile_finish(True)
        assert torch.equal(finish(cuts, mean, step, noise), eager)
        assert views.KERNELS.compiled["finish"] is not False  # compiled, not the eager fallback


@pytest.mark.parametrize("noise", ["paper", "code", "off"])
def test_one_pass_cut_and_finish_equals_the_batched_ops_bit_for_bit(noise):
    """compile_finish's C++ pass for training's random views (compiled/cut_finish.cpp):
    the extreme corners, both reflections, each noise mode."""
    generator = torch.Generator().manual_seed(8)
    images = torch.randint(0, 256, (5, 3, 256, 256), dtype=torch.uint8, generator=generator)
    rows = torch.tensor([[0], [32], [7], [32], [0]])
    cols = torch.tensor([[32], [0], [13], [32], [0]])
    flips = torch.tensor([True, False, True, True, False])
    mean = torch.rand(3, 224, 224, generator=generator) * 255
    shift = torch.randn(5, 3, generator=generator) * 20
    expected = finish(cut(images, rows, cols, flips, "random"), mean, shift, noise)
    compile_finish(True)
    try:
        with OperatorCalls() as calls:
            got = views.cut_and_finish(images, rows, cols, flips, "random", mean, shift, noise)
    finally:
        compile_finish(False)
    assert "split_alexnet.cut_finish" in calls.names
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_the_one_pass_loader_equals_the_image_by_image_reference(cache):
    stats = dataset_stats(cache)
    loader = PairLoader(
        cache, "train", 4, train=True, views="random", stats=stats, seed=5, colour_noise="code"
    )
    loader.set_epoch(2)
    expected = expected_batches(CacheSource(cache, "train"), loader, 2, stats, "code")
    compile_finish(True)
    try:
        got = list(loader)
    finally:
        compile_finish(False)
    assert len(got) == len(expected) > 1
    for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


def test_a_patch_outside_the_image_is_refused_in_one_line():
    assert native.load("cut_finish")
    images = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    mean = torch.zeros(3, 224, 224)
    with pytest.raises(RuntimeError, match=r"a patch at \(33, 0\) leaves the image"):
        torch.ops.split_alexnet.cut_finish(
            images, torch.tensor([33]), torch.tensor([0]), torch.tensor([False]), mean, None, None
        )
