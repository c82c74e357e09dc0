"""The native-extension builder (actlab._ext) on a tiny extension of its own.

Real builds run in child processes (a library, once loaded, cannot be unloaded, and its
``torch.ops`` namespace can be registered only once per process). One real build (~15 s on
two cores, shared by two processes started together) plus a cached reload are in the default
suite; the repair of a corrupt library is ``slow``. Everything else needs no compile, or only
a compile that fails on its first line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import actlab._ext as ext_api
from actlab._ext import Extension, NativeUnavailable, _builder
from actlab.activations import _native

ADD_ONE = """\
#include <ATen/core/Tensor.h>
#include <torch/library.h>

at::Tensor add_one(const at::Tensor& x) { return x.add(1); }

TORCH_LIBRARY(actlab_test_ext, m) { m.def("add_one(Tensor x) -> Tensor", add_one); }
"""


def _ext(src: Path, **kw: Any) -> Extension:
    kw = {"openmp": False, "title": "test extension", "fallback": "nothing else runs", **kw}
    return Extension(
        name="actlab_test_ext",
        sources=(str(src),),
        namespace="actlab_test_ext",
        ops=("add_one",),
        **kw,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "add_one.cpp"
    src.write_text(ADD_ONE)
    return src


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test: its own cache, its own per-process memo, the CPU's own ISA."""
    monkeypatch.setattr(_builder, "_results", {})
    monkeypatch.setenv("ACTLAB_CACHE", str(tmp_path / "cache"))
    for var in ("ACTLAB_NATIVE", "ACTLAB_NATIVE_ISA"):
        monkeypatch.delenv(var, raising=False)


CHILD = """
import json, os, sys, torch
from actlab._ext import Extension, load
ext = Extension(name="actlab_test_ext", sources=(os.environ["SRC"],), namespace="actlab_test_ext",
                ops=("add_one",), openmp=False, title="test extension")
lib = load(ext)
print(json.dumps(dict(built=lib.built, path=str(lib.path), isa=lib.isa,
                      out=lib.op("add_one")(torch.zeros(3)).tolist(),
                      cpp_extension="torch.utils.cpp_extension" in sys.modules)))
"""


def _child(src: Path, cache: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SRC": str(src), "ACTLAB_CACHE": str(cache), **env},
    )


