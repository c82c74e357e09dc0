"""Offline-capable datasets and fast in-memory loaders.

Readers (each raises a clear :class:`DatasetNotFoundError` saying how to get missing files):

    load_fashion_mnist, load_mnist, read_idx     IDX files (.gz or raw)
    load_cifar                                   CIFAR-10/100 python batches (safe unpickler)
    load_image_folder                            root/<class>/<images>
    load_digits                                  scikit-learn's 8x8 digits
    load_shakespeare, load_kjv, CharCorpus       character-level corpora from installed packages

Splits and loading: ``make_splits`` (seeded train/val/test + normalisation statistics),
``ImageLoader`` / ``TextLoader`` (whole dataset in one tensor), ``Augment`` (crop + flip).
Helpers stay in their modules (:mod:`.base` ``split_indices``, ``channel_stats``;
:mod:`.augment` ``random_crop``, ``random_hflip``; :mod:`.cifar` ``safe_load_pickle``;
:mod:`.idx` ``load_idx_dataset``).
"""

from __future__ import annotations

from actlab.data.augment import Augment
from actlab.data.base import ImageDataset, ImageSplits, make_splits
from actlab.data.cifar import UnsafePickleError, load_cifar
from actlab.data.digits import load_digits
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError
from actlab.data.folder import load_image_folder
from actlab.data.idx import load_fashion_mnist, load_mnist, read_idx
from actlab.data.loaders import ImageLoader, RegressionLoader, TextLoader
from actlab.data.text import CharCorpus, load_kjv, load_shakespeare

__all__ = [
    "Augment",
    "CharCorpus",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "ImageLoader",
    "RegressionLoader",
    "ImageSplits",
    "TextLoader",
    "UnsafePickleError",
    "load_cifar",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_kjv",
    "load_mnist",
    "load_shakespeare",
    "make_splits",
    "read_idx",
]
