"""The probe interface, the sampling context and the bounded reservoir.

A probe is a small object with one main method::

    update(name, module, output)   # called from a forward hook, under torch.no_grad()
    summary() -> dict[str, dict]   # row key -> tidy row (one row per layer, or layer x head)

``output`` is the module's raw output (a tensor or a tuple) or, for probes whose ``site`` is
``"input"``, the module's first positional input (seen before the module runs, so in-place
activations cannot overwrite it). The :class:`ProbeContext` bound by the manager supplies
seeded per-layer random generators (so token/position samples are reproducible) and the two
size limits: ``sample`` (rows looked at per call) and ``max_tokens`` (rows kept per layer).

Sampling is uniform without replacement over the whole stream: :class:`Reservoir` is a
bottom-k sampler (every row draws a uniform key; the ``capacity`` smallest keys are kept), so
its memory is ``capacity x width`` no matter how long the run is.

Cheap hooks: a hook call does the few reductions that must see the whole output and copies
a small sample into a staging list (:meth:`Probe.stage`); every ``ctx.stage`` calls (and
before each summary) the probe reduces the staged samples in one batch of tensor ops
(:meth:`Probe.reduce`), so the per-call cost is a handful of kernel launches.
"""

from __future__ import annotations

import abc
import fnmatch
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Probe",
    "ProbeArgumentError",
    "ProbeContext",
    "Reservoir",
    "TokenMask",
    "check_float",
    "check_int",
    "first_tensor",
    "label_array",
    "draw",
    "sample_rows",
    "sample_chunks",
    "unit_count",
    "pooled_samples",
    "match_any",
]

Row = dict[str, Any]


class ProbeArgumentError(ValueError, TypeError):
    """A bad argument to a probe, the probe manager or an estimator: one line naming the
    argument and what it accepts. A ValueError (the CLI prints it and exits 2), and a
    TypeError too, for callers that catch wrong types as such."""


