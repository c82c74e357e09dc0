"""The one native-extension builder: C++ sources -> a cached shared library of ``torch.ops``.

A client declares an :class:`Extension` and asks for it when a kernel first runs::

    KERNELS = Extension(
        name="actlab_native", package="actlab.activations", sources=("csrc/native.cpp",),
        namespace="actlab_native", ops=("crrelu", "crrelu_fwd", "crrelu_bwd"),
        title="native CPU kernels", fallback="CRReLU uses its compiled / eager paths",
    )
    lib = try_load(KERNELS)       # NativeLibrary, or None (warned once) when unavailable
    lib.op("crrelu")(x, eps)      # = torch.ops.actlab_native.crrelu
    load(KERNELS)                 # the same, raising NativeUnavailable (one line) instead

Design (each point is tested in ``tests/ext``):

- **ISA.** The library is compiled for the CPU capability torch's own kernels use (AVX512,
  AVX2 or DEFAULT = portable code; ``ATEN_CPU_CAPABILITY`` lowers it), with the matching
  ``-m`` flags and ``CPU_CAPABILITY_*`` macros, so ``at::vec::Vectorized`` and ``#ifdef
  CPU_CAPABILITY_AVX512`` paths follow it. ``ACTLAB_NATIVE_ISA=AVX2`` (or ``DEFAULT``) builds
  for a lesser set, e.g. for a cache shared by mixed machines; any other value is a one-line
  ``ValueError``.
- **Shared headers.** ``actlab/_ext/csrc`` is on every extension's include path
  (``native_isa.h``: the ``isa()`` op every library registers) and its headers are hashed into
  every key.
- **Cache.** ``$ACTLAB_CACHE/native/<key>/`` (default ``~/.cache/actlab``), ``key`` = hash of
  the sources and headers, the torch version, the ISA, the compiler flags and the Python ABI;
  variants (AVX2 / DEFAULT builds, other torch versions) live side by side.
- **Cached load.** A library already in its directory is loaded with
  ``torch.ops.load_library`` directly (~3 ms; neither ``torch.utils.cpp_extension`` nor ninja
  is imported or run). One that cannot be loaded (truncated, wrong platform) is removed and
  rebuilt.
- **Build.** ``torch.utils.cpp_extension.load`` (ninja; the ``ninja`` wheel's binary is put
  on PATH when the environment is not activated), ``-O3`` and, when ``openmp``, ``-fopenmp``
  (ATen's ``at::parallel_for`` runs in parallel only then). The first build says so on stderr.
- **Lock.** Build and cached load run under an ``flock`` on the build directory: concurrent
  processes wait (and say so) instead of building twice, and the lock dies with its process,
  so a build killed midway leaves no lock behind (torch's own plain-file lock, which would
  block every later build, is removed under it).
- **Fallback.** The first :func:`load` in a process decides: a failure (no compiler, a compile
  error, missing ops) warns once, naming the compiler's first ``error:`` line, and every later
  call answers at once with the same reason. ``ACTLAB_NATIVE=0`` disables every extension
  without a warning (values other than 0/1/true/false/yes/no/on/off are a one-line error).
- **Prebuild.** ``python -m actlab._ext MODULE...`` builds the extensions declared in those
  modules (``scripts/bootstrap.sh`` does so for the activation kernels).

This package imports only torch (it sits at the bottom of the layers); clients are
``actlab.activations._native`` and the later kernel packages.
"""

from __future__ import annotations

from actlab._ext._builder import (
    ISAS,
    Extension,
    NativeLibrary,
    NativeUnavailable,
    build_dir,
    cache_root,
    capability,
    compiled_isa,
    disabled,
    env_switch,
    key,
    load,
    loaded,
    try_load,
    unavailable_reason,
)

__all__ = [
    "ISAS",
    "Extension",
    "NativeLibrary",
    "NativeUnavailable",
    "build_dir",
    "cache_root",
    "capability",
    "compiled_isa",
    "disabled",
    "env_switch",
    "key",
    "load",
    "loaded",
    "try_load",
    "unavailable_reason",
]
