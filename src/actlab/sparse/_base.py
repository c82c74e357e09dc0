"""The sparsity-method registry, the plug-in interface and the report of an application.

A method is a class registered in :data:`METHODS` (one file in ``actlab/sparse/_methods/``)::

    @METHODS.register("teal", paper="arXiv 2408.14690")
    class Teal:
        def __init__(self, sparsity: float, **params): ...
        def calibrate(self, model, batches) -> SparsityState: ...
        def apply(self, model, state) -> SparsityReport: ...

``params`` (including ``sparsity``) are JSON values: they are stored in the state's header, so
``METHODS.get(state.method)(**state.params).apply(model, state)`` rebuilds the method from a
saved state (:func:`apply_state`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from actlab.registry import Registry
from actlab.sparse._modules import SparseGatedMLP, SparseLinear, check_mode, show_threshold
from actlab.sparse._orthogonal import orthogonalize, restore_rotation, rotation_missing
from actlab.sparse._sites import Batch
from actlab.sparse._state import SparseError, SparsityState, Threshold
from actlab.surgery import ReplacementReport, replace_modules

__all__ = [
    "METHODS",
    "SCALES_KEY",
    "SparsityMethod",
    "SparsityReport",
    "apply_state",
    "install",
    "make_method",
    "scales_digest",
    "scales_held",
]


@runtime_checkable
class SparsityMethod(Protocol):
    """The plug-in interface: ``calibrate(model, batches) -> state``, ``apply(model, state)``."""

    params: dict[str, Any]

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> SparsityState: ...

    def apply(self, model: nn.Module, state: SparsityState) -> SparsityReport: ...


METHODS: Registry[type[SparsityMethod]] = Registry(
    "sparsity method",
    loader="actlab.sparse._methods.*",
    error=SparseError,
    hint="Known methods: actlab.sparse.METHODS.names().",
)


def make_method(name: str, **params: Any) -> SparsityMethod:
    """An instance of the method registered as ``name`` with ``params`` (one-line errors)."""
    cls = METHODS.get(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise SparseError(f"sparsity method {name!r}: {e}") from None


def apply_state(model: nn.Module, state: SparsityState) -> SparsityReport:
    """Sparsify ``model`` with a calibrated (or loaded) ``state`` of any registered method."""
    if not isinstance(state, SparsityState):
        raise SparseError(f"apply_state needs a SparsityState, got {type(state).__name__}")
    return make_method(state.method, **state.params).apply(model, state)


@dataclass
class SparsityReport:
    """What ``apply`` did: the sparsified modules by path, their targets and thresholds.

    The modules count what they zero; :meth:`realised` reads those counts (run the model
    first), :meth:`table` puts them next to the targets.
    """

    method: str
    modules: dict[str, SparseLinear | SparseGatedMLP]
    targets: dict[str, float]
    replacement: ReplacementReport | None = field(default=None, repr=False)

    @property
    def thresholds(self) -> dict[str, Threshold]:
        return {p: m.threshold for p, m in self.modules.items()}

    def realised(self) -> dict[str, float]:
        """Per site, the fraction of entries zeroed since the last reset (nan: never ran)."""
        return {p: m.realised for p, m in self.modules.items()}

    def realised_total(self) -> float:
        """Entries zeroed over entries seen, over all sites."""
        seen = sum(m.seen for m in self.modules.values())
        return sum(m.zeroed for m in self.modules.values()) / seen if seen else float("nan")

    def reset_counts(self) -> None:
        """Forget the counts of every site."""
        for m in self.modules.values():
            m.reset_counts()

    def set_mode(self, mode: str) -> None:
        """The protocol of every site: ``"all"``, ``"decode"`` or ``"last-half"``."""
        mode = check_mode(mode)
        for m in self.modules.values():
            m.mode = mode

    def table(self) -> str:
        """Plain-text table: site | target | threshold | realised."""
        rows = [("site", "target", "threshold", "realised")]
        for p, m in self.modules.items():
            t = self.targets.get(p, float("nan"))
            rows.append((p, f"{t:.3f}", show_threshold(m.threshold), f"{m.realised:.3f}"))
        width = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows)


def _rotate_for(model: nn.Module, state: SparsityState) -> None:
    """Put ``model`` in the basis ``state`` was calibrated in (rotate it, or give a reloaded
    rotated model its between-block rotations back); one-line errors for mismatches."""
    if not state.bases:
        raise SparseError(
            "this model was saved rotated but the state has no rotation bases; load it with "
            "actlab.sparse.load_sparse from the folder it was saved to"
        )
    if rotation_missing(model):
        restore_rotation(model, state.bases)
    elif getattr(model, "actlab_wina_orthogonal", False):
        raise SparseError(
            "the model is already rotated; apply a rotating state to the unrotated model "
            "(apply rotates it)"
        )
    else:
        modules = dict(model.named_modules())
        for path in state.thresholds:
            if not isinstance(modules.get(path), nn.Linear):
                raise SparseError(f"the state was calibrated on another model: no linear {path!r}")
        orthogonalize(model, "pca", bases=state.bases)


def install(
    model: nn.Module,
    state: SparsityState,
    kind: type[SparseLinear] | type[SparseGatedMLP] | None = None,
) -> SparsityReport:
    """Replace every site of ``state`` with a sparse module holding its threshold.

    ``kind`` forces the module class; by default an ``nn.Linear`` site gets a
    :class:`SparseLinear` and any other site a :class:`SparseGatedMLP`. All or nothing
    (:func:`actlab.surgery.replace_modules`); a site missing from the model, of the wrong
    type or already sparsified is a one-line :class:`SparseError`. Last, the state's tuned
    gains (:func:`actlab.sparse.tune_gains`) are written into the model's parameters, its
    tuned weight changes and low-rank corrections are added to their linears' weights and its
    tuned row scales multiply their rows (once: the model records which tuned weights it holds,
    :data:`SCALES_KEY`, so a model saved with them and reloaded is not changed twice).
    """
    _check_tuned(model, state)  # before the model is rotated or replaced: all or nothing
    modules = dict(model.named_modules())
    if state.bases or rotation_missing(model):
        _rotate_for(model, state)
        modules = dict(model.named_modules())
    kinds: dict[str, type[SparseLinear] | type[SparseGatedMLP]] = {}
    for path in state.thresholds:
        m = modules.get(path)
        if m is None:
            raise SparseError(
                f"the state was calibrated on another model: it has no module {path!r}"
            )
        if isinstance(m, (SparseLinear, SparseGatedMLP)):
            raise SparseError(f"{path!r} is already sparsified; start from a dense model")
        kinds[path] = kind or (SparseLinear if isinstance(m, nn.Linear) else SparseGatedMLP)
        if issubclass(kinds[path], SparseLinear) and not isinstance(m, nn.Linear):
            raise SparseError(f"{path!r} is a {type(m).__name__}, not an nn.Linear")

    def build(path: str, old: nn.Module) -> nn.Module:
        t = state.thresholds[path]
        k = kinds[path]
        if issubclass(k, SparseLinear):  # SparseLinear or a subclass (WINA's top-k)
            assert isinstance(old, nn.Linear)
            return k.wrap(old, t)
        return SparseGatedMLP(old, t)

    rep = replace_modules(model, lambda path, m: path in kinds, build) if kinds else None
    _write_gains(model, state)
    modules = dict(model.named_modules())
    _write_scales(model, modules, state)
    return SparsityReport(
        method=state.method,
        modules={p: modules[p] for p in state.thresholds},  # type: ignore[misc]
        targets=dict(state.targets),
        replacement=rep,
    )


def _check_tuned(model: nn.Module, state: SparsityState) -> None:
    """One-line error unless every tuned gain of ``state`` names a parameter of its shape and
    every row scale (low-rank correction) a linear with as many output (and input) features,
    and the weights do not hold another state's tuned weights already."""
    params = dict(model.named_parameters())
    for path, g in state.gains.items():
        p = params.get(path)
        if p is None:
            raise SparseError(f"the state was tuned on another model: it has no parameter {path!r}")
        if p.shape != g.shape:
            raise SparseError(
                f"the tuned gain {path!r} has shape {tuple(g.shape)}, the model's "
                f"{tuple(p.shape)}: the state was tuned on another model"
            )
    modules = dict(model.named_modules())
    for path, r in state.scales.items():
        m = modules.get(path)
        if not isinstance(m, nn.Linear):
            raise SparseError(f"the state was tuned on another model: it has no linear {path!r}")
        if m.out_features != r.numel():
            raise SparseError(
                f"the tuned row scales of {path!r} have {r.numel()} entries, the linear "
                f"{m.out_features} outputs: the state was tuned on another model"
            )
    full = [
        ("low-rank correction", p, u.shape[0], v.shape[1]) for p, (u, v) in state.lowrank.items()
    ]
    full += [("weight change", p, d.shape[0], d.shape[1]) for p, d in state.deltas.items()]
    for what, path, out, inp in full:  # [out, in] additions to a linear's weight
        m = modules.get(path)
        if not isinstance(m, nn.Linear):
            raise SparseError(f"the state was tuned on another model: it has no linear {path!r}")
        if (out, inp) != (m.out_features, m.in_features):
            raise SparseError(
                f"the {what} of {path!r} is {out} x {inp}, the linear "
                f"{m.out_features} x {m.in_features}: the state was tuned on another model"
            )
    held = scales_held(model)
    if held is not None and held != scales_digest(state):
        raise SparseError(
            "the model's weights already hold the row scales or low-rank corrections of "
            "another tuned state; apply this state to the dense model"
        )


