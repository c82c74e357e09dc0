"""Census of hostile inputs: how does actlab answer bad input?

Each case runs in a fresh process and a fresh empty folder, with a time limit, and is
classified as one of

    clear       a one-line error naming the problem: exit 2 for the CLI, a ValueError/OSError
                (or subclass) with a single-line message for the API; nothing left behind
    traceback   a Python traceback or an exception of another type
    late        no traceback, but another exit status than 0 or 2: accepted, then failed later
    silent      accepted: exit 0 / no exception (the input should have been refused)
    unbounded   still running at the time limit
    leaky       a clear error, but files were left behind in the working folder

    python benchmarks/hostile_census.py                 # the whole table, counts at the end
    python benchmarks/hostile_census.py --only cli-     # the cases whose id starts so
    python benchmarks/hostile_census.py --src OTHER/src # census of another checkout

The cases are the inputs of issue 10 (hardening) and their neighbours. This is a census, not a
test: tests/ assert the same behaviours one by one.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# ------------------------------------------------------------------ files the cases use


def _text(p: Path) -> None:
    p.write_text("hello, this is not a database\n")


def _garbage(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 16)


def _corrupt_sqlite(p: Path) -> None:
    import sqlite3

    con = sqlite3.connect(p)
    con.execute("create table t (a integer)")
    con.executemany("insert into t values (?)", [(i,) for i in range(2000)])
    con.commit()
    con.close()
    data = bytearray(p.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    p.write_bytes(bytes(data))


def _idx_bomb(p: Path) -> None:
    # a valid-looking header promising 60000x28x28 bytes, then a highly compressible tail
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 0x08, 3, 60000, 28, 28))
        f.write(b"\0" * (8 << 20))


def _idx_overflow(p: Path) -> None:
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBIIII", 0, 0x08, 4, 2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1))


def _idx_float_labels(p: Path) -> None:
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 0x0D, 1, 4) + struct.pack(">4f", 0.5, float("nan"), 1, 2))


def _idx_empty(p: Path) -> None:
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 0x08, 3, 0, 28, 28))


def _idx_zero_images(p: Path) -> None:
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 0x08, 3, 5, 0, 0))


def _cifar_ndarray(p: Path) -> None:
    import numpy as np

    # a pickle that calls numpy.ndarray((3072*10,), uint8) -> uninitialised memory
    payload = (
        b"\x80\x02}q\x00(X\x04\x00\x00\x00dataq\x01cnumpy\nndarray\nq\x02"
        b"M\x00x\x85q\x03\x85q\x04Rq\x05X\x06\x00\x00\x00labelsq\x06]q\x07u."
    )
    del np
    p.write_bytes(payload)


def _cifar_os_system(p: Path) -> None:
    p.write_bytes(b"cos\nsystem\n(S'touch PWNED'\ntR.")


def _cifar_truncated(p: Path) -> None:
    import numpy as np

    blob = pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}, protocol=2)
    p.write_bytes(blob[: len(blob) // 2])


def _cifar_py3_protocol2(p: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, 8)],
        b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(8)],
    }
    p.write_bytes(pickle.dumps(batch, protocol=2))


FILES = {
    "text.db": _text,
    "garbage.db": _garbage,
    "corrupt.db": _corrupt_sqlite,
    "bomb-images-idx3-ubyte.gz": _idx_bomb,
    "overflow-images-idx3-ubyte.gz": _idx_overflow,
    "float-labels-idx1-ubyte.gz": _idx_float_labels,
    "empty-images-idx3-ubyte.gz": _idx_empty,
    "zero-images-idx3-ubyte.gz": _idx_zero_images,
    "cifar-ndarray": _cifar_ndarray,
    "cifar-system": _cifar_os_system,
    "cifar-truncated": _cifar_truncated,
    "cifar-py3p2": _cifar_py3_protocol2,
}


# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    id: str
    argv: list[str] | None = None  # CLI arguments after `actlab`
    code: str | None = None  # API snippet; it must raise for the input to count as refused
    files: tuple[str, ...] = ()  # "NAME" or "FILENAME=NAME" (NAME from FILES), made first
    timeout: float = 60.0
    ok: bool = False  # a legitimate input: success is the right answer
    setup: str = ""  # shell run in the folder first (chmod, mkdir, ...)
    expect: tuple[str, ...] = field(default_factory=tuple)  # words the error should contain
    exits: tuple[int, ...] = (2,)  # exit statuses of a clear refusal (1: a bounded search that
    # stopped with its reason, e.g. nothing in the space was trainable)


def _cli(id: str, *argv: str, **kw: object) -> Case:
    return Case(id=id, argv=list(argv), **kw)  # type: ignore[arg-type]


def _api(id: str, code: str, **kw: object) -> Case:
    return Case(id=id, code=textwrap.dedent(code), **kw)  # type: ignore[arg-type]


Q = ["--max-steps", "2", "--no-report", "--no-progress"]  # keep accepted compare runs short
S = ["--task", "curve:gelu", "--no-report", "--no-final", "--quiet"]  # a search with no training


def cases() -> list[Case]:
    c: list[Case] = []
    # --- activation specs (API)
    for spec in [
        "crrelu(eps=1e999)",
        "crrelu(eps='nan')",
        "crrelu(eps=float('nan'))",
        "swish(beta=1e999)",
        "prelu(init='nan')",
        "eafo(tau=1e999)",
        "eafo(tau=-1.0)",
        "relu(inplace='False')",
        "crrelu(eps=1, eps=2)",
        "polyrelu(order=1e300)",
        "polyrelu(order=1000000000)",
        "polyrelu(order=-3)",
        "leaky_relu(negative_slope=[1, 2])",
        "softplus(beta=0)",
        "eafo(base='nonsense')",
        "crrelu(learnable='yes')",
        "fatrelu(threshold=-1e999)",
        "elu(alpha=nan)",
        "x" * 5000,
        "crrelu(**{'eps': 1})",
        "__import__('os').system('touch PWNED')",
    ]:
        c.append(
            _api(f"api-spec {spec[:40]}", f"import actlab; actlab.create_activation({spec!r})")
        )
    c.append(
        _api(
            "api-ctor CRReLU(eps=inf)",
            "from actlab.activations.eafo import CRReLU; CRReLU(eps=float('inf'))",
        )
    )
    c.append(
        _api(
            "api-expr deep tree",
            """
            from actlab.expr import Unary, Var, to_string
            e = Var()
            for _ in range(3000):
                e = Unary("sin", e)
            to_string(e)
            """,
        )
    )
    # --- show / plot / ls
    for spec in ["relu(inplace=True)", "silu(inplace=True)", "elu(inplace=True)"]:
        c.append(_cli(f"cli-show {spec}", "show", spec, ok=True))
    c.append(_cli("cli-show fatrelu(inplace=True)", "show", "fatrelu(inplace=True)", ok=True))
    c.append(_cli("cli-show crrelu(eps=nan)", "show", "crrelu(eps=float('nan'))"))
    c.append(_cli("cli-show unknown", "show", "gleu"))
    c.append(_cli("cli-plot bad out dir", "plot", "gelu", "-o", "missing/dir/x.png"))
    # --- compare flags
    base = ["compare", "gelu", "relu", "--task", "digits-mlp", *Q]
    c.append(_cli("cli-compare seeds overflow", *base, "--seeds", "99999999999999999999"))
    c.append(_cli("cli-compare seeds 1e8", *base, "--seeds", "100000000", timeout=60))
    c.append(_cli("cli-compare seeds -1", *base, "--seeds", "-1"))
    c.append(_cli("cli-compare seeds 0", *base, "--seeds", "0"))
    c.append(
        _cli(
            "cli-compare max-steps 0",
            "compare",
            "gelu",
            "--task",
            "digits-mlp",
            "--max-steps",
            "0",
            "--no-report",
            "--seeds",
            "1",
        )
    )
    c.append(_cli("cli-compare device nonsense", *base, "--device", "nonsense", "--seeds", "1"))
    c.append(_cli("cli-compare device cuda", *base, "--device", "cuda:7", "--seeds", "1"))
    c.append(_cli("cli-compare epochs -1", *base, "--epochs", "-1", "--seeds", "1"))
    c.append(_cli("cli-compare workers 0", *base, "--workers", "0", "--seeds", "1"))
    c.append(_cli("cli-compare workers -2", *base, "--workers", "-2", "--seeds", "1"))
    c.append(_cli("cli-compare unknown task", "compare", "gelu", "--task", "nope"))
    c.append(_cli("cli-compare unknown act", "compare", "gleu", "--task", "digits-mlp"))
    c.append(_cli("cli-compare nan param", "compare", "crrelu(eps=1e999)", "--task", "digits-mlp"))
    c.append(
        _cli(
            "cli-compare bad report dir",
            "compare",
            "gelu",
            "--task",
            "digits-mlp",
            "--max-steps",
            "2",
            "--seeds",
            "1",
            "--report",
            "no/such/dir/r.html",
        )
    )
    c.append(
        _cli(
            "cli-compare bare formula",
            "compare",
            "x*sigmoid(1.702*x)",
            "gelu",
            "--task",
            "digits-mlp",
            "--seeds",
            "1",
            "--max-steps",
            "2",
            "--no-report",
            "--no-progress",
            ok=True,
        )
    )
    c.append(
        _cli(
            "cli-compare formula injection",
            "compare",
            "__import__('os').system('touch PWNED')",
            "--task",
            "digits-mlp",
        )
    )
    # --- database / storage
    for name in ["text.db", "garbage.db", "corrupt.db"]:
        c.append(
            _cli(f"cli-compare --db {name}", *base, "--seeds", "1", "--db", name, files=(name,))
        )
        c.append(
            _cli(
                f"cli-search --storage {name}",
                "search",
                *S,
                "--budget",
                "3",
                "--storage",
                name,
                files=(name,),
            )
        )
    c.append(
        _cli("cli-compare --db dir", *base, "--seeds", "1", "--db", "adir", setup="mkdir adir")
    )
    c.append(
        _cli(
            "cli-compare --db missing folder",
            *base,
            "--seeds",
            "1",
            "--db",
            "sqlite:///no/such/folder/x.db",
        )
    )
    c.append(_cli("cli-compare --db dialect", *base, "--seeds", "1", "--db", "nosuchdb://x/y"))
    c.append(
        _cli(
            "cli-search --storage dir",
            "search",
            *S,
            "--budget",
            "3",
            "--storage",
            "adir",
            setup="mkdir adir",
        )
    )
    c.append(
        _cli(
            "cli-search --storage missing",
            "search",
            *S,
            "--budget",
            "3",
            "--storage",
            "sqlite:///no/such/folder/x.db",
        )
    )
    c.append(
        _cli(
            "cli-search --storage dialect",
            "search",
            *S,
            "--budget",
            "3",
            "--storage",
            "nosuchdb://x/y",
        )
    )
    c.append(
        _cli(
            "cli-search storage == db",
            "search",
            "--task",
            "digits-mlp",
            "--budget",
            "2",
            "--funnel",
            "1",
            "--max-steps",
            "3",
            "--top",
            "1",
            "--final-seeds",
            "1",
            "--no-report",
            "--quiet",
            "--storage",
            "same.db",
            "--db",
            "same.db",
            ok=True,
            timeout=240,
        )
    )
    # --- search flags and budgets
    c.append(
        _cli("cli-search funnel inf", "search", *S, "--budget", "5", "--funnel", "inf", timeout=60)
    )
    c.append(_cli("cli-search funnel 0", "search", *S, "--budget", "5", "--funnel", "0"))
    c.append(_cli("cli-search funnel -3", "search", *S, "--budget", "5", "--funnel", "3,-1"))
    c.append(_cli("cli-search budget 0", "search", *S, "--budget", "0"))
    c.append(_cli("cli-search budget nan", "search", *S, "--budget", "nan"))
    c.append(_cli("cli-search budget -5m", "search", *S, "--budget", "-5m"))
    c.append(
        _cli("cli-search final-seeds 0", "search", *S[:-2], "--budget", "3", "--final-seeds", "0")
    )
    c.append(_cli("cli-search top -1", "search", *S, "--budget", "3", "--top", "-1"))
    c.append(_cli("cli-search floor nan@1", "search", *S, "--budget", "3", "--floor", "nan@1"))
    c.append(_cli("cli-search floor junk", "search", *S, "--budget", "3", "--floor", "abc"))
    c.append(_cli("cli-search keep 2", "search", *S, "--budget", "3", "--keep", "2"))
    c.append(_cli("cli-search keep nan", "search", *S, "--budget", "3", "--keep", "nan"))
    c.append(_cli("cli-search max-nodes 0", "search", *S, "--budget", "3", "--max-nodes", "0"))
    c.append(_cli("cli-search max-cost -1", "search", *S, "--budget", "3", "--max-cost", "-1"))
    c.append(_cli("cli-search max-steps 0", "search", *S, "--budget", "3", "--max-steps", "0"))
    c.append(_cli("cli-search workers 0", "search", *S, "--budget", "3", "--workers", "0"))
    c.append(
        _cli(
            "cli-search top-seeds 0",
            "search",
            *S,
            "--budget",
            "3",
            "--funnel",
            "1,2",
            "--top-seeds",
            "0",
        )
    )
    c.append(
        _cli(
            "cli-search curve junk",
            "search",
            "--task",
            "curve:((",
            "--budget",
            "3",
            "--no-report",
            "--no-final",
        )
    )
    c.append(
        _cli(
            "cli-search curve unknown",
            "search",
            "--task",
            "curve:nosuchact",
            "--budget",
            "3",
            "--no-report",
            "--no-final",
        )
    )
    c.append(
        _cli(
            "cli-search bo bad form",
            "search",
            *S,
            "--strategy",
            "bo",
            "--form",
            "x/(",
            "--budget",
            "3",
        )
    )
    c.append(
        _cli(
            "cli-search bo pole form",
            "search",
            *S,
            "--strategy",
            "bo",
            "--form",
            "x/(x-0.5)",
            "--budget",
            "10",
            timeout=120,
            exits=(1, 2),
        )
    )
    c.append(
        _cli(
            "cli-search device nonsense",
            "search",
            "--task",
            "digits-mlp",
            "--budget",
            "2",
            "--device",
            "nonsense",
            "--no-report",
            "--no-final",
        )
    )
    # --- probe
    c.append(
        _cli(
            "cli-probe sample 0",
            "probe",
            "--task",
            "digits-mlp",
            "--sample",
            "0",
            "--max-steps",
            "2",
        )
    )
    c.append(
        _cli(
            "cli-probe sample -5",
            "probe",
            "--task",
            "digits-mlp",
            "--sample",
            "-5",
            "--max-steps",
            "2",
        )
    )
    c.append(
        _cli(
            "cli-probe unknown probe",
            "probe",
            "--task",
            "digits-mlp",
            "--probes",
            "nope",
            "--max-steps",
            "2",
        )
    )
    c.append(_cli("cli-probe missing text", "probe", "minilm", "--text", "no_such.txt"))
    c.append(_cli("cli-probe tokens 0", "probe", "smollm2", "--tokens", "0"))
    c.append(_cli("cli-probe epochs -1", "probe", "--task", "digits-mlp", "--epochs", "-1"))
    # --- data readers (API)
    for name in [
        "bomb-images-idx3-ubyte.gz",
        "overflow-images-idx3-ubyte.gz",
        "float-labels-idx1-ubyte.gz",
        "empty-images-idx3-ubyte.gz",
        "zero-images-idx3-ubyte.gz",
    ]:
        c.append(
            _api(
                f"api-idx {name}",
                f"from actlab.data.idx import read_idx; read_idx({name!r})",
                files=(name,),
                timeout=60,
            )
        )
    load = "from actlab.data.cifar import load_cifar; load_cifar('.', split='test')"
    for name in ["cifar-ndarray", "cifar-system", "cifar-truncated"]:
        c.append(_api(f"api-{name}", load, files=(f"test_batch={name}",)))
    c.append(_api("api-cifar py3 protocol 2", load, files=("test_batch=cifar-py3p2",), ok=True))
    return c


# ------------------------------------------------------------------ running


_API_WRAPPER = r"""
import sys, traceback
code = sys.argv[1]
try:
    exec(compile(code, "<case>", "exec"), {})
