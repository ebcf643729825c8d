"""A small real-photo data set built from the photographs inside scikit-image's wheel.

Classes are source photographs, written by photo_folder.build_photo_set as an
ImageNet-layout folder of crops. The default set of every run; `data=photos`
and `data=photos_grey` choose the larger sets of data/photos.py instead.

Seven colour photographs and three greyscale textures: the textures differ from
each other only in texture (and arrive as greyscale JPEGs, which the pipeline
must turn into RGB), while several colour classes share texture statistics
(smooth gradients: retina, coffee cup, astronaut; dark speckle: hubble) and are
told apart mainly by colour. So a classifier needs both cues, which is what the
Figure 3 experiment (colour-agnostic vs colour-specific kernels) needs.
"""

from __future__ import annotations

from pathlib import Path

import skimage

from split_alexnet.data import photos
from split_alexnet.data.photo_folder import (
    Photograph,
    build_photo_set,
    crop_recipe,
    describe_crops,
    photo_table,
)

BUILD_VERSION = 1
SEED = 2012
TRAIN_PER_CLASS = 150
VAL_PER_CLASS = 30
SCALE = (0.5, 1.0)  # crop side as a fraction of the largest square that fits the val strip

# class name → (file inside skimage/data, colour?, provenance and licence from skimage's docs)
PHOTOGRAPHS = {
    "astronaut": (
        "astronaut.png",
        True,
        "Eileen Collins, NASA Great Images (flic.kr/p/r9qvLn); public domain",
    ),
    "chelsea": ("chelsea.png", True, "Chelsea the cat, Stefan van der Walt; CC0"),
    "coffee": ("coffee.png", True, "Coffee cup, Rachel Michetti / Pikolo Espresso Bar; CC0"),
    "hubble_deep_field": (
        "hubble_deep_field.jpg",
        True,
        "Hubble eXtreme Deep Field, NASA (hubblesite.org 2012/37); public domain",
    ),
    "immunohistochemistry": (
        "ihc.png",
        True,
        "IHC staining, Center for Microscopy and Molecular Imaging (CMMI); "
        "no known copyright restrictions",
    ),
    "retina": (
        "retina.jpg",
        True,
        "Fundus photograph of normal left eye, Wikimedia Commons; CC0 1.0",
    ),
    "rocket": ("rocket.jpg", True, "DSCOVR launch on Falcon 9, SpaceX; public domain"),
    "brick": ("brick.png", False, "Bricks25, CC0Textures (transformed by scikit-image); CC0"),
    "grass": ("grass.png", False, "Grass-01, linolafett on DeviantArt; CC0"),
    "gravel": ("gravel.png", False, "Gravel04, CC0Textures; CC0"),
}


def _recipe() -> dict:
    return {
        "version": BUILD_VERSION, **crop_recipe(SEED, TRAIN_PER_CLASS, VAL_PER_CLASS, SCALE),
        "classes": sorted(PHOTOGRAPHS), "scikit_image": skimage.__version__,
    }  # fmt: skip


def _readme(recipe: dict) -> str:
    return f"""# Embedded photo data set (built, not committed)

Built by `split_alexnet.data.build_embedded_dataset` from the sample photographs
shipped inside the scikit-image {recipe["scikit_image"]} wheel. Classes are
source photographs. {describe_crops(recipe)}

{photo_table(_photographs())}

scikit-image itself is BSD-3-Clause. All ten photographs are public domain, CC0
or carry no known copyright restrictions, as stated by scikit-image.
"""


def _photographs() -> dict[str, Photograph]:
    data_dir = Path(skimage.data.__file__).parent
    return {
        name: Photograph(data_dir / file, colour, f"skimage/data/{file}", source)
        for name, (file, colour, source) in PHOTOGRAPHS.items()
    }


def build_embedded_dataset(root: Path, name: str = "embedded") -> Path:
    """Build (once) the photo set `name` in root/train/<class>/*.JPEG and root/val/…; returns root.

    "embedded": the ten classes here (every run's default); "photos",
    "photos_grey": data/photos.py's sets (`data=photos`, `data=photos_grey`).
    Deterministic; an existing build with the same recipe is reused as it is.
    """
    if name in photos.SETS:
        return photos.build(root, name)
    if name != "embedded":
        raise ValueError(f"no embedded photo set {name!r}: embedded, {', '.join(photos.SETS)}")
    recipe = _recipe()
    return build_photo_set(root, _photographs(), recipe, _readme(recipe))
