"""Bad input, tried (issue 14): a fuzz corpus built here, through the cache and on the fly.

Every kind of file is either used as a viewer would show it or skipped with one log
line that names it and says why; no epoch stops, and `split-alexnet-preprocess`
ends with the skipped files counted by reason. KINDS is the list of kinds tried.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from split_alexnet.data import DataError, PairLoader, dataset_stats
from split_alexnet.data import folder as folder_module
from split_alexnet.data.folder import (
    CANNOT_READ,
    CORRUPT,
    EMPTY,
    FOLDER_LOOP,
    NOT_IMAGE,
    NOT_IMAGE_NAME,
    OUTSIDE_CLASS,
    TOO_MANY_PIXELS,
    UNSUPPORTED,
    UnreadableImage,
    image_header,
    load_256,
    rescale_256,
    shown,
)
from split_alexnet.data.preprocess import main as preprocess_main
from split_alexnet.data.preprocess import preprocess, skipped_files
from split_alexnet.data.source import CacheSource, FolderSource
from split_alexnet.data.stats import DatasetStats

ROOT_USER = os.geteuid() == 0
UNICODE = "crème brûlée"  # a class folder name with a space and accents
CLASSES = ("ant", "bee", UNICODE)

KINDS = {
    "zero-byte file": "skipped: empty file",
    "random bytes named .JPEG": "skipped: not an image",
    "truncated JPEG": "skipped: truncated or corrupt",
    "PNG named .JPEG": "used, pixel-exact",
    "GIF named .JPEG": "used, pixel-exact",
    "WebP named .JPEG": "used, pixel-exact (lossless)",
    "TIFF named .JPEG": "skipped: unsupported image format",
    "CMYK JPEG": "used",
    "YCCK JPEG": "used",
    "16-bit PNG": "used, scaled to 8 bits",
    "greyscale with alpha": "used, grey in all three channels, alpha dropped",
    "1×1 image": "used, one colour",
    "30,000×30,000 header (JPEG and PNG)": "skipped before decoding: too many pixels",
    "EXIF-rotated photo": "used, upright",
    "symlink loop": "skipped: cannot be read",
    "unreadable file (chmod 000)": "used by root (it can read it); skipped for anyone else",
    "non-image file in a class folder": "skipped: not an image file name",
    "empty class folder": "kept as a class with no images, one warning",
    "class folder in val but not train": "DataError, one line, nothing written",
    "unicode and spaces in names": "used",
    "animated GIF": "used, first frame",
    "animated WebP": "skipped: unsupported image format",
    "dangling symlink": "skipped: cannot be read",
    "folder symlink loop": "skipped: folder loop; the images in it listed once",
    "extreme aspect ratio (2×3000)": "used, bounded memory",
    "non-UTF-8 file name": "used; named with its bytes escaped",
    "file outside any class folder": "skipped: not in a class folder",
    "val folder lacking a train class": "val labels still follow train's classes",
}


@dataclass
class Corpus:
    root: Path
    used: dict[str, dict[str, tuple[int, torch.Tensor, float, float]]] = field(
        default_factory=lambda: {"train": {}, "val": {}}
    )  # split → file → (label, reference (3, 256, 256), mean tolerance, max tolerance)
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)  # train file → why
    kinds: set[str] = field(default_factory=set)

    def use(self, kind, split, file, label, reference, mean_tol=0.0, max_tol=0.0):
        if kind is not None:
            self.kinds.add(kind)
        image = torch.as_tensor(np.ascontiguousarray(reference)).permute(2, 0, 1)
        self.used[split][file] = (label, rescale_256(image), mean_tol, max_tol)

    def skip(self, kind, file, reason, detail=""):
        self.kinds.add(kind)
        self.skipped[file] = (reason, detail)


def smooth(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (H, W, 3) gradients: JPEG keeps them within a grey level or two."""
    rng = np.random.Generator(np.random.PCG64(seed))
    y, x = np.mgrid[0:height, 0:width]
    channels = [a + b * x / width + c * y / height for a, b, c in rng.uniform(20, 110, (3, 3))]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg_of(image: Image.Image) -> bytes:
    return encoded(image, "JPEG", quality=95)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_16bit(rgb: np.ndarray) -> bytes:
    """A 48-bit RGB PNG, written by hand: Pillow writes 16 bits only for greyscale."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def bomb_png(side: int) -> bytes:
    """A valid 8×8 PNG whose IHDR (CRC fixed up) claims side×side."""
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "PNG"))
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bomb_jpeg(side: int) -> bytes:
    """A valid 16×16 baseline JPEG whose frame header (SOF0) claims side×side."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (9, 99, 199)), "JPEG"))
    sof = data.index(b"\xff\xc0\x00\x11\x08")  # SOF0, length 17, 8-bit samples
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def ycck_jpeg(rgb: np.ndarray) -> bytes:
    """A YCCK JPEG of rgb. Pillow never asks libjpeg for YCCK, so it is built by hand:
    YCCK stores YCbCr(255 - C, 255 - M, 255 - Y) and K, where C, M, Y, K are the values a
    plain CMYK file stores (Adobe's inverted convention: for Pillow's CMYK of an RGB image,
    C, M, Y = R, G, B and K = 255). Pillow is handed those four components pre-inverted
    (it inverts CMYK on the way out), then the Adobe APP14 transform flag goes from 0
    (CMYK) to 2 (YCCK), which is what makes a decoder undo the YCbCr step."""
    ycc = np.asarray(Image.fromarray(255 - rgb).convert("YCbCr"))
    stored = np.dstack([ycc, np.full(rgb.shape[:2], 255, np.uint8)])
    data = bytearray(encoded(Image.fromarray(255 - stored, "CMYK"), "JPEG", quality=95))
    adobe = data.index(b"Adobe")
    assert data[adobe + 11] == 0  # 'Adobe', version, flags0, flags1, transform
    data[adobe + 11] = 2
    with Image.open(io.BytesIO(bytes(data))) as check:
        assert check.info["adobe_transform"] == 2 and check.mode == "CMYK"
    return bytes(data)


