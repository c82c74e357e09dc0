"""Where the compiled fused activations spend a step, and which way of compiling them is fastest.

For a few fused kernels (CRReLU, swish, PolyReLU, eafo(gelu), relu2), the fwd+bwd step y = f(x);
y.backward(g) is timed against F.gelu's in interleaved rounds (median of the per-round ratios)
for these ways of running the kernel's hand-written fwd/bwd pair:

  shipped      what ``kernel_mode("compiled")`` runs (``ElementwiseKernel``)
  eager        ``kernel_mode("eager")``: the same pair, uncompiled
  static       fwd and bwd compiled with static shapes (``dynamic=False``)
  split        as shipped (dynamic shapes), but the parameter gradients leave the compiled bwd as
               elementwise tensors and are summed by torch outside it
  static-split both of the above
  single       the hand-written pair as one autograd Function compiled whole (dynamic shapes):
               one Dynamo entry per step, the backward runs as the compiled graph's backward
  single-static  the same with static shapes
  aot          the plain formula compiled whole (``torch.compile`` of the reference forward:
               AOTAutograd derives and fuses the backward)

and, with ``--profile``, one profiled step of each: the device (kernel) time per step and the
number of kernels, so the wall time splits into kernel time and host overhead.

    python benchmarks/fused_variants.py [--device cuda] [--numel 16777216] [--repeats 30]
        [--only crrelu,swish,polyrelu,eafo,relu2] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_samples  # noqa: E402

import actlab  # noqa: E402
from actlab.activations import kernel_mode  # noqa: E402


def _kernel_of(m: torch.nn.Module) -> tuple[Any, tuple[Tensor, ...]]:
    """The ElementwiseKernel a module calls and its parameter tensors (by tracing a call)."""
    from actlab.activations._fused import ElementwiseKernel

    seen: list[tuple[Any, tuple[Tensor, ...]]] = []
    orig = ElementwiseKernel.__call__

    def spy(self: Any, x: Tensor, *theta: Tensor) -> Tensor:
        seen.append((self, theta))
        return orig(self, x, *theta)

    ElementwiseKernel.__call__ = spy  # type: ignore[method-assign]
    try:
        with kernel_mode("eager"), torch.no_grad():
            m(torch.zeros(4, device=next(iter(m.parameters()), torch.zeros(1)).device))
    finally:
        ElementwiseKernel.__call__ = orig  # type: ignore[method-assign]
    return seen[0]


def _variant(
    kernel: Any, theta: tuple[Tensor, ...], dynamic: bool, split: bool
) -> Callable[[Tensor], Tensor] | None:
    """y = kernel(x, *theta) through an autograd Function with the chosen compilation (None:
    ``split`` asked of a bwd that sums inside a helper of another module, as eafo's does)."""
    fwd = torch.compile(kernel.fwd, dynamic=dynamic, fullgraph=True)

    if split:
        # rebuild the bwd with acc_sum as identity: the function's globals hold acc_sum by name
        import types

        if "acc_sum" not in kernel.bwd.__code__.co_names:
            return None
        # a module of its own (Dynamo installs its compiled code in the function's globals) and a
        # code object of its own (Dynamo caches per code object)
        mod = types.ModuleType(f"_fused_variants_{kernel.name}")
        mod.__dict__.update({k: v for k, v in kernel.bwd.__globals__.items() if k != "__name__"})
        mod.__dict__["acc_sum"] = lambda t: t
        sys.modules[mod.__name__] = mod
        glb = mod.__dict__
        code = kernel.bwd.__code__.replace(co_name=f"{kernel.name}_bwd_split")  # own cache
        raw = types.FunctionType(code, glb, "bwd_split", kernel.bwd.__defaults__,
                                 kernel.bwd.__closure__)  # fmt: skip
        bwd_c = torch.compile(raw, dynamic=dynamic, fullgraph=True)
    else:
        bwd_c = torch.compile(kernel.bwd, dynamic=dynamic, fullgraph=True)

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor, *theta: Tensor) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(x, *theta)
            return fwd(x, *theta)

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
            x, *theta = ctx.saved_tensors
            out = bwd_c(x, g, *theta)
            gx, rest = out[0], out[1:]
            grads = []
            for i, t in enumerate(theta):
                r = rest[i] if i < len(rest) else None
                if r is None:
                    grads.append(None)
                    continue
                if split:  # elementwise (or stacked elementwise) terms: sum them here
                    r = r.reshape(*t.shape, -1).sum(-1, dtype=torch.float32)
                grads.append(r.reshape(t.shape).to(t.dtype))
            return (gx, *grads)

    return lambda x: Fn.apply(x.reshape(-1), *theta).view(x.shape)


