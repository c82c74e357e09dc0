"""Fused sparse matvec kernels vs the dense torch product, measured side by side in one run.

For each weight shape (``in -> out``: SmolLM2-135M's fused qkv, o, fused gate|up and down,
Gemma-3-270M's, and a large 2048 <-> 8192 pair), each sparsity s (the fraction of input
entries at or below the threshold) and 1 and 2 threads, times one batch-1 product:

- ``dense``   torch ``F.linear(x, W)`` in float32 (MKL / oneDNN): the baseline;
- ``k32``     ``actlab_sparse.sparse_linear`` with float32 weights (threshold fused), packed
  as ``use_kernels`` packs them (plain memory unless ``ACTLAB_HUGE_PAGES=1``);
- ``k32 2M``  the same kernel on copies on transparent huge pages (``PackArena(huge=True)``,
  opt-in in ``use_kernels``; the same as ``k32`` where the system has none);
- ``kbf16``   the same kernel with bfloat16 weights (float32 accumulation);
- ``tbf16``   torch ``F.linear`` with bfloat16 x and W (what a bf16 model would run).

Ratios are dense time / variant time (> 1: faster than dense), and the fraction of the
bandwidth limit they reach: ``1 / (1 - s)`` for float32, ``2 / (1 - s)`` for bf16 weights.
Decode reads every weight once per token, so each variant cycles through enough distinct
copies of the weights (``--mb`` MiB of float32; by default 1.25 x the CPU's L3 as sysfs
reports it, at least 64) that they do not stay in cache between calls. (On a Xeon with a
480 MiB L3, the earlier fixed 64 MiB left the weights in the L3, which favoured MKL's access
order: s = 0 read 0.88-0.90x at 2 threads on the narrow shapes there, 0.96-1.01x from DRAM.)
Each round calls every variant once, in a shuffled order (``--repeats`` passes over the
copies, at least 300 rounds unless ``--budget`` runs out); a ratio is the median over rounds of
dense time / variant time, both measured in the same round (``dense us`` is the median dense
time).

    python benchmarks/bench_sparse_gemv.py            # ~2-3 min on 2 quiet cores
    python benchmarks/bench_sparse_gemv.py --quick    # fewer shapes/repeats (smoke test)
    python benchmarks/bench_sparse_gemv.py --quick --shapes smollm2 --threads 2  # SmolLM2's 4
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from actlab._ext import load
from actlab.sparse._arena import PackArena, huge_pages_available, huge_pages_wanted
from actlab.sparse._kernels import KERNELS

SHAPES = {  # name: (in, out)
    "smollm2 qkv": (576, 960),
    "smollm2 o": (576, 576),
    "smollm2 gate|up": (576, 3072),
    "smollm2 down": (1536, 576),
    "gemma3 qkv": (640, 1536),
    "gemma3 o": (1024, 640),
    "gemma3 gate|up": (640, 4096),
    "gemma3 down": (2048, 640),
    "large 2048->8192": (2048, 8192),
    "large 8192->2048": (8192, 2048),
}
SPARSITY = (0.0, 0.25, 0.4, 0.5, 0.65, 0.8)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def l3_bytes() -> int | None:
    """This CPU's last-level (L3) cache in bytes, from sysfs (None where it is not reported)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() != "3":
                continue
            size = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit():
            return int(digits) * scale
    return None


def auto_mb() -> tuple[float, str]:
    """MiB of float32 weights each variant cycles through: 1.25 x the L3 (at least 64), so a
    call reads its weights from DRAM as decoding a model larger than the L3 does; at most an
    eighth of the available memory (each variant holds its own copies)."""
    l3 = l3_bytes()
    want = max(64.0, 1.25 * l3 / 2**20) if l3 else 64.0
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        avail = float("inf")
    mb = min(want, max(64.0, avail / 8))
    why = f"1.25 x the {l3 / 2**20:.0f} MiB L3" if l3 else "L3 size not reported: 64 MiB"
    return mb, why + (" (capped by free memory)" if mb < want else "")