def _result(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    got["stderr"] = err
    return got


# ----------------------------------------------------------------------------- description, key
def test_extension_description_is_validated_in_one_line(source: Path) -> None:
    bad: list[dict[str, Any]] = [
        dict(name="../evil"),
        dict(namespace="a b"),
        dict(sources="x.cpp"),
        dict(sources=()),
        dict(ops=("add one",)),
        dict(ops=["add_one"]),
        dict(extra_cflags=("",)),
    ]
    for change in bad:
        kw: dict[str, Any] = dict(name="t", sources=(str(source),), namespace="t", ops=("f",))
        kw.update(change)
        with pytest.raises(ValueError) as e:
            Extension(**kw)
        assert "\n" not in str(e.value), change


def test_cache_key_follows_sources_headers_flags_and_isa(source: Path, tmp_path: Path) -> None:
    header = tmp_path / "common.h"
    header.write_text("// v1\n")
    ext = _ext(source, headers=(str(header),))
    k = ext_api.key(ext)
    assert k == ext_api.key(_ext(source, headers=(str(header),))) and len(k) == 16
    assert ext_api.build_dir(ext) == tmp_path / "cache" / "native" / k
    header.write_text("// v2\n")  # a header the source includes
    k_header = ext_api.key(ext)
    source.write_text(ADD_ONE + "// changed\n")  # any change to a source
    k_source = ext_api.key(ext)
    isas = [ext_api.key(ext, isa) for isa in ("AVX512", "AVX2", "DEFAULT")]  # builds coexist
    assert k_source in isas  # the default is the CPU's (or ATEN_CPU_CAPABILITY's) capability
    variants = {
        k,
        k_header,
        *isas,
        ext_api.key(_ext(source, headers=(str(header),), extra_cflags=("-DX=1",))),
        ext_api.key(_ext(source, headers=(str(header),), openmp=True)),
    }
    assert len(variants) == 7


def test_activation_kernels_are_one_declared_extension() -> None:
    k = _native.KERNELS
    assert k.package == "actlab.activations" and all(p.is_file() for p in k.files())
    assert {"crrelu", "crrelu_fwd", "crrelu_bwd", "eafo_gelu"} <= set(k.ops)
    assert _native.build_dir() == ext_api.build_dir(k)
    assert "-fopenmp" in _builder.cflags(k)


def test_isa_is_the_cpu_capability_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ext_api.capability() == str(torch.backends.cpu.get_cpu_capability())
    monkeypatch.setenv("ACTLAB_NATIVE_ISA", " avx2 ")
    assert ext_api.capability() == "AVX2"
    assert "-DCPU_CAPABILITY_AVX2" in _builder.cflags(_native.KERNELS)
    monkeypatch.setenv("ACTLAB_NATIVE_ISA", "DEFAULT")
    assert not [f for f in _builder.cflags(_native.KERNELS) if f.startswith("-m")]


# ----------------------------------------------------------------------------- fallback
def test_disabled_by_environment_without_a_warning(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTLAB_NATIVE", "0")
    ext = _ext(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NativeUnavailable, match="disabled by ACTLAB_NATIVE=0"):
            ext_api.load(ext)
        assert ext_api.try_load(ext) is None
    assert ext_api.unavailable_reason(ext) == "disabled by ACTLAB_NATIVE=0"
    assert not (Path(os.environ["ACTLAB_CACHE"])).exists()  # nothing built, nothing written


def test_a_compile_error_warns_once_naming_the_first_compiler_error(tmp_path: Path) -> None:
    src = tmp_path / "broken.cpp"
    src.write_text("int f() { return undeclared_thing; }\nint g() { return also_missing; }\n")
    ext = _ext(src)
    with pytest.warns(RuntimeWarning) as rec:
        with pytest.raises(NativeUnavailable) as e:
            ext_api.load(ext)
        for _ in range(3):  # decided once per process: no second build, no second warning
            assert ext_api.try_load(ext) is None
    msg = str(e.value)
    assert "\n" not in msg and "undeclared_thing" in msg and "error:" in msg
    assert "also_missing" not in msg  # the first error, not the whole log
    assert len(rec) == 1 and "test extension could not be built" in str(rec[0].message)
    assert "nothing else runs" in str(rec[0].message)
    assert ext_api.unavailable_reason(ext) == e.value.reason
    assert isinstance(e.value, ImportError)  # the CLI prints it as one line


def test_missing_ops_make_the_library_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = _ext(tmp_path / "x.cpp")
    monkeypatch.setattr(
        _builder,
        "build",
        lambda e: _builder.NativeLibrary(e, tmp_path / "x.so", "DEFAULT", "k", built=True),
    )
    with pytest.warns(RuntimeWarning), pytest.raises(NativeUnavailable, match=r"add_one"):
        ext_api.load(ext)


# ----------------------------------------------------------------------------- lock, ninja, cache
def test_a_stale_torch_build_lock_is_removed(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text("left by a killed build")
    with _builder.build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()


HOLD = """
import sys, time
from pathlib import Path
from actlab._ext._builder import build_lock
with build_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_builder_waits_for_the_lock_and_a_killed_one_leaves_none(tmp_path: Path) -> None:
    import fcntl

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with open(tmp_path / "actlab-build.lock", "a+") as fh:  # taken: a builder would wait
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (tmp_path / "lock").write_text("torch's lock of the killed build")
    finally:
        holder.kill()
        holder.wait(timeout=60)
    waited: list[int] = []
    with _builder.build_lock(tmp_path, on_wait=lambda: waited.append(1)):
        assert not (tmp_path / "lock").exists()
    assert waited == []  # the killed holder's lock died with it


def test_a_read_only_cache_is_used_without_the_lock(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = _ext(source)
    where = ext_api.build_dir(ext)
    where.mkdir(parents=True)
    so = _builder.library_path(ext, where)
    so.write_bytes(b"\x7fELF")

    def read_only(path: object, mode: str = "r", *a: object, **kw: object) -> object:
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(_builder, "open", read_only, raising=False)
    loaded: list[str] = []
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loaded.append(path))
    assert not _builder.build(ext).built and loaded == [str(so)]


def test_ninja_from_the_wheel_is_put_on_path_for_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    ninja = pytest.importorskip("ninja")
    monkeypatch.setattr(_builder.shutil, "which", lambda name: None)
    before = os.environ["PATH"]
    with _builder.ninja_on_path():
        assert os.environ["PATH"].split(os.pathsep)[0] == str(ninja.BIN_DIR)
    assert os.environ["PATH"] == before


def test_a_cached_library_loads_without_a_build_and_a_broken_one_is_rebuilt(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = _ext(source)
    where = ext_api.build_dir(ext)
    where.mkdir(parents=True)
    so = _builder.library_path(ext, where)
    compiled: list[bool] = []  # whether the broken library was gone when the build started

    def fake_compile(e: Extension, w: Path, isa: str) -> Path:
        compiled.append(so.exists())
        return so

    monkeypatch.setattr(_builder, "_compile", fake_compile)
    loaded: list[str] = []
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loaded.append(path))
    so.write_bytes(b"\x7fELF")
    lib = _builder.build(ext)  # cached: loaded directly, no build
    assert loaded == [str(so)] and compiled == [] and not lib.built and lib.key == where.name

    def broken(path: str) -> None:
        raise OSError(f"{path}: file too short")

    monkeypatch.setattr(torch.ops, "load_library", broken)
    assert _builder.build(ext).built  # unusable leftover: removed (else ninja keeps it), rebuilt
    assert compiled == [False]


def test_a_source_edited_during_the_build_is_not_cached(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is taken before compiling; an edit while the compiler runs would leave the old
    code cached under the new sources' key, so the library is removed and the build fails."""
    ext = _ext(source)
    where = ext_api.build_dir(ext)
    so = _builder.library_path(ext, where)

    def fake_compile(e: Extension, w: Path, isa: str) -> Path:
        w.mkdir(parents=True, exist_ok=True)
        so.write_bytes(b"\x7fELF")
        source.write_text(ADD_ONE + "// edited\n")  # the edit lands mid-build
        return so

    monkeypatch.setattr(_builder, "_compile", fake_compile)
    with pytest.raises(RuntimeError, match="sources changed while it was being built"):
        _builder.build(ext)
    assert not so.exists()


# ----------------------------------------------------------------------------- real builds
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two processes started together on an empty cache: one builds, the other waits."""
    root = tmp_path_factory.mktemp("real")
    src = root / "add_one.cpp"
    src.write_text(ADD_ONE)
    procs = [_child(src, root / "cache") for _ in range(2)]
    return dict(src=src, cache=root / "cache", results=[_result(p) for p in procs])


def test_two_processes_build_once_and_both_load_it(built: dict[str, Any]) -> None:
    a, b = built["results"]
    assert sorted([a["built"], b["built"]]) == [False, True]  # one compile, not two
    assert a["path"] == b["path"] and a["out"] == b["out"] == [1.0, 1.0, 1.0]
    assert a["isa"] == str(torch.backends.cpu.get_cpu_capability())
    builder = a if a["built"] else b
    assert "building test extension once" in builder["stderr"]


def test_a_cached_library_is_loaded_without_compiler_or_ninja(built: dict[str, Any]) -> None:
    so = Path(built["results"][0]["path"])
    before = so.stat().st_mtime_ns
    got = _result(_child(built["src"], built["cache"]))
    assert not got["built"] and got["out"] == [1.0, 1.0, 1.0]
    assert not got["cpp_extension"]  # torch.utils.cpp_extension never imported
    assert so.stat().st_mtime_ns == before and got["stderr"] == ""


@pytest.mark.slow
def test_a_corrupt_cached_library_is_rebuilt(built: dict[str, Any]) -> None:
    so = Path(built["results"][0]["path"])
    so.write_bytes(so.read_bytes()[:100])  # truncated, as by a full disk
    got = _result(_child(built["src"], built["cache"]))
    assert got["built"] and got["out"] == [1.0, 1.0, 1.0]
    assert "rebuilding test extension" in got["stderr"]
    assert not _result(_child(built["src"], built["cache"]))["built"]  # and cached again
