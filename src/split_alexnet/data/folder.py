"""ImageNet-layout folders (root/<split>/<class>/<image>) and the paper's 256×256 rescale.

Sec. 2: "rescaled the image such that the shorter side was of length 256, and then
cropped out the central 256×256 patch". Decoding is torchvision's (libjpeg-turbo,
libpng, giflib, libwebp); greyscale, CMYK, YCCK, palette, alpha and 16-bit images
all come out as 3-channel 8-bit RGB, turned as the file's EXIF orientation says.

A file that cannot be used is skipped, never fatal, with one warning per file per
process that names it and says why (`report_skip`); the reasons are the constants
below, so the preprocessing command can count them.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

log = logging.getLogger(__name__)

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they are still
# the libjpeg-turbo/libpng decoders the issue asks for, so say it once in docs/data.md.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

SIZE = 256  # Sec. 2: the stored image
CROP = 224  # Sec. 4.1: the network's input

# Where Pillow raises DecompressionBombError (2 × MAX_IMAGE_PIXELS, ~179 M pixels, 0.5 GB
# as RGB): a header that claims more is refused before anything is allocated. A 100 MP
# camera photo passes.
MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)
# A 1×100,000 strip would rescale to 256×25.6 M pixels; past this ratio only the
# central part of the long side is rescaled, which is all the central crop keeps.
MAX_ASPECT = 16

# Names the index takes for images; the decoder then goes by the bytes, not the name
# (ImageNet holds PNG and CMYK files named .JPEG), and says why it refuses the rest.
IMAGE_SUFFIXES = frozenset({*IMG_EXTENSIONS, ".gif"})

# Why a file was skipped: the keys of the preprocessing command's summary.
EMPTY = "empty file"
NOT_IMAGE = "not an image"
UNSUPPORTED = "unsupported image format"
CORRUPT = "truncated or corrupt"
TOO_MANY_PIXELS = "too many pixels (decompression bomb?)"
CANNOT_READ = "cannot be read"  # followed by the system's reason
NOT_IMAGE_NAME = "not an image file name"
OUTSIDE_CLASS = "not in a class folder"
FOLDER_LOOP = "folder loop"

# The set a split of class folders is: the folder cannot say whether it holds
# ILSVRC-2010's test set (the paper's Table 1) or 2012's validation set (Table 2).
FOLDER_SET = "folder"

_MAGIC = {b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP"}
_NOT_DECODED = {"TIFF", "BMP", "PNM", "animated WebP"}


class DataError(ValueError):
    """A data set that cannot be read, said in one line that names the path."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UnreadableImage(Exception):
    """One file that cannot be used as an image: why (one of the reasons above) and detail."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = os.fspath(path), reason, detail
        super().__init__(f"{shown(path)}: {self.why}")

    @property
    def why(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.detail)


def shown(path: str | os.PathLike) -> str:
    """path as one printable line: a file name may hold undecodable bytes or a newline."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


_said: set = set()


def warn_once(logger: logging.Logger, key, message: str, *args) -> None:
    """Log a warning the first time this process meets `key`: the statistics, the loader
    and every epoch meet the same bad file, and the user needs to hear of it once."""
    if key not in _said:
        _said.add(key)
        logger.warning(message, *args)


def report_skip(path: str | os.PathLike, why: str) -> None:
    """The one log line for a skipped file: its name and why."""
    warn_once(log, ("skip", os.fspath(path)), "skipped %s: %s", shown(path), why)


@dataclass(frozen=True)
class SplitIndex:
    """The files of one split, sorted by class then path, with their labels."""

    split_dir: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # relative to split_dir
    labels: np.ndarray  # int64, one per file
    empty_classes: tuple[str, ...] = field(default=())
    skipped: tuple[tuple[str, str, str], ...] = field(default=())  # (file, reason, detail)
    names: tuple[str, ...] = field(default=())  # human class names, where the data says them
    set_name: str = FOLDER_SET  # which test set this is, for the papers' tables

    def __len__(self) -> int:
        return len(self.files)

    def image(self, row: int) -> torch.Tensor:
        """`load_256` of file `row`."""
        return load_256(self.split_dir / self.files[row])

    def manifest(self) -> dict:
        """The index as the cache records it (JSON)."""
        return {
            "classes": list(self.classes),
            "files": list(self.files),
            "labels": self.labels.tolist(),
            "empty_classes": list(self.empty_classes),
            "skipped": [list(skip) for skip in self.skipped],
            "names": list(self.names),
            "set": self.set_name,
        }


