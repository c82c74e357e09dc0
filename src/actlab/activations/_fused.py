"""Memory-lean and fused paths for composite elementwise activations.

A composite activation y = f(x; θ) (θ: a few learnable scalars) written with plain torch
ops keeps several intermediate tensors alive for backward and makes one memory pass per op.
Here each such activation supplies two pure functions with a hand-derived backward:

    fwd(x, *θ)     -> y
    bwd(x, g, *θ)  -> (dL/dx, dL/dθ_1, ...)      dL/dθ_i summed to θ_i's shape

and :class:`ElementwiseKernel` runs them in one of five modes:

    "reference"  plain autograd through fwd (saves whatever autograd saves; the twin to test)
    "eager"      custom autograd.Function: saves only x (and θ), runs fwd/bwd eagerly
    "compiled"   as "eager", with fwd and bwd fused by torch.compile (Dynamo's automatic
                 dynamic shapes: a graph for the first size seen, one for every size once a
                 second appears; Inductor's on-disk cache amortises the first-call cost
                 across processes)
    "native"     the C++ autograd ops of :mod:`._native` (hand-written kernels, saves only
                 x and θ, no Python per call) for the kernels that have one (CRReLU,
                 eafo(gelu)) on float32/float64 CPU tensors; an error if that library cannot
                 be built; other kernels behave as "auto"
    "auto"       native where a native kernel applies and its library builds; otherwise
                 compiled for tensors with >= ACTLAB_FUSE_MIN_NUMEL elements (default 65536)
                 when the compiler works on that device, else eager.  Inside an outer
                 torch.compile the reference formula is used so that the outer graph fuses it.

The mode has one resolver, :func:`get_kernel_mode`: the innermost ``with kernel_mode(...)`` of
the thread (how a run's ``kernel`` setting is applied), else ``set_kernel_mode(...)``, else
the environment variable ACTLAB_KERNEL, read once per process (``set_kernel_mode(None)``
re-reads it), else ``auto``. Nothing reads the environment per call.  If compilation fails once (no
C++ compiler, no Triton on the GPU) a warning is issued and that kernel falls back to eager for the
rest of the process; nothing crashes. An explicit "compiled" raises instead: a one-line RuntimeError
that names the failure.

Portable dispatch: with no vector instruction set for Inductor on the CPU (which is what
``ATEN_CPU_CAPABILITY=default`` forces, and what an x86 CPU without AVX2 has), Inductor's
generated C++ for these kernels does not build (torch 2.13: "'at::vec' has not been
declared"). That is detected before compiling: "auto" uses the eager lean path (or native)
with one warning per process, and "compiled" raises a one-line RuntimeError at once.

Inductor's on-disk FX graph cache (torch 2.13) does not key its entries by the vector ISA:
a graph generated 16 lanes wide under the AVX-512 dispatch and reloaded under
``ATEN_CPU_CAPABILITY=avx2`` (or the reverse) is rebuilt with the other ISA's flags and
computes half of its elements wrong, or crashes. So when ``ATEN_CPU_CAPABILITY`` is set and
``TORCHINDUCTOR_CACHE_DIR`` is not, importing actlab points the latter at a cache of its own
for that capability (``<default>-<capability>``, e.g. /tmp/torchinductor_<user>-avx2). It is
done at import because torch fills in the variable itself the first time Inductor runs.

Values and gradients at large and infinite inputs: every kernel's eager, compiled and native
paths give the limits at ±inf (no inf·0 = nan in the hand-written backward) and match the
float64 formula at large finite inputs; see tests/activations/test_extremes.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ElementwiseKernel",
    "MODES",
    "acc_sum",
    "check_kernel_mode",
    "fuse_min_numel",
    "get_kernel_mode",
    "kernel_mode",
    "kernel_unavailable",
    "set_kernel_mode",
]

log = logging.getLogger("actlab.kernels")

MODES = ("auto", "compiled", "eager", "native", "reference")
_DEFAULT_MIN_NUMEL = 65536


def check_kernel_mode(mode: object, what: str = "kernel mode ") -> str:
    """``mode`` if it is one of :data:`MODES`; else a one-line ValueError naming them."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{what}{mode!r} is not one of {', '.join(MODES)}")
    return mode


