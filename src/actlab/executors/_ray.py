"""Calls as Ray tasks: a local Ray instance or a cluster (``ray start --head`` + workers).

``RayExecutor(address)``: ``"auto"`` joins the cluster started on this machine with
``ray start``, ``"ray://host:port"`` goes through a Ray client server, ``"local"`` starts a
fresh private instance. Each call is one ``ray.remote`` task of ``num_cpus_per_task`` CPUs;
``slots`` defaults to the cluster's CPU count. Ray re-runs a task whose worker or node died
(``max_retries``, system failures only); when the retries are spent the future raises
``WorkerCrashedError`` / ``NodeDiedError``, which :func:`~actlab.executors.lost_errors` lists,
and the caller re-queues the call rather than failing it. Ray is imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["RayExecutor"]


class RayExecutor:
    """Calls as Ray tasks (see the module docstring)."""

    def __init__(
        self,
        address: str = "auto",
        *,
        slots: int | None = None,
        num_cpus_per_task: float = 1.0,
        max_retries: int = 3,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "--ray needs Ray: pip install 'actlab[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            kw = dict(init_kwargs or {})
            kw.setdefault("include_dashboard", False)
            kw.setdefault("log_to_driver", False)
            try:
                if address in ("local", ""):
                    ray.init(**kw)
                else:
                    ray.init(address=address, **kw)
            except ConnectionError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConnectionError(
                    f"no Ray cluster at {address!r} ({first}); start one with `ray start "
                    "--head`, or pass --ray local for a private instance"
                ) from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = slots or max(1, int(cpus // max(num_cpus_per_task, 1e-9)))
        self._remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=max_retries)(_call)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._remote.remote(fn, *args).future()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)
