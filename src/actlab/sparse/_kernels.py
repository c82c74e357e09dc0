"""Fused CPU decode kernels for the sparsified modules: :func:`use_kernels`, :func:`drop_kernels`.

Decoding one token is a chain of matrix-vector products bound by memory bandwidth. When a
fraction ``s`` of a layer's inputs are zeroed (TEAL, CATS, CHESS, WINA), only the matching
weight columns need to be read, so the ideal speed-up is ``1 / (1 - s)``. Gathering columns
with torch indexing is slower than the dense product; the kernels in ``csrc/sparse_gemv.cpp``
read only the needed weights, in one pass:

- ``sparse_linear``: ``y = W s_t(x) + b`` for a :class:`~actlab.sparse.SparseLinear`; the
  threshold ``|x_i| > t`` (scalar or per input) is applied while the survivor list is built,
  weights are stored input-major (``W^T``, one contiguous row per input), so each surviving
  input streams one row; a small batch reads the union of its rows' survivors once.
- ``gated_mlp``: ``down(m * act(gate(x)) * up(x))`` for a :class:`~actlab.sparse.SparseGatedMLP`
  (CATS / CHESS): the gate dense, then for each surviving channel its up row and down column,
  stored together, in one pass; ``act`` is silu (Llama, SmolLM2) or gelu_tanh (Gemma).

:func:`use_kernels` packs those layouts (float32 or bfloat16 copies of the weights: bf16
halves the bytes a token reads; accumulation is float32) and turns the kernel path on; the
modules then call it for forwards of at most ``max_rows`` positions (decoding), on CPU, without
autograd, and keep the torch path for everything else (prefill, training, CUDA, TEAL's
``last-half`` protocol). The masks are the torch path's masks (same rule, same threshold), so
the results agree within float32 rounding (bf16: of the bf16-rounded weights). The packed
copies are extra memory (one more copy of each sparsified weight, half for bf16) and follow
in-place changes of the weights (repacked on the next call). The op is compiled through
:mod:`actlab._ext` for the CPU's ISA (AVX512, AVX2 or portable code; ``ACTLAB_NATIVE_ISA``);
without a compiler (or with ``ACTLAB_NATIVE=0``) :func:`use_kernels` warns once and the torch
path stays in use.

The LM head (``use_kernels(model, dtype, head=True)``, opt-in): the model's
``get_output_embeddings()``, when it is a plain ``nn.Linear`` with float32 CPU weights, also
runs the dense ``sparse_linear`` (threshold ``-inf``: every input survives, every row streams)
on a packed ``W^T`` copy at ``dtype`` for the same decode-sized float32 forwards. It is often
the largest matrix a token reads (21% of SmolLM2-135M's per-token weight bytes, 63% of
Gemma-3-270M's), so bf16 blocks with a float32 head leave that share unhalved.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from actlab._ext import Extension, NativeLibrary, try_load
from actlab._ext import unavailable_reason as _ext_reason
from actlab.sparse._arena import PackArena
from actlab.sparse._modules import SparseGatedMLP, SparseLinear, _Site
from actlab.sparse._sites import INPUT_OF
from actlab.sparse._state import SparseError

__all__ = [
    "KERNELS",
    "KernelReport",
    "drop_kernels",
    "kernel_isa",
    "kernels_available",
    "use_kernels",
]

KERNELS = Extension(
    name="actlab_sparse",
    package="actlab.sparse",
    sources=("csrc/sparse_gemv.cpp", "csrc/decode_step.cpp"),
    headers=("csrc/sparse_gemv.h",),
    namespace="actlab_sparse",
    ops=("sparse_linear", "gated_mlp", "isa"),
    openmp=True,
    title="sparse decode kernels",
    fallback="the sparse modules use their torch path",
)

_DTYPES = (torch.float32, torch.bfloat16)
# (model, on) -> None: installs / removes the native routing of ``model.generate``; appended
# by actlab.sparse._generate, which builds on this module (a call here would be a cycle)
_GENERATE_HOOKS: list[Callable[[nn.Module, bool], None]] = []
_ACTS = {"silu": 0, "gelu_tanh": 1}


def kernels_available() -> bool:
    """Whether the sparse kernels are loaded (building them on the first call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return try_load(KERNELS) is not None


@dataclass
class KernelReport:
    """What :func:`use_kernels` did: the modules now on the kernel path and those left out."""

    dtype: torch.dtype
    isa: str = ""
    modules: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why
    packed_bytes: int = 0  # every packed copy, the head's included
    reason: str = ""  # why nothing was enabled (kernels unavailable), else ''
    head: str = ""  # path of the LM head on the kernel path (``head=True``), else ''
    head_bytes: int = 0  # its packed copy (an extra copy: its weight, maybe tied, is kept)
    pages: str = ""  # 'transparent huge pages' when used (opt-in, _arena); why not when asked

    def __str__(self) -> str:
        if self.reason:
            return f"sparse kernels off: {self.reason}"
        first = (
            f"sparse kernels ({self.isa}, {str(self.dtype).replace('torch.', '')} weights): "
            f"{len(self.modules)} modules{f' + head {self.head}' if self.head else ''}, "
            f"{self.packed_bytes / 2**20:.1f} MiB packed{f' on {self.pages}' if self.pages else ''}"
        )
        lines = [first]
        if self.head:
            lines.append(
                f"  head {self.head}: {self.head_bytes / 2**20:.1f} MiB packed (an extra copy; "
                "its weight and a tied input embedding are unchanged)"
            )
        return "\n".join([*lines, *(f"  skipped {p}: {why}" for p, why in self.skipped.items())])


def _vec(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float().contiguous()


def _reusable(t: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """Whether a repack can write over the packed tensor ``t`` (same shape; an inference
    tensor only inside inference mode) instead of taking new memory from the arena."""
    return tuple(t.shape) == shape and (not t.is_inference() or torch.is_inference_mode_enabled())


def _key(*ts: torch.Tensor | None) -> tuple[int, ...]:
    return tuple(v for t in ts if t is not None for v in (t.data_ptr(), t._version))


class _Kernel:
    """The packed layout of one module and the call that replaces its forward when it applies."""

    def __init__(self, lib: NativeLibrary, dtype: torch.dtype, max_rows: int) -> None:
        self.lib = lib
        self.dtype = dtype
        self.max_rows = max_rows
        self.counts = torch.zeros(2, dtype=torch.long)
        self.key: tuple[int, ...] = ()
        self.nbytes = 0

    def rows(self, x: torch.Tensor, width: int) -> int | None:
        """Positions in ``x`` if the kernel applies to this call, else None."""
        if x.device.type != "cpu" or not x.is_floating_point():
            return None
        if x.requires_grad and torch.is_grad_enabled():
            return None
        if x.shape[-1] != width:
            return None  # let torch raise its own shape error
        rows = x.numel() // width
        return rows if 0 < rows <= self.max_rows else None

    def count(self, site: _Site) -> torch.Tensor | None:
        if not site.counting:
            return None
        self.counts.zero_()
        return self.counts

    def add_counts(self, site: _Site, counts: torch.Tensor | None) -> None:
        if counts is not None:
            seen, zeroed = counts.tolist()
            site.seen += seen
            site.zeroed += zeroed


def _plan(site: _Site, x: torch.Tensor, width: int) -> tuple[str, float, torch.Tensor | None]:
    """How a site sparsifies this forward of ``x`` (its masked values have ``width`` channels):
    ``("dense" | "fused" | "torch", t, channel_t)``; ``torch``: the kernel does not cover it
    (TEAL's last-half over several positions)."""
    t = site.threshold
    positions = x.shape[-2] if x.ndim >= 3 else 1
    if isinstance(t, float) and t < 0:
        return "dense", -math.inf, None
    if site.mode == "decode" and positions > 1:
        return "dense", -math.inf, None
    if site.mode == "last-half" and positions > 1:
        return "torch", 0.0, None
    if isinstance(t, torch.Tensor):
        if t.shape[-1] != width:
            raise SparseError(f"{t.shape[-1]} channel thresholds for {width} channels")
        return "fused", 0.0, t
    return "fused", float(t), None


class _Packed:
    """One packed ``W^T`` layout, ``[in, sum of outs]``, for sibling :class:`SparseLinear` sites
    that read the same input with the same rule (q | k | v, gate | up under TEAL: the
    fused shapes), or for one site; and the output of its last call.

    The first member called with a new input computes every member's output in one kernel
    call (one survivor pass, one stream over the rows); each other member, called next with
    the same tensor (same object, same version, same plan), takes its slice of it once. A
    member called twice, or with another tensor, computes again. (Inference-mode tensors
    keep no version counter: siblings must read their input before it is changed in place,
    as every attention and gated MLP does.)
    """

    def __init__(self, members: list[SparseLinear], dtype: torch.dtype, arena: PackArena) -> None:
        self.members = members
        self.dtype = dtype
        self.arena = arena
        self.wt = torch.empty(0)
        self.offsets: list[int] = []
        off = 0
        for m in members:
            self.offsets.append(off)
            off += m.out_features
        self.pack()

    def state(self) -> list[tuple[torch.Tensor, int, int]]:
        return [
            (m.weight, m.weight._version, -1 if m.bias is None else m.bias._version)
            for m in self.members
        ]

    def pack(self) -> None:
        ms = self.members
        shape = (ms[0].in_features, sum(m.out_features for m in ms))  # [in, sum of outs]
        if not _reusable(self.wt, shape):  # a repack writes over the same memory
            self.wt = self.arena.empty(shape, self.dtype)
        for m, off in zip(ms, self.offsets, strict=True):
            self.wt[:, off : off + m.out_features].copy_(m.weight.detach().t())
        self.bias: torch.Tensor | None = None
        if any(m.bias is not None for m in ms):
            self.bias = torch.cat(
                [
                    torch.zeros(m.out_features) if m.bias is None else m.bias.detach().float()
                    for m in ms
                ]
            ).contiguous()
        self.packed_state = self.state()
        self.nbytes = self.wt.numel() * self.wt.element_size()
        self.last_x: torch.Tensor | None = None  # the input of the last call ...
        self.last_key: tuple[Any, ...] = ()  # ... its version and plan
        self.last_y = torch.empty(0)  # [rows, sum of outs]
        self.last_counts = (0, 0)
        self.pending: set[int] = set()  # members that have not yet taken their slice

    def refresh(self) -> None:
        """Repack if any member's weight or bias was replaced or changed in place."""
        now = self.state()
        if any(a[0] is not b[0] or a[1:] != b[1:] for a, b in zip(now, self.packed_state)):
            self.pack()


class _LinearKernel(_Kernel):
    """``sparse_linear`` for a :class:`SparseLinear`: member ``index`` of a :class:`_Packed`."""

    def __init__(
        self, m: SparseLinear, packed: _Packed, index: int, lib: NativeLibrary, rows: int
    ) -> None:
        super().__init__(lib, packed.dtype, rows)
        self.op = lib.op("sparse_linear")
        # a subclass with its own keep rule (WINA's top-k) masks in torch, skips zeros here
        self.fused = type(m)._criterion is SparseLinear._criterion
        self.packed = packed
        self.index = index
        self.lo = packed.offsets[index]
        self.hi = self.lo + m.out_features
        self.width = m.in_features
        self.nbytes = packed.nbytes if index == 0 else 0

    def __call__(self, m: SparseLinear, x: torch.Tensor) -> torch.Tensor | None:
        k = self.width
        rows = self.rows(x, k)
        if rows is None:
            return None
        how, t, channel_t = _plan(m, x, k)
        if how == "torch":
            return None
        p = self.packed
        w, ver, _ = p.packed_state[self.index]
        if m.weight is not w or m.weight._version != ver or m.bias is not None:
            p.refresh()  # the weights changed since packing (bias: checked on every call)
        # inference tensors keep no version counter: identity (and the one-use rule) only
        key = (-1 if x.is_inference() else x._version, how, t, id(channel_t))
        if p.last_x is x and p.last_key == key and self.index in p.pending:
            p.pending.discard(self.index)  # a sibling computed this output: take the slice
            seen, zeroed = p.last_counts
        else:
            x2 = x.reshape(rows, k)  # [rows, in]
            if x2.dtype != torch.float32 or not x2.is_contiguous():
                x2 = x2.float().contiguous()
            if how == "fused" and not self.fused:
                keep = m._keep(x)  # the subclass's rule, counted there
                if keep is not None:
                    x2 = (x * keep).reshape(rows, k).float().contiguous()
                y = self.op(x2, p.wt, p.bias, -math.inf if keep is None else 0.0, None, None)
                return y.view(*x.shape[:-1], self.hi - self.lo).to(x.dtype)
            counts = self.count(m)
            thr = None if channel_t is None else channel_t.float().contiguous()
            p.last_y = self.op(x2, p.wt, p.bias, t, thr, counts)
            p.last_x, p.last_key = x, key
            p.pending = set(range(len(p.members))) - {self.index}
            seen, zeroed = p.last_counts = (
                (int(counts[0]), int(counts[1])) if counts is not None else (rows * k, -1)
            )
        if m.counting:
            if zeroed < 0:  # the sibling that computed it was not counting: count here
                keep = m._criterion(x) if how == "fused" else None
                zeroed = 0 if keep is None else x.numel() - int(keep.sum())
            m.seen += seen
            m.zeroed += zeroed
        y = p.last_y[:, self.lo : self.hi]  # [rows, out]
        if rows > 1 and len(p.members) > 1:
            y = y.contiguous()
        y = y.view(*x.shape[:-1], self.hi - self.lo)  # [..., out]
        return y if y.dtype == x.dtype else y.to(x.dtype)


def _act_code(act: nn.Module) -> int | None:
    """0 if ``act`` computes silu, 1 if gelu_tanh (probed on a grid), None otherwise."""
    z = torch.linspace(-8.0, 8.0, 161)
    try:
        with torch.no_grad():
            out = act(z.clone())
    except Exception:  # noqa: BLE001 -- an activation that cannot take this input: no kernel
        return None
    if not isinstance(out, torch.Tensor) or out.shape != z.shape:
        return None
    for name, ref in (("silu", F.silu(z)), ("gelu_tanh", F.gelu(z, approximate="tanh"))):
        if torch.allclose(out.float(), ref, rtol=1e-5, atol=1e-6):
            return _ACTS[name]
    return None


class _GatedKernel(_Kernel):
    """``gated_mlp`` for a :class:`SparseGatedMLP` (gate ``W^T``; up rows | down columns)."""

    def __init__(
        self,
        m: SparseGatedMLP,
        lib: NativeLibrary,
        dtype: torch.dtype,
        rows: int,
        act: int,
        arena: PackArena,
    ) -> None:
        super().__init__(lib, dtype, rows)
        self.op = lib.op("gated_mlp")
        self.act = act
        self.arena = arena
        self.gate_t = self.updown = torch.empty(0)
        self.pack(m)

    @staticmethod
    def linears(m: SparseGatedMLP) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        g, u, d = m.gate_proj, m.up_proj, m.down_proj
        assert isinstance(g, nn.Linear) and isinstance(u, nn.Linear) and isinstance(d, nn.Linear)
        return g, u, d

    def pack(self, m: SparseGatedMLP) -> None:
        g, u, d = self.linears(m)
        dm, f = g.in_features, g.out_features
        if not _reusable(self.gate_t, (dm, f)):  # a repack writes over the same memory
            self.gate_t = self.arena.empty((dm, f), self.dtype)  # [d, F]
            self.updown = self.arena.empty((f, 2 * dm), self.dtype)
        self.gate_t.copy_(g.weight.detach().t())
        # row c = [up.weight[c, :] | down.weight[:, c]]: [F, 2d]
        self.updown[:, :dm].copy_(u.weight.detach())
        self.updown[:, dm:].copy_(d.weight.detach().t())
        self.biases = (_vec(g.bias), _vec(u.bias), _vec(d.bias))
        self.key = _key(g.weight, u.weight, d.weight, g.bias, u.bias, d.bias)
        self.nbytes = sum(t.numel() * t.element_size() for t in (self.gate_t, self.updown))
        self.width = g.in_features

    def __call__(self, m: SparseGatedMLP, x: torch.Tensor) -> torch.Tensor | None:
        rows = self.rows(x, self.width)
        if rows is None:
            return None
        g, u, d = self.linears(m)
        how, t, channel_t = _plan(m, x, g.out_features)
        if how == "torch":
            return None
        if _key(g.weight, u.weight, d.weight, g.bias, u.bias, d.bias) != self.key:
            self.pack(m)
        x2 = x.reshape(rows, self.width).float().contiguous()  # [rows, d]
        counts = self.count(m)
        thr = None if channel_t is None else channel_t.float().contiguous()
        y = self.op(x2, self.gate_t, self.updown, *self.biases, t, thr, self.act, counts)
        self.add_counts(m, counts)
        return y.reshape(*x.shape[:-1], d.out_features).to(x.dtype)  # [..., d]


class _HeadKernel(_Kernel):
    """The LM head through ``sparse_linear`` at threshold ``-inf`` (dense: every input
    survives, every packed row streams): a ``W^T`` copy ``[in, vocab]`` at ``dtype``."""

    def __init__(
        self, head: nn.Linear, lib: NativeLibrary, dtype: torch.dtype, rows: int, arena: PackArena
    ) -> None:
        super().__init__(lib, dtype, rows)
        self.op = lib.op("sparse_linear")
        self.arena = arena
        self.wt = torch.empty(0)
        self.pack(head)

    def pack(self, head: nn.Linear) -> None:
        w = head.weight.detach()
        if not _reusable(self.wt, (w.shape[1], w.shape[0])):  # a repack reuses the memory
            self.wt = self.arena.empty((w.shape[1], w.shape[0]), self.dtype)
        self.wt.copy_(w.t())  # converted while transposed: [in, vocab]
        self.bias = _vec(head.bias)
        self.key = _key(head.weight, head.bias)
        self.nbytes = self.wt.numel() * self.wt.element_size()

    def __call__(self, head: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
        k = head.in_features
        rows = self.rows(x, k) if x.dtype == torch.float32 else None
        if rows is None:
            return None
        if _key(head.weight, head.bias) != self.key:
            self.pack(head)  # the weight (or the tied embedding) changed since packing
        y = self.op(x.reshape(rows, k).contiguous(), self.wt, self.bias, -math.inf, None, None)
        return y.view(*x.shape[:-1], head.out_features)


_HEAD_KERNEL = "_actlab_head_kernel"  # instance attributes of a head on the kernel path


def _head_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``forward`` of an LM head on the kernel path: the packed kernel where it applies, else
    ``nn.Linear.forward`` (torch)."""
    kernel = self.__dict__.get(_HEAD_KERNEL)
    if kernel is not None and (y := kernel(self, x)) is not None:
        return cast(torch.Tensor, y)
    return nn.Linear.forward(self, x)


def _ours(m: nn.Module) -> bool:
    f = m.__dict__.get("forward")
    return isinstance(f, types.MethodType) and f.__func__ is _head_forward


def _drop_heads(model: nn.Module) -> int:
    """Take every head off the kernel path (the class's own forward again); how many."""
    n = 0
    for m in model.modules():
        if _ours(m):
            del m.__dict__["forward"]
            m.__dict__.pop(_HEAD_KERNEL, None)
            n += 1
    return n


def _use_head(
    model: nn.Module,
    lib: NativeLibrary,
    dtype: torch.dtype,
    max_rows: int,
    report: KernelReport,
    arena: PackArena,
) -> None:
    """Put the model's output embedding on the kernel path, or say in ``report`` why not."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        report.skipped["head"] = "the model has no output embeddings (get_output_embeddings)"
        return
    path = next((p for p, m in model.named_modules() if m is head), "head")
    why = ""
    if type(head) is not nn.Linear:
        why = f"a {type(head).__name__}, not a plain nn.Linear (torch path kept)"
    elif "forward" in head.__dict__:
        why = "has an instance-level forward of its own (left alone)"
    elif head.weight.device.type != "cpu" or head.weight.dtype != torch.float32:
        w = head.weight
        why = f"{w.dtype} weights on {w.device.type} (float32 CPU needed; torch path kept)"
    if why:
        report.skipped[path] = why
        return
    assert isinstance(head, nn.Linear)
    kernel = _HeadKernel(head, lib, dtype, max_rows, arena)
    head.__dict__[_HEAD_KERNEL] = kernel
    head.__dict__["forward"] = types.MethodType(_head_forward, head)
    report.head = path
    report.head_bytes = kernel.nbytes
    report.packed_bytes += kernel.nbytes


def _load() -> tuple[NativeLibrary | None, str]:
    """The library, or None and the reason (the builder's own warning is folded into ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lib = try_load(KERNELS)
    return lib, "" if lib is not None else _ext_reason(KERNELS)


def _skip_reason(m: nn.Module, dtype: torch.dtype) -> str:
    params = list(m.parameters())
    if not params:
        return "no weights"
    if any(p.device.type != "cpu" for p in params):
        return f"weights on {params[0].device.type}: the kernels are CPU-only (torch path kept)"
    if any(not p.is_floating_point() for p in params):
        return "non-float weights"
    return ""


def _same_threshold(a: SparseLinear, b: SparseLinear) -> bool:
    ta, tb = a.threshold, b.threshold
    if isinstance(ta, torch.Tensor) or isinstance(tb, torch.Tensor):
        return (
            isinstance(ta, torch.Tensor)
            and isinstance(tb, torch.Tensor)
            and ta.shape == tb.shape
            and bool(torch.equal(ta, tb))
        )
    return ta == tb


def _sibling_groups(model: nn.Module) -> dict[int, list[SparseLinear]]:
    """Plain :class:`SparseLinear` children of one module that read one input (``INPUT_OF``:
    q/k/v, gate/up) with equal thresholds, by ``id`` of each member (groups of 2+ only)."""
    out: dict[int, list[SparseLinear]] = {}
    for parent in model.modules():
        by_input: dict[str, list[SparseLinear]] = {}
        for name, child in parent.named_children():
            if type(child) is SparseLinear and name in INPUT_OF:
                by_input.setdefault(INPUT_OF[name], []).append(child)
        for members in by_input.values():
            while members:
                head = members[0]
                same = [
                    c
                    for c in members
                    if c.in_features == head.in_features
                    and c.weight.dtype == head.weight.dtype
                    and _same_threshold(c, head)
                ]
                if len(same) > 1:
                    out.update({id(c): same for c in same})
                members = [c for c in members if c not in same]
    return out


def use_kernels(
    model: nn.Module,
    dtype: torch.dtype = torch.float32,
    *,
    max_rows: int = 8,
    generate: bool = True,
    head: bool = False,
) -> KernelReport:
    """Pack the weights of every sparse module of ``model`` and turn its kernel path on.

    ``dtype``: float32 or bfloat16 packed weights (activations stay in the model's dtype;
    the kernel accumulates in float32). ``max_rows``: the kernel runs for forwards of at most
    this many positions (decode steps, small batches); longer ones (prefill) use torch.
    Returns a :class:`KernelReport`. Without the compiled library, warns once and changes
    nothing. Call again to repack (e.g. with another dtype); :func:`drop_kernels` undoes it.
    ``generate``: also route the model's ``generate`` through the native decode step where it
    serves the call exactly (:func:`~actlab.sparse.native_generate`; ``False``: leave it).

    ``head=True``: also run the LM head (``model.get_output_embeddings()``, when it is a
    plain ``nn.Linear`` with float32 CPU weights; otherwise it is listed in
    ``report.skipped``) through the dense kernel on a packed copy at ``dtype``, for the same
    forwards (at most ``max_rows`` positions, float32 CPU activations, no autograd; the
    native decode step and routed ``generate`` call the head through it). The weight, and the
    input embedding it may be tied to, are not touched: the packed copy is extra memory
    (``report.head_bytes``, included in ``packed_bytes``) and is repacked after an in-place
    change of the weight. Design: the head keeps its module object and its class (a plain
    ``nn.Linear``, so ``isinstance`` / ``type`` checks, ``state_dict``, weight tying,
    ``save_pretrained``, :func:`~actlab.sparse.save_sparse` and
    :func:`~actlab.sparse.realised_sparsity` see no change); only an instance-level
    ``forward`` is set (as :func:`~actlab.sparse.native_generate` sets ``generate``), which
    calls the kernel where it applies and ``nn.Linear.forward`` otherwise. Wrapping it in a
    :class:`SparseLinear` would change its type and make it a sparse site; a head object
    only the decode loop calls would leave Hugging Face's own forwards on the float32 head.
    Calling ``use_kernels`` again without ``head=True`` (or :func:`drop_kernels`) removes it.
    """
    if dtype not in _DTYPES:
        raise SparseError(f"use_kernels dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise SparseError(f"use_kernels max_rows must be a positive int, got {max_rows!r}")
    if not isinstance(head, bool):
        raise SparseError(f"use_kernels head must be True or False, got {head!r}")
    if not isinstance(model, nn.Module):
        raise SparseError(f"use_kernels needs an nn.Module, got {type(model).__name__}")
    sites = [
        (p, m) for p, m in model.named_modules() if isinstance(m, (SparseLinear, SparseGatedMLP))
    ]
    if not sites:
        raise SparseError(
            "use_kernels found no sparse modules; sparsify the model first "
            "(make_method(...).apply(model, state))"
        )
    report = KernelReport(dtype=dtype)
    lib, reason = _load()
    if lib is None:
        report.reason = reason
        warnings.warn(
            f"actlab: sparse decode kernels unavailable ({reason}); the sparse modules keep "
            "their torch path",
            RuntimeWarning,
            stacklevel=2,
        )
        return report
    report.isa = lib.isa
    # packed copies and counters are normal tensors even when packed in inference mode, so
    # that a repack or a count outside it can write over them
    with torch.inference_mode(False):
        arena = PackArena()  # plain memory; huge pages with ACTLAB_HUGE_PAGES=1 (_arena)
        groups = _sibling_groups(model)
        packs: dict[int, tuple[_Packed, int]] = {}
        for path, m in sites:
            why = _skip_reason(m, dtype)
            kernel: _Kernel | None = None
            if not why and isinstance(m, SparseLinear):
                if id(m) not in packs:
                    members = [g for g in groups.get(id(m), [m]) if not _skip_reason(g, dtype)]
                    if m not in members:
                        members = [m]
                    pk = _Packed(members, dtype, arena)
                    packs.update({id(g): (pk, i) for i, g in enumerate(members)})
                pk, index = packs[id(m)]
                kernel = _LinearKernel(m, pk, index, lib, max_rows)
            elif not why and isinstance(m, SparseGatedMLP):
                if not all(
                    type(getattr(m, n)) is nn.Linear for n in ("gate_proj", "up_proj", "down_proj")
                ):
                    why = "gate/up/down are not plain nn.Linear"
                elif (act := _act_code(m.act_fn)) is None:
                    why = f"act_fn {type(m.act_fn).__name__} is neither silu nor gelu_tanh"
                else:
                    kernel = _GatedKernel(m, lib, dtype, max_rows, act, arena)
            if kernel is None:
                report.skipped[path] = why
                m.__dict__.pop("_kernel", None)
                continue
            m._kernel = cast(Callable[[Any, torch.Tensor], "torch.Tensor | None"], kernel)
            report.modules.append(path)
            report.packed_bytes += kernel.nbytes
        _drop_heads(model)
        if head:
            _use_head(model, lib, dtype, max_rows, report, arena)
        report.pages = (
            "transparent huge pages"
            if arena.advised_bytes
            else f"4 KiB pages ({arena.reason})"
            if arena.reason
            else ""
        )
    for hook in _GENERATE_HOOKS if generate else ():
        hook(model, True)
    return report


def drop_kernels(model: nn.Module) -> int:
    """Turn the kernel path off and free the packed weights (and the native routing of
    ``generate``, and the LM head's kernel: the same module object, its class's forward);
    returns how many sparse modules had it."""
    for hook in _GENERATE_HOOKS:
        hook(model, False)
    _drop_heads(model)
    n = 0
    for m in model.modules():
        if isinstance(m, (SparseLinear, SparseGatedMLP)) and m.__dict__.pop("_kernel", None):
            n += 1
    return n


def kernel_isa() -> str:
    """The ISA the loaded library was compiled for ('' when unavailable)."""
    lib, _ = _load()
    return "" if lib is None else str(lib.op("isa")())
