"""ImageNet-layout folders (root/<split>/<class>/<image>) and the paper's 256×256 rescale.

Sec. 2: "rescaled the image such that the shorter side was of length 256, and then
cropped out the central 256×256 patch". Decoding is torchvision's (libjpeg-turbo,
libpng); greyscale, CMYK, palette and alpha images all come out as 3-channel RGB.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file
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

EXTENSIONS = tuple(sorted({*IMG_EXTENSIONS, ".JPEG"}))


class DataError(ValueError):
    """A data set that cannot be read, said in one line that names the path."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UnreadableImage(Exception):
    """One image file that cannot be decoded (corrupt, truncated, not an image)."""


@dataclass(frozen=True)
class SplitIndex:
    """The files of one split, sorted by class then path, with their labels."""

    split_dir: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # relative to split_dir
    labels: np.ndarray  # int64, one per file
    empty_classes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.files)


def index_split(root: Path, split: str) -> SplitIndex:
    """List root/split in the ImageNet layout; a missing or empty one is a `DataError`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist")
    try:
        classes, class_to_idx = find_classes(str(split_dir))
    except FileNotFoundError:
        raise DataError(f"split folder {split_dir} has no class folders") from None
    samples = make_dataset(str(split_dir), class_to_idx, extensions=EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(f"split folder {split_dir} has no image files")
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    empty = tuple(c for c, n in zip(classes, counts, strict=True) if n == 0)
    if empty:
        log.warning("%s: class folders with no images: %s", split_dir, ", ".join(empty))
    files = tuple(str(Path(path).relative_to(split_dir)) for path, _ in samples)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return SplitIndex(split_dir, tuple(classes), files, labels, empty)


def load_256(path: Path) -> torch.Tensor:
    """The paper's stored image: uint8 (3, 256, 256), shorter side to 256 then centre crop.

    Raises `UnreadableImage` for a corrupt, truncated or empty file.
    """
    try:
        data = read_file(str(path))
        image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        raise UnreadableImage(f"{path}: {str(error).splitlines()[0][:120]}") from None
    return rescale_256(image)


def rescale_256(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) → (3, 256, 256): shorter side 256 (antialiased), central patch."""
    if min(image.shape[-2:]) != SIZE:
        image = F.resize(image, SIZE, antialias=True)
    return F.center_crop(image, [SIZE, SIZE]).contiguous()
