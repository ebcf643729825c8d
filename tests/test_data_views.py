"""Crop, reflection and ten-view geometry; the randomness; the colour noise (Sec. 4.1)."""

import numpy as np
import torch

from split_alexnet.data.folder import rescale_256
from split_alexnet.data.views import (
    TEN_VIEW_OFFSETS,
    augmentation,
    colour_shift,
    crop,
    finish,
    ten_views,
)


def coordinate_image() -> np.ndarray:
    """image[c, y, x] encodes (c, y, x) uniquely in two uint8 planes: y and x and c."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(256), np.arange(256), indexing="ij")
    return np.stack([y, x, c]).astype(np.uint8)  # (3 codes, 3, 256, 256)


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
    rows = crop(codes[0], 32, 0, True)
    cols = crop(codes[1], 32, 0, True)
    assert cols[0, 0, 0] == 223 and cols[0, 0, 223] == 0
    assert rows[0, 0, 0] == 32 and rows[0, 223, 0] == 255


def test_ten_views_are_corners_centre_then_reflections():
    assert TEN_VIEW_OFFSETS == ((0, 0), (0, 32), (16, 16), (32, 0), (32, 32))
    codes = coordinate_image()
    rows, cols = ten_views(codes[0]), ten_views(codes[1])
    assert rows.shape == (10, 3, 224, 224)
    top_left = [(int(rows[v, 0, 0, 0]), int(cols[v, 0, 0, 0])) for v in range(10)]
    assert top_left == [
        (0, 0), (0, 32), (16, 16), (32, 0), (32, 32),        # as cut
        (0, 223), (0, 255), (16, 239), (32, 223), (32, 255),  # reflected: left column = old right
    ]  # fmt: skip
    assert torch.equal(
        ten_views(codes[2])[:, :, 0, 0], torch.tensor([[0, 1, 2]] * 10, dtype=torch.uint8)
    )


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
