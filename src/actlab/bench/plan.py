"""The run matrix of a comparison: one :class:`RunSpec` per (activation, seed).

A run is identified by ``(task, model, activation, seed, epochs, config_hash)``: the same
six fields form the unique key of the results store, so asking for a run that already
finished (in this study or any other) reuses its result.

- ``activation`` is the canonical spec (:func:`canonical_activation`): registry name after
  alias resolution, keyword arguments sorted, so ``"CRReLU()"`` and ``"crrelu"`` are one run.
- ``model`` is ``"default"`` when the task's default model is used; ``epochs`` is 0 for the
  task's default number of epochs.
- ``config`` holds every other setting that can change the result (device, dtype,
  max_steps, ...); ``config_hash`` is the first 16 hex digits of the SHA-256 of its
  canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_MODEL",
    "RunSpec",
    "canonical_activation",
    "config_hash",
    "parse_seeds",
    "plan_runs",
]

DEFAULT_MODEL = "default"
DEFAULT_DB = "actlab-results.sqlite"  # the results database of `actlab compare`
MAX_SPEC_LEN = 255  # the activation column of the results store


def canonical_activation(spec: str) -> str:
    """The canonical form of an activation spec; raises ``ValueError`` for unknown names.

    The spec is also built once with :func:`actlab.create_activation`, so bad parameters fail
    here, before any training starts.
    """
    from actlab.registry import create_activation, get_activation_info, parse_spec

    if not isinstance(spec, str):
        raise ValueError(
            f"compare needs activation specs as strings (got {type(spec).__name__}); "
            "register custom classes with actlab.register_activation and pass their name"
        )
    name, kwargs = parse_spec(spec)
    info = get_activation_info(name)
    create_activation(spec)
    if not kwargs:
        return info.name
    args = ", ".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))
    text = f"{info.name}({args})"
    if len(text) > MAX_SPEC_LEN:
        raise ValueError(
            f"activation spec {spec!r} is longer than {MAX_SPEC_LEN} characters; "
            "register it under a short name with actlab.register_activation"
        )
    return text


def config_hash(config: dict[str, Any]) -> str:
    """16 hex digits identifying a config dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One training run of the matrix: what to train and how (equal when keys are equal)."""

    task: str
    model: str
    activation: str
    seed: int
    epochs: int
    config: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def key(self) -> tuple[str, str, str, int, int, str]:
        """The unique key of the results store."""
        return (self.task, self.model, self.activation, self.seed, self.epochs, self.config_hash)

    @property
    def key_hash(self) -> str:
        """A short digest of :attr:`key`, used to name claims."""
        return hashlib.sha256(json.dumps(list(self.key)).encode()).hexdigest()[:32]

    def label(self) -> str:
        return f"{self.activation} seed={self.seed}"


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """``3`` -> ``[0, 1, 2]``; ``"0,3,7"`` or ``[0, 3, 7]`` -> those seeds (duplicates refused)."""
    if isinstance(seeds, bool):
        raise ValueError("seeds must be a count or a list of integers")
    if isinstance(seeds, int):
        out = list(range(seeds))
    elif isinstance(seeds, str):
        text = seeds.strip()
        try:
            out = list(range(int(text))) if "," not in text else [int(s) for s in text.split(",")]
        except ValueError:
            raise ValueError(
                f"--seeds {seeds!r}: give a count (e.g. 5) or a comma list (e.g. 0,3,7)"
            ) from None
    else:
        out = [int(s) for s in seeds]
    if not out:
        raise ValueError("need at least one seed (e.g. --seeds 3)")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate seeds in {out}")
    if any(s < 0 for s in out):
        raise ValueError(f"seeds must be >= 0, got {out}")
    return out


def plan_runs(
    activations: Iterable[str],
    seeds: int | str | Sequence[int],
    *,
    task: str,
    model: str | None = None,
    epochs: int | None = None,
    config: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The activation x seed matrix, seed-major (every activation of seed 0 first).

    Seed-major order means an interrupted comparison already holds complete pairs.
    """
    acts = [canonical_activation(a) for a in activations]
    if not acts:
        raise ValueError("name at least one activation, e.g. `actlab compare relu gelu`")
    dupes = sorted({a for a in acts if acts.count(a) > 1})
    if dupes:
        raise ValueError(f"activation listed twice: {', '.join(dupes)}")
    if not task:
        raise ValueError("a task is required, e.g. --task digits-mlp")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    cfg = dict(config or {})
    return [
        RunSpec(task, model or DEFAULT_MODEL, act, seed, int(epochs or 0), cfg)
        for seed in parse_seeds(seeds)
        for act in acts
    ]
