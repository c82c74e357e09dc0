"""Probe overhead: training-step time with the default probe set on vs off, and memory growth.

    .venv/bin/python benchmarks/bench_probes.py [--steps 40] [--batch 128] [--threads 2]

Model: the Fashion-MNIST ViT preset ``vit_mini_28`` from :mod:`actlab.models` (a small
transformer defined here if that module is unavailable), one AdamW step on a (B, 1, 28, 28)
batch per timed call. "on" and "off" steps are interleaved in one run (alternating which goes
first; hooks are attached before each "on" step and removed after it, outside the timed
region), so machine noise hits both alike; median and minimum step times (wall clock and
process CPU time) and their ratios are printed (target <= 5%, stretch 2%).

Memory: the probes' tensor state (``ProbeManager.nbytes``, before and after flushing the
staging queues, which fill and empty in cycles), the Python heap (tracemalloc, after the
flush) and the process RSS are sampled while running many probed steps; the script prints
them at a few step counts to show they stay flat instead of growing with the run length.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model() -> tuple[nn.Module, str]:
    try:
        from actlab.models.factory import build_model

        return build_model(
            "vit_mini_28", "gelu", num_classes=10, in_chans=1, img_size=28
        ), "vit_mini_28"
    except ImportError:  # pragma: no cover - fallback when the models package is absent
        layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, norm_first=True)

        class Tiny(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Conv2d(1, 64, 7, 7)
                self.blocks = nn.ModuleList(
                    nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, norm_first=True)
                    for _ in range(4)
                )
                self.head = nn.Linear(64, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = self.embed(x).flatten(2).transpose(1, 2)
                for b in self.blocks:
                    h = b(h)
                return self.head(h.mean(1))

        del layer
        return Tiny(), "tiny transformer (fallback)"


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:  # pragma: no cover
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per arm")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-steps", type=int, default=600)
    ap.add_argument(
        "--sample", type=int, default=None, help="rows per hook call (default: the manager default)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import actlab.probes as P

    model, label = _model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    mgr = P.probe(model) if args.sample is None else P.probe(model, sample=args.sample)
    arms: dict[str, Callable[[], None]] = {"off": step, "on": step}
    for _ in range(3):  # warm-up both arms
        step()
        mgr.attach()
        step()
        mgr.detach()
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    for i in range(args.steps):
        for arm in ("off", "on") if i % 2 == 0 else ("on", "off"):
            if arm == "on":
                mgr.attach()
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall[arm].append(time.perf_counter() - t0)
            cpu[arm].append(time.process_time() - c0)
            if arm == "on":
                mgr.detach()
    print(f"model: {label}, batch {args.batch}, threads {args.threads}, {args.steps} steps per arm")
    print(
        f"probes: {', '.join(mgr.probes)}; sites: "
        + ", ".join(f"{k}={len(v)}" for k, v in mgr.sites.items())
    )
    for what, tab in (("wall", wall), ("cpu ", cpu)):
        med = {k: statistics.median(v) for k, v in tab.items()}
        low = {k: min(v) for k, v in tab.items()}
        print(
            f"{what} step  off {med['off'] * 1e3:8.2f} ms   on {med['on'] * 1e3:8.2f} ms   "
            f"overhead {100 * (med['on'] / med['off'] - 1):+.2f}% (median), "
            f"{100 * (low['on'] / low['off'] - 1):+.2f}% (min)   target <= 5%, stretch 2%"
        )

    # memory growth with the number of probed steps
    gc.collect()
    probes_all = ["sparsity", "distribution", "massive", "attention", "entropy", "dse"]
    mgr2 = P.probe(model, probes=probes_all, max_tokens=512)
    marks = sorted({10, 50, 100, 200, 400, args.memory_steps})
    tracemalloc.start()
    print(f"memory over {args.memory_steps} probed steps ({', '.join(probes_all)}):")
    print(
        f"{'steps':>6} {'tensors KiB':>14} {'after flush':>14} {'python heap KiB':>18} "
        f"{'RSS MiB':>10}"
    )
    with mgr2, torch.no_grad():
        xb = x[:16]
        for i in range(1, args.memory_steps + 1):
            model(xb)
            if i in marks:
                staged = mgr2.nbytes() / 1024
                mgr2.flush()  # staging queues cycle; after a flush only the fixed state is left
                gc.collect()
                heap = tracemalloc.get_traced_memory()[0] / 1024
                print(
                    f"{i:>6} {staged:>14.1f} {mgr2.nbytes() / 1024:>14.1f} {heap:>18.1f} "
                    f"{_rss_mb():>10.1f}"
                )
    tracemalloc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
