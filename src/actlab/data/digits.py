"""scikit-learn's handwritten digits (UCI optdigits test set): 1797 grey 8x8 images, 10 classes.

Pixel values are integers 0..16 (counts of set pixels in 4x4 blocks of the 32x32 original);
they are kept as uint8 0..16 and normalised by the train-split statistics like any image set.
The data ships inside scikit-learn, so this loader never needs the network.
"""

from __future__ import annotations

import numpy as np
import torch

from actlab.data.base import ImageDataset

__all__ = ["load_digits"]


def load_digits() -> ImageDataset:
    """All 1797 digits as uint8 (N, 1, 8, 8) with labels 0..9 (split with ``make_splits``)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install scikit-learn"
        ) from None
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64).round().clip(0, 255).astype(np.uint8)
    return ImageDataset(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        [str(i) for i in range(10)],
        "digits",
    )
