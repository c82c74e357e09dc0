"""cifar10, cifar100: CIFAR python batches the user brings (``$ACTLAB_DATA_DIR/cifar10``,
``.../cifar100``), ResNet-20 by default; accuracy. Recipe: 100 epochs, batch 256, AdamW lr
5e-4, random crops (padding 4) and horizontal flips."""

from __future__ import annotations

from typing import Any

from actlab.data import ImageDataset, load_cifar
from actlab.train.tasks._base import register_task

_MODELS = ("resnet20", "vit_tiny_patch4_32")
_DEFAULTS: dict[str, Any] = dict(
    epochs=100, batch_size=256, lr=5e-4, min_lr=1e-5, warmup_epochs=5, weight_decay=0.05,
    crop_padding=4, hflip=True, val_fraction=0.1,
)  # fmt: skip


@register_task(
    "cifar10",
    kind="image",
    description="CIFAR-10 python batches ($ACTLAB_DATA_DIR/cifar10)",
    default_model="resnet20",
    models=_MODELS,
    defaults=_DEFAULTS,
    user_data=True,
)
def cifar10() -> tuple[ImageDataset, ImageDataset]:
    """The 50k training and 10k test images, 10 classes."""
    return load_cifar(split="train", num_classes=10), load_cifar(split="test", num_classes=10)


@register_task(
    "cifar100",
    kind="image",
    description="CIFAR-100 python batches ($ACTLAB_DATA_DIR/cifar100)",
    default_model="resnet20",
    models=_MODELS,
    defaults=_DEFAULTS,
    user_data=True,
)
def cifar100() -> tuple[ImageDataset, ImageDataset]:
    """The 50k training and 10k test images, 100 fine classes."""
    return load_cifar(split="train", num_classes=100), load_cifar(split="test", num_classes=100)
