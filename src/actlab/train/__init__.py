"""Training: tasks, the trainer and ``run_training`` (the entry point of ``actlab compare``).

    from actlab.train import run_training, get_task, TrainConfig
    r = run_training("digits-mlp", "crrelu", seed=0)
    print(r.metric, r.value, r.trajectories)

See :mod:`actlab.train.trainer` for what a run writes and :mod:`actlab.train.tasks` for the
task list (:data:`TASKS`, the task registry; :func:`register_task` adds one).
"""

from __future__ import annotations

from actlab.train.callbacks import Callback, ProgressBar, StopTraining
from actlab.train.checkpoint import load_checkpoint, save_checkpoint
from actlab.train.config import TrainConfig
from actlab.train.result import RunResult
from actlab.train.seed import determinism, seed_everything
from actlab.train.tasks import (
    TASKS,
    Task,
    TaskData,
    UnknownTaskError,
    get_task,
    list_tasks,
    register_task,
)
from actlab.train.trainer import evaluate, run_training, train_model

__all__ = [
    "TASKS",
    "Callback",
    "ProgressBar",
    "RunResult",
    "StopTraining",
    "Task",
    "TaskData",
    "TrainConfig",
    "UnknownTaskError",
    "determinism",
    "evaluate",
    "get_task",
    "list_tasks",
    "load_checkpoint",
    "register_task",
    "run_training",
    "save_checkpoint",
    "seed_everything",
    "train_model",
]