def masked_input(k: int, s: float, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """x [1, k] and a threshold t such that exactly round(s k) entries have |x| <= t."""
    x = torch.randn(1, k, generator=g)
    zero = round(s * k)
    if zero == 0:
        return x, -1.0
    t = float(x.abs().flatten().kthvalue(zero).values)
    return x, t


def per_call_samples(
    calls: dict[str, tuple[Callable[..., Any], list[tuple[Any, ...]]]],
    rounds: int,
    budget: float,
) -> dict[str, list[float]]:
    """Seconds of single calls: round r calls every variant once, on its weight copy r mod
    copies, in an order shuffled anew each round (seeded). A fixed cyclic order gives each
    variant the same predecessor in most rounds, and the predecessor matters: measured here, a
    kernel call right after another call of the same kernel ran 5-15% faster than after a
    different op (warm code and predictors), enough to fake a gain between two variants of one
    kernel. Many short samples per variant, so a time slice lost to another process spoils a
    few samples, not a whole measurement. Stops after ``rounds`` rounds, or after ``budget``
    seconds once every copy was used."""
    for fn, arg_list in calls.values():  # warm-up: one pass over the copies
        for a in arg_list:
            fn(*a)
    times: dict[str, list[float]] = {k: [] for k in calls}
    copies = min(len(a) for _, a in calls.values())
    start = time.perf_counter()
    items = list(calls.items())
    order = random.Random(0)
    for r in range(rounds):
        if r >= copies and time.perf_counter() - start > budget:
            break
        order.shuffle(items)
        for key, (fn, arg_list) in items:
            a = arg_list[r % len(arg_list)]
            t0 = time.perf_counter()
            fn(*a)
            times[key].append(time.perf_counter() - t0)
    return times


VARIANTS = ("k32", "k32 2M", "kbf16", "tbf16")


def paired_ratio(dense: list[float], variant: list[float]) -> float:
    """Median over rounds of dense time / variant time, both from the same round: a slowdown
    of the whole machine for a while (another job's memory traffic) cancels in each round's
    ratio, where it would shift one median more than the other."""
    return statistics.median(d / v for d, v in zip(dense, variant, strict=True))


def run(
    shapes: dict[str, tuple[int, int]], repeats: int, mb: float, threads: list[int], budget: float
) -> None:
    op = load(KERNELS).op("sparse_linear")
    g = torch.Generator().manual_seed(0)
    print(
        f"{'shape':18s} {'thr':>3s} {'s':>4s} {'dense us':>9s} | {'k32':>5s} {'%lim':>5s} | "
        f"{'k32 2M':>6s} {'%lim':>5s} | {'kbf16':>5s} {'%lim':>5s} | {'tbf16':>5s}"
    )
    summary: list[tuple[str, int, float, float, float]] = []
    for name, (k, n) in shapes.items():
        copies = max(2, min(4096, round(mb * 2**20 / (4 * k * n))))
        ws = [torch.randn(n, k, generator=g) / k**0.5 for _ in range(copies)]  # [out, in]
        arena = PackArena()  # as use_kernels packs (plain memory unless ACTLAB_HUGE_PAGES=1)
        wt32 = [arena.like(w.t()) for w in ws]  # [in, out]: the kernel's layout
        huge = PackArena(huge=True)
        wt2m = [huge.like(w) for w in wt32]  # the same on transparent huge pages
        wtbf = [arena.like(w, torch.bfloat16) for w in wt32]
        wbf = [w.to(torch.bfloat16) for w in ws]
        for nt in threads:
            torch.set_num_threads(nt)
            for s in SPARSITY:
                x, t = masked_input(k, s, g)
                xm = x * (x.abs() > t)  # what the dense baseline multiplies
                xmb = xm.to(torch.bfloat16)

                args: dict[str, tuple[Callable[..., Any], list[tuple[Any, ...]]]] = {
                    "dense": (F.linear, [(xm, w) for w in ws]),
                    "k32": (op, [(x, w, None, t, None, None) for w in wt32]),
                    "k32 2M": (op, [(x, w, None, t, None, None) for w in wt2m]),
                    "kbf16": (op, [(x, w, None, t, None, None) for w in wtbf]),
                    "tbf16": (F.linear, [(xmb, w) for w in wbf]),
                }
                # at least 300 rounds (a large shape has 2 copies) unless the budget runs out
                rounds = max(repeats * copies, 300)
                times = per_call_samples(args, rounds=rounds, budget=budget)
                med = {key: statistics.median(v) for key, v in times.items()}
                r32, r2m, rbf, rtb = (paired_ratio(times["dense"], times[k]) for k in VARIANTS)
                lim = 1.0 / (1.0 - s)
                print(
                    f"{name:18s} {nt:3d} {s:4.2f} {med['dense'] * 1e6:9.1f} | {r32:5.2f} "
                    f"{100 * r32 / lim:4.0f}% | {r2m:6.2f} {100 * r2m / lim:4.0f}% | "
                    f"{rbf:5.2f} {100 * rbf / (2 * lim):4.0f}% | {rtb:5.2f}",
                    flush=True,
                )
                summary.append((name, nt, s, r32, 100 * r32 / lim))
    print("\nTargets (float32 kernel vs dense float32 torch):")
    for nt in threads:
        at0 = [r for (_, t, s, r, _) in summary if t == nt and s == 0.0]
        print(
            f"  {nt} thread(s): s = 0 ratio min {min(at0):.2f} / median "
            f"{statistics.median(at0):.2f} (target >= 0.95)"
        )
        for group, target in (("large", 90), ("smollm2", 80), ("gemma3", 80)):
            pts = [
                p
                for (nm, t, s, _, p) in summary
                if t == nt and nm.startswith(group) and s in (0.4, 0.5)
            ]
            if pts:
                print(
                    f"  {nt} thread(s): {group} at s = 0.4, 0.5: % of 1/(1-s) min {min(pts):.0f}% "
                    f"median {statistics.median(pts):.0f}% (target >= {target}%)"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=10, help="passes over the weight copies (median taken)"
    )
    ap.add_argument(
        "--mb",
        type=float,
        default=None,
        help="MiB of float32 weights each variant cycles through (default: 1.25 x the L3, at "
        "least 64: every call then reads from DRAM, as decoding a larger model does)",
    )
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument(
        "--budget", type=float, default=0.8, help="seconds per (shape, threads, s) measurement"
    )
    ap.add_argument("--quick", action="store_true", help="3 shapes, 3 repeats, 32 MiB")
    ap.add_argument(
        "--shapes",
        default="",
        help="comma-separated shape-name prefixes (smollm2, gemma3, large, 'smollm2 o', ...)",
    )
    args = ap.parse_args()
    why = "--mb"
    if args.mb is None:
        args.mb, why = auto_mb()
    if args.repeats < 1 or args.mb <= 0:
        ap.error("--repeats must be >= 1 and --mb > 0")
    try:
        threads = [int(v) for v in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    shapes = SHAPES
    if args.quick:
        shapes = {k: SHAPES[k] for k in ("smollm2 qkv", "smollm2 down", "large 8192->2048")}
        args.repeats, args.mb, why = 3, 32.0, "--quick (a smoke test: may sit in the L3)"
    if args.shapes:
        prefixes = [p.strip() for p in args.shapes.split(",") if p.strip()]
        shapes = {k: v for k, v in SHAPES.items() if any(k.startswith(p) for p in prefixes)}
        if not shapes:
            ap.error(f"--shapes {args.shapes!r} matches none of: {', '.join(SHAPES)}")
    lib = load(KERNELS)
    print(
        f"bench_sparse_gemv: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"kernel ISA {lib.isa}, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        "ratio = dense float32 torch time / variant time; %lim = ratio / (1/(1-s)) for k32, "
        "ratio / (2/(1-s)) for kbf16 (bf16 halves the bytes); medians of per-round ratios"
    )
    print(f"weights cycled per variant: {args.mb:.0f} MiB ({why})")
    huge, no_huge = huge_pages_available()
    print(
        "packed weights (k32, kbf16): "
        + ("transparent huge pages" if huge and huge_pages_wanted() else "plain memory")
        + f"; k32 2M: {'transparent huge pages' if huge else f'plain memory too ({no_huge})'}"
    )
    t0 = time.perf_counter()
    run(shapes, args.repeats, args.mb, threads, args.budget)
    print(
        f"\n{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} at the end "
        "(other processes on a shared machine make these figures noisy)"
    )


if __name__ == "__main__":
    main()
