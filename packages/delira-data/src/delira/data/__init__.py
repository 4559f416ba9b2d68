"""delira.data: datasets, dataset formats, samplers, splits and a deterministic multi-process loader
for 2D/3D medical images.

Depends on numpy only: importing it imports neither torch nor tensorflow (the adapters
:func:`to_torch`, :class:`TorchLoader` and :func:`to_tf_dataset` import them when called).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from delira.data.checks import DatasetError, check_case, check_dataset
from delira.data.datasets import (
    CacheDataset,
    ConcatDataset,
    Dataset,
    LazyDataset,
    SmartCacheDataset,
    SmartCacheSampler,
    Subset,
    case_ids_of,
)
from delira.data.fingerprint import CaseFingerprint, Fingerprint, compute_fingerprint
from delira.data.formats import CaseReader, DecathlonDataset, ManifestDataset
from delira.data.loader import (
    DataLoader,
    RemoteTraceback,
    TorchLoader,
    WorkerError,
    collate,
    to_tf_dataset,
    to_torch,
)
from delira.data.patches import PatchDataset, class_locations, crop_patch
from delira.data.phantom import SyntheticPhantomDataset
from delira.data.preprocessing import (
    CTNormalization,
    PreprocessedDataset,
    Preprocessor,
    crop_to_nonzero,
    invert_labels,
    invert_probabilities,
    resample,
    resample_image,
    resample_labels,
    resample_segmentation,
    zscore,
)
from delira.data.samplers import (
    ClassBalancedSampler,
    ForegroundOversamplingSampler,
    PatchKey,
    RandomSampler,
    Sampler,
    SequentialSampler,
    ShardedSampler,
    WeightedRandomSampler,
)
from delira.data.splits import (
    Fold,
    Splits,
    group_kfold_split,
    holdout_validation,
    kfold_split,
    load_splits,
    stratified_kfold_split,
    train_val_split,
    train_val_test_split,
)

try:
    __version__ = version("delira-data")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "CTNormalization",
    "CacheDataset",
    "CaseFingerprint",
    "CaseReader",
    "ClassBalancedSampler",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DatasetError",
    "DecathlonDataset",
    "Fingerprint",
    "Fold",
    "ForegroundOversamplingSampler",
    "LazyDataset",
    "ManifestDataset",
    "PatchDataset",
    "PatchKey",
    "PreprocessedDataset",
    "Preprocessor",
    "RandomSampler",
    "RemoteTraceback",
    "Sampler",
    "SequentialSampler",
    "ShardedSampler",
    "SmartCacheDataset",
    "SmartCacheSampler",
    "Splits",
    "Subset",
    "SyntheticPhantomDataset",
    "TorchLoader",
    "WeightedRandomSampler",
    "WorkerError",
    "__version__",
    "case_ids_of",
    "check_case",
    "check_dataset",
    "class_locations",
    "collate",
    "compute_fingerprint",
    "crop_patch",
    "crop_to_nonzero",
    "group_kfold_split",
    "holdout_validation",
    "invert_labels",
    "invert_probabilities",
    "kfold_split",
    "load_splits",
    "resample",
    "resample_image",
    "resample_labels",
    "resample_segmentation",
    "stratified_kfold_split",
    "to_tf_dataset",
    "to_torch",
    "train_val_split",
    "train_val_test_split",
    "zscore",
]
