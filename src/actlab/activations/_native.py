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

Build: :func:`torch.utils.cpp_extension.load` compiles ``csrc/native.cpp`` for the CPU
capability torch reports (AVX512, AVX2, or portable code) into
``$ACTLAB_CACHE/native/<key>`` (default ``~/.cache/actlab``; ``key`` hashes the source, the
torch version and the flags), and the library registers ``torch.ops.actlab_native``. The
first build takes ~30 s on two cores and says so on stderr; later processes load the
cached library directly (~3 ms, no compiler involved). Concurrent processes wait on a lock
instead of building twice, and a process killed mid-build leaves no lock behind.
``ACTLAB_NATIVE=0`` disables it; ``ACTLAB_NATIVE_ISA=AVX2`` (or ``DEFAULT``) builds for a
lesser instruction set than the CPU's, e.g. for a cache shared by mixed machines. A failed
build (no C++ compiler, unusual platform) warns once and the kernels fall back to their
compiled / eager paths; nothing else changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch

__all__ = ["NativeOps", "available", "native_ops", "unavailable_reason", "build_dir"]

log = logging.getLogger("actlab.kernels")

_SOURCE = Path(__file__).with_name("csrc") / "native.cpp"
_OPS = ("crrelu", "eafo_gelu")
_lock = threading.Lock()
_state: dict[str, Any] = {}  # "ok": bool, "reason": str

_ISA_FLAGS: dict[str, list[str]] = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
}


def _capability() -> str:
    """The instruction set to build for: ``ACTLAB_NATIVE_ISA`` (AVX512, AVX2 or DEFAULT) if set,
    else the capability torch's own kernels use on this CPU."""
    forced = os.environ.get("ACTLAB_NATIVE_ISA", "").strip().upper()
    if forced:
        if forced not in (*_ISA_FLAGS, "DEFAULT"):
            raise ValueError(f"ACTLAB_NATIVE_ISA={forced!r}: expected one of AVX512, AVX2, DEFAULT")
        return forced
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 -- very old torch: portable code
        return "DEFAULT"


def _flags() -> list[str]:
    return ["-O3", "-fopenmp", *_ISA_FLAGS.get(_capability(), [])]


def _key() -> str:
    h = hashlib.sha256(_SOURCE.read_bytes())
    h.update(f"{torch.__version__}|{_capability()}|{' '.join(_flags())}|{sys.version_info[:2]}".encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    """Where the library for this source / torch / CPU capability is (or will be) built."""
    root = Path(os.environ.get("ACTLAB_CACHE") or "~/.cache/actlab").expanduser()
    return root / "native" / _key()


def _disabled() -> bool:
    return os.environ.get("ACTLAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _build() -> None:
    where = build_dir()
    where.mkdir(parents=True, exist_ok=True)
    name = f"actlab_native_{where.name}"
    so = where / f"{name}.so"
    if so.exists():  # built from this very source (the directory is keyed by its hash)
        try:
            with _build_lock(where):  # not while another process is still linking it
                torch.ops.load_library(str(so))
            return
        except OSError:  # an unusable leftover: rebuild below
            pass
    else:
        print(f"actlab: building native CPU kernels once ({_capability()}, ~30 s) in {where}",
              file=sys.stderr, flush=True)
    from torch.utils.cpp_extension import load  # slow to import: only when building

    with _build_lock(where), _ninja_on_path():
        load(name=name, sources=[str(_SOURCE)], extra_cflags=_flags(), extra_ldflags=["-fopenmp"],
             build_directory=str(where), is_python_module=False, verbose=False)


@contextlib.contextmanager
def _build_lock(where: Path) -> Iterator[None]:
    """An exclusive lock on the build directory that dies with its process.

    torch's own lock is a plain file: a process killed mid-build leaves it behind and every
    later build waits on it forever. Under this (flock) lock no other live process is
    building here, so such a leftover is stale and is removed.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock only
        yield
        return
    with open(where / "actlab-build.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            (where / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch finds ninja on PATH; the `ninja` wheel's binary is not there unless the virtual
    environment is activated, so put its directory in front for the duration of the build."""
    if shutil.which("ninja") is not None:
        yield
        return
    try:
        import ninja  # type: ignore[import-untyped]

        bin_dir = str(ninja.BIN_DIR)
    except Exception:  # noqa: BLE001 -- torch will say that ninja is missing
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = bin_dir + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _first_error(text: str) -> str:
    """The compiler's first 'error:' line if there is one, else the message's last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [""])[0 if errors else -1][:300]


def _ensure() -> bool:
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" in _state:
            return bool(_state["ok"])
        if _disabled():
            _state.update(ok=False, reason="disabled by ACTLAB_NATIVE=0")
            return False
        try:
            _build()
            for op in _OPS:  # the library registered every op it promises
                for suffix in ("_fwd", "_bwd", ""):
                    getattr(torch.ops.actlab_native, op + suffix)
        except Exception as e:  # noqa: BLE001 -- no compiler, odd platform: fall back, never crash
            reason = f"{type(e).__name__}: {_first_error(str(e))}"
            _state.update(ok=False, reason=reason)
            warnings.warn(
                f"actlab: native CPU kernels could not be built ({reason}); CRReLU and eafo(gelu) "
                "use their compiled / eager paths. Set ACTLAB_NATIVE=0 to skip the build.",
                RuntimeWarning, stacklevel=4,
            )
            return False
        _state.update(ok=True, reason="")
        log.info("native CPU kernels loaded from %s", build_dir())
        return True


def available() -> bool:
    """Whether the native library is loaded (building it on the first call)."""
    return _ensure()


def unavailable_reason() -> str:
    """Why :func:`available` is False ('' when it is True or was not asked yet)."""
    return str(_state.get("reason", ""))


class NativeOps(NamedTuple):
    """The ops of one native kernel: plain forward, plain backward, and the differentiable op
    (forward that saves the input; its backward, in C++, calls ``bwd``)."""

    fwd: Callable[..., Any]
    bwd: Callable[..., Any]
    op: Callable[..., Any]


def native_ops(name: str) -> NativeOps | None:
    """The ops of native kernel ``name`` (e.g. ``"crrelu"``), or None when unavailable."""
    if name not in _OPS:
        raise KeyError(f"no native kernel {name!r}; have {', '.join(_OPS)}")
    if not _ensure():
        return None
    ns = torch.ops.actlab_native
    return NativeOps(getattr(ns, f"{name}_fwd"), getattr(ns, f"{name}_bwd"), getattr(ns, name))
