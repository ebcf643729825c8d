"""Folders, cache, mean image and PCA, the loader, and bad input (Sec. 2, 4.1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from split_alexnet.data import (
    DataError,
    PairLoader,
    compute_stats,
    dataset_stats,
    index_split,
    load_256,
    preprocess,
)
from split_alexnet.data.preprocess import main as preprocess_main
from split_alexnet.data.preprocess import write_split
from split_alexnet.data.source import CACHE_VERSION, PENDING, CacheSource, FolderSource
from tests.test_data_helpers import make_folder, photo


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def cache(folder) -> Path:
    cache, _ = preprocess(folder, folder.parent / "cache")
    return cache


def batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)


def test_index_lists_classes_files_and_labels(folder):
    index = index_split(folder, "train")
    assert index.classes == ("ant", "bee", "cat")
    assert len(index) == 21
    assert index.files[0] == "ant/ant_0.JPEG" and index.files[-1] == "cat/cat_6.JPEG"
    np.testing.assert_array_equal(index.labels, np.repeat([0, 1, 2], 7))


def test_mean_image_and_pca_match_numpy():
    rng = np.random.Generator(np.random.PCG64(5))
    images = [np.ascontiguousarray(photo(rng, 256, 256).transpose(2, 0, 1)) for _ in range(6)]
    stats = compute_stats(images)
    stack = np.stack(images).astype(np.float64)
    np.testing.assert_allclose(stats.mean.numpy(), stack.mean(0), rtol=1e-6)
    pixels = stack.transpose(1, 0, 2, 3).reshape(3, -1)
    values, vectors = np.linalg.eigh(np.cov(pixels, bias=True))
    np.testing.assert_allclose(stats.eigenvalues.numpy(), values[::-1], rtol=1e-5)
    for i in range(3):  # each eigenvector up to sign
        dot = float(stats.eigenvectors[:, i].double() @ torch.from_numpy(vectors[:, 2 - i]))
        assert abs(abs(dot) - 1) < 1e-5
    assert torch.all(stats.eigenvectors.sum(0) >= 0)
    assert torch.equal(stats.mean_crop(), stats.mean[:, 16:240, 16:240])


def test_stats_are_cached_with_how_they_were_computed(folder, cache):
    stats = dataset_stats(cache)
    assert (cache / "stats-train-all.npz").is_file()
    assert stats.how["images"] == 21 and stats.how["subset"] is None
    again = dataset_stats(cache)
    assert torch.equal(stats.mean, again.mean)
    subset = dataset_stats(cache, subset=5, seed=3)
    assert subset.how["images"] == 5 and subset.how["subset_seed"] == 3
    assert (cache / "stats-train-5-seed3.json").is_file()
    assert not torch.equal(subset.mean, stats.mean)
    raw = dataset_stats(folder)  # the same numbers from the raw folder
    assert torch.equal(raw.mean, stats.mean) and torch.equal(raw.eigenvalues, stats.eigenvalues)


def test_cache_holds_the_rescaled_images(folder, cache):
    source = CacheSource(cache, "val")
    assert len(source) == 9
    for i in (0, 4, 8):
        assert np.array_equal(source.image(i), load_256(folder / "val" / source.files[i]).numpy())


def test_cache_gives_the_same_batches_as_on_the_fly(folder, cache):
    stats = dataset_stats(cache)
    common = dict(train=True, views="random", stats=stats, seed=11)
    assert_same_batches(
        batches(PairLoader(cache, "train", 8, **common), epoch=2),
        batches(PairLoader(folder, "train", 8, **common), epoch=2),
    )


def test_train_batches_are_shuffled_cropped_noised_and_mean_subtracted(cache):
    stats = dataset_stats(cache)
    loader = PairLoader(cache, "train", 8, train=True, views="random", stats=stats, seed=0)
    assert len(loader) == 2  # 21 images, drop_last for training
    (x, y), _ = batches(loader)
    assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    order = loader.order(0)
    np.testing.assert_array_equal(y.numpy(), CacheSource(cache, "train").labels[order[:8]])
    assert sorted(order.tolist()) == list(range(21)) and order.tolist() != list(range(21))
    plain = PairLoader(
        cache, "train", 8, train=True, views="random", stats=stats, seed=0, colour_noise="off"
    )
    (x_plain, _), _ = batches(plain)
    shift = (x - x_plain).mean((2, 3))  # one RGB shift per image, the same at every pixel
    assert torch.allclose(x - x_plain, shift[:, :, None, None].expand_as(x), atol=1e-3)
    assert shift.abs().min() > 0


def test_centre_view_is_the_central_patch_minus_the_mean_crop(folder, cache):
    stats = dataset_stats(cache)
    loader = PairLoader(cache, "val", 4, train=False, views="center", stats=stats, seed=0)
    assert len(loader) == 3  # 9 images, the last batch kept
    (x, y), *_ = batches(loader)
    image = load_256(folder / "val" / "ant" / "ant_0.JPEG").float()
    assert torch.equal(x[0], image[:, 16:240, 16:240] - stats.mean[:, 16:240, 16:240])
    assert y.tolist() == [0, 0, 0, 1]
    tens = PairLoader(cache, "val", 4, train=False, views="ten", stats=stats, seed=0)
    (x10, _), *_ = batches(tens)
    assert x10.shape == (4, 10, 3, 224, 224)
    assert torch.equal(x10[:, 2], x)  # view 2 is the centre
    assert torch.equal(x10[0, 5] + stats.mean_crop(), (image[:, :224, :224]).flip(-1))


def test_same_batches_for_0_and_2_workers(cache):
    stats = dataset_stats(cache)
    common = dict(train=True, views="random", stats=stats, seed=4)
    assert_same_batches(
        batches(PairLoader(cache, "train", 6, num_workers=0, **common), epoch=1),
        batches(PairLoader(cache, "train", 6, num_workers=2, **common), epoch=1),
    )


def test_replicas_split_every_global_batch(cache):
    stats = dataset_stats(cache)
    common = dict(train=True, views="random", stats=stats, seed=4)
    whole = batches(PairLoader(cache, "train", 10, **common))
    parts = [
        batches(PairLoader(cache, "train", 10, replica=r, replicas=2, **common)) for r in (0, 1)
    ]
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][b][0], parts[1][b][0]]), x)
        assert torch.equal(torch.cat([parts[0][b][1], parts[1][b][1]]), y)
        assert len(parts[0][b][1]) == 5


def test_an_epoch_resumes_at_any_batch(cache):
    stats = dataset_stats(cache)
    loader = PairLoader(cache, "train", 4, train=True, views="random", stats=stats, seed=9)
    full = batches(loader, epoch=3)
    loader.set_epoch(3, start_batch=2)
    assert_same_batches(list(loader), full[2:])
    assert_same_batches(list(loader.iter_from(4)), full[4:])  # epoch 3 still set


def test_interrupted_preprocessing_resumes_to_the_same_cache(folder, cache, tmp_path):
    partial = tmp_path / "partial"
    preprocess(folder, partial)
    status = np.memmap(partial / "train.status", dtype=np.uint8, mode="r+")
    status[10:] = PENDING  # as if stopped after the first chunk of 10
    status.flush()
    data = np.memmap(partial / "train.u8", dtype=np.uint8, mode="r+")
    data[10 * 3 * 256 * 256 :] = 0
    data.flush()
    del status, data
    with pytest.raises(DataError, match="incomplete"):
        CacheSource(partial, "train")
    write_split(folder, partial, "train")
    assert (partial / "train.u8").read_bytes() == (cache / "train.u8").read_bytes()


def test_a_cache_of_an_older_format_is_rewritten_not_resumed(folder, tmp_path, caplog):
    old = tmp_path / "old"
    preprocess(folder, old)
    marker = json.loads((old / "cache.json").read_text())
    (old / "cache.json").write_text(json.dumps({**marker, "version": 1}))
    (old / "val.u8").write_bytes(bytes((old / "val.u8").stat().st_size))  # decoded another way
    with caplog.at_level(logging.WARNING):
        preprocess(folder, old)
    assert "holds cache format version 1; rewriting" in caplog.text
    assert json.loads((old / "cache.json").read_text())["version"] == CACHE_VERSION
    assert np.array_equal(CacheSource(old, "val").image(0), load_256(folder / "val/ant/ant_0.JPEG"))


# Bad input (issue item 7)


def test_missing_root_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(DataError) as error:
        index_split(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)


def test_missing_and_empty_splits_name_the_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        index_split(tmp_path, "train")
    (tmp_path / "train" / "ant").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'train'} has no image files"):
        index_split(tmp_path, "train")
    with pytest.raises(DataError, match=f"{tmp_path / 'val'} does not exist"):
        index_split(tmp_path, "val")


def test_cli_prints_one_line_without_traceback(tmp_path, capsys):
    assert preprocess_main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "missing"
    message = f"data root {missing} does not exist or is not a directory"
    assert err == f"split-alexnet-preprocess: error: {message}\n"


def test_grey_cmyk_palette_and_alpha_images_become_rgb(tmp_path):
    rgb = photo(np.random.Generator(np.random.PCG64(1)), 256, 256)
    Image.fromarray(rgb).convert("L").save(tmp_path / "grey.JPEG", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.JPEG", quality=95)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((256, 256), 7, np.uint8)])).save(tmp_path / "alpha.png")
    grey = load_256(tmp_path / "grey.JPEG")
    assert (
        grey.shape == (3, 256, 256)
        and torch.equal(grey[0], grey[1])
        and torch.equal(grey[1], grey[2])
    )
    assert torch.equal(load_256(tmp_path / "alpha.png"), torch.from_numpy(rgb).permute(2, 0, 1))
    palette = np.array(Image.fromarray(rgb).convert("P").convert("RGB"))
    assert torch.equal(
        load_256(tmp_path / "palette.png"), torch.from_numpy(palette).permute(2, 0, 1)
    )
    cmyk = load_256(tmp_path / "cmyk.JPEG").float()
    assert (cmyk - torch.from_numpy(rgb).permute(2, 0, 1)).abs().mean() < 8  # JPEG loss only


def broken_folder(root: Path) -> Path:
    make_folder(root, per_class=(4, 2))
    good = (root / "train" / "bee" / "bee_0.JPEG").read_bytes()
    (root / "train" / "bee" / "bee_1.JPEG").write_bytes(good[: len(good) // 3])  # truncated
    (root / "train" / "cat" / "cat_2.JPEG").write_bytes(b"not a jpeg at all")  # corrupt
    (root / "train" / "dog").mkdir()  # a class with no images
    return root


def test_bad_files_are_skipped_counted_and_named_on_the_fly(tmp_path, caplog):
    root = broken_folder(tmp_path / "broken")
    with caplog.at_level(logging.WARNING):
        stats = dataset_stats(root)
        assert stats.how["images"] == 10 and len(stats.how["skipped_unreadable"]) == 2
        loader = PairLoader(root, "train", 12, train=True, views="random", stats=stats, seed=0)
    assert "class folders with no images: dog" in caplog.text
    assert loader.classes == ("ant", "bee", "cat", "dog")
    ((x, y),) = batches(loader)
    assert x.shape[0] == 10 and len(y) == 10
    assert loader.skipped == {"bee/bee_1.JPEG": 1, "cat/cat_2.JPEG": 1}
    assert "bee_1.JPEG" in caplog.text and "cat_2.JPEG" in caplog.text


def test_bad_files_are_left_out_of_the_cache(tmp_path, caplog):
    root = broken_folder(tmp_path / "broken")
    with caplog.at_level(logging.WARNING):
        cache, stats = preprocess(root)
    assert "2 source files were skipped when the cache was written" in caplog.text
    assert "class folders with no images: dog" in caplog.text
    lines = (cache / "train.unreadable").read_text().splitlines()
    assert len(lines) == 2 and "bee_1.JPEG" in lines[0] and "cat_2.JPEG" in lines[1]
    source = CacheSource(cache, "train")
    assert len(source) == 10 and source.unreadable == ("bee/bee_1.JPEG", "cat/cat_2.JPEG")
    on_the_fly = PairLoader(root, "train", 5, train=True, views="center", stats=stats, seed=0)
    cached = PairLoader(cache, "train", 5, train=True, views="center", stats=stats, seed=0)
    assert len(cached) == 2 and isinstance(on_the_fly.source, FolderSource)
    assert sum(len(y) for _, y in cached) == 10


def test_embedded_dataset_is_built_once_in_imagenet_layout(tmp_path):
    from split_alexnet.data import build_embedded_dataset
    from split_alexnet.data.embedded import PHOTOGRAPHS, TRAIN_PER_CLASS, VAL_PER_CLASS

    root = build_embedded_dataset(tmp_path / "photos")
    train, val = index_split(root, "train"), index_split(root, "val")
    assert train.classes == val.classes == tuple(sorted(PHOTOGRAPHS)) and len(train.classes) == 10
    np.testing.assert_array_equal(np.bincount(train.labels), [TRAIN_PER_CLASS] * 10)
    np.testing.assert_array_equal(np.bincount(val.labels), [VAL_PER_CLASS] * 10)
    assert Image.open(root / "train" / "gravel" / "gravel_train_0000.JPEG").mode == "L"
    assert Image.open(root / "val" / "retina" / "retina_val_0000.JPEG").mode == "RGB"
    assert "CC0" in (root / "README.md").read_text()
    first = root / "train" / "chelsea" / "chelsea_train_0007.JPEG"
    stamp = first.stat().st_mtime_ns
    assert build_embedded_dataset(root) == root and first.stat().st_mtime_ns == stamp
