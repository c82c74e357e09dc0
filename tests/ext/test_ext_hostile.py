"""Hostile settings and descriptions for the native-extension builder: one line, never a crash.

Every case is decided before any compiler runs: the builder raises (``load``) or returns None
(``try_load``) with a one-line reason naming the problem, warns at most once, and the
prebuild command (``python -m actlab._ext``) exits 1 or 2 with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import actlab._ext as ext_api
from actlab._ext import Extension, NativeUnavailable, _builder
from actlab.activations import _native


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_builder, "_results", {})
    monkeypatch.setenv("ACTLAB_CACHE", str(tmp_path / "cache"))
    for var in ("ACTLAB_NATIVE", "ACTLAB_NATIVE_ISA"):
        monkeypatch.delenv(var, raising=False)
    # a tripwire: no case may reach the compiler
    monkeypatch.setattr(_builder, "_compile", lambda *a: pytest.fail("compiler reached"))


def _unavailable(ext: Extension) -> str:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with pytest.raises(NativeUnavailable) as e:
            ext_api.load(ext)
        assert ext_api.try_load(ext) is None
    assert len(rec) <= 1  # warned at most once
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


ISA_CASES = ["sse9", "avx-512", "AVX2;rm -rf /", "x" * 10_000, "AVX512 AVX2", "\x00"]


@pytest.mark.parametrize("value", ISA_CASES)
def test_bad_isa_override_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_NATIVE_ISA", value.replace("\x00", "\\0"))
    with pytest.raises(ValueError, match="expected one of AVX512, AVX2, DEFAULT") as e:
        ext_api.capability()
    assert "\n" not in str(e.value)
    assert "expected one of AVX512, AVX2, DEFAULT" in _unavailable(_native.KERNELS)


@pytest.mark.parametrize("value", ["maybe", "2", "enable", "-1"])
def test_unknown_native_switch_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_NATIVE", value)
    assert f"ACTLAB_NATIVE={value!r}: expected 1" in _unavailable(_native.KERNELS)


@pytest.mark.parametrize("value", ["0", "off", " FALSE ", "no"])
def test_native_switch_off_spellings(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_NATIVE", value)
    assert ext_api.disabled()
    assert "disabled by ACTLAB_NATIVE=0" in _unavailable(_native.KERNELS)


def test_cache_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setenv("ACTLAB_CACHE", str(tmp_path / "afile"))
    assert "Not a directory" in _unavailable(_native.KERNELS)


@pytest.mark.parametrize(
    "ext",
    [
        Extension(name="t", sources=("/nonexistent/t.cpp",), namespace="t", ops=("f",)),
        Extension(
            name="t",
            sources=("csrc/nope.cpp",),
            namespace="t",
            ops=("f",),
            package="actlab.activations",
        ),
        Extension(name="t", sources=("x.cpp",), namespace="t", ops=("f",), package="no_such_pkg"),
        Extension(
            name="t", sources=(__file__,), headers=("/nonexistent.h",), namespace="t", ops=("f",)
        ),
    ],
    ids=["missing-file", "missing-resource", "missing-package", "missing-header"],
)
def test_missing_sources_are_one_line(ext: Extension) -> None:
    msg = _unavailable(ext)
    assert "Error" in msg  # FileNotFoundError / ModuleNotFoundError, named


def test_undeclared_op_is_one_line_key_error() -> None:
    ext = Extension(name="t", sources=(__file__,), namespace="t", ops=("f",))
    lib = _builder.NativeLibrary(ext, Path("t.so"), "DEFAULT", "k", built=False)
    with pytest.raises(KeyError, match="declares no op 'g'; have f"):
        lib.op("g")


def test_prebuild_command_misuse_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from actlab._ext.__main__ import main

    for args, words in [
        ([], "usage: python -m actlab._ext MODULE"),
        (["--all"], "usage:"),
        (["no_such_module_xyz"], "cannot import no_such_module_xyz"),
        (["actlab._ext"], "declares no Extension"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, (args, err)


def test_prebuild_command_reports_an_unavailable_extension_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "actlab._ext", "actlab.activations._native"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ACTLAB_NATIVE": "0"},
    )
    assert r.returncode == 1 and r.stderr == ""
    assert r.stdout.strip() == "actlab_native: unavailable: disabled by ACTLAB_NATIVE=0"
