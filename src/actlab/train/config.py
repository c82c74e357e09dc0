"""Training configuration (one dataclass) and the learning-rate schedule.

Schedule (Loshchilov & Hutter 2017, SGDR; linear warm-up as in Goyal et al. 2017): with
``w`` warm-up steps and ``T`` total steps,

    lr(s) = warmup_lr + (lr - warmup_lr) * (s + 1) / w                         s < w
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * (s - w) / (T - w))) / 2      s >= w

The optimiser is AdamW (Loshchilov & Hutter 2019) over :func:`actlab.param_groups`, so an
activation built with ``weight_decay=False`` keeps its learnable scalars out of the decay.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig", "lr_at"]


@dataclass
class TrainConfig:
    """Everything that defines a training run besides task, model, activation and seed.

    A task supplies its own defaults (:meth:`actlab.train.Task.config`); ``run_training``
    keyword overrides win over them.
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05
    no_decay_1d: bool = False  # also exclude biases / norm weights from weight decay
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    label_smoothing: float = 0.0
    crop_padding: int = 0
    hflip: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0  # the data split is shared by all seeds of a comparison
    steps_per_epoch: int | None = None  # text tasks: random windows per epoch
    eval_windows: int = 256  # text tasks: held-out windows per evaluation
    max_steps: int | None = None
    deterministic: bool = True
    kernel_mode: str | None = None  # activation kernels: auto/compiled/eager/native/reference
    num_threads: int | None = None  # CPU threads during the run (None: leave torch's setting)
    checkpoint: str = "last"  # "last" (one file, overwritten each epoch) or "none"
    eval_test_each_epoch: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1")
        if not (self.lr > 0 and self.min_lr >= 0 and self.warmup_lr >= 0):
            raise ValueError("lr must be > 0, min_lr and warmup_lr >= 0")
        if self.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or None")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1 or None")
        if self.kernel_mode is not None:
            from actlab.activations import check_kernel_mode

            check_kernel_mode(self.kernel_mode)
        if self.checkpoint not in ("last", "none"):
            raise ValueError("checkpoint must be 'last' or 'none'")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown field names fail listing the valid ones."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise TypeError(
                f"TrainConfig has no field {', '.join(map(repr, unknown))}; "
                f"valid fields: {', '.join(sorted(fields))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """The learning rate of optimiser step ``step`` (0-based) out of ``total``."""
    if step < warmup:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
