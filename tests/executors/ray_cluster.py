"""A local two-node Ray cluster for tests: ``ray start --head`` plus ``ray start --address``.

    with local_cluster(env={"PYTHONPATH": ...}) as cluster:   # 1 CPU per node, 100 MB stores
        cluster.address            # "127.0.0.1:PORT" for ray.init / --ray
        cluster.kill_worker()      # SIGKILL the second node (its raylet and workers)

Each node is one ``ray start --block`` process in its own session; every process it starts
(GCS, raylet, workers: these have their own process groups) stays in that session, and on
exit the node gets SIGTERM, then every process of its session SIGKILL: nothing is left
running, and no ``ray stop`` (which would stop every Ray on the machine) is needed.
Every port is a free one picked here (two nodes on one machine must not share the agent,
metrics or object-manager ports), everything binds to 127.0.0.1, the temp dir is a fresh
short folder (Ray's unix sockets have a path limit), token authentication is off (a
throwaway cluster on the loopback) and usage stats are never sent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cluster", "local_cluster", "unavailable"]

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def unavailable() -> str | None:
    """Why no local cluster can be started here (one line), or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed: pip install 'actlab[ray]'"
    if not os.path.exists(RAY):
        return f"the ray command is missing beside {sys.executable}"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    address: str
    folder: Path
    env: dict[str, str]
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kill_worker(self) -> None:
        """SIGKILL every process of the last worker node (raylet, its workers): it dies."""
        _kill(self.nodes[-1], graceful=False)

    def add_worker(self) -> None:
        """Start one more worker node (1 CPU) and wait until it is alive."""
        alive = sum(n.poll() is None for n in self.nodes)
        log = self.folder / f"w{len(self.nodes)}.log"
        self.nodes.append(_node(["--address", self.address], self.env, log))
        self.wait_for_nodes(alive + 1)

    def worker_pids(self) -> set[int]:
        """Pids of the processes of the last worker node (its session)."""
        return _session(self.nodes[-1].pid)

    def wait_for_nodes(self, n: int, timeout: float = 90.0) -> None:
        """Block until ``n`` nodes are alive (run in a subprocess: no driver here)."""
        code = (
            "import ray, sys, time\n"
            f"ray.init(address={self.address!r}, include_dashboard=False, log_to_driver=False,"
            " _node_ip_address='127.0.0.1')\n"
            f"end = time.time() + {timeout}\n"
            f"while sum(x['Alive'] for x in ray.nodes()) < {n}:\n"
            "    if time.time() > end: sys.exit(1)\n"
            "    time.sleep(0.2)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, timeout=timeout + 60
        )
        if out.returncode:
            raise RuntimeError(f"the cluster did not reach {n} nodes: {out.stderr[-800:]!r}")


def _session(sid: int) -> set[int]:
    """Every process of session ``sid`` (a node: Ray workers have their own process groups
    but stay in the session of their ``ray start``)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    out.add(int(entry))
    return out


def _kill(proc: subprocess.Popen[bytes], *, graceful: bool = True) -> None:
    """Stop a node: SIGTERM (``ray start --block`` stops its processes), then SIGKILL what
    is left of its session; ``graceful=False``: SIGKILL at once (a node that dies)."""
    if graceful and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for pid in _session(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def _node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    ports = _free_ports(8)
    cmd = [
        RAY, "start", "--block", "--num-cpus", "1", "--object-store-memory", "100000000",
        "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
        "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
        "--dashboard-agent-listen-port", str(ports[2]),
        "--dashboard-agent-grpc-port", str(ports[3]),
        "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
        "--min-worker-port", str(min(ports[6], 64000)),
        "--max-worker-port", str(min(ports[6], 64000) + 200), *args,
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextlib.contextmanager
def local_cluster(env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Start a head and a worker node (1 CPU each); kill both on exit (see module docstring).

    ``env`` is added to the nodes' environment (Ray workers inherit it: ``PYTHONPATH`` for
    test helpers) and to :attr:`Cluster.env` for drivers started as subprocesses.
    """
    why = unavailable()
    if why:
        raise RuntimeError(why)
    folder = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))
    full = {**os.environ, **ENV, **(env or {})}
    (port,) = _free_ports(1)
    cluster = Cluster(f"127.0.0.1:{port}", folder, full)
    try:
        head = ["--head", "--port", str(port), "--temp-dir", str(folder / "t")]
        head += ["--include-dashboard", "false"]
        cluster.nodes.append(_node(head, full, folder / "head.log"))
        cluster.nodes.append(_node(["--address", cluster.address], full, folder / "w.log"))
        t0 = time.time()
        cluster.wait_for_nodes(2)
        cluster.started_s = time.time() - t0  # type: ignore[attr-defined]
        yield cluster
    finally:
        for node in cluster.nodes:
            _kill(node)
        shutil.rmtree(folder, ignore_errors=True)
