"""``RunResult``: everything one training run produced, JSON-serialisable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["RunResult", "act_label"]


def act_label(act: Any) -> str:
    """A readable, stable label of an activation spec (name, call string, class or instance)."""
    if isinstance(act, str):
        return act.strip()
    if isinstance(act, nn.Module):
        spec = getattr(act, "spec", None)
        return str(spec()) if callable(spec) else type(act).__name__
    if isinstance(act, type):
        return str(getattr(act, "activation_name", "") or act.__name__)
    return repr(act)


@dataclass
class RunResult:
    """One run: the final test metric, per-epoch history and learnable-scalar trajectories.

    ``value`` is the test ``metric`` after the last epoch; ``higher_is_better`` says how to
    compare it (accuracy: True, bits per character: False). ``history`` holds the JSONL
    records; ``trajectories[path]`` lists a parameter's value at init and after each epoch.
    ``diverged`` is True when the training loss became non-finite (training then stopped).
    """

    task: str
    model: str
    act: str
    seed: int
    metric: str
    value: float
    higher_is_better: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    trajectories: dict[str, list[Any]] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    diverged: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