def _entries(folder: str) -> tuple[list[str], list[str]]:
    """Sub-folder and other names in folder, symbolic links followed."""
    dirs, others = [], []
    with os.scandir(folder) as scan:
        for entry in scan:
            try:
                is_dir = entry.is_dir()
            except OSError:  # a symbolic link loop: reading it will say so
                is_dir = False
            (dirs if is_dir else others).append(entry.name)
    return sorted(dirs), sorted(others)


def _walk(top: str, skipped: list[tuple[str, str, str]]) -> list[str]:
    """Every file under top in make_dataset's order (sorted folder paths, then sorted
    names), following symbolic links as it does but not round a loop, which it would
    follow until the path is too long, listing every image dozens of times."""
    listed: list[tuple[str, list[str]]] = []

    def visit(folder: str, ancestors: dict[tuple[int, int], str]) -> None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in ancestors:
                back = ancestors[(st.st_dev, st.st_ino)]
                skipped.append((folder, FOLDER_LOOP, f"the same folder as {shown(back)}"))
                return
            dirs, files = _entries(folder)
        except OSError as error:
            skipped.append((folder, f"{CANNOT_READ}: {_os_reason(error)}", ""))
            return
        listed.append((folder, files))
        inside = {**ancestors, (st.st_dev, st.st_ino): folder}
        for name in dirs:
            visit(os.path.join(folder, name), inside)

    visit(top, {})
    return [os.path.join(folder, name) for folder, files in sorted(listed) for name in files]


def _class_folders(split_dir: Path) -> tuple[list[str], list[str]]:
    try:
        dirs, others = _entries(str(split_dir))
    except OSError as error:
        raise DataError(f"split folder {split_dir} cannot be read: {_os_reason(error)}") from None
    if not dirs:
        raise DataError(f"split folder {split_dir} has no class folders")
    return dirs, others


def index_split(root: Path, split: str) -> SplitIndex:
    """List root/split in the ImageNet layout; a missing or empty one is a `DataError`.

    Labels follow root/train's class folders for every split, so a val folder that
    lacks a class still labels the rest as training did; a val class that train
    lacks is a `DataError`, since the network has no output for it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist")
    found, strays = _class_folders(split_dir)
    classes = found
    train_dir = root / "train"
    if split != "train":
        if train_dir.is_dir():
            classes, _ = _class_folders(train_dir)
            extra = ", ".join(shown(name) for name in sorted(set(found) - set(classes)))
            if extra:
                raise DataError(
                    f"{split_dir} has class folders that {train_dir} lacks: {extra};"
                    " a network trained on train has no output for them"
                    " (remove them, or add them to train)"
                )
        else:
            warn_once(
                log, ("no train", str(split_dir)),
                "%s: no train split beside it, so labels follow its own class folders", split_dir,
            )  # fmt: skip
    skipped = [(os.path.join(split_dir, name), OUTSIDE_CLASS, "") for name in strays]
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in _walk(str(folder), skipped):
            if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
            else:
                skipped.append((path, NOT_IMAGE_NAME, "no image extension"))
    skipped.sort()
    for path, reason, detail in skipped:
        report_skip(path, f"{reason} ({detail})" if detail else reason)
    if not files:
        raise DataError(f"split folder {split_dir} has no image files")
    counts = np.bincount(labels, minlength=len(classes))
    empty = tuple(c for c, n in zip(classes, counts, strict=True) if n == 0)
    if empty:
        warn_once(
            log, ("empty", str(split_dir), empty),
            "%s: class folders with no images: %s", split_dir, ", ".join(map(shown, empty)),
        )  # fmt: skip
    cut = len(os.path.join(split_dir, ""))  # every path was joined onto split_dir
    return SplitIndex(
        split_dir,
        tuple(classes),
        tuple(path[cut:] for path in files),
        np.array(labels, dtype=np.int64),
        empty,
        tuple((path[cut:], reason, detail) for path, reason, detail in skipped),
    )


def _os_reason(error: OSError) -> str:
    return (error.strerror or type(error).__name__).lower()


def image_header(data: bytes | bytearray) -> tuple[str | None, int, int]:
    """The format and the width and height its header claims (0, 0 where it does not say),
    read without decoding: torchvision allocates the whole image before it finds the data short."""
    head = bytes(data[:30])
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind, 0, 0
    if re.match(rb"P[1-7]\s", head):  # .ppm, .pgm: names the index takes
        return "PNM", 0, 0
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return "PNG", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        chunk = head[12:16]
        if chunk == b"VP8X":
            kind = "animated WebP" if head[20] & 0x02 else "WebP"
            width, height = head[24:27], head[27:30]
            return kind, 1 + int.from_bytes(width, "little"), 1 + int.from_bytes(height, "little")
        if chunk == b"VP8 ":
            width, height = head[26:28], head[28:30]
            return "WebP", *(int.from_bytes(v, "little") & 0x3FFF for v in (width, height))
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return "WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return "WebP", 0, 0
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG", *_jpeg_size(data)
    return None, 0, 0


def _jpeg_size(data: bytes | bytearray) -> tuple[int, int]:
    """Width and height from the first frame header (SOFn), skipping segments by length."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break  # not where a marker should be: the decoder will say what is wrong
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            break
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            return int.from_bytes(data[i + 7 : i + 9], "big"), height
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return 0, 0


