"""digits-mlp: the 1797 sklearn digits (8x8), an MLP; accuracy. Seconds on a CPU."""

from __future__ import annotations

from actlab.data import ImageDataset, load_digits
from actlab.train.tasks._base import register_task


@register_task(
    "digits-mlp",
    kind="image",
    description="sklearn digits 8x8, MLP (seconds on a CPU)",
    default_model="mlp",
    models=("mlp", "mlp_small"),
    defaults=dict(epochs=20, batch_size=64, lr=3e-3, warmup_epochs=1, weight_decay=1e-4,
                  val_fraction=0.2, eval_batch_size=1024, num_threads=1),
)  # fmt: skip
def digits_mlp() -> tuple[ImageDataset, None]:
    """All digits; validation and test are split from them."""
    return load_digits(), None
