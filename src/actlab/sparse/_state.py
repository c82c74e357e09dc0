"""Errors, argument checks and the saved state of a sparsity method (thresholds + a header).

A :class:`SparsityState` is what ``calibrate`` returns and ``apply`` consumes: one threshold
per site (a module path such as ``"model.layers.0.self_attn.q_proj"``), the target sparsity
of each site, and the method's name and parameters. It saves to one safetensors file: the
thresholds are float32 tensors keyed by site path (0-d: one threshold per site; 1-D: one per
channel, as CHESS has), and the header (safetensors metadata
``"actlab.sparse"``) is a small JSON object ``{"version", "method", "params", "targets"}``.
A state of a method that rotates the model first (TEAL with ``rotation="pca"``) also holds one
orthogonal ``[d, d]`` basis per block (``bases``, saved under ``"basis:" + block path``).
A state whose normalisation gains were tuned to the sparse model
(:func:`actlab.sparse.tune_gains`) holds them as ``gains`` (parameter path -> float32 tensor,
saved under ``"gain:" + path``), with what the tuning did in ``tuning`` (a JSON object in the
header); such a file is format version 2, every other file version 1. A tuning that also
scaled the output rows of the sparsified linears (``TuneConfig(rows=True)``) adds ``scales``
(linear path -> float32 vector of ``out_features`` factors, saved under ``"scale:" + path``);
such a file is format version 3 (a reader of version 2 would take the scales for thresholds).
A tuning with low-rank weight corrections (``TuneConfig(rank=r)``) adds ``lowrank`` (linear
path -> ``(U [out, r], V [r, in])``, float32, saved under ``"lowrank_u:"`` / ``"lowrank_v:" +
path``): the linear's weight becomes ``diag(scale) (W + U V)``; such a file is format version 4.
A tuning of the sparsified linears' weights themselves (``TuneConfig(weights=True)``) adds
``deltas`` (linear path -> ``dW [out, in]``, float32, saved under ``"delta:" + path``): the
weight becomes ``diag(scale) (W + dW + U V)``; such a file is format version 5 (as large as
the linears' weights in float32).
Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_KEY",
    "SparseError",
    "SparsityState",
    "Threshold",
    "check_sparsity",
    "load_state",
]

Threshold = float | torch.Tensor  # one per site (float) or one per channel (1-D float32)

FORMAT_KEY = "actlab.sparse"
FORMAT_VERSION = 1  # written when the state has no tuned gains
GAINS_VERSION = 2  # written when it has (a reader of version 1 would take them for thresholds)
SCALES_VERSION = 3  # written when it also has tuned row scales
LOWRANK_VERSION = 4  # written when it has tuned low-rank weight corrections
DELTAS_VERSION = 5  # written when it has tuned weight changes (full rank)
BASIS = "basis:"  # key prefix of the rotation bases in the state file
GAIN = "gain:"  # key prefix of the tuned normalisation gains
SCALE = "scale:"  # key prefix of the tuned output-row scales
LOWRANK_U, LOWRANK_V = "lowrank_u:", "lowrank_v:"  # key prefixes of the low-rank factors
DELTA = "delta:"  # key prefix of the tuned weight changes


class SparseError(ValueError):
    """Bad input to actlab.sparse (a ValueError, so the CLI prints one line)."""


def check_sparsity(sparsity: object, what: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1); a one-line :class:`SparseError` otherwise."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise SparseError(f"{what} must be a number in [0, 1), e.g. 0.5; got {sparsity!r}")
    s = float(sparsity)
    if not math.isfinite(s) or not 0.0 <= s < 1.0:
        raise SparseError(f"{what} must be in [0, 1) (0.5 zeroes half the entries); got {s!r}")
    return s


def _tuned_tensors(
    tensors: dict[str, Any], bad: str, nonfinite: str, *, ndim: int | None = None
) -> dict[str, torch.Tensor]:
    """Tuned tensors (gains, row scales) checked (float, finite, ``ndim`` dims when given) and
    copied to float32 CPU; ``bad`` / ``nonfinite`` are the messages, ``{!r}`` the key."""
    out: dict[str, torch.Tensor] = {}
    for k, t in tensors.items():
        is_float = isinstance(t, torch.Tensor) and t.is_floating_point()
        if not is_float or (ndim is not None and t.ndim != ndim):
            raise SparseError(bad.format(k))
        if not bool(t.isfinite().all()):
            raise SparseError(f"{nonfinite.format(k)} not finite; tune again with a smaller lr")
        out[k] = t.detach().to("cpu", torch.float32).clone()
    return out


def _lowrank_pairs(
    pairs: dict[str, Any],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Low-rank corrections ``(U [out, r], V [r, in])`` checked (float matrices of one rank,
    finite) and copied to float32 CPU (:func:`_tuned_tensors` on each factor)."""
    for k, pair in pairs.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise SparseError(f"low-rank correction {k!r} must be a pair (U [out, r], V [r, in])")
    bad, nonfinite = (
        "low-rank correction {!r} must be float matrices U [out, r] and V [r, in]",
        "low-rank correction {!r} is",
    )
    us = _tuned_tensors({k: p[0] for k, p in pairs.items()}, bad, nonfinite, ndim=2)
    vs = _tuned_tensors({k: p[1] for k, p in pairs.items()}, bad, nonfinite, ndim=2)
    for k in pairs:
        if us[k].shape[1] != vs[k].shape[0]:
            raise SparseError(bad.format(k))
    return {k: (us[k], vs[k]) for k in pairs}


