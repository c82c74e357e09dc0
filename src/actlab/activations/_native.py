"""Native CPU kernels: C++ with ATen's vectorised math, built once on first use.

The fused paths of CRReLU and eafo(gelu) on CPU. Each kernel reads x (and, backward, the
incoming gradient) once and writes one tensor; the ε gradient is reduced in the same pass.
The differentiable ops ``torch.ops.actlab_native.crrelu`` / ``eafo_gelu`` save only their
input and run forward and backward entirely in C++ (no Python autograd.Function per call).
Formulas and numerical notes are in ``csrc/native.cpp``.

Why not only torch.compile: on the CPUs these were measured on, Inductor's generated
kernels for these formulas ran 2-3x slower than ATen's own elementwise kernels (its ``exp``
is Sleef's 1-ulp version, and every compiled call pays a Dynamo entry), which left CRReLU at
~1.3-1.7x GELU on transformer-sized tensors (``benchmarks/bench_activations.py``).

Build: this module only declares the :class:`~actlab._ext.Extension` (:data:`KERNELS`);
:mod:`actlab._ext` compiles it for the CPU capability torch reports (AVX512, AVX2 or portable
code; ``ACTLAB_NATIVE_ISA`` lowers it) into ``$ACTLAB_CACHE/native/<key>``, loads the cached
library directly in later processes (~3 ms), serialises concurrent builds with a lock and,
when it cannot build (no C++ compiler, unusual platform), warns once: the kernels then fall
back to their compiled / eager paths. ``ACTLAB_NATIVE=0`` disables it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from actlab._ext import Extension, try_load
from actlab._ext import build_dir as _ext_build_dir
from actlab._ext import unavailable_reason as _ext_reason

__all__ = ["KERNELS", "NativeOps", "available", "native_ops", "unavailable_reason", "build_dir"]

_KERNELS = ("crrelu", "eafo_gelu")
KERNELS = Extension(
    name="actlab_native",
    package="actlab.activations",
    sources=("csrc/native.cpp",),
    namespace="actlab_native",
    ops=tuple(k + suffix for k in _KERNELS for suffix in ("_fwd", "_bwd", "")),
    openmp=True,
    title="native CPU kernels",
    fallback="CRReLU and eafo(gelu) use their compiled / eager paths",
)


def available() -> bool:
    """Whether the native library is loaded (building it on the first call)."""
    return try_load(KERNELS) is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True or was not asked yet)."""
    return _ext_reason(KERNELS)


def build_dir() -> Path:
    """Where the library for this source / torch / CPU capability is (or will be) built."""
    return _ext_build_dir(KERNELS)


class NativeOps(NamedTuple):
    """The ops of one native kernel: plain forward, plain backward, and the differentiable op
    (forward that saves the input; its backward, in C++, calls ``bwd``)."""

    fwd: Callable[..., Any]
    bwd: Callable[..., Any]
    op: Callable[..., Any]


def native_ops(name: str) -> NativeOps | None:
    """The ops of native kernel ``name`` (e.g. ``"crrelu"``), or None when unavailable."""
    if name not in _KERNELS:
        raise KeyError(f"no native kernel {name!r}; have {', '.join(_KERNELS)}")
    lib = try_load(KERNELS)
    if lib is None:
        return None
    return NativeOps(lib.op(f"{name}_fwd"), lib.op(f"{name}_bwd"), lib.op(name))
