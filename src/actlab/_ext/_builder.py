"""The native-extension builder: key, cache directory, lock, build, direct load, fallback.

See the package docstring (:mod:`actlab._ext`) for the design. Nothing here imports
``torch.utils.cpp_extension`` (slow: ~1 s) or runs ninja unless a library must be compiled.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("actlab.kernels")

ISAS = ("AVX512", "AVX2", "DEFAULT")
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "AVX512": (
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-DCPU_CAPABILITY_AVX512",
        "-DCPU_CAPABILITY=AVX512",
    ),
    "AVX2": ("-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"),
}  # DEFAULT (and any capability without an entry): portable code, no ISA flags
# Headers every extension can include (``#include "native_isa.h"``): this package's csrc folder
# is on every include path and its headers are hashed into every cache key.
SHARED_INCLUDE = Path(__file__).resolve().parent / "csrc"
_LIB_EXT = ".pyd" if os.name == "nt" else ".so"  # what torch.utils.cpp_extension links
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class NativeUnavailable(ImportError):
    """A native extension cannot be used here; the message is one line with the reason."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Extension:
    """What to build: C++ sources, the ``torch.ops`` namespace and ops they register, flags.

    ``sources`` (and ``headers``, hashed into the cache key but not compiled) are resources of
    ``package`` (shipped as package data, e.g. ``"csrc/native.cpp"``), or file paths when
    ``package`` is None. ``ops`` are checked after loading: a library that does not register
    every one is unusable. ``openmp`` compiles and links with ``-fopenmp`` (what ATen's
    ``at::parallel_for`` needs to run in parallel). ``title`` names it in messages (``"native
    CPU kernels"``) and ``fallback`` says what runs instead when it cannot be built.
    """

    name: str
    sources: tuple[str, ...]
    namespace: str
    ops: tuple[str, ...]
    package: str | None = None
    headers: tuple[str, ...] = ()
    extra_cflags: tuple[str, ...] = ()
    extra_ldflags: tuple[str, ...] = ()
    openmp: bool = True
    title: str = ""
    fallback: str = "the non-native code paths are used"
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("namespace", self.namespace)):
            if not isinstance(value, str) or not _IDENT.match(value):
                raise ValueError(f"Extension {what}={value!r}: expected a C identifier")
        for what, seq in (
            ("sources", self.sources),
            ("ops", self.ops),
            ("headers", self.headers),
            ("extra_cflags", self.extra_cflags),
            ("extra_ldflags", self.extra_ldflags),
        ):
            if isinstance(seq, str) or not isinstance(seq, tuple):
                raise ValueError(f"Extension {self.name}: {what} must be a tuple of strings")
            if not all(isinstance(s, str) and s for s in seq):
                raise ValueError(f"Extension {self.name}: {what} must hold non-empty strings")
        if not self.sources:
            raise ValueError(f"Extension {self.name}: give at least one C++ source")
        bad = [op for op in self.ops if not _IDENT.match(op)]
        if bad:
            raise ValueError(f"Extension {self.name}: op names must be identifiers, got {bad[0]!r}")
        object.__setattr__(self, "_hash", hash((self.name, self.sources, self.package)))

    def __hash__(self) -> int:  # looked up on every kernel call: cheap and cached
        return self._hash

    @property
    def label(self) -> str:
        return self.title or f"native extension {self.name}"

    def files(self, which: tuple[str, ...] | None = None) -> list[Path]:
        """The source (or given) files as paths on disk."""
        names = self.sources if which is None else which
        if self.package is None:
            return [Path(s).expanduser().resolve() for s in names]
        root = importlib.resources.files(self.package)
        return [Path(str(root.joinpath(s))) for s in names]


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded extension: its ``torch.ops`` namespace, where it is, and how it got there."""

    extension: Extension
    path: Path
    isa: str
    key: str
    built: bool  # compiled by this process (False: loaded from the cache)

    @property
    def ops(self) -> Any:
        """``torch.ops.<namespace>``."""
        return getattr(torch.ops, self.extension.namespace)

    def op(self, name: str) -> Callable[..., Any]:
        """The registered op ``name`` (one of the extension's declared ``ops``)."""
        if name not in self.extension.ops:
            raise KeyError(
                f"{self.extension.name} declares no op {name!r}; "
                f"have {', '.join(self.extension.ops)}"
            )
        return getattr(self.ops, name)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- settings
def _short(value: str) -> str:
    """An environment value quoted for a one-line message, at most ~40 characters."""
    return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."


def capability() -> str:
    """The instruction set to build for: ``ACTLAB_NATIVE_ISA`` (AVX512, AVX2 or DEFAULT) if set,
    else the capability torch's own kernels use on this CPU (``ATEN_CPU_CAPABILITY`` lowers
    it)."""
    forced = os.environ.get("ACTLAB_NATIVE_ISA", "").strip().upper()
    if forced:
        if forced not in ISAS:
            raise ValueError(
                f"ACTLAB_NATIVE_ISA={_short(forced)}: expected one of AVX512, AVX2, DEFAULT "
                "(or unset it to use the CPU's own)"
            )
        return forced
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 -- very old torch: portable code
        return "DEFAULT"


def env_switch(name: str, default: bool, on: str, off: str) -> bool:
    """An on/off environment switch: 1/true/yes/on or 0/false/no/off (any case), ``default``
    when unset or empty; anything else is a one-line ``ValueError`` that says what 1 (``on``)
    and 0 (``off``) mean."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw == "":
        return default
    raise ValueError(f"{name}={_short(raw)}: expected 1 ({on}) or 0 ({off})")


def disabled() -> bool:
    """Whether ``ACTLAB_NATIVE`` turns native extensions off (0/false/no/off)."""
    return not env_switch(
        "ACTLAB_NATIVE", True, on="build and use native kernels", off="never build them"
    )


def cflags(ext: Extension, isa: str | None = None) -> list[str]:
    """The compiler flags of ``ext`` for ``isa`` (default: :func:`capability`)."""
    isa = capability() if isa is None else isa
    return [
        "-O3",
        *(["-fopenmp"] if ext.openmp else []),
        *ISA_FLAGS.get(isa, ()),
        *ext.extra_cflags,
    ]


def key(ext: Extension, isa: str | None = None) -> str:
    """The cache key: a hash of the sources and headers, torch's version, the ISA, the compiler
    flags and the Python ABI (16 hex digits). Any change gives a new build directory, so
    variants (AVX2 and DEFAULT builds, two torch versions) coexist in one cache."""
    isa = capability() if isa is None else isa
    sources = [p.read_bytes() for p in ext.files()]
    h = hashlib.sha256(sources[0])
    shared = sorted(SHARED_INCLUDE.glob("*.h"))
    for blob in [*sources[1:], *(p.read_bytes() for p in [*ext.files(ext.headers), *shared])]:
        h.update(b"\0%d\0" % len(blob) + blob)
    abi = f"{sys.version_info[:2]}{getattr(sys, 'abiflags', '')}"
    meta = f"{torch.__version__}|{isa}|{' '.join(cflags(ext, isa))}|{abi}"
    if ext.extra_ldflags:
        meta += "|ld " + " ".join(ext.extra_ldflags)
    h.update(meta.encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$ACTLAB_CACHE/native`` (default ``~/.cache/actlab/native``)."""
    return Path(os.environ.get("ACTLAB_CACHE") or "~/.cache/actlab").expanduser() / "native"


def build_dir(ext: Extension, isa: str | None = None) -> Path:
    """Where the library of ``ext`` for this source / torch / ISA is (or will be) built."""
    return cache_root() / key(ext, isa)


def library_path(ext: Extension, where: Path) -> Path:
    return where / f"{ext.name}_{where.name}{_LIB_EXT}"


# ----------------------------------------------------------------------------- lock, ninja
@contextlib.contextmanager
def build_lock(where: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on a build directory that dies with its process.

    torch's own lock is a plain file: a process killed mid-build leaves it behind and every
    later build waits on it forever. Under this (flock) lock no other live process is building
    here, so such a leftover is stale and is removed. ``on_wait`` is called once if another
    process holds the lock (it is building): this one then waits for it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock only
        yield
        return
    try:
        fh = open(where / "actlab-build.lock", "a+")  # noqa: SIM115 -- closed below
    except OSError:  # a read-only cache (shared, installed): nobody can build there either
        yield
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            (where / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def ninja_on_path() -> Iterator[None]:
    """torch finds ninja on PATH; the ``ninja`` wheel's binary is not there unless the virtual
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


def first_error(text: str) -> str:
    """The compiler's first 'error:' line if there is one, else the message's last line."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [""])[0 if errors else -1][:300]


# ----------------------------------------------------------------------------- build / load
def _say(msg: str) -> None:
    print(f"actlab: {msg}", file=sys.stderr, flush=True)


def _compile(ext: Extension, where: Path, isa: str) -> Path:
    from torch.utils.cpp_extension import load as cpp_load  # slow to import: only to build

    t0 = time.perf_counter()
    with ninja_on_path():
        path = cpp_load(
            name=library_path(ext, where).stem,
            sources=[str(p) for p in ext.files()],
            extra_cflags=cflags(ext, isa),
            extra_include_paths=[str(SHARED_INCLUDE)],
            extra_ldflags=[*(["-fopenmp"] if ext.openmp else []), *ext.extra_ldflags],
            build_directory=str(where),
            is_python_module=False,
            verbose=False,
        )
    log.info("built %s in %.1f s", ext.name, time.perf_counter() - t0)
    return Path(str(path)) if path else library_path(ext, where)


def build(ext: Extension) -> NativeLibrary:
    """Load ``ext`` from the cache or compile it there; raises on any failure (no fallback).

    Cached: the library is loaded directly (``torch.ops.load_library``), under the lock so
    that it is never read half-linked. Missing: compiled under the lock; a process that finds
    the lock taken waits, then loads what the other one built. Unusable (truncated, wrong
    platform): removed and rebuilt. A source edited while it compiles: the library is removed
    (it may hold the old code under the new key) and the build fails.
    """
    isa = capability()
    where = build_dir(ext, isa)
    where.mkdir(parents=True, exist_ok=True)
    so = library_path(ext, where)
    with build_lock(
        where, on_wait=lambda: _say(f"waiting for another process building {ext.label} in {where}")
    ):
        if so.exists():  # built from these very sources: the directory is keyed by their hash
            try:
                torch.ops.load_library(str(so))
                return NativeLibrary(ext, so, isa, where.name, built=False)
            except OSError as e:
                _say(
                    f"rebuilding {ext.label} ({isa}): the cached library could not be loaded "
                    f"({first_error(str(e))})"
                )
                so.unlink(missing_ok=True)  # else ninja would find it up to date
        else:
            _say(f"building {ext.label} once ({isa}, ~30 s) in {where}")
        path = _compile(ext, where, isa)
        if key(ext, isa) != where.name:  # a source changed while it compiled: the library
            path.unlink(missing_ok=True)  # may hold the old code under the new sources' key
            raise RuntimeError(
                f"{ext.label}: its sources changed while it was being built; run again to "
                "build them"
            )
    return NativeLibrary(ext, path, isa, where.name, built=True)


_lock = threading.Lock()
_results: dict[Extension, NativeLibrary | NativeUnavailable] = {}


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside actlab (the user's line that asked)."""
    pkg = str(Path(__file__).resolve().parent.parent)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(pkg):
        frame, level = frame.f_back, level + 1
    return level


def _load_once(ext: Extension) -> NativeLibrary | NativeUnavailable:
    try:
        if disabled():
            return NativeUnavailable(
                f"{ext.label} unavailable: disabled by ACTLAB_NATIVE=0",
                "disabled by ACTLAB_NATIVE=0",
            )
        lib = build(ext)
        ns = lib.ops
        for op in ext.ops:  # the library registered every op it promises
            if not hasattr(ns, op):
                raise RuntimeError(
                    f"{lib.path.name} does not register torch.ops.{ext.namespace}.{op}"
                )
    except Exception as e:  # noqa: BLE001 -- no compiler, odd platform: fall back, never crash
        reason = f"{type(e).__name__}: {first_error(str(e))}"
        warnings.warn(
            f"actlab: {ext.label} could not be built ({reason}); {ext.fallback}. "
            "Set ACTLAB_NATIVE=0 to skip the build.",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )
        return NativeUnavailable(f"{ext.label} unavailable: {reason}", reason)
    log.info("%s loaded from %s", ext.label, lib.path)
    return lib


def load(ext: Extension) -> NativeLibrary:
    """The loaded library of ``ext``: from this process's memo, the cache, or a build.

    The first call in a process decides (a build failure warns once, naming the compiler's
    first error line); every later call returns the same library or raises the same
    :class:`NativeUnavailable` without trying again.
    """
    got = _results.get(ext)
    if got is None:
        with _lock:
            got = _results.get(ext)
            if got is None:
                got = _results[ext] = _load_once(ext)
    if isinstance(got, NativeUnavailable):
        raise NativeUnavailable(str(got), got.reason)
    return got


def try_load(ext: Extension) -> NativeLibrary | None:
    """:func:`load`, or None when the extension is unavailable (see :func:`unavailable_reason`)."""
    got = _results.get(ext)  # the fast answer on every kernel call after the first
    if isinstance(got, NativeLibrary):
        return got
    if got is not None:
        return None
    try:
        return load(ext)
    except NativeUnavailable:
        return None


def loaded(ext: Extension) -> NativeLibrary | None:
    """The library of ``ext`` if this process has loaded it, else None (never builds)."""
    got = _results.get(ext)
    return got if isinstance(got, NativeLibrary) else None


def unavailable_reason(ext: Extension) -> str:
    """Why ``ext`` could not be loaded in this process ('' when it was, or was not tried)."""
    got = _results.get(ext)
    return got.reason if isinstance(got, NativeUnavailable) else ""


def compiled_isa(ext: Extension) -> str:
    """The ISA ``ext``'s library was compiled for, from its ``isa`` op ('' when unavailable)."""
    lib = try_load(ext)
    return "" if lib is None else str(lib.op("isa")())
