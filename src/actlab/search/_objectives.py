"""Objectives: what a search maximises, with one main method ``evaluate``.

    obj = TrainObjective("digits-mlp")                 # validation accuracy after training
    obj = CurveObjective("gelu")                       # toy: -RMS distance to gelu's curve
    score = obj.evaluate(candidate, budget=3, seed=0, floor=QualityFloor(0.3, after=1))

``budget`` is in the objective's own unit (epochs for training; ignored by the toy unless
it is noisy). :class:`QualityFloor` is EvoNorm's rejection protocol (Liu et al. 2020, arXiv
2004.02967): after a short prefix of training (``after`` budget units) the validation
metric must reach ``threshold``, else the run stops and the candidate is rejected at stage
``quality``. The search optimises the **validation** metric; the test metric is recorded
but never used for selection.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from actlab.search._candidate import Candidate

__all__ = [
    "CurveObjective",
    "Objective",
    "QualityFloor",
    "Rejected",
    "Score",
    "TrainObjective",
    "make_objective",
]


class Rejected(Exception):
    """Raised by an objective to reject a candidate at ``stage`` after using ``fraction``."""

    def __init__(
        self, stage: str, reason: str, fraction: float = 1.0, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason, self.fraction = stage, reason, float(fraction)
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class QualityFloor:
    """After ``after`` budget units the metric must be at least (most, if lower is better)
    ``threshold``."""

    threshold: float
    after: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"quality floor threshold must be finite, got {self.threshold!r}")
        if not (math.isfinite(self.after) and self.after > 0):
            raise ValueError(
                f"quality floor 'after' must be a finite budget > 0, got {self.after!r}"
            )

    def passes(self, value: float, higher_is_better: bool = True) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.threshold if higher_is_better else value <= self.threshold


@dataclass
class Score:
    """The objective's value and anything worth keeping (curves, test metric, density)."""

    value: float
    extra: dict[str, Any] = field(default_factory=dict)


class Objective(Protocol):
    """What a search maximises (``higher_is_better``) or minimises."""

    metric: str
    higher_is_better: bool
    default_budget: float

    @property
    def task(self) -> str:
        """The task name stored with the study (``curve:SPEC`` for the toy)."""
        ...

    def evaluate(
        self, candidate: Candidate, budget: float, *, seed: int, floor: QualityFloor | None
    ) -> Score: ...


def _run_settings(kernel: str | None, threads: int | None, device: str) -> tuple[str, int | None]:
    """The kernel mode (None: the mode in force, resolved now so that worker processes and
    Ray tasks use the same) and thread count of an objective's runs, checked (one line)."""
    from actlab.activations import check_kernel_mode, get_kernel_mode, kernel_unavailable

    mode = get_kernel_mode() if kernel is None else check_kernel_mode(kernel, "--kernel ")
    why = kernel_unavailable(mode, device)
    if why:
        raise ValueError(f"--kernel {mode} cannot run on {device}: {why}; use --kernel auto")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024
    ):
        raise ValueError(f"--threads must be a whole number in 1..1024, got {threads!r}")
    return mode, threads


# ----------------------------------------------------------------------------- training
class _FloorCallback:
    """Stop training when the validation metric misses the floor at epoch ``after``."""

    def __init__(self, floor: QualityFloor, metric: str, higher: bool) -> None:
        self.floor, self.metric, self.higher = floor, metric, higher
        self.rejected: tuple[int, float] | None = None

    def on_epoch_end(self, record: dict[str, Any], model: Any) -> None:
        from actlab.train import StopTraining

        epoch = int(record["epoch"])
        if epoch == max(1, math.ceil(self.floor.after)):
            v = float(record.get(f"val_{self.metric}", math.nan))
            if not self.floor.passes(v, self.higher):
                self.rejected = (epoch, v)
                raise StopTraining()


def _density_callback() -> Any:
    """A probe callback recording the pre-activation histogram, or None without probes."""
    try:
        from actlab.probes import DistributionProbe, ProbeCallback
    except ImportError:
        return None
    probe = DistributionProbe(edges=np.linspace(-6.0, 6.0, 61))
    return ProbeCallback([probe], sample=64)