@dataclass
class SparsityState:
    """Calibrated thresholds of one method, per site, with the method's name and parameters.

    ``thresholds[site]`` is a float32-representable float, or a 1-D float32 CPU tensor with one
    threshold per channel; a negative threshold means the site (channel) stays dense (nothing
    is zeroed, so sparsity 0 is bit-identical to the dense model).
    ``targets[site]`` is the sparsity the threshold was calibrated for. ``gains`` are
    normalisation weights (parameter path -> tensor) that ``apply`` writes into the model after
    any rotation; ``tuning`` says how they were obtained. ``scales`` (linear path -> vector of
    ``out_features`` factors) multiply the rows of those linears' weights, after any rotation.
    ``lowrank`` (linear path -> ``(U, V)``, ``[out, r]`` and ``[r, in]``) and ``deltas``
    (linear path -> ``dW [out, in]``) are added to those linears' weights (``W + dW + U V``)
    before their rows are scaled.
    """

    method: str
    params: dict[str, Any]
    thresholds: dict[str, Threshold]
    targets: dict[str, float] = field(default_factory=dict)
    bases: dict[str, torch.Tensor] = field(default_factory=dict)
    gains: dict[str, torch.Tensor] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)
    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.thresholds = {k: _f32(v) for k, v in self.thresholds.items()}
        self.targets = {k: float(v) for k, v in self.targets.items()}
        for k, q in self.bases.items():
            if not isinstance(q, torch.Tensor) or q.ndim != 2 or q.shape[0] != q.shape[1]:
                raise SparseError(f"rotation basis {k!r} must be a square matrix")
        self.bases = {k: q.detach().to("cpu", torch.float64) for k, q in self.bases.items()}
        self.gains = _tuned_tensors(self.gains, "gain {!r} must be a float tensor", "gain {!r} is")
        self.scales = _tuned_tensors(
            self.scales, "row scales {!r} must be a 1-D float tensor", "row scales {!r} are", ndim=1
        )
        self.lowrank = _lowrank_pairs(self.lowrank)
        bad, nonfinite = "weight change {!r} must be a float matrix", "weight change {!r} is"
        self.deltas = _tuned_tensors(self.deltas, bad, nonfinite, ndim=2)
        if (self.scales or self.lowrank or self.deltas) and not self.gains:
            raise SparseError(
                "a state with tuned row scales, low-rank corrections or weight changes must "
                "have its tuned gains too"
            )
        if self.gains and not self.tuning:
            raise SparseError("a state with tuned gains must say how they were tuned (tuning)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparsityState):
            return NotImplemented
        if (self.method, self.params, self.targets) != (other.method, other.params, other.targets):
            return False
        if not same_thresholds(self.thresholds, other.thresholds):
            return False
        if set(self.bases) != set(other.bases) or set(self.gains) != set(other.gains):
            return False
        if self.tuning != other.tuning or set(self.scales) != set(other.scales):
            return False
        if not all(torch.equal(g, other.gains[k]) for k, g in self.gains.items()):
            return False
        if not all(torch.equal(r, other.scales[k]) for k, r in self.scales.items()):
            return False
        if set(self.lowrank) != set(other.lowrank) or set(self.deltas) != set(other.deltas):
            return False
        if not all(torch.equal(d, other.deltas[k]) for k, d in self.deltas.items()):
            return False
        for k, (u, v) in self.lowrank.items():
            if not (torch.equal(u, other.lowrank[k][0]) and torch.equal(v, other.lowrank[k][1])):
                return False
        return all(torch.equal(q, other.bases[k]) for k, q in self.bases.items())

    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` (one safetensors file); returns the path."""
        from safetensors.torch import save_file

        p = Path(path)
        if p.is_dir():
            raise SparseError(
                f"{p} is a directory; give a file name such as {p / 'sparse.safetensors'}"
            )
        header: dict[str, Any] = {
            "version": self.version,
            "method": self.method,
            "params": self.params,
            "targets": self.targets,
        }
        if self.gains:
            header["tuning"] = self.tuning
        try:
            text = json.dumps(header, sort_keys=True)
        except TypeError as e:
            raise SparseError(f"the parameters of {self.method!r} are not JSON: {e}") from None
        tensors = {
            k: v.contiguous()
            if isinstance(v, torch.Tensor)
            else torch.tensor(v, dtype=torch.float32)
            for k, v in self.thresholds.items()
        }
        tensors.update({BASIS + k: q.contiguous().clone() for k, q in self.bases.items()})
        tensors.update({GAIN + k: g.contiguous().clone() for k, g in self.gains.items()})
        tensors.update({SCALE + k: r.contiguous().clone() for k, r in self.scales.items()})
        for k, (u, v) in self.lowrank.items():
            tensors[LOWRANK_U + k] = u.contiguous().clone()
            tensors[LOWRANK_V + k] = v.contiguous().clone()
        tensors.update({DELTA + k: d.contiguous().clone() for k, d in self.deltas.items()})
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        save_file(tensors, str(tmp), metadata={FORMAT_KEY: text})
        tmp.replace(p)  # never a half-written state under the final name
        return p

    @property
    def version(self) -> int:
        """The file format version :meth:`save` writes for this state (1 to 5)."""
        if self.deltas:
            return DELTAS_VERSION
        if self.lowrank:
            return LOWRANK_VERSION
        if self.scales:
            return SCALES_VERSION
        return GAINS_VERSION if self.gains else FORMAT_VERSION

    @classmethod
    def load(cls, path: str | Path) -> SparsityState:
        """Read a state written by :meth:`save` (see :func:`load_state`)."""
        return load_state(path)

    def describe(self) -> str:
        """One line: method, parameters, number of sites."""
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{self.method}({params}): {len(self.thresholds)} sites"


def same_thresholds(a: Mapping[str, Threshold], b: Mapping[str, Threshold]) -> bool:
    """Whether two sites -> threshold maps are equal (the same sites, floats and tensors)."""
    if set(a) != set(b):
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor) and not torch.equal(x, y):  # type: ignore[arg-type]
            return False
        if not isinstance(x, torch.Tensor) and x != y:
            return False
    return True


def _f32(value: object) -> Threshold:
    """A threshold as a float32-representable float, or a 1-D float32 CPU tensor."""
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        if not value.is_floating_point():
            raise SparseError(f"channel thresholds must be floats, got {value.dtype}")
        t = value.detach().to("cpu", torch.float32).clone()
        if bool(t.isnan().any()):
            raise SparseError("a channel threshold is NaN; calibrate on finite activations")
        return t
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise SparseError(f"thresholds must be scalars or 1-D, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SparseError(f"thresholds must be numbers, got {type(value).__name__}")
    v = float(torch.tensor(float(value), dtype=torch.float32).item())
    if math.isnan(v):
        raise SparseError("a threshold is NaN; calibrate on finite activations")
    return v


def load_state(path: str | Path) -> SparsityState:
    """Load a :class:`SparsityState` from a safetensors file written by ``state.save``."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no sparsity state at {p} (write one with state.save(path))")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta: Mapping[str, str] = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SparseError(f"{p} is not a safetensors file ({first})") from None
    if FORMAT_KEY not in meta:
        raise SparseError(f"{p} is a safetensors file but not an actlab sparsity state")
    try:
        header = json.loads(meta[FORMAT_KEY])
        method, params, targets = header["method"], header["params"], header["targets"]
        version = header["version"]
        tuning = header.get("tuning", {})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SparseError(f"{p}: the actlab.sparse header is malformed ({e})") from None
    if version not in range(FORMAT_VERSION, DELTAS_VERSION + 1):
        raise SparseError(
            f"{p}: state format version {version!r}, this actlab reads {FORMAT_VERSION} to "
            f"{DELTAS_VERSION}"
        )
    if not isinstance(tuning, dict):
        raise SparseError(f"{p}: the actlab.sparse header's tuning is not an object")
    bases = {k[len(BASIS) :]: t for k, t in tensors.items() if k.startswith(BASIS)}
    gains = {k[len(GAIN) :]: t for k, t in tensors.items() if k.startswith(GAIN)}
    scales = {k[len(SCALE) :]: t for k, t in tensors.items() if k.startswith(SCALE)}
    us = {k[len(LOWRANK_U) :]: t for k, t in tensors.items() if k.startswith(LOWRANK_U)}
    vs = {k[len(LOWRANK_V) :]: t for k, t in tensors.items() if k.startswith(LOWRANK_V)}
    deltas = {k[len(DELTA) :]: t for k, t in tensors.items() if k.startswith(DELTA)}
    if set(us) != set(vs):
        odd = sorted(set(us) ^ set(vs))[0]
        raise SparseError(f"{p}: the low-rank correction of {odd!r} lacks one of its two factors")
    expected = (
        DELTAS_VERSION
        if deltas
        else LOWRANK_VERSION
        if us
        else SCALES_VERSION
        if scales
        else GAINS_VERSION
        if gains
        else FORMAT_VERSION
    )
    if version != expected or bool(gains) != bool(tuning):
        raise SparseError(
            f"{p}: the header (version {version}, tuning {'given' if tuning else 'absent'}) "
            f"does not match the {len(gains)} tuned gains, {len(scales)} row scales, "
            f"{len(us)} low-rank corrections and {len(deltas)} weight changes; save the state "
            "again with actlab"
        )
    bad = [k for k, t in {**gains, **scales}.items() if t.ndim != 1 or t.dtype != torch.float32]
    if bad:
        raise SparseError(f"{p}: gain or row scale {bad[0]!r} is not a float32 vector")
    bad = [k for k in us if us[k].dtype != torch.float32 or vs[k].dtype != torch.float32]
    if bad:
        raise SparseError(f"{p}: low-rank correction {bad[0]!r} is not float32")
    bad = [k for k, t in deltas.items() if t.ndim != 2 or t.dtype != torch.float32]
    if bad:
        raise SparseError(f"{p}: weight change {bad[0]!r} is not a float32 matrix")
    tuned = (BASIS, GAIN, SCALE, LOWRANK_U, LOWRANK_V, DELTA)
    tensors = {k: t for k, t in tensors.items() if not k.startswith(tuned)}
    bad = [k for k, t in tensors.items() if t.ndim > 1 or t.dtype != torch.float32]
    if bad:
        raise SparseError(f"{p}: threshold {bad[0]!r} is not a float32 scalar or vector")
    bad = [k for k, t in bases.items() if t.ndim != 2 or t.dtype != torch.float64]
    if bad:
        raise SparseError(f"{p}: rotation basis {bad[0]!r} is not a float64 matrix")
    return SparsityState(
        method=str(method),
        params=dict(params),
        thresholds={k: float(t.item()) if t.ndim == 0 else t for k, t in tensors.items()},
        targets={str(k): float(v) for k, v in dict(targets).items()},
        bases=bases,
        gains=gains,
        tuning=tuning,
        scales=scales,
        lowrank={k: (us[k], vs[k]) for k in us},
        deltas=deltas,
    )
