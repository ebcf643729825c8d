"""The ILSVRC-2012 devkit: the 1,000 classes' WordNet ids and names, and the validation labels.

torchvision's `datasets.imagenet` parses it (meta.mat's leaf synsets, the
ground-truth file); we call its helpers on a temporary folder so that the
data root may be read-only and nothing is left beside the user's files.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets import imagenet

from split_alexnet.data.folder import DataError

DEVKIT = imagenet.ARCHIVE_META["devkit"][0]  # ILSVRC2012_devkit_t12.tar.gz


@dataclass(frozen=True)
class Devkit:
    """classes: sorted WordNet ids; names[wnid]: its words ("tench, Tinca tinca");
    val_wnids: the class of each validation image, in the order of their file names."""

    classes: tuple[str, ...]
    names: dict[str, str]
    val_wnids: tuple[str, ...]


def read_devkit(path: Path) -> Devkit:
    """The devkit archive at `path`; anything but ILSVRC2012_devkit_t12.tar.gz is a DataError.

    Classes are sorted by WordNet id, as torchvision's ImageNet and every class-folder
    copy of ImageNet order them, not by ILSVRC2012_ID: so a cache built from the
    tarballs has the labels of one built from folders, and of torchvision's weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"no devkit {path}: the tarballs need it for the class names and the validation "
            f"labels (download {DEVKIT} from image-net.org and put it beside them)"
        )
    with tempfile.TemporaryDirectory(prefix="devkit-") as place:
        os.symlink(path.resolve(), Path(place) / DEVKIT)
        try:
            imagenet.parse_devkit_archive(place)  # checks the archive's MD5 first
        except RuntimeError:
            raise DataError(
                f"{path} is not {DEVKIT} as image-net.org distributes it (its MD5 differs)"
            ) from None
        wnid_words, val_wnids = imagenet.load_meta_file(place)
    names = {wnid: ", ".join(words) for wnid, words in wnid_words.items()}
    return Devkit(tuple(sorted(names)), names, tuple(val_wnids))
