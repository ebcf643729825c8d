"""Writes a photo set: square crops of whole photographs as an ImageNet-layout folder of JPEGs.

Classes are source photographs; samples are square crops at varied scales and
positions, train crops from the left 68 % of each photograph and val crops from
the right 28 % (a 4 % gap keeps them disjoint), so the real pipeline (decode,
rescale to 256, cache) reads them as it reads ImageNet. Greyscale sources are
written as greyscale JPEGs, which the pipeline must turn into RGB.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file, write_jpeg

JPEG_QUALITY = 90
TRAIN_REGION = (0.0, 0.68)  # fractions of the width
VAL_REGION = (0.72, 1.0)


@dataclass(frozen=True)
class Photograph:
    """One class: a photograph inside an installed wheel, and what its package says of it."""

    path: Path
    colour: bool
    shipped_as: str  # the file as its package names it, for the README
    source: str  # provenance and licence, as the shipping package states them


def _crops(image: torch.Tensor, region, count: int, rng: np.random.Generator, scale, side_max):
    height, width = image.shape[-2:]
    left, right = round(region[0] * width), round(region[1] * width)
    for _ in range(count):
        side = int(rng.integers(round(scale[0] * side_max), side_max + 1))
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, height - side + 1))
        yield image[:, y : y + side, x : x + side].contiguous()


def build_photo_set(
    root: Path, photographs: dict[str, Photograph], recipe: dict, readme: str
) -> Path:
    """Build (once) root/train/<class>/*.JPEG and root/val/<class>/*.JPEG; returns root.

    `recipe` (seed, train_per_class, val_per_class, scale: crop side as a
    fraction of the largest square that fits the val strip) is stamped into
    root/BUILD.json; an existing build with the same recipe is reused as it is.
    Deterministic: class number k draws its crops from PCG64(seed + k).
    """
    root = Path(root)
    recipe = json.loads(json.dumps(recipe))  # tuples compare equal after a JSON round trip
    stamp = root / "BUILD.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == recipe:
        return root
    start = time.perf_counter()
    staging = root.with_name(root.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    for number, name in enumerate(sorted(photographs)):
        photo = photographs[name]
        mode = ImageReadMode.RGB if photo.colour else ImageReadMode.GRAY
        image = decode_image(read_file(str(photo.path)), mode=mode)
        height, width = image.shape[-2:]
        side_max = min(height, round((VAL_REGION[1] - VAL_REGION[0]) * width))
        rng = np.random.Generator(np.random.PCG64(recipe["seed"] + number))
        for split, region, count in (
            ("train", TRAIN_REGION, recipe["train_per_class"]),
            ("val", VAL_REGION, recipe["val_per_class"]),
        ):
            folder = staging / split / name
            folder.mkdir(parents=True)
            crops = _crops(image, region, count, rng, recipe["scale"], side_max)
            for k, patch in enumerate(crops):
                write_jpeg(patch, str(folder / f"{name}_{split}_{k:04d}.JPEG"), JPEG_QUALITY)
    (staging / "README.md").write_text(readme)
    seconds = round(time.perf_counter() - start, 2)
    (staging / "BUILD.json").write_text(json.dumps({"recipe": recipe, "seconds": seconds}) + "\n")
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(root)
    return root


def crop_recipe(seed: int, train_per_class: int, val_per_class: int, scale) -> dict:
    """The recipe entries every photo set shares (build_photo_set reads them)."""
    return {
        "seed": seed, "train_per_class": train_per_class, "val_per_class": val_per_class,
        "jpeg_quality": JPEG_QUALITY, "train_region": TRAIN_REGION, "val_region": VAL_REGION,
        "scale": scale,
    }  # fmt: skip


def describe_crops(recipe: dict) -> str:
    """The README's paragraph on how the crops were cut from the photographs."""
    scale = recipe["scale"]
    return f"""Each sample is a square crop (side {scale[0]}–{scale[1]} of the largest square
that fits the val strip) at a uniformly random position, train crops from the left
{int(TRAIN_REGION[1] * 100)} % of the width and val crops from the right
{int(100 - VAL_REGION[0] * 100)} %, so no val pixel appears in train.
{recipe["train_per_class"]} train and {recipe["val_per_class"]} val images per class,
JPEG quality {JPEG_QUALITY}, numpy PCG64 seeds {recipe["seed"]} + class number.
Greyscale sources are written as greyscale JPEGs."""


def photo_table(photographs: dict[str, Photograph]) -> str:
    """The README's table: class, file, colour or greyscale, provenance and licence."""
    rows = "\n".join(
        f"| {name} | {p.shipped_as} | {'colour' if p.colour else 'greyscale'} | {p.source} |"
        for name, p in sorted(photographs.items())
    )
    return (
        "| class | file | kind | provenance and licence (the shipping package's documentation) |\n"
        f"|---|---|---|---|\n{rows}"
    )
