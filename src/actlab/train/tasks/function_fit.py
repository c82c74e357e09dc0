"""Function fitting in the style of the KAN papers: special functions and physics formulas.

One task per function, ``fit-<name>`` (kind "regression", metric RMSE on the test split,
lower is better), default model ``fit_net`` (a one-block network whose ``mlp_layer`` slot takes
``mlp`` or a KAN block, see :mod:`actlab.models.fit`):

    fit-bessel            J0(20 x)                                   x in [-1, 1]      KAN 3.1
    fit-exp-sin           exp(sin(pi x) + y^2)                       [-1, 1]^2         KAN 3.1
    fit-xy                x y                                        [-1, 1]^2         KAN 3.1
    fit-exp-sin-4d        exp((sin(pi(x1^2 + x2^2)) + sin(pi(x3^2 + x4^2))) / 2)
                                                                     [-1, 1]^4         KAN 3.1
    fit-feynman-i-6-2     exp(-(theta / sigma)^2 / 2) / sqrt(2 pi sigma^2)
                                                                     theta, sigma in [1, 3]
    fit-feynman-i-29-16   sqrt(x1^2 + x2^2 - 2 x1 x2 cos(theta1 - theta2))   all in [1, 5]
    fit-feynman-i-37-4    I1 + I2 + 2 sqrt(I1 I2) cos(delta)         all in [1, 5]

KAN: Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks" (arXiv 2404.19756), section 3.1 toy
functions; Feynman: Udrescu & Tegmark 2020, "AI Feynman" (the variable ranges of its
dataset). S-KAN's own seven tasks were not retrievable; these seven stand in for them.

Data. Inputs are drawn uniformly from the domain, 1000 train / 1000 validation / 1000 test
points, computed in float64 from ``Generator(split_seed * 1_000_003 + crc32(name))``: the
same points for every seed of a comparison and every machine. The model sees each variable
mapped affinely onto [-1, 1] (the KAN layers' input-range contract); targets are the raw
function values, without noise, so the RMSE is in the function's own units.

Recipe (``FIT_DEFAULTS``): 100 epochs of 10 batches of 100 points (1000 steps), AdamW lr 1e-2
(warm-up 1 epoch, cosine to 1e-4), no weight decay, no clipping, one thread; the test RMSE
is that of the model after the last epoch. The KAN papers train longer (LBFGS or 1500+
full-batch Adam steps); this budget is sized for multi-seed comparisons on a CPU.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from actlab.data.loaders import RegressionLoader
from actlab.train.config import TrainConfig
from actlab.train.tasks._base import TaskData, register_task

__all__ = ["FUNCTIONS", "FitFunction", "SPLIT_SIZES", "bessel_j0"]

SPLIT_SIZES = (1000, 1000, 1000)  # train, validation, test points


@dataclass(frozen=True)
class FitFunction:
    """A target function: ``fn`` maps float64 (N, d) raw inputs to (N,) values."""

    name: str
    formula: str
    domain: tuple[tuple[float, float], ...]  # (lo, hi) of each variable
    fn: Callable[[Tensor], Tensor]
    source: str

    @property
    def dim(self) -> int:
        return len(self.domain)

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` points: model inputs in [-1, 1]^d (float64) and raw targets (n, 1)."""
        g = torch.Generator().manual_seed(int(seed))
        u = torch.rand(n, self.dim, generator=g, dtype=torch.float64)  # (n, d) in [0, 1)
        lo = torch.tensor([d[0] for d in self.domain], dtype=torch.float64)
        hi = torch.tensor([d[1] for d in self.domain], dtype=torch.float64)
        raw = lo + u * (hi - lo)
        return 2.0 * u - 1.0, self.fn(raw).unsqueeze(-1)

    def splits(self, split_seed: int) -> tuple[tuple[Tensor, Tensor], ...]:
        """(train, val, test) pairs; one draw, cut in SPLIT_SIZES order."""
        seed = int(split_seed) * 1_000_003 + zlib.crc32(self.name.encode())
        x, y = self.sample(sum(SPLIT_SIZES), seed)
        a, b = SPLIT_SIZES[0], SPLIT_SIZES[0] + SPLIT_SIZES[1]
        return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])

    def loaders(
        self, cfg: TrainConfig, seed: int, device: str | torch.device, dtype: torch.dtype
    ) -> TaskData:
        """Train (shuffled by ``seed``), validation and test loaders of one run."""
        (xt, yt), (xv, yv), (xs, ys) = self.splits(cfg.split_seed)
        kw: dict[str, Any] = dict(device=device, dtype=dtype)
        train = RegressionLoader(
            xt, yt, batch_size=cfg.batch_size, shuffle=True, seed=seed, drop_last=True, **kw
        )
        val = RegressionLoader(xv, yv, batch_size=cfg.eval_batch_size, **kw)
        test = RegressionLoader(xs, ys, batch_size=cfg.eval_batch_size, **kw)
        return TaskData(train, val, test, dict(in_features=self.dim, out_features=1))


