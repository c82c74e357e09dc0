"""Image folders: one sub-directory per class (the ImageNet / torchvision ``ImageFolder`` layout).

    root/
      cat/  a.png b.jpg ...
      dog/  c.png ...

Classes are the sorted sub-directory names; files with an image extension are decoded with
Pillow, converted to RGB (or L) and resized to ``size`` so that the whole set fits one uint8
tensor. The pixel count in an image's header is checked before anything is decoded (at most
``max_pixels``, by default Pillow's ``Image.MAX_IMAGE_PIXELS``, about 89 M); a decompression
bomb, an unreadable or truncated image, or any other decode failure raises
:class:`DatasetFormatError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from actlab.data.base import ImageDataset
from actlab.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS", "MAX_SIDE"]

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
MAX_SIDE = 4096  # largest target height or width
_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS


def _side(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_SIDE:
        raise ValueError(
            f"size must be a positive int (or a pair of them) of at most {MAX_SIDE}, got {v!r}"
        )
    return int(v)


def _target(size: object) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or a pair (height, width), got {size!r}")
        return _side(size[0]), _side(size[1])
    side = _side(size)
    return side, side


def _decode(f: Path, mode: str, h: int, w: int, max_pixels: int) -> np.ndarray:
    """One image as a uint8 (h, w[, c]) array; every failure is a DatasetFormatError."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                iw, ih = im.size
                if iw <= 0 or ih <= 0:
                    raise DatasetFormatError(f"{f}: image of size {iw}x{ih} has no pixels")
                if iw * ih > max_pixels:
                    raise DatasetFormatError(
                        f"{f}: image of {iw}x{ih} pixels is over the limit of {max_pixels} "
                        "(a decompression bomb?); pass max_pixels= to allow it"
                    )
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except DatasetFormatError:
        raise
    except Exception as e:  # Pillow reports bad files with many types: all mean "bad file"
        msg = " ".join(str(e).split())
        raise DatasetFormatError(
            f"{f}: cannot decode image ({type(e).__name__}: {msg}); remove or replace the file"
        ) from None


def load_image_folder(
    root: str | Path,
    *,
    size: int | tuple[int, int] = 32,
    mode: str = "RGB",
    max_per_class: int | None = None,
    max_pixels: int | None = None,
) -> ImageDataset:
    """Read every image under ``root/<class>/`` into a uint8 (N, C, H, W) dataset.

    ``size`` is the (H, W) every image is resized to (bilinear); ``mode`` is ``"RGB"`` or
    ``"L"`` (grey); ``max_per_class`` keeps the first files (sorted by name) of each class;
    ``max_pixels`` bounds the pixels of one source image (default: Pillow's limit).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist: pass a directory with one sub-directory "
            "of images per class"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    h, w = _target(size)
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1
    ):
        raise ValueError(f"max_per_class must be a positive int or None, got {max_per_class!r}")
    if max_pixels is None:
        from PIL import Image

        max_pixels = Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS
    elif isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(
            f"{root} has no class sub-directories: expected root/<class_name>/<image files>"
        )
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = sorted(
            p
            for p in (root / cls).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if max_per_class is not None:
            files = files[:max_per_class]
        for f in files:
            arr = _decode(f, mode, h, w, int(max_pixels))
            arrays.append(arr[:, :, None] if arr.ndim == 2 else arr)
            labels.append(label)
    if not arrays:
        raise DatasetNotFoundError(
            f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class sub-directories"
        )
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(images, torch.tensor(labels, dtype=torch.long), classes, root.name)
