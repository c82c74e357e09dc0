"""Top-level functions for the executor tests (worker processes import them by name)."""

from __future__ import annotations

import os
import signal
import time


def square(x: int) -> int:
    return x * x


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def die_if(x: int, bad: int, seconds: float = 0.0) -> int:
    """Kill the worker process (SIGKILL) for ``x == bad``; else ``x`` after ``seconds``."""
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds)
    return x


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def logging_objective(target: str, log: str, sleep: float) -> object:
    """A curve objective logging ``start|done PID HASH:LEVEL`` lines around each evaluation."""
    from typing import Any

    from actlab.search import Candidate, CurveObjective, Score

    class LoggingObjective(CurveObjective):
        def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
            key = f"{candidate.hash}:{candidate.level}"
            _append(log, f"start {os.getpid()} {key}")
            score = super().evaluate(candidate, budget, seed=seed, floor=floor)
            _append(log, f"done {os.getpid()} {key}")
            return score

    return LoggingObjective(target, sleep=sleep)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
