"""mnist: MNIST digits from IDX files the user brings (``$ACTLAB_DATA_DIR/mnist``); accuracy."""

from __future__ import annotations

from actlab.data import ImageDataset, load_mnist
from actlab.train.tasks._base import VISION_MODELS, register_task


@register_task(
    "mnist",
    kind="image",
    description="MNIST 28x28 from IDX files ($ACTLAB_DATA_DIR/mnist)",
    default_model="vit_mini_28",
    models=VISION_MODELS,
    defaults=dict(epochs=4, batch_size=128, lr=2e-3, warmup_epochs=0.5,
                  val_fraction=5000 / 60000, eval_batch_size=1000),
    user_data=True,
)  # fmt: skip
def mnist() -> tuple[ImageDataset, ImageDataset]:
    """The 60k training and 10k test images."""
    return load_mnist(split="train"), load_mnist(split="test")