def _single(kernel: Any, theta: tuple[Tensor, ...], dynamic: bool) -> Callable[[Tensor], Tensor]:
    """The hand-written fwd/bwd pair as one autograd Function, compiled as a whole: one
    compiled call per forward, and the compiled backward runs as that graph's backward node
    (no second Dynamo entry, no Python autograd Function at run time)."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Tensor, *th: Tensor) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(x, *th)
            return kernel.fwd(x, *th)  # type: ignore[no-any-return]

        @staticmethod
        def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
            x, *th = ctx.saved_tensors
            out = kernel.bwd(x, g, *th)
            grads: list[Tensor | None] = [out[0]]
            for i, t in enumerate(th):
                grads.append(out[1 + i].reshape(t.shape).to(t.dtype) if 1 + i < len(out) else None)
            return tuple(grads)

    from actlab.activations._fused import _own_code

    def entry(x: Tensor, *th: Tensor) -> Tensor:
        return Fn.apply(x, *th)  # type: ignore[no-any-return]

    # Dynamo caches per code object: each kernel and variant gets its own
    own = _own_code(entry, f"{kernel.name}_single_{'dyn' if dynamic else 'static'}")
    fn = torch.compile(own, dynamic=dynamic, fullgraph=True)
    return lambda x: fn(x.reshape(-1), *theta).view(x.shape)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--numel", default="16777216")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--only", default="crrelu,swish,polyrelu,eafo,relu2")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev.type == "cuda" else ""))  # fmt: skip
    for numel in [int(n) for n in args.numel.split(",")]:
        torch.manual_seed(0)
        x0 = torch.randn(numel, device=dev)
        g = torch.randn_like(x0)

        def step_for(
            fn: Callable[[Tensor], Tensor], mode: str | None = None, x0: Tensor = x0, g: Tensor = g
        ) -> Callable[[], None]:
            xg = x0.clone().requires_grad_(True)

            def step() -> None:
                xg.grad = None
                if mode is None:
                    fn(xg).backward(g)
                else:
                    with kernel_mode(mode):
                        fn(xg).backward(g)
                sync()

            return step

        print(f"\nnumel {numel:,}: fwd+bwd step time / F.gelu's (median over {args.repeats} "
              f"rounds), device ms and kernels per step (--profile)")  # fmt: skip
        print(f"{'activation':<10}{'variant':<14}{'x gelu':>8}{'wall ms':>9}{'dev ms':>8}"
              f"{'kernels':>9}")  # fmt: skip
        gelu = step_for(F.gelu)
        for name in args.only.split(","):
            m = actlab.create_activation(name).to(dev)
            kernel, theta = _kernel_of(m)
            ref = actlab.create_activation(name).to(dev)
            ref.load_state_dict(m.state_dict())

            def ref_fwd(x: Tensor, ref: torch.nn.Module = ref) -> Tensor:
                with kernel_mode("reference"):
                    return ref(x)  # type: ignore[no-any-return]

            variants: dict[str, Callable[[], None]] = {
                "shipped": step_for(m, "compiled"),
                "eager": step_for(m, "eager"),
            }
            for vname, dyn, split in (("static", False, False), ("split", True, True),
                                      ("static-split", False, True)):  # fmt: skip
                fn = _variant(kernel, theta, dyn, split)
                if fn is not None:
                    variants[vname] = step_for(fn)
            variants["aot"] = step_for(torch.compile(ref_fwd))
            variants["single"] = step_for(_single(kernel, theta, True))
            variants["single-static"] = step_for(_single(kernel, theta, False))
            for v in variants.values():
                v()  # compile
            t = interleaved_samples({"gelu": gelu, **variants}, args.repeats)
            for vname in variants:
                r = statistics.median(a / b for a, b in zip(t[vname], t["gelu"]))
                wall = statistics.median(t[vname]) * 1e3
                dev_ms, count = (
                    _profile(variants[vname], detail=vname in ("shipped", "static"))
                    if args.profile
                    else (float("nan"), 0)
                )
                print(f"{name:<10}{vname:<14}{r:>8.2f}{wall:>9.3f}{dev_ms:>8.3f}{count:>9d}")
        gw = statistics.median(t["gelu"]) * 1e3
        gd, gc = _profile(gelu) if args.profile else (float("nan"), 0)
        print(f"{'gelu':<10}{'F.gelu':<14}{1.0:>8.2f}{gw:>9.3f}{gd:>8.3f}{gc:>9d}")


def _profile(step: Callable[[], None], steps: int = 5, detail: bool = False) -> tuple[float, int]:
    """Device time (ms) and kernel launches per step from the profiler (CPU: op self time)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    cuda = torch.cuda.is_available()
    if cuda:
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
    total, count = 0.0, 0
    by_name: dict[str, float] = {}
    for ev in prof.events():
        if cuda and ev.device_type == torch.autograd.DeviceType.CUDA:
            total += ev.device_time
            count += 1
            by_name[ev.name] = by_name.get(ev.name, 0.0) + ev.device_time
    if detail:
        for name, us in sorted(by_name.items(), key=lambda kv: -kv[1])[:4]:
            print(f"{'':<24}{us / steps / 1e3:>8.3f} ms  {name[:90]}")
    return total / steps / 1e3, count // steps


if __name__ == "__main__":
    main()
