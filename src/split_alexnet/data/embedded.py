"""A small real-photo data set built from the photographs inside scikit-image's wheel.

Classes are source photographs; samples are square crops at varied scales and
positions, train crops from the left 68 % of each photograph and val crops from
the right 28 % (a 4 % gap keeps them disjoint), written as an ImageNet-layout
folder of JPEGs so the real pipeline (decode, rescale to 256, cache) reads it.

Seven colour photographs and three greyscale textures: the textures differ from
each other only in texture (and arrive as greyscale JPEGs, which the pipeline
must turn into RGB), while several colour classes share texture statistics
(smooth gradients: retina, coffee cup, astronaut; dark speckle: hubble) and are
told apart mainly by colour. So a classifier needs both cues, which is what the
Figure 3 experiment (colour-agnostic vs colour-specific kernels) needs.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import skimage
import torch
from torchvision.io import ImageReadMode, decode_image, read_file, write_jpeg

BUILD_VERSION = 1
SEED = 2012
TRAIN_PER_CLASS = 150
VAL_PER_CLASS = 30
JPEG_QUALITY = 90
TRAIN_REGION = (0.0, 0.68)  # fractions of the width
VAL_REGION = (0.72, 1.0)
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
        "version": BUILD_VERSION, "seed": SEED, "train_per_class": TRAIN_PER_CLASS,
        "val_per_class": VAL_PER_CLASS, "jpeg_quality": JPEG_QUALITY,
        "train_region": TRAIN_REGION, "val_region": VAL_REGION, "scale": SCALE,
        "classes": sorted(PHOTOGRAPHS), "scikit_image": skimage.__version__,
    }  # fmt: skip


def _crops(image: torch.Tensor, region, count: int, rng: np.random.Generator, side_max: int):
    height, width = image.shape[-2:]
    left, right = round(region[0] * width), round(region[1] * width)
    for _ in range(count):
        side = int(rng.integers(round(SCALE[0] * side_max), side_max + 1))
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, height - side + 1))
        yield image[:, y : y + side, x : x + side].contiguous()


def _readme(recipe: dict) -> str:
    rows = "\n".join(
        f"| {name} | skimage/data/{file} | {'colour' if colour else 'greyscale'} | {source} |"
        for name, (file, colour, source) in sorted(PHOTOGRAPHS.items())
    )
    return f"""# Embedded photo data set (built, not committed)

Built by `split_alexnet.data.build_embedded_dataset` from the sample photographs
shipped inside the scikit-image {recipe["scikit_image"]} wheel. Classes are
source photographs; each sample is a square crop (side {SCALE[0]}–{SCALE[1]} of the
largest square that fits the val strip) at a uniformly random position, train
crops from the left {int(TRAIN_REGION[1] * 100)} % of the width and val crops from
the right {int(100 - VAL_REGION[0] * 100)} %, so no val pixel appears in train.
{recipe["train_per_class"]} train and {recipe["val_per_class"]} val images per
class, JPEG quality {JPEG_QUALITY}, numpy PCG64 seeds {SEED} + class number.
Greyscale sources are written as greyscale JPEGs.

| class | file | kind | provenance and licence (scikit-image's documentation) |
|---|---|---|---|
{rows}

scikit-image itself is BSD-3-Clause. All ten photographs are public domain, CC0
or carry no known copyright restrictions, as stated by scikit-image.
"""


def build_embedded_dataset(root: Path) -> Path:
    """Build (once) root/train/<class>/*.JPEG and root/val/<class>/*.JPEG; returns root.

    Deterministic; an existing build with the same recipe is reused as it is.
    """
    root = Path(root)
    recipe = json.loads(json.dumps(_recipe()))  # tuples compare equal after a JSON round trip
    stamp = root / "BUILD.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == recipe:
        return root
    start = time.perf_counter()
    staging = root.with_name(root.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    data_dir = Path(skimage.data.__file__).parent
    for number, name in enumerate(sorted(PHOTOGRAPHS)):
        file, colour, _ = PHOTOGRAPHS[name]
        mode = ImageReadMode.RGB if colour else ImageReadMode.GRAY
        image = decode_image(read_file(str(data_dir / file)), mode=mode)
        height, width = image.shape[-2:]
        side_max = min(height, round((VAL_REGION[1] - VAL_REGION[0]) * width))
        rng = np.random.Generator(np.random.PCG64(SEED + number))
        for split, region, count in (
            ("train", TRAIN_REGION, TRAIN_PER_CLASS),
            ("val", VAL_REGION, VAL_PER_CLASS),
        ):
            folder = staging / split / name
            folder.mkdir(parents=True)
            for k, patch in enumerate(_crops(image, region, count, rng, side_max)):
                write_jpeg(patch, str(folder / f"{name}_{split}_{k:04d}.JPEG"), JPEG_QUALITY)
    (staging / "README.md").write_text(_readme(recipe))
    seconds = round(time.perf_counter() - start, 2)
    (staging / "BUILD.json").write_text(json.dumps({"recipe": recipe, "seconds": seconds}) + "\n")
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(root)
    return root