class _Resolver(threading.local):
    """The one place the kernel mode lives (the order is :func:`get_kernel_mode`'s).

    Per thread (instance attributes of this ``threading.local``): the innermost
    ``kernel_mode(...)`` context (``ctx``, ``ctx_numel``). Per process (class attributes,
    shared by every thread): the ``set_kernel_mode`` setting (``explicit``) and the two
    environment variables, read once on first use (``env``, ``env_numel``) and again only
    when :func:`set_kernel_mode` is called; nothing reads the environment per call.
    """

    ctx: str | None = None
    ctx_numel: int | None = None
    explicit: str | None = None
    env: str | None = None  # ACTLAB_KERNEL, validated (None: not read yet)
    env_numel: int | None = None  # ACTLAB_FUSE_MIN_NUMEL (None: not read yet)

    @staticmethod
    def read_env() -> str:
        raw = os.environ.get("ACTLAB_KERNEL", "").strip().lower() or "auto"
        _Resolver.env = check_kernel_mode(raw, "ACTLAB_KERNEL=")  # an invalid value is not kept
        return _Resolver.env

    @staticmethod
    def read_env_numel() -> int:
        raw = os.environ.get("ACTLAB_FUSE_MIN_NUMEL", "").strip()
        try:
            n = int(raw) if raw else _DEFAULT_MIN_NUMEL
        except ValueError:
            raise ValueError(
                f"ACTLAB_FUSE_MIN_NUMEL={raw!r} is not a whole number; unset it for the default "
                f"{_DEFAULT_MIN_NUMEL}"
            ) from None
        _Resolver.env_numel = n
        return n

    @staticmethod
    def reread() -> None:
        _Resolver.env = _Resolver.env_numel = None
        _Resolver.read_env()
        _Resolver.read_env_numel()


_MODE = _Resolver()


def get_kernel_mode() -> str:
    """The kernel mode in force: the innermost ``with kernel_mode(...)`` of this thread, else
    :func:`set_kernel_mode`'s setting, else ``ACTLAB_KERNEL`` (read once), else ``auto``."""
    mode = _MODE.ctx
    if mode is None:
        mode = _Resolver.explicit or _Resolver.env or _Resolver.read_env()
    return mode


def fuse_min_numel() -> int:
    """Elements from which ``auto`` takes the compiled (or, for ``expr``, the lean) path:
    ``kernel_mode(..., min_numel=n)``, else ``ACTLAB_FUSE_MIN_NUMEL`` (read once), else 65536."""
    n = _MODE.ctx_numel
    if n is None:
        n = _Resolver.env_numel
        if n is None:
            n = _Resolver.read_env_numel()
    return n


def set_kernel_mode(mode: str | None) -> None:
    """Set the process-wide kernel mode (one of :data:`MODES`); a ``kernel_mode`` context
    still wins inside it. ``None`` drops the setting and re-reads the environment
    (``ACTLAB_KERNEL``, ``ACTLAB_FUSE_MIN_NUMEL``), which is otherwise read once."""
    if mode is None:
        _Resolver.explicit = None
        _Resolver.reread()
        return
    _Resolver.explicit = check_kernel_mode(mode)


@contextlib.contextmanager
def kernel_mode(mode: str, *, min_numel: int | None = None) -> Iterator[None]:
    """Temporarily use ``mode`` in this thread (and, if given, ``min_numel`` as the size from
    which ``auto`` fuses; see :func:`fuse_min_numel`)."""
    check_kernel_mode(mode)
    if min_numel is not None and (
        isinstance(min_numel, bool) or not isinstance(min_numel, int) or min_numel < 0
    ):
        raise ValueError(f"min_numel must be a whole number >= 0, got {min_numel!r}")
    old, old_numel = _MODE.ctx, _MODE.ctx_numel
    _MODE.ctx = mode
    if min_numel is not None:
        _MODE.ctx_numel = min_numel
    try:
        yield
    finally:
        _MODE.ctx, _MODE.ctx_numel = old, old_numel


