"""Helpers of the bench tests: a fake train function and a compare-only CLI entry point.

The fake train function is instant, deterministic and controllable by env vars:

    ACTLAB_FAKE_SLEEP=0.5        seconds to sleep in each run
    ACTLAB_FAKE_FAIL=tanh        raise in runs of this activation
    ACTLAB_FAKE_CRASH=tanh:0     kill the (worker) process in runs of this activation (and seed)
    ACTLAB_FAKE_LOG=/path        append "activation seed pid" to this file when a run starts

Subprocess tests use it as ``--train-fn bench_helpers:fake_train`` with tests/bench on
PYTHONPATH. The fake result has the field names of :class:`actlab.train.RunResult`.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

BASE = {"relu": 0.90, "gelu": 0.92, "crrelu": 0.93, "silu": 0.915, "tanh": 0.85}


@dataclass
class FakeResult:
    metric: str
    value: float
    higher_is_better: bool
    history: list[dict[str, Any]]
    trajectories: dict[str, list[float]]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False


def compare_main(argv: list[str]) -> int:
    """``actlab compare ...`` through :func:`actlab.cli.main`, with only that subcommand.

    Keeps these tests independent of the other subcommand modules.
    """
    import actlab.cli as cli

    saved = dict(cli.SUBCOMMANDS)
    cli.SUBCOMMANDS.clear()
    cli.SUBCOMMANDS["compare"] = "compare"
    try:
        return cli.main(["compare", *argv])
    finally:
        cli.SUBCOMMANDS.clear()
        cli.SUBCOMMANDS.update(saved)


def fake_metric(activation: str, seed: int) -> float:
    """The deterministic final metric of a fake run."""
    rng = random.Random(f"{activation}:{seed}")
    return BASE.get(activation.split("(")[0], 0.9) + rng.gauss(0.0, 0.005)


def fake_train(
    task: str, activation: str, seed: int, *, model: str | None = None,
    epochs: int | None = None, **kwargs: Any,
) -> FakeResult:  # fmt: skip
    log = os.environ.get("ACTLAB_FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{activation} {seed} {os.getpid()}\n")
    name = activation.split("(")[0]
    if os.environ.get("ACTLAB_FAKE_CRASH") in (name, f"{name}:{seed}"):
        os._exit(9)
    time.sleep(float(os.environ.get("ACTLAB_FAKE_SLEEP", "0")))
    if os.environ.get("ACTLAB_FAKE_FAIL") == name:
        raise RuntimeError(f"fake failure for {activation}")
    final = fake_metric(activation, seed)
    n = epochs or 3
    history = [
        {"epoch": e + 1, "train_loss": 1.0 / (e + 1) + 0.01 * seed,
         "test_accuracy": final - 0.05 * (n - 1 - e), "lr": 1e-3, "seconds": 0.1}
        for e in range(n)
    ]  # fmt: skip
    traj = (
        {"act.eps": [0.01 + 0.001 * e * (1 + seed) for e in range(n + 1)]}
        if name == "crrelu"
        else {}
    )
    config = {"task": task, "model": model, "epochs": epochs, **kwargs}
    return FakeResult("accuracy", final, True, history, traj, 0.01 * n, config)


def settings_train(task: str, activation: str, seed: int, **kwargs: Any) -> FakeResult:
    """``fake_train`` that also records the kernel mode and torch threads it ran under."""
    import torch

    from actlab.activations import get_kernel_mode

    res = fake_train(task, activation, seed, **kwargs)
    res.config.update(seen_kernel=get_kernel_mode(), seen_threads=torch.get_num_threads())
    return res