def _c(x: Tensor, i: int) -> Tensor:
    return x[:, i]


def bessel_j0(z: Tensor, nodes: int = 128) -> Tensor:
    """J0(z) = (1/pi) int_0^pi cos(z sin t) dt by the midpoint rule (float64).

    The integrand is analytic and pi-periodic in t, so the rule converges exponentially: for
    |z| <= 20 and 128 nodes the error is at rounding level (``torch.special.bessel_j0`` is off
    by up to ~3e-7 there, more than the RMSE a good fit reaches).
    """
    t = (torch.arange(nodes, dtype=torch.float64) + 0.5) * (math.pi / nodes)  # (T,)
    return torch.cos(z.to(torch.float64).unsqueeze(-1) * torch.sin(t)).mean(-1)


FUNCTIONS: dict[str, FitFunction] = {
    f.name: f
    for f in (
        FitFunction(
            "bessel", "J0(20 x)", ((-1.0, 1.0),),
            lambda x: bessel_j0(20.0 * _c(x, 0)), "KAN (arXiv 2404.19756) 3.1",
        ),
        FitFunction(
            "exp-sin", "exp(sin(pi x) + y^2)", ((-1.0, 1.0),) * 2,
            lambda x: torch.exp(torch.sin(math.pi * _c(x, 0)) + _c(x, 1) ** 2),
            "KAN (arXiv 2404.19756) 3.1",
        ),
        FitFunction(
            "xy", "x y", ((-1.0, 1.0),) * 2, lambda x: _c(x, 0) * _c(x, 1),
            "KAN (arXiv 2404.19756) 3.1",
        ),
        FitFunction(
            "exp-sin-4d", "exp((sin(pi(x1^2 + x2^2)) + sin(pi(x3^2 + x4^2))) / 2)",
            ((-1.0, 1.0),) * 4,
            lambda x: torch.exp(
                0.5 * torch.sin(math.pi * (_c(x, 0) ** 2 + _c(x, 1) ** 2))
                + 0.5 * torch.sin(math.pi * (_c(x, 2) ** 2 + _c(x, 3) ** 2))
            ),
            "KAN (arXiv 2404.19756) 3.1",
        ),
        FitFunction(
            "feynman-i-6-2", "exp(-(theta / sigma)^2 / 2) / sqrt(2 pi sigma^2)",
            ((1.0, 3.0), (1.0, 3.0)),
            lambda x: torch.exp(-0.5 * (_c(x, 0) / _c(x, 1)) ** 2)
            / torch.sqrt(2 * math.pi * _c(x, 1) ** 2),
            "AI Feynman I.6.2 (theta, sigma)",
        ),
        FitFunction(
            "feynman-i-29-16", "sqrt(x1^2 + x2^2 - 2 x1 x2 cos(theta1 - theta2))",
            ((1.0, 5.0),) * 4,
            lambda x: torch.sqrt(
                _c(x, 0) ** 2 + _c(x, 1) ** 2
                - 2 * _c(x, 0) * _c(x, 1) * torch.cos(_c(x, 2) - _c(x, 3))
            ),
            "AI Feynman I.29.16 (x1, x2, theta1, theta2)",
        ),
        FitFunction(
            "feynman-i-37-4", "I1 + I2 + 2 sqrt(I1 I2) cos(delta)", ((1.0, 5.0),) * 3,
            lambda x: _c(x, 0) + _c(x, 1)
            + 2 * torch.sqrt(_c(x, 0) * _c(x, 1)) * torch.cos(_c(x, 2)),
            "AI Feynman I.37.4 (I1, I2, delta)",
        ),
    )
}  # fmt: skip

#: the recipe of every fit task (Adam-style full-precision fitting, no weight decay)
FIT_DEFAULTS: dict[str, Any] = dict(
    epochs=100, batch_size=100, eval_batch_size=1000, lr=1e-2, min_lr=1e-4, warmup_epochs=1,
    weight_decay=0.0, grad_clip=None, num_threads=1, eval_test_each_epoch=False,
)  # fmt: skip


def _register(f: FitFunction) -> None:
    def load() -> FitFunction:
        return f

    register_task(
        f"fit-{f.name}",
        kind="regression",
        description=f"fit {f.formula} on {f.dim}-D inputs ({f.source}); RMSE",
        default_model="fit_net",
        models=("fit_net",),
        defaults=FIT_DEFAULTS,
    )(load)


for _f in FUNCTIONS.values():
    _register(_f)
