"""The paper's input pipeline (Sec. 2, 4.1): ImageNet-layout folders or their uint8 cache,
mean image and colour PCA, crops and reflections, ten test views, one batch per pair.
"""

from split_alexnet.data.embedded import build_embedded_dataset
from split_alexnet.data.folder import CROP, SIZE, DataError, index_split, load_256
from split_alexnet.data.loader import PairLoader, PairMismatchError, batch_checksum
from split_alexnet.data.preprocess import default_cache, preprocess
from split_alexnet.data.source import CacheSource, FolderSource, open_source
from split_alexnet.data.stats import DatasetStats, compute_stats, dataset_stats
from split_alexnet.data.views import TEN_VIEW_OFFSETS

__all__ = [
    "CROP",
    "SIZE",
    "TEN_VIEW_OFFSETS",
    "CacheSource",
    "DataError",
    "DatasetStats",
    "FolderSource",
    "PairLoader",
    "PairMismatchError",
    "batch_checksum",
    "build_embedded_dataset",
    "compute_stats",
    "dataset_stats",
    "default_cache",
    "index_split",
    "load_256",
    "open_source",
    "preprocess",
]