def check_int(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi]; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProbeArgumentError(f"{name} must be an integer >= {lo}, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ProbeArgumentError(f"{name} must be an integer {span}, got {v}")
    return v


def check_float(
    name: str, value: Any, lo: float | None = None, *, strict: bool = False, hi: float | None = None
) -> float:
    """``value`` as a finite float, >= lo (> lo when ``strict``) and <= hi when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ProbeArgumentError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = not np.isfinite(v) or (lo is not None and (v <= lo if strict else v < lo))
    if bad or (hi is not None and v > hi):
        rng = "" if lo is None else (f" > {lo:g}" if strict else f" >= {lo:g}")
        rng += "" if hi is None else f" and <= {hi:g}"
        raise ProbeArgumentError(f"{name} must be a finite number{rng}, got {value!r}")
    return v


class TokenMask:
    """The real tokens of a padded (B, T) batch, on the host and (cached) on devices.

    ``host``: (B, T) bool; ``rows``: flat indices (into B*T) of the real tokens, int64.
    Built once per mask (one device-to-host copy per forward), shared by every hook.
    """

    def __init__(self, mask: Tensor) -> None:
        self.host = mask.detach().to("cpu", torch.bool).numpy().copy()
        self.shape = (int(mask.shape[0]), int(mask.shape[1]))
        self.rows = np.flatnonzero(self.host.reshape(-1)).astype(np.int64)
        self.all_real = bool(self.host.all())
        self._dev: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        got = self._dev.get(device)
        if got is None:
            got = self._dev[device] = (
                torch.from_numpy(self.rows).to(device),
                torch.from_numpy(self.host).to(device),
            )
        return got

    def rows_on(self, device: torch.device) -> Tensor:
        """Flat indices of the real tokens, on ``device``."""
        return self._on(device)[0]

    def bool_on(self, device: torch.device) -> Tensor:
        """The (B, T) bool mask on ``device``."""
        return self._on(device)[1]


@dataclass
class ProbeContext:
    """Seeds and size limits shared by the probes of one manager.

    ``sample``: rows (tokens / positions) looked at per hook call by sample-based statistics.
    ``max_tokens``: rows kept per layer by reservoirs and records (the memory bound).
    ``extras``: per-batch side information set with ``ProbeManager.set_context`` (``labels``,
    ``input_ids``, ``attention_mask``); probes read it, never write it.
    ``forward_mask``: the ``attention_mask`` keyword of the model call in progress (captured by
    the manager's pre-hook on the root module); it wins over ``extras["attention_mask"]``.
    ``stage``: hook calls whose samples are staged before a probe reduces them in bulk.
    ``train_stride``: in train mode, sampled statistics are taken on every n-th call of a
    layer (exact ones, such as dead units and maxima, on every call); eval mode samples every
    call. Training runs are long, so this keeps hooks cheap without starving the estimates.
    """

    seed: int = 0
    sample: int = 64
    max_tokens: int = 2048
    stage: int = 32
    train_stride: int = 4
    extras: dict[str, Any] = field(default_factory=dict)
    forward_mask: Tensor | None = None
    _mask: tuple[Tensor, int, TokenMask] | None = field(default=None, repr=False)
    _gens: dict[str, torch.Generator] = field(default_factory=dict, repr=False)
    _rngs: dict[str, np.random.Generator] = field(default_factory=dict, repr=False)

    def _seed_of(self, key: str) -> int:
        return (self.seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63)

    def generator(self, key: str) -> torch.Generator:
        """A torch CPU generator seeded from (seed, key): reproducible, independent per layer."""
        g = self._gens.get(key)
        if g is None:
            g = torch.Generator()
            g.manual_seed(self._seed_of(key))
            self._gens[key] = g
        return g

    def rng(self, key: str) -> np.random.Generator:
        """A numpy generator seeded from (seed, key), for the few indices a hook draws: on the
        host, in one call, without kernel launches."""
        r = self._rngs.get(key)
        if r is None:
            r = self._rngs[key] = np.random.default_rng(self._seed_of(key))
        return r

    def reset(self) -> None:
        """Restart every generator from its seed."""
        self._gens.clear()
        self._rngs.clear()

    def attention_mask(self) -> Tensor | None:
        """The (B, T) padding mask in force: the model call's ``attention_mask`` keyword, else
        ``extras["attention_mask"]``, else None."""
        m = (
            self.forward_mask
            if self.forward_mask is not None
            else self.extras.get("attention_mask")
        )
        return m if isinstance(m, Tensor) and m.ndim == 2 else None

    def token_mask(self, t: Tensor) -> TokenMask | None:
        """The padding mask that applies to ``t``, or None (no mask, no padding, or no token
        axis). A token axis is identifiable when ``t`` is (B, T, D) and the current mask
        (the model call's ``attention_mask`` keyword, else ``extras["attention_mask"]``) is
        (B, T); 1 / True marks a real token. Per-token statistics then count real tokens
        only. Masks without padding return None (the unmasked path is exact and cheaper)."""
        m = self.attention_mask()
        if m is None or t.ndim != 3:
            return None
        if (int(t.shape[0]), int(t.shape[1])) != (int(m.shape[0]), int(m.shape[1])):
            return None
        # the cache holds the mask itself, so an identical object with an unchanged version
        # counter is the same mask (no id reuse while it is cached)
        if self._mask is None or self._mask[0] is not m or self._mask[1] != m._version:
            self._mask = (m, int(m._version), TokenMask(m))
        info = self._mask[2]
        return None if info.all_real else info


class Probe(abc.ABC):
    """Base class for probes. Subclasses set ``name`` and implement update / summary.

    ``target`` names the default sites the manager attaches this probe to when no ``where``
    glob is given: ``"activation"`` (activation modules), ``"block"`` (transformer blocks),
    ``"attention"`` (attention modules / softmax), ``"router"`` (MoE routers). ``where`` (a
    glob or list of globs over qualified module names) overrides that for this probe.
    """

    name: ClassVar[str] = "probe"
    target: ClassVar[str] = "activation"
    site: ClassVar[str] = "output"

    def __init__(self, *, where: str | list[str] | tuple[str, ...] | None = None) -> None:
        self.where: tuple[str, ...] | None = _as_globs(where)
        self.ctx = ProbeContext()
        self._reset_staging()

    def _reset_staging(self) -> None:
        self.staged: dict[str, list[tuple[Any, ...]]] = {}
        self._sigs: dict[str, tuple[Any, ...]] = {}
        self._ticks: dict[str, int] = {}

    def sampling(self, name: str, module: nn.Module) -> bool:
        """Whether this call of layer ``name`` contributes samples (see ``train_stride``)."""
        stride = self.ctx.train_stride if module.training else 1
        if stride <= 1:
            return True
        n = self._ticks.get(name, 0)
        self._ticks[name] = n + 1
        return n % stride == 0

    def reservoir(self, store: dict[str, Reservoir], name: str, capacity: int) -> Reservoir:
        """``store[name]``, made on first use: a :class:`Reservoir` of at most ``capacity``
        (and ``ctx.max_tokens``) rows, drawn with this probe's seeded generator for ``name``."""
        r = store.get(name)
        if r is None:
            cap = min(capacity, self.ctx.max_tokens)
            r = store[name] = Reservoir(cap, self.ctx.generator(f"{self.name}/{name}"))
        return r

    def stage(self, name: str, item: tuple[Any, ...]) -> None:
        """Queue one call's samples; reduce the queue when it is full or a tensor's shape
        changes (None entries, samples skipped on this call, match any shape)."""
        queue = self.staged.setdefault(name, [])
        shapes = _shapes(item)
        sig = self._sigs.get(name)
        if queue and sig is not None and not _compatible(sig, shapes):
            self.staged[name] = []
            self._sigs.pop(name, None)
            self.reduce(name, queue)
            queue, sig = self.staged[name], None
        self._sigs[name] = shapes if sig is None else _merge(sig, shapes)
        queue.append(item)
        if len(queue) >= self.ctx.stage:
            self.staged[name] = []
            self._sigs.pop(name, None)
            self.reduce(name, queue)

    def flush(self) -> None:
        """Reduce every staged sample (called at the start of ``summary``)."""
        for name in list(self.staged):
            queue = self.staged.pop(name)
            self._sigs.pop(name, None)
            if queue:
                self.reduce(name, queue)

    def reduce(self, name: str, items: list[tuple[Any, ...]]) -> None:
        """Fold staged items (tensors of equal shapes, or None) of ``name`` into the stats.

        Only probes that stage samples need it; staging without it is a programming error."""
        raise TypeError(f"{type(self).__name__} stages samples but does not define reduce()")

    def bind(self, ctx: ProbeContext) -> None:
        """Share the manager's seeds and limits (called before hooks are attached)."""
        self.ctx = ctx

    def resolve_sites(self, sites: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
        """Map candidate (name, module) sites to the (layer label, module to hook) pairs this
        probe wants; the default keeps them as they are."""
        return sites

    @abc.abstractmethod
    def update(self, name: str, module: nn.Module, output: Any) -> None:
        """Fold one forward call of layer ``name`` into the running statistics."""

    @abc.abstractmethod
    def summary(self) -> dict[str, Row]:
        """Tidy rows keyed by layer (or layer#head); plain Python values only."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything seen so far."""

    def state_tensors(self) -> list[Tensor]:
        """Every tensor this probe holds (used to check the memory bound)."""
        out: list[Tensor] = []
        _collect_tensors(vars(self), out, depth=0)
        return out

    def nbytes(self) -> int:
        """Bytes held in tensors by this probe."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors())


def _collect_tensors(obj: Any, out: list[Tensor], depth: int) -> None:
    if depth > 4:
        return
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, Reservoir):
        _collect_tensors(vars(obj), out, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_tensors(v, out, depth + 1)
    elif isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
        for v in obj:
            _collect_tensors(v, out, depth + 1)


def _shapes(item: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(x.shape) if isinstance(x, Tensor) else None for x in item)


def _compatible(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b, strict=True)
    )


def _merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(x if x is not None else y for x, y in zip(a, b, strict=True))


def _as_globs(where: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """None, or a non-empty tuple of non-empty glob strings (anything else is refused)."""
    if where is None:
        return None
    globs = (
        (where,)
        if isinstance(where, str)
        else (tuple(where) if isinstance(where, (list, tuple)) else None)
    )
    if not globs or not all(isinstance(g, str) and g.strip() for g in globs):
        raise ProbeArgumentError(
            f"where= takes a glob string or a non-empty list of glob strings over module names "
            f"(e.g. 'layers.*.mlp.act_fn'), got {where!r}"
        )
    return globs


def match_any(name: str, globs: tuple[str, ...]) -> bool:
    """True when the qualified module name matches any glob (fnmatch, case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


class Reservoir:
    """Uniform sample without replacement of at most ``capacity`` rows from a stream.

    Bottom-k sampling: each incoming row draws a key from the generator; the rows with the
    ``capacity`` smallest keys seen so far are kept. Keys live on the CPU, rows stay on the
    device they came from (float32 copies, never views of activations). ``extra`` carries
    per-row side data (labels) through the same selection.
    """

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.generator = generator
        self.keys: Tensor | None = None
        self.rows: Tensor | None = None
        self.extra: Tensor | None = None
        self.seen = 0

    def add(self, rows: Tensor, extra: Tensor | None = None) -> None:
        """Offer a batch of rows (n, d) (and optional extra (n, ...))."""
        n = rows.shape[0]
        if n == 0:
            return
        self.seen += n
        keys = torch.rand(n, generator=self.generator, dtype=torch.float64)
        if n > self.capacity:
            keys, idx = torch.topk(keys, self.capacity, largest=False)
        else:
            idx = torch.arange(n)
        new = rows.index_select(0, idx.to(rows.device)).float()
        new_extra = None if extra is None else extra.index_select(0, idx.to(extra.device))
        if self.rows is None or self.keys is None:
            self.keys, self.rows, self.extra = keys, new, new_extra
            return
        all_keys = torch.cat([self.keys, keys])
        all_rows = torch.cat([self.rows, new])
        all_extra = None
        if self.extra is not None and new_extra is not None:
            all_extra = torch.cat([self.extra, new_extra])
        if all_keys.numel() > self.capacity:
            all_keys, keep = torch.topk(all_keys, self.capacity, largest=False)
            keep_d = keep.to(all_rows.device)
            all_rows = all_rows.index_select(0, keep_d)
            if all_extra is not None:
                all_extra = all_extra.index_select(0, keep.to(all_extra.device))
        self.keys, self.rows, self.extra = all_keys, all_rows, all_extra

    def __len__(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])


def first_tensor(output: Any) -> Tensor | None:
    """The first floating-point tensor in a module output (tensor, tuple, list or dict)."""
    if isinstance(output, Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, (tuple, list)):
        for o in output:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(output, dict):
        for o in output.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def label_array(y: Any, n: int, rows: str = "samples") -> np.ndarray:
    """Discrete labels ``y`` (a tensor or array-like) as a flat numpy array, one per each of
    the ``n`` rows; a one-line ``ValueError`` when the counts differ."""
    labels = (y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)).ravel()
    if labels.shape[0] != n:
        raise ValueError(f"{n} {rows} but {labels.shape[0]} labels")
    return labels


def unit_count(t: Tensor) -> int:
    """Number of units: channels (dim 1) for 4-D conv maps, else the last dimension."""
    if t.ndim == 0:
        return 1
    return int(t.shape[1]) if t.ndim == 4 else int(t.shape[-1])


def _row_count(t: Tensor) -> int:
    if t.ndim == 4:
        return int(t.shape[0] * t.shape[2] * t.shape[3])
    return int(t.numel() // max(unit_count(t), 1))


def draw(rng: np.random.Generator, n: int, k: int, device: torch.device) -> Tensor:
    """``k`` indices in [0, n) drawn with replacement, as an int64 tensor on ``device``."""
    return torch.from_numpy(rng.integers(0, n, size=k)).to(device)


def sample_rows(
    t: Tensor, k: int, rng: np.random.Generator, mask: TokenMask | None = None
) -> Tensor:
    """Up to ``k`` token rows (k, units) drawn uniformly with replacement (dtype kept).

    Tokens are the rows of ``t.reshape(-1, units)``; for 4-D conv maps (N, C, H, W) a token is
    one spatial position of one image and its units are the C channels. When the tensor has
    at most ``k`` rows all of them are returned (exact statistics on small inputs). With a
    ``mask`` (a (B, T, D) tensor of a padded batch) only real tokens are drawn. The result
    is always a copy, never a view, so a later in-place op on ``t`` cannot change it.
    """
    if mask is not None and t.ndim == 3:
        flat = t.reshape(-1, t.shape[-1])
        real = int(mask.rows.size)
        if real <= k:
            return flat.index_select(0, mask.rows_on(t.device))
        pick = mask.rows[rng.integers(0, real, size=k)]
        return flat.index_select(0, torch.from_numpy(pick).to(t.device))
    n = _row_count(t)
    if t.ndim == 4:
        flat = t.flatten(2)  # (N, C, HW), a view
        if n <= k:
            return flat.transpose(1, 2).reshape(-1, t.shape[1]).clone()
        idx = draw(rng, n, k, t.device)
        hw = flat.shape[2]
        return flat[idx // hw, :, idx % hw]
    d = unit_count(t)
    flat2 = t.reshape(-1, d) if t.ndim != 1 else t.reshape(-1, 1)
    if n <= k:
        return flat2.clone()
    return flat2.index_select(0, draw(rng, n, k, t.device))


def sample_chunks(
    t: Tensor, length: int, k: int, rng: np.random.Generator, mask: TokenMask | None = None
) -> Tensor | None:
    """Up to ``k`` chunks of ``length`` consecutive tokens, shape (k, length, units).

    Sequences are the rows of a (B, T, D) tensor (or the raster order of the positions of
    each image of a 4-D conv map); chunks do not overlap and never cross sequences. With a
    ``mask`` only chunks made entirely of real tokens are drawn. Returns None when there is
    no sequence axis (2-D inputs) or no chunk of ``length`` tokens.
    The dtype is kept; the indices are built on the host and the chunks gathered in one op.
    """
    if t.ndim == 3:
        seqs, tlen = int(t.shape[0]), int(t.shape[1])
    elif t.ndim == 4:
        seqs, tlen = int(t.shape[0]), int(t.shape[2] * t.shape[3])
    else:
        return None
    per_seq = tlen // length
    total = seqs * per_seq
    if per_seq == 0:
        return None
    cids: Any
    if mask is not None and t.ndim == 3:
        ok = mask.host[:, : per_seq * length].reshape(seqs, per_seq, length).all(axis=2)
        valid = np.flatnonzero(ok.reshape(-1))
        if valid.size == 0:
            return None
        cids = valid.tolist() if valid.size <= k else valid[rng.integers(0, valid.size, k)].tolist()
    else:
        cids = range(total) if total <= k else rng.integers(0, total, size=k).tolist()
    if t.ndim == 3:  # flat row indices built on the host: one tensor, one gather
        firsts = [(c // per_seq) * tlen + (c % per_seq) * length for c in cids]
        rows = torch.tensor([f + j for f in firsts for j in range(length)], device=t.device)
        return t.reshape(-1, t.shape[2]).index_select(0, rows).view(-1, length, t.shape[2])
    idx = torch.tensor([divmod(c, per_seq) for c in cids], dtype=torch.long).T.to(t.device)
    windows = t.flatten(2).unfold(2, length, length)  # (N, C, per_seq, L), a view
    return windows[idx[0], :, idx[1]].transpose(1, 2)  # (k, L, C)


def pooled_samples(t: Tensor, mask: TokenMask | None = None) -> Tensor:
    """One vector per sample: (B, D) as is, (B, T, D) mean over tokens (over real tokens
    with a ``mask``; a sample without any real token gets zeros), (N, C, H, W) mean over
    positions (global average pooling). float32."""
    if mask is not None and t.ndim == 3:
        w = mask.bool_on(t.device).float()  # (B, T)
        return (t.float() * w[:, :, None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
    if t.ndim == 1:
        return t.reshape(-1, 1).float()
    if t.ndim == 2:
        return t.float()
    if t.ndim == 4:
        return t.float().mean(dim=(2, 3))
    return t.float().mean(dim=tuple(range(1, t.ndim - 1)))
