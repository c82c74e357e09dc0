"""Execute one run of the matrix: resolve the train function, apply the run's settings
(kernel mode, CPU threads), train and turn the result (or the failure) into a store payload.

:func:`execute_run` is what :func:`actlab.bench.runner.run_matrix` submits to its executor
(:mod:`actlab.executors`: inline, a local worker process or a Ray task), so a run is trained
the same way wherever it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from actlab.bench._result import error_text, result_payload
from actlab.bench.plan import DEFAULT_MODEL, RunSpec
from actlab.bench.store import FAILED, FINISHED, utc_now

__all__ = ["TrainFn", "TrainRef", "execute_run", "resolve_train_fn", "run_settings"]

TrainFn = Callable[..., Any]
TrainRef = TrainFn | str | None


def resolve_train_fn(ref: TrainRef) -> TrainFn:
    """``None`` -> :func:`actlab.train.run_training`; ``"pkg.mod:func"`` -> that function."""
    if callable(ref):
        return ref
    if ref is None:
        try:
            from actlab.train import run_training
        except ImportError as e:
            raise ImportError(f"actlab.train.run_training is unavailable ({e})") from None
        return run_training  # type: ignore[no-any-return]
    modname, sep, attr = str(ref).partition(":")
    if not sep or not modname or not attr:
        raise ValueError(f"train function {ref!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(modname), attr, None)
    if not callable(fn):
        raise ValueError(f"{ref!r}: {modname} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def _versions() -> dict[str, str]:
    import sys

    from actlab._version import __version__

    out = {"actlab": __version__, "python": sys.version.split()[0]}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(torch.__version__)
    return out


def _train_kwargs(spec: RunSpec) -> dict[str, Any]:
    # keys starting with "_" only identify the run (e.g. the task's resolved defaults)
    kwargs: dict[str, Any] = {k: v for k, v in spec.config.items() if not k.startswith("_")}
    kwargs["model"] = None if spec.model == DEFAULT_MODEL else spec.model
    kwargs["epochs"] = spec.epochs or None
    dtype = kwargs.get("dtype")
    if isinstance(dtype, str):
        import torch

        kwargs["dtype"] = getattr(torch, dtype)
    kwargs["progress"] = False
    return kwargs


@contextlib.contextmanager
def run_settings(spec: RunSpec) -> Iterator[None]:
    """Apply the run's kernel mode (``auto`` unless its config names another) and CPU threads
    (``num_threads``, if given) around its training, whatever the train function: a run is
    trained the same way inline, in a worker process or elsewhere."""
    import torch

    from actlab.activations import kernel_mode

    threads = spec.config.get("num_threads")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with kernel_mode(str(spec.config.get("kernel_mode") or "auto")):
            yield
    finally:
        if threads is not None:
            torch.set_num_threads(old)


def execute_run(spec: RunSpec, fn: TrainRef) -> dict[str, Any]:
    """Train one run with ``fn`` (a train function or its :data:`TrainRef`, resolved here);
    never raises for a failing run (the error goes into the payload)."""
    started, t0 = utc_now(), time.perf_counter()
    try:
        fn = resolve_train_fn(fn)
        with run_settings(spec):
            result = fn(spec.task, spec.activation, spec.seed, **_train_kwargs(spec))
        payload = result_payload(result)
        payload["status"] = FINISHED
        if payload.pop("diverged"):
            payload["error"] = "training diverged (non-finite loss); stopped early"
        if payload["metric_value"] is None:
            payload["error"] = "final metric is nan or inf (training diverged?)"
    except Exception as e:  # a failed run is a result, not a crash of the matrix
        payload = {"status": FAILED, "error": error_text(e)}
    payload.update(
        started_at=started,
        finished_at=utc_now(),
        wall_seconds=time.perf_counter() - t0,
        host=socket.gethostname(),
        pid=os.getpid(),
        versions=_versions(),
    )
    return payload