SCALES_KEY = "actlab_row_scales"  # config (or module) attribute: digest of the tuned weights held


def scales_digest(state: SparsityState) -> str | None:
    """A SHA-256 (16 hex digits) of the state's row scales, low-rank corrections and weight
    changes (the tuned weights), or None without any."""
    if not state.scales and not state.lowrank and not state.deltas:
        return None
    h = hashlib.sha256()
    for path in sorted(state.scales):
        h.update(path.encode())
        h.update(state.scales[path].numpy().tobytes())
    for path in sorted(state.lowrank):  # after the scales: a digest without them is unchanged
        h.update(b"lowrank:" + path.encode())
        for t in state.lowrank[path]:
            h.update(t.numpy().tobytes())
    for path in sorted(state.deltas):  # last: a digest without them is unchanged
        h.update(b"delta:" + path.encode())
        h.update(state.deltas[path].numpy().tobytes())
    return h.hexdigest()[:16]


def scales_held(model: nn.Module) -> str | None:
    """The digest of the tuned weights (row scales, low-rank corrections) ``model``'s weights
    hold (its config's :data:`SCALES_KEY`, or the module's attribute without a config), or
    None."""
    config = getattr(model, "config", None)
    held = getattr(config if config is not None else model, SCALES_KEY, None)
    return held if isinstance(held, str) else None


