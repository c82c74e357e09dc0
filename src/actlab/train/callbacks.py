"""Training callbacks: hooks the compare machinery (or a user) can attach to a run.

A callback is any object with some of these methods (all optional):

    on_train_begin(info)            info: task, model, act, seed, total_steps, steps_per_epoch
    on_epoch_begin(epoch, steps)
    on_step_end(step, loss)         loss: a 0-dim tensor (call .item() sparingly on GPUs)
    on_epoch_end(record, model)     record: the JSONL line of the epoch
    on_train_end(result)            result: the RunResult

A plain callable is called as ``fn(record)`` at the end of each epoch. Raising
:class:`StopTraining` from a hook ends the run early (the epoch's record is kept).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Callback", "StopTraining", "ProgressBar", "notify"]


class StopTraining(Exception):
    """Raise from a callback to end training after the current step or epoch."""


class Callback:
    """Base class with no-op hooks; subclass and override what you need."""

    def on_train_begin(self, info: dict[str, Any]) -> None: ...
    def on_epoch_begin(self, epoch: int, steps: int) -> None: ...
    def on_step_end(self, step: int, loss: Any) -> None: ...
    def on_epoch_end(self, record: dict[str, Any], model: Any) -> None: ...
    def on_train_end(self, result: Any) -> None: ...


def notify(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    """Call hook ``event`` on every callback that has it (plain callables: epoch end only)."""
    for cb in callbacks:
        hook = getattr(cb, event, None)
        if hook is not None:
            hook(*args)
        elif event == "on_epoch_end" and callable(cb) and not isinstance(cb, Callback):
            cb(args[0])


class ProgressBar(Callback):
    """A rich progress bar per epoch on stderr; silent when stderr is not a terminal."""

    def __init__(self, title: str, every: int = 10) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal and sys.stderr.isatty()
        self.title, self.every = title, max(1, every)
        self._progress: Any = None
        self._task: Any = None

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        self._task = self._progress.add_task(f"{self.title} epoch {epoch}", total=steps, loss="-")

    def on_step_end(self, step: int, loss: Any) -> None:
        if self._progress is None:
            return
        fields = {"loss": f"{float(loss):.4f}"} if step % self.every == 0 else {}
        self._progress.update(self._task, advance=1, **fields)

    def on_epoch_end(self, record: dict[str, Any], model: Any) -> None:
        if self._progress is None:
            return
        metric = next((k for k in record if k.startswith("val_") and k != "val_loss"), "val_loss")
        self._progress.update(
            self._task, loss=f"{record['train_loss']:.4f} {metric} {record[metric]:.4f}"
        )

    def on_train_end(self, result: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