def exif_rotated(rgb: np.ndarray) -> bytes:
    """rgb stored as is, tagged orientation 6: a viewer turns it 90° clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.fromarray(rgb), "JPEG", quality=95, exif=exif.tobytes())


def quadrants(colours) -> np.ndarray:
    """256×256 in four flat colours: a GIF palette holds them exactly."""
    image = np.zeros((256, 256, 3), np.uint8)
    for k, colour in enumerate(colours):
        image[(k // 2) * 128 : (k // 2 + 1) * 128, (k % 2) * 128 : (k % 2 + 1) * 128] = colour
    return image


def jpeg(rgb: np.ndarray) -> bytes:
    return jpeg_of(Image.fromarray(rgb))


def build_corpus(root: Path) -> Corpus:
    c = Corpus(root)
    train, val = root / "train", root / "val"
    ant, uni = train / "ant", train / UNICODE
    for path in (ant, train / "bee", uni, val / "ant", val / UNICODE):
        path.mkdir(parents=True)
    c.kinds |= {"empty class folder", "val folder lacking a train class"}

    photo = smooth(256, 320, 0)
    (ant / "photo.JPEG").write_bytes(jpeg(photo))
    c.use(None, "train", "ant/photo.JPEG", 0, photo, 3, 255)

    kind = "zero-byte file"
    (ant / "empty.JPEG").write_bytes(b"")
    c.skip(kind, "ant/empty.JPEG", EMPTY, "0 bytes")
    kind = "random bytes named .JPEG"
    (ant / "random.JPEG").write_bytes(np.random.Generator(np.random.PCG64(1)).bytes(4096))
    c.skip(kind, "ant/random.JPEG", NOT_IMAGE, "starts")
    kind = "truncated JPEG"
    whole = jpeg(photo)
    (ant / "truncated.JPEG").write_bytes(whole[: len(whole) // 2])
    c.skip(kind, "ant/truncated.JPEG", CORRUPT, "JPEG: ")

    png = smooth(256, 256, 2)
    (ant / "png.JPEG").write_bytes(encoded(Image.fromarray(png), "PNG"))
    c.use("PNG named .JPEG", "train", "ant/png.JPEG", 0, png)
    gif = quadrants([(200, 10, 10), (10, 200, 10), (10, 10, 200), (240, 240, 40)])
    (ant / "gif.JPEG").write_bytes(encoded(Image.fromarray(gif), "GIF"))
    c.use("GIF named .JPEG", "train", "ant/gif.JPEG", 0, gif)
    frames = [Image.fromarray(gif), Image.fromarray(255 - gif)]
    animated = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    (ant / "animated.gif").write_bytes(animated)
    c.use("animated GIF", "train", "ant/animated.gif", 0, gif)
    webp = smooth(256, 256, 3)
    (ant / "webp.JPEG").write_bytes(encoded(Image.fromarray(webp), "WEBP", lossless=True))
    c.use("WebP named .JPEG", "train", "ant/webp.JPEG", 0, webp)
    moving = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    (ant / "animated.webp").write_bytes(moving)
    c.skip("animated WebP", "ant/animated.webp", UNSUPPORTED, "animated WebP")
    (ant / "tiff.JPEG").write_bytes(encoded(Image.fromarray(png), "TIFF"))
    c.skip("TIFF named .JPEG", "ant/tiff.JPEG", UNSUPPORTED, "TIFF")

    cmyk = smooth(256, 256, 4)
    (ant / "cmyk.JPEG").write_bytes(jpeg_of(Image.fromarray(cmyk).convert("CMYK")))
    c.use("CMYK JPEG", "train", "ant/cmyk.JPEG", 0, cmyk, 3, 255)
    ycck = smooth(256, 256, 5)
    (ant / "ycck.JPEG").write_bytes(ycck_jpeg(ycck))
    c.use("YCCK JPEG", "train", "ant/ycck.JPEG", 0, ycck, 3, 255)

    deep = np.random.Generator(np.random.PCG64(6)).integers(0, 65536, (256, 256, 3))
    (ant / "deep.png").write_bytes(png_16bit(deep))
    eight = np.round(deep / 257).astype(np.uint8)  # 0..65535 → 0..255
    c.use("16-bit PNG", "train", "ant/deep.png", 0, eight, 1, 1)
    grey = smooth(256, 256, 7)[:, :, 0]
    alpha = np.random.Generator(np.random.PCG64(8)).integers(0, 256, (256, 256), np.uint8)
    grey_alpha = Image.fromarray(np.dstack([grey, alpha]), "LA")
    (ant / "grey-alpha.png").write_bytes(encoded(grey_alpha, "PNG"))
    c.use("greyscale with alpha", "train", "ant/grey-alpha.png", 0, np.dstack([grey] * 3))

    dot = np.full((1, 1, 3), (200, 30, 60), np.uint8)
    (ant / "dot.JPEG").write_bytes(jpeg(dot))
    c.use("1×1 image", "train", "ant/dot.JPEG", 0, dot, 4, 6)
    strip = np.zeros((2, 3000, 3), np.uint8)
    strip[:, :, 2] = 255
    strip[:, 1400:1600] = (255, 0, 0)  # all that the central crop sees
    (ant / "strip.png").write_bytes(encoded(Image.fromarray(strip), "PNG"))
    red = np.full((256, 256, 3), (255, 0, 0), np.uint8)
    c.use("extreme aspect ratio (2×3000)", "train", "ant/strip.png", 0, red)

    kind = "30,000×30,000 header (JPEG and PNG)"
    (ant / "bomb.JPEG").write_bytes(bomb_jpeg(30000))
    (ant / "bomb.png").write_bytes(bomb_png(30000))
    for name in ("bomb.JPEG", "bomb.png"):
        c.skip(kind, f"ant/{name}", TOO_MANY_PIXELS, "30000×30000 = 900 M pixels")

    upright = smooth(256, 384, 9)
    (ant / "exif.JPEG").write_bytes(exif_rotated(upright))
    with Image.open(ant / "exif.JPEG") as viewed:  # Pillow agrees which way is up
        turned = np.asarray(ImageOps.exif_transpose(viewed), dtype=np.int16)
        assert np.abs(turned - np.rot90(upright, -1)).mean() < 3
    c.use("EXIF-rotated photo", "train", "ant/exif.JPEG", 0, np.rot90(upright, -1), 3, 255)

    (ant / "loop.JPEG").symlink_to("loop.JPEG")
    why = f"{CANNOT_READ}: too many levels of symbolic links"
    c.skip("symlink loop", "ant/loop.JPEG", why, "a symbolic link to loop.JPEG")
    (ant / "dangling.JPEG").symlink_to("nowhere.JPEG")
    why = f"{CANNOT_READ}: no such file or directory"
    c.skip("dangling symlink", "ant/dangling.JPEG", why, "a symbolic link to nowhere.JPEG")
    (ant / "again").symlink_to(".")
    c.skip("folder symlink loop", "ant/again", FOLDER_LOOP, f"the same folder as {shown(ant)}")

    kind = "unreadable file (chmod 000)"
    locked = smooth(256, 256, 10)
    (ant / "locked.JPEG").write_bytes(jpeg(locked))
    (ant / "locked.JPEG").chmod(0)
    if ROOT_USER:  # root reads any file: used is the right outcome, not a gap
        c.use(kind, "train", "ant/locked.JPEG", 0, locked, 3, 255)
    else:
        c.skip(kind, "ant/locked.JPEG", f"{CANNOT_READ}: permission denied")

    (ant / "notes.txt").write_bytes(b"collected 2012\n")
    c.skip("non-image file in a class folder", "ant/notes.txt", NOT_IMAGE_NAME)
    (train / "README.txt").write_bytes(b"ImageNet layout\n")
    c.skip("file outside any class folder", "README.txt", OUTSIDE_CLASS)

    for k, name in enumerate(("photo 1 ✓.JPEG", "Straße am Meer.JPEG")):
        image = smooth(300, 256, 11 + k)
        (uni / name).write_bytes(jpeg(image))
        c.use("unicode and spaces in names", "train", f"{UNICODE}/{name}", 2, image, 3, 255)
    latin1 = smooth(256, 256, 13)
    name = b"caf\xe9 au lait.JPEG"  # Latin-1 bytes: not UTF-8
    with open(os.path.join(os.fsencode(uni), name), "wb") as file:
        file.write(jpeg(latin1))
    c.use("non-UTF-8 file name", "train", f"{UNICODE}/{os.fsdecode(name)}", 2, latin1, 3, 255)

    for label, file, seed in ((0, "ant/val ant.JPEG", 14), (2, f"{UNICODE}/vue ü.JPEG", 15)):
        image = smooth(256, 256, seed)
        (val / file).write_bytes(jpeg(image))
        c.use(None, "val", file, label, image, 3, 255)
    return c


def close(got: torch.Tensor, reference: torch.Tensor, mean_tol: float, max_tol: float) -> bool:
    diff = (got.float() - reference.float()).abs()
    return float(diff.mean()) <= mean_tol + 1e-3 and float(diff.max()) <= max_tol + 1e-3


def split_path(root: Path, file: str, split: str = "train") -> str:
    return os.path.join(root / split, file)


def assert_one_line_per_skip(corpus: Corpus, records) -> None:
    """Each skipped file: exactly one log line, naming it and why; no line names a used file."""
    messages = [r.getMessage() for r in records]
    for file, (reason, detail) in corpus.skipped.items():
        prefix = f"skipped {shown(split_path(corpus.root, file))}: "
        lines = [m for m in messages if m.startswith(prefix)]
        assert len(lines) == 1, (file, lines)
        assert lines[0].startswith(prefix + reason) and detail in lines[0], lines[0]
        assert "\n" not in lines[0]
    for split, used in corpus.used.items():
        for file in used:
            name = shown(split_path(corpus.root, file, split))
            assert not [m for m in messages if f"{name}:" in m], file


@pytest.fixture
def corpus(tmp_path) -> Corpus:
    return build_corpus(tmp_path / "fuzz")


def test_the_corpus_tries_every_kind(corpus):
    assert corpus.kinds | {"class folder in val but not train"} == set(KINDS)
    assert len(KINDS) == 28


def test_preprocess_skips_each_bad_file_once_and_the_cached_epoch_has_every_good_one(
    corpus, tmp_path, caplog, capsys
):
    caplog.set_level(logging.WARNING)
    cache = tmp_path / "cache"
    assert preprocess_main([str(corpus.root), "--cache", str(cache)]) == 0
    assert_one_line_per_skip(corpus, caplog.records)
    assert "class folders with no images: bee" in caplog.text

    out = capsys.readouterr().out
    reasons = Counter(reason for reason, _ in corpus.skipped.values())
    assert f"skipped {len(corpus.skipped)} files, by reason" in out
    for reason, n in reasons.items():
        assert re.search(rf"^  train +{n}  {re.escape(reason)}$", out, re.MULTILINE), reason
    assert "  val " not in out
    assert {f: r for f, (r, _) in skipped_files(cache, "train").items()} == {
        f: r for f, (r, _) in corpus.skipped.items()
    }

    for split in ("train", "val"):
        source = CacheSource(cache, split)
        assert source.classes == CLASSES
        used = corpus.used[split]
        assert sorted(source.files) == sorted(used)
        for i, file in enumerate(source.files):
            label, reference, mean_tol, max_tol = used[file]
            assert source.labels[i] == label, file
            image = torch.from_numpy(source.image(i).copy())
            assert close(image, reference, mean_tol, max_tol), file
    assert CacheSource(cache, "train").empty_classes == ("bee",)

    stats = dataset_stats(cache)
    loader = PairLoader(
        cache, "train", 4, train=True, views="random", stats=stats, seed=0, drop_last=False
    )
    labels = torch.cat([y for _, y in loader]).tolist()
    assert Counter(labels) == Counter(label for label, *_ in corpus.used["train"].values())
    val = PairLoader(cache, "val", 4, train=False, views="center", stats=stats, seed=0)
    assert [y.tolist() for _, y in val] == [[0, 2]]


def test_on_the_fly_epochs_skip_each_bad_file_once_and_yield_every_good_one(corpus, caplog):
    caplog.set_level(logging.WARNING)
    stats = dataset_stats(corpus.root)
    loader = PairLoader(corpus.root, "train", 4, train=False, views="center", stats=stats, seed=0)
    assert isinstance(loader.source, FolderSource) and loader.classes == CLASSES
    used = corpus.used["train"]
    good = [f for f in loader.source.files if f in used]
    assert sorted(good) == sorted(used)
    mean = stats.mean_crop()
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = list(loader)
        images = torch.cat([x for x, _ in batches]) + mean
        labels = torch.cat([y for _, y in batches])
        assert len(labels) == len(used)
        for k, file in enumerate(good):  # unshuffled: the index's order, skipped rows dropped
            label, reference, mean_tol, max_tol = used[file]
            assert labels[k] == label
            assert close(images[k], reference[:, 16:240, 16:240], mean_tol, max_tol), file
    decoded_skips = {f for f in corpus.skipped if f in loader.source.files}
    assert loader.skipped == dict.fromkeys(decoded_skips, 2)
    assert_one_line_per_skip(corpus, caplog.records)

    val = PairLoader(corpus.root, "val", 4, train=False, views="center", stats=stats, seed=0)
    assert val.classes == CLASSES and [y.tolist() for _, y in val] == [[0, 2]]


def test_a_val_class_that_train_lacks_is_one_line_naming_it(tmp_path, capsys):
    root = tmp_path / "root"
    for split, name in (("train", "ant"), ("val", "ant"), ("val", "zebra")):
        (root / split / name).mkdir(parents=True)
        Image.fromarray(smooth(64, 64, 0)).save(root / split / name / "a.JPEG")
    cache = tmp_path / "cache"
    assert preprocess_main([str(root), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zebra" in err and str(root / "train") in err
    assert not cache.exists()  # refused before hours of caching train, not after
    stats = DatasetStats(torch.zeros(3, 256, 256), torch.ones(3), torch.eye(3))
    with pytest.raises(DataError, match=r"lacks: zebra"):
        PairLoader(root, "val", 1, train=False, views="center", stats=stats, seed=0)


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    calls = []
    decode = folder_module.decode_image
    monkeypatch.setattr(
        folder_module, "decode_image", lambda *a, **k: calls.append(1) or decode(*a, **k)
    )
    for name, data in (("bomb.JPEG", bomb_jpeg(30000)), ("bomb.png", bomb_png(30000))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableImage) as error:
            load_256(tmp_path / name)
        assert error.value.reason == TOO_MANY_PIXELS
        assert "30000×30000 = 900 M pixels, over the 179 M limit" in error.value.detail
    assert calls == []
    (tmp_path / "fine.png").write_bytes(bomb_png(8))  # the same file, honest about its size
    assert load_256(tmp_path / "fine.png").shape == (3, 256, 256) and calls == [1]


def test_header_sizes_match_pillow_for_every_format():
    rgb = smooth(30, 50, 0)
    exif = Image.Exif()
    exif[0x0112] = 1
    variants = {
        "JPEG": [dict(quality=90), dict(progressive=True), dict(exif=exif.tobytes())],
        "PNG": [{}],
        "GIF": [{}],
        "WEBP": [dict(lossless=True), dict(quality=80), dict(quality=80, exif=exif.tobytes())],
    }
    for fmt, options in variants.items():
        for option in options:
            data = encoded(Image.fromarray(rgb), fmt, **option)
            assert image_header(data)[1:] == (50, 30), (fmt, option)
    for fmt, kind in (("TIFF", "TIFF"), ("BMP", "BMP"), ("PPM", "PNM")):
        assert image_header(encoded(Image.fromarray(rgb), fmt))[0] == kind


@contextlib.contextmanager
def as_another_user(uid: int):
    """Root reads a chmod 000 file; only another user meets the permission error."""
    if not ROOT_USER:
        yield
        return
    try:
        os.setegid(uid)
        os.seteuid(uid)
    except PermissionError as error:
        os.setegid(0)
        pytest.skip(f"cannot act as another user to meet a permission error: {error}")
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir(tmp_path):
    """A folder another user can reach: pytest's own are private to root."""
    if not ROOT_USER:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="split-alexnet-bad-input-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_file_without_read_permission_is_skipped_for_a_user_who_cannot_read_it(
    shared_dir, caplog
):
    nobody = 65534
    root, cache = shared_dir / "root", shared_dir / "cache"
    (root / "train" / "ant").mkdir(parents=True)
    image = smooth(256, 256, 0)
    for name in ("good.JPEG", "locked.JPEG"):
        Image.fromarray(image).save(root / "train" / "ant" / name, quality=95)
    (root / "train" / "ant" / "locked.JPEG").chmod(0)
    cache.mkdir()
    if ROOT_USER:
        os.chown(cache, nobody, nobody)
    caplog.set_level(logging.WARNING)
    with as_another_user(nobody):
        _, stats = preprocess(root, cache)
        cached = CacheSource(cache, "train")
        raw = PairLoader(root, "train", 2, train=False, views="center", stats=stats, seed=0)
        labels = [y.tolist() for _, y in raw]
    assert cached.files == ("ant/good.JPEG",) and cached.unreadable == ("ant/locked.JPEG",)
    assert labels == [[0]] and raw.skipped == {"ant/locked.JPEG": 1}
    locked = shown(root / "train" / "ant" / "locked.JPEG")
    lines = [r.getMessage() for r in caplog.records if locked in r.getMessage()]
    assert lines == [f"skipped {locked}: {CANNOT_READ}: permission denied"]
