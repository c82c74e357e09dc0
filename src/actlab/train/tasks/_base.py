"""The task type, the task registry and its lookups.

A task is registered by decorating the function that loads its data (one module per task
in this folder; the registry imports every module of the folder before its first lookup):

    @register_task("digits-mlp", kind="image", description="...", default_model="mlp",
                   models=("mlp", "mlp_small"), defaults=dict(epochs=20, ...))
    def digits_mlp() -> tuple[ImageDataset, None]:
        return load_digits(), None

An image task's function returns ``(train, test)`` datasets (``test`` None: split from
``train``); a text task's function returns the text. Either is loaded once and cached.
Registration metadata: ``kind`` ("image" / "text") and ``user_data`` (True when the files
are brought by the user, e.g. CIFAR, so nothing is available offline).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actlab.data import (
    CharCorpus,
    ImageLoader,
    ImageSplits,
    RegressionLoader,
    TextLoader,
    make_splits,
)
from actlab.data.augment import Augment
from actlab.models.factory import build_model, get_model_preset, list_models
from actlab.registry import ActivationSpec, Registry
from actlab.train.config import TrainConfig

__all__ = [
    "TASKS",
    "Task",
    "TaskData",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "register_task",
]


class UnknownTaskError(KeyError):
    """No task has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: every task by name; filled by :func:`register_task` in the modules of this folder
TASKS: Registry[Task] = Registry(
    "task", loader="actlab.train.tasks.*", error=UnknownTaskError, cutoff=0.4
)


@dataclass
class TaskData:
    """The loaders of one run plus what the model factory needs to know about the data."""

    train: ImageLoader | TextLoader | RegressionLoader
    val: ImageLoader | TextLoader | RegressionLoader
    test: ImageLoader | TextLoader | RegressionLoader
    model_kwargs: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A named benchmark: ``kind`` is "image" (accuracy), "text" (bits per character) or
    "regression" (RMSE, lower is better)."""

    name: str
    kind: str
    description: str
    default_model: str
    models: tuple[str, ...]
    source: Callable[[], Any]  # () -> (train, test) datasets or a CharCorpus; cached
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return {"image": "accuracy", "text": "bpc", "regression": "rmse"}[self.kind]

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "image"

    def config(self, **overrides: Any) -> TrainConfig:
        """The task's default :class:`TrainConfig` with ``overrides`` applied."""
        return TrainConfig().replace(**{**self.defaults, **overrides})

    def clear_cache(self) -> None:
        """Forget the loaded data (the next run reads the files again)."""
        clear = getattr(self.source, "cache_clear", None)
        if clear is not None:
            clear()

    # ------------------------------------------------------------------ data
    def image_splits(self, cfg: TrainConfig) -> ImageSplits:
        train, test = self.source()
        return make_splits(train, test, val_fraction=cfg.val_fraction, seed=cfg.split_seed)

    def corpus(self) -> CharCorpus:
        corpus: CharCorpus = self.source()
        return corpus

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
        if self.kind == "regression":  # the source builds them (train/tasks/function_fit.py)
            data: TaskData = self.source().loaders(cfg, seed, device, dtype)
            return data
        if self.kind == "image":
            s = self.image_splits(cfg)
            train = ImageLoader(
                s.train, s.mean, s.std, batch_size=cfg.batch_size, shuffle=True, seed=seed,
                augment=Augment(cfg.crop_padding, cfg.hflip),
                drop_last=len(s.train) > cfg.batch_size, device=device, dtype=dtype,
            )  # fmt: skip
            val, test = (
                ImageLoader(
                    part, s.mean, s.std, batch_size=cfg.eval_batch_size, device=device, dtype=dtype
                )
                for part in (s.val, s.test)
            )
            c, h, w = s.shape
            if h != w:
                raise ValueError(f"{self.name}: reference models need square images, got {h}x{w}")
            kwargs = dict(num_classes=s.num_classes, in_chans=c, img_size=h)
            return TaskData(train, val, test, kwargs)
        corpus = self.corpus()
        t = block_size or self.block_size(model)
        steps = cfg.steps_per_epoch or 200
        train_t = TextLoader(
            corpus.train, t, cfg.batch_size, random=True, steps=steps, seed=seed, device=device
        )
        val_t, test_t = (
            TextLoader(
                part,
                t,
                cfg.eval_batch_size,
                random=False,
                max_windows=cfg.eval_windows,
                device=device,
            )  # fmt: skip
            for part in (corpus.val, corpus.test)
        )
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

    def build_model(
        self, model: str | None, act: ActivationSpec, data: TaskData, **overrides: Any
    ) -> nn.Module:
        """Build ``model`` (default: the task's) with activation ``act`` for ``data``."""
        return build_model(self.resolve_model(model), act, **data.model_kwargs, **overrides)

    def block_size(self, model: str | None) -> int:
        """The context length of a text model preset (its training window)."""
        preset = get_model_preset(self.resolve_model(model))
        return int(preset.defaults.get("block_size", 128))


