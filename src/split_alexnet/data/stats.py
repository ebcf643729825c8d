"""The training set's mean image and RGB colour PCA (Sec. 2, Sec. 4.1).

Both in 0–255 pixel units, over the 256×256 stored images: the per-pixel mean
(3, 256, 256), whose central 224×224 crop the loader subtracts (convdata.py
`data_mean_crop`), and the eigen-decomposition of the 3×3 covariance of RGB
values over every pixel of every image counted. Cached beside the data as
stats-<split>-<all|N-seedS>.npz with a .json that says how it was computed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from split_alexnet.data.folder import CROP, SIZE, UnreadableImage, report_skip
from split_alexnet.data.source import CacheSource, FolderSource, open_source


@dataclass(frozen=True)
class DatasetStats:
    """mean (3, 256, 256) float32; eigenvalues (3,) descending; eigenvectors (3, 3), columns p_i."""

    mean: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    how: dict = field(default_factory=dict)

    def mean_crop(self) -> torch.Tensor:
        """The mean image's central 224×224 patch, (3, 224, 224)."""
        o = (SIZE - CROP) // 2
        return self.mean[:, o : o + CROP, o : o + CROP].contiguous()

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            mean=self.mean.numpy(),
            eigenvalues=self.eigenvalues.numpy(),
            eigenvectors=self.eigenvectors.numpy(),
        )
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(self.how, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DatasetStats:
        path = Path(path)
        with np.load(path) as f:
            arrays = {k: torch.from_numpy(f[k].copy()) for k in f.files}
        how_path = path.with_suffix(".json")
        how = json.loads(how_path.read_text()) if how_path.is_file() else {}
        return cls(arrays["mean"], arrays["eigenvalues"], arrays["eigenvectors"], how)


def pca(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and unit eigenvectors (columns), each with a non-negative sum."""
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    vectors = vectors * np.where(vectors.sum(0) < 0, -1.0, 1.0)
    return values, vectors


def compute_stats(images, total: int | None = None, desc: str = "stats") -> DatasetStats:
    """Mean image and pixel PCA of an iterable of uint8 (3, 256, 256) images, in float64."""
    pixel_sum = np.zeros((3, SIZE, SIZE))
    outer = np.zeros((3, 3))
    count = 0
    for image in tqdm(images, total=total, desc=desc, unit="img", leave=False):
        x = np.asarray(image, dtype=np.float64)
        pixel_sum += x
        flat = x.reshape(3, -1)
        outer += flat @ flat.T
        count += 1
    if count == 0:
        raise ValueError("no images to compute statistics from")
    mean = pixel_sum / count
    rgb_mean = mean.reshape(3, -1).mean(1)
    covariance = outer / (count * SIZE * SIZE) - np.outer(rgb_mean, rgb_mean)
    values, vectors = pca(covariance)
    return DatasetStats(
        torch.from_numpy(mean.astype(np.float32)),
        torch.from_numpy(values.astype(np.float32)),
        torch.from_numpy(vectors.astype(np.float32)),
        {"images": count},
    )


def stats_path(
    source: FolderSource | CacheSource, subset: int | None, seed: int, where: Path | None = None
) -> Path:
    which = "all" if subset is None or subset >= len(source) else f"{subset}-seed{seed}"
    return (where or source.stats_dir()) / f"stats-{source.split}-{which}.npz"


def dataset_stats(
    source: Path,
    subset: int | None = None,
    seed: int = 0,
    split: str = "train",
    where: Path | None = None,
) -> DatasetStats:
    """The cached statistics of `split`, computing them on first use.

    `source` is a raw root or a cache directory. With `subset`, a fixed-seed
    random subset of that many images (numpy PCG64(seed), without replacement),
    for ImageNet-sized sets; otherwise every image. Unreadable files are skipped.
    `where`: the folder the statistics are kept in (default: the source's own).
    """
    src = open_source(Path(source), split)
    path = stats_path(src, subset, seed, where)
    if path.is_file():
        return DatasetStats.load(path)
    n = len(src)
    if subset is None or subset >= n:
        chosen = np.arange(n)
    else:
        chosen = np.sort(
            np.random.Generator(np.random.PCG64(seed)).choice(n, subset, replace=False)
        )
    skipped: list[str] = []

    def images():
        for i in chosen:
            try:
                yield src.image(int(i))
            except UnreadableImage as error:
                report_skip(error.path, error.why)
                skipped.append(src.files[int(i)])

    start = time.perf_counter()
    stats = compute_stats(images(), total=len(chosen), desc=f"mean/PCA {split}")
    how = {
        "source": str(Path(source).resolve()),
        "split": split,
        "images": stats.how["images"],
        "of": n,
        "subset": None if len(chosen) == n else int(subset),
        "subset_seed": None if len(chosen) == n else seed,
        "subset_rule": "numpy Generator(PCG64(seed)).choice(n, subset, replace=False), sorted",
        "skipped_unreadable": skipped,
        "units": "0-255 RGB of the 256x256 stored images",
        "mean": "per-pixel mean, float64 accumulation, stored float32 (3,256,256)",
        "pca": "eigh of the 3x3 population covariance of all pixels' RGB; eigenvalues "
        "descending; eigenvectors are columns, sign chosen so each sums >= 0",
        "seconds": round(time.perf_counter() - start, 2),
    }
    stats = DatasetStats(stats.mean, stats.eigenvalues, stats.eigenvectors, how)
    stats.save(path)
    return stats