def _write_scales(model: nn.Module, modules: dict[str, nn.Module], state: SparsityState) -> None:
    """Add the weight changes and low-rank corrections to their linears' weights, then
    multiply the rows of each scaled linear's weight, unless the weights hold them already (a
    model saved after :func:`install` and reloaded), and record the digest."""
    digest = scales_digest(state)
    if digest is None or scales_held(model) == digest:
        return
    with torch.no_grad():
        for path, d in state.deltas.items():
            lin = modules[path]
            assert isinstance(lin, nn.Linear)  # checked by _check_tuned
            lin.weight.add_(d.to(lin.weight.device, lin.weight.dtype))
        for path, (u, v) in state.lowrank.items():
            lin = modules[path]
            assert isinstance(lin, nn.Linear)  # checked by _check_tuned
            w = lin.weight
            w.add_((u.double() @ v.double()).to(w.device, w.dtype))  # (out, r) @ (r, in)
        for path, r in state.scales.items():
            lin = modules[path]
            assert isinstance(lin, nn.Linear)  # checked by _check_tuned
            w = lin.weight
            w.mul_(r.to(w.device, w.dtype).unsqueeze(1))  # (out, in) * (out, 1)
    config = getattr(model, "config", None)
    setattr(config if config is not None else model, SCALES_KEY, digest)


def _write_gains(model: nn.Module, state: SparsityState) -> None:
    """Copy the tuned normalisation gains into the model (its dtype and device kept)."""
    if not state.gains:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for path, g in state.gains.items():
            params[path].copy_(g)
