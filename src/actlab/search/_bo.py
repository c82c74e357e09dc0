"""Bayesian optimisation of the numeric constants of a fixed formula (Optuna TPE or GP).

    bo = ConstantsBO("x*sigmoid(1.702*x)", sampler="gp")       # searches c0 in a range
    bo = ConstantsBO("relu(x) + 0.01*x*exp(-0.5*x**2)", ranges={"c0": (-0.5, 0.5)})

For the continuous parameters of a family (Frazier 2018, "A Tutorial on Bayesian
Optimization", arXiv 1807.02811): a surrogate over the constants and an acquisition
function pick the next point. We do not write a GP: ``sampler="gp"`` is Optuna's
``GPSampler`` (Gaussian process, log expected improvement), ``sampler="tpe"`` its
``TPESampler`` (tree-structured Parzen estimator, robust to noisy evaluations).

The constants are the :class:`~actlab.expr.Const` nodes of the canonical form in pre-order,
named ``c0, c1, ...`` (:func:`form_constants` lists them). Each searched constant has a
range: given in ``ranges``, else ``v ± 2·max(|v|, 0.5)`` (exponents clipped to |p| <= 4);
constants not named in ``ranges`` (when it is given) stay fixed. Suggestions are rounded to
4 significant digits. Rejected or failed candidates are told to the sampler as failed
trials. The sampler's study lives in memory; on resume the search loop replays the stored
results through :meth:`ConstantsBO.tell`, which rebuilds it from the constants stored in
each candidate's ``meta["bo"]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from actlab.expr import Binary, Const, Expr, canonical, parse, to_string
from actlab.expr.grammar import nodes, replace_at
from actlab.search._candidate import Candidate, EvalResult
from actlab.search._strategy import STRATEGIES, Strategy

__all__ = ["ConstantsBO", "form_constants"]

_MAX_POW = 4.0


def _const_sites(form: Expr) -> list[tuple[tuple[int, ...], float, bool]]:
    """(path, value, is_exponent) of every constant of ``form`` in pre-order."""
    exps = {(*p, 1) for p, n in nodes(form) if isinstance(n, Binary) and n.op == "pow"}
    return [(p, n.value, p in exps) for p, n in nodes(form) if isinstance(n, Const)]


def form_constants(form: str | Expr) -> dict[str, float]:
    """``{"c0": value, ...}``: the constants :class:`ConstantsBO` can search."""
    e = canonical(parse(form) if isinstance(form, str) else form)
    return {f"c{i}": v for i, (_, v, _) in enumerate(_const_sites(e))}


class ConstantsBO:
    """Optuna BO over the constants of one formula (see the module docstring)."""

    def __init__(
        self,
        form: str | Expr,
        *,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        sampler: str = "tpe",
        seed: int = 0,
        higher_is_better: bool = True,
        n_startup_trials: int = 8,
    ) -> None:
        import optuna

        self.form = canonical(parse(form) if isinstance(form, str) else form)
        sites = _const_sites(self.form)
        if not sites:
            raise ValueError(
                f"formula {to_string(self.form)!r} has no numeric constant to optimise"
            )
        names = {f"c{i}": s for i, s in enumerate(sites)}
        if ranges is not None:
            unknown = sorted(set(ranges) - set(names))
            if unknown:
                raise ValueError(
                    f"unknown constants {unknown}; the formula has {form_constants(self.form)}"
                )
        self.ranges: dict[str, tuple[float, float]] = {}
        for name, (_, v, is_exp) in names.items():
            if ranges is not None and name not in ranges:
                continue
            lo, hi = (
                ranges[name]
                if ranges is not None
                else (v - 2 * max(abs(v), 0.5), v + 2 * max(abs(v), 0.5))
            )
            if is_exp:
                lo, hi = max(lo, -_MAX_POW), min(hi, _MAX_POW)
            if not lo < hi:
                raise ValueError(f"range of {name} must be increasing, got ({lo}, {hi})")
            self.ranges[name] = (float(lo), float(hi))
        self.paths = {name: names[name][0] for name in self.ranges}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if sampler == "tpe":
            smp: Any = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        elif sampler == "gp":
            smp = optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
        else:
            raise ValueError(f"sampler must be 'tpe' or 'gp', got {sampler!r}")
        self.sampler_name = sampler
        self.study = optuna.create_study(
            direction="maximize" if higher_is_better else "minimize", sampler=smp
        )
        self._pending: dict[int, Any] = {}
        self._token = uuid.uuid4().hex[:12]  # tells this instance's asks from replayed ones

    def _distributions(self) -> dict[str, Any]:
        import optuna

        return {
            n: optuna.distributions.FloatDistribution(lo, hi) for n, (lo, hi) in self.ranges.items()
        }

    def build(self, values: Mapping[str, float]) -> Expr:
        """The form with the named constants replaced by ``values``."""
        e = self.form
        for name, v in values.items():
            e = replace_at(e, self.paths[name], Const(float(v)))
        return canonical(e)

    def ask(self) -> Candidate:
        trial = self.study.ask()
        values = {
            n: float(f"{trial.suggest_float(n, lo, hi):.4g}") for n, (lo, hi) in self.ranges.items()
        }
        self._pending[trial.number] = trial
        meta = {
            "bo": values,
            "bo_trial": f"{self._token}:{trial.number}",
            "bo_form": to_string(self.form),
        }
        return Candidate(self.build(values), f"bo:{self.sampler_name}", (), 0, meta)

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        import optuna

        values = candidate.meta.get("bo")
        if (
            candidate.level != 0
            or not isinstance(values, Mapping)
            or set(values) != set(self.ranges)
        ):
            return
        token, _, number = str(candidate.meta.get("bo_trial", "")).partition(":")
        trial = self._pending.pop(int(number), None) if token == self._token else None
        state = optuna.trial.TrialState.COMPLETE if result.ok else optuna.trial.TrialState.FAIL
        value = result.quality if result.ok else None
        if trial is not None:
            self.study.tell(trial, value, state=state)
            return
        params = {n: min(max(float(values[n]), lo), hi) for n, (lo, hi) in self.ranges.items()}
        self.study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=self._distributions(), value=value, state=state
            )
        )


@STRATEGIES.register(
    "bo", description="Bayesian optimisation (Optuna TPE/GP) of the constants of --form", form=True
)
def _bo(
    *, seed: int, higher_is_better: bool, form: str | None, sampler: str, **kw: Any
) -> Strategy:
    if not form:
        raise ValueError(
            "strategy 'bo' optimises the constants of a formula: give one, "
            "e.g. --form 'x*sigmoid(1.702*x)'"
        )
    return ConstantsBO(form, seed=seed, higher_is_better=higher_is_better, sampler=sampler, **kw)