def _pooled_density(cb: Any) -> dict[str, Any] | None:
    """Histogram of all activation layers' inputs pooled: ``{"lo", "hi", "p"}`` (density)."""
    manager = getattr(cb, "manager", None)
    if manager is None or "distribution" not in manager.probes:
        return None
    probe = manager.probes["distribution"]
    total_counts: np.ndarray | None = None
    total = 0.0
    for name in list(probe.counts):
        counts, edges, under, over = probe.histogram(name)
        total_counts = counts if total_counts is None else total_counts + counts
        total += float(counts.sum() + under + over)
    if total_counts is None or total <= 0:
        return None
    width = float(edges[1] - edges[0])
    p = total_counts / total / width
    return {"lo": float(edges[0]), "hi": float(edges[-1]), "p": [round(float(v), 6) for v in p]}


@dataclass
class TrainObjective:
    """Validation metric of ``task`` (an :mod:`actlab.train` task) after ``budget`` epochs."""

    task: str = "digits-mlp"
    model: str | None = None
    device: str = "cpu"
    record_density: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    default_budget: float = 0.0
    metric: str = ""
    higher_is_better: bool = True
    kernel: str | None = None  # activation kernel mode of every training (None: the mode in force)
    threads: int | None = None  # CPU threads of every training (None: the process's)

    def __post_init__(self) -> None:
        from actlab.train import get_task

        self.kernel, self.threads = _run_settings(self.kernel, self.threads, self.device)
        t = get_task(self.task)
        self.task = t.name
        self.metric, self.higher_is_better = t.metric, t.higher_is_better
        if not self.default_budget:
            self.default_budget = float(t.config(**self.overrides).epochs)

    def evaluate(
        self, candidate: Candidate, budget: float, *, seed: int, floor: QualityFloor | None
    ) -> Score:
        from actlab.train import run_training

        epochs = max(1, int(round(budget)))
        cbs: list[Any] = []
        floor_cb = None
        if floor is not None and floor.after < epochs:
            floor_cb = _FloorCallback(floor, self.metric, self.higher_is_better)
            cbs.append(floor_cb)
        dens_cb = _density_callback() if self.record_density else None
        if dens_cb is not None:
            cbs.append(dens_cb)
        cfg = dict(checkpoint="none", eval_test_each_epoch=False, **self.overrides)
        cfg.update(kernel_mode=self.kernel, num_threads=self.threads)
        r = run_training(
            self.task,
            candidate.module(),
            seed,
            model=self.model,
            epochs=epochs,
            device=self.device,
            callbacks=cbs,
            **cfg,
        )
        curve = [float(h.get(f"val_{self.metric}", math.nan)) for h in r.history]
        extra: dict[str, Any] = {"val_curve": curve, "seconds_train": r.seconds, "steps": r.steps}
        if dens_cb is not None:
            dens = _pooled_density(dens_cb)
            if dens is not None:
                extra["density"] = dens
        if r.diverged:
            raise Rejected(
                "train",
                "diverged: the training loss became non-finite",
                len(r.history) / epochs,
                extra,
            )
        if floor_cb is not None and floor_cb.rejected is not None:
            ep, v = floor_cb.rejected
            raise Rejected(
                "quality",
                f"val {self.metric} {v:.4f} after {ep} epoch(s) misses the floor "
                f"{floor.threshold:g}"
                if floor is not None
                else "quality floor",
                ep / epochs,
                extra,
            )
        value = curve[-1] if curve else math.nan
        if (
            floor is not None
            and floor_cb is None
            and not floor.passes(value, self.higher_is_better)
        ):
            raise Rejected(
                "quality",
                f"val {self.metric} {value:.4f} misses the floor {floor.threshold:g}",
                1.0,
                extra,
            )
        extra["test"] = float(r.value)
        extra["act_params"] = {k: v[-1] for k, v in r.trajectories.items() if v}
        return Score(value, extra)


