"""Every real photograph our installed wheels ship, one class each (issue 16: a richer set).

The default embedded set (data/embedded.py) is ten crops-of-one-photo classes
that a net learns in a few hundred steps without conv1 moving far from its
initialisation. These sets keep its construction (photo_folder.py) with more
classes and a wider range of crop scales, so the task needs more of conv1:

- "photos": the colour photographs of scikit-image and matplotlib (9 classes).
- "photos_grey": those and the greyscale photographs (18 classes): greyscale
  classes differ only in form, colour classes partly only in colour, so a
  classifier needs both cues, as the Figure 3 experiment does.

Nothing is downloaded: scikit-image and matplotlib are dependencies already;
scikit-learn (whose two sample photos would qualify) is not installed and not
added. Left out, as not photographs or too small to crop: skimage's colorwheel,
chessboards, logo, horse, phantom (drawn), cell (a holographic phase map),
microaneurysms (102 px), lfw_subset (25 px faces), the multipage/gif test
files, motorcycle_right (motorcycle_left's scene again); matplotlib's
Minduka_Present_Blue_Pack (clip art), logo2 and s1045.ima (an MRI slice).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import skimage

from split_alexnet.data.photo_folder import (
    Photograph,
    build_photo_set,
    crop_recipe,
    describe_crops,
    photo_table,
)

BUILD_VERSION = 1
SEED = 2016
TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 40
# Multi-scale: crops from a quarter to all of the largest square that fits the val strip.
SCALE = (0.25, 1.0)

_SKIMAGE = Path(skimage.data.__file__).parent
_MATPLOTLIB = Path(matplotlib.get_data_path()) / "sample_data"
_NO_LICENCE = "no licence stated by scikit-image, which ships it under its BSD-3-Clause"


def _skimage(file: str, colour: bool, source: str) -> Photograph:
    return Photograph(_SKIMAGE / file, colour, f"skimage/data/{file}", source)


COLOUR = {
    "astronaut": _skimage(
        "astronaut.png", True, "Eileen Collins, NASA Great Images (flic.kr/p/r9qvLn); public domain"
    ),
    "chelsea": _skimage("chelsea.png", True, "Chelsea the cat, Stefan van der Walt; CC0"),
    "coffee": _skimage(
        "coffee.png", True, "Coffee cup, Rachel Michetti / Pikolo Espresso Bar; CC0"
    ),
    "hubble_deep_field": _skimage(
        "hubble_deep_field.jpg",
        True,
        "Hubble eXtreme Deep Field, NASA (hubblesite.org 2012/37); public domain",
    ),
    "immunohistochemistry": _skimage(
        "ihc.png",
        True,
        "IHC staining, Center for Microscopy and Molecular Imaging (CMMI); "
        "no known copyright restrictions",
    ),
    "motorcycle": _skimage(
        "motorcycle_left.png",
        True,
        "Middlebury 2014 stereo benchmark, left view, downsampled ×4 (Scharstein et al., "
        f"GCPR 2014); {_NO_LICENCE}",
    ),
    "retina": _skimage(
        "retina.jpg", True, "Fundus photograph of normal left eye, Wikimedia Commons; CC0 1.0"
    ),
    "rocket": _skimage("rocket.jpg", True, "DSCOVR launch on Falcon 9, SpaceX; public domain"),
    "grace_hopper": Photograph(
        _MATPLOTLIB / "grace_hopper.jpg",
        True,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "Commodore Grace M. Hopper, U.S. Navy official photograph; public domain "
        "(a U.S. federal government work); matplotlib ships it with no licence of its own",
    ),
}

GREY = {
    "brick": _skimage(
        "brick.png", False, "Bricks25, CC0Textures (transformed by scikit-image); CC0"
    ),
    "camera": _skimage("camera.png", False, "Cameraman, Lav Varshney; CC0"),
    "clock": _skimage(
        "clock_motion.png", False, "Motion-blurred wall clock, Stefan van der Walt; public domain"
    ),
    "coins": _skimage(
        "coins.png",
        False,
        "Greek coins from Pompeii, Brooklyn Museum collection; no known copyright restrictions",
    ),
    "grass": _skimage("grass.png", False, "Grass-01, linolafett on DeviantArt; CC0"),
    "gravel": _skimage("gravel.png", False, "Gravel04, CC0Textures; CC0"),
    "moon": _skimage("moon.png", False, f"Surface of the moon; {_NO_LICENCE}"),
    "page": _skimage("page.png", False, f"Scanned page of printed text; {_NO_LICENCE}"),
    "text": _skimage(
        "text.png", False, "Corner test image, Wikipedia (File:Corner.png); public domain"
    ),
}

SETS = {"photos": COLOUR, "photos_grey": COLOUR | GREY}


def _recipe(name: str) -> dict:
    return {
        "set": name, "version": BUILD_VERSION,
        **crop_recipe(SEED, TRAIN_PER_CLASS, VAL_PER_CLASS, SCALE),
        "classes": sorted(SETS[name]), "scikit_image": skimage.__version__,
        "matplotlib": matplotlib.__version__,
    }  # fmt: skip


def _readme(recipe: dict) -> str:
    photographs = SETS[recipe["set"]]
    return f"""# Photo set "{recipe["set"]}" (built, not committed)

Built by `split_alexnet.data.build_embedded_dataset(root, "{recipe["set"]}")` from
the photographs shipped inside the scikit-image {recipe["scikit_image"]} and
matplotlib {recipe["matplotlib"]} wheels, {len(photographs)} classes, one per
photograph. {describe_crops(recipe)}

{photo_table(photographs)}

scikit-image is BSD-3-Clause; matplotlib is under the Matplotlib (PSF-style)
licence. Licences are as the shipping package's documentation states them;
where it states none, the table says so.
"""


def build(root: Path, name: str) -> Path:
    """Build (once) the set `name` ("photos" or "photos_grey") under root; returns root."""
    recipe = _recipe(name)
    return build_photo_set(root, SETS[name], recipe, _readme(recipe))