except (ValueError, OSError, KeyError, ImportError) as e:
    msg = str(e).strip()
    print("RAISED", type(e).__name__, file=sys.stderr)
    print(msg, file=sys.stderr)
    sys.exit(2)
except BaseException:
    traceback.print_exc()
    sys.exit(1)
"""


def _run(case: Case, src: str | None) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for entry in case.files:
            fname, _, key = entry.rpartition("=")
            FILES[key](d / (fname or key))
        if case.setup:
            subprocess.run(case.setup, shell=True, cwd=d, check=True)
        before = {p.relative_to(d) for p in d.rglob("*")}
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src
        env.pop("ACTLAB_DEBUG", None)
        if case.argv is not None:
            cmd = [
                sys.executable,
                "-c",
                "import sys; from actlab.cli import main; sys.exit(main(sys.argv[1:]))",
                *case.argv,
            ]
        else:
            cmd = [sys.executable, "-c", _API_WRAPPER, case.code or ""]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=d,
                env=env,
                capture_output=True,
                text=True,
                timeout=case.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return "unbounded", f"still running after {case.timeout:.0f} s"
        dt = time.perf_counter() - t0
        after = {p.relative_to(d) for p in d.rglob("*")}
        new = sorted(str(p) for p in after - before if not str(p).startswith(".cache"))
        err = proc.stderr.strip()
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("RAISED")]
        lines = [ln for ln in lines if "Warning" not in ln and not ln.startswith("  warn")]
        if "PWNED" in {p.name for p in d.iterdir()}:
            return "EXECUTED", "injected code ran"
        if proc.returncode == 0:
            if case.ok:
                return "ok", f"{dt:.1f}s"
            return "silent", f"exit 0 in {dt:.1f}s"
        if "Traceback" in err or (case.code is not None and proc.returncode != 2):
            tail = err.splitlines()[-1] if err else f"exit {proc.returncode}"
            return "traceback", tail[:160]
        if proc.returncode not in case.exits:
            tail = lines[-1] if lines else ""
            return "late", f"exit {proc.returncode}: {tail[:140]}"
        if case.ok:
            return "refused-ok", (lines[-1] if lines else "")[:160]
        if len(lines) != 1:
            return "traceback", f"{len(lines)} lines: " + " | ".join(lines[:3])[:160]
        if new and proc.returncode == 2:  # a search stopped with its reason keeps its study
            return "leaky", f"{lines[0][:120]} (left {', '.join(new[:3])})"
        return "clear", lines[0][:160]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the cases whose id starts with this")
    ap.add_argument("--src", default=None, help="PYTHONPATH of the actlab to test")
    ap.add_argument("-v", action="store_true", help="print every case's answer")
    args = ap.parse_args()
    todo = [c for c in cases() if c.id.startswith(args.only)]
    counts: Counter[str] = Counter()
    for case in todo:
        verdict, detail = _run(case, args.src)
        counts[verdict] += 1
        if args.v or verdict not in ("clear", "ok"):
            print(f"{verdict:10s} {case.id:45s} {detail}", flush=True)
    print()
    print(f"cases: {len(todo)}  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
