"""Forward+backward time and saved-for-backward memory of every activation vs native GELU.

For each activation: time of y = f(x); y.backward(g) on a 4M-element float32 tensor, divided
by the same for torch.nn.functional.gelu measured back to back in the same round (median
over rounds, with the interquartile range of the per-round ratios: this machine's speed
drifts), and bytes saved for backward divided by the input's bytes. Fused activations are
measured in their default "auto" kernel mode; `--modes` adds the other modes side by side
(auto, native, compiled, eager, reference); activations without a fused path are plain torch
ops (mode column "torch"). `--numel` takes a comma list to repeat the table per size (e.g.
278528 = 64 x 17 x 256, the MLP hidden tensor of vit_mini_28 at batch 64).

    python benchmarks/bench_activations.py [--numel 4000000,278528] [--repeats 30]
        [--only crrelu,eafo] [--modes auto,native,compiled,eager] [--device cpu] [--dtype float32]
        [--threads N]

Targets (issue 2): CRReLU and eafo(gelu) time ratio <= 1.3 (stretch 1.1); saved bytes <= 1x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_samples, saved_bytes  # noqa: E402

import actlab  # noqa: E402
from actlab.activations import kernel_mode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--numel", default="4000000", help="elements per tensor; a comma list for several sizes"
    )
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument(
        "--only", default="", help="comma-separated activation specs (default: whole zoo)"
    )
    ap.add_argument(
        "--modes",
        default="auto",
        help="kernel modes for fused activations, e.g. auto,eager,reference",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16", "float64"]
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dev, dt = torch.device(args.device), getattr(torch, args.dtype)
    numels = [int(n) for n in str(args.numel).split(",") if n.strip()]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    specs = [s for s in args.only.split(",") if s] or actlab.list_activations()
    modes = [m for m in args.modes.split(",") if m]

    for numel in numels:
        torch.manual_seed(0)
        x0 = torch.randn(numel, device=dev, dtype=dt)
        _table(x0, torch.randn_like(x0), specs, modes, args, sync)


def _table(x0, g, specs, modes, args, sync) -> None:  # type: ignore[no-untyped-def]
    dev, dt = x0.device, x0.dtype

    def step_for(fn):
        xg = x0.clone().requires_grad_(True)

        def step() -> None:
            xg.grad = None
            fn(xg).backward(g)
            sync()

        return step

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}, "
        f"{args.dtype}, numel {x0.numel():,}, repeats {args.repeats}, cpus {os.cpu_count()}"
    )
    print(
        f"{'activation':<22}{'mode':<10}{'fwd+bwd ratio':>14}{'(IQR)':>13}"
        f"{'saved/input':>13}{'first call s':>14}"
    )
    x_bytes = x0.numel() * x0.element_size()
    gelu_step = step_for(F.gelu)
    for spec in specs:
        info = actlab.get_activation_info(spec.split("(")[0])
        for mode in modes if info.fused else ["torch"]:
            m = actlab.create_activation(spec).to(dev, dt if dt != torch.float32 else torch.float32)
            ctx = kernel_mode(mode) if mode != "torch" else kernel_mode("auto")
            with ctx:
                t0 = time.perf_counter()
                step = step_for(m)
                step()  # first call: compiles fused kernels when the mode asks for it
                first = time.perf_counter() - t0
                t = interleaved_samples({"gelu": gelu_step, "act": step}, args.repeats)
                sb = saved_bytes(lambda m=m: m(x0.clone().requires_grad_(True)))
            # ratio within each round (the two steps ran back to back), median over rounds
            r = [ta / tg for ta, tg in zip(t["act"], t["gelu"])]
            q1, _, q3 = statistics.quantiles(r, n=4)
            iqr = f"{q1:.2f}-{q3:.2f}"
            print(
                f"{spec:<22}{mode:<10}{statistics.median(r):>14.2f}{iqr:>13}"
                f"{sb / x_bytes:>13.2f}{first:>14.1f}"
            )
    gb = saved_bytes(lambda: F.gelu(x0.clone().requires_grad_(True)))
    print(f"{'(F.gelu itself)':<22}{'torch':<10}{1.0:>14.2f}{'':>13}{gb / x_bytes:>13.2f}")


if __name__ == "__main__":
    main()
