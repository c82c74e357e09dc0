"""Trainer callback: probe a model while ``actlab.train.run_training`` trains it.

    cb = ProbeCallback(probes=["sparsity"], log_to="probes.jsonl", log_every=100)
    run_training("fashion-mnist", "crrelu", seed=0, callbacks=[cb])
    cb.history          # one ProbeTable per epoch

or, with a model you already hold, ``with actlab.probe(model) as p: train(callbacks=[
p.callback()])``. Hooks of the trainer protocol (all optional, see
:mod:`actlab.train.callbacks`): ``on_train_begin(info)``, ``on_step_end(step, loss)``,
``on_epoch_end(record, model)``, ``on_train_end(result)``.

The trainer builds the model inside ``run_training`` and does not pass it to
``on_train_begin``; when ``info`` holds no ``nn.Module`` the callback installs a one-shot
global forward pre-hook that captures the first module called after training begins (the
model being trained), attaches the probes to it and removes itself. By default only
train-mode forward passes are probed (``mode="train"``), so validation passes do not mix
into the statistics. At each epoch end the summary is logged with the epoch's step and kept
in ``history``; ``reset_each_epoch`` starts every epoch afresh (for information-plane
trajectories).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from actlab.probes.base import Probe, check_int
from actlab.probes.manager import Mode, ProbeManager
from actlab.probes.table import ProbeTable

__all__ = ["ProbeCallback"]


class ProbeCallback:
    """Attach probes when training starts, log them during and after each epoch."""

    def __init__(
        self,
        probes: Sequence[str | Probe | type[Probe]] | None = None,
        *,
        manager: ProbeManager | None = None,
        log_to: str | os.PathLike[str] | None = None,
        log_every: int | None = None,
        reset_each_epoch: bool = False,
        mode: Mode = "train",
        **manager_kw: Any,
    ) -> None:
        if manager is not None and (probes is not None or manager_kw):
            raise ValueError("pass either manager= or the probe settings, not both")
        self.manager = manager
        self._owns = manager is None
        self._settings = dict(manager_kw, mode=mode, log_to=log_to)
        self._probes = probes
        if manager is None:  # check every setting now, not at the first training forward
            ProbeManager(nn.Module(), probes, **self._settings)
        if log_every is not None:
            check_int("log_every", log_every)
        self.log_to = log_to
        self.log_every = log_every
        self.reset_each_epoch = reset_each_epoch
        self.history: list[ProbeTable] = []
        self._capture: RemovableHandle | None = None

    def _start(self, model: nn.Module) -> None:
        if self.manager is None:
            self.manager = ProbeManager(model, self._probes, **self._settings)
        if not self.manager.attached:
            self.manager.attach()

    def on_train_begin(self, info: dict[str, Any]) -> None:
        if self.manager is not None and not self._owns:
            return  # bound to a manager the user attached
        model = next(
            (
                v
                for k, v in info.items()
                if isinstance(v, nn.Module) and k in ("net", "model", "module")
            ),
            None,
        )
        if model is not None:
            self._start(model)
            return

        def capture(module: nn.Module, args: Any) -> None:
            self._release_capture()
            self._start(module)

        self._capture = nn.modules.module.register_module_forward_pre_hook(capture)

    def _release_capture(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    def on_step_end(self, step: int, loss: Any) -> None:
        if self.manager is not None and self.log_every and step % self.log_every == 0:
            self.manager.log(step, self.log_to)

    def on_epoch_end(self, record: dict[str, Any], model: Any) -> None:
        if self.manager is None:
            return
        step = int(record.get("step", len(self.history)))
        table = self.manager.log(step, self.log_to, reset=False)
        for row in table:
            row["epoch"] = record.get("epoch", len(self.history) + 1)
        self.history.append(table)
        if self.reset_each_epoch:
            self.manager.reset()

    def on_train_end(self, result: Any) -> None:
        self._release_capture()
        if self.manager is not None and self._owns:
            self.manager.detach()

    def close(self) -> None:
        """Remove every hook this callback installed (also called at train end)."""
        self.on_train_end(None)
