"""Image folders: one sub-directory per class (the ImageNet / torchvision ``ImageFolder`` layout).

    root/
      cat/  a.png b.jpg ...
      dog/  c.png ...

Classes are the sorted sub-directory names; files with an image extension are decoded with
Pillow, converted to RGB (or L) and resized to ``size`` so that the whole set fits one uint8
tensor. An unreadable image raises :class:`DatasetFormatError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from actlab.data.base import ImageDataset
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(
    root: str | Path,
    *,
    size: int | tuple[int, int] = 32,
    mode: str = "RGB",
    max_per_class: int | None = None,
) -> ImageDataset:
    """Read every image under ``root/<class>/`` into a uint8 (N, C, H, W) dataset.

    ``size`` is the (H, W) every image is resized to (bilinear); ``mode`` is ``"RGB"`` or
    ``"L"`` (grey); ``max_per_class`` keeps the first files (sorted by name) of each class.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist: pass a directory with one sub-directory "
            "of images per class"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    h, w = (size, size) if isinstance(size, int) else size
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(
            f"{root} has no class sub-directories: expected root/<class_name>/<image files>"
        )
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if max_per_class is not None:
            files = files[:max_per_class]
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert(mode)
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise DatasetFormatError(
                    f"{f}: cannot decode image ({type(e).__name__}: {e}); remove or replace the file"
                ) from None
            arrays.append(arr[:, :, None] if arr.ndim == 2 else arr)
            labels.append(label)
    if not arrays:
        raise DatasetNotFoundError(
            f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class sub-directories"
        )
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(images, torch.tensor(labels, dtype=torch.long), classes, root.name)