#: the image models of the 28x28 tasks; the recipe shared by the character-level text tasks
VISION_MODELS = ("vit_mini_28", "vit_small_28", "resnet20", "mlp")
TEXT_MODELS = ("gpt_char_mini", "gpt_char_small")
TEXT_DEFAULTS: dict[str, Any] = dict(
    epochs=4, steps_per_epoch=250, batch_size=32, eval_batch_size=64, lr=3e-3, min_lr=1e-4,
    warmup_epochs=0.4, weight_decay=0.1, betas=(0.9, 0.99), eval_windows=256,
)  # fmt: skip


def register_task(
    name: str,
    *,
    kind: str,
    description: str,
    default_model: str,
    models: tuple[str, ...],
    defaults: dict[str, Any] | None = None,
    user_data: bool = False,
) -> Callable[[Callable[[], Any]], Task]:
    """Decorator: register the data loader it decorates as task ``name``; returns the Task.

    The loader returns ``(train, test)`` image datasets (``kind="image"``, ``test`` may be
    None), the whole text (``kind="text"``: a character corpus is built from it) or an object
    whose ``loaders(cfg, seed, device, dtype)`` returns the :class:`TaskData` of a run
    (``kind="regression"``: float targets, MSE loss, RMSE metric); it is
    called once, on the first run of the task. ``user_data=True`` marks tasks whose files
    the user brings (they are skipped where nothing can be read offline).
    """
    if kind not in ("image", "text", "regression"):
        raise ValueError(
            f"task {name!r}: kind must be 'image', 'text' or 'regression', got {kind!r}"
        )

    def deco(load: Callable[[], Any]) -> Task:
        source: Callable[[], Any]
        if kind == "text":

            def corpus() -> CharCorpus:
                return CharCorpus.from_text(load(), name=name)

            source = functools.lru_cache(maxsize=1)(corpus)
        else:
            source = functools.lru_cache(maxsize=1)(load)
        task = Task(name, kind, description, default_model, tuple(models), source,
                    dict(defaults or {}))  # fmt: skip
        return TASKS.add(name, task, kind=kind, user_data=user_data)

    return deco


def list_tasks() -> list[str]:
    """Names of all tasks."""
    return TASKS.names()


def get_task(name: str) -> Task:
    """The task called ``name``; unknown names fail with the closest matches."""
    if not isinstance(name, str):
        raise UnknownTaskError(f"a task is named by a string, got {type(name).__name__}")
    key = name.strip().replace("_", "-")
    if key.lower().startswith("curve:"):
        raise UnknownTaskError(
            f"task {name!r} is a toy objective of `actlab search` that trains nothing; "
            f"training tasks are: {', '.join(list_tasks())}"
        )
    return TASKS.get(key)
