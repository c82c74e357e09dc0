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

# The class lives in :mod:`actlab.probes.manager` beside the manager it builds (a callback
# creates a manager, and ``ProbeManager.callback()`` creates a callback: one module, no cycle).
from actlab.probes.manager import ProbeCallback

__all__ = ["ProbeCallback"]