# ----------------------------------------------------------------------------- toy
@dataclass
class CurveObjective:
    """Toy objective: ``-RMS(f - target)`` on a grid (0 is a perfect match; no training).

    Learnable scalars are taken at their initial values. ``noise`` > 0 adds a deterministic
    (seed, hash)-seeded Gaussian error of std ``noise / sqrt(budget)``, so that a larger
    budget is a more precise evaluation (for funnels); ``sleep`` makes it slow (for tests).
    """

    target: str = "gelu"
    xlim: tuple[float, float] = (-4.0, 4.0)
    n: int = 401
    noise: float = 0.0
    sleep: float = 0.0
    default_budget: float = 1.0
    metric: str = "neg_rmse"
    higher_is_better: bool = True
    kernel: str | None = None  # the kernel mode the cost filter times (None: the mode in force)
    _y: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel = _run_settings(self.kernel, None, "cpu")[0]
        lo, hi = (float(v) for v in self.xlim)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"xlim must be two finite increasing numbers, got {self.xlim}")
        if not 2 <= int(self.n) <= 1_000_000:
            raise ValueError(f"n must be in 2..1000000, got {self.n}")
        for name in ("noise", "sleep"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (math.isfinite(self.default_budget) and self.default_budget > 0):
            raise ValueError(
                f"default_budget must be a finite number > 0, got {self.default_budget!r}"
            )
        try:  # the target fails here, not in every evaluation
            y = self.target_curve()
        except Exception as e:  # noqa: BLE001 -- any error of the target is the user's to fix
            why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". Write a")[0]
            raise ValueError(
                f"curve target {self.target!r} is neither a registered activation nor "
                f"a formula in x ({why}); e.g. curve:gelu or curve:x*sigmoid(1.702*x)"
            ) from None
        if not np.isfinite(y).all():
            raise ValueError(
                f"curve target {self.target!r} is not finite on [{lo:g}, {hi:g}]; "
                "choose a target defined on the whole grid"
            )

    @property
    def task(self) -> str:
        return f"curve:{self.target}"

    def _grid(self) -> np.ndarray:
        return np.linspace(self.xlim[0], self.xlim[1], self.n)

    def target_curve(self) -> np.ndarray:
        if self._y is None:
            import torch

            from actlab.expr.checks import as_module

            m = as_module(self.target)
            with torch.no_grad():
                y = m(torch.from_numpy(self._grid()).float()).double().numpy()
            self._y = y
        return self._y

    def evaluate(
        self, candidate: Candidate, budget: float, *, seed: int, floor: QualityFloor | None
    ) -> Score:
        from actlab.expr import evaluate as ref_eval
        from actlab.expr.ir import param_default, param_names

        if self.sleep > 0:
            time.sleep(self.sleep)
        params = {p: param_default(p) for p in param_names(candidate.expr)}
        with np.errstate(all="ignore"):
            y = np.asarray(ref_eval(candidate.expr, self._grid(), params), dtype=np.float64)
            err = float(np.sqrt(np.mean((y - self.target_curve()) ** 2)))
        value = -err if math.isfinite(err) else math.nan
        if self.noise > 0 and math.isfinite(value):
            h = int(
                hashlib.sha256(f"{seed}:{candidate.hash}:{budget}".encode()).hexdigest()[:8], 16
            )
            value += (
                float(np.random.default_rng(h).normal()) * self.noise / math.sqrt(max(budget, 1e-9))
            )
        if not math.isfinite(value):
            raise Rejected("quality", "non-finite curve on the grid")
        if floor is not None and not floor.passes(value, True):
            raise Rejected(
                "quality", f"{self.metric} {value:.4g} misses the floor {floor.threshold:g}"
            )
        return Score(value, {"rmse": err})


def make_objective(task: str, **kw: Any) -> Objective:
    """``"curve:SPEC"`` -> :class:`CurveObjective`; any other name -> :class:`TrainObjective`."""
    if task.startswith("curve:"):
        target = task.split(":", 1)[1].strip()
        if not target:
            raise ValueError("curve: needs a target activation, e.g. curve:gelu")
        return CurveObjective(target, **kw)
    return TrainObjective(task, **kw)