def _own_code(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of plain function ``fn`` with a distinct code object (others returned as is)."""
    if not isinstance(fn, types.FunctionType):
        return fn
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)
    code = fn.__code__.replace(co_name=safe)
    if hasattr(code, "co_qualname"):  # Python >= 3.11
        code = code.replace(co_qualname=safe)  # type: ignore[call-arg]
    return types.FunctionType(code, fn.__globals__, safe, fn.__defaults__, fn.__closure__)


def acc_sum(t: Tensor) -> Tensor:
    """Sum of all elements, accumulated in float32 (float64 for float64 input)."""
    return t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)


_UNAVAILABLE: dict[str, str | None] = {}  # device type -> why Inductor cannot build there
_warned_unavailable: set[str] = set()


def compile_unavailable(device_type: str) -> str | None:
    """Why torch.compile cannot build these kernels on ``device_type`` (None: it may try)."""
    if device_type not in _UNAVAILABLE:
        why: str | None = None
        if device_type == "cpu":
            try:
                from torch._inductor.cpu_vec_isa import pick_vec_isa

                if not pick_vec_isa():
                    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").strip()
                    why = (
                        f"Inductor has no vector instruction set here (ATEN_CPU_CAPABILITY={cap})"
                        if cap
                        else "Inductor has no vector instruction set on this CPU"
                    ) + " and its portable C++ for these kernels does not build"
            except Exception:  # noqa: BLE001 -- private API moved: let compilation try
                why = None
        _UNAVAILABLE[device_type] = why
    return _UNAVAILABLE[device_type]


def kernel_unavailable(mode: str, device: str = "cpu") -> str | None:
    """Why kernel ``mode`` cannot run on ``device`` (None: it can). Checked before a run
    starts: ``native`` needs its C++ library on the CPU (built once, cached), ``compiled``
    needs Inductor to build there; the other modes always run."""
    check_kernel_mode(mode)
    fuse_min_numel()  # a malformed ACTLAB_FUSE_MIN_NUMEL fails here, before any run starts
    dev = torch.device(device).type
    if mode == "native" and dev == "cpu":
        from actlab.activations import _native

        if not _native.available():
            return f"the native kernels cannot be built here: {_native.unavailable_reason()}"
    if mode == "compiled":
        return compile_unavailable(dev)
    return None


def _separate_inductor_cache() -> None:
    """One Inductor cache per forced ATen capability (see the module docstring). Mirrors
    torch's default location (tempdir/torchinductor_<user>) without importing Inductor."""
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if not cap or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 -- no user name: torch uses the uid
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    safe_user = "".join("_" if ch in '\\/:*?"<>|' else ch for ch in user)
    safe_cap = "".join(ch for ch in cap if ch.isalnum())
    where = os.path.join(tempfile.gettempdir(), f"torchinductor_{safe_user}-{safe_cap}")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = where
    log.info("ATEN_CPU_CAPABILITY=%s: Inductor cache %s", cap, where)


_separate_inductor_cache()  # at import: before torch sets the variable to its shared default


def _first_error(e: BaseException) -> str:
    """The first line of an exception that says something (compilers bury it)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [type(e).__name__])[0][:200]


class _LeanFunction(torch.autograd.Function):
    """Saves only x and the scalar parameters; backward is the kernel's hand-derived bwd."""

    @staticmethod
    def forward(
        ctx: Any, kernel: ElementwiseKernel, path: str, x: Tensor, *theta: Tensor
    ) -> Tensor:  # type: ignore[override]
        ctx.kernel = kernel
        ctx.path = path
        ctx.save_for_backward(x, *theta)
        fwd = kernel.compiled_fwd() if path == "compiled" else kernel.fwd
        return fwd(x, *theta)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, *theta = ctx.saved_tensors
        kernel: ElementwiseKernel = ctx.kernel
        grads = None
        if ctx.path == "compiled":
            grads = kernel._run_compiled(lambda: kernel.compiled_bwd()(x, g, *theta), x, "auto")
        if grads is None:
            grads = kernel.bwd(x, g, *theta)
        gx, gtheta = grads[0], grads[1:]
        out: list[Tensor | None] = [None, None, gx if ctx.needs_input_grad[2] else None]
        for i in range(len(theta)):  # bwd may return grads for a prefix of θ (constants last)
            gt = gtheta[i] if i < len(gtheta) else None
            if gt is not None and ctx.needs_input_grad[3 + i]:
                out.append(gt.reshape(theta[i].shape).to(theta[i].dtype))
            else:
                out.append(None)
        return tuple(out)


class ElementwiseKernel:
    """A composite elementwise activation with a lean and a fused path (see module doc)."""

    def __init__(
        self,
        name: str,
        fwd: Callable[..., Tensor],
        bwd: Callable[..., tuple[Tensor, ...]],
        native: str | None = None,
    ) -> None:
        self.name = name
        self.native = native  # name of a kernel of actlab.activations._native, if any
        self._native_ops: Any = None
        # Dynamo keeps one compile cache (with a small recompile limit) per code object; kernels
        # built from one factory (eafo's bases) would share it, so each gets its own code object.
        self.fwd = _own_code(fwd, f"{name}_fwd")
        self.bwd = _own_code(bwd, f"{name}_bwd")
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._broken: set[str] = set()  # device types on which compilation failed

    # compiled functions are built lazily: nothing is compiled at import time. dynamic=None
    # (automatic dynamic shapes), not True: a static graph lets Inductor fuse the bwd's
    # parameter sums with its pointwise part (CRReLU, 16M elements on an H200: 4 kernels and
    # 0.088 ms of device time per fwd+bwd instead of 5 and 0.129 ms; faster on the CPU too,
    # benchmarks/fused_variants.py), and a second size still gets one dynamic graph.
    def compiled_fwd(self) -> Callable[..., Tensor]:
        if "fwd" not in self._compiled:
            _separate_inductor_cache()
            self._compiled["fwd"] = torch.compile(self.fwd, dynamic=None, fullgraph=True)
        return self._compiled["fwd"]

    def compiled_bwd(self) -> Callable[..., tuple[Tensor, ...]]:
        if "bwd" not in self._compiled:
            _separate_inductor_cache()
            self._compiled["bwd"] = torch.compile(self.bwd, dynamic=None, fullgraph=True)
        return self._compiled["bwd"]

    def native_ops(self) -> Any:
        """The :class:`~actlab.activations._native.NativeOps` of this kernel (cached);
        RuntimeError when it has none or the library cannot be built."""
        if self._native_ops is None:
            from actlab.activations import _native

            ops = _native.native_ops(self.native) if self.native else None
            if ops is None:
                why = (
                    _native.unavailable_reason()
                    if self.native
                    else "this kernel has no native version"
                )
                raise RuntimeError(f"native kernel for {self.name} is unavailable: {why}")
            self._native_ops = ops
        return self._native_ops

    def _want_native(self, mode: str, x: Tensor) -> bool:
        if (
            self.native is None
            or mode not in ("auto", "native")
            or x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.float64)
            or torch.jit.is_scripting()
        ):
            return False
        if mode == "native" or self._native_ops is not None:
            return True  # native_ops() raises with the reason if the library is unavailable
        from actlab.activations import _native

        return _native.available()

    def _want_compiled(self, mode: str, x: Tensor) -> bool:
        dev = x.device.type
        if mode != "compiled" and not (
            dev not in self._broken
            and dev in ("cpu", "cuda")
            and x.numel() >= fuse_min_numel()
            and not torch.jit.is_scripting()
        ):
            return False
        why = compile_unavailable(dev)
        if why is None:
            return True
        if mode == "compiled":
            raise RuntimeError(
                f"actlab: kernel mode 'compiled' is unavailable on {dev}: {why}; "
                "use ACTLAB_KERNEL=auto (eager or native there) or eager"
            )
        if dev not in _warned_unavailable:
            _warned_unavailable.add(dev)
            warnings.warn(
                f"actlab: fused kernels use the eager lean path on {dev}: {why}. "
                "Set ACTLAB_KERNEL=eager to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )
        return False

    def __call__(self, x: Tensor, *theta: Tensor) -> Tensor:
        mode = get_kernel_mode()
        if mode == "reference" or torch.compiler.is_compiling():
            return self.fwd(x, *theta)
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(t.requires_grad for t in theta)
        )
        if self._want_native(mode, x):
            ops = self.native_ops()
            return ops.op(x, *theta) if needs_grad else ops.fwd(x, *theta)
        compiled = mode != "eager" and self._want_compiled(mode, x)
        if compiled:
            # one flat layout => one compiled graph per dtype/device, whatever the input's rank
            flat = x.reshape(-1)
            if needs_grad:
                thunk = lambda: _LeanFunction.apply(self, "compiled", flat, *theta)  # noqa: E731
            else:
                thunk = lambda: self.compiled_fwd()(flat, *theta)  # noqa: E731
            out = self._run_compiled(thunk, x, mode)
            if out is not None:
                return out.view(x.shape)
        if not needs_grad:
            return self.fwd(x, *theta)
        return _LeanFunction.apply(self, "eager", x, *theta)

    def _run_compiled(self, thunk: Callable[[], Any], x: Tensor, mode: str) -> Any:
        try:
            return thunk()
        except Exception as e:  # compiler missing or failing: degrade, never crash
            if mode == "compiled":
                raise RuntimeError(
                    f"actlab: fused kernel for {self.name} failed to compile on {x.device.type} "
                    f"({type(e).__name__}: {_first_error(e)}); use ACTLAB_KERNEL=auto or eager"
                ) from e
            self._broken.add(x.device.type)
            warnings.warn(
                f"actlab: fused kernel for {self.name} failed to compile on {x.device.type} "
                f"({type(e).__name__}: {_first_error(e)}); using the eager lean path. "
                "Set ACTLAB_KERNEL=eager to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
