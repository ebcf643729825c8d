"""ILSVRC-2012 as downloaded: the train tar of class tars, the flat val tar and the devkit.

The tests build tiny copies of all three (three classes, a few real JPEGs, a
meta.mat written by scipy.io in the layout torchvision's devkit parser reads)
and the class folders torchvision's extraction would make of them.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch import nn
from torchvision.datasets import imagenet

from split_alexnet.data import DataError, PairLoader, dataset_stats, load_256, preprocess
from split_alexnet.data.devkit import DEVKIT, read_devkit
from split_alexnet.data.preprocess import main as preprocess_main
from split_alexnet.data.source import PENDING, WRITTEN, CacheSource
from split_alexnet.data.tarball import TARBALLS, TarIndex
from split_alexnet.evaluate import by_class, hardest
from split_alexnet.parallel.layout import Layout
from split_alexnet.training.evaluation import evaluate
from tests.test_data_helpers import photo

# The module, not the function of the same name that split_alexnet.data exports.
preprocess_module = importlib.import_module("split_alexnet.data.preprocess")

# ILSVRC2012_ID order differs from the sorted WordNet ids on purpose: labels follow the latter.
SYNSETS = [  # (ILSVRC2012_ID, wnid, words, children)
    (1, "n03000003", "cassette player", 0),
    (2, "n01000001", "tench, Tinca tinca", 0),
    (3, "n02000002", "goldfish, Carassius auratus", 0),
    (4, "n00000004", "fish", 2),  # not a class: torchvision keeps the leaves
]
CLASSES = ("n01000001", "n02000002", "n03000003")  # sorted
NAMES = ("tench, Tinca tinca", "goldfish, Carassius auratus", "cassette player")
TRAIN_COUNTS = (3, 2, 4)
VAL_IDS = (2, 1, 3, 2, 1)  # the ground truth: ILSVRC2012_ID of val image 1, 2, …


def _jpeg(rng: np.random.Generator, k: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(rng, 260 + 7 * k, 300 - 5 * k)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            _add(tar, name, data)
    return buffer.getvalue()


def _devkit(path: Path) -> None:
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children"]
    synsets = np.array(
        [(i, wnid, words, f"gloss of {wnid}", children) for i, wnid, words, children in SYNSETS],
        dtype=[(f, object) for f in fields],
    )
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    truth = "".join(f"{i}\n" for i in VAL_IDS).encode()
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    """The three downloads in one folder, and beside it (folders/) their extraction."""
    root = tmp_path_factory.mktemp("ilsvrc2012")
    downloads, folders = root / "downloads", root / "folders"
    downloads.mkdir()
    rng = np.random.Generator(np.random.PCG64(12))
    class_tars = []
    for wnid, count in zip(CLASSES, TRAIN_COUNTS, strict=True):
        images = [(f"{wnid}_{k}.JPEG", _jpeg(rng, k)) for k in range(count)]
        if wnid == CLASSES[0]:
            images.append(("notes.txt", b"not an image"))
        for name, data in images:
            (folders / "train" / wnid).mkdir(parents=True, exist_ok=True)
            (folders / "train" / wnid / name).write_bytes(data)
        class_tars.append((f"{wnid}.tar", _tar_bytes(images[::-1])))  # tar order is not sorted
    (downloads / TARBALLS["train"]).write_bytes(_tar_bytes(class_tars[::-1]))
    wnid_of = {i: wnid for i, wnid, _, _ in SYNSETS}
    val = []
    for k, label in enumerate(VAL_IDS):
        name, data = f"ILSVRC2012_val_{k + 1:08d}.JPEG", _jpeg(rng, k)
        (folders / "val" / wnid_of[label]).mkdir(parents=True, exist_ok=True)
        (folders / "val" / wnid_of[label] / name).write_bytes(data)
        val.append((name, data))
    (downloads / TARBALLS["val"]).write_bytes(_tar_bytes(val[::-1]))
    _devkit(downloads / DEVKIT)
    return downloads


@pytest.fixture(scope="module", autouse=True)
def tiny_devkit_md5(downloads):
    """torchvision checks the devkit's MD5 against the real one; here the tiny one's stands in."""
    md5 = hashlib.md5((downloads / DEVKIT).read_bytes()).hexdigest()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(imagenet.ARCHIVE_META, "devkit", (DEVKIT, md5))
        yield


@pytest.fixture(scope="module")
def caches(downloads) -> tuple[Path, Path]:
    """The cache of the tarballs and the cache of their class folders."""
    from_tars, _ = preprocess(downloads, downloads.parent / "cache-tars", workers=0)
    from_folders, _ = preprocess(downloads.parent / "folders", downloads.parent / "cache-folders")
    return from_tars, from_folders


def _linked(downloads: Path, place: Path, leave_out: str = "") -> Path:
    place.mkdir()
    for file in downloads.iterdir():
        if file.is_file() and file.name != leave_out:
            (place / file.name).symlink_to(file)
    return place


def test_the_devkit_gives_sorted_wnids_their_names_and_the_val_classes(downloads):
    devkit = read_devkit(downloads / DEVKIT)
    assert devkit.classes == CLASSES
    assert tuple(devkit.names[c] for c in CLASSES) == NAMES
    wnid_of = {i: wnid for i, wnid, _, _ in SYNSETS}
    assert devkit.val_wnids == tuple(wnid_of[i] for i in VAL_IDS)


def test_the_tarballs_cache_as_their_class_folders_byte_for_byte(downloads, caches):
    from_tars, from_folders = caches
    for split in ("train", "val"):
        assert (from_tars / f"{split}.u8").read_bytes() == (
            from_folders / f"{split}.u8"
        ).read_bytes()
        tars, folders = CacheSource(from_tars, split), CacheSource(from_folders, split)
        assert tars.files == folders.files and np.array_equal(tars.labels, folders.labels)
        assert tars.classes == folders.classes == CLASSES
    crop = CacheSource(from_tars, "train").image(4)  # n02000002_1.JPEG
    expected = load_256(downloads.parent / "folders/train/n02000002/n02000002_1.JPEG")
    assert np.array_equal(crop, expected.numpy())
    assert dataset_stats(from_tars).mean.equal(dataset_stats(from_folders).mean)


def test_the_cache_counts_each_class_and_labels_val_by_the_ground_truth(caches):
    train, val = CacheSource(caches[0], "train"), CacheSource(caches[0], "val")
    assert tuple(np.bincount(train.labels, minlength=3)) == TRAIN_COUNTS
    assert train.files[0] == "n01000001/n01000001_0.JPEG"
    wnid_of = {i: wnid for i, wnid, _, _ in SYNSETS}
    truth = {f"ILSVRC2012_val_{k + 1:08d}.JPEG": wnid_of[i] for k, i in enumerate(VAL_IDS)}
    assert len(val) == len(truth)
    for file, label in zip(val.files, val.labels, strict=True):
        wnid, name = file.split("/")
        assert wnid == truth[name] == CLASSES[label]
    manifest = json.loads((caches[0] / "train.json").read_text())
    skipped = [["n01000001/notes.txt", "not an image file name", "no image extension"]]
    assert manifest["skipped"] == skipped


def test_the_cache_names_each_class_and_which_set_it_is(caches):
    from_tars, from_folders = caches
    for split, set_name in (("train", "ILSVRC-2012 train"), ("val", "ILSVRC-2012 validation")):
        source = CacheSource(from_tars, split)
        assert source.classes == CLASSES and source.names == NAMES
        assert source.set_name == set_name
        assert CacheSource(from_folders, split).set_name == "folder"
    assert CacheSource(from_folders, "val").names == ()


class _Prefers(nn.Module):
    """Scores that always rank class `best` first, then the rest in order."""

    def __init__(self, best: int, classes: int) -> None:
        super().__init__()
        scores = -torch.arange(classes, dtype=torch.float32)
        scores[best] = 1.0
        self.scores = nn.Parameter(scores)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(images), -1)


def test_evaluation_names_each_class_and_its_errors(caches):
    stats = dataset_stats(caches[0])
    loader = PairLoader(caches[0], "val", 2, train=False, views="center", stats=stats, seed=0)
    result = evaluate(_Prefers(1, 3), loader, Layout("emulate", torch.device("cpu")), by_class=True)
    assert result["images"] == 5 and result["top1_error"] == 4 / 5
    per_class = by_class(loader, result["per_class"])
    assert [(c["class"], c["name"], c["images"], c["top1_error"]) for c in per_class] == [
        (CLASSES[0], NAMES[0], 2, 1.0),
        (CLASSES[1], NAMES[1], 1, 0.0),
        (CLASSES[2], NAMES[2], 2, 1.0),
    ]
    assert hardest(per_class, 2).splitlines() == [
        "the 2 classes with the highest top-1 error:",
        "  n01000001 (tench, Tinca tinca): top-1 error 100.0 % of 2",
        "  n03000003 (cassette player): top-1 error 100.0 % of 2",
    ]


def test_an_interrupted_preprocess_resumes_to_the_same_cache(downloads, caches, tmp_path):
    cache = tmp_path / "cache"
    decoded = []
    original = TarIndex.image

    def stops_at_the_sixth(index, row):
        if len(decoded) == 5:
            raise KeyboardInterrupt  # as a Ctrl-C mid-chunk
        decoded.append(row)
        return original(index, row)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess_module, "CHUNK", 2)
        patch.setattr(TarIndex, "image", stops_at_the_sixth)
        with pytest.raises(KeyboardInterrupt):
            preprocess(downloads, cache, workers=0)
    status = np.fromfile(cache / "train.status", dtype=np.uint8)
    assert list(status) == [WRITTEN] * 4 + [PENDING] * 5  # two chunks of 2 committed
    with pytest.raises(DataError, match="incomplete"):
        CacheSource(cache, "train")
    decoded.clear()
    listed = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            TarIndex, "image", lambda index, row: decoded.append(row) or original(index, row)
        )
        patch.setattr("split_alexnet.data.tarball._train_members", lambda *a: listed.append(a))
        preprocess(downloads, cache, workers=0)
    # The rest of train only, from the stored index, then val.
    assert decoded == [4, 5, 6, 7, 8, 0, 1, 2, 3, 4] and not listed
    for name in ("train.u8", "train.status", "train.json", "val.u8", "val.json"):
        assert (cache / name).read_bytes() == (caches[0] / name).read_bytes(), name


def test_worker_processes_cache_the_tarballs_as_this_process_does(downloads, caches, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess_module, "CHUNK", 2)  # chunks enough for both workers
        cache, _ = preprocess(downloads, tmp_path / "cache", workers=2)
    for name in ("train.u8", "train.status", "val.u8", "val.status"):
        assert (cache / name).read_bytes() == (caches[0] / name).read_bytes(), name


def test_a_missing_devkit_is_one_line(downloads, tmp_path, capsys):
    root = _linked(downloads, tmp_path / "no-devkit", leave_out=DEVKIT)
    assert preprocess_main([str(root), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no devkit {root / DEVKIT}" in err


def _truncated(downloads: Path, place: Path, split: str, keep: int) -> Path:
    root = _linked(downloads, place, leave_out=TARBALLS[split])
    (root / TARBALLS[split]).write_bytes((downloads / TARBALLS[split]).read_bytes()[:keep])
    return root


def _first_member_end(tar: Path) -> int:
    with tarfile.open(tar) as archive:
        first = archive.next()
        return first.offset_data + -(-first.size // 512) * 512


@pytest.mark.parametrize(
    ("split", "cut", "says"),
    [
        ("train", "half", "is truncated"),
        ("train", "after the first class", "holds 1 class tars, the devkit lists 3"),
        ("val", "half", "is truncated"),
    ],
)
def test_a_truncated_tarball_is_one_line(downloads, tmp_path, capsys, split, cut, says):
    full = downloads / TARBALLS[split]
    keep = full.stat().st_size // 2 if cut == "half" else _first_member_end(full)
    root = _truncated(downloads, tmp_path / "root", split, keep)
    assert preprocess_main([str(root), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(root / TARBALLS[split]) in err and says in err


def test_tarballs_that_are_not_imagenet_are_one_line(downloads, tmp_path, capsys):
    root = _linked(downloads, tmp_path / "swapped", leave_out=TARBALLS["train"])
    (root / TARBALLS["train"]).symlink_to(downloads / TARBALLS["val"])
    assert preprocess_main([str(root), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a class tar such as n01440764.tar" in err
    (root / TARBALLS["train"]).unlink()
    (root / TARBALLS["train"]).write_bytes(np.random.default_rng(0).bytes(4096))
    assert preprocess_main([str(root), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{root / TARBALLS['train']} is truncated or not a tar" in err
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(imagenet.ARCHIVE_META, "devkit", (DEVKIT, "0" * 32))
        with pytest.raises(DataError, match=r"is not ILSVRC2012_devkit_t12\.tar\.gz as image-net"):
            read_devkit(downloads / DEVKIT)