def _decoder_message(error: Exception) -> str:
    """torchvision's message without the C++ source location that leads it."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return re.sub(r"^\w+, \S+\.(?:cpp|h):\d+, ", "", text)[:200]


def decode_rgb(path: str | os.PathLike) -> torch.Tensor:
    """uint8 (3, H, W): the image as a viewer shows it; raises `UnreadableImage`.

    EXIF orientation is applied: a user who sees an upright photo expects the
    network to get it upright (the paper does not say; ImageNet has few such files).
    An animated GIF gives its first frame; 16-bit PNG is scaled to 8 bits.
    """
    try:
        with open(path, "rb") as file:
            data = bytearray(file.read())
    except OSError as error:
        link = f"a symbolic link to {os.readlink(path)}" if os.path.islink(path) else ""
        raise UnreadableImage(path, f"{CANNOT_READ}: {_os_reason(error)}", link) from None
    return decode_bytes(data, path)


def decode_bytes(data: bytearray, path: str | os.PathLike) -> torch.Tensor:
    """`decode_rgb` of a file's bytes read elsewhere (a tar member); `path` names it."""
    if not data:
        raise UnreadableImage(path, EMPTY, "0 bytes")
    kind, width, height = image_header(data)
    if kind in _NOT_DECODED:
        raise UnreadableImage(path, UNSUPPORTED, f"{kind}; the decoder reads JPEG, PNG, GIF, WebP")
    if width * height > MAX_PIXELS:
        raise UnreadableImage(
            path,
            TOO_MANY_PIXELS,
            f"the {kind} header says {width}×{height} = {width * height / 1e6:.0f} M pixels, "
            f"over the {MAX_PIXELS / 1e6:.0f} M limit; not decoded",
        )
    try:
        image = decode_image(
            torch.frombuffer(data, dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except (RuntimeError, ValueError) as error:
        if kind is None:
            raise UnreadableImage(path, NOT_IMAGE, f"starts {bytes(data[:8]).hex(' ')}") from None
        raise UnreadableImage(path, CORRUPT, f"{kind}: {_decoder_message(error)}") from None
    if image.ndim == 4:
        image = image[0]
    if image.dtype != torch.uint8:
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image


def load_256(path: Path) -> torch.Tensor:
    """The paper's stored image: uint8 (3, 256, 256), shorter side to 256 then centre crop.

    Raises `UnreadableImage` for a file that cannot be used, saying why.
    """
    return rescale_256(decode_rgb(path))


def rescale_256(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) → (3, 256, 256): shorter side 256 (antialiased), central patch."""
    height, width = image.shape[-2:]
    short = min(height, width)
    if max(height, width) > MAX_ASPECT * short:
        keep = MAX_ASPECT * short
        image = F.center_crop(image, [min(height, keep), min(width, keep)])
    if short != SIZE:
        image = F.resize(image, SIZE, antialias=True)
    return F.center_crop(image, [SIZE, SIZE]).contiguous()
